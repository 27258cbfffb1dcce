//! `dtx-engine`: the imperative shell around `dtx-core`.
//!
//! It validates and stores new transactions, runs processing rounds (drive the core's state
//! machine, persist through the [`dtx_store::Store`] with owner fencing, call participants),
//! and runs the scheduler that claims due work on every node.
//!
//! Layout:
//! - [`Engine`] (cheap to clone): the handle the API front doors use.
//! - `request`: a client's global request, validated and turned into rows.
//! - `submit` (submit, prepare), `abort`, `register` (TCC branches): DTM's client operations
//!   with its idempotency rules.
//! - `admin`: operator actions (forceStop, resetNextCronTime, resetCronTime) and topics.
//! - `round`: one processing round per transaction mode (`round/saga.rs`).
//! - `scheduler`: [`Engine::run_once`] (claim due work, process it, return) and [`Engine::run`].
//! - [`participant`]: the HTTP participant caller (one pooled client).
//! - `retention`: deleting old finished transactions ([`Engine::purge`], [`Engine::run_retention`]).
//! - [`trace_context`]: W3C `traceparent` from a submit to every participant call.
//! - `health`: participant host health (hold calls to a down host, probe it, resume fast).
//! - [`observe`]: the hooks a metrics exporter implements ([`Observer`]).
//! - [`clock`]: the time source ([`SystemClock`]; [`StoreClock`], corrected to a store's shared
//!   clock; [`ManualClock`] for tests).

mod abort;
mod admin;
pub mod clock;
mod error;
mod health;
pub mod observe;
mod options;
pub mod participant;
mod register;
mod request;
mod retention;
mod round;
mod scheduler;
mod submit;
pub mod trace_context;
mod workflow;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dtx_core::{Global, Timestamp};
use dtx_store::{ListFilter, Loaded, Store};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::{Clock, ManualClock, StoreClock, SystemClock};
pub use error::{Error, Result};
pub use observe::{NoObserver, Observer, RoundInfo};
pub use options::EngineOptions;
pub use participant::ParticipantTls;
pub use register::RegisterBranch;
pub use request::{Step, Subscriber, TransRequest};
pub use retention::{FINISHED_COUNTS_MAX_AGE, RetentionOptions};
pub use round::{RoundEnd, RoundMode};
pub use submit::SubmitReply;
pub use workflow::WorkflowState;

use crate::participant::{Caller, ParticipantOptions, Participants};
use crate::round::exec::Effects;

/// What the engine reports to observers ([`Engine::events`]): tests wait for these instead of
/// sleeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// A round of `gid` ended.
    RoundEnded {
        /// The transaction.
        gid: String,
        /// How it ended.
        end: RoundEnd,
    },
    /// The scheduler loop made one claim attempt (`claimed` transactions, or the store failed).
    Polled {
        /// How many it claimed (0 when the store failed).
        claimed: usize,
    },
}

/// The engine handle. Clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    opts: EngineOptions,
    clock: Arc<dyn Clock>,
    /// The only path to participants (persist, then call).
    effects: Effects,
    events: broadcast::Sender<EngineEvent>,
    /// Metrics hooks ([`NoObserver`] unless the server installs one).
    observer: Arc<dyn Observer>,
    /// Participant hosts this node saw failing (the executor's hook before and after calls).
    health: Arc<health::Health>,
    /// Span export (`None` unless the server exports spans): rounds' spans are linked to the
    /// stored trace context.
    export: Option<Arc<dyn trace_context::SpanExport>>,
    /// Random per process: owner tokens are `<node>-<seq>`, fresh for every insert and claim.
    node: String,
    seq: AtomicU64,
    /// Rounds running in the background (from submits and the scheduler).
    tasks: TaskTracker,
    /// One permit per running round, whoever started it (the cap of in-flight rounds).
    rounds: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// Which participant addresses may be called, checked at submit time too (None: the engine
    /// calls through a scripted caller, which goes nowhere on the network).
    policy: Option<Arc<dtx_core::allow::Policy>>,
    /// The last count of finished transactions (`Engine::status_counts`).
    finished: retention::FinishedCounts,
    /// Operator stops this node has begun and finished (`Engine::force_stop`). A call recorded
    /// ahead (ADR 21) is made without a write only while no stop has begun since the mark was
    /// written, and marks are made only while no stop is under way.
    stops_begun: AtomicU64,
    stops_done: AtomicU64,
}

impl Engine {
    /// Builds an engine over a store.
    pub fn new(store: Arc<dyn Store>, opts: EngineOptions, clock: Arc<dyn Clock>) -> Result<Engine> {
        Engine::observed(store, opts, clock, Arc::new(NoObserver))
    }

    /// [`Engine::new`] reporting its rounds, calls, claims and fenced writes to `observer`.
    pub fn observed(
        store: Arc<dyn Store>,
        opts: EngineOptions,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn Observer>,
    ) -> Result<Engine> {
        Engine::instrumented(store, opts, clock, observer, None)
    }

    /// [`Engine::observed`] with its round and participant-call spans linked for export
    /// (`export`: see [`trace_context::SpanExport`]).
    pub fn instrumented(
        store: Arc<dyn Store>,
        opts: EngineOptions,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn Observer>,
        export: Option<Arc<dyn trace_context::SpanExport>>,
    ) -> Result<Engine> {
        let popts = ParticipantOptions::of(&opts);
        let mut participants = Participants::observed(observer.clone(), &popts)
            .map_err(|e| Error::InvalidArgument(format!("cannot build the HTTP client: {e}")))?;
        if let Some(e) = &export {
            participants = participants.with_span_export(e.clone());
        }
        Ok(Engine::build(store, opts, clock, Arc::new(participants), observer, Some(popts.policy), export))
    }

    /// Builds an engine that calls participants through `caller` (tests script them).
    pub fn with_caller(
        store: Arc<dyn Store>,
        opts: EngineOptions,
        clock: Arc<dyn Clock>,
        caller: Arc<dyn Caller>,
    ) -> Engine {
        Engine::build(store, opts, clock, caller, Arc::new(NoObserver), None, None)
    }

    fn build(
        store: Arc<dyn Store>,
        opts: EngineOptions,
        clock: Arc<dyn Clock>,
        caller: Arc<dyn Caller>,
        observer: Arc<dyn Observer>,
        policy: Option<Arc<dtx_core::allow::Policy>>,
        export: Option<Arc<dyn trace_context::SpanExport>>,
    ) -> Engine {
        let node = format!("{:08x}", rand::random::<u32>());
        let (events, _) = broadcast::channel(EVENTS_BUFFER);
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let health = Arc::new(health::Health::new(
            opts.health,
            store.clone(),
            clock.clone(),
            observer.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        let rounds = Arc::new(Semaphore::new(opts.max_concurrent_rounds.max(1)));
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                opts,
                clock,
                effects: Effects::new(caller),
                events,
                observer,
                health,
                export,
                node,
                seq: AtomicU64::new(0),
                tasks,
                shutdown,
                policy,
                rounds,
                finished: retention::FinishedCounts::default(),
                stops_begun: AtomicU64::new(0),
                stops_done: AtomicU64::new(0),
            }),
        };
        engine.inner.health.bind(Arc::downgrade(&engine.inner));
        engine
    }

    /// Subscribes to round ends and scheduler polls from now on.
    pub fn events(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    /// The engine's settings.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.opts
    }

    /// The current time as the engine sees it.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Loads a transaction and its branches (`None` for a gid that is unknown, or invalid and
    /// so never stored).
    pub async fn load(&self, gid: &str) -> Result<Option<Loaded>> {
        // No stored gid has a NUL (check_gid), and PostgreSQL refuses one as a parameter.
        if gid.contains('\0') {
            return Ok(None);
        }
        Ok(self.inner.store.load(gid).await?)
    }

    /// Lists transactions, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Global>> {
        // As in `load`: such a prefix matches nothing (and PostgreSQL refuses it).
        if filter.gid_prefix.as_deref().is_some_and(|p| p.contains('\0')) {
            return Ok(Vec::new());
        }
        Ok(self.inner.store.list(filter).await?)
    }

    /// True when a saga has passed its point of no return (a non-rollbackable action
    /// succeeded): it will only go forward. False for other modes.
    pub fn is_forward_only(loaded: &Loaded) -> bool {
        // Every round asks (metrics): most sagas have a compensation for every step, and then
        // no step can be past the point of no return; only the others pay for the layout.
        let has_pivot_candidate =
            loaded.branches.iter().any(|b| b.op == dtx_core::Op::Compensate && b.url.is_empty());
        if loaded.global.trans_type != dtx_core::TransType::Saga || !has_pivot_candidate {
            return false;
        }
        round::saga::SagaShape::of(&loaded.global, &loaded.branches)
            .map(|s| s.forward_only(&loaded.branches))
            .unwrap_or(false)
    }

    /// The first step of a shutdown: stops claiming work and starting rounds (requests that
    /// would start one get `Unavailable`); in-flight rounds start no new calls and release what
    /// they own. [`Engine::shutdown`] then waits for them.
    pub fn stop_claiming(&self) {
        self.inner.shutdown.cancel();
    }

    /// Rounds running now (submits', aborts' and the scheduler's).
    pub fn rounds_in_flight(&self) -> usize {
        self.inner.opts.max_concurrent_rounds.max(1).saturating_sub(self.inner.rounds.available_permits())
    }

    /// A slot for one more round, waiting up to `shed_after` for one to free up. `Unavailable`
    /// (the caller has stored nothing yet) when the node is saturated or shutting down.
    pub(crate) async fn round_slot(&self) -> Result<OwnedSemaphorePermit> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(Error::Unavailable("this node is shutting down; retry on another node".into()));
        }
        // The common case takes no timer (the engine's property tests run without one).
        if let Ok(permit) = inner.rounds.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let wait = inner.rounds.clone().acquire_owned();
        match tokio::time::timeout(inner.opts.shed_after, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                tracing::debug!("round cap saturated: request shed");
                Err(Error::Unavailable(format!(
                    "overloaded: {} rounds in flight and none ended within {:?}; retry later",
                    inner.opts.max_concurrent_rounds, inner.opts.shed_after
                )))
            }
        }
    }

    /// Stops claiming work, lets in-flight rounds finish (they start no new calls and release
    /// what they own), and waits for them up to the configured grace period.
    pub async fn shutdown(&self) {
        self.stop_claiming();
        self.inner.tasks.close();
        if tokio::time::timeout(self.inner.opts.shutdown_grace, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("shutdown grace period over; unfinished rounds stay leased until they expire");
        }
    }
}

/// Events kept for a slow observer before it starts missing some.
const EVENTS_BUFFER: usize = 1024;

impl Inner {
    /// The count of operator stops begun, for calls recorded ahead in a write about to be
    /// made (ADR 21): `None` (no marks ahead) when the store is shared by nodes, when the
    /// engine writes each branch (`record_calls_ahead` off) or while a stop is under way
    /// (its write could land after the marks).
    pub(crate) fn marks_ahead(&self) -> Option<u64> {
        if !self.opts.record_calls_ahead || !self.store.single_node() {
            return None;
        }
        let begun = self.stops_begun.load(Ordering::SeqCst);
        (self.stops_done.load(Ordering::SeqCst) == begun).then_some(begun)
    }

    /// Whether no operator stop has begun since `seen` ([`Inner::marks_ahead`]).
    pub(crate) fn no_stop_since(&self, seen: u64) -> bool {
        self.stops_begun.load(Ordering::SeqCst) == seen
    }

    /// Tells observers, if any.
    fn emit(&self, event: EngineEvent) {
        let _ = self.events.send(event);
    }

    fn fresh_owner(&self) -> String {
        format!("{}-{}", self.node, self.seq.fetch_add(1, Ordering::Relaxed))
    }
}
