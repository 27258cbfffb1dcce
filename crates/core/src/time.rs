//! Time as the domain sees it: plain numbers, passed in by the caller.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch (UTC).
///
/// The core never reads a clock; the engine passes `now` in, so tests drive time explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The epoch itself.
    pub const ZERO: Timestamp = Timestamp(0);

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating.
    #[allow(clippy::should_implement_trait)] // saturating, unlike `Add`
    pub fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// `self - d`, saturating.
    #[allow(clippy::should_implement_trait)] // saturating, unlike `Sub`
    pub fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// The time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

/// A duration in whole milliseconds, clamped to `i64`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_since_is_never_negative() {
        let t = Timestamp(1_000);
        assert_eq!(t.add(Duration::from_secs(1)), Timestamp(2_000));
        assert_eq!(t.sub(Duration::from_millis(1_500)), Timestamp(-500));
        assert_eq!(t.since(Timestamp(400)), Duration::from_millis(600));
        assert_eq!(Timestamp(0).since(t), Duration::ZERO);
        assert_eq!(Timestamp(i64::MAX).add(Duration::from_secs(1)), Timestamp(i64::MAX));
    }
}
