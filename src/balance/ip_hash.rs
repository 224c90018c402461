//! Consistent hashing on a ring (Karger et al.; the "ketama" layout used by
//! memcached clients and nginx's `hash … consistent`).
//!
//! Each endpoint owns virtual points on a 64-bit ring, in number proportional
//! to its weight; a key belongs to the first point at or after its hash.
//! When an endpoint leaves, only the keys on its own points move (about 1/N
//! of them); every other key keeps its endpoint. Lookups use a table of
//! starting offsets over the ring, so they cost O(1) on average whatever the
//! number of endpoints.

use super::hash::mix64;

/// Points per endpoint of average weight.
const VNODES: u64 = 160;
/// The most points on one ring.
const MAX_POINTS: u64 = 1 << 20;

#[derive(Debug, Clone, Default)]
pub(crate) struct HashRing {
    hashes: Vec<u64>,
    nodes: Vec<u32>,
    /// `table[i]` is the first point whose hash is at least `i << shift`.
    table: Vec<u32>,
    shift: u32,
}

impl HashRing {
    /// A ring over nodes given as `(identity hash, weight)`; the positions of
    /// `nodes` are what lookups return.
    pub(crate) fn new(nodes: &[(u64, u32)]) -> Self {
        if nodes.is_empty() {
            return Self::default();
        }
        let total_weight: u64 = nodes.iter().map(|&(_, w)| u64::from(w.max(1))).sum();
        let n = nodes.len() as u64;
        let per_mean = VNODES.min((MAX_POINTS / n).max(1));
        let mut points: Vec<(u64, u32)> = Vec::new();
        for (pos, &(id, weight)) in nodes.iter().enumerate() {
            let share = u64::from(weight.max(1)) * per_mean * n;
            let count = (share / total_weight).clamp(1, per_mean * 64);
            for replica in 0..count {
                points.push((mix64(id ^ mix64(replica.wrapping_add(1))), pos as u32));
            }
        }
        points.sort_unstable();
        let bits = usize::BITS - points.len().leading_zeros();
        let shift = 64 - bits.min(63);
        let mut table = Vec::with_capacity(1 << bits);
        let mut j = 0usize;
        for i in 0..(1u64 << bits) {
            let start = i << shift;
            while j < points.len() && points[j].0 < start {
                j += 1;
            }
            table.push(j as u32);
        }
        let (hashes, nodes) = points.into_iter().unzip();
        Self {
            hashes,
            nodes,
            table,
            shift,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The index of the point owning `key`.
    fn point(&self, key: u64) -> usize {
        let mut j = self.table[(key >> self.shift) as usize] as usize;
        while j < self.hashes.len() && self.hashes[j] < key {
            j += 1;
        }
        if j == self.hashes.len() { 0 } else { j }
    }

    /// The position of the node owning `key`.
    pub(crate) fn lookup(&self, key: u64) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        Some(self.nodes[self.point(key)] as usize)
    }

    /// The nodes met walking the ring from `key`'s point, for falling back
    /// when the owner cannot take the request (at most one lap).
    pub(crate) fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = if self.is_empty() { 0 } else { self.point(key) };
        let len = self.hashes.len();
        (0..len).map(move |k| self.nodes[(start + k) % len] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash::stable_hash;

    fn owners(ring: &HashRing, ids: &[u64], keys: u64) -> Vec<u64> {
        (0..keys)
            .map(|k| ids[ring.lookup(stable_hash(&k)).unwrap()])
            .collect()
    }

    #[test]
    fn one_leaving_moves_only_its_keys() {
        let ids: Vec<u64> = (0..10u64)
            .map(|i| stable_hash(&format!("node-{i}")))
            .collect();
        let before = owners(
            &HashRing::new(&ids.iter().map(|&i| (i, 1)).collect::<Vec<_>>()),
            &ids,
            10_000,
        );
        let kept: Vec<u64> = ids.iter().copied().filter(|&i| i != ids[3]).collect();
        let after = owners(
            &HashRing::new(&kept.iter().map(|&i| (i, 1)).collect::<Vec<_>>()),
            &kept,
            10_000,
        );
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!(moved <= 1_000 + 200, "moved {moved}");
        for (b, a) in before.iter().zip(&after) {
            if *b != ids[3] {
                assert_eq!(b, a, "a key of a node that stayed moved");
            }
        }
    }

    #[test]
    fn weights_set_the_share() {
        let nodes = [(stable_hash("a"), 1), (stable_hash("b"), 3)];
        let ring = HashRing::new(&nodes);
        let b = (0..40_000u64)
            .filter(|k| ring.lookup(stable_hash(k)) == Some(1))
            .count();
        assert!(
            (27_000..33_000).contains(&b),
            "weight 3 of 4 got {b} of 40000"
        );
    }

    #[test]
    fn walk_visits_every_node() {
        let nodes: Vec<(u64, u32)> = (0..5u64).map(|i| (stable_hash(&i), 1)).collect();
        let ring = HashRing::new(&nodes);
        let mut seen: Vec<usize> = ring.walk(42).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
    }
}
