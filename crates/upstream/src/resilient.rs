//! An upstream's failures absorbed where they can be, around any [`Origin`]:
//!
//! - **Retries.** Reads are idempotent, so a call that failed on the network, timed out, or was
//!   answered 500, 502, 503 (SlowDown), 504 or 429 is tried again after a backoff drawn at random
//!   below an exponentially growing ceiling (full jitter), bounded by attempts and a deadline.
//!   An answer that made no sense (a wrong `Content-Range`, a whole object for a range) is
//!   tried again too.
//! - **Resumed bodies.** A body that breaks mid-stream is continued from the byte where it
//!   stopped, with a ranged request pinned to the same ETag, so the reader sees one whole body.
//! - **Hedged chunk reads.** A chunk read that has not answered after a delay is sent again and
//!   the first answer wins; hedges are capped at a share of reads.
//! - **A circuit breaker.** After failed calls in a row, calls fail fast for a while; then one
//!   probe is let through, whose outcome closes or reopens the breaker.
//!
//! Answers that say something about the object (404, 412, 403) are not failures: the upstream
//! is up and has spoken.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::IntCounterVec;

use super::{Body, Opened, Origin, OriginBody, OriginError};
use crate::metrics::UpstreamMetrics;
pub use breaker::Breaker;
pub use breaker::BreakerPolicy;
pub use hedge::HedgePolicy;
use hedge::Hedger;
use shardcache_types::{ETag, ObjectMeta};

/// How an upstream's failures are absorbed (from its `retry`, `breaker` and `hedge` config).
#[derive(Clone, Debug)]
pub struct Resilience {
    /// Tries of one call, the first included.
    pub attempts: u32,
    /// Backoff ceiling before the first retry; it doubles per retry.
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
    /// Time after a call's first failure past which it is not tried again.
    pub deadline: Duration,
    /// The least a body must deliver; `None`: no floor.
    pub floor: Option<Floor>,
    /// When the circuit breaker opens.
    pub breaker: BreakerPolicy,
    /// Hedged chunk reads.
    pub hedge: Option<HedgePolicy>,
}

/// The least a body must deliver: below `bytes_per_second` over a `window`, it is dropped and
/// resumed from the byte it reached (a source that drips a byte at a time never trips a read
/// timeout).
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    /// Bytes per second.
    pub bytes_per_second: u64,
    /// How long the rate is measured over.
    pub window: Duration,
}

impl Floor {
    /// A meter of one body's rate against this floor, its first window starting now.
    pub fn meter(self) -> Meter {
        Meter {
            floor: self,
            start: Instant::now(),
            bytes: 0,
        }
    }
}

/// One body's rate, window by window, against a [`Floor`].
pub struct Meter {
    floor: Floor,
    /// When the current window started, and the bytes received in it.
    start: Instant,
    bytes: u64,
}

impl Meter {
    /// Counts `n` bytes received; past a window below the floor, says why the body is too slow.
    pub fn count(&mut self, n: usize) -> Option<String> {
        self.bytes += n as u64;
        if !self.due() {
            return None;
        }
        let elapsed = self.start.elapsed();
        let (bytes, wanted) = (
            self.bytes,
            (self.floor.bytes_per_second as f64 * elapsed.as_secs_f64()) as u64,
        );
        self.restart();
        (bytes < wanted).then(|| {
            format!(
                "{bytes} bytes in {:.1} s, below the floor of {} bytes/s",
                elapsed.as_secs_f64(),
                self.floor.bytes_per_second
            )
        })
    }

    /// Whether the current window has run out: the next [`Self::count`] judges it.
    pub fn due(&self) -> bool {
        self.start.elapsed() >= self.floor.window
    }

    /// Does not count `time` against the source: its reader, not the source, held the body back
    /// for that long.
    pub fn excuse(&mut self, time: Duration) {
        self.start = (self.start + time).min(Instant::now());
    }

    /// Starts a new window now (the body was replaced).
    pub fn restart(&mut self) {
        (self.start, self.bytes) = (Instant::now(), 0);
    }
}

/// An [`Origin`] with retries, resumed bodies, hedged reads and a circuit breaker.
pub struct Resilient(Arc<Core>);

struct Core {
    name: String,
    inner: Arc<dyn Origin>,
    opts: Resilience,
    breaker: Breaker,
    hedger: Option<Hedger>,
    retries: IntCounterVec,
}

type Answer = Result<Body, OriginError>;

/// The reasons a call is retried, as [`OriginError::retry_reason`] names them.
const REASONS: [&str; 5] = ["timeout", "network", "throttled", "server_error", "invalid"];

impl Resilient {
    /// `inner`, named `name` in metrics, with `opts`.
    pub fn new(name: &str, inner: Arc<dyn Origin>, opts: Resilience, metrics: &UpstreamMetrics) -> Self {
        let hedges = |outcome: &str| metrics.hedges.with_label_values(&[name, outcome]);
        let breaker = Breaker::new(
            format!("upstream {name}"),
            opts.breaker,
            metrics.breaker.with_label_values(&[name]),
            metrics.breaker_rejections.with_label_values(&[name]),
        );
        // Every series exists from the start, so rates and alerts see zeros, not gaps.
        for reason in REASONS {
            metrics.retries.with_label_values(&[name, reason]);
        }
        // Created even without hedging, so the series exist for dashboards.
        let (sent, won) = (hedges("sent"), hedges("won"));
        let hedger = opts.hedge.map(|policy| Hedger::new(policy, sent, won));
        Self(Arc::new(Core {
            name: name.to_owned(),
            inner,
            opts,
            breaker,
            hedger,
            retries: metrics.retries.clone(),
        }))
    }
}

impl Core {
    /// Runs `attempt` until it succeeds, fails in a way a retry would not change, or runs out
    /// of attempts or time; the call as a whole passes the breaker once.
    async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<T, OriginError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OriginError>>,
    {
        let ticket = self.breaker.admit(&self.name)?;
        let mut tries = 0;
        let mut first_failure = None;
        loop {
            let result = attempt().await;
            if let Some(reason) = result.as_ref().err().and_then(OriginError::retry_reason) {
                tries += 1;
                let since = *first_failure.get_or_insert_with(Instant::now);
                let wait = self.backoff(tries);
                if tries < self.opts.attempts && since.elapsed() + wait <= self.opts.deadline {
                    self.retries.with_label_values(&[&self.name, reason]).inc();
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            ticket.settle(!result.as_ref().err().is_some_and(OriginError::counts_against_breaker));
            return result;
        }
    }

    /// The wait before retry number `retry` (from 1): uniform below the ceiling
    /// `base * 2^(retry-1)`, capped at `max_delay`.
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .opts
            .base_delay
            .saturating_mul(1 << (retry - 1).min(20))
            .min(self.opts.max_delay);
        ceiling.mul_f64(unit_random())
    }

    /// One chunk read, hedged if the upstream hedges.
    async fn hedged_read(&self, bucket: &str, key: &str, span: &Range<u64>, etag: &ETag) -> Answer {
        match &self.hedger {
            Some(hedger) => hedger.read(&self.inner, bucket, key, span, etag).await,
            None => self.inner.read(bucket, key, span.clone(), etag).await,
        }
    }

    /// `body`, the bytes `span` of version `etag`, made to resume where it breaks.
    fn resuming(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        span: Range<u64>,
        etag: &ETag,
        body: Box<dyn OriginBody>,
    ) -> Box<dyn OriginBody> {
        Box::new(Resuming {
            core: self.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            etag: etag.clone(),
            rest: span,
            body,
            resumed: 0,
            meter: self.opts.floor.map(Floor::meter),
            slow: None,
        })
    }
}

#[async_trait]
impl Origin for Resilient {
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, OriginError> {
        self.0.call(|| self.0.inner.head(bucket, key)).await
    }

    async fn open(&self, bucket: &str, key: &str, span: Range<u64>) -> Result<Opened, OriginError> {
        let opened = self.0.call(|| self.0.inner.open(bucket, key, span.clone())).await?;
        let body = opened.body.map(|body| {
            let clipped = span.start..span.end.min(opened.meta.size);
            self.0.resuming(bucket, key, clipped, &opened.meta.etag, body)
        });
        Ok(Opened {
            meta: opened.meta,
            body,
            headed: opened.headed,
        })
    }

    async fn read(&self, bucket: &str, key: &str, span: Range<u64>, etag: &ETag) -> Result<Body, OriginError> {
        let body = self.0.call(|| self.0.hedged_read(bucket, key, &span, etag)).await?;
        Ok(self.0.resuming(bucket, key, span, etag, body))
    }
}

/// A body that, when it breaks, continues with a read of the bytes still missing, pinned to the
/// same version (`If-Match`), at most `attempts - 1` times.
struct Resuming {
    core: Arc<Core>,
    bucket: String,
    key: String,
    etag: ETag,
    /// The bytes not yet read.
    rest: Range<u64>,
    body: Box<dyn OriginBody>,
    resumed: u32,
    /// The body's rate against the floor, if there is one.
    meter: Option<Meter>,
    /// The body fell below the floor: the next read fails with this, and is resumed.
    slow: Option<String>,
}

#[async_trait]
impl OriginBody for Resuming {
    async fn next(&mut self) -> Result<Option<&[u8]>, OriginError> {
        if let Some(why) = self.slow.take() {
            return Err(OriginError::TimedOut(why));
        }
        match self.body.next().await? {
            Some(piece) => {
                self.rest.start += piece.len() as u64;
                self.slow = self.meter.as_mut().and_then(|m| m.count(piece.len()));
                Ok(Some(piece))
            }
            None => Ok(None),
        }
    }

    async fn resume(&mut self, error: &OriginError) -> Result<bool, OriginError> {
        let Some(reason) = error.retry_reason() else {
            return Ok(false);
        };
        if self.rest.is_empty() || self.resumed + 1 >= self.core.opts.attempts {
            return Ok(false);
        }
        self.resumed += 1;
        let core = &self.core;
        core.retries.with_label_values(&[&core.name, reason]).inc();
        tokio::time::sleep(core.backoff(self.resumed)).await;
        let (bucket, key, rest, etag) = (&self.bucket, &self.key, &self.rest, &self.etag);
        self.body = core.call(|| core.hedged_read(bucket, key, rest, etag)).await?;
        if let Some(meter) = &mut self.meter {
            meter.restart();
        }
        Ok(true)
    }
}

/// A number drawn uniformly from [0, 1).
fn unit_random() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The system's random source does not fail on Linux; no jitter at all is the safe fallback.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

mod breaker;
mod hedge;
#[cfg(test)]
mod tests;
