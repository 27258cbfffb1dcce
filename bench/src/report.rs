//! Results: latency percentiles, throughput, costs per transaction; a table and JSON.

use std::time::Duration;

use serde::Serialize;

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case name (`saga`, `tcc`...), with a suffix for mode phases (`saga@1M`).
    pub case: String,
    /// Transactions started.
    pub transactions: usize,
    /// In flight at once.
    pub concurrency: usize,
    /// Transactions that failed (error answer, or not done in time).
    pub errors: usize,
    /// Completed transactions per second (wall clock from the first start to the last done).
    pub tx_per_s: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Coordinator CPU (user + system) per completed transaction, microseconds.
    pub coordinator_cpu_us_per_tx: Option<f64>,
    /// PostgreSQL server CPU per completed transaction, microseconds (PostgreSQL on this machine).
    pub database_cpu_us_per_tx: Option<f64>,
    /// SQL statements the coordinators sent to their database per completed transaction
    /// (their `dtx_store_statements` metric: reads, writes and transaction control).
    pub db_statements_per_tx: Option<f64>,
    /// This throughput divided by the baseline's of the same protocol.
    pub ratio_to_baseline: Option<f64>,
    /// Final statuses checked (every transaction ended as expected).
    pub verified: Option<bool>,
}

impl CaseResult {
    /// Computes the statistics of a run.
    pub fn of(
        case: String,
        concurrency: usize,
        mut latencies: Vec<Duration>,
        errors: usize,
        wall: Duration,
    ) -> Self {
        latencies.sort_unstable();
        let done = latencies.len();
        let pick = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((done as f64 - 1.0) * q).round() as usize;
            latencies[i.min(done - 1)].as_secs_f64() * 1e3
        };
        CaseResult {
            case,
            transactions: done + errors,
            concurrency,
            errors,
            tx_per_s: if wall.is_zero() { 0.0 } else { done as f64 / wall.as_secs_f64() },
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
            coordinator_cpu_us_per_tx: None,
            database_cpu_us_per_tx: None,
            db_statements_per_tx: None,
            ratio_to_baseline: None,
            verified: None,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The mode (`steady`, `drain`, `growth`).
    pub mode: String,
    /// The store (password masked) or the coordinator URL.
    pub store: String,
    /// Coordinator nodes.
    pub nodes: usize,
    /// Coordinator start-up, milliseconds (spawn to the first answered ping).
    pub startup_ms: Option<f64>,
    /// Coordinator peak resident memory, MB (largest node).
    pub peak_rss_mb: Option<f64>,
    /// One row per case.
    pub cases: Vec<CaseResult>,
    /// Free-form facts of the mode (drain time, growth drop...).
    pub notes: Vec<String>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "dtx-bench  mode={}  store={}  nodes={}  startup={} ms  peak RSS={} MB\n",
            self.mode,
            self.store,
            self.nodes,
            opt(self.startup_ms, 1),
            opt(self.peak_rss_mb, 1)
        );
        out.push_str(&format!(
            "{:<16} {:>7} {:>4} {:>5} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>7} {:>6}\n",
            "case",
            "n",
            "c",
            "err",
            "tx/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "cpu µs",
            "db µs",
            "stmts",
            "ratio",
            "ok"
        ));
        for c in &self.cases {
            out.push_str(&format!(
                "{:<16} {:>7} {:>4} {:>5} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>9} {:>6} {:>7} {:>6}\n",
                c.case,
                c.transactions,
                c.concurrency,
                c.errors,
                c.tx_per_s,
                c.p50_ms,
                c.p90_ms,
                c.p99_ms,
                c.max_ms,
                opt(c.coordinator_cpu_us_per_tx, 0),
                opt(c.database_cpu_us_per_tx, 0),
                opt(c.db_statements_per_tx, 1),
                opt(c.ratio_to_baseline, 3),
                c.verified.map_or("-", |v| if v { "yes" } else { "NO" }),
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rate() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let r = CaseResult::of("saga".into(), 8, lat, 2, Duration::from_secs(2));
        assert_eq!(r.transactions, 102);
        assert!((r.tx_per_s - 50.0).abs() < 1e-9);
        assert!((r.p50_ms - 51.0).abs() < 1e-6 || (r.p50_ms - 50.0).abs() < 1e-6, "{}", r.p50_ms);
        assert!((r.p99_ms - 99.0).abs() < 1e-6, "{}", r.p99_ms);
        assert!((r.max_ms - 100.0).abs() < 1e-6);
        let empty = CaseResult::of("x".into(), 1, Vec::new(), 0, Duration::ZERO);
        assert_eq!((empty.tx_per_s, empty.max_ms), (0.0, 0.0));
    }
}
