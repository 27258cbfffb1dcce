//! The coordinator under test: `dtx` nodes started as child processes (this binary re-executed
//! as `dtx-bench coordinator ...`, which runs the real `dtx` server), so their CPU time and peak
//! memory are measured apart from the load generator and the participants; or a running `dtx`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// The line a started coordinator prints on stdout with its HTTP and gRPC addresses.
const LISTENING: &str = "dtx-bench-coordinator-listening";

/// Runs the real `dtx` server with `args` (its own flags), until SIGTERM or ctrl-c.
pub async fn serve(args: Vec<String>) -> anyhow::Result<()> {
    let cli = dtx_server::config::Cli::try_parse_from(std::iter::once("dtx".to_owned()).chain(args))?;
    let settings = match cli.command {
        Some(dtx_server::config::Command::Serve(s)) => s,
        _ => cli.settings,
    };
    let config = settings.resolve()?;
    // Logging as `dtx serve` does (RUST_LOG, default info): its cost is part of the figures.
    dtx_server::telemetry::init(config.log_format);
    let server = dtx_server::Server::build(&config).await.context("dtx failed to start")?;
    // The addresses it bound (the parent asks for port 0: a port picked and released by the
    // parent could be taken meanwhile by one of the bench's own outgoing connections).
    println!("{LISTENING} {} {}", server.http_addr(), server.grpc_addr());
    server.run(terminated()).await.context("dtx stopped with an error")?;
    Ok(())
}

async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// One `dtx` node: its API addresses and, when this bench started it, its process.
pub struct Node {
    /// `http://127.0.0.1:PORT/api/dtmsvr`.
    pub base: String,
    /// The gRPC address.
    pub grpc: SocketAddr,
    child: Option<Child>,
    /// From spawn to the first answered `/api/ping`.
    pub startup: Option<Duration>,
}

impl Node {
    /// A running coordinator at `http_root` (`http://host:port`) and `grpc`.
    pub fn remote(http_root: &str, grpc: SocketAddr) -> Node {
        Node {
            base: format!("{}/api/dtmsvr", http_root.trim_end_matches('/')),
            grpc,
            child: None,
            startup: None,
        }
    }

    /// Starts a node on `database_url` with extra `dtx` flags, and waits until it answers.
    pub async fn start(database_url: &str, extra: &[String], http: &reqwest::Client) -> anyhow::Result<Node> {
        let exe = std::env::current_exe().context("cannot find the bench binary to start dtx from")?;
        let started = Instant::now();
        let mut cmd = Command::new(exe);
        cmd.arg("coordinator")
            .arg("--database-url")
            .arg(database_url)
            .arg("--http-listen")
            .arg("127.0.0.1:0")
            .arg("--grpc-listen")
            .arg("127.0.0.1:0")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot start the dtx coordinator")?;
        let stdout = child.stdout.take().context("the coordinator's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(LISTENING) {
                    return Ok::<_, std::io::Error>(Some(rest.trim().to_owned()));
                }
            }
            Ok(None)
        })
        .await
        .context("dtx did not start within 30 s")??
        .context("dtx exited before it listened")?;
        let (http_addr, grpc_addr) = line.split_once(' ').context("the coordinator's listening line")?;
        let http_addr: SocketAddr = http_addr.parse().context("the coordinator's HTTP address")?;
        let grpc_addr: SocketAddr = grpc_addr.parse().context("the coordinator's gRPC address")?;
        // Nothing else is printed on stdout; keep reading so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let root = format!("http://{http_addr}");
        let ping = format!("{root}/api/ping");
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(&ping).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("dtx did not answer {ping} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let startup = started.elapsed();
        Ok(Node {
            base: format!("{root}/api/dtmsvr"),
            grpc: grpc_addr,
            child: Some(child),
            startup: Some(startup),
        })
    }

    /// The process id, when this bench started the node.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Stops the node (SIGTERM, then a kill after 10 s).
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

/// User + system CPU time of a process so far.
pub fn cpu_time(pid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| ticks_of_stat(&s)).unwrap_or_default()
}

/// The peak resident memory of a process (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The CPU time of every PostgreSQL server process on this machine (the database's share of
/// the work, when it runs here), with the time of its exited processes: a backend or an
/// autovacuum worker that ends between two readings takes its time out of the sum, and the
/// postmaster's reaped-children time puts it back, so the difference of two readings is what
/// PostgreSQL spent in between.
pub fn postgres_cpu_time() -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Duration::ZERO };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == "postgres").then(|| std::fs::read_to_string(e.path().join("stat")).ok()).flatten()
        })
        .map(|s| ticks_of_stat(&s) + reaped_children_ticks(&s))
        .sum()
}

/// cutime + cstime from a `/proc/<pid>/stat` line: the CPU time of the process's children that
/// ended and were waited for.
fn reaped_children_ticks(stat: &str) -> Duration {
    stat_ticks(stat, 13, 14)
}

/// utime + stime from a `/proc/<pid>/stat` line. Linux reports them in USER_HZ, which is 100 on
/// every architecture Rust targets.
fn ticks_of_stat(stat: &str) -> Duration {
    // Fields 14 (utime) and 15 (stime) of the whole line.
    stat_ticks(stat, 11, 12)
}

/// The sum of two tick fields of a `/proc/<pid>/stat` line, counted from the field after the
/// command name (field 3 of the line is 0 here), in USER_HZ (100 per second).
fn stat_ticks(stat: &str, a: usize, b: usize) -> Duration {
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((tick(a) + tick(b)) * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_the_command_name() {
        let line = "42 (dtx bench) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(ticks_of_stat(line), Duration::from_millis(3000));
        assert_eq!(reaped_children_ticks(line), Duration::ZERO);
        let parent = "7 (postgres) S 1 7 7 0 -1 4194560 100 0 0 0 250 50 120 30 20 0 8 0 100 0 0";
        assert_eq!(reaped_children_ticks(parent), Duration::from_millis(1500));
        assert!(cpu_time(std::process::id()) < Duration::from_secs(3600));
        assert!(peak_rss(std::process::id()) > 0);
    }
}
