//! The retry policy: exponential backoff with jitter on errors, a fixed interval for ONGOING.

use std::time::Duration;

/// Why a transaction is waiting for another round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// A participant answered ONGOING: ask again after the fixed base interval.
    Ongoing,
    /// A participant errored (5xx, timeout, refused...): back off exponentially.
    Error,
}

/// Server-wide retry settings (per-transaction `retry_interval` overrides the base).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Base interval (DTM default 10 s).
    pub retry_interval: Duration,
    /// Cap of the exponential backoff (never below the base).
    pub max_interval: Duration,
    /// Fraction of the interval added or removed at random (0.0 = none, 0.2 = ±20%).
    pub jitter: f64,
}

impl RetryPolicy {
    /// The base interval for a transaction: its own `retry_interval` (seconds) if set.
    pub fn base(&self, trans_retry_interval_secs: u64) -> Duration {
        let _ = trans_retry_interval_secs;
        unimplemented!("helper")
    }

    /// The interval to wait after a round that ended waiting for `kind`, given the `current`
    /// (persisted) interval. Ongoing → `base`; Error → double `current` (at least `2 × base`
    /// on the first error), capped at `max(max_interval, base)`.
    pub fn next_interval(&self, base: Duration, current: Duration, kind: RetryKind) -> Duration {
        let _ = (base, current, kind);
        unimplemented!("helper")
    }

    /// Applies jitter to `interval` using `sample`, a uniform random number in `[0, 1)`.
    pub fn jittered(&self, interval: Duration, sample: f64) -> Duration {
        let _ = sample;
        interval
    }
}
