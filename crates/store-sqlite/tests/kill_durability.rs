//! An acknowledged `create` survives a SIGKILL of the process.
//!
//! No helper binary: the parent test re-executes this very test binary, filtered to
//! [`child_writer`], with `DTX_SQLITE_CHILD` naming the database. The child prints each gid
//! right after `create` returned `Ok`; the parent kills it mid-stream with SIGKILL, reopens the
//! database and checks that every gid it was told about is there.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dtx_store::Store;
use dtx_store::testsuite::saga;
use dtx_store_sqlite::{SqliteOptions, SqliteStore};

const CHILD_ENV: &str = "DTX_SQLITE_CHILD";
/// Marks the child's gid lines (libtest may print its own text on the same line first).
const MARK: &str = "dtx-acked:";
/// How many acknowledged creates the parent waits for before killing the child.
const KILL_AFTER: usize = 50;

fn url(path: &str) -> String {
    format!("sqlite://{path}")
}

/// The child: a no-op unless `DTX_SQLITE_CHILD` is set (so it passes in a normal run).
#[test]
fn child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::open(&url(&path), SqliteOptions::default()).await.expect("child open");
        let mut out = std::io::stdout().lock();
        // Start on a fresh line, whatever libtest printed before.
        writeln!(out).expect("stdout");
        // Far more than the parent waits for: the kill lands while creates are in flight.
        for i in 0..100_000 {
            let gid = format!("kill-{i:06}");
            store.create(saga(&gid)).await.expect("child create");
            writeln!(out, "{MARK}{gid}").expect("stdout");
            out.flush().expect("flush");
        }
    });
}

#[test]
fn acked_creates_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // Only the parent runs this.
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kill.db").display().to_string();

    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", "child_writer", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");

    // Read on a thread so a stuck child cannot hang the test: the parent waits with a timeout.
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some((_, gid)) = line.split_once(MARK)
                && tx.send(gid.trim().to_owned()).is_err()
            {
                break;
            }
        }
    });

    let mut acked = Vec::new();
    while acked.len() < KILL_AFTER {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(gid) => acked.push(gid),
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().expect("wait child");
                panic!("child stopped after {} acks ({e}); exit: {status}", acked.len());
            }
        }
    }
    child.kill().expect("SIGKILL child");
    let status = child.wait().expect("wait child");
    assert!(!status.success(), "the child was killed, not finished: {status}");
    reader.join().expect("reader thread");
    // Lines already in the pipe were acknowledged before the kill too.
    acked.extend(rx.try_iter());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store =
            SqliteStore::open(&url(&path), SqliteOptions::default()).await.expect("reopen after kill");
        for gid in &acked {
            let loaded = store.load(gid).await.expect("load");
            let loaded = loaded.unwrap_or_else(|| panic!("acknowledged {gid} lost"));
            assert_eq!(loaded.branches.len(), 4, "{gid} complete");
        }
    });
    assert!(acked.len() >= KILL_AFTER);
}
