//! Settings: defaults, then a TOML file (`--config`), then `DTX_*` environment variables, then
//! flags (clap merges the last two, flags first). Bad values fail at start, naming the setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dtx_core::retry::RetryPolicy;
use dtx_engine::EngineOptions;
use serde::{Deserialize, Serialize};

mod checks;
pub use checks::parse_duration;
use checks::{HostHealth, addr, at_least, health_policy, pair, positive, read_pem, token};

/// A setting has a value dtx cannot use.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The value of `setting` is not acceptable.
    #[error("invalid {setting}: {message}")]
    Invalid {
        /// The flag name (`--retry-interval`).
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The `dtx` command line.
#[derive(Debug, Parser)]
#[command(name = "dtx", version, about = "dtx: a DTM-compatible distributed transaction coordinator")]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of `serve` (also accepted without the subcommand).
    #[command(flatten)]
    pub settings: Settings,
}

/// Subcommands.
// Parsed once at start: the size of `Serve` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator (the default).
    Serve(Settings),
    /// Print the default configuration as TOML.
    PrintDefaultConfig,
    /// Delete finished transactions (succeed, failed) last written more than DURATION ago, with
    /// their branches, once, in small batches, then exit. Safe while nodes are running.
    Purge(PurgeArgs),
}

/// `dtx purge`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Age of the finished transactions to delete (e.g. `30d`, `12h`); must be above zero.
    #[arg(long, value_name = "DURATION")]
    pub older_than: String,
    /// The store and other settings, as for `serve`.
    #[command(flatten)]
    pub settings: Settings,
}

/// Every setting, as a flag and a `DTX_*` variable; the TOML file uses the same names in
/// snake_case (`retry_interval = "10s"`). Durations take `500ms`, `10s`, `2m` or plain seconds.
#[derive(Debug, Default, Clone, Args, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// TOML configuration file.
    #[arg(long, env = "DTX_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Store URL: `sqlite://path` (created if missing), `postgres://user:password@host/db` or
    /// `mysql://user:password@host:port/db` (MySQL 8 / MariaDB 10.6+); several nodes may share
    /// one PostgreSQL or MySQL database.
    #[arg(long, env = "DTX_DATABASE_URL")]
    pub database_url: Option<DatabaseUrl>,
    /// HTTP API address (port 0 = any free port).
    #[arg(long, env = "DTX_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// gRPC API address: DTM's `dtmgimp.Dtm` service, health and reflection (port 0 = any free port).
    #[arg(long, env = "DTX_GRPC_LISTEN")]
    pub grpc_listen: Option<String>,
    /// Log format: `pretty` or `json` (level from RUST_LOG).
    #[arg(long, env = "DTX_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// OpenTelemetry collector (OTLP over gRPC, `http://host:4317`): rounds and participant calls
    /// are exported as spans of the submitter's trace. Unset (default): nothing is exported.
    #[arg(long, env = "DTX_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Base retry interval (DTM: 10s); per-transaction `retry_interval` overrides it.
    #[arg(long, env = "DTX_RETRY_INTERVAL")]
    pub retry_interval: Option<String>,
    /// Cap of the exponential backoff after participant errors.
    #[arg(long, env = "DTX_BACKOFF_CAP")]
    pub backoff_cap: Option<String>,
    /// Default timeout of one participant call (DTM: 3s).
    #[arg(long, env = "DTX_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// Default timeout-to-fail of tcc / msg transactions (DTM: 35s).
    #[arg(long, env = "DTX_TIMEOUT_TO_FAIL")]
    pub timeout_to_fail: Option<String>,
    /// How long a node owns a transaction it processes before others may take it over.
    #[arg(long, env = "DTX_LEASE")]
    pub lease: Option<String>,
    /// How often the scheduler looks for due work when idle.
    #[arg(long, env = "DTX_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// How many due transactions one claim takes.
    #[arg(long, env = "DTX_CLAIM_BATCH")]
    pub claim_batch: Option<u32>,
    /// How many rounds run at once on this node: the scheduler's and those submits (with or
    /// without wait_result) and aborts start. A request finding no free slot within
    /// --shed-after gets 503 with Retry-After (gRPC UNAVAILABLE) and nothing is stored.
    #[arg(long, env = "DTX_MAX_CONCURRENT_ROUNDS")]
    pub max_concurrent_rounds: Option<usize>,
    /// How long a request waits for a free round slot or room in the store's write queue
    /// before it is refused with 503 / UNAVAILABLE (load shedding).
    #[arg(long, env = "DTX_SHED_AFTER")]
    pub shed_after: Option<String>,
    /// How many store writes (lease renewals and round progress excepted) may be outstanding
    /// at once; beyond it writes wait up to --shed-after, then are refused.
    #[arg(long, env = "DTX_MAX_QUEUED_WRITES")]
    pub max_queued_writes: Option<usize>,
    /// Deadline of one store operation (a hung database answers 503 after it, not never).
    #[arg(long, env = "DTX_STORE_TIMEOUT")]
    pub store_timeout: Option<String>,
    /// On SIGTERM: how long in-flight rounds may take to finish or hand their work over before
    /// the process exits (their leases then expire and another node takes over).
    #[arg(long, env = "DTX_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "DTX_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most steps a saga may have.
    #[arg(long, env = "DTX_MAX_STEPS")]
    pub max_steps: Option<usize>,
    /// SQLite `synchronous`: `full` (default: an acknowledged submit survives power loss) or
    /// `normal` (survives a process crash only).
    #[arg(long, env = "DTX_SQLITE_SYNCHRONOUS")]
    pub sqlite_synchronous: Option<String>,
    /// PostgreSQL: most connections this node opens (reads and the two group-commit writers share
    /// them; one writer below 4).
    #[arg(long, env = "DTX_POSTGRES_POOL_SIZE")]
    pub postgres_pool_size: Option<u32>,
    /// MySQL / MariaDB: most connections this node opens (reads and group-commit writers share
    /// them).
    #[arg(long, env = "DTX_MYSQL_POOL_SIZE")]
    pub mysql_pool_size: Option<u32>,
    /// Finished transactions (succeed, failed) last written longer ago than this are deleted,
    /// with their branches, by a background task on every node (default 7d; 0 keeps everything).
    #[arg(long, env = "DTX_RETENTION")]
    pub retention: Option<String>,
    /// Admin token: when set, the operator calls (`all`, `forceStop`, `resetNextCronTime`,
    /// `resetCronTime`, `subscribe`, `unsubscribe`, `DELETE topic`, `scanKV`, `/api/admin/*`;
    /// gRPC `Subscribe`, `Unsubscribe`, `DeleteTopic`) need `Authorization: Bearer <token>`
    /// (gRPC: `authorization` metadata); the admin UI asks for it once. Also accepted wherever
    /// the API token is.
    #[arg(long, env = "DTX_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// Participant health (`true` / `false`): after consecutive failures a participant host is
    /// down; its calls wait, one probe per probe interval goes out, and its first success
    /// resumes every transaction waiting for it at once (at the resume rate).
    #[arg(long, env = "DTX_HOST_HEALTH", value_name = "BOOL")]
    pub host_health: Option<bool>,
    /// A write per branch (`true` / `false`): a fenced write of each call's result before the
    /// transaction's next call (DTM's default). `false` (the default) on SQLite: the write
    /// that starts a transaction's calls (a saga's insert, a TCC, XA or message submit) also
    /// records its later calls' first attempts, the results are written once, at the end, and
    /// after a crash the calls done since the last write are made again. PostgreSQL and MySQL
    /// (several nodes) always write each branch.
    #[arg(long, env = "DTX_WRITE_EACH_BRANCH", value_name = "BOOL")]
    pub write_each_branch: Option<bool>,
    /// Consecutive failures (connection failure, timeout, 5xx) that mark a host down.
    #[arg(long, env = "DTX_HOST_FAILURE_THRESHOLD")]
    pub host_failure_threshold: Option<u32>,
    /// The wait before the first probe of a down host; doubles after each failed probe.
    #[arg(long, env = "DTX_HOST_PROBE_INTERVAL")]
    pub host_probe_interval: Option<String>,
    /// The longest wait between two probes of a down host (at most the backoff cap).
    #[arg(long, env = "DTX_HOST_PROBE_CAP")]
    pub host_probe_cap: Option<String>,
    /// Transactions released at once when a host comes back.
    #[arg(long, env = "DTX_HOST_RESUME_BURST")]
    pub host_resume_burst: Option<u32>,
    /// Transactions released per second after the burst, per host.
    #[arg(long, env = "DTX_HOST_RESUME_RATE")]
    pub host_resume_rate: Option<f64>,
    /// API token: when set, the SDK calls (`newGid`, `prepare`, `submit`, `abort`,
    /// `registerBranch`, `query`, `queryKV` and their gRPC equivalents) need
    /// `Authorization: Bearer <token>` (gRPC: `authorization` metadata). `/api/ping`,
    /// `/api/ready` and `/api/metrics` stay open.
    #[arg(long, env = "DTX_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Secret>,
    /// Largest `retry_limit` a transaction may ask for (above: 400, nothing stored).
    #[arg(long, env = "DTX_MAX_RETRY_LIMIT")]
    pub max_retry_limit: Option<u64>,
    /// Longest `retry_interval` a transaction may ask for.
    #[arg(long, env = "DTX_MAX_RETRY_INTERVAL")]
    pub max_retry_interval: Option<String>,
    /// Longest `request_timeout` a transaction may ask for.
    #[arg(long, env = "DTX_MAX_REQUEST_TIMEOUT")]
    pub max_request_timeout: Option<String>,
    /// Longest `timeout_to_fail` a transaction may ask for.
    #[arg(long, env = "DTX_MAX_TIMEOUT_TO_FAIL")]
    pub max_timeout_to_fail: Option<String>,
    /// Longest msg `delay` (`custom_data`) a transaction may ask for.
    #[arg(long, env = "DTX_MAX_DELAY")]
    pub max_delay: Option<String>,
    /// Participant calls (HTTP and gRPC) in flight at once on this node; more wait for a slot
    /// up to their request timeout.
    #[arg(long, env = "DTX_MAX_OUTBOUND_CALLS")]
    pub max_outbound_calls: Option<usize>,
    /// Participant calls in flight at once to one host:port.
    #[arg(long, env = "DTX_MAX_OUTBOUND_CALLS_PER_HOST")]
    pub max_outbound_calls_per_host: Option<usize>,
    /// gRPC participant channels kept open; beyond it the least recently used is closed.
    #[arg(long, env = "DTX_GRPC_CHANNEL_CACHE")]
    pub grpc_channel_cache: Option<usize>,
    /// HTTP API: time a client has to send a request's headers.
    #[arg(long, env = "DTX_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Option<String>,
    /// HTTP API: time a client has to send the rest of a request's body once it stalled
    /// (counted from the first read that found none of it ready; later progress does not
    /// extend it).
    #[arg(long, env = "DTX_HTTP_BODY_TIMEOUT")]
    pub http_body_timeout: Option<String>,
    /// HTTP API: connections open at once; one more is answered 503 (Retry-After) as soon as
    /// its request head arrived, and closed.
    #[arg(long, env = "DTX_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// PEM certificate chain for TLS on dtx's own HTTP and gRPC listeners (with --tls-key).
    #[arg(long, env = "DTX_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "DTX_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle trusted for https:// and TLS gRPC participants, besides the system roots.
    #[arg(long, env = "DTX_PARTICIPANT_CA_FILE")]
    pub participant_ca_file: Option<PathBuf>,
    /// PEM client certificate dtx presents to TLS participants (mutual TLS; with
    /// --participant-client-key).
    #[arg(long, env = "DTX_PARTICIPANT_CLIENT_CERT")]
    pub participant_client_cert: Option<PathBuf>,
    /// PEM private key of --participant-client-cert.
    #[arg(long, env = "DTX_PARTICIPANT_CLIENT_KEY")]
    pub participant_client_key: Option<PathBuf>,
    /// Call gRPC participants over TLS (their URLs have no scheme, so this is per node).
    #[arg(long, env = "DTX_PARTICIPANT_GRPC_TLS")]
    pub participant_grpc_tls: Option<bool>,
    /// Participants dtx may call: comma-separated hosts (`svc.internal`, `*.example.com`), IP
    /// addresses or CIDR ranges (`10.0.0.0/8`), each optionally with `:port` (`[::1]:8080`).
    /// Empty: any, except link-local / cloud metadata addresses and dtx's own listeners, which
    /// are always refused. Checked at submit (400) and on the address connected to.
    #[arg(long, env = "DTX_PARTICIPANT_ALLOW")]
    pub participant_allow: Option<String>,
}

/// A database URL. It may hold a password: `Debug` and `Display` mask it, so a config printed
/// in a log or an error never shows it; [`DatabaseUrl::expose`] gives the real text to the
/// store that connects with it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL as given, password included: only for opening the store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> DatabaseUrl {
        DatabaseUrl(url)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> DatabaseUrl {
        DatabaseUrl(url.to_owned())
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(url: &str) -> Result<DatabaseUrl, Self::Err> {
        Ok(DatabaseUrl(url.to_owned()))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::app::redacted(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", crate::app::redacted(&self.0))
    }
}

/// A secret setting (the admin token): `Debug` shows `***`, never the value.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value: only for the check that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The store backend, chosen once from the database URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:` (the default): embedded, one node.
    Sqlite,
    /// `postgres:` / `postgresql:`: a server several nodes share.
    Postgres,
    /// `mysql:` (MySQL 8 or MariaDB 10.6+): a server several nodes share.
    MySql,
}

/// The backend `url`'s scheme names, if dtx has it.
pub fn backend_of(url: &str) -> Option<Backend> {
    let scheme = url.split(':').next().unwrap_or_default().to_ascii_lowercase();
    match scheme.as_str() {
        "sqlite" => Some(Backend::Sqlite),
        "postgres" | "postgresql" => Some(Backend::Postgres),
        "mysql" => Some(Backend::MySql),
        _ => None,
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Store URL (its password masked in `Debug`).
    pub database_url: DatabaseUrl,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// OTLP/gRPC collector spans are exported to (`None`: no export).
    pub otlp_endpoint: Option<String>,
    /// Engine settings.
    pub engine: EngineOptions,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// SQLite durability.
    pub sqlite_full_sync: bool,
    /// PostgreSQL connection pool size.
    pub postgres_pool_size: u32,
    /// MySQL connection pool size.
    pub mysql_pool_size: u32,
    /// Retention of finished transactions (`keep` zero: never deleted).
    pub retention: dtx_engine::RetentionOptions,
    /// Deadline of one store operation.
    pub store_timeout: Duration,
    /// Most outstanding store writes (saves excepted).
    pub max_queued_writes: usize,
    /// The admin token (`None`: admin calls are open, as in DTM).
    pub admin_token: Option<Secret>,
    /// The API token (`None`: SDK calls are open, as in DTM).
    pub api_token: Option<Secret>,
    /// Time a client has to send a request's headers.
    pub http_header_timeout: Duration,
    /// Time a client has to send the rest of a request's body once it stalled.
    pub http_body_timeout: Duration,
    /// HTTP connections open at once (more are refused with 503).
    pub max_connections: usize,
    /// TLS on dtx's own listeners: certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Server defaults that are not engine settings (those come from [`EngineOptions::default`]).
const DEFAULT_DATABASE_URL: &str = "sqlite://dtx.db";
const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:36789";
const DEFAULT_GRPC_LISTEN: &str = "0.0.0.0:36790";
const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
const DEFAULT_POSTGRES_POOL_SIZE: u32 = 10;
const DEFAULT_MYSQL_POOL_SIZE: u32 = 10;
const DEFAULT_RETENTION: &str = "7d";
const DEFAULT_HTTP_HEADER_TIMEOUT: &str = "10s";
const DEFAULT_HTTP_BODY_TIMEOUT: &str = "30s";
/// The kernel's usual accept-queue limit (`net.core.somaxconn`): as many connections open as
/// can wait to be accepted.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_QUEUED_WRITES: usize = 256;

/// The defaults as a TOML document (`dtx print-default-config`), made from
/// [`Settings::defaults`], so the printed file and the running defaults cannot drift apart.
pub fn default_toml() -> String {
    let body = toml::to_string(&Settings::defaults()).unwrap_or_default();
    format!("# dtx configuration. Every key is optional; flags and DTX_* variables override it.\n{body}")
}

/// Checks an OTLP/gRPC collector address: `http://host:port` (TLS to the collector is not built
/// in: a collector or sidecar on the node's network takes it from there).
fn otlp_endpoint(e: &str) -> Result<String, Error> {
    let invalid = |message: String| Error::Invalid { setting: "--otlp-endpoint", message };
    let url = url::Url::parse(e).map_err(|err| invalid(format!("not a URL ({err}): {e}")))?;
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err(invalid(format!(
            "must be http://host:port (OTLP over gRPC without TLS; put a local collector in front of a TLS one): {e}"
        )));
    }
    Ok(e.to_owned())
}

/// A duration as the settings write it (`10s`, `1h`, `500ms`).
fn duration_text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Settings {
    /// Every setting at its default: the one source of defaults. Engine settings are
    /// [`EngineOptions::default`]'s.
    pub fn defaults() -> Settings {
        let e = EngineOptions::default();
        let h = e.health.unwrap_or_default();
        Settings {
            config: None,
            database_url: Some(DEFAULT_DATABASE_URL.into()),
            http_listen: Some(DEFAULT_HTTP_LISTEN.into()),
            grpc_listen: Some(DEFAULT_GRPC_LISTEN.into()),
            log_format: Some("pretty".into()),
            otlp_endpoint: None,
            retry_interval: Some(duration_text(e.retry.retry_interval)),
            backoff_cap: Some(duration_text(e.retry.max_interval)),
            request_timeout: Some(duration_text(e.request_timeout)),
            timeout_to_fail: Some(duration_text(e.timeout_to_fail)),
            lease: Some(duration_text(e.lease)),
            poll_interval: Some(duration_text(e.poll_interval)),
            claim_batch: Some(e.claim_batch),
            max_concurrent_rounds: Some(e.max_concurrent_rounds),
            shed_after: Some(duration_text(e.shed_after)),
            max_queued_writes: Some(DEFAULT_MAX_QUEUED_WRITES),
            store_timeout: Some(duration_text(DEFAULT_STORE_TIMEOUT)),
            shutdown_grace: Some(duration_text(e.shutdown_grace)),
            max_body_bytes: Some(DEFAULT_MAX_BODY_BYTES),
            max_steps: Some(e.max_steps),
            sqlite_synchronous: Some("full".into()),
            postgres_pool_size: Some(DEFAULT_POSTGRES_POOL_SIZE),
            mysql_pool_size: Some(DEFAULT_MYSQL_POOL_SIZE),
            retention: Some(DEFAULT_RETENTION.into()),
            admin_token: None,
            host_health: Some(e.health.is_some()),
            write_each_branch: Some(!e.record_calls_ahead),
            host_failure_threshold: Some(h.failure_threshold),
            host_probe_interval: Some(duration_text(h.probe_interval)),
            host_probe_cap: Some(duration_text(h.probe_cap)),
            host_resume_burst: Some(h.resume_burst),
            host_resume_rate: Some(h.resume_rate),
            api_token: None,
            max_retry_limit: Some(e.limits.retry_limit),
            max_retry_interval: Some(duration_text(e.limits.retry_interval)),
            max_request_timeout: Some(duration_text(e.limits.request_timeout)),
            max_timeout_to_fail: Some(duration_text(e.limits.timeout_to_fail)),
            max_delay: Some(duration_text(e.limits.delay)),
            max_outbound_calls: Some(e.max_outbound_calls),
            max_outbound_calls_per_host: Some(e.max_outbound_calls_per_host),
            grpc_channel_cache: Some(e.grpc_channel_cache),
            http_header_timeout: Some(DEFAULT_HTTP_HEADER_TIMEOUT.into()),
            http_body_timeout: Some(DEFAULT_HTTP_BODY_TIMEOUT.into()),
            max_connections: Some(DEFAULT_MAX_CONNECTIONS),
            tls_cert: None,
            tls_key: None,
            participant_ca_file: None,
            participant_client_cert: None,
            participant_client_key: None,
            participant_grpc_tls: Some(false),
            participant_allow: Some(String::new()),
        }
    }

    /// Fills every unset value from `lower`.
    fn or(self, lower: Settings) -> Settings {
        Settings {
            config: self.config.or(lower.config),
            database_url: self.database_url.or(lower.database_url),
            http_listen: self.http_listen.or(lower.http_listen),
            grpc_listen: self.grpc_listen.or(lower.grpc_listen),
            log_format: self.log_format.or(lower.log_format),
            otlp_endpoint: self.otlp_endpoint.or(lower.otlp_endpoint),
            retry_interval: self.retry_interval.or(lower.retry_interval),
            backoff_cap: self.backoff_cap.or(lower.backoff_cap),
            request_timeout: self.request_timeout.or(lower.request_timeout),
            timeout_to_fail: self.timeout_to_fail.or(lower.timeout_to_fail),
            lease: self.lease.or(lower.lease),
            poll_interval: self.poll_interval.or(lower.poll_interval),
            claim_batch: self.claim_batch.or(lower.claim_batch),
            max_concurrent_rounds: self.max_concurrent_rounds.or(lower.max_concurrent_rounds),
            shed_after: self.shed_after.or(lower.shed_after),
            max_queued_writes: self.max_queued_writes.or(lower.max_queued_writes),
            store_timeout: self.store_timeout.or(lower.store_timeout),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            max_steps: self.max_steps.or(lower.max_steps),
            sqlite_synchronous: self.sqlite_synchronous.or(lower.sqlite_synchronous),
            postgres_pool_size: self.postgres_pool_size.or(lower.postgres_pool_size),
            mysql_pool_size: self.mysql_pool_size.or(lower.mysql_pool_size),
            retention: self.retention.or(lower.retention),
            admin_token: self.admin_token.or(lower.admin_token),
            host_health: self.host_health.or(lower.host_health),
            write_each_branch: self.write_each_branch.or(lower.write_each_branch),
            host_failure_threshold: self.host_failure_threshold.or(lower.host_failure_threshold),
            host_probe_interval: self.host_probe_interval.or(lower.host_probe_interval),
            host_probe_cap: self.host_probe_cap.or(lower.host_probe_cap),
            host_resume_burst: self.host_resume_burst.or(lower.host_resume_burst),
            host_resume_rate: self.host_resume_rate.or(lower.host_resume_rate),
            api_token: self.api_token.or(lower.api_token),
            max_retry_limit: self.max_retry_limit.or(lower.max_retry_limit),
            max_retry_interval: self.max_retry_interval.or(lower.max_retry_interval),
            max_request_timeout: self.max_request_timeout.or(lower.max_request_timeout),
            max_timeout_to_fail: self.max_timeout_to_fail.or(lower.max_timeout_to_fail),
            max_delay: self.max_delay.or(lower.max_delay),
            max_outbound_calls: self.max_outbound_calls.or(lower.max_outbound_calls),
            max_outbound_calls_per_host: self
                .max_outbound_calls_per_host
                .or(lower.max_outbound_calls_per_host),
            grpc_channel_cache: self.grpc_channel_cache.or(lower.grpc_channel_cache),
            http_header_timeout: self.http_header_timeout.or(lower.http_header_timeout),
            http_body_timeout: self.http_body_timeout.or(lower.http_body_timeout),
            max_connections: self.max_connections.or(lower.max_connections),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            participant_ca_file: self.participant_ca_file.or(lower.participant_ca_file),
            participant_client_cert: self.participant_client_cert.or(lower.participant_client_cert),
            participant_client_key: self.participant_client_key.or(lower.participant_client_key),
            participant_grpc_tls: self.participant_grpc_tls.or(lower.participant_grpc_tls),
            participant_allow: self.participant_allow.or(lower.participant_allow),
        }
    }

    /// Layers these (flag / env) settings over the config file and the defaults, and validates.
    pub fn resolve(self) -> Result<Config, Error> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::File { path: path.clone(), message: e.to_string() })?;
                toml::from_str::<Settings>(&text)
                    .map_err(|e| Error::File { path: path.clone(), message: e.to_string() })?
            }
            None => Settings::default(),
        };
        let s = self.or(file).or(Settings::defaults());
        fn req<T>(v: Option<T>, setting: &'static str) -> Result<T, Error> {
            v.ok_or(Error::Invalid { setting, message: "missing".into() })
        }

        let database_url = req(s.database_url, "--database-url")?;
        if backend_of(database_url.expose()).is_none() {
            let scheme = database_url.expose().split(':').next().unwrap_or_default();
            return Err(Error::Invalid {
                setting: "--database-url",
                message: format!(
                    "unsupported scheme '{scheme}' in '{}' (expected sqlite://path, \
                     postgres://user:password@host:port/database or \
                     mysql://user:password@host:port/database)",
                    database_url
                ),
            });
        }
        let http_listen = addr(&req(s.http_listen, "--http-listen")?, "--http-listen")?;
        let grpc_listen = addr(&req(s.grpc_listen, "--grpc-listen")?, "--grpc-listen")?;
        let log_format = match req(s.log_format, "--log-format")?.as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                return Err(Error::Invalid {
                    setting: "--log-format",
                    message: format!("'{other}' (expected pretty or json)"),
                });
            }
        };
        let retry_interval = positive(&req(s.retry_interval, "--retry-interval")?, "--retry-interval")?;
        let backoff_cap = positive(&req(s.backoff_cap, "--backoff-cap")?, "--backoff-cap")?;
        let request_timeout = positive(&req(s.request_timeout, "--request-timeout")?, "--request-timeout")?;
        let timeout_to_fail = positive(&req(s.timeout_to_fail, "--timeout-to-fail")?, "--timeout-to-fail")?;
        let lease = positive(&req(s.lease, "--lease")?, "--lease")?;
        let poll_interval = positive(&req(s.poll_interval, "--poll-interval")?, "--poll-interval")?;
        let claim_batch = at_least(req(s.claim_batch, "--claim-batch")? as usize, 1, "--claim-batch")? as u32;
        let max_concurrent_rounds =
            at_least(req(s.max_concurrent_rounds, "--max-concurrent-rounds")?, 1, "--max-concurrent-rounds")?;
        let shed_after = positive(&req(s.shed_after, "--shed-after")?, "--shed-after")?;
        let max_queued_writes =
            at_least(req(s.max_queued_writes, "--max-queued-writes")?, 1, "--max-queued-writes")?;
        let store_timeout = positive(&req(s.store_timeout, "--store-timeout")?, "--store-timeout")?;
        let shutdown_grace = positive(&req(s.shutdown_grace, "--shutdown-grace")?, "--shutdown-grace")?;
        let max_body_bytes = at_least(req(s.max_body_bytes, "--max-body-bytes")?, 1024, "--max-body-bytes")?;
        let max_steps = at_least(req(s.max_steps, "--max-steps")?, 1, "--max-steps")?;
        let sqlite_full_sync = match req(s.sqlite_synchronous, "--sqlite-synchronous")?.as_str() {
            "full" => true,
            "normal" => false,
            other => {
                return Err(Error::Invalid {
                    setting: "--sqlite-synchronous",
                    message: format!("'{other}' (expected full or normal)"),
                });
            }
        };
        let postgres_pool_size =
            at_least(req(s.postgres_pool_size, "--postgres-pool-size")? as usize, 1, "--postgres-pool-size")?
                as u32;
        let mysql_pool_size =
            at_least(req(s.mysql_pool_size, "--mysql-pool-size")? as usize, 1, "--mysql-pool-size")? as u32;
        let otlp_endpoint = match s.otlp_endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => Some(otlp_endpoint(e)?),
        };
        let keep = parse_duration(&req(s.retention, "--retention")?)
            .map_err(|message| Error::Invalid { setting: "--retention", message })?;
        let admin_token = token(s.admin_token, "--admin-token")?;
        let api_token = token(s.api_token, "--api-token")?;
        let limits = dtx_core::options::OptionLimits {
            retry_limit: req(s.max_retry_limit, "--max-retry-limit")?,
            retry_interval: positive(
                &req(s.max_retry_interval, "--max-retry-interval")?,
                "--max-retry-interval",
            )?,
            request_timeout: positive(
                &req(s.max_request_timeout, "--max-request-timeout")?,
                "--max-request-timeout",
            )?,
            timeout_to_fail: positive(
                &req(s.max_timeout_to_fail, "--max-timeout-to-fail")?,
                "--max-timeout-to-fail",
            )?,
            delay: positive(&req(s.max_delay, "--max-delay")?, "--max-delay")?,
        };
        let health = health_policy(
            HostHealth {
                on: s.host_health,
                threshold: s.host_failure_threshold,
                probe_interval: s.host_probe_interval,
                probe_cap: s.host_probe_cap,
                burst: s.host_resume_burst,
                rate: s.host_resume_rate,
            },
            backoff_cap,
        )?;
        let max_outbound_calls =
            at_least(req(s.max_outbound_calls, "--max-outbound-calls")?, 1, "--max-outbound-calls")?;
        let max_outbound_calls_per_host = at_least(
            req(s.max_outbound_calls_per_host, "--max-outbound-calls-per-host")?,
            1,
            "--max-outbound-calls-per-host",
        )?;
        let grpc_channel_cache =
            at_least(req(s.grpc_channel_cache, "--grpc-channel-cache")?, 1, "--grpc-channel-cache")?;
        let http_header_timeout =
            positive(&req(s.http_header_timeout, "--http-header-timeout")?, "--http-header-timeout")?;
        let http_body_timeout =
            positive(&req(s.http_body_timeout, "--http-body-timeout")?, "--http-body-timeout")?;
        let max_connections = at_least(req(s.max_connections, "--max-connections")?, 1, "--max-connections")?;
        let tls = pair(s.tls_cert, s.tls_key, "--tls-cert", "--tls-key")?;
        let client_identity = pair(
            s.participant_client_cert,
            s.participant_client_key,
            "--participant-client-cert",
            "--participant-client-key",
        )?;
        let participant_tls = dtx_engine::ParticipantTls {
            ca_pem: s.participant_ca_file.map(|p| read_pem(&p, "--participant-ca-file")).transpose()?,
            identity_pem: client_identity
                .map(|(c, k)| {
                    Ok::<_, Error>((
                        read_pem(&c, "--participant-client-cert")?,
                        read_pem(&k, "--participant-client-key")?,
                    ))
                })
                .transpose()?,
            grpc_tls: req(s.participant_grpc_tls, "--participant-grpc-tls")?,
        };
        let participant_allow =
            dtx_core::allow::AllowList::parse(&req(s.participant_allow, "--participant-allow")?)
                .map_err(|message| Error::Invalid { setting: "--participant-allow", message })?;
        // A pass a minute; more often only when the retention itself is that short (tests).
        let every = keep.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let retention = dtx_engine::RetentionOptions { keep, every, ..Default::default() };
        let engine = EngineOptions {
            retry: RetryPolicy {
                retry_interval,
                max_interval: backoff_cap,
                ..EngineOptions::default().retry
            },
            request_timeout,
            timeout_to_fail,
            lease,
            claim_batch,
            max_concurrent_rounds,
            shed_after,
            shutdown_grace,
            poll_interval,
            max_steps,
            health,
            limits,
            max_outbound_calls,
            max_outbound_calls_per_host,
            grpc_channel_cache,
            participant_tls,
            participant_allow,
            record_calls_ahead: !req(s.write_each_branch, "--write-each-branch")?,
            ..EngineOptions::default()
        };
        Ok(Config {
            database_url,
            http_listen,
            grpc_listen,
            log_format,
            otlp_endpoint,
            engine,
            max_body_bytes,
            sqlite_full_sync,
            postgres_pool_size,
            mysql_pool_size,
            retention,
            store_timeout,
            max_queued_writes,
            admin_token,
            api_token,
            http_header_timeout,
            http_body_timeout,
            max_connections,
            tls,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        // The defaults are a constant document; resolving them cannot fail.
        #[allow(clippy::expect_used)]
        Settings::default().resolve().expect("invariant: the default configuration is valid")
    }
}

#[cfg(test)]
mod tests;
