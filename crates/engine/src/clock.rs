//! Where the engine reads the time: a trait so tests can drive it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dtx_core::Timestamp;
use dtx_store::Store;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::{debug, info};

/// A source of "now", and the timer of everything the engine waits for by time (lease
/// renewals, retry pauses, scheduler polls): one clock, so tests that drive it decide when
/// each of those happens.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Completes once `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// The system wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(millis)
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that only moves when told to (tests). Its sleeps end when [`ManualClock::advance`]
/// moves it past their end, never by themselves.
#[derive(Debug)]
pub struct ManualClock {
    /// (now, timer time) in milliseconds. Timer time is what sleeps count on; it differs from
    /// `now` only after [`ManualClock::stall`].
    time: watch::Sender<(i64, i64)>,
}

impl ManualClock {
    /// A clock starting at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock { time: watch::Sender::new((start.0, 0)) }
    }

    /// A clock starting at the current wall-clock time.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(SystemClock.now())
    }

    /// Moves the clock forward; sleeps that end by then complete.
    pub fn advance(&self, by: Duration) {
        let by = millis(by);
        self.time.send_modify(|(now, timer)| {
            *now = now.saturating_add(by);
            *timer = timer.saturating_add(by);
        });
    }

    /// Moves "now" forward without completing any sleep: the node was stalled (a long pause,
    /// a frozen VM) and its timers fire `by` late. Tests use it to let a lease expire under a
    /// round that has not renewed it.
    pub fn stall(&self, by: Duration) {
        let by = millis(by);
        self.time.send_modify(|(now, _)| *now = now.saturating_add(by));
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.time.borrow().0)
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        let mut rx = self.time.subscribe();
        let end = rx.borrow().1.saturating_add(millis(d));
        Box::pin(async move {
            if rx.wait_for(|&(_, timer)| timer >= end).await.is_err() {
                // The clock is gone: nothing will ever advance it.
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A node clock corrected to the store's shared clock ([`Store::shared_clock`]): `base`
/// plus an offset measured against the store. Several nodes on one PostgreSQL database then
/// time out, schedule and record on the database's timeline even when their own clocks are
/// minutes apart. (Ownership never depended on this: the PostgreSQL store judges leases and
/// due times by the database clock in the statement itself.)
pub struct StoreClock {
    base: Arc<dyn Clock>,
    offset_ms: AtomicI64,
}

/// One reading of the store's clock, bracketed by the base clock before and after the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// Base clock just before asking.
    pub sent: Timestamp,
    /// What the store said.
    pub store: Timestamp,
    /// Base clock just after the answer.
    pub received: Timestamp,
}

impl ClockSample {
    /// The round trip, in milliseconds: the uncertainty of this sample.
    pub fn round_trip_ms(&self) -> i64 {
        self.received.0.saturating_sub(self.sent.0)
    }

    /// The store's clock minus the base clock, assuming the store read its clock halfway
    /// through the round trip.
    pub fn offset_ms(&self) -> i64 {
        let midpoint = self.sent.0.saturating_add(self.round_trip_ms() / 2);
        self.store.0.saturating_sub(midpoint)
    }
}

/// The offset given by the sample with the shortest round trip (the least uncertain one, as
/// NTP does); `None` without samples.
pub fn best_offset(samples: &[ClockSample]) -> Option<i64> {
    samples.iter().min_by_key(|s| s.round_trip_ms()).map(ClockSample::offset_ms)
}

/// Readings per synchronisation; the fastest one is kept.
const SAMPLES: usize = 3;

impl StoreClock {
    /// `base` with no correction yet.
    pub fn new(base: Arc<dyn Clock>) -> StoreClock {
        StoreClock { base, offset_ms: AtomicI64::new(0) }
    }

    /// The correction applied to the base clock, in milliseconds (store minus base).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Measures the offset against `store` and applies it. `Ok(None)` when the store has no
    /// shared clock (nothing changes); otherwise the new offset.
    pub async fn sync(&self, store: &dyn Store) -> dtx_store::Result<Option<i64>> {
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let sent = self.base.now();
            let Some(at) = store.shared_clock().await? else {
                return Ok(None);
            };
            samples.push(ClockSample { sent, store: at, received: self.base.now() });
        }
        let Some(offset) = best_offset(&samples) else {
            return Ok(None);
        };
        let before = self.offset_ms.swap(offset, Ordering::Relaxed);
        if (offset - before).abs() > CLOCK_STEP_WORTH_LOGGING_MS {
            info!(offset_ms = offset, previous_ms = before, "node clock corrected to the store's clock");
        } else {
            debug!(offset_ms = offset, "node clock re-synchronised with the store's clock");
        }
        Ok(Some(offset))
    }
}

/// A correction change smaller than this is routine drift and measurement noise.
const CLOCK_STEP_WORTH_LOGGING_MS: i64 = 1_000;

impl Clock for StoreClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.base.now().0.saturating_add(self.offset_ms()))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.base.sleep(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent: i64, store: i64, received: i64) -> ClockSample {
        ClockSample { sent: Timestamp(sent), store: Timestamp(store), received: Timestamp(received) }
    }

    #[test]
    fn a_sample_assumes_the_store_read_its_clock_halfway() {
        assert_eq!(sample(1_000, 1_005, 1_010).offset_ms(), 0);
        assert_eq!(sample(1_000, 601_005, 1_010).offset_ms(), 600_000);
        assert_eq!(sample(601_000, 1_005, 601_010).offset_ms(), -600_000);
        assert_eq!(sample(1_000, 1_000, 1_000).round_trip_ms(), 0);
    }

    #[test]
    fn the_fastest_sample_wins() {
        let slow = sample(0, 500, 400); // offset 300, round trip 400
        let fast = sample(1_000, 1_052, 1_004); // offset 50, round trip 4
        assert_eq!(best_offset(&[slow, fast, slow]), Some(50));
        assert_eq!(best_offset(&[]), None);
    }

    #[test]
    fn the_corrected_clock_moves_with_its_base() {
        let base = Arc::new(ManualClock::new(Timestamp(10_000)));
        let clock = StoreClock::new(base.clone());
        assert_eq!(clock.now(), Timestamp(10_000));
        clock.offset_ms.store(-4_000, Ordering::Relaxed);
        base.advance(Duration::from_millis(250));
        assert_eq!(clock.now(), Timestamp(6_250));
    }

    #[tokio::test]
    async fn manual_sleeps_end_only_when_the_clock_is_advanced_past_them() {
        let clock = ManualClock::new(Timestamp(0));
        let mut short = clock.sleep(Duration::from_millis(100));
        let mut long = clock.sleep(Duration::from_millis(300));
        assert!(futures::poll!(&mut short).is_pending());
        clock.stall(Duration::from_secs(10));
        assert!(futures::poll!(&mut short).is_pending(), "a stall fires no timer");
        assert_eq!(clock.now(), Timestamp(10_000));
        clock.advance(Duration::from_millis(150));
        assert!(futures::poll!(&mut short).is_ready());
        assert!(futures::poll!(&mut long).is_pending());
        clock.advance(Duration::from_millis(150));
        assert!(futures::poll!(&mut long).is_ready());
    }

    #[tokio::test]
    async fn a_store_without_a_shared_clock_leaves_the_clock_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = dtx_store_sqlite::SqliteStore::open(&url, dtx_store_sqlite::SqliteOptions::default())
            .await
            .expect("open sqlite");
        let clock = StoreClock::new(Arc::new(ManualClock::new(Timestamp(42))));
        assert_eq!(clock.sync(&store).await.expect("sync"), None);
        assert_eq!(clock.now(), Timestamp(42));
    }
}
