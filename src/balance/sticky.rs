//! Sticky sessions: a session keeps the endpoint it first got.
//!
//! An option on any strategy. The table maps a session to the endpoint
//! chosen for its first request; later requests of the session go there
//! while it can take them, and fall back to the strategy (binding the
//! session anew) when it is gone or not ready. Entries expire after an idle
//! time, and the table holds at most a configured number of sessions
//! (evicting the least recently used when it is full).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// How sticky sessions behave.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StickyConfig {
    /// A session unused this long is forgotten (default 30 minutes).
    pub idle_timeout: Duration,
    /// The most sessions remembered (default 100,000).
    pub max_sessions: usize,
}

impl Default for StickyConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            max_sessions: 100_000,
        }
    }
}

impl StickyConfig {
    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Sets [`max_sessions`](Self::max_sessions) (at least 1).
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max.max(1);
        self
    }
}

/// Keys are already stable 64-bit hashes: no need to hash them again.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = DashMap<u64, (u64, AtomicU64), std::hash::BuildHasherDefault<PreHashed>>;

/// Session hash → endpoint identity hash.
#[derive(Debug)]
pub(crate) struct StickyTable {
    map: Map,
    /// One eviction at a time; others carry on without waiting.
    evicting: std::sync::atomic::AtomicBool,
    epoch: Instant,
    config: StickyConfig,
}

impl StickyTable {
    pub(crate) fn new(config: StickyConfig) -> Self {
        Self {
            map: Map::default(),
            evicting: std::sync::atomic::AtomicBool::new(false),
            epoch: Instant::now(),
            config,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The endpoint bound to `session`, refreshing its idle time.
    pub(crate) fn get(&self, session: u64) -> Option<u64> {
        let now = self.now_ms();
        let idle_ms = u64::try_from(self.config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let expired = {
            let entry = self.map.get(&session)?;
            let (endpoint, used) = entry.value();
            if now.saturating_sub(used.load(Ordering::Relaxed)) <= idle_ms {
                used.store(now, Ordering::Relaxed);
                return Some(*endpoint);
            }
            true
        };
        if expired {
            self.map.remove(&session);
        }
        None
    }

    /// Binds `session` to `endpoint`.
    pub(crate) fn bind(&self, session: u64, endpoint: u64) {
        let now = self.now_ms();
        if let Some(entry) = self.map.get(&session)
            && entry.value().0 == endpoint
        {
            entry.value().1.store(now, Ordering::Relaxed);
            return;
        }
        self.map.insert(session, (endpoint, AtomicU64::new(now)));
        if self.map.len() > self.config.max_sessions {
            self.evict();
        }
    }

    pub(crate) fn clear(&self, session: u64) -> bool {
        self.map.remove(&session).is_some()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops expired sessions, then the least recently used down to 7/8 of
    /// the bound, so eviction runs once per many insertions.
    fn evict(&self) {
        if self.evicting.swap(true, Ordering::Acquire) {
            return;
        }
        self.evict_now();
        self.evicting.store(false, Ordering::Release);
    }

    fn evict_now(&self) {
        let now = self.now_ms();
        let idle_ms = u64::try_from(self.config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        self.map
            .retain(|_, (_, used)| now.saturating_sub(used.load(Ordering::Relaxed)) <= idle_ms);
        let target = self.config.max_sessions - self.config.max_sessions / 8;
        if self.map.len() > target {
            let mut ages: Vec<(u64, u64)> = self
                .map
                .iter()
                .map(|e| (e.value().1.load(Ordering::Relaxed), *e.key()))
                .collect();
            // Other threads may have removed entries meanwhile.
            let excess = ages.len().saturating_sub(target);
            if excess == 0 {
                return;
            }
            ages.select_nth_unstable(excess - 1);
            for (_, key) in &ages[..excess] {
                self.map.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_when_idle_and_stays_bounded() {
        let t = StickyTable::new(
            StickyConfig::default()
                .idle_timeout(Duration::from_secs(10))
                .max_sessions(8),
        );
        t.bind(1, 100);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(t.get(1), Some(100), "still fresh, and refreshed");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(t.get(1), Some(100));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(t.get(1), None, "idle too long");
        for s in 0..100 {
            t.bind(s, s);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(t.len() <= 8);
        assert_eq!(t.get(99), Some(99), "the most recent survives");
        assert!(t.clear(99));
        assert!(!t.clear(99));
    }

    #[test]
    fn concurrent_binding_past_the_bound_never_panics() {
        let t = std::sync::Arc::new(StickyTable::new(StickyConfig::default().max_sessions(64)));
        std::thread::scope(|s| {
            for thread in 0..4u64 {
                let t = t.clone();
                s.spawn(move || {
                    for n in 0..5_000u64 {
                        t.bind(thread << 32 | n, n);
                    }
                });
            }
        });
        assert!(t.len() <= 64 + 4, "bounded: {}", t.len());
    }
}
