//! Operator actions (DTM users' requests #143, #241, #344) and topic subscriptions.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use dtx_store::{Error as StoreError, KvRow};
use tracing::info;

use crate::request::{Subscriber, TOPICS, check_branch_url, check_gid, check_text};
use crate::{Engine, Error, Result};

/// An operator stop under way: begun when made, done when dropped (also when the request is
/// dropped mid-write).
struct StopUnderWay<'a>(&'a crate::Inner);

impl<'a> StopUnderWay<'a> {
    fn begin(inner: &'a crate::Inner) -> StopUnderWay<'a> {
        inner.stops_begun.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        StopUnderWay(inner)
    }
}

impl Drop for StopUnderWay<'_> {
    fn drop(&mut self) {
        self.0.stops_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Concurrent subscribers of one topic race on its version; this many retries settle it.
const KV_CAS_TRIES: usize = 16;

impl Engine {
    /// Stops a transaction for good: it becomes `failed`, whatever it was doing; the round
    /// processing it (if any) is fenced out at its next write and calls nobody else.
    pub async fn force_stop(&self, gid: &str) -> Result<()> {
        check_gid(gid)?;
        // Begun before the write: a round of this node that starts a call after this point
        // sees it and writes (fenced) first, so no call starts after the stop is answered; and
        // no marks ahead are made until the write is done (ADR 21).
        let _stop = StopUnderWay::begin(&self.inner);
        let now = self.inner.clock.now();
        match self.inner.store.force_stop(gid, "force stopped by an operator", now).await {
            Ok(was) => {
                info!(%gid, %was, "force stopped");
                Ok(())
            }
            Err(StoreError::NotFound(_)) => Err(Error::NotFound(format!("no transaction with gid {gid}"))),
            Err(StoreError::Precondition(m)) => Err(Error::Conflict(format!("cannot force stop {gid}: {m}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// "Retry now": the transaction is due at once, its backoff reset.
    pub async fn reset_next_cron_time(&self, gid: &str) -> Result<()> {
        check_gid(gid)?;
        let loaded = self
            .inner
            .store
            .load(gid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no transaction with gid {gid}")))?;
        let base = self.inner.opts.retry.base(loaded.global.options.retry_interval);
        let now = self.inner.clock.now();
        match self.inner.store.reset_next_cron_time(gid, base, now).await {
            Err(StoreError::NotFound(_)) => Err(Error::NotFound(format!("no transaction with gid {gid}"))),
            other => Ok(other?),
        }
    }

    /// Makes due now every unfinished transaction scheduled more than `after` from now (up to
    /// `limit`). Returns (how many, whether more may remain).
    pub async fn reset_cron_time(&self, after: Duration, limit: u32) -> Result<(u64, bool)> {
        let now = self.inner.clock.now();
        let n = self.inner.store.reset_cron_time(now.add(after), limit, now).await?;
        Ok((n, n == u64::from(limit)))
    }

    /// Subscribes `url` to `topic` (msg steps `topic://<topic>` fan out to every subscriber).
    /// `url` is an http URL or a gRPC branch URL.
    pub async fn subscribe(&self, topic: &str, url: &str, remark: &str) -> Result<()> {
        check_topic_and_url(topic, url)?;
        check_text("remark", remark)?;
        // An http URL or a gRPC `host:port/package.Service/Method`: the message being fanned out
        // may be a gRPC one (DTM does not check the URL at all).
        check_branch_url(url, true).map_err(|m| Error::InvalidArgument(format!("url: {m}")))?;
        crate::participant::check_urls(self.inner.policy.as_deref(), [url])
            .await
            .map_err(Error::InvalidArgument)?;
        self.update_topic(topic, |list| {
            if list.iter().any(|s| s.url == url) {
                return Err(Error::Conflict(format!("{url} is already subscribed to {topic}")));
            }
            list.push(Subscriber { url: url.to_owned(), remark: remark.to_owned() });
            Ok(())
        })
        .await
    }

    /// Removes `url` from `topic`.
    pub async fn unsubscribe(&self, topic: &str, url: &str) -> Result<()> {
        check_topic_and_url(topic, url)?;
        if self.inner.store.kv_get(TOPICS, topic).await?.is_none() {
            return Err(Error::NotFound(format!("no topic {topic}")));
        }
        self.update_topic(topic, |list| {
            let before = list.len();
            list.retain(|s| s.url != url);
            if list.len() == before {
                return Err(Error::NotFound(format!("{url} is not subscribed to {topic}")));
            }
            Ok(())
        })
        .await
    }

    /// Deletes a topic and its subscriptions.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        check_text("topic", topic)?;
        match self.inner.store.kv_delete(TOPICS, topic).await {
            Err(StoreError::NotFound(_)) => Err(Error::NotFound(format!("no topic {topic}"))),
            other => Ok(other?),
        }
    }

    /// Key-value rows of a category, newest first (`scanKV`).
    pub async fn kv_scan(&self, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>> {
        check_text("cat", cat)?;
        Ok(self.inner.store.kv_scan(cat, before_id, limit).await?)
    }

    /// One key-value row (`queryKV`).
    pub async fn kv_get(&self, cat: &str, key: &str) -> Result<Option<KvRow>> {
        check_text("cat", cat)?;
        check_text("key", key)?;
        Ok(self.inner.store.kv_get(cat, key).await?)
    }

    /// Read-modify-write of a topic's subscriber list, compare-and-set on its version. A lost
    /// race (someone else changed the topic meanwhile) reads again after a short jittered pause.
    async fn update_topic(
        &self,
        topic: &str,
        change: impl Fn(&mut Vec<Subscriber>) -> Result<()>,
    ) -> Result<()> {
        let store = &self.inner.store;
        let attempt = || async {
            let now = self.inner.clock.now();
            let row = store.kv_get(TOPICS, topic).await.map_err(|e| Cas::Failed(e.into()))?;
            let mut list: Vec<Subscriber> = match &row {
                Some(r) => serde_json::from_str(&r.v).unwrap_or_default(),
                None => Vec::new(),
            };
            change(&mut list).map_err(Cas::Failed)?;
            let v = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
            let written = match &row {
                None => store.kv_insert(TOPICS, topic, &v, now).await,
                Some(r) => store.kv_update(TOPICS, topic, &v, r.version, now).await,
            };
            match written {
                Ok(()) => Ok(()),
                Err(StoreError::Conflict(_)) | Err(StoreError::NotFound(_)) => Err(Cas::Raced),
                Err(e) => Err(Cas::Failed(e.into())),
            }
        };
        let backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(1))
            .with_max_delay(Duration::from_millis(50))
            .with_max_times(KV_CAS_TRIES)
            .with_jitter();
        match attempt.retry(backoff).when(|e| matches!(e, Cas::Raced)).await {
            Ok(()) => Ok(()),
            Err(Cas::Failed(e)) => Err(e),
            Err(Cas::Raced) => {
                Err(Error::Unavailable(format!("topic {topic} is changing too often; try again")))
            }
        }
    }
}

/// Why one compare-and-set attempt on a topic did not write.
enum Cas {
    /// Another writer changed the row first: worth another try.
    Raced,
    /// Anything else: final.
    Failed(Error),
}

fn check_topic_and_url(topic: &str, url: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(Error::InvalidArgument("empty topic".into()));
    }
    if url.is_empty() {
        return Err(Error::InvalidArgument("empty url".into()));
    }
    check_text("topic", topic)?;
    check_text("url", url)
}
