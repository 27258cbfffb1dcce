//! Engine settings (built by the server from its configuration).

use std::net::SocketAddr;
use std::time::Duration;

use dtx_core::allow::AllowList;
use dtx_core::health::HealthPolicy;
use dtx_core::options::OptionLimits;
use dtx_core::retry::RetryPolicy;

/// Everything the engine needs to know about its environment.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Retry intervals and backoff cap.
    pub retry: RetryPolicy,
    /// Default timeout of one participant call (DTM: 3 s).
    pub request_timeout: Duration,
    /// Default `timeout_to_fail` of tcc / msg (DTM: 35 s). Sagas have none unless asked.
    pub timeout_to_fail: Duration,
    /// How long a claim or an insert owns a transaction before another node may take it.
    pub lease: Duration,
    /// How many due transactions one claim takes at most.
    pub claim_batch: u32,
    /// How many rounds run at once on this node: the scheduler's and those a submit, a
    /// `wait_result` submit or an abort starts (load shedding: beyond it, requests wait up to
    /// `shed_after`, then get `Unavailable`).
    pub max_concurrent_rounds: usize,
    /// How long a request that would start a round waits for a free round slot before it is
    /// refused `Unavailable` (503 with `Retry-After`), having stored nothing.
    pub shed_after: Duration,
    /// How long the scheduler sleeps when nothing is due.
    pub poll_interval: Duration,
    /// Whether [`crate::Engine::run`] claims work (tests turn it off and call `run_once`).
    pub scheduler_enabled: bool,
    /// How long shutdown waits for in-flight rounds before abandoning them to their leases.
    pub shutdown_grace: Duration,
    /// The most steps a saga may have.
    pub max_steps: usize,
    /// Participant host health (hold calls to a down host, probe it, resume fast when it is
    /// back); `None` turns it off.
    pub health: Option<HealthPolicy>,
    /// Maxima of the per-transaction options (above one: refused, nothing stored).
    pub limits: OptionLimits,
    /// Participant calls (HTTP and gRPC) in flight at once on this node; more wait.
    pub max_outbound_calls: usize,
    /// Participant calls in flight at once to one `host:port`; more wait.
    pub max_outbound_calls_per_host: usize,
    /// gRPC participant channels kept open (the least recently used beyond it is closed).
    pub grpc_channel_cache: usize,
    /// TLS to participants.
    pub participant_tls: crate::ParticipantTls,
    /// Participants that may be called (empty: any not always refused).
    pub participant_allow: AllowList,
    /// dtx's own listeners: never called as participants.
    pub own_listeners: Vec<SocketAddr>,
    /// On a store one node uses (SQLite), the write that starts a transaction's calls (a new
    /// saga's insert, the submit of a TCC, XA or message) also records the first attempt of
    /// its later calls (a saga's rollbackable actions, every confirm, commit or message
    /// action), so they run without a write in between and the results are written once, at
    /// the end (ADR 21). After a crash, the calls done since the round's last write are made
    /// again (as every participant call may be). `false`: a fenced write of each result before
    /// the next call (DTM's default).
    pub record_calls_ahead: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            retry: RetryPolicy {
                retry_interval: Duration::from_secs(10),
                max_interval: Duration::from_secs(3600),
                jitter: 0.1,
            },
            request_timeout: Duration::from_secs(3),
            timeout_to_fail: Duration::from_secs(35),
            lease: Duration::from_secs(10),
            claim_batch: 64,
            max_concurrent_rounds: 256,
            shed_after: Duration::from_secs(2),
            poll_interval: Duration::from_secs(1),
            scheduler_enabled: true,
            shutdown_grace: Duration::from_secs(5),
            max_steps: 100,
            health: Some(HealthPolicy::default()),
            limits: OptionLimits::default(),
            max_outbound_calls: 2048,
            max_outbound_calls_per_host: 512,
            grpc_channel_cache: 256,
            participant_tls: crate::ParticipantTls::default(),
            participant_allow: AllowList::default(),
            own_listeners: Vec::new(),
            record_calls_ahead: true,
        }
    }
}
