//! The `dtx` binary's command line: help, bad settings named at start, the default config,
//! serving and graceful shutdown. (This file also makes cargo build the binary for the
//! end-to-end crash tests in `tests/`.)

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DTX: &str = env!("CARGO_BIN_EXE_dtx");

/// Kills the child on drop, so a failing test leaks no process.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `dtx` command with no `DTX_*` settings inherited, and a scratch database.
fn dtx(dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(DTX);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DTX_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("DTX_DATABASE_URL", format!("sqlite://{}", dir.path().join("dtx.db").display()))
        .env("DTX_HTTP_LISTEN", "127.0.0.1:0")
        .env("DTX_GRPC_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs to completion, or kills it after 10 s (a command that should fail must not serve).
fn run(mut cmd: Command) -> Output {
    let child = cmd.spawn().expect("spawn dtx");
    let mut guard = Guard(Some(child));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let child = guard.0.as_mut().expect("child");
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "dtx did not exit within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    guard.0.take().expect("child").wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fails_naming(cmd: Command, needle: &str) {
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "should fail; stdout: {}", text(&out.stdout));
    assert!(stderr.contains(needle), "stderr should name {needle}: {stderr}");
}

#[test]
fn help_lists_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dtx(&dir);
    cmd.arg("--help");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for flag in
        ["--database-url", "--http-listen", "--grpc-listen", "--config", "--log-format", "--retry-interval"]
    {
        assert!(help.contains(flag), "--help should mention {flag}: {help}");
    }
    assert!(help.contains("print-default-config"), "{help}");
    // Every setting is in README's configuration table.
    let readme = include_str!("../../../README.md");
    for flag in help.split_whitespace().filter(|w| w.starts_with("--") && w.len() > 2) {
        let flag = flag.trim_end_matches([',', '.', ')', '`']);
        if matches!(flag, "--help" | "--version") || flag.contains('=') {
            continue;
        }
        assert!(readme.contains(&format!("| `{flag}`")), "README's configuration table lacks {flag}");
    }
}

#[test]
fn version_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dtx(&dir);
    cmd.arg("--version");
    let out = run(cmd);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")), "{}", text(&out.stdout));
}

#[test]
fn a_bad_duration_flag_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dtx(&dir);
    cmd.args(["--retry-interval", "soon"]);
    fails_naming(cmd, "--retry-interval");
}

#[test]
fn a_bad_environment_value_is_named_by_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dtx(&dir);
    cmd.env("DTX_LOG_FORMAT", "xml");
    fails_naming(cmd, "--log-format");
}

#[test]
fn an_unsupported_database_url_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dtx(&dir);
    cmd.args(["--database-url", "mysql://x"]);
    fails_naming(cmd, "mysql://x");
}

#[test]
fn a_bad_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dtx.toml");
    std::fs::write(&path, "retry_intervall = \"2s\"\n").unwrap();
    let mut cmd = dtx(&dir);
    cmd.arg("--config").arg(&path);
    fails_naming(cmd, "retry_intervall");
}

#[test]
fn print_default_config_is_valid_toml_with_dtm_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dtx(&dir);
    cmd.arg("print-default-config");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = text(&out.stdout);
    let table: toml::Table = toml::from_str(&config).expect("valid TOML");
    assert_eq!(table["retry_interval"].as_str(), Some("10s"), "{config}");
    assert_eq!(table["request_timeout"].as_str(), Some("3s"), "{config}");
    assert_eq!(table["http_listen"].as_str(), Some("0.0.0.0:36789"), "{config}");

    // The printed file is accepted back as a config file.
    let path = dir.path().join("dtx.toml");
    std::fs::write(&path, &config).unwrap();
    let mut cmd = dtx(&dir);
    cmd.arg("--config").arg(&path).args(["--retry-interval", "never"]);
    fails_naming(cmd, "--retry-interval");
}

#[tokio::test]
async fn serves_ping_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log_path = dir.path().join("dtx.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = dtx(&dir);
    cmd.env("DTX_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("DTX_GRPC_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(log);
    let mut guard = Guard(Some(cmd.spawn().expect("spawn dtx")));

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/api/ping");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body: serde_json::Value = loop {
        if let Ok(r) = http.get(&url).send().await {
            break r.json().await.unwrap();
        }
        let child = guard.0.as_mut().unwrap();
        assert!(child.try_wait().unwrap().is_none(), "dtx exited early");
        assert!(Instant::now() < deadline, "dtx never answered /api/ping");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body, serde_json::json!({"msg": "pong"}));
    assert!(dir.path().join("dtx.db").exists(), "the database is created at start");

    let pid = guard.0.as_ref().unwrap().id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(killed.success());
    let mut child = guard.0.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("dtx did not stop within 10 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "graceful shutdown exits 0: {status}; log:\n{log}");
}

#[test]
fn an_unreachable_postgres_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dtx(&dir);
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    cmd.args(["--database-url", "postgres://dtx:secret@127.0.0.1:1/x"]);
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "should fail; stdout: {}", text(&out.stdout));
    assert!(stderr.contains("postgres://dtx:***@127.0.0.1:1/x"), "names the URL: {stderr}");
    assert!(stderr.contains("PostgreSQL"), "says what is unreachable: {stderr}");
    assert!(!stderr.contains("secret"), "the password is not printed: {stderr}");
}

#[test]
fn a_malformed_postgres_url_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dtx(&dir);
    cmd.args(["--database-url", "postgresql://[nowhere/x"]);
    fails_naming(cmd, "postgresql://[nowhere/x");
}
