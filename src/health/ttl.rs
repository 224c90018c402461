//! TTL checks: critical unless refreshed in time, by `pass_ttl` and
//! friends or by the registry heartbeat.

use std::time::Duration;

use tokio::time::Instant;

use super::output::Outcome;
use crate::instance::HealthStatus;

/// The last explicit update of a TTL check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refresh {
    pub(crate) at: Instant,
    pub(crate) status: HealthStatus,
    pub(crate) note: String,
}

/// What a TTL check says at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Its result; `None` before the first refresh while the first TTL runs.
    pub(crate) outcome: Option<Outcome>,
    /// When the refresh the result rests on arrived.
    pub(crate) since: Option<Instant>,
    /// Whether the result is an expiry.
    pub(crate) expired: bool,
    /// When it expires if nothing refreshes it (`None`: it has).
    pub(crate) next: Option<Instant>,
}

/// What a TTL check started at `started` says at `now`, given its last
/// explicit update and the instance's last registry heartbeat.
pub(crate) fn evaluate(
    ttl: Duration,
    started: Instant,
    explicit: Option<&Refresh>,
    heartbeat: Option<Instant>,
    now: Instant,
) -> Verdict {
    // Heartbeats from before the check started do not count.
    let heartbeat = heartbeat.filter(|at| *at >= started);
    let latest = match (explicit, heartbeat) {
        (Some(r), Some(h)) if h > r.at => Some((h, None)),
        (Some(r), _) => Some((r.at, Some(r))),
        (None, Some(h)) => Some((h, None)),
        (None, None) => None,
    };
    match latest {
        Some((at, source)) if now < at + ttl => {
            let outcome = match source {
                Some(r) => Outcome {
                    status: r.status,
                    output: r.note.clone(),
                },
                None => Outcome {
                    status: HealthStatus::Passing,
                    output: "refreshed by a registry heartbeat".to_owned(),
                },
            };
            Verdict {
                outcome: Some(outcome),
                since: Some(at),
                expired: false,
                next: Some(at + ttl),
            }
        }
        Some((at, _)) => Verdict {
            outcome: Some(expired(ttl)),
            since: Some(at),
            expired: true,
            next: None,
        },
        None if now < started + ttl => Verdict {
            outcome: None,
            since: None,
            expired: false,
            next: Some(started + ttl),
        },
        None => Verdict {
            outcome: Some(expired(ttl)),
            since: None,
            expired: true,
            next: None,
        },
    }
}

fn expired(ttl: Duration) -> Outcome {
    Outcome::critical(format!("TTL expired: no update within {ttl:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rules() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let s = |n| t0 + Duration::from_secs(n);
        let status = |v: Verdict| v.outcome.map(|o| o.status);
        // Nothing yet: no result until the TTL has passed once.
        let v = evaluate(ttl, t0, None, None, s(5));
        assert_eq!((v.outcome, v.next), (None, Some(s(10))));
        let v = evaluate(ttl, t0, None, None, s(10));
        assert!(v.expired);
        assert_eq!(status(v), Some(HealthStatus::Critical));
        // An explicit warning holds for the TTL.
        let warn = Refresh {
            at: s(3),
            status: HealthStatus::Warning,
            note: "slow".into(),
        };
        let v = evaluate(ttl, t0, Some(&warn), None, s(12));
        assert_eq!(v.next, Some(s(13)));
        assert_eq!(v.since, Some(s(3)));
        assert_eq!(
            v.outcome.map(|o| (o.status, o.output)),
            Some((HealthStatus::Warning, "slow".into()))
        );
        let v = evaluate(ttl, t0, Some(&warn), None, s(13));
        assert!(v.expired && v.since == Some(s(3)));
        assert_eq!(status(v), Some(HealthStatus::Critical));
        // A later heartbeat wins and passes; an earlier one does not.
        let v = evaluate(ttl, t0, Some(&warn), Some(s(8)), s(15));
        assert_eq!(status(v), Some(HealthStatus::Passing));
        let v = evaluate(ttl, t0, Some(&warn), Some(s(2)), s(12));
        assert_eq!(status(v), Some(HealthStatus::Warning));
        // Heartbeats from before the start are ignored.
        let v = evaluate(ttl, s(5), None, Some(s(4)), s(6));
        assert_eq!((v.outcome, v.next), (None, Some(s(15))));
    }
}
