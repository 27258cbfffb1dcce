//! Caps on outbound participant calls: in total and per `host:port` (issue 12), so one
//! misbehaving transaction or one slow participant cannot take every socket of the node.
//! A call waits for a permit up to its own timeout. Cheap on the hot path: two uncontended
//! semaphore acquisitions and a read-locked map lookup by `&str` (no allocation once the host
//! is known).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// Hosts remembered before idle ones are forgotten.
const MAX_HOSTS: usize = 4096;

/// The caps.
#[derive(Debug)]
pub(crate) struct CallLimits {
    total: Semaphore,
    per_host_max: usize,
    hosts: RwLock<HashMap<Box<str>, Arc<Semaphore>>>,
}

/// Held for the duration of one call.
#[derive(Debug)]
pub(crate) struct CallPermit<'a> {
    _total: SemaphorePermit<'a>,
    _host: OwnedSemaphorePermit,
}

impl CallLimits {
    pub(crate) fn new(total: usize, per_host: usize) -> CallLimits {
        CallLimits {
            total: Semaphore::new(total.max(1)),
            per_host_max: per_host.max(1),
            hosts: RwLock::new(HashMap::new()),
        }
    }

    fn host(&self, host: &str) -> Arc<Semaphore> {
        if let Ok(map) = self.hosts.read()
            && let Some(s) = map.get(host)
        {
            return s.clone();
        }
        let Ok(mut map) = self.hosts.write() else {
            // A poisoned map (a panic while inserting) still caps: per call, not per host.
            return Arc::new(Semaphore::new(self.per_host_max));
        };
        if map.len() >= MAX_HOSTS {
            // Forget hosts with no call in flight; their semaphores are back to full.
            let full = self.per_host_max;
            map.retain(|_, s| s.available_permits() < full);
        }
        map.entry(host.into()).or_insert_with(|| Arc::new(Semaphore::new(self.per_host_max))).clone()
    }

    /// A permit to call `host` (`host:port`), waiting at most `wait`.
    pub(crate) async fn acquire(&self, host: &str, wait: Duration) -> Result<CallPermit<'_>, String> {
        let per_host = self.host(host);
        // Fast path (the usual case): both slots free, no timer.
        if let Ok(h) = per_host.clone().try_acquire_owned() {
            if let Ok(t) = self.total.try_acquire() {
                return Ok(CallPermit { _total: t, _host: h });
            }
            drop(h);
        }
        let both = async {
            let h = per_host.acquire_owned().await.ok()?;
            let t = self.total.acquire().await.ok()?;
            Some(CallPermit { _total: t, _host: h })
        };
        match tokio::time::timeout(wait, both).await {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err("outbound call limiter closed".into()),
            Err(_) => Err(format!(
                "too many calls in flight (to {host} or in total): no slot within {} ms",
                wait.as_millis()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_per_host_and_total_caps_hold() {
        let l = CallLimits::new(3, 2);
        let wait = Duration::from_millis(50);
        let a1 = l.acquire("a:1", wait).await.unwrap();
        let _a2 = l.acquire("a:1", wait).await.unwrap();
        assert!(l.acquire("a:1", wait).await.unwrap_err().contains("too many calls"), "per host");
        let _b1 = l.acquire("b:1", wait).await.unwrap();
        assert!(l.acquire("b:1", wait).await.is_err(), "in total");
        drop(a1);
        assert!(l.acquire("b:1", wait).await.is_ok(), "a finished call frees its slot");
    }
}
