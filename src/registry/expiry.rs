//! TTL expiry: one task per registry sleeps until the earliest deadline.
//!
//! Heartbeats only move an instance's deadline (an atomic); they never touch
//! the heap. Each registration has one authoritative heap entry (its
//! deadline is recorded in [`Liveness::heap_ms`]); when the entry comes due
//! the task either expires the instance or pushes it again at its new
//! deadline. Entries left behind by re-registration are recognised as stale
//! and dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::service_registry::Inner;
use crate::instance::{InstanceId, Liveness};

pub(crate) const NO_DEADLINE: u64 = u64::MAX;

#[derive(Debug)]
pub(crate) struct Expiry {
    epoch: Instant,
    heap: Mutex<BinaryHeap<Reverse<(u64, InstanceId)>>>,
    notify: Arc<Notify>,
}

impl Expiry {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            heap: Mutex::new(BinaryHeap::new()),
            notify: Arc::new(Notify::new()),
        }
    }

    /// Milliseconds since the registry's epoch, on tokio's clock.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The tokio instant `ms` milliseconds after the registry's epoch.
    pub(crate) fn instant_at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    pub(crate) fn deadline_after(&self, ttl: Option<Duration>) -> u64 {
        match ttl {
            Some(ttl) => self
                .now_ms()
                .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                .min(NO_DEADLINE - 1),
            None => NO_DEADLINE,
        }
    }

    /// Schedules `id` to be looked at when its current deadline passes.
    pub(crate) fn schedule(&self, id: &InstanceId, liveness: &Liveness) {
        let deadline = liveness.deadline_ms.load(Ordering::Acquire);
        if deadline == NO_DEADLINE {
            return;
        }
        liveness.heap_ms.store(deadline, Ordering::Release);
        if let Ok(mut heap) = self.heap.lock() {
            heap.push(Reverse((deadline, id.clone())));
        }
        self.notify.notify_one();
    }

    /// Pops every entry due at `now`, returning the ids whose instance may
    /// have expired; re-pushes those whose deadline moved.
    pub(crate) fn due(
        &self,
        now: u64,
        lookup: impl Fn(&InstanceId) -> Option<Arc<Liveness>>,
    ) -> Vec<InstanceId> {
        let mut expired = Vec::new();
        let Ok(mut heap) = self.heap.lock() else {
            return expired;
        };
        while let Some(Reverse((at, _))) = heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, id))) = heap.pop() else {
                break;
            };
            let Some(liveness) = lookup(&id) else {
                continue; // deregistered meanwhile
            };
            if liveness.heap_ms.load(Ordering::Acquire) != at {
                continue; // a stale entry from an earlier registration
            }
            let deadline = liveness.deadline_ms.load(Ordering::Acquire);
            if deadline == NO_DEADLINE {
                continue;
            }
            if deadline <= now {
                expired.push(id);
            } else {
                liveness.heap_ms.store(deadline, Ordering::Release);
                heap.push(Reverse((deadline, id)));
            }
        }
        expired
    }

    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.heap
            .lock()
            .ok()
            .and_then(|heap| heap.peek().map(|Reverse((at, _))| *at))
    }
}

/// Runs until the registry is dropped.
pub(crate) async fn run(registry: Weak<Inner>) {
    let notify = match registry.upgrade() {
        Some(inner) => inner.expiry.notify.clone(),
        None => return,
    };
    loop {
        let (next, epoch) = {
            let Some(inner) = registry.upgrade() else {
                return;
            };
            let now = inner.expiry.now_ms();
            let expired = inner.expiry.due(now, |id| inner.liveness_of(id));
            for id in expired {
                inner.expire(&id, now);
            }
            (inner.expiry.next_deadline(), inner.expiry.epoch)
        };
        match next {
            Some(at) => {
                let when = epoch + Duration::from_millis(at);
                tokio::select! {
                    _ = tokio::time::sleep_until(when) => {}
                    _ = notify.notified() => {}
                }
            }
            None => notify.notified().await,
        }
    }
}
