//! Helpers for tests that need PostgreSQL (feature `testing`).
//!
//! - [`fresh_database`]: a new, uniquely named database on the server named by
//!   `DTX_TEST_POSTGRES_URL` (so tests run in parallel without seeing each other's rows), or
//!   `None`, after printing a notice, when that variable is unset: the PostgreSQL suites then
//!   skip, except under `CI=true`, where they fail ([`dtx_store::testenv::skip`]). `.ci/run`
//!   always sets it (see `.ci/postgres.sh`).
//! - [`Cluster`]: a throwaway PostgreSQL cluster of the test's own, which it may stop and start
//!   (outage tests must never stop the shared server).
//!
//! Databases are named `dtx_t_<pid>_<n>_<time>`; against a long-lived server, drop them with
//! `SELECT 'DROP DATABASE ' || datname || ';' FROM pg_database WHERE datname LIKE 'dtx_t_%'`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

/// The variable naming the PostgreSQL server the suites use (a user allowed to create
/// databases): `postgres://user:password@127.0.0.1:5432/postgres`.
pub const URL_VAR: &str = "DTX_TEST_POSTGRES_URL";

/// The variable naming the folder of the PostgreSQL server binaries (`initdb`, `pg_ctl`) for
/// [`Cluster`]; default: the newest `/usr/lib/postgresql/*/bin`.
pub const BIN_VAR: &str = "DTX_TEST_POSTGRES_BIN";

/// Something a test helper could not do; tests turn it into a panic.
#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    /// A database operation failed.
    #[error("{what}: {source}")]
    Sql {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: sqlx::Error,
    },
    /// A URL could not be parsed.
    #[error("bad PostgreSQL URL {url}: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: url::ParseError,
    },
    /// A PostgreSQL program failed or could not be run.
    #[error("{0}")]
    Program(String),
}

/// The server of `DTX_TEST_POSTGRES_URL`, or `None` after printing that `test` is skipped.
///
/// # Panics
/// When the variable is unset under `CI=true`: CI must not lose the PostgreSQL suites.
pub fn admin_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            dtx_store::testenv::skip(test, &format!("{URL_VAR} is not set"));
            None
        }
    }
}

/// A fresh database on the server of `DTX_TEST_POSTGRES_URL` (its URL), or `None` (printed)
/// when the variable is unset. Panics if the server refuses.
pub async fn fresh_database(test: &str) -> Option<String> {
    let admin = admin_url(test)?;
    match create_database(&admin).await {
        Ok(url) => Some(url),
        Err(e) => panic!("{test}: cannot create a test database on {URL_VAR}: {e}"),
    }
}

/// The schema holding a [`FakeClock`]'s functions.
const FAKE_CLOCK: &str = "dtx_fake_clock";

/// A database clock the test sets: in a database prepared by [`fake_database_clock`], the
/// clock functions the store's SQL reads (`statement_timestamp()`, `clock_timestamp()`) return
/// the time last [`set`](FakeClock::set). The store runs its production database-clock SQL
/// unchanged ([`crate::ClockSource::Database`]); only the clock it reads is the test's.
#[derive(Debug, Clone)]
pub struct FakeClock {
    pool: sqlx::PgPool,
}

impl FakeClock {
    /// Sets the database's clock to `now` (committed before this returns).
    pub async fn set(&self, now: dtx_core::Timestamp) -> Result<(), TestingError> {
        sqlx::query("UPDATE dtx_fake_clock.now SET ms = $1")
            .bind(now.as_millis())
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|source| TestingError::Sql { what: "set the fake clock".into(), source })
    }
}

/// Gives the database at `url` (fresh, no session open on it yet) a clock the test sets: a
/// schema with `statement_timestamp()` and `clock_timestamp()` reading one row, placed before
/// `pg_catalog` in the database's `search_path`, so that sessions opened afterwards resolve the
/// unqualified names to them.
pub async fn fake_database_clock(url: &str) -> Result<FakeClock, TestingError> {
    let sql = |what: &str| {
        let what = what.to_owned();
        move |source| TestingError::Sql { what, source }
    };
    let mut conn = PgConnection::connect(url).await.map_err(sql("connect"))?;
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .map_err(sql("database"))?;
    let setup = format!(
        "CREATE SCHEMA {FAKE_CLOCK}; \
         CREATE TABLE {FAKE_CLOCK}.now (ms bigint NOT NULL); \
         INSERT INTO {FAKE_CLOCK}.now VALUES (0); \
         CREATE FUNCTION {FAKE_CLOCK}.statement_timestamp() RETURNS timestamptz LANGUAGE sql STABLE \
         AS 'SELECT to_timestamp(ms / 1000.0) FROM {FAKE_CLOCK}.now'; \
         CREATE FUNCTION {FAKE_CLOCK}.clock_timestamp() RETURNS timestamptz LANGUAGE sql STABLE \
         AS 'SELECT to_timestamp(ms / 1000.0) FROM {FAKE_CLOCK}.now'; \
         ALTER DATABASE \"{name}\" SET search_path = public, {FAKE_CLOCK}, pg_catalog;"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&mut conn)
        .await
        .map_err(sql("create the fake clock"))?;
    let _ = conn.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .map_err(sql("connect the fake clock"))?;
    Ok(FakeClock { pool })
}

/// Creates a uniquely named database on the server of `admin_url`; returns its URL (the admin
/// URL with the database replaced).
pub async fn create_database(admin_url: &str) -> Result<String, TestingError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    let name = format!(
        "dtx_t_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        millis % 1_000_000_000
    );
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(|source| TestingError::Sql { what: "connect to the admin URL".into(), source })?;
    // CREATE DATABASE copies template1 and refuses while another session uses it; parallel
    // tests creating databases at the same moment can hit that, so try a few times.
    let mut attempt = 0;
    loop {
        let sql = format!("CREATE DATABASE \"{name}\"");
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
            Ok(_) => break,
            Err(e) if attempt < 20 && e.to_string().contains("being accessed by other users") => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(source) => return Err(TestingError::Sql { what: format!("CREATE DATABASE {name}"), source }),
        }
    }
    let _ = conn.close().await;
    let mut url = url::Url::parse(admin_url)
        .map_err(|source| TestingError::Url { url: admin_url.to_owned(), source })?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// A throwaway PostgreSQL cluster on a loopback port, in a temp dir, owned by this test: it can
/// be stopped and started again. Stopped (immediately) and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// Run the server programs as `postgres` (we are root; initdb refuses root).
    as_postgres: bool,
}

impl Cluster {
    /// Creates and starts a cluster, or `None` (printed) when `test` must skip: no
    /// `DTX_TEST_POSTGRES_URL` (the PostgreSQL suites are off) or no server binaries.
    pub async fn start(test: &str) -> Option<Cluster> {
        admin_url(test)?;
        let Some(bin) = bin_dir() else {
            dtx_store::testenv::skip(test, &format!("no PostgreSQL server binaries (set {BIN_VAR})"));
            return None;
        };
        match Cluster::create(bin).await {
            Ok(cluster) => Some(cluster),
            Err(e) => panic!("{test}: cannot start a throwaway PostgreSQL cluster: {e}"),
        }
    }

    async fn create(bin: PathBuf) -> Result<Cluster, TestingError> {
        let as_postgres = is_root().await;
        let dir = tempfile::Builder::new()
            .prefix("dtx-pg-")
            .tempdir()
            .map_err(|e| TestingError::Program(format!("temp dir: {e}")))?;
        if as_postgres {
            run("chown", &["-R", "postgres:", &dir.path().to_string_lossy()], false).await?;
        }
        let port = free_port()?;
        let cluster = Cluster { bin, dir, port, as_postgres };
        let data = cluster.data();
        cluster
            .pg("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8", "-N"])
            .await?;
        cluster.start_again().await?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication on loopback).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `pg_ctl stop -m fast`: clients are disconnected, the server shuts down cleanly.
    pub async fn stop(&self) -> Result<(), TestingError> {
        self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]).await
    }

    /// Starts the (stopped) server again on the same port.
    pub async fn start_again(&self) -> Result<(), TestingError> {
        let opts = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg("pg_ctl", &["-D", &self.data(), "-l", &log.to_string_lossy(), "-w", "-o", &opts, "start"])
            .await
    }

    /// The server's processes: the postmaster (first line of `postmaster.pid`) and its
    /// children (backends, checkpointer, ...), from /proc. A test stops them all to make the
    /// database hang (SIGSTOP) rather than go away.
    pub fn pids(&self) -> Vec<u32> {
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        let Some(main) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return Vec::new();
        };
        let mut pids = vec![main];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            // /proc/PID/stat: "pid (comm) state ppid ...": the comm may hold spaces, so split after ')'.
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid == Some(main) {
                pids.push(pid);
            }
        }
        pids
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    async fn pg(&self, program: &str, args: &[&str]) -> Result<(), TestingError> {
        let path = self.bin.join(program);
        run(&path.to_string_lossy(), args, self.as_postgres).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ =
            cmd.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
    }
}

/// The PostgreSQL server binaries: `DTX_TEST_POSTGRES_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` with `initdb` in it.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_VAR) {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            Path::new(&bin.join("initdb")).is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

async fn is_root() -> bool {
    match tokio::process::Command::new("id").arg("-u").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim() == "0",
        Err(_) => false,
    }
}

fn free_port() -> Result<u16, TestingError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| TestingError::Program(format!("no free port: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| TestingError::Program(format!("no free port: {e}")))
}

/// Runs a program (as `postgres` via runuser when asked) and fails with its output.
async fn run(program: &str, args: &[&str], as_postgres: bool) -> Result<(), TestingError> {
    let mut cmd = if as_postgres {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        tokio::process::Command::new(program)
    };
    let out = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| TestingError::Program(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(TestingError::Program(format!(
        "{program} {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}
