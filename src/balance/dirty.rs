//! Which endpoints need the balancer's attention: a lock-free, allocation-free
//! set of slot numbers that endpoint wakers and response futures mark from
//! any thread, and the balancer drains in `poll_ready`.
//!
//! Three levels of 64-bit words (slots, chunks of 64 slots, groups of 64
//! chunks) make draining cost proportional to the slots marked, not to the
//! number of endpoints. Marking sets the slot bit first and the summary bits
//! after; draining clears the summary bits first and the slot bits after, so
//! a mark racing a drain is seen by this drain or the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Wake, Waker};

use futures_util::task::AtomicWaker;

/// The most slots one balancer can have (64³).
pub(crate) const MAX_SLOTS: usize = 64 * 64 * 64;

#[derive(Debug)]
pub(crate) struct Shared {
    root: AtomicU64,
    groups: [AtomicU64; 64],
    /// The balancer's task.
    pub(crate) task: AtomicWaker,
}

#[derive(Debug)]
pub(crate) struct Chunk {
    index: usize,
    bits: AtomicU64,
    shared: Arc<Shared>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            root: AtomicU64::new(0),
            groups: std::array::from_fn(|_| AtomicU64::new(0)),
            task: AtomicWaker::new(),
        }
    }
}

impl Chunk {
    pub(crate) fn mark(&self, bit: u32) {
        self.bits.fetch_or(1 << bit, Ordering::AcqRel);
        self.shared.groups[self.index / 64].fetch_or(1 << (self.index % 64), Ordering::AcqRel);
        self.shared
            .root
            .fetch_or(1 << (self.index / 64), Ordering::AcqRel);
    }
}

/// Marks one slot from anywhere.
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    chunk: Arc<Chunk>,
    bit: u32,
}

impl Marker {
    pub(crate) fn mark(&self) {
        self.chunk.mark(self.bit);
    }
}

/// A waker for one endpoint: marks its slot and wakes the balancer.
struct SlotWake(Marker);

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.mark();
        self.0.chunk.shared.task.wake();
    }
}

#[derive(Debug, Default)]
pub(crate) struct DirtySet {
    shared: Arc<Shared>,
    chunks: Vec<Arc<Chunk>>,
}

impl DirtySet {
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The marker for `slot` (`slot < MAX_SLOTS`).
    pub(crate) fn marker(&mut self, slot: usize) -> Marker {
        let index = slot / 64;
        while self.chunks.len() <= index {
            self.chunks.push(Arc::new(Chunk {
                index: self.chunks.len(),
                bits: AtomicU64::new(0),
                shared: self.shared.clone(),
            }));
        }
        Marker {
            chunk: self.chunks[index].clone(),
            bit: (slot % 64) as u32,
        }
    }

    /// A waker that marks `slot` and wakes the balancer's task.
    pub(crate) fn waker(&mut self, slot: usize) -> Waker {
        Waker::from(Arc::new(SlotWake(self.marker(slot))))
    }

    /// Calls `f` with every marked slot, clearing the marks.
    pub(crate) fn drain(&self, mut f: impl FnMut(usize)) {
        let mut root = self.shared.root.swap(0, Ordering::AcqRel);
        while root != 0 {
            let g = root.trailing_zeros() as usize;
            root &= root - 1;
            let mut group = self.shared.groups[g].swap(0, Ordering::AcqRel);
            while group != 0 {
                let c = g * 64 + group.trailing_zeros() as usize;
                group &= group - 1;
                let Some(chunk) = self.chunks.get(c) else {
                    continue;
                };
                let mut bits = chunk.bits.swap(0, Ordering::AcqRel);
                while bits != 0 {
                    f(c * 64 + bits.trailing_zeros() as usize);
                    bits &= bits - 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_from_threads_are_all_drained() {
        let mut set = DirtySet::default();
        let slots = [0usize, 1, 63, 64, 4095, 4096, 200_000];
        let markers: Vec<Marker> = slots.iter().map(|&s| set.marker(s)).collect();
        std::thread::scope(|s| {
            for m in &markers {
                s.spawn(move || m.mark());
            }
        });
        let mut seen = Vec::new();
        set.drain(|s| seen.push(s));
        seen.sort();
        assert_eq!(seen, slots);
        let mut again = Vec::new();
        set.drain(|s| again.push(s));
        assert!(again.is_empty());
        set.waker(5).wake();
        set.drain(|s| again.push(s));
        assert_eq!(again, [5]);
    }
}
