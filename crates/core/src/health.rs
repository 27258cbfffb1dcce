//! Participant host health: when to stop calling a host, when to probe it, how fast to resume.
//!
//! A *host* is where a branch call goes: `scheme://host:port` of an HTTP URL, the `host:port`
//! target of a gRPC one ([`host_of`]). After [`HealthPolicy::failure_threshold`] consecutive
//! failures (connection failures, timeouts, 5xx; gRPC Unavailable, DeadlineExceeded, Internal,
//! Unknown) a host is *down*: calls to it are held, except one probe per probe interval (a real
//! pending call, so nothing extra reaches the service), spaced with backoff and jitter up to
//! [`HealthPolicy::probe_cap`]. Any answer that shows the service alive (success, FAILURE,
//! ONGOING, a 4xx) marks it up again; the transactions waiting on it are then released through a
//! [`TokenBucket`], so a recovered service is not flooded.
//!
//! Pure: the engine keeps one [`HostState`] per host and one bucket per resuming host, passes
//! the time and random samples in, and carries the decisions out.

use std::time::Duration;

use crate::{Outcome, Timestamp};

/// The health settings (server-wide).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive failures that mark a host down (0 behaves as 1).
    pub failure_threshold: u32,
    /// The wait before the first probe; it doubles after every failed probe.
    pub probe_interval: Duration,
    /// The longest wait between probes (never below `probe_interval`).
    pub probe_cap: Duration,
    /// Fraction of a probe wait added or removed at random (0.1 = ±10 %), so nodes do not
    /// probe in step.
    pub jitter: f64,
    /// Transactions released at once when a host comes back (the bucket's size, at least 1).
    pub resume_burst: u32,
    /// Transactions released per second after the burst.
    pub resume_rate: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            failure_threshold: 5,
            // One call per node every few seconds is nothing to a service, live or dead, and
            // bounds how long a recovered host waits for its first probe.
            probe_interval: Duration::from_secs(1),
            probe_cap: Duration::from_secs(5),
            jitter: 0.1,
            resume_burst: 50,
            resume_rate: 100.0,
        }
    }
}

impl HealthPolicy {
    /// The wait before the next probe after `failed` failed probes, jittered by `sample` (a
    /// uniform number in `[0, 1)`). Between `probe_interval × (1 − jitter)` and `probe_cap`.
    pub fn probe_wait(&self, failed: u32, sample: f64) -> Duration {
        let cap = self.probe_cap.max(self.probe_interval);
        let base = self.probe_interval.saturating_mul(1u32 << failed.min(20)).min(cap);
        let jitter = if self.jitter.is_finite() { self.jitter.clamp(0.0, 1.0) } else { 0.0 };
        let sample = if sample.is_nan() { 0.5 } else { sample.clamp(0.0, 1.0) };
        let factor = 1.0 + jitter * (2.0 * sample - 1.0);
        let secs = (base.as_secs_f64() * factor).max(0.0);
        Duration::try_from_secs_f64(secs).unwrap_or(cap).min(cap)
    }

    fn threshold(&self) -> u32 {
        self.failure_threshold.max(1)
    }
}

/// What an answer says about its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The service answered: it is up (success, FAILURE, ONGOING, a 4xx, a non-failure gRPC code).
    Up,
    /// Connection failure, timeout, 5xx (gRPC Unavailable, DeadlineExceeded, Internal, Unknown).
    Failure,
    /// Says nothing about the host (a URL that could not even be used).
    Neutral,
}

/// Reads an answer as a health signal. The error texts are those of the engine's callers:
/// `status N: ...` for an HTTP answer ([`Outcome::from_http`]), `grpc Code: ...` for a gRPC
/// status, `bad ...` for a URL that was never called; anything else is a transport failure.
pub fn signal_of(outcome: &Outcome) -> Signal {
    let text = match outcome {
        Outcome::Success | Outcome::Failure(_) | Outcome::Ongoing => return Signal::Up,
        Outcome::Error(text) => text.as_str(),
    };
    if let Some(rest) = text.strip_prefix("status ") {
        let code: u16 = rest.split(':').next().and_then(|c| c.trim().parse().ok()).unwrap_or(0);
        return if code >= 500 || code == 0 { Signal::Failure } else { Signal::Up };
    }
    if let Some(rest) = text.strip_prefix("grpc ") {
        let code = rest.split([':', ' ']).next().unwrap_or_default();
        return match code {
            "Unavailable" | "DeadlineExceeded" | "Internal" | "Unknown" => Signal::Failure,
            // "grpc target ... not ready": the channel could not connect.
            "target" => Signal::Failure,
            _ => Signal::Up,
        };
    }
    if text.starts_with("bad ") { Signal::Neutral } else { Signal::Failure }
}

/// The host a branch URL calls: `scheme://authority` of an HTTP(S) URL, the `host:port` target
/// of a gRPC one (`host:port/package.Service/Method`). A slice of `url`; `None` when empty.
pub fn host_of(url: &str) -> Option<&str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let host = &url[..end];
    (end > start).then_some(host)
}

/// How a call to a host is to be treated now ([`HostState::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The host is up: call.
    Call,
    /// The host is down and a probe is due: this call is the probe.
    Probe,
    /// The host is down: do not call; try again at `until` (its next probe).
    Hold {
        /// The host's next probe time.
        until: Timestamp,
    },
}

/// What an answer changed ([`HostState::observe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing to report.
    None,
    /// The host has just been marked down.
    WentDown,
    /// The host has just come back: release the transactions waiting on it.
    WentUp {
        /// How long it was down.
        down_for: Duration,
    },
}

/// One host as one node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Calls go out; `failures` consecutive failures so far.
    Up {
        /// Consecutive failures.
        failures: u32,
    },
    /// Calls are held; one probe at `next_probe`.
    Down {
        /// When it was marked down.
        since: Timestamp,
        /// Probes that failed since.
        probes_failed: u32,
        /// When the next probe may go out.
        next_probe: Timestamp,
    },
}

impl Default for HostState {
    fn default() -> Self {
        HostState::Up { failures: 0 }
    }
}

impl HostState {
    /// True while calls are held.
    pub fn is_down(&self) -> bool {
        matches!(self, HostState::Down { .. })
    }

    /// Up with no failure counted: nothing worth remembering.
    pub fn is_clean(&self) -> bool {
        *self == HostState::Up { failures: 0 }
    }

    /// Whether a call may go out at `now`. Taking the probe moves the next probe one wait
    /// ahead at once, so concurrent rounds get one probe per interval even before it answers
    /// (and a probe that never answers does not block the next).
    pub fn admit(&mut self, policy: &HealthPolicy, now: Timestamp, sample: f64) -> Admission {
        match self {
            HostState::Up { .. } => Admission::Call,
            HostState::Down { probes_failed, next_probe, .. } => {
                if now < *next_probe {
                    return Admission::Hold { until: *next_probe };
                }
                *next_probe = now.add(policy.probe_wait(*probes_failed, sample));
                Admission::Probe
            }
        }
    }

    /// Takes an answer into account. `probe`: the call was admitted as the probe (only a failed
    /// probe lengthens the wait; answers of calls started before the host went down do not).
    pub fn observe(
        &mut self,
        policy: &HealthPolicy,
        signal: Signal,
        probe: bool,
        now: Timestamp,
        sample: f64,
    ) -> Change {
        match (*self, signal) {
            (_, Signal::Neutral) => Change::None,
            (HostState::Up { .. }, Signal::Up) => {
                *self = HostState::Up { failures: 0 };
                Change::None
            }
            (HostState::Up { failures }, Signal::Failure) => {
                let failures = failures.saturating_add(1);
                if failures >= policy.threshold() {
                    *self = HostState::Down {
                        since: now,
                        probes_failed: 0,
                        next_probe: now.add(policy.probe_wait(0, sample)),
                    };
                    Change::WentDown
                } else {
                    *self = HostState::Up { failures };
                    Change::None
                }
            }
            (HostState::Down { since, .. }, Signal::Up) => {
                *self = HostState::Up { failures: 0 };
                Change::WentUp { down_for: now.since(since) }
            }
            (HostState::Down { since, probes_failed, next_probe }, Signal::Failure) => {
                if probe {
                    let probes_failed = probes_failed.saturating_add(1);
                    let after = now.add(policy.probe_wait(probes_failed, sample));
                    *self = HostState::Down { since, probes_failed, next_probe: next_probe.max(after) };
                }
                Change::None
            }
        }
    }
}

/// The resume rate of one host: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last: Timestamp,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(policy: &HealthPolicy, now: Timestamp) -> TokenBucket {
        TokenBucket { tokens: f64::from(policy.resume_burst.max(1)), last: now }
    }

    fn refill(&mut self, policy: &HealthPolicy, now: Timestamp) {
        let burst = f64::from(policy.resume_burst.max(1));
        let rate = rate(policy);
        let elapsed = (now.0 - self.last.0).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = self.last.max(now);
    }

    /// Takes up to `want` whole tokens at `now`; returns how many it got.
    pub fn take(&mut self, policy: &HealthPolicy, now: Timestamp, want: u32) -> u32 {
        self.refill(policy, now);
        let got = (self.tokens.floor().max(0.0) as u32).min(want);
        self.tokens -= f64::from(got);
        got
    }

    /// Gives back `n` tokens taken but not used (fewer transactions were waiting).
    pub fn give_back(&mut self, policy: &HealthPolicy, n: u32) {
        self.tokens = (self.tokens + f64::from(n)).min(f64::from(policy.resume_burst.max(1)));
    }

    /// How long until one whole token is there (zero if one is).
    pub fn wait_for_one(&self, policy: &HealthPolicy) -> Duration {
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        let secs = (1.0 - self.tokens) / rate(policy);
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(1)).max(Duration::from_millis(1))
    }
}

/// The refill rate, kept positive and finite (a zero rate would never resume anything).
fn rate(policy: &HealthPolicy) -> f64 {
    if policy.resume_rate.is_finite() && policy.resume_rate > 0.001 { policy.resume_rate } else { 0.001 }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
