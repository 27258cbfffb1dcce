//! Helpers for tests that need MySQL or MariaDB (feature `testing`).
//!
//! - [`fresh_database`]: a new, uniquely named database on the server named by
//!   `DTX_TEST_MYSQL_URL` (so tests run in parallel without seeing each other's rows), or
//!   `None`, after printing a notice, when that variable is unset: the MySQL suites then skip,
//!   except under `CI=true`, where they fail ([`dtx_store::testenv::skip`]). `.ci/run` always
//!   sets it (see `.ci/mariadb.sh`).
//! - [`Server`]: a throwaway MariaDB server of the test's own, which it may stop and start
//!   (outage tests must never stop the shared server).
//!
//! Databases are named `dtx_t_<pid>_<n>_<time>`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, MySqlConnection};

/// The variable naming the MySQL / MariaDB server the suites use (a user allowed to create
/// databases): `mysql://user:password@127.0.0.1:3306/db`.
pub const URL_VAR: &str = "DTX_TEST_MYSQL_URL";

/// The variable naming the server program for [`Server`] (default: `mariadbd`, else `mysqld`,
/// on the `PATH` or in `/usr/sbin`).
pub const SERVER_VAR: &str = "DTX_TEST_MYSQL_SERVER";

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
    #[error("bad MySQL URL {url}: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: url::ParseError,
    },
    /// A server program failed or could not be run.
    #[error("{0}")]
    Program(String),
}

/// The server of `DTX_TEST_MYSQL_URL`, or `None` after printing that `test` is skipped.
///
/// # Panics
/// When the variable is unset under `CI=true`: CI must not lose the MySQL suites.
pub fn admin_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            dtx_store::testenv::skip(test, &format!("{URL_VAR} is not set"));
            None
        }
    }
}

/// A fresh database on the server of `DTX_TEST_MYSQL_URL` (its URL), or `None` (printed) when
/// the variable is unset. Panics if the server refuses.
pub async fn fresh_database(test: &str) -> Option<String> {
    let admin = admin_url(test)?;
    match create_database(&admin).await {
        Ok(url) => Some(url),
        Err(e) => panic!("{test}: cannot create a test database on {URL_VAR}: {e}"),
    }
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
    let mut conn = MySqlConnection::connect(admin_url)
        .await
        .map_err(|source| TestingError::Sql { what: "connect to the admin URL".into(), source })?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&mut conn)
        .await
        .map_err(|source| TestingError::Sql { what: format!("CREATE DATABASE {name}"), source })?;
    let _ = conn.close().await;
    let mut url = url::Url::parse(admin_url)
        .map_err(|source| TestingError::Url { url: admin_url.to_owned(), source })?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// A throwaway MariaDB server on a loopback port, in a temp dir, owned by this test: it can be
/// stopped and started again. Killed and removed on drop.
#[derive(Debug)]
pub struct Server {
    program: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// Run the server as `mysql` (we are root; mariadbd refuses root).
    as_mysql: bool,
    child: Option<tokio::process::Child>,
}

impl Server {
    /// Creates and starts a server, or `None` (printed) when `test` must skip: no
    /// `DTX_TEST_MYSQL_URL` (the MySQL suites are off) or no server program.
    pub async fn start(test: &str) -> Option<Server> {
        admin_url(test)?;
        let Some(program) = server_program() else {
            dtx_store::testenv::skip(test, &format!("no MariaDB server program (set {SERVER_VAR})"));
            return None;
        };
        match Server::create(program).await {
            Ok(server) => Some(server),
            Err(e) => panic!("{test}: cannot start a throwaway MariaDB server: {e}"),
        }
    }

    async fn create(program: PathBuf) -> Result<Server, TestingError> {
        let as_mysql = is_root().await;
        let dir = tempfile::Builder::new()
            .prefix("dtx-mariadb-")
            .tempdir()
            .map_err(|e| TestingError::Program(format!("temp dir: {e}")))?;
        let path = dir.path().to_string_lossy().into_owned();
        if as_mysql {
            run("chown", &["mysql:", &path]).await?;
        }
        let port = free_port()?;
        let mut server = Server { program, dir, port, as_mysql, child: None };
        let mut args = vec!["--no-defaults".to_owned(), format!("--datadir={path}/data")];
        args.extend(server.user_arg());
        args.extend(["--auth-root-authentication-method=socket".to_owned(), "--skip-test-db".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("mariadb-install-db", &args).await?;
        server.start_again().await?;
        let root = format!("--socket={}", server.socket());
        run(
            "mariadb",
            &[
                "--no-defaults",
                &root,
                "-uroot",
                "-e",
                "CREATE USER 'dtx'@'%' IDENTIFIED BY 'dtx'; GRANT ALL ON *.* TO 'dtx'@'%'; CREATE DATABASE dtx;",
            ],
        )
        .await?;
        Ok(server)
    }

    fn user_arg(&self) -> Option<String> {
        self.as_mysql.then(|| "--user=mysql".to_owned())
    }

    fn socket(&self) -> String {
        self.dir.path().join("mariadbd.sock").to_string_lossy().into_owned()
    }

    /// `mysql://dtx:dtx@127.0.0.1:PORT/dtx`.
    pub fn url(&self) -> String {
        format!("mysql://dtx:dtx@127.0.0.1:{}/dtx", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server (SIGKILL: clients see their connections drop, as in a crash) and waits
    /// for it to be gone.
    pub async fn stop(&mut self) -> Result<(), TestingError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.map_err(|e| TestingError::Program(format!("kill mariadbd: {e}")))?;
        }
        Ok(())
    }

    /// Starts the (stopped) server again on the same port and waits until it answers.
    pub async fn start_again(&mut self) -> Result<(), TestingError> {
        let path = self.dir.path().to_string_lossy().into_owned();
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("--no-defaults")
            .args(self.user_arg())
            .arg(format!("--datadir={path}/data"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.socket()))
            .arg(format!("--pid-file={path}/mariadbd.pid"))
            .arg(format!("--log-error={path}/server.log"))
            .args(["--skip-name-resolve", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().map_err(|e| TestingError::Program(format!("start mariadbd: {e}")))?);
        let ping = format!("--socket={}", self.socket());
        for _ in 0..150 {
            if run("mariadb-admin", &["--no-defaults", &ping, "-uroot", "ping"]).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(TestingError::Program(format!("mariadbd did not start: {}", self.log())))
    }
}

/// The server program: `DTX_TEST_MYSQL_SERVER`, else `mariadbd` or `mysqld` in `/usr/sbin`.
pub fn server_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(SERVER_VAR) {
        return Some(PathBuf::from(p));
    }
    ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"].into_iter().map(PathBuf::from).find(|p| p.is_file())
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

/// Runs a program and fails with its output.
async fn run(program: &str, args: &[&str]) -> Result<(), TestingError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
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
