//! The real `dtx` binary as a child process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `dtx` binary next to this test binary: `target/<profile>/deps/<test>-<hash>` →
/// `target/<profile>/dtx`. Cargo builds it for `cargo test` of the workspace (the
/// `dtx-server` package has integration tests); tests never run cargo themselves.
pub fn dtx_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable location {}", exe.display()));
    let bin = profile_dir.join(format!("dtx{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the dtx binary is missing at {}: run `cargo build -p dtx-server` (or `cargo test --workspace`) first",
        bin.display()
    );
    // Shown only if the test fails (libtest captures it): a stale binary is a likely cause.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(t)) = (modified(&bin), modified(&exe))
        && b < t
    {
        eprintln!(
            "note: {} is older than this test binary; if dtx-server, dtx-engine or a store changed, \
             rebuild it with `cargo build -p dtx-server`",
            bin.display()
        );
    }
    bin
}

/// The URL of a SQLite database `dtx.db` in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("dtx.db").display())
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A running `dtx` child. Killed (SIGKILL) and reaped on drop, so a failing test leaks nothing;
/// when the test is failing, its log is printed.
pub struct DtxProcess {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl DtxProcess {
    /// Starts `dtx --database-url <db_url> --http-listen 127.0.0.1:<port> <extra...>` (plus
    /// `--grpc-listen 127.0.0.1:0` unless `extra` has a `--grpc-listen`), logging to `log`, and
    /// waits until `/api/ping` answers.
    pub async fn start(db_url: &str, port: u16, extra: &[&str], log: &Path) -> DtxProcess {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the dtx log");
        let err = out.try_clone().expect("clone the log handle");
        let mut cmd = Command::new(dtx_binary());
        cmd.arg("--database-url")
            .arg(db_url)
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // gRPC on a free port unless the test chose one.
        if !extra.iter().any(|a| a.starts_with("--grpc-listen")) {
            cmd.arg("--grpc-listen").arg("127.0.0.1:0");
        }
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy().to_ascii_lowercase();
            // No inherited settings, and no proxy: participants are on loopback (dtx's HTTP
            // client honours HTTP_PROXY even for 127.0.0.1).
            if name.starts_with("dtx_") || name.ends_with("_proxy") {
                cmd.env_remove(k);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn().expect("spawn dtx");
        let mut p = DtxProcess { child: Some(child), port, log: log.to_owned() };
        p.wait_ready().await;
        p
    }

    /// `http://127.0.0.1:PORT/api/dtmsvr`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/dtmsvr", self.port)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `query` (up to 15 s) until the transaction has `status`; returns the query. On
    /// timeout, panics with the last answer and this process's log.
    pub async fn wait_status(&self, gid: &str, status: &str) -> serde_json::Value {
        let http = reqwest::Client::builder().no_proxy().build().expect("http client");
        let url = format!("{}/query?gid={gid}", self.base_url());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let mut last = serde_json::Value::Null;
            if let Ok(resp) = http.get(&url).send().await {
                let (code, q) = crate::server::read(resp).await;
                if code == 200 && q["transaction"]["status"] == status {
                    return q;
                }
                last = q;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{gid} did not reach {status} within 15 s; last: {last}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::builder().no_proxy().build().expect("http client");
        let url = format!("http://127.0.0.1:{}/api/ping", self.port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("dtx exited early ({status}); log:\n{}", self.log());
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("dtx did not answer /api/ping within 10 s; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (graceful shutdown), then waits up to `within` for the exit; returns the status.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("dtx is running");
        let sent =
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dtx did not stop within {within:?} of SIGTERM; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM without waiting (the drain is then observable from outside).
    pub fn signal_term(&self) {
        let pid = self.pid().expect("dtx is running");
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the process to exit (after [`DtxProcess::signal_term`]).
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("dtx is running");
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dtx did not exit within {within:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The child's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited (it was never killed, nor crashed).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL dtx");
            let status = child.wait().expect("reap dtx");
            assert!(!status.success(), "dtx was killed, it did not exit cleanly: {status}");
        }
    }
}

impl Drop for DtxProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- dtx log ({}) ----\n{}", self.log.display(), self.log());
        }
    }
}
