//! Participant host health as this node sees it (the rules: `dtx_core::health`).
//!
//! The executor asks [`Health::admit`] before each call and reports each answer to
//! [`Health::observe`]. A host with too many consecutive failures is *down*: calls to it are
//! held (the round releases the transaction until the host's next probe, marked
//! `held_host` in the store), except one probe per probe interval. The first answer that
//! shows the host alive marks it up and starts a resume: [`dtx_store::Store::resume_held`]
//! makes the transactions held for that host due now, a token bucket's worth at a time.
//!
//! Each node keeps its own view (no shared state); the resume goes through the store, so the
//! transactions held by any node are released whichever node's probe succeeds. Memory: only
//! hosts with a recent failure are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use dtx_core::health::{Admission, Change, HealthPolicy, HostState, Signal, TokenBucket, host_of, signal_of};
use dtx_core::{Outcome, Timestamp};
use dtx_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::round::exec::no_premarks;
use crate::{Clock, Inner, Observer, RoundMode, round};

/// What the executor does with one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Call (`probe`: this call is the down host's probe).
    Call { probe: bool },
    /// Do not call: hold the transaction for `host` until `until`.
    Hold { host: String, until: Timestamp },
}

#[derive(Debug, Default)]
struct Host {
    state: HostState,
    /// A resume task is running for it.
    resuming: bool,
    /// Until when rows still held for it wait for that resume (bounded: a resume that stalls,
    /// e.g. on a store outage, must not keep them waiting).
    resume_gate: Timestamp,
    /// A probe task is running for it.
    probing: bool,
    /// Transactions this node held for it lately (the probe task's candidates), newest last.
    held: VecDeque<String>,
}

/// Held transactions remembered per down host as probe candidates.
const PROBE_CANDIDATES: usize = 16;

/// The hosts of this node.
pub(crate) struct Health {
    /// `None`: turned off (every call goes out).
    policy: Option<HealthPolicy>,
    hosts: Mutex<HashMap<String, Host>>,
    /// How many hosts `hosts` holds: zero on a healthy node, so calls skip the lock.
    tracked: AtomicUsize,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn Observer>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// The engine, for the probe task's rounds (set once built; weak: the engine owns this).
    engine: OnceLock<Weak<Inner>>,
}

/// Transactions one resume statement releases at most (a token bucket's worth, bounded).
const RESUME_BATCH: u32 = 200;

impl Health {
    pub(crate) fn new(
        policy: Option<HealthPolicy>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn Observer>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Health {
        Health {
            policy,
            hosts: Mutex::default(),
            tracked: AtomicUsize::new(0),
            store,
            clock,
            observer,
            tasks,
            shutdown,
            engine: OnceLock::new(),
        }
    }

    /// Gives the probe task the engine it runs rounds in.
    pub(crate) fn bind(&self, engine: Weak<Inner>) {
        let _ = self.engine.set(engine);
    }

    /// A transaction was held for `host` on this node: a candidate for its next probe.
    pub(crate) fn note_held(&self, host: &str, gid: &str) {
        if let Some(entry) = self.hosts().get_mut(host)
            && !entry.held.iter().any(|g| g == gid)
        {
            if entry.held.len() >= PROBE_CANDIDATES {
                entry.held.pop_front();
            }
            entry.held.push_back(gid.to_owned());
        }
    }

    fn hosts(&self) -> MutexGuard<'_, HashMap<String, Host>> {
        // A panic while holding the lock leaves a consistent map (every update is one store).
        self.hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call to `url` may go out now. `held`: the transaction's `held_host`. `""`
    /// means it was released by its host's return, seen by some node: while this node still
    /// sees the host down, the call goes out as a probe rather than being held again until this
    /// node's own probe. Held for this very host while its resume runs here: it waits for the
    /// resume, which releases it at the resume rate (a held row coming due on its own at the
    /// probe that brought the host back would otherwise bypass the rate).
    pub(crate) fn admit(&self, url: &str, now: Timestamp, held: Option<&str>) -> Admit {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return Admit::Call { probe: false };
        }
        let (Some(policy), Some(host)) = (&self.policy, host_of(url)) else {
            return Admit::Call { probe: false };
        };
        let mut hosts = self.hosts();
        let Some(entry) = hosts.get_mut(host) else {
            return Admit::Call { probe: false };
        };
        if held == Some("") && entry.state.is_down() {
            return Admit::Call { probe: true };
        }
        if entry.resuming && now < entry.resume_gate && !entry.state.is_down() && held == Some(host) {
            drop(hosts);
            self.observer.call_held(host);
            return Admit::Hold { host: host.to_owned(), until: now.add(policy.probe_cap) };
        }
        match entry.state.admit(policy, now, rand::random::<f64>()) {
            Admission::Call => Admit::Call { probe: false },
            Admission::Probe => {
                drop(hosts);
                self.observer.host_probed(host);
                Admit::Call { probe: true }
            }
            Admission::Hold { until } => {
                drop(hosts);
                self.observer.call_held(host);
                Admit::Hold { host: host.to_owned(), until }
            }
        }
    }

    /// [`Health::admit`] of the calls one round starts together: `Ok` with whether each is a
    /// probe, or the first hold. Calls to a host whose probe is among them go with it (the
    /// probe is one transaction's round, whatever its concurrent steps), so that a second call
    /// to the same host is not held by the probe slot the first one just took.
    pub(crate) fn admit_all<'u>(
        &self,
        urls: impl Iterator<Item = &'u str>,
        now: Timestamp,
        held: Option<&str>,
    ) -> Result<Vec<bool>, (String, Timestamp)> {
        let mut probes = Vec::new();
        let mut probed: Vec<&str> = Vec::new();
        for url in urls {
            if host_of(url).is_some_and(|h| probed.contains(&h)) {
                probes.push(false);
                continue;
            }
            match self.admit(url, now, held) {
                Admit::Call { probe } => {
                    if probe && let Some(h) = host_of(url) {
                        probed.push(h);
                    }
                    probes.push(probe);
                }
                Admit::Hold { host, until } => return Err((host, until)),
            }
        }
        Ok(probes)
    }

    /// The host of `url` and its next probe time, while this node sees it down.
    pub(crate) fn down_until(&self, url: &str) -> Option<(String, Timestamp)> {
        self.policy.as_ref()?;
        let host = host_of(url)?;
        match self.hosts().get(host)?.state {
            HostState::Down { next_probe, .. } => Some((host.to_owned(), next_probe)),
            HostState::Up { .. } => None,
        }
    }

    /// Takes a call's answer into account (`probe`: it was admitted as the probe).
    pub(crate) fn observe(self: &Arc<Self>, url: &str, outcome: &Outcome, probe: bool) {
        let (Some(policy), Some(host)) = (&self.policy, host_of(url)) else {
            return;
        };
        let signal = signal_of(outcome);
        if signal != Signal::Failure && self.tracked.load(Ordering::Acquire) == 0 {
            return;
        }
        let now = self.clock.now();
        let mut hosts = self.hosts();
        let change = match hosts.get_mut(host) {
            Some(entry) => {
                let change = entry.state.observe(policy, signal, probe, now, rand::random::<f64>());
                // Kept while its resume runs (one resume per host at a time).
                let start_resume = matches!(change, Change::WentUp { .. }) && !entry.resuming;
                entry.resuming |= start_resume;
                if start_resume {
                    entry.resume_gate = now.add(policy.probe_cap);
                }
                if start_resume {
                    let health = Arc::clone(self);
                    let host = host.to_owned();
                    let policy = *policy;
                    self.tasks.spawn(async move { health.resume(host, policy).await });
                }
                if entry.state.is_clean() && !entry.resuming {
                    hosts.remove(host);
                    self.tracked.store(hosts.len(), Ordering::Release);
                }
                change
            }
            None if signal == Signal::Failure => {
                let mut entry = Host::default();
                let change = entry.state.observe(policy, signal, probe, now, rand::random::<f64>());
                hosts.insert(host.to_owned(), entry);
                self.tracked.store(hosts.len(), Ordering::Release);
                change
            }
            // Healthy and nothing remembered: the common case costs one lookup.
            None => Change::None,
        };
        match change {
            Change::None => {}
            Change::WentDown => {
                if let Some(entry) = hosts.get_mut(host)
                    && !std::mem::replace(&mut entry.probing, true)
                {
                    let health = Arc::clone(self);
                    let host = host.to_owned();
                    self.tasks.spawn(async move { health.probe(host).await });
                }
                drop(hosts);
                warn!(
                    host,
                    threshold = policy.failure_threshold,
                    error = outcome.error_text().unwrap_or_default(),
                    "participant host down: holding its calls, probing it with one call per probe interval"
                );
                self.observer.host_down(host);
            }
            Change::WentUp { down_for } => {
                drop(hosts);
                info!(
                    host,
                    down_for_ms = down_for.as_millis() as u64,
                    "participant host up again: resuming the transactions waiting for it"
                );
                self.observer.host_up(host, down_for);
            }
        }
    }

    /// Releases the transactions held for `host` at the policy's rate, until none is left,
    /// the host is down again, or the node shuts down.
    async fn resume(self: Arc<Self>, host: String, policy: HealthPolicy) {
        let mut bucket = TokenBucket::full(&policy, self.clock.now());
        let mut total = 0u64;
        let mut failures = 0u32;
        loop {
            if self.shutdown.is_cancelled() || self.hosts().get(&host).is_some_and(|e| e.state.is_down()) {
                break;
            }
            let now = self.clock.now();
            let n = bucket.take(&policy, now, RESUME_BATCH);
            if n == 0 {
                self.pause(bucket.wait_for_one(&policy)).await;
                continue;
            }
            match self.store.resume_held(&host, n, now).await {
                Ok(k) => {
                    total += k;
                    self.observer.resumed(&host, k);
                    if k < u64::from(n) {
                        break;
                    }
                }
                Err(e) => {
                    bucket.give_back(&policy, n);
                    failures += 1;
                    // The rows stay held (due at the probe time they were given): nothing is
                    // lost if this node gives up, another probe resumes them.
                    if failures > MAX_RESUME_FAILURES {
                        warn!(host, error = %e, "resuming held transactions failed; they stay due at their probe times");
                        break;
                    }
                    self.pause(Duration::from_millis(500)).await;
                }
            }
        }
        info!(host, resumed = total, "released the transactions held for the host");
        let mut hosts = self.hosts();
        if let Some(entry) = hosts.get_mut(&host) {
            entry.resuming = false;
            if entry.state.is_clean() {
                hosts.remove(&host);
                self.tracked.store(hosts.len(), Ordering::Release);
            }
        }
    }

    /// While `host` is down: at each probe time, takes a transaction this node held for it and
    /// runs a round of it, whose call is then the probe. So a node probes on its own schedule
    /// even when the rows it held were claimed and held again by other nodes (their due times
    /// follow those nodes' probes). Rows held for the host come due at probe times anyway.
    async fn probe(self: Arc<Self>, host: String) {
        let interval = self.policy.map(|p| p.probe_interval).unwrap_or(Duration::from_secs(1));
        loop {
            let next = match self.hosts().get(&host).map(|e| e.state) {
                Some(HostState::Down { next_probe, .. }) => next_probe,
                _ => break,
            };
            self.pause(next.since(self.clock.now())).await;
            if self.shutdown.is_cancelled() {
                break;
            }
            let candidate = match self.hosts().get_mut(&host) {
                Some(entry) if entry.state.is_down() => entry.held.pop_back(),
                _ => break,
            };
            let (Some(gid), Some(inner)) = (candidate, self.engine.get().and_then(Weak::upgrade)) else {
                // Nothing held here lately: the held rows' own due times bring the probe.
                self.pause(interval).await;
                continue;
            };
            // The probe's round counts against the node's round cap like any other.
            let Ok(slot) = inner.rounds.clone().acquire_owned().await else {
                break;
            };
            let owner = inner.fresh_owner();
            let now = self.clock.now();
            match self.store.claim(&gid, &owner, now, now.add(inner.opts.lease)).await {
                Ok(Some(loaded)) => {
                    let mode = if loaded.taken_over { RoundMode::Takeover } else { RoundMode::Scheduled };
                    round::run(&inner, loaded, owner, no_premarks(), mode).await;
                    drop(slot);
                }
                // Finished, or being processed: try another candidate.
                Ok(None) => {}
                Err(_) => self.pause(interval).await,
            }
        }
        if let Some(entry) = self.hosts().get_mut(&host) {
            entry.probing = false;
            entry.held.clear();
        }
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = self.clock.sleep(d) => {}
        }
    }
}

/// Store failures a resume retries before leaving the rows to their probe times.
const MAX_RESUME_FAILURES: u32 = 5;

#[cfg(test)]
mod tests {
    use dtx_store::memory::MemoryStore;

    use super::*;
    use crate::{ManualClock, NoObserver};

    fn health(clock: Arc<ManualClock>) -> Arc<Health> {
        let policy = HealthPolicy { failure_threshold: 2, jitter: 0.0, ..HealthPolicy::default() };
        Arc::new(Health::new(
            Some(policy),
            Arc::new(MemoryStore::new()),
            clock,
            Arc::new(NoObserver),
            TaskTracker::new(),
            CancellationToken::new(),
        ))
    }

    const DOWN: &str = "http://down:1/a";
    const DOWN2: &str = "http://down:1/b";
    const OTHER: &str = "http://other:2/a";

    #[tokio::test]
    async fn a_down_host_holds_its_calls_and_probes_with_one_round() {
        let clock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
        let h = health(clock.clone());
        let now = clock.now();
        let refused = Outcome::Error("connection failed: refused".into());
        assert_eq!(h.admit_all([DOWN].into_iter(), now, None), Ok(vec![false]));
        h.observe(DOWN, &refused, false);
        h.observe(OTHER, &Outcome::Success, false);
        assert_eq!(h.down_until(DOWN), None, "one failure is below the threshold");
        h.observe(DOWN2, &refused, false);
        let (host, until) = h.down_until(DOWN).expect("down after two failures");
        assert_eq!((host.as_str(), until), ("http://down:1", now.add(Duration::from_secs(1))));
        // Held before the probe time; other hosts unaffected.
        assert_eq!(h.admit_all([OTHER, DOWN].into_iter(), now, None), Err(("http://down:1".into(), until)));
        assert_eq!(h.admit_all([OTHER].into_iter(), now, None), Ok(vec![false]));
        // At the probe time one round probes, with all its calls to that host; the next is held.
        assert_eq!(h.admit_all([DOWN, OTHER, DOWN2].into_iter(), until, None), Ok(vec![true, false, false]));
        assert!(h.admit_all([DOWN].into_iter(), until, None).is_err());
        // A transaction resumed by another node's probe goes out as a probe.
        assert_eq!(h.admit_all([DOWN].into_iter(), until, Some("")), Ok(vec![true]));
        // A FAILURE answer is an answer: the host is up, and a resume starts.
        h.observe(DOWN, &Outcome::Failure("no".into()), true);
        assert_eq!(h.down_until(DOWN), None);
        // While that resume may still run, rows held for the host wait for it (briefly).
        let gated = h.admit_all([DOWN].into_iter(), until, Some("http://down:1"));
        assert!(matches!(gated, Err((_, t)) if t == until.add(Duration::from_secs(5))), "{gated:?}");
        assert_eq!(h.admit_all([DOWN].into_iter(), until, None), Ok(vec![false]));
    }

    #[tokio::test]
    async fn turned_off_it_admits_everything() {
        let clock = Arc::new(ManualClock::new(Timestamp(0)));
        let h = Arc::new(Health::new(
            None,
            Arc::new(MemoryStore::new()),
            clock.clone(),
            Arc::new(NoObserver),
            TaskTracker::new(),
            CancellationToken::new(),
        ));
        for _ in 0..10 {
            h.observe(DOWN, &Outcome::Error("timed out".into()), false);
        }
        assert_eq!(h.admit_all([DOWN].into_iter(), clock.now(), None), Ok(vec![false]));
        assert_eq!(h.down_until(DOWN), None);
    }
}
