//! When a transaction has run out of time.

use std::time::Duration;

use crate::model::TransType;
use crate::time::Timestamp;

/// The effective `timeout_to_fail`: the transaction's own, else the server default for modes
/// that have one (saga has none: it never times out unless asked to). `None` = never.
pub fn effective_timeout(
    trans_type: TransType,
    option_secs: u64,
    default_for_prepared_modes: Duration,
) -> Option<Duration> {
    if option_secs > 0 {
        return Some(Duration::from_secs(option_secs));
    }
    match trans_type {
        TransType::Saga | TransType::Workflow => None,
        TransType::Tcc | TransType::Msg | TransType::Xa => {
            (!default_for_prepared_modes.is_zero()).then_some(default_for_prepared_modes)
        }
    }
}

/// True when `now - create_time >= timeout`.
pub fn is_timed_out(create_time: Timestamp, timeout: Option<Duration>, now: Timestamp) -> bool {
    timeout.is_some_and(|t| now.since(create_time) >= t)
}

/// The rollback reason recorded when a transaction times out.
pub fn timeout_reason(timeout: Duration) -> String {
    format!("Timeout after {} seconds", timeout.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saga_never_times_out_by_default_but_tcc_does() {
        let d = Duration::from_secs(35);
        assert_eq!(effective_timeout(TransType::Saga, 0, d), None);
        assert_eq!(effective_timeout(TransType::Saga, 7, d), Some(Duration::from_secs(7)));
        assert_eq!(effective_timeout(TransType::Tcc, 0, d), Some(d));
        let t = Some(Duration::from_secs(10));
        assert!(!is_timed_out(Timestamp(0), t, Timestamp(9_999)));
        assert!(is_timed_out(Timestamp(0), t, Timestamp(10_000)));
        assert!(!is_timed_out(Timestamp(0), None, Timestamp(i64::MAX)));
        assert_eq!(timeout_reason(Duration::from_secs(3)), "Timeout after 3 seconds");
    }
}
