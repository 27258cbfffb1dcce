//! The world a generated history runs in: a manual clock, the in-memory store with its fault
//! hook, scripted participants that check the invariants at every call, and the driver that
//! advances time while the engine waits and drops the engine when it "crashes".

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dtx_core::{Op, Outcome, TransType};
use dtx_engine::participant::{CallRequest, Caller};
use dtx_engine::{Clock, Engine, EngineOptions, ManualClock};
use dtx_store::memory::{Fault, MemoryStore, THIEF, Write};

/// The one transaction of a history.
pub const GID: &str = "g";
/// The engine's lease in these tests.
pub const LEASE: Duration = Duration::from_secs(10);

/// A participant's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Success,
    Failure,
    Ongoing,
    Error,
    /// No answer within the request timeout: an error after it.
    Timeout,
}

/// What happens at one effect (a store write or a participant call), by its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// A fenced write finds the row claimed by another node.
    LoseLease,
    /// The store is down for this write.
    Unavailable,
    /// The process dies here: a write is applied but not answered, a call is made but its
    /// answer is lost. The engine is dropped and a fresh one started over the same store.
    Crash,
    /// The write takes this long (ms) on the clock (a busy writer queue).
    Slow(u64),
}

/// One call: (branch_id, op, answer; `None` when the process died before it).
pub type CallRecord = (String, &'static str, Option<Answer>);

/// Per-row state of the scripted participants.
#[derive(Default)]
struct Log {
    /// Calls per (branch_id, op).
    count: BTreeMap<(String, &'static str), u32>,
    /// Calls in flight: id -> (branch_id, op).
    in_flight: BTreeMap<u64, (String, &'static str)>,
    next_call: u64,
    /// Definite answers that a participant with a barrier repeats (saga actions, check-back).
    sticky: BTreeMap<(String, &'static str), Answer>,
    /// A non-rollbackable saga action answered SUCCESS.
    pivot_succeeded: bool,
    /// The latest check-back answer was SUCCESS.
    check_back_ok: Option<bool>,
    confirms: usize,
    cancels: usize,
    /// Every call, in order.
    calls: Vec<CallRecord>,
    violations: Vec<String>,
}

pub struct World {
    pub clock: Arc<ManualClock>,
    pub store: Arc<MemoryStore>,
    trans_type: TransType,
    /// Saga: which steps can be rolled back (by step index).
    rollbackable: Vec<bool>,
    /// msg: submitted by the client (actions may run without a check-back).
    pub client_submitted: AtomicBool,
    effects: AtomicUsize,
    crashed: AtomicBool,
    faults_on: AtomicBool,
    faults: BTreeMap<usize, Injected>,
    answers: Mutex<VecDeque<(Answer, u64)>>,
    jumps: Vec<u64>,
    next_jump: AtomicUsize,
    log: Mutex<Log>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl World {
    pub fn new(
        trans_type: TransType,
        rollbackable: Vec<bool>,
        answers: Vec<(Answer, u64)>,
        faults: BTreeMap<usize, Injected>,
        jumps: Vec<u64>,
    ) -> Arc<World> {
        let world = Arc::new(World {
            clock: Arc::new(ManualClock::new(dtx_core::Timestamp(1_700_000_000_000))),
            store: Arc::new(MemoryStore::new()),
            trans_type,
            rollbackable,
            client_submitted: AtomicBool::new(false),
            effects: AtomicUsize::new(0),
            crashed: AtomicBool::new(false),
            faults_on: AtomicBool::new(true),
            faults,
            answers: Mutex::new(answers.into()),
            jumps: if jumps.is_empty() { vec![100] } else { jumps },
            next_jump: AtomicUsize::new(0),
            log: Mutex::default(),
        });
        let weak: Weak<World> = Arc::downgrade(&world);
        world
            .store
            .set_fault_hook(move |_, write| weak.upgrade().map(|w| w.on_write(write)).unwrap_or_default());
        world
    }

    /// A fresh engine (a node started over the store), calling the scripted participants.
    pub fn engine(self: &Arc<World>) -> Engine {
        let opts = EngineOptions {
            retry: dtx_core::retry::RetryPolicy {
                retry_interval: Duration::from_secs(1),
                max_interval: Duration::from_secs(20),
                jitter: 0.1,
            },
            lease: LEASE,
            timeout_to_fail: Duration::from_secs(20),
            scheduler_enabled: false,
            ..EngineOptions::default()
        };
        let clock: Arc<dyn Clock> = self.clock.clone();
        Engine::with_caller(self.store.clone(), opts, clock, Arc::new(Scripted(self.clone())))
    }

    /// From now on: no faults, and every participant answers SUCCESS (but what a barrier
    /// repeats).
    pub fn calm(&self) {
        self.faults_on.store(false, Ordering::SeqCst);
    }

    fn effect(&self) -> Option<Injected> {
        if !self.faults_on.load(Ordering::SeqCst) {
            return None;
        }
        let n = self.effects.fetch_add(1, Ordering::SeqCst);
        self.faults.get(&n).copied()
    }

    fn on_write(&self, write: &Write) -> Fault {
        match self.effect() {
            Some(Injected::LoseLease) if matches!(write, Write::Save(_)) => {
                Fault::LoseLease(self.clock.now().add(Duration::from_secs(2)))
            }
            Some(Injected::Unavailable) => Fault::Unavailable,
            Some(Injected::Crash) => {
                self.crashed.store(true, Ordering::SeqCst);
                Fault::Crash
            }
            Some(Injected::Slow(ms)) => {
                self.clock.advance(Duration::from_millis(ms));
                Fault::None
            }
            _ => Fault::None,
        }
    }

    fn violation(log: &mut Log, what: String) {
        log.violations.push(what);
    }

    /// Runs `fut` as the process would: while it waits, time moves on (by the generated
    /// jumps). `None` when the process crashed (the future is dropped mid-way).
    pub async fn drive<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(fut);
        for _ in 0..5_000 {
            tokio::select! {
                biased;
                out = &mut fut => return Some(out),
                () = std::future::ready(()) => {}
            }
            if self.crashed.swap(false, Ordering::SeqCst) {
                return None;
            }
            let i = self.next_jump.fetch_add(1, Ordering::SeqCst);
            self.clock.advance(Duration::from_millis(self.jumps[i % self.jumps.len()]));
        }
        panic!("the engine never finished waiting (5000 time steps)");
    }

    /// What went wrong, and the calls made.
    pub fn violations(&self) -> (Vec<String>, Vec<CallRecord>) {
        let log = lock(&self.log);
        (log.violations.clone(), log.calls.clone())
    }

    pub fn pivot_succeeded(&self) -> bool {
        lock(&self.log).pivot_succeeded
    }

    pub fn confirms_and_cancels(&self) -> (usize, usize) {
        let log = lock(&self.log);
        (log.confirms, log.cancels)
    }

    /// Checks a call as it starts, against the store as it is now. Returns the call's id.
    fn check_call(&self, req: &CallRequest) -> u64 {
        let now = self.clock.now();
        let snap = self.store.snapshot(&req.gid);
        let mut log = lock(&self.log);
        let op = req.op.as_str();
        let key = (req.branch_id.clone(), op);
        let n = {
            let c = log.count.entry(key.clone()).or_default();
            *c += 1;
            *c
        };
        let what = format!("call #{n} of {}/{op}", req.branch_id);
        match &snap {
            None => Self::violation(&mut log, format!("{what}: the transaction is not stored")),
            Some(t) => {
                let g = &t.global;
                let owned = g.owner.as_deref().is_some_and(|o| o != THIEF);
                if !owned || g.lease_until.is_none_or(|u| u < now) {
                    Self::violation(
                        &mut log,
                        format!(
                            "{what}: made without a valid lease (owner {:?}, lease {:?}, now {now:?})",
                            g.owner, g.lease_until
                        ),
                    );
                }
                if req.op != Op::Msg {
                    let stored = t.branches.iter().find(|b| b.branch_id == req.branch_id && b.op == req.op);
                    let attempts = stored.map_or(0, |b| b.attempts);
                    if attempts < n {
                        Self::violation(
                            &mut log,
                            format!("{what}: only {attempts} attempts persisted before it"),
                        );
                    }
                }
                if self.trans_type == TransType::Saga
                    && req.op == Op::Action
                    && g.status != dtx_core::GlobalStatus::Submitted
                {
                    Self::violation(&mut log, format!("{what}: an action while the saga is {}", g.status));
                }
                if req.op == Op::Compensate {
                    let action =
                        t.branches.iter().find(|b| b.branch_id == req.branch_id && b.op == Op::Action);
                    if action.is_none_or(|b| b.attempts == 0) {
                        Self::violation(&mut log, format!("{what}: its action was never attempted"));
                    }
                    if log.pivot_succeeded {
                        Self::violation(
                            &mut log,
                            format!("{what}: after a non-rollbackable action succeeded"),
                        );
                    }
                }
            }
        }
        if self.trans_type == TransType::Saga
            && req.op == Op::Action
            && !self.is_rollbackable(&req.branch_id)
            && !log.pivot_succeeded
            && !log.in_flight.is_empty()
        {
            let others: Vec<_> = log.in_flight.values().cloned().collect();
            Self::violation(&mut log, format!("{what}: the pivot started while {others:?} were in flight"));
        }
        if self.trans_type == TransType::Saga
            && !log.pivot_succeeded
            && log.in_flight.values().any(|(b, o)| *o == "action" && !self.is_rollbackable(b))
        {
            Self::violation(&mut log, format!("{what}: started while the pivot was in flight"));
        }
        match req.op {
            Op::Confirm | Op::Commit => log.confirms += 1,
            Op::Cancel | Op::Rollback => log.cancels += 1,
            _ => {}
        }
        if log.confirms > 0 && log.cancels > 0 {
            Self::violation(&mut log, format!("{what}: a TCC / XA both confirmed and cancelled"));
        }
        if self.trans_type == TransType::Msg
            && req.op == Op::Action
            && !self.client_submitted.load(Ordering::SeqCst)
            && log.check_back_ok != Some(true)
        {
            let latest = log.check_back_ok;
            Self::violation(
                &mut log,
                format!("{what}: a msg action without a committing check-back ({latest:?})"),
            );
        }
        let id = log.next_call;
        log.next_call += 1;
        log.in_flight.insert(id, key);
        id
    }

    fn is_rollbackable(&self, branch_id: &str) -> bool {
        let step = branch_id.parse::<usize>().unwrap_or(1).saturating_sub(1);
        self.rollbackable.get(step).copied().unwrap_or(true)
    }

    /// The answer to a call (scripted while faults are on, SUCCESS after), barrier-consistent.
    fn answer(&self, req: &CallRequest) -> (Answer, u64) {
        let key = (req.branch_id.clone(), req.op.as_str());
        if let Some(&a) = lock(&self.log).sticky.get(&key) {
            return (a, 0);
        }
        if !self.faults_on.load(Ordering::SeqCst) {
            return (Answer::Success, 0);
        }
        lock(&self.answers).pop_front().unwrap_or((Answer::Success, 0))
    }

    fn answered(&self, id: u64, req: &CallRequest, answer: Answer) {
        let mut log = lock(&self.log);
        log.in_flight.remove(&id);
        let key = (req.branch_id.clone(), req.op.as_str());
        log.calls.push((key.0.clone(), key.1, Some(answer)));
        // A participant with a barrier repeats a done action's SUCCESS (so the pivot's success
        // is never taken back) and a check-back's verdict. FAILURE of an action is not
        // repeated: after the pivot it is retried until the participant succeeds.
        let barrier = match req.op {
            Op::Msg => matches!(answer, Answer::Success | Answer::Failure),
            Op::Action => self.trans_type == TransType::Saga && answer == Answer::Success,
            _ => false,
        };
        if barrier {
            log.sticky.entry(key).or_insert(answer);
        }
        if self.trans_type == TransType::Saga
            && req.op == Op::Action
            && answer == Answer::Success
            && !self.is_rollbackable(&req.branch_id)
        {
            log.pivot_succeeded = true;
        }
        if req.op == Op::Msg {
            log.check_back_ok = Some(answer == Answer::Success);
        }
    }
}

/// Removes a call from the in-flight set when it ends or is dropped (crash, fenced round).
struct InFlight<'a>(&'a World, u64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.0.log).in_flight.remove(&self.1);
    }
}

struct Scripted(Arc<World>);

#[async_trait::async_trait]
impl Caller for Scripted {
    async fn call(&self, req: &CallRequest) -> Outcome {
        let w = &self.0;
        let crash = w.effect() == Some(Injected::Crash);
        let id = w.check_call(req);
        let _guard = InFlight(w, id);
        if crash {
            // The call reached the participant; the process dies before the answer.
            lock(&w.log).calls.push((req.branch_id.clone(), req.op.as_str(), None));
            w.crashed.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        let (answer, delay) = w.answer(req);
        let delay = if answer == Answer::Timeout { 3_000 } else { delay };
        if delay > 0 {
            w.clock.sleep(Duration::from_millis(delay)).await;
        }
        w.answered(id, req, answer);
        match answer {
            Answer::Success => Outcome::Success,
            Answer::Failure => Outcome::Failure("scripted FAILURE".into()),
            Answer::Ongoing => Outcome::Ongoing,
            Answer::Error => Outcome::Error("scripted error".into()),
            Answer::Timeout => Outcome::Error("timed out".into()),
        }
    }
}
