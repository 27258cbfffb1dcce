//! The reliability suite (issue 12, README "Reliability"): fuzzing of every HTTP route and gRPC
//! method, a kill -9 loop, a participant outage, a hung database, overload, a soak, and
//! shutdown. Each drill runs a bounded form here (part of `cargo nextest run --workspace`, so of
//! `.ci/run`); `DTX_RELIABILITY=long` runs the long forms (README has the command).
//! Every drill prints its measurements (`--no-capture` shows them).

mod fuzz;
mod fuzz_grpc;
mod hung_db;
mod kill;
mod outage;
mod overload;
mod shutdown;
mod soak;

use std::time::Duration;

/// True when `DTX_RELIABILITY=long`: the long forms.
pub(crate) fn long() -> bool {
    std::env::var("DTX_RELIABILITY").is_ok_and(|v| v == "long")
}

/// `bounded` normally, `long` under `DTX_RELIABILITY=long`.
pub(crate) fn size<T>(bounded: T, long_form: T) -> T {
    if long() { long_form } else { bounded }
}

/// `DTX_FUZZ_BODIES=<n>`: bodies per route / method, overriding the bounded or long count.
pub(crate) fn fuzz_bodies() -> Option<usize> {
    std::env::var("DTX_FUZZ_BODIES").ok()?.parse().ok()
}

/// A small deterministic generator (xorshift64*): a failing run prints its seed, and
/// `DTX_FUZZ_SEED` replays it.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded(what: &str) -> Rng {
        let seed = std::env::var("DTX_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        println!("{what}: seed {seed} (DTX_FUZZ_SEED={seed} replays it)");
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Resident memory of a process, in KiB (`VmRSS` of /proc/PID/status).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `query` for each gid until its status is final; returns those not final by `within`.
pub(crate) async fn unfinished(base: &str, gids: &[String], within: Duration) -> Vec<(String, String)> {
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let deadline = tokio::time::Instant::now() + within;
    let mut pending: Vec<String> = gids.to_vec();
    let mut last = Vec::new();
    while !pending.is_empty() {
        last.clear();
        let mut still = Vec::new();
        for gid in pending {
            let status = match http.get(format!("{base}/query?gid={gid}")).send().await {
                Ok(r) => dtx_tests::server::read(r).await.1["transaction"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                Err(_) => String::new(),
            };
            if status != "succeed" && status != "failed" {
                last.push((gid.clone(), status));
                still.push(gid);
            }
        }
        pending = still;
        if pending.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}
