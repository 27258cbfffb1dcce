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
        if trans_retry_interval_secs > 0 {
            Duration::from_secs(trans_retry_interval_secs)
        } else {
            self.retry_interval
        }
    }

    /// The interval to wait after a round that ended waiting for `kind`, given the `current`
    /// (persisted) interval. Ongoing → `base`; Error → double `current` (at least `2 × base`
    /// on the first error), capped at `max(max_interval, base)`.
    pub fn next_interval(&self, base: Duration, current: Duration, kind: RetryKind) -> Duration {
        match kind {
            // The participant is alive and working: polling faster or slower gains nothing.
            RetryKind::Ongoing => base,
            RetryKind::Error => {
                let cap = self.max_interval.max(base);
                current.saturating_mul(2).max(base.saturating_mul(2)).min(cap)
            }
        }
    }

    /// Applies jitter to `interval` using `sample`, a uniform random number in `[0, 1)`.
    ///
    /// The result is `interval × (1 + jitter × (2 × sample − 1))`, never negative; `sample` is
    /// clamped into `[0, 1)` (NaN counts as 0.5, no change). A non-finite or zero jitter leaves
    /// the interval unchanged; a result too large for a `Duration` saturates.
    pub fn jittered(&self, interval: Duration, sample: f64) -> Duration {
        if self.jitter == 0.0 || !self.jitter.is_finite() {
            return interval;
        }
        let sample = if sample.is_nan() { 0.5 } else { sample.clamp(0.0, BELOW_ONE) };
        let factor = 1.0 + self.jitter * (2.0 * sample - 1.0);
        let secs = (interval.as_secs_f64() * factor).max(0.0);
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

/// The largest `f64` below 1.0.
const BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(max_secs: u64, jitter: f64) -> RetryPolicy {
        RetryPolicy {
            retry_interval: Duration::from_secs(10),
            max_interval: Duration::from_secs(max_secs),
            jitter,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn base_prefers_the_transaction_interval() {
        let p = policy(600, 0.0);
        assert_eq!(p.base(0), secs(10));
        assert_eq!(p.base(3), secs(3));
    }

    #[test]
    fn errors_back_off_exponentially_up_to_the_cap() {
        let p = policy(100, 0.0);
        let base = secs(5);
        // The first error starts from `base` (the persisted interval after a fresh round).
        let mut current = base;
        let mut seen = Vec::new();
        for _ in 0..7 {
            current = p.next_interval(base, current, RetryKind::Error);
            seen.push(current.as_secs());
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 100, 100, 100]);
    }

    #[test]
    fn first_error_is_at_least_twice_the_base() {
        let p = policy(100, 0.0);
        assert_eq!(p.next_interval(secs(5), Duration::ZERO, RetryKind::Error), secs(10));
        assert_eq!(p.next_interval(secs(5), secs(1), RetryKind::Error), secs(10));
    }

    #[test]
    fn cap_is_never_below_the_base() {
        let p = policy(3, 0.0);
        assert_eq!(p.next_interval(secs(10), secs(10), RetryKind::Error), secs(10));
        assert_eq!(p.next_interval(secs(10), secs(40), RetryKind::Error), secs(10));
    }

    #[test]
    fn ongoing_uses_the_fixed_base() {
        let p = policy(100, 0.0);
        for current in [secs(0), secs(5), secs(80)] {
            assert_eq!(p.next_interval(secs(5), current, RetryKind::Ongoing), secs(5));
        }
    }

    #[test]
    fn huge_intervals_saturate() {
        let p = RetryPolicy { max_interval: Duration::MAX, ..policy(0, 0.0) };
        assert_eq!(p.next_interval(secs(1), Duration::MAX, RetryKind::Error), Duration::MAX);
        assert_eq!(policy(0, 0.5).jittered(Duration::MAX, 0.99), Duration::MAX);
    }

    #[test]
    fn jitter_bounds() {
        let p = policy(100, 0.2);
        assert_eq!(p.jittered(secs(10), 0.0), secs(8));
        assert_eq!(p.jittered(secs(10), 0.5), secs(10));
        // Just below 1.2 × interval; float rounding may land on it exactly.
        let top = p.jittered(secs(10), 1.0);
        assert!(top <= secs(12) && top > Duration::from_millis(11_999), "{top:?}");
        assert_eq!(p.jittered(secs(10), -3.0), secs(8));
        assert_eq!(p.jittered(secs(10), f64::NAN), secs(10));
    }

    #[test]
    fn no_jitter_leaves_the_interval_alone() {
        let p = policy(100, 0.0);
        for sample in [0.0, 0.3, 0.999] {
            assert_eq!(
                p.jittered(Duration::from_nanos(123_456_789), sample),
                Duration::from_nanos(123_456_789)
            );
        }
        assert_eq!(policy(100, f64::NAN).jittered(secs(7), 0.1), secs(7));
    }

    #[test]
    fn jitter_never_goes_negative() {
        assert_eq!(policy(100, 3.0).jittered(secs(10), 0.0), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn next_interval_stays_between_base_and_cap(
            base_ms in 0u64..100_000,
            current_ms in 0u64..10_000_000,
            max_ms in 0u64..1_000_000,
            ongoing in any::<bool>(),
        ) {
            let p = RetryPolicy {
                retry_interval: Duration::from_secs(10),
                max_interval: Duration::from_millis(max_ms),
                jitter: 0.0,
            };
            let base = Duration::from_millis(base_ms);
            let kind = if ongoing { RetryKind::Ongoing } else { RetryKind::Error };
            let next = p.next_interval(base, Duration::from_millis(current_ms), kind);
            prop_assert!(next >= base);
            prop_assert!(next <= p.max_interval.max(base));
            if ongoing {
                prop_assert_eq!(next, base);
            }
        }

        #[test]
        fn jitter_stays_within_its_fraction(
            interval_ms in 0u64..10_000_000,
            jitter in 0.0f64..1.0,
            sample in -1.0f64..2.0,
        ) {
            let p = RetryPolicy { jitter, ..policy(100, 0.0) };
            let interval = Duration::from_millis(interval_ms);
            let out = p.jittered(interval, sample).as_secs_f64();
            let x = interval.as_secs_f64();
            // A little slack for float rounding.
            prop_assert!(out >= x * (1.0 - jitter) - 1e-6, "{out} vs {x}");
            prop_assert!(out <= x * (1.0 + jitter) + 1e-6, "{out} vs {x}");
        }
    }
}
