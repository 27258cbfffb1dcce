//! An in-memory [`Store`] for tests (feature `memory`): the whole contract on plain data
//! structures behind one mutex, so each operation is atomic as the trait asks. It passes the
//! conformance suite like the SQL backends.
//!
//! It can inject faults, decided per write by a hook ([`MemoryStore::set_fault_hook`]): the
//! lease lost at a fenced write (someone else claimed the row just before it), the store
//! unavailable, or a crash (the write is applied, its answer never comes). It records every
//! write in order ([`MemoryStore::writes`]), with what came of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use dtx_core::{Branch, Global, GlobalStatus, Timestamp};

use crate::{Error, Expect, KvRow, LeaseChange, ListFilter, Loaded, NewTransaction, Result, Save, Store};

/// The owner a [`Fault::LoseLease`] gives the row to.
pub const THIEF: &str = "thief";

/// A write, as the store was asked to make it.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// [`Store::create`].
    Create {
        /// The transaction.
        gid: String,
        /// Its owner (a transaction processed at once is owned by its creator).
        owner: Option<String>,
    },
    /// [`Store::claim_due`].
    ClaimDue {
        /// The claimer.
        owner: String,
    },
    /// [`Store::claim`].
    Claim {
        /// The transaction.
        gid: String,
        /// The claimer.
        owner: String,
    },
    /// [`Store::save`].
    Save(Save),
    /// [`Store::add_branches`].
    AddBranches {
        /// The transaction.
        gid: String,
        /// The new rows.
        branches: Vec<Branch>,
    },
    /// [`Store::force_stop`].
    ForceStop {
        /// The transaction.
        gid: String,
    },
    /// [`Store::reset_next_cron_time`].
    ResetNextCronTime {
        /// The transaction.
        gid: String,
    },
    /// [`Store::reset_cron_time`].
    ResetCronTime,
    /// [`Store::resume_held`].
    ResumeHeld,
    /// [`Store::purge_finished`].
    Purge,
    /// `kv_insert`, `kv_update`, `kv_delete`.
    Kv {
        /// Category.
        cat: String,
        /// Key.
        k: String,
    },
}

impl Write {
    /// The transaction the write is about, if one.
    pub fn gid(&self) -> Option<&str> {
        match self {
            Write::Create { gid, .. }
            | Write::Claim { gid, .. }
            | Write::AddBranches { gid, .. }
            | Write::ForceStop { gid }
            | Write::ResetNextCronTime { gid } => Some(gid),
            Write::Save(save) => Some(&save.gid),
            Write::ClaimDue { .. }
            | Write::ResetCronTime
            | Write::ResumeHeld
            | Write::Purge
            | Write::Kv { .. } => None,
        }
    }
}

/// What a hook makes of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Applied normally.
    #[default]
    None,
    /// Only for a [`Write::Save`]: just before it, another node ([`THIEF`]) claims the row with
    /// a lease until the given time, so the save is fenced.
    LoseLease(Timestamp),
    /// Not applied; the caller gets [`Error::Unavailable`].
    Unavailable,
    /// Applied, and then the caller never gets an answer (its process died with the write
    /// durable). The future stays pending forever.
    Crash,
}

/// One write and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRecord {
    /// Its place in the order of writes, from 0.
    pub seq: usize,
    /// The write.
    pub write: Write,
    /// The fault injected.
    pub fault: Fault,
    /// `None` when it was applied; otherwise the error the caller got (`Some("crash")` for an
    /// applied write whose caller never heard back).
    pub error: Option<String>,
}

type Hook = Arc<dyn Fn(usize, &Write) -> Fault + Send + Sync>;

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    hook: Mutex<Option<Hook>>,
    /// Reports itself shared by nodes ([`MemoryStore::set_shared`]).
    shared: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    next_id: i64,
    txs: BTreeMap<String, Loaded>,
    kv: BTreeMap<(String, String), KvRow>,
    writes: Vec<WriteRecord>,
}

impl MemoryStore {
    /// Rows per status and the due backlog at `now`, counted in one pass.
    fn counts(&self, now: Timestamp) -> crate::StatusCounts {
        let state = lock(&self.state);
        let mut by_status: BTreeMap<&'static str, (GlobalStatus, u64)> = BTreeMap::new();
        let mut due = 0;
        for t in state.txs.values() {
            let g = &t.global;
            by_status.entry(g.status.as_str()).or_insert((g.status, 0)).1 += 1;
            let unfinished =
                matches!(g.status, GlobalStatus::Prepared | GlobalStatus::Submitted | GlobalStatus::Aborting);
            let free = g.owner.is_none() || g.lease_until.is_none_or(|l| l < now);
            if unfinished && g.next_cron_time <= now && free {
                due += 1;
            }
        }
        crate::StatusCounts { by_status: by_status.into_values().collect(), due }
    }

    /// An empty store without faults.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes the store report itself shared by several nodes, as PostgreSQL (`single_node`
    /// false), so the engine behaves as it does there.
    pub fn set_shared(&self, shared: bool) {
        self.shared.store(shared, std::sync::atomic::Ordering::SeqCst);
    }

    /// Decides the fault of every later write: `hook(seq, write)`, called before the write.
    pub fn set_fault_hook(&self, hook: impl Fn(usize, &Write) -> Fault + Send + Sync + 'static) {
        *lock(&self.hook) = Some(Arc::new(hook));
    }

    /// No more faults.
    pub fn clear_fault_hook(&self) {
        *lock(&self.hook) = None;
    }

    /// Every write so far, in order.
    pub fn writes(&self) -> Vec<WriteRecord> {
        lock(&self.state).writes.clone()
    }

    /// The stored transaction now, read without going through the async API.
    pub fn snapshot(&self, gid: &str) -> Option<Loaded> {
        lock(&self.state).txs.get(gid).cloned()
    }

    /// Every stored gid.
    pub fn gids(&self) -> Vec<String> {
        lock(&self.state).txs.keys().cloned().collect()
    }

    /// Runs one write: asks the hook, applies it (or not), records it.
    async fn write<T>(&self, write: Write, apply: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let hook = lock(&self.hook).clone();
        let seq = lock(&self.state).writes.len();
        let fault = hook.map(|h| h(seq, &write)).unwrap_or_default();
        let (result, crashed) = {
            let mut state = lock(&self.state);
            if let (Fault::LoseLease(until), Write::Save(save)) = (fault, &write)
                && let Some(tx) = state.txs.get_mut(&save.gid)
            {
                tx.global.owner = Some(THIEF.to_owned());
                tx.global.lease_until = Some(until);
            }
            let result = match fault {
                Fault::Unavailable => Err(Error::Unavailable("injected fault".to_owned())),
                _ => apply(&mut state),
            };
            let crashed = fault == Fault::Crash;
            let error = match &result {
                Ok(_) if crashed => Some("crash".to_owned()),
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            };
            let seq = state.writes.len();
            state.writes.push(WriteRecord { seq, write, fault, error });
            (result, crashed)
        };
        if crashed {
            std::future::pending::<()>().await;
        }
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still consistent per operation.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_live(g: &Global) -> bool {
    matches!(g.status, GlobalStatus::Prepared | GlobalStatus::Submitted | GlobalStatus::Aborting)
}

fn unleased(g: &Global, now: Timestamp) -> bool {
    g.owner.is_none() || g.lease_until.is_none_or(|until| until < now)
}

impl State {
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn single_node(&self) -> bool {
        !self.shared.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn create(&self, tx: NewTransaction) -> Result<()> {
        let write = Write::Create { gid: tx.global.gid.clone(), owner: tx.global.owner.clone() };
        self.write(write, |state| {
            let gid = tx.global.gid.clone();
            if state.txs.contains_key(&gid) {
                return Err(Error::Conflict(format!("transaction {gid} already exists")));
            }
            // (gid, branch_id, op) is unique, as the SQL backends' index makes it.
            let mut seen = std::collections::HashSet::new();
            if let Some(b) = tx.branches.iter().find(|b| !seen.insert((b.branch_id.as_str(), b.op))) {
                return Err(Error::Conflict(format!(
                    "branch {}/{} of {gid} already exists",
                    b.branch_id, b.op
                )));
            }
            let mut global = tx.global;
            global.id = state.id();
            let branches = tx
                .branches
                .into_iter()
                .map(|mut b| {
                    b.id = state.id();
                    b
                })
                .collect();
            state.txs.insert(gid, Loaded { global, branches, taken_over: false });
            Ok(())
        })
        .await
    }

    async fn load(&self, gid: &str) -> Result<Option<Loaded>> {
        Ok(self.snapshot(gid))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Global>> {
        let state = lock(&self.state);
        let mut rows: Vec<Global> = state
            .txs
            .values()
            .map(|t| &t.global)
            .filter(|g| filter.before_id.is_none_or(|id| g.id < id))
            .filter(|g| filter.status.is_none_or(|s| g.status == s))
            .filter(|g| filter.trans_type.is_none_or(|t| g.trans_type == t))
            .filter(|g| filter.created_from.is_none_or(|t| g.create_time >= t))
            .filter(|g| filter.created_to.is_none_or(|t| g.create_time <= t))
            .filter(|g| filter.gid_prefix.as_deref().is_none_or(|p| g.gid.starts_with(p)))
            .cloned()
            .collect();
        rows.sort_by_key(|g| std::cmp::Reverse(g.id));
        rows.truncate(filter.limit as usize);
        Ok(rows)
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Loaded>> {
        self.write(Write::ClaimDue { owner: owner.to_owned() }, |state| {
            let mut due: Vec<(Timestamp, i64, String)> = state
                .txs
                .values()
                .map(|t| &t.global)
                .filter(|g| is_live(g) && g.next_cron_time <= now && unleased(g, now))
                .map(|g| (g.next_cron_time, g.id, g.gid.clone()))
                .collect();
            due.sort();
            due.truncate(limit as usize);
            let mut claimed = Vec::with_capacity(due.len());
            for (_, _, gid) in due {
                if let Some(tx) = state.txs.get_mut(&gid) {
                    let taken_over = tx.global.owner.is_some();
                    tx.global.owner = Some(owner.to_owned());
                    tx.global.lease_until = Some(lease_until);
                    claimed.push(Loaded { taken_over, ..tx.clone() });
                }
            }
            Ok(claimed)
        })
        .await
    }

    async fn claim(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Loaded>> {
        self.write(Write::Claim { gid: gid.to_owned(), owner: owner.to_owned() }, |state| {
            Ok(match state.txs.get_mut(gid) {
                Some(tx) if is_live(&tx.global) && unleased(&tx.global, now) => {
                    tx.global.owner = Some(owner.to_owned());
                    tx.global.lease_until = Some(lease_until);
                    Some(tx.clone())
                }
                _ => None,
            })
        })
        .await
    }

    async fn save(&self, save: Save) -> Result<()> {
        self.write(Write::Save(save.clone()), |state| {
            let fenced = || Error::Fenced { gid: save.gid.clone() };
            let tx = state.txs.get(&save.gid).ok_or_else(fenced)?;
            if tx.global.owner.as_deref() != Some(save.owner.as_str()) {
                return Err(fenced());
            }
            // Check every branch first: a save is applied whole or not at all.
            let mut rows = Vec::with_capacity(save.branches.len());
            for u in &save.branches {
                let row =
                    tx.branches.iter().position(|b| b.branch_id == u.branch_id && b.op == u.op).ok_or_else(
                        || Error::NotFound(format!("branch {}/{} of {}", u.branch_id, u.op, save.gid)),
                    )?;
                rows.push(row);
            }
            let tx = state.txs.get_mut(&save.gid).ok_or_else(fenced)?;
            let g = &mut tx.global;
            g.update_time = save.now;
            if let Some(change) = &save.status {
                g.status = change.to;
                match change.to {
                    GlobalStatus::Succeed => g.finish_time = Some(save.now),
                    GlobalStatus::Failed => g.rollback_time = Some(save.now),
                    _ => {}
                }
                if let Some(reason) = &change.rollback_reason {
                    g.rollback_reason = reason.clone();
                }
                if let Some(result) = &change.result {
                    g.result = result.clone();
                }
            }
            match &save.lease {
                LeaseChange::Renew { lease_until } => g.lease_until = Some(*lease_until),
                LeaseChange::RenewRescheduled { lease_until, next_cron_time, next_cron_interval } => {
                    g.lease_until = Some(*lease_until);
                    g.next_cron_time = *next_cron_time;
                    g.next_cron_interval = *next_cron_interval;
                }
                LeaseChange::Release { next_cron_time, next_cron_interval } => {
                    g.owner = None;
                    g.lease_until = None;
                    g.next_cron_time = *next_cron_time;
                    g.next_cron_interval = *next_cron_interval;
                    g.held_host = None;
                }
                LeaseChange::Hold { next_cron_time, next_cron_interval, host } => {
                    g.owner = None;
                    g.lease_until = None;
                    g.next_cron_time = *next_cron_time;
                    g.next_cron_interval = *next_cron_interval;
                    g.held_host = Some(host.clone());
                }
            }
            for (u, row) in save.branches.iter().zip(rows) {
                let b = &mut tx.branches[row];
                b.status = u.status;
                b.attempts = u.attempts;
                b.last_error = u.last_error.clone();
                b.finish_time = u.finish_time;
                b.update_time = save.now;
            }
            Ok(())
        })
        .await
    }

    async fn add_branches(
        &self,
        gid: &str,
        expect: Expect,
        branches: Vec<Branch>,
        now: Timestamp,
    ) -> Result<()> {
        let write = Write::AddBranches { gid: gid.to_owned(), branches: branches.clone() };
        self.write(write, |state| {
            let tx = state.txs.get(gid).ok_or_else(|| Error::NotFound(format!("transaction {gid}")))?;
            let g = &tx.global;
            if g.trans_type != expect.trans_type || g.status == GlobalStatus::Prepared {
                expect.check(gid, g.trans_type, g.options.timeout_to_fail, g.create_time, now)?;
            }
            if tx.global.status != GlobalStatus::Prepared {
                return Err(Error::Precondition(format!(
                    "transaction {gid} is {}, not prepared",
                    tx.global.status
                )));
            }
            if !unleased(&tx.global, now) {
                return Err(Error::Precondition(format!("transaction {gid} is being processed")));
            }
            for (i, b) in branches.iter().enumerate() {
                let exists = tx
                    .branches
                    .iter()
                    .chain(&branches[..i])
                    .any(|o| o.branch_id == b.branch_id && o.op == b.op);
                if exists {
                    return Err(Error::Conflict(format!(
                        "branch {}/{} of {gid} already exists",
                        b.branch_id, b.op
                    )));
                }
            }
            let mut rows = Vec::with_capacity(branches.len());
            for mut b in branches {
                b.id = state.id();
                rows.push(b);
            }
            if let Some(tx) = state.txs.get_mut(gid) {
                tx.global.update_time = now;
                tx.branches.extend(rows);
            }
            Ok(())
        })
        .await
    }

    async fn force_stop(&self, gid: &str, reason: &str, now: Timestamp) -> Result<GlobalStatus> {
        self.write(Write::ForceStop { gid: gid.to_owned() }, |state| {
            let tx = state.txs.get_mut(gid).ok_or_else(|| Error::NotFound(format!("transaction {gid}")))?;
            let g = &mut tx.global;
            let old = g.status;
            if old.is_final() {
                return Err(Error::Precondition(format!("transaction {gid} already {old}")));
            }
            g.status = GlobalStatus::Failed;
            g.rollback_time = Some(now);
            g.update_time = now;
            g.rollback_reason = reason.to_owned();
            g.owner = None;
            g.lease_until = None;
            Ok(old)
        })
        .await
    }

    async fn reset_next_cron_time(&self, gid: &str, base: Duration, now: Timestamp) -> Result<()> {
        self.write(Write::ResetNextCronTime { gid: gid.to_owned() }, |state| {
            let tx = state.txs.get_mut(gid).ok_or_else(|| Error::NotFound(format!("transaction {gid}")))?;
            tx.global.next_cron_time = now;
            tx.global.next_cron_interval = base;
            tx.global.update_time = now;
            Ok(())
        })
        .await
    }

    async fn reset_cron_time(&self, later_than: Timestamp, limit: u32, now: Timestamp) -> Result<u64> {
        self.write(Write::ResetCronTime, |state| {
            let mut n = 0u64;
            for tx in state.txs.values_mut() {
                if n >= u64::from(limit) {
                    break;
                }
                let g = &mut tx.global;
                if is_live(g) && g.next_cron_time > later_than {
                    g.next_cron_time = now;
                    g.update_time = now;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn resume_held(&self, host: &str, limit: u32, now: Timestamp) -> Result<u64> {
        self.write(Write::ResumeHeld, |state| {
            let mut n = 0u64;
            for tx in state.txs.values_mut() {
                if n >= u64::from(limit) {
                    break;
                }
                let g = &mut tx.global;
                if is_live(g) && unleased(g, now) && g.held_host.as_deref() == Some(host) {
                    g.next_cron_time = now;
                    g.held_host = Some(String::new());
                    g.update_time = now;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn kv_get(&self, cat: &str, k: &str) -> Result<Option<KvRow>> {
        Ok(lock(&self.state).kv.get(&(cat.to_owned(), k.to_owned())).cloned())
    }

    async fn kv_scan(&self, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>> {
        let state = lock(&self.state);
        let mut rows: Vec<KvRow> = state
            .kv
            .values()
            .filter(|r| r.cat == cat && before_id.is_none_or(|id| r.id < id))
            .cloned()
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.id));
        rows.truncate(limit as usize);
        Ok(rows)
    }

    async fn kv_insert(&self, cat: &str, k: &str, v: &str, now: Timestamp) -> Result<()> {
        self.write(Write::Kv { cat: cat.to_owned(), k: k.to_owned() }, |state| {
            let key = (cat.to_owned(), k.to_owned());
            if state.kv.contains_key(&key) {
                return Err(Error::Conflict(format!("kv {cat}/{k} already exists")));
            }
            let id = state.id();
            let row = KvRow {
                id,
                cat: cat.to_owned(),
                k: k.to_owned(),
                v: v.to_owned(),
                version: 1,
                create_time: now,
                update_time: now,
            };
            state.kv.insert(key, row);
            Ok(())
        })
        .await
    }

    async fn kv_update(&self, cat: &str, k: &str, v: &str, version: i64, now: Timestamp) -> Result<()> {
        self.write(Write::Kv { cat: cat.to_owned(), k: k.to_owned() }, |state| {
            let row = state
                .kv
                .get_mut(&(cat.to_owned(), k.to_owned()))
                .ok_or_else(|| Error::NotFound(format!("kv {cat}/{k}")))?;
            if row.version != version {
                return Err(Error::Conflict(format!(
                    "kv {cat}/{k} is at version {}, not {version}",
                    row.version
                )));
            }
            row.v = v.to_owned();
            row.version += 1;
            row.update_time = now;
            Ok(())
        })
        .await
    }

    async fn kv_delete(&self, cat: &str, k: &str) -> Result<()> {
        self.write(Write::Kv { cat: cat.to_owned(), k: k.to_owned() }, |state| {
            state
                .kv
                .remove(&(cat.to_owned(), k.to_owned()))
                .map(|_| ())
                .ok_or_else(|| Error::NotFound(format!("kv {cat}/{k}")))
        })
        .await
    }

    async fn unfinished_counts(&self, now: Timestamp) -> Result<crate::StatusCounts> {
        let mut counts = self.counts(now);
        counts.by_status.retain(|(s, _)| !s.is_final());
        Ok(counts)
    }

    async fn finished_counts(&self, now: Timestamp) -> Result<Vec<(GlobalStatus, u64)>> {
        Ok(self.counts(now).by_status.into_iter().filter(|(s, _)| s.is_final()).collect())
    }

    async fn purge_finished(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.write(Write::Purge, |state| {
            let mut doomed: Vec<(Timestamp, i64, String)> = state
                .txs
                .values()
                .map(|t| &t.global)
                .filter(|g| matches!(g.status, GlobalStatus::Succeed | GlobalStatus::Failed))
                .filter(|g| g.update_time < before)
                .map(|g| (g.update_time, g.id, g.gid.clone()))
                .collect();
            doomed.sort();
            doomed.truncate(limit as usize);
            for (_, _, gid) in &doomed {
                state.txs.remove(gid);
            }
            Ok(doomed.len() as u64)
        })
        .await
    }
}

#[cfg(all(test, feature = "testsuite"))]
mod tests {
    use super::*;

    async fn fresh() -> (Arc<dyn Store>, ()) {
        (Arc::new(MemoryStore::new()), ())
    }

    crate::store_test_suite!(fresh);
}
