//! The ejection budget: at most a share of a balanced set may be open.
//!
//! Envoy's outlier detection caps ejected hosts at `max_ejection_percent` of
//! the cluster so that a bad classifier, or a fault in the client itself,
//! cannot take a whole service out of rotation. The endpoints made by one
//! [`CircuitBreakerLayer`](super::CircuitBreakerLayer) share one budget: a
//! circuit may only open while fewer than `max(1, endpoints × percent / 100)`
//! of them are open. A circuit opened by hand always opens.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many circuits of one set exist and how many are open.
#[derive(Debug)]
pub(crate) struct Ejection {
    percent: usize,
    members: AtomicUsize,
    open: AtomicUsize,
}

impl Ejection {
    pub(crate) fn new(percent: u8) -> Self {
        Self {
            percent: usize::from(percent.clamp(1, 100)),
            members: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        }
    }

    pub(crate) fn join(&self) {
        self.members.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn leave(&self) {
        self.members.fetch_sub(1, Ordering::AcqRel);
    }

    /// How many may be open at once now.
    pub(crate) fn allowed(&self) -> usize {
        (self.members.load(Ordering::Acquire) * self.percent / 100).max(1)
    }

    /// Takes one open slot if the budget has one.
    pub(crate) fn try_eject(&self) -> bool {
        let allowed = self.allowed();
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < allowed).then_some(open + 1)
            })
            .is_ok()
    }

    /// Takes an open slot regardless of the budget (a manual trip).
    pub(crate) fn force_eject(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives an open slot back.
    pub(crate) fn readmit(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// How many are open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_share_and_always_one() {
        let e = Ejection::new(50);
        (0..4).for_each(|_| e.join());
        assert_eq!(e.allowed(), 2);
        assert!(e.try_eject());
        assert!(e.try_eject());
        assert!(!e.try_eject());
        e.readmit();
        assert!(e.try_eject());
        e.force_eject();
        assert_eq!(e.open(), 3);

        let tiny = Ejection::new(10);
        (0..3).for_each(|_| tiny.join());
        assert_eq!(tiny.allowed(), 1, "at least one may always open");
        assert!(tiny.try_eject());
        assert!(!tiny.try_eject());
    }
}
