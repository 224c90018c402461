//! Smooth weighted round-robin.
//!
//! One cycle of picks is computed when the endpoint set changes, then each
//! pick is one lookup: `cycle[n % len]`. Within every cycle each endpoint is
//! picked exactly in proportion to its weight, spread out rather than in
//! bursts.
//!
//! The cycle is nginx's smooth weighted round-robin (`ngx_http_upstream_get_peer`:
//! add each weight to its current value, pick the largest, subtract the total
//! from it) when that is cheap to compute (weight sum × endpoints ≤ 2^24).
//! For larger sets it is the earliest-deadline-first order Envoy uses for
//! weighted round-robin (the k-th pick of endpoint i is due at k / wᵢ), which
//! has the same per-cycle proportions and is computed in O(W log N). Weights
//! are divided by their greatest common divisor first; a weight sum above
//! 2^20 is scaled down to that size, keeping proportions to within 2^-20.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

const NGINX_LIMIT: u64 = 1 << 24;
const MAX_CYCLE: u64 = 1 << 20;

/// One cycle of smooth weighted picks, as positions in the weights given.
#[derive(Debug, Clone, Default)]
pub(crate) struct WeightedCycle {
    cycle: Vec<u32>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl WeightedCycle {
    pub(crate) fn new(weights: &[u32]) -> Self {
        if weights.is_empty() {
            return Self::default();
        }
        let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
        let g = w.iter().copied().fold(0, gcd).max(1);
        w.iter_mut().for_each(|x| *x /= g);
        let mut total: u64 = w.iter().sum();
        if total > MAX_CYCLE {
            let scale = total as f64 / MAX_CYCLE as f64;
            w.iter_mut()
                .for_each(|x| *x = ((*x as f64 / scale).round() as u64).max(1));
            total = w.iter().sum();
        }
        let cycle = if total.saturating_mul(w.len() as u64) <= NGINX_LIMIT {
            nginx(&w, total)
        } else {
            edf(&w, total)
        };
        Self { cycle }
    }

    /// The position picked `n`-th.
    pub(crate) fn pick(&self, n: usize) -> Option<usize> {
        if self.cycle.is_empty() {
            return None;
        }
        Some(self.cycle[n % self.cycle.len()] as usize)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cycle.len()
    }
}

fn nginx(w: &[u64], total: u64) -> Vec<u32> {
    let total = total as i64;
    let mut current = vec![0i64; w.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &wi) in current.iter_mut().zip(w) {
            *c += wi as i64;
        }
        // Pick the largest current weight, the first on ties.
        let mut best = 0;
        for i in 1..w.len() {
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle
}

#[derive(PartialEq, Eq)]
struct Due {
    k: u64,
    w: u64,
    i: u32,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on k / w, then on position.
        let lhs = u128::from(self.k) * u128::from(other.w);
        let rhs = u128::from(other.k) * u128::from(self.w);
        rhs.cmp(&lhs).then_with(|| other.i.cmp(&self.i))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn edf(w: &[u64], total: u64) -> Vec<u32> {
    let mut heap: BinaryHeap<Due> = w
        .iter()
        .enumerate()
        .map(|(i, &w)| Due {
            k: 1,
            w,
            i: i as u32,
        })
        .collect();
    let mut cycle = Vec::with_capacity(total as usize);
    while (cycle.len() as u64) < total {
        let Some(mut due) = heap.pop() else { break };
        cycle.push(due.i);
        due.k += 1;
        heap.push(due);
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(c: &WeightedCycle, n: usize) -> Vec<usize> {
        let mut v = vec![0; n];
        for k in 0..c.len() {
            v[c.pick(k).unwrap()] += 1;
        }
        v
    }

    #[test]
    fn nginx_sequence_matches_the_reference() {
        // nginx's documented example: weights 5, 1, 1 -> a a b a c a a.
        let c = WeightedCycle::new(&[5, 1, 1]);
        let seq: Vec<usize> = (0..7).map(|k| c.pick(k).unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn both_algorithms_give_exact_proportions_per_cycle() {
        let small = WeightedCycle::new(&[3, 2, 1]);
        assert_eq!(counts(&small, 3), [3, 2, 1]);
        let weights: Vec<u32> = (0..5_000).map(|i| 1 + i % 3).collect();
        let big = WeightedCycle::new(&weights);
        let want: Vec<usize> = weights.iter().map(|&w| w as usize).collect();
        assert_eq!(counts(&big, weights.len()), want);
        // gcd is taken out: 10:20 is a cycle of 3.
        assert_eq!(WeightedCycle::new(&[10, 20]).len(), 3);
    }

    #[test]
    fn edf_spreads_picks() {
        let c = WeightedCycle::new(&vec![1; 10_000]);
        let first: Vec<usize> = (0..5).map(|k| c.pick(k).unwrap()).collect();
        assert_eq!(first, [0, 1, 2, 3, 4]);
    }
}
