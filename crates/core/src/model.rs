//! The global transaction and its branches.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::options::TransOptions;
use crate::time::Timestamp;

/// A value read from storage or the wire was not one of the known names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{value}'")]
pub struct UnknownName {
    /// What was being parsed (`trans_type`, `status`...).
    pub kind: &'static str,
    /// The offending text.
    pub value: String,
}

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident, $kind:literal, { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// The wire / storage name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName { kind: $kind, value: s.to_owned() }),
                }
            }
        }
    };
}

named_enum!(
    /// The transaction mode.
    TransType, "trans_type", {
        /// A saga: actions with compensations.
        Saga => "saga",
        /// Try-confirm-cancel.
        Tcc => "tcc",
        /// A 2-phase message.
        Msg => "msg",
        /// XA: branches register, then commit (or roll back) in phase two.
        Xa => "xa",
        /// Workflow: the client drives the steps and records their results.
        Workflow => "workflow",
    }
);

named_enum!(
    /// The status of a global transaction.
    ///
    /// `prepared -> submitted -> succeed`, `submitted -> aborting -> failed`,
    /// `prepared -> aborting | failed`. `succeed` and `failed` are final.
    GlobalStatus, "status", {
        /// Registered, not yet submitted (msg, tcc).
        Prepared => "prepared",
        /// Going forward.
        Submitted => "submitted",
        /// Rolling back.
        Aborting => "aborting",
        /// Final: every forward branch succeeded.
        Succeed => "succeed",
        /// Final: rolled back (or force-stopped).
        Failed => "failed",
    }
);

impl GlobalStatus {
    /// `succeed` or `failed`: nothing more will ever happen.
    pub fn is_final(self) -> bool {
        matches!(self, GlobalStatus::Succeed | GlobalStatus::Failed)
    }
}

named_enum!(
    /// The status of one branch operation.
    BranchStatus, "branch status", {
        /// Not (successfully) done yet.
        Prepared => "prepared",
        /// Done.
        Succeed => "succeed",
        /// Definitely failed (only a saga action answering FAILURE).
        Failed => "failed",
    }
);

named_enum!(
    /// What a branch row does.
    Op, "op", {
        /// Saga / msg forward step.
        Action => "action",
        /// Saga compensation.
        Compensate => "compensate",
        /// TCC try (called by the client, never stored).
        Try => "try",
        /// TCC confirm.
        Confirm => "confirm",
        /// TCC cancel.
        Cancel => "cancel",
        /// XA commit.
        Commit => "commit",
        /// XA rollback.
        Rollback => "rollback",
        /// The msg check-back (`query_prepared`).
        Msg => "msg",
    }
);

/// A global transaction as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Storage id (assigned on insert; 0 before). Orders `all` listings.
    pub id: i64,
    /// The global id, chosen by the client.
    pub gid: String,
    /// The mode.
    pub trans_type: TransType,
    /// Current status.
    pub status: GlobalStatus,
    /// `http` (default) or `grpc`: how participants without a scheme are called.
    pub protocol: String,
    /// msg check-back URL.
    pub query_prepared: String,
    /// Mode-specific JSON text (saga: `orders` / `concurrent`; msg: `delay`).
    pub custom_data: String,
    /// Per-transaction options, fixed at creation.
    pub options: TransOptions,
    /// Why it rolled back.
    pub rollback_reason: String,
    /// Result text (workflow; unused by saga).
    pub result: String,
    /// When it was created.
    pub create_time: Timestamp,
    /// Last write.
    pub update_time: Timestamp,
    /// When it became `succeed`.
    pub finish_time: Option<Timestamp>,
    /// When it became `failed`.
    pub rollback_time: Option<Timestamp>,
    /// When the scheduler should next process it.
    pub next_cron_time: Timestamp,
    /// The current retry interval (grows on errors, resets on progress).
    pub next_cron_interval: Duration,
    /// The owner token of the node processing it, if any.
    pub owner: Option<String>,
    /// Until when `owner` holds it.
    pub lease_until: Option<Timestamp>,
    /// The participant host it is waiting for, while its next call is held because a node saw
    /// that host down (`dtx_core::health`); `""` once that host came back and released it
    /// (until its next release, which clears it).
    pub held_host: Option<String>,
}

/// One branch operation row (a saga step has two: `compensate` then `action`).
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// Storage id (assigned on insert; 0 before). Row order matters: compensate before action.
    pub id: i64,
    /// `01`, `02`... for saga steps; as registered for TCC.
    pub branch_id: String,
    /// What this row does.
    pub op: Op,
    /// Participant URL; empty means "succeeds at once, nothing is called".
    pub url: String,
    /// Request body sent to the participant, unchanged.
    pub payload: Vec<u8>,
    /// Current status.
    pub status: BranchStatus,
    /// How many times dtx decided to call it. `> 0` means "attempted": a saga compensates it.
    pub attempts: u32,
    /// The last non-success answer, for operators.
    pub last_error: String,
    /// When it was created.
    pub create_time: Timestamp,
    /// Last write.
    pub update_time: Timestamp,
    /// When it reached `succeed` / `failed`.
    pub finish_time: Option<Timestamp>,
}

impl Branch {
    /// A fresh `prepared` branch row.
    pub fn new(branch_id: String, op: Op, url: String, payload: Vec<u8>, now: Timestamp) -> Branch {
        Branch {
            id: 0,
            branch_id,
            op,
            url,
            payload,
            status: BranchStatus::Prepared,
            attempts: 0,
            last_error: String::new(),
            create_time: now,
            update_time: now,
            finish_time: None,
        }
    }
}

/// The saga / msg branch id of step `index` (0-based): `%02d` of `index + 1`, as DTM numbers them.
pub fn step_branch_id(index: usize) -> String {
    format!("{:02}", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [TransType::Saga, TransType::Tcc, TransType::Msg, TransType::Xa, TransType::Workflow] {
            assert_eq!(t.as_str().parse::<TransType>(), Ok(t));
        }
        for s in [
            GlobalStatus::Prepared,
            GlobalStatus::Submitted,
            GlobalStatus::Aborting,
            GlobalStatus::Succeed,
            GlobalStatus::Failed,
        ] {
            assert_eq!(s.as_str().parse::<GlobalStatus>(), Ok(s));
        }
        assert!("bogus".parse::<Op>().is_err());
        assert_eq!(step_branch_id(0), "01");
        assert_eq!(step_branch_id(99), "100");
    }
}
