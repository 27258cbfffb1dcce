//! `dtx-bench`: throughput and latency of the dtx coordinator, compared in the same run with the
//! same participant calls made directly.
//!
//! It starts `dtx` nodes as child processes (this binary re-executed as `dtx-bench coordinator`,
//! so their CPU and memory are measured apart) on a fresh SQLite store per case, or on the
//! PostgreSQL database given, or uses a running coordinator (`--dtx`); runs its own HTTP and gRPC
//! participants on loopback; drives the cases at a fixed concurrency; prints a table and writes
//! JSON. Modes: `steady` (N transactions at concurrency C per case), `drain` (sagas accepted
//! while their participant is down, then how fast the backlog drains once it is back), `growth`
//! (saga throughput on an empty store vs. with many finished transactions stored; on
//! PostgreSQL the filled tables are vacuumed before the second measurement).

// The same allocator as the `dtx` binary, so the in-process coordinator measures like it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod coordinator;
mod participant;
mod report;
mod workload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;

use crate::coordinator::Node;
use crate::participant::{Completions, GrpcParticipant, HttpParticipant};
use crate::report::{CaseResult, Report};
use crate::workload::{Case, Env};

/// Benchmark of the dtx coordinator.
#[derive(Debug, Parser)]
#[command(name = "dtx-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// What to measure.
    #[arg(long, value_enum, default_value = "steady")]
    mode: Mode,
    /// Cases to run (comma-separated); each is compared with the baseline of its protocol.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "saga,saga-wait,tcc,msg,saga-grpc,tcc-grpc,msg-grpc"
    )]
    cases: Vec<Case>,
    /// Transactions per case.
    #[arg(short = 'n', long, default_value_t = 20_000)]
    transactions: usize,
    /// Transactions in flight at once.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Store of the coordinators this bench starts: a `postgres://` URL (shared by every case
    /// and node); default: a fresh SQLite file per case.
    #[arg(long)]
    database_url: Option<String>,
    /// Coordinator nodes to start (more than one needs `--database-url postgres://...`).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Use a running coordinator at this HTTP root (`http://127.0.0.1:36789`) instead of
    /// starting one (no CPU or memory figures then).
    #[arg(long)]
    dtx: Option<String>,
    /// The running coordinator's gRPC address (with `--dtx`).
    #[arg(long, default_value = "127.0.0.1:36790")]
    dtx_grpc: SocketAddr,
    /// An extra flag for every started coordinator (repeatable), e.g. `--dtx-arg=--claim-batch=128`.
    #[arg(long = "dtx-arg", allow_hyphen_values = true)]
    dtx_args: Vec<String>,
    /// growth: finished transactions stored before the second measurement.
    #[arg(long, default_value_t = 1_000_000)]
    fill: usize,
    /// growth on the bench's own SQLite stores: measurements of each store, alternated (empty,
    /// filled, filled, empty, ...) so that the machine's drift cancels out.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// drain: how long the participant stays down after the last submit.
    #[arg(long, default_value = "5s", value_parser = humantime_secs)]
    outage: Duration,
    /// Skip checking every transaction's final status.
    #[arg(long)]
    no_verify: bool,
    /// A quick run that checks the bench works (CI): few transactions, every case and both
    /// baselines, verified; exits non-zero on any error.
    #[arg(long)]
    smoke: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Runs a dtx coordinator with these flags (used by the bench itself).
    #[command(hide = true)]
    Coordinator {
        /// `dtx` flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

impl Cli {
    /// The store URL when it is PostgreSQL (shared by nodes, its CPU measured, vacuumed).
    fn postgres_url(&self) -> Option<&str> {
        self.database_url.as_deref().filter(|u| u.starts_with("postgres"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Steady,
    Drain,
    Growth,
}

fn humantime_secs(v: &str) -> Result<Duration, String> {
    dtx_server::config::parse_duration(v)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(Sub::Coordinator { args }) = cli.command.take() {
        return coordinator::serve(args).await;
    }
    if cli.smoke {
        cli.transactions = cli.transactions.min(200);
        cli.concurrency = cli.concurrency.min(16);
        cli.fill = cli.fill.min(500);
        cli.no_verify = false;
    }
    if cli.nodes > 1 && cli.postgres_url().is_none() {
        bail!("--nodes {} needs a shared store: --database-url postgres://...", cli.nodes);
    }
    let report = match cli.mode {
        Mode::Steady => steady(&cli).await?,
        Mode::Drain => drain(&cli).await?,
        Mode::Growth => growth(&cli).await?,
    };
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    let failed = report.cases.iter().filter(|c| c.errors > 0 || c.verified == Some(false)).count();
    if failed > 0 {
        bail!("{failed} case(s) had errors or unexpected final statuses");
    }
    Ok(())
}

/// The participants and the coordinator nodes of one measurement.
struct Setup {
    nodes: Vec<Node>,
    http: HttpParticipant,
    _grpc: GrpcParticipant,
    env: Env,
    _dir: Option<tempfile::TempDir>,
}

impl Setup {
    async fn start(cli: &Cli, extra: &[String], http_port: u16) -> anyhow::Result<Setup> {
        let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(256).build()?;
        let completions = Arc::new(Completions::default());
        let http = HttpParticipant::start(http_port, completions.clone()).await?;
        let grpc = GrpcParticipant::start(completions.clone()).await?;
        let (nodes, dir) = match &cli.dtx {
            Some(root) => (vec![Node::remote(root, cli.dtx_grpc)], None),
            None => {
                let (url, dir) = match &cli.database_url {
                    Some(u) => (u.clone(), None),
                    None => {
                        let dir = tempfile::tempdir()?;
                        (format!("sqlite://{}", dir.path().join("bench.db").display()), Some(dir))
                    }
                };
                let mut args: Vec<String> = extra.to_vec();
                args.extend(cli.dtx_args.iter().cloned());
                let mut nodes = Vec::new();
                for _ in 0..cli.nodes {
                    nodes.push(Node::start(&url, &args, &client).await?);
                }
                (nodes, dir)
            }
        };
        let env = Env::new(&nodes, &http, &grpc, completions, client).await?;
        Ok(Setup { nodes, http, _grpc: grpc, env, _dir: dir })
    }

    fn cpu(&self) -> Option<Duration> {
        let pids: Vec<u32> = self.nodes.iter().filter_map(Node::pid).collect();
        (!pids.is_empty()).then(|| pids.iter().map(|&p| coordinator::cpu_time(p)).sum())
    }

    fn peak_rss_mb(&self) -> Option<f64> {
        self.nodes
            .iter()
            .filter_map(Node::pid)
            .map(|p| coordinator::peak_rss(p) as f64 / 1e6)
            .reduce(f64::max)
    }

    fn startup_ms(&self) -> Option<f64> {
        self.nodes.iter().filter_map(|n| n.startup).map(|d| d.as_secs_f64() * 1e3).reduce(f64::max)
    }

    async fn stop(self) {
        for n in self.nodes {
            n.stop().await;
        }
        self.http.stop().await;
    }
}

/// Runs `n` transactions of a case at concurrency `c` and measures them.
async fn measure(setup: &Setup, cli: &Cli, case: Case, label: String, n: usize, c: usize) -> CaseResult {
    let on_pg = cli.postgres_url().is_some();
    let cpu_before = setup.cpu();
    let db_before = on_pg.then(coordinator::postgres_cpu_time);
    let statements_before = setup.env.statements().await;
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..n)
        .map(|i| setup.env.run_one(case, i))
        .buffer_unordered(c.max(1))
        .collect()
        .await;
    let wall = started.elapsed();
    let cpu_after = setup.cpu();
    let db_after = on_pg.then(coordinator::postgres_cpu_time);
    let statements_after = setup.env.statements().await;
    let mut errors = 0;
    let mut latencies = Vec::with_capacity(n);
    for r in results {
        match r {
            Ok(l) => latencies.push(l),
            Err(e) => {
                if errors < 3 {
                    eprintln!("{}: {e:#}", case.name());
                }
                errors += 1;
            }
        }
    }
    let mut result = CaseResult::of(label, c, latencies, errors, wall);
    let done = (n - errors).max(1) as f64;
    if case.uses_coordinator() {
        result.coordinator_cpu_us_per_tx =
            cpu_before.zip(cpu_after).map(|(b, a)| (a - b).as_secs_f64() * 1e6 / done);
        result.database_cpu_us_per_tx =
            db_before.zip(db_after).map(|(b, a)| a.saturating_sub(b).as_secs_f64() * 1e6 / done);
        result.db_statements_per_tx =
            statements_before.zip(statements_after).map(|(b, a)| a.saturating_sub(b) as f64 / done);
        if !cli.no_verify {
            result.verified = Some(verify(&setup.env, case, n).await);
        }
    }
    result
}

/// Every transaction of a case reached `succeed` (the status write follows the last call
/// closely, so each gets a few seconds).
async fn verify(env: &Env, case: Case, n: usize) -> bool {
    let checks = futures::stream::iter(0..n)
        .map(|i| async move {
            let gid = env.gid(case, i);
            for _ in 0..500 {
                match env.status(&gid, i).await {
                    Ok(Some(s)) if s == "succeed" => return true,
                    Ok(Some(s)) if s == "failed" => break,
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            eprintln!("{gid}: did not end succeed");
            false
        })
        .buffer_unordered(32);
    checks.all(|ok| async move { ok }).await
}

fn store_label(cli: &Cli) -> String {
    match (&cli.dtx, &cli.database_url) {
        (Some(root), _) => format!("running dtx at {root}"),
        (None, Some(url)) => dtx_server::config::DatabaseUrl::from(url.as_str()).to_string(),
        (None, None) => "sqlite (fresh file per case)".into(),
    }
}

fn with_ratios(mut cases: Vec<CaseResult>, baselines: &[(Case, f64)], of: &[Case]) -> Vec<CaseResult> {
    for (row, case) in cases.iter_mut().zip(of) {
        if let Some((_, base)) = baselines.iter().find(|(b, _)| *b == case.baseline())
            && *base > 0.0
            && case.uses_coordinator()
        {
            row.ratio_to_baseline = Some(row.tx_per_s / base);
        }
    }
    cases
}

async fn steady(cli: &Cli) -> anyhow::Result<Report> {
    let mut cases = cli.cases.clone();
    if cli.smoke {
        cases = vec![
            Case::Saga,
            Case::SagaWait,
            Case::Tcc,
            Case::Msg,
            Case::SagaGrpc,
            Case::TccGrpc,
            Case::MsgGrpc,
        ];
    }
    let mut rows = Vec::new();
    let mut order = Vec::new();
    let (mut startup, mut rss) = (None::<f64>, None::<f64>);
    let mut baselines = Vec::new();
    // The baselines run first, on their own participants, so every case compares with the same.
    let needed: Vec<Case> = {
        let mut b: Vec<Case> = cases.iter().map(|c| c.baseline()).collect();
        b.dedup();
        b.sort_by_key(|c| c.name());
        b.dedup();
        b
    };
    {
        let setup = Setup::start(cli, &[], 0).await?;
        for b in needed {
            let r = measure(&setup, cli, b, b.name().into(), cli.transactions, cli.concurrency).await;
            baselines.push((b, r.tx_per_s));
            rows.push(r);
            order.push(b);
        }
        setup.stop().await;
    }
    for case in cases {
        // A fresh store (and coordinator) per case, so no case runs on another's leftovers.
        let setup = Setup::start(cli, &[], 0).await?;
        startup = max_opt(startup, setup.startup_ms());
        rows.push(measure(&setup, cli, case, case.name().into(), cli.transactions, cli.concurrency).await);
        order.push(case);
        rss = max_opt(rss, setup.peak_rss_mb());
        setup.stop().await;
    }
    Ok(report(cli, "steady", startup, rss, with_ratios(rows, &baselines, &order), Vec::new()))
}

/// The report of a mode's run against `cli`'s store and nodes.
fn report(
    cli: &Cli,
    mode: &str,
    startup_ms: Option<f64>,
    peak_rss_mb: Option<f64>,
    cases: Vec<CaseResult>,
    notes: Vec<String>,
) -> Report {
    Report {
        mode: mode.into(),
        store: store_label(cli),
        nodes: cli.nodes,
        startup_ms,
        peak_rss_mb,
        cases,
        notes,
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// Sagas submitted while their participant is down; once it is back, how fast they all finish.
async fn drain(cli: &Cli) -> anyhow::Result<Report> {
    // Short retry timers, so the backlog's next attempts come within the run. The resume of
    // transactions held for the host is throttled by default (--host-resume-rate, 100/s, to
    // spare a host that just came back); lifted here, unless set with --dtx-arg, so that the
    // coordinator's own drain capacity is what is measured.
    let mut extra = vec!["--retry-interval=1s".to_owned(), "--backoff-cap=2s".to_owned()];
    for (flag, value) in [("--host-resume-rate", "1000000"), ("--host-resume-burst", "1000000")] {
        if !cli.dtx_args.iter().any(|a| a.starts_with(flag)) {
            extra.push(format!("{flag}={value}"));
        }
    }
    let setup = Setup::start(cli, &extra, 0).await?;
    let port = setup.http.addr().port();
    let Setup { nodes, http, _grpc, mut env, _dir } = setup;
    http.stop().await;
    env.deadline = Duration::from_secs(600);
    let n = cli.transactions;
    let env = Arc::new(env);
    let done: Vec<_> = (0..n).map(|i| env.completions.expect(&env.gid(Case::Saga, i), 2)).collect();
    let submitted = Instant::now();
    let accepted: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let env = env.clone();
            async move {
                let body = env.saga_body(&env.gid(Case::Saga, i), false);
                let url = format!("{}/submit", env.nodes[i % env.nodes.len()].base);
                let r = env.http.post(&url).json(&body).send().await?;
                if !r.status().is_success() {
                    bail!("submit: {}", r.status());
                }
                Ok(())
            }
        })
        .buffer_unordered(cli.concurrency.max(1))
        .collect()
        .await;
    let refused = accepted.iter().filter(|r| r.is_err()).count();
    let submit_time = submitted.elapsed();
    tokio::time::sleep(cli.outage).await;
    let cpu_before: Duration = nodes.iter().filter_map(Node::pid).map(coordinator::cpu_time).sum();
    let back = HttpParticipant::start(port, env.completions.clone()).await?;
    let resumed = Instant::now();
    let mut first = None;
    let mut last = Duration::ZERO;
    let mut finished = 0usize;
    let mut pending =
        futures::stream::iter(done).map(|rx| async move { rx.await.is_ok() }).buffer_unordered(n.max(1));
    let deadline = tokio::time::sleep(env.deadline);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = pending.next() => match next {
                Some(true) => {
                    finished += 1;
                    last = resumed.elapsed();
                    first.get_or_insert(last);
                }
                Some(false) => {}
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    let drained = resumed.elapsed();
    let cpu_after: Duration = nodes.iter().filter_map(Node::pid).map(coordinator::cpu_time).sum();
    let mut row = CaseResult::of("saga-drain".into(), cli.concurrency, Vec::new(), n - finished, drained);
    row.transactions = n;
    // The drain rate: from the first saga done (the coordinator saw the host back: a probe, or
    // a retry timer) to the last. The wait before the first is a note of its own.
    let first_done = first.unwrap_or_default();
    row.tx_per_s =
        finished.saturating_sub(1) as f64 / last.saturating_sub(first_done).as_secs_f64().max(1e-9);
    if !nodes.is_empty() && nodes.iter().any(|n| n.pid().is_some()) {
        row.coordinator_cpu_us_per_tx =
            Some((cpu_after - cpu_before).as_secs_f64() * 1e6 / finished.max(1) as f64);
    }
    let notes = vec![
        format!(
            "{n} sagas submitted in {:.2} s while the participant was down ({refused} refused)",
            submit_time.as_secs_f64()
        ),
        format!("participant down {:.1} s after the last submit, then back", cli.outage.as_secs_f64()),
        format!(
            "first saga done {:.2} s after it came back (the host seen back); {finished}/{n} done {:.2} s \
             after it came back; tx/s = the drain from the first done to the last ({:.0}/s over the whole wait)",
            first_done.as_secs_f64(),
            last.as_secs_f64(),
            finished as f64 / last.as_secs_f64().max(1e-9)
        ),
        format!("coordinators ran with {}", extra.join(" ")),
    ];
    let rss =
        nodes.iter().filter_map(Node::pid).map(|p| coordinator::peak_rss(p) as f64 / 1e6).reduce(f64::max);
    for node in nodes {
        node.stop().await;
    }
    back.stop().await;
    Ok(report(cli, "drain", None, rss, vec![row], notes))
}

/// Vacuums and analyzes the tables a fill wrote. A million inserts set off autovacuum on
/// PostgreSQL (insert threshold), which would otherwise run during the second measurement
/// and charge a bulk load's clean-up to the stored rows; a store that has held its rows for a
/// while has had that done.
async fn vacuum(url: &str) -> anyhow::Result<Duration> {
    use sqlx::Connection;
    let started = Instant::now();
    let mut conn = sqlx::PgConnection::connect(url).await.context("connect to PostgreSQL to vacuum")?;
    sqlx::raw_sql("VACUUM (ANALYZE) trans_global, trans_branch_op")
        .execute(&mut conn)
        .await
        .context("VACUUM (ANALYZE) after the fill")?;
    conn.close().await.context("close the vacuum connection")?;
    Ok(started.elapsed())
}

/// Stores `cli.fill` finished sagas (steps that call nobody finish in their first round);
/// returns how long it took and how many submits failed.
async fn fill(env: &Env, cli: &Cli) -> (Duration, usize) {
    let started = Instant::now();
    let filled: Vec<anyhow::Result<()>> = futures::stream::iter(0..cli.fill)
        .map(|i| async move {
            let body = serde_json::json!({
                "gid": format!("bench-fill-{}-{i}", env.run_id), "trans_type": "saga",
                "steps": [{"action": "", "compensate": ""}, {"action": "", "compensate": ""}],
                "payloads": ["", ""],
            });
            let r = env.http.post(format!("{}/submit", env.nodes[0].base)).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("fill submit: {}", r.status());
            }
            Ok(())
        })
        .buffer_unordered(cli.concurrency.max(1))
        .collect()
        .await;
    (started.elapsed(), filled.iter().filter(|r| r.is_err()).count())
}

/// The mean throughput of some measurements.
fn mean_tx_per_s<'a>(rows: impl Iterator<Item = &'a CaseResult>) -> f64 {
    let (sum, n) = rows.fold((0.0, 0usize), |(s, n), r| (s + r.tx_per_s, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Saga throughput on an empty store vs. with `--fill` finished transactions stored.
///
/// On the bench's own SQLite stores the two are measured alternately, `--rounds` times each
/// (empty, filled, filled, empty, ...), on two coordinators (one filled first, one left empty):
/// this VM's speed drifts by a third within an hour, so measurements minutes apart compared
/// drift, not stores (the earlier empty-fill-filled order measured −34 % to +34 % with the same
/// build). A running coordinator (`--dtx`) or a shared PostgreSQL database has one store, so
/// there the order stays empty, fill, filled.
async fn growth(cli: &Cli) -> anyhow::Result<Report> {
    if cli.dtx.is_some() || cli.database_url.is_some() {
        return growth_in_sequence(cli).await;
    }
    let mut filled = Setup::start(cli, &[], 0).await?;
    let (fill_time, fill_errors) = fill(&filled.env, cli).await;
    let mut empty = Setup::start(cli, &[], 0).await?;
    let ids = [empty.env.run_id.clone(), filled.env.run_id.clone()];
    let mut rows: Vec<(bool, CaseResult)> = Vec::new();
    for round in 0..cli.rounds.max(1) {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for is_filled in order {
            let (setup, what) = if is_filled { (&mut filled, "filled") } else { (&mut empty, "empty") };
            // Fresh gids for every measurement on a store that already ran one.
            setup.env.run_id = format!("{}r{round}", ids[usize::from(is_filled)]);
            let label = format!("saga {what} #{}", round + 1);
            let row = measure(setup, cli, Case::Saga, label, cli.transactions, cli.concurrency).await;
            rows.push((is_filled, row));
        }
    }
    let on_empty = mean_tx_per_s(rows.iter().filter(|(f, _)| !f).map(|(_, r)| r));
    let on_filled = mean_tx_per_s(rows.iter().filter(|(f, _)| *f).map(|(_, r)| r));
    let change = if on_empty > 0.0 { (on_filled / on_empty - 1.0) * 100.0 } else { 0.0 };
    let notes = vec![
        format!(
            "filled: {} finished sagas stored in {:.1} s ({fill_errors} errors)",
            cli.fill,
            fill_time.as_secs_f64()
        ),
        format!(
            "measured alternately on an empty store and the filled one, {} rounds: mean {on_empty:.0} vs \
             {on_filled:.0} tx/s",
            cli.rounds.max(1)
        ),
        format!("throughput change with the store filled: {change:+.1} %"),
    ];
    let rss = max_opt(filled.peak_rss_mb(), empty.peak_rss_mb());
    let startup = max_opt(filled.startup_ms(), empty.startup_ms());
    filled.stop().await;
    empty.stop().await;
    Ok(report(cli, "growth", startup, rss, rows.into_iter().map(|(_, r)| r).collect(), notes))
}

/// [`growth`] on one store: empty, fill (and VACUUM on PostgreSQL), filled.
async fn growth_in_sequence(cli: &Cli) -> anyhow::Result<Report> {
    let setup = Setup::start(cli, &[], 0).await?;
    let empty =
        measure(&setup, cli, Case::Saga, "saga (empty store)".into(), cli.transactions, cli.concurrency)
            .await;
    let env = &setup.env;
    let (fill_time, fill_errors) = fill(env, cli).await;
    let settle = match cli.postgres_url() {
        Some(url) => Some(vacuum(url).await?),
        None => None,
    };
    let mut env2 =
        Env::new(&setup.nodes, &setup.http, &setup._grpc, env.completions.clone(), env.http.clone()).await?;
    env2.run_id = format!("{}g", env.run_id);
    let Setup { nodes, http, _grpc, env: _, _dir } = setup;
    let setup = Setup { nodes, http, _grpc, env: env2, _dir };
    let label = format!("saga (+{} stored)", cli.fill);
    let full = measure(&setup, cli, Case::Saga, label, cli.transactions, cli.concurrency).await;
    let drop = if empty.tx_per_s > 0.0 { (1.0 - full.tx_per_s / empty.tx_per_s) * 100.0 } else { 0.0 };
    let mut notes = vec![
        format!(
            "stored {} finished sagas in {:.1} s ({fill_errors} errors)",
            cli.fill,
            fill_time.as_secs_f64()
        ),
        format!("throughput change with the store filled: {:+.1} %", -drop),
    ];
    if let Some(took) = settle {
        notes.push(format!(
            "VACUUM (ANALYZE) after the fill took {:.1} s (else the measurement races the autovacuum the \
             fill set off)",
            took.as_secs_f64()
        ));
    }
    let (rss, startup) = (setup.peak_rss_mb(), setup.startup_ms());
    setup.stop().await;
    Ok(report(cli, "growth", startup, rss, vec![empty, full], notes))
}
