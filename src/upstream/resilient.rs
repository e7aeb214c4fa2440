//! An upstream's failures absorbed where they can be, around any [`Origin`]:
//!
//! - **Retries.** Reads are idempotent, so a call that failed on the network, timed out, or was
//!   answered 500, 502, 503 (SlowDown), 504 or 429 is tried again after a backoff drawn at random
//!   below an exponentially growing ceiling (full jitter), bounded by attempts and a deadline.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{IntCounter, IntCounterVec, IntGauge};

use super::{Opened, Origin, OriginBody, OriginError};
use crate::metrics::Metrics;
use crate::types::{ETag, ObjectMeta};

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
    /// Failed calls in a row that open the breaker; `0`: no breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_open: Duration,
    /// Hedged chunk reads: the delay before the second request, and the most hedges as a share
    /// of reads.
    pub hedge: Option<(Duration, f64)>,
}

/// An [`Origin`] with retries, resumed bodies, hedged reads and a circuit breaker.
pub struct Resilient(Arc<Core>);

struct Core {
    name: String,
    inner: Arc<dyn Origin>,
    opts: Resilience,
    breaker: Breaker,
    /// Chunk reads, and hedges sent, for the hedge cap.
    reads: AtomicU64,
    hedged: AtomicU64,
    retries: IntCounterVec,
    hedges_sent: IntCounter,
    hedges_won: IntCounter,
}

/// The reasons a call is retried, as [`retry_reason`] names them.
const REASONS: [&str; 4] = ["timeout", "network", "throttled", "server_error"];

/// Why a failed call may succeed if tried again; `None` for answers that would not change.
fn retry_reason(e: &OriginError) -> Option<&'static str> {
    match e {
        OriginError::TimedOut(_) => Some("timeout"),
        OriginError::Unreachable(_) => Some("network"),
        OriginError::Rejected { status: 429 | 503, .. } => Some("throttled"),
        OriginError::Rejected {
            status: 500 | 502 | 504,
            ..
        } => Some("server_error"),
        _ => None,
    }
}

impl Resilient {
    /// `inner`, named `name` in metrics, with `opts`.
    pub fn new(name: &str, inner: Arc<dyn Origin>, opts: Resilience, metrics: &Metrics) -> Self {
        let hedges = |outcome: &str| metrics.upstream_hedges.with_label_values(&[name, outcome]);
        let breaker = Breaker {
            failures_to_open: opts.breaker_failures,
            open_for: opts.breaker_open,
            state: Mutex::new(State::Closed { failures: 0 }),
            gauge: metrics.upstream_breaker.with_label_values(&[name]),
            rejected: metrics.upstream_breaker_rejections.with_label_values(&[name]),
        };
        breaker.gauge.set(0);
        // Every series exists from the start, so rates and alerts see zeros, not gaps.
        for reason in REASONS {
            metrics.upstream_retries.with_label_values(&[name, reason]);
        }
        Self(Arc::new(Core {
            name: name.to_owned(),
            inner,
            opts,
            breaker,
            reads: AtomicU64::new(0),
            hedged: AtomicU64::new(0),
            retries: metrics.upstream_retries.clone(),
            hedges_sent: hedges("sent"),
            hedges_won: hedges("won"),
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
            let Some(reason) = result.as_ref().err().and_then(retry_reason) else {
                ticket.settle(true);
                return result;
            };
            tries += 1;
            let since = *first_failure.get_or_insert_with(Instant::now);
            let wait = self.backoff(tries);
            if tries >= self.opts.attempts || since.elapsed() + wait > self.opts.deadline {
                ticket.settle(false);
                return result;
            }
            self.retries.with_label_values(&[&self.name, reason]).inc();
            tokio::time::sleep(wait).await;
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

    /// One chunk read, hedged when it is slow to answer and the cap allows.
    async fn hedged_read(
        &self,
        bucket: &str,
        key: &str,
        span: &Range<u64>,
        etag: &ETag,
    ) -> Result<Box<dyn OriginBody>, OriginError> {
        let Some((after, share)) = self.opts.hedge else {
            return self.inner.read(bucket, key, span.clone(), etag).await;
        };
        let reads = self.reads.fetch_add(1, Ordering::Relaxed) + 1;
        let first = self.inner.read(bucket, key, span.clone(), etag);
        tokio::pin!(first);
        if let Ok(answer) = tokio::time::timeout(after, &mut first).await {
            return answer;
        }
        let hedged = self.hedged.load(Ordering::Relaxed);
        if (hedged + 1) as f64 > share * reads as f64 {
            return first.await;
        }
        self.hedged.fetch_add(1, Ordering::Relaxed);
        self.hedges_sent.inc();
        let second = self.inner.read(bucket, key, span.clone(), etag);
        tokio::pin!(second);
        // The first success wins; the loser is dropped, and its connection with it.
        tokio::select! {
            answer = &mut first => match answer {
                Ok(body) => Ok(body),
                Err(_) => self.won(second.await),
            },
            answer = &mut second => match answer {
                Ok(body) => self.won(Ok(body)),
                Err(_) => first.await,
            },
        }
    }

    fn won(&self, answer: Result<Box<dyn OriginBody>, OriginError>) -> Result<Box<dyn OriginBody>, OriginError> {
        if answer.is_ok() {
            self.hedges_won.inc();
        }
        answer
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
        })
    }

    async fn read(
        &self,
        bucket: &str,
        key: &str,
        span: Range<u64>,
        etag: &ETag,
    ) -> Result<Box<dyn OriginBody>, OriginError> {
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
}

#[async_trait]
impl OriginBody for Resuming {
    async fn next(&mut self) -> Result<Option<&[u8]>, OriginError> {
        let piece = self.body.next().await?;
        if let Some(piece) = piece {
            self.rest.start += piece.len() as u64;
        }
        Ok(piece)
    }

    async fn resume(&mut self, error: &OriginError) -> Result<bool, OriginError> {
        let Some(reason) = retry_reason(error) else {
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
        Ok(true)
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Calls pass; `failures` in a row so far.
    Closed { failures: u32 },
    /// Calls fail fast until `until`.
    Open { until: Instant },
    /// One probe call is out; others fail fast until it settles.
    Probing,
}

struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    state: Mutex<State>,
    /// 0 closed, 1 probing, 2 open.
    gauge: IntGauge,
    rejected: IntCounter,
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, state: &mut State, to: State) {
        *state = to;
        self.gauge.set(match to {
            State::Closed { .. } => 0,
            State::Probing => 1,
            State::Open { .. } => 2,
        });
    }

    /// Lets a call through, or refuses it while the breaker is open.
    fn admit(&self, name: &str) -> Result<Ticket<'_>, OriginError> {
        if self.failures_to_open == 0 {
            return Ok(Ticket {
                breaker: None,
                probe: false,
            });
        }
        let mut state = self.state();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                self.set(&mut state, State::Probing);
                true
            }
            State::Open { .. } | State::Probing => {
                self.rejected.inc();
                return Err(OriginError::Unavailable(name.to_owned()));
            }
        };
        Ok(Ticket {
            breaker: Some(self),
            probe,
        })
    }
}

/// A call let through the breaker; its outcome is reported with [`Ticket::settle`]. A probe
/// dropped unsettled (its caller gave up) leaves the breaker ready for the next probe.
struct Ticket<'a> {
    breaker: Option<&'a Breaker>,
    probe: bool,
}

impl Ticket<'_> {
    fn settle(mut self, ok: bool) {
        let Some(breaker) = self.breaker.take() else {
            return;
        };
        let mut state = breaker.state();
        let open = State::Open {
            until: Instant::now() + breaker.open_for,
        };
        let next = match (*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < breaker.failures_to_open => {
                State::Closed { failures: failures + 1 }
            }
            (State::Closed { .. }, false) => open,
            // A probe failed; or the breaker opened while this call was out: it stays open.
            (_, false) if self.probe => open,
            (other, false) => other,
        };
        if next != *state {
            if matches!(next, State::Open { .. }) {
                tracing::warn!(open_for = ?breaker.open_for, "upstream circuit breaker open");
            }
            breaker.set(&mut state, next);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.filter(|_| self.probe) {
            let mut state = breaker.state();
            if *state == State::Probing {
                breaker.set(&mut state, State::Open { until: Instant::now() });
            }
        }
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

#[cfg(test)]
mod tests;
