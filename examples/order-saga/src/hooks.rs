//! What the scenario runner sees of the services it runs in process: a journal of every
//! branch call (to show call order and duplicates) and fault injection (to cause them).
//! Services run alone (`order-saga inventory ...`) get empty hooks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dtx_client::BranchInfo;
use dtx_client::barrier::{Barriered, Skip};

/// One branch call as a service handled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Order in which the services finished handling calls (one counter for all services).
    pub seq: u64,
    /// `order.confirm`, `inventory.reserve`, `coupon.use`, `shipping.notify`...
    pub step: &'static str,
    /// The global transaction.
    pub gid: String,
    /// The branch id.
    pub branch_id: String,
    /// The branch op (`action`, `compensate`, `try`, `confirm`, `cancel`).
    pub op: String,
    /// `ran`, `skipped (...)`, `failed: ...`, or `ran, then answered an error (injected)`.
    pub outcome: String,
}

impl Event {
    /// The business ran (and committed).
    pub fn ran(&self) -> bool {
        self.outcome.starts_with("ran")
    }
}

/// The journal of branch calls, shared by the services of one run.
#[derive(Debug, Default)]
pub struct Journal {
    seq: AtomicU64,
    events: Mutex<Vec<Event>>,
}

impl Journal {
    /// Records a call.
    pub fn record(&self, step: &'static str, info: &BranchInfo, outcome: String) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let e = Event {
            seq,
            step,
            gid: info.gid.clone(),
            branch_id: info.branch_id.clone(),
            op: info.op.clone(),
            outcome,
        };
        tracing::debug!(seq, step, gid = %e.gid, op = %e.op, outcome = %e.outcome, "branch call");
        if let Ok(mut events) = self.events.lock() {
            events.push(e);
        }
    }

    /// The calls of `gid`, in order.
    pub fn of(&self, gid: &str) -> Vec<Event> {
        self.events.lock().map(|e| e.iter().filter(|e| e.gid == gid).cloned().collect()).unwrap_or_default()
    }
}

/// One-shot faults, armed by the runner: the next matching call commits its business and then
/// answers an error, as if the answer were lost, so the coordinator calls again.
#[derive(Debug, Default)]
pub struct Faults(Mutex<HashSet<(&'static str, String)>>);

impl Faults {
    /// Arms a fault for the next call of `step` whose business key (SKU, coupon code) is `key`.
    pub fn arm(&self, step: &'static str, key: &str) {
        if let Ok(mut f) = self.0.lock() {
            f.insert((step, key.to_owned()));
        }
    }

    /// Disarms and returns whether one was armed.
    pub fn take(&self, step: &'static str, key: &str) -> bool {
        self.0.lock().map(|mut f| f.remove(&(step, key.to_owned()))).unwrap_or(false)
    }
}

/// The journal and the faults, shared by the services of one run.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Branch calls.
    pub journal: Arc<Journal>,
    /// Armed faults.
    pub faults: Arc<Faults>,
}

impl Hooks {
    /// Records the outcome of a barrier-guarded branch call and passes the result on. If a
    /// fault is armed for `(step, key)` and the business ran, the call answers an error after
    /// the commit.
    pub fn finish<T>(
        &self,
        step: &'static str,
        key: &str,
        info: &BranchInfo,
        result: Result<Barriered<T>, dtx_client::Error>,
    ) -> Result<(), dtx_client::Error> {
        match result {
            Ok(Barriered::Ran(_)) => {
                if self.faults.take(step, key) {
                    self.journal.record(
                        step,
                        info,
                        "ran, then answered an error (injected: the answer is lost)".into(),
                    );
                    return Err(dtx_client::Error::Protocol(
                        "injected fault: committed, then lost the answer".into(),
                    ));
                }
                self.journal.record(step, info, "ran".into());
                Ok(())
            }
            Ok(Barriered::Skipped(skip)) => {
                let why = match skip {
                    Skip::AlreadyDone => "skipped by the barrier: already done",
                    Skip::NullCompensation => "skipped by the barrier: null compensation",
                    Skip::MsgDecided => "skipped by the barrier: message decided",
                };
                self.journal.record(step, info, why.into());
                Ok(())
            }
            Err(e) => {
                self.journal.record(step, info, format!("failed: {e}"));
                Err(e)
            }
        }
    }
}
