//! Least connections: the endpoint with the fewest requests in flight.
//!
//! The tower face keeps its ready endpoints in buckets by in-flight count, so
//! finding the least loaded is O(1) whatever the number of endpoints; ties
//! rotate through the bucket so equal endpoints share the load. The
//! imperative face compares the counts of the instances it is given,
//! starting from a rotating offset for the same reason.

/// Ready slots bucketed by their in-flight count.
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    buckets: Vec<Vec<u32>>,
    /// Per slot: (bucket, index in bucket), or `ABSENT`.
    pos: Vec<(u32, u32)>,
    min: usize,
    len: usize,
    cursor: usize,
}

const ABSENT: (u32, u32) = (u32::MAX, u32::MAX);

impl Buckets {
    pub(crate) fn insert(&mut self, slot: usize, count: usize) {
        self.remove(slot);
        if self.pos.len() <= slot {
            self.pos.resize(slot + 1, ABSENT);
        }
        if self.buckets.len() <= count {
            self.buckets.resize_with(count + 1, Vec::new);
        }
        let bucket = &mut self.buckets[count];
        self.pos[slot] = (count as u32, bucket.len() as u32);
        bucket.push(slot as u32);
        if self.len == 0 || count < self.min {
            self.min = count;
        }
        self.len += 1;
    }

    pub(crate) fn remove(&mut self, slot: usize) {
        let Some(&(b, i)) = self.pos.get(slot) else {
            return;
        };
        if (b, i) == ABSENT {
            return;
        }
        let bucket = &mut self.buckets[b as usize];
        bucket.swap_remove(i as usize);
        if let Some(&moved) = bucket.get(i as usize) {
            self.pos[moved as usize] = (b, i);
        }
        self.pos[slot] = ABSENT;
        self.len -= 1;
        if self.len == 0 {
            self.min = 0;
        } else {
            while self.buckets[self.min].is_empty() {
                self.min += 1;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, slot: usize) -> bool {
        self.pos.get(slot).is_some_and(|p| *p != ABSENT)
    }

    /// A least-loaded slot, rotating among equals.
    pub(crate) fn pick(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let bucket = &self.buckets[self.min];
        self.cursor = self.cursor.wrapping_add(1);
        Some(bucket[self.cursor % bucket.len()] as usize)
    }
}

/// The position of the smallest count, scanning from `start` so that ties
/// rotate.
pub(crate) fn least(
    counts: impl ExactSizeIterator<Item = u64> + Clone,
    start: usize,
) -> Option<usize> {
    let n = counts.len();
    if n == 0 {
        return None;
    }
    let start = start % n;
    let mut best: Option<(u64, usize)> = None;
    for (i, c) in counts
        .clone()
        .enumerate()
        .skip(start)
        .chain(counts.enumerate().take(start))
    {
        if best.is_none_or(|(b, _)| c < b) {
            best = Some((c, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_track_the_minimum_and_rotate_ties() {
        let mut b = Buckets::default();
        for slot in 0..3 {
            b.insert(slot, 0);
        }
        let picks: Vec<usize> = (0..6).map(|_| b.pick().unwrap()).collect();
        let mut sorted = picks[..3].to_vec();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2], "ties rotate: {picks:?}");
        b.insert(0, 2);
        b.insert(1, 1);
        assert_eq!(b.pick(), Some(2));
        b.remove(2);
        assert_eq!(b.pick(), Some(1));
        b.insert(1, 5);
        assert_eq!(b.pick(), Some(0));
        b.remove(0);
        b.remove(1);
        assert_eq!(b.pick(), None);
        assert!(!b.contains(1));
    }

    #[test]
    fn least_rotates_its_start() {
        assert_eq!(least([3u64, 1, 1, 2].into_iter(), 0), Some(1));
        assert_eq!(least([3u64, 1, 1, 2].into_iter(), 2), Some(2));
        assert_eq!(least(std::iter::empty::<u64>(), 0), None);
    }
}
