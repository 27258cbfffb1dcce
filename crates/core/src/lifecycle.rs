//! What a client request does to a transaction in a given status (DTM's idempotency rules,
//! spec 6.7). Pure: the engine asks, then persists.

use crate::model::{GlobalStatus, TransType};

/// The effect of `prepare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPrepare {
    /// Unknown gid: create it `prepared`.
    Create,
    /// Already `prepared`: succeed without changing anything.
    AlreadyPrepared,
    /// Any other status: refuse (409).
    Refuse,
}

/// The effect of `submit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSubmit {
    /// Unknown gid: create it `submitted` and process it.
    Create,
    /// `prepared`: move it to `submitted` and process it.
    FromPrepared,
    /// Already `submitted`: process the stored branches again.
    Reprocess,
    /// `aborting`, `succeed`, `failed`: refuse (409).
    Refuse,
}

/// The effect of `abort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAbort {
    /// A prepared msg: straight to `failed`, nothing is called.
    FailNow,
    /// A prepared tcc: move it to `aborting` and cancel its branches.
    Abort,
    /// Already `aborting`: process it again (abort twice is fine).
    Reprocess,
    /// Anything else: refuse (409).
    Refuse,
}

/// Decides `prepare` given the stored status (`None` = unknown gid).
pub fn on_prepare(existing: Option<GlobalStatus>) -> OnPrepare {
    match existing {
        None => OnPrepare::Create,
        Some(GlobalStatus::Prepared) => OnPrepare::AlreadyPrepared,
        Some(
            GlobalStatus::Submitted | GlobalStatus::Aborting | GlobalStatus::Succeed | GlobalStatus::Failed,
        ) => OnPrepare::Refuse,
    }
}

/// Decides `submit` given the stored status (`None` = unknown gid).
pub fn on_submit(existing: Option<GlobalStatus>) -> OnSubmit {
    match existing {
        None => OnSubmit::Create,
        Some(GlobalStatus::Prepared) => OnSubmit::FromPrepared,
        Some(GlobalStatus::Submitted) => OnSubmit::Reprocess,
        Some(GlobalStatus::Aborting | GlobalStatus::Succeed | GlobalStatus::Failed) => OnSubmit::Refuse,
    }
}

/// Decides `abort` of a stored transaction.
///
/// A saga cannot be aborted by the client (it has no prepared phase), a workflow finishes through
/// its own submit, and a submitted tcc / xa is already past its decision.
pub fn on_abort(trans_type: TransType, status: GlobalStatus) -> OnAbort {
    match (trans_type, status) {
        // Nothing of a prepared msg was called yet, so there is nothing to roll back.
        (TransType::Msg, GlobalStatus::Prepared) => OnAbort::FailNow,
        (TransType::Tcc | TransType::Xa, GlobalStatus::Prepared) => OnAbort::Abort,
        (TransType::Tcc | TransType::Xa, GlobalStatus::Aborting) => OnAbort::Reprocess,
        _ => OnAbort::Refuse,
    }
}

/// Whether `registerBranch` may add branches: only while `prepared`.
pub fn can_register(status: GlobalStatus) -> bool {
    status == GlobalStatus::Prepared
}

#[cfg(test)]
mod tests {
    use super::*;
    use GlobalStatus::{Aborting, Failed, Prepared, Submitted, Succeed};
    use TransType::{Msg, Saga, Tcc, Workflow, Xa};

    const STATUSES: [GlobalStatus; 5] = [Prepared, Submitted, Aborting, Succeed, Failed];
    const TYPES: [TransType; 5] = [Saga, Tcc, Msg, Xa, Workflow];

    #[test]
    fn prepare_in_every_status() {
        let table = [
            (None, OnPrepare::Create),
            (Some(Prepared), OnPrepare::AlreadyPrepared),
            (Some(Submitted), OnPrepare::Refuse),
            (Some(Aborting), OnPrepare::Refuse),
            (Some(Succeed), OnPrepare::Refuse),
            (Some(Failed), OnPrepare::Refuse),
        ];
        for (existing, expected) in table {
            assert_eq!(on_prepare(existing), expected, "{existing:?}");
        }
    }

    #[test]
    fn submit_in_every_status() {
        let table = [
            (None, OnSubmit::Create),
            (Some(Prepared), OnSubmit::FromPrepared),
            (Some(Submitted), OnSubmit::Reprocess),
            (Some(Aborting), OnSubmit::Refuse),
            (Some(Succeed), OnSubmit::Refuse),
            (Some(Failed), OnSubmit::Refuse),
        ];
        for (existing, expected) in table {
            assert_eq!(on_submit(existing), expected, "{existing:?}");
        }
    }

    #[test]
    fn abort_for_every_type_and_status() {
        use OnAbort::{Abort, FailNow, Refuse, Reprocess};
        // One row per type, one column per status in `STATUSES` order.
        let table: [(TransType, [OnAbort; 5]); 5] = [
            (Saga, [Refuse, Refuse, Refuse, Refuse, Refuse]),
            (Tcc, [Abort, Refuse, Reprocess, Refuse, Refuse]),
            (Msg, [FailNow, Refuse, Refuse, Refuse, Refuse]),
            (Xa, [Abort, Refuse, Reprocess, Refuse, Refuse]),
            (Workflow, [Refuse, Refuse, Refuse, Refuse, Refuse]),
        ];
        assert_eq!(table.map(|(t, _)| t), TYPES);
        for (trans_type, row) in table {
            for (status, expected) in STATUSES.into_iter().zip(row) {
                assert_eq!(on_abort(trans_type, status), expected, "{trans_type} {status}");
            }
        }
    }

    #[test]
    fn register_only_while_prepared() {
        for status in STATUSES {
            assert_eq!(can_register(status), status == Prepared, "{status}");
        }
    }
}
