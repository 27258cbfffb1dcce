//! Checks of single settings: each names the setting it refuses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dtx_core::health::HealthPolicy;

use super::{Error, Secret};

/// A token setting: empty means none; otherwise at least 8 characters, no surrounding spaces.
pub(super) fn token(t: Option<Secret>, setting: &'static str) -> Result<Option<Secret>, Error> {
    match t {
        None => Ok(None),
        Some(t) if t.expose().is_empty() => Ok(None),
        Some(t) if t.expose().trim() != t.expose() || t.expose().len() < 8 => Err(Error::Invalid {
            setting,
            message: "must be at least 8 characters, without surrounding spaces".into(),
        }),
        Some(t) => Ok(Some(t)),
    }
}

/// Two settings that go together (a certificate and its key): both or neither.
pub(super) fn pair(
    a: Option<PathBuf>,
    b: Option<PathBuf>,
    a_name: &'static str,
    b_name: &'static str,
) -> Result<Option<(PathBuf, PathBuf)>, Error> {
    match (a, b) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (Some(_), None) => Err(Error::Invalid { setting: b_name, message: format!("needed with {a_name}") }),
        (None, Some(_)) => Err(Error::Invalid { setting: a_name, message: format!("needed with {b_name}") }),
    }
}

/// A PEM file's bytes, read at start so that a wrong path fails there, naming the setting.
pub(super) fn read_pem(path: &std::path::Path, setting: &'static str) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Invalid { setting, message: format!("{}: {e}", path.display()) })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::Invalid { setting, message: format!("{}: not a PEM file", path.display()) });
    }
    Ok(bytes)
}

pub(super) fn addr(v: &str, setting: &'static str) -> Result<SocketAddr, Error> {
    v.parse().map_err(|e| Error::Invalid { setting, message: format!("'{v}' is not host:port ({e})") })
}

/// Parses `500ms`, `10s`, `2m`... or plain seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(v.trim())
        .map_err(|e| format!("'{v}' is not a duration ({e}); use e.g. 500ms, 10s, 2m"))
}

pub(super) fn positive(v: &str, setting: &'static str) -> Result<Duration, Error> {
    let d = parse_duration(v).map_err(|message| Error::Invalid { setting, message })?;
    if d.is_zero() {
        return Err(Error::Invalid { setting, message: "must be greater than zero".into() });
    }
    Ok(d)
}

/// The participant health settings as given.
pub(super) struct HostHealth {
    pub(super) on: Option<bool>,
    pub(super) threshold: Option<u32>,
    pub(super) probe_interval: Option<String>,
    pub(super) probe_cap: Option<String>,
    pub(super) burst: Option<u32>,
    pub(super) rate: Option<f64>,
}

/// The participant health policy (`None`: turned off).
pub(super) fn health_policy(s: HostHealth, backoff_cap: Duration) -> Result<Option<HealthPolicy>, Error> {
    fn req<T>(v: Option<T>, setting: &'static str) -> Result<T, Error> {
        v.ok_or(Error::Invalid { setting, message: "missing".into() })
    }
    if !req(s.on, "--host-health")? {
        return Ok(None);
    }
    let failure_threshold =
        at_least(req(s.threshold, "--host-failure-threshold")? as usize, 1, "--host-failure-threshold")?
            as u32;
    let probe_interval = positive(&req(s.probe_interval, "--host-probe-interval")?, "--host-probe-interval")?;
    let probe_cap = positive(&req(s.probe_cap, "--host-probe-cap")?, "--host-probe-cap")?;
    if probe_cap < probe_interval {
        return Err(Error::Invalid {
            setting: "--host-probe-cap",
            message: "must not be below --host-probe-interval".into(),
        });
    }
    // A probe never waits longer than a retry would: a short --backoff-cap shortens the probe
    // spacing too, rather than refusing the defaults.
    let probe_cap = probe_cap.min(backoff_cap);
    let probe_interval = probe_interval.min(probe_cap);
    let resume_burst =
        at_least(req(s.burst, "--host-resume-burst")? as usize, 1, "--host-resume-burst")? as u32;
    let resume_rate = req(s.rate, "--host-resume-rate")?;
    if !resume_rate.is_finite() || resume_rate < 0.01 {
        return Err(Error::Invalid {
            setting: "--host-resume-rate",
            message: format!("{resume_rate} (expected a number of transactions per second, at least 0.01)"),
        });
    }
    Ok(Some(HealthPolicy {
        failure_threshold,
        probe_interval,
        probe_cap,
        resume_burst,
        resume_rate,
        ..HealthPolicy::default()
    }))
}

pub(super) fn at_least(v: usize, min: usize, setting: &'static str) -> Result<usize, Error> {
    if v < min {
        return Err(Error::Invalid { setting, message: format!("{v} is below the minimum {min}") });
    }
    Ok(v)
}
