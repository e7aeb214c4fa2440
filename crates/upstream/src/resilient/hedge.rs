//! Hedged chunk reads: a read that has not answered after a delay is sent again, and the first
//! answer wins. The delay is fixed, or follows a quantile of the upstream's recent answer times
//! (with the fixed delay as its floor). Hedges are capped at a share of reads.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::IntCounter;

use super::super::{Body, Origin, OriginError};
use shardcache_types::ETag;

/// Answer times remembered for the quantile.
const WINDOW: usize = 512;
/// Answer times needed before the quantile is trusted over the floor.
const MIN_SAMPLES: usize = 32;

/// When to hedge (from the upstream's `hedge` config).
#[derive(Clone, Copy, Debug)]
pub struct HedgePolicy {
    /// The delay; with `quantile`, its floor.
    pub after: Duration,
    /// Hedge after this quantile of recent answer times instead (e.g. 0.95).
    pub quantile: Option<f64>,
    /// Most hedges as a share of reads.
    pub max_share: f64,
}

/// One upstream's hedging: its policy, recent answer times and counts.
pub(super) struct Hedger {
    policy: HedgePolicy,
    /// Recent answer times, newest last.
    window: Mutex<VecDeque<Duration>>,
    reads: AtomicU64,
    hedged: AtomicU64,
    sent: IntCounter,
    won: IntCounter,
}

type Answer = Result<Body, OriginError>;

impl Hedger {
    pub(super) fn new(policy: HedgePolicy, sent: IntCounter, won: IntCounter) -> Self {
        Self {
            policy,
            window: Mutex::new(VecDeque::with_capacity(WINDOW)),
            reads: AtomicU64::new(0),
            hedged: AtomicU64::new(0),
            sent,
            won,
        }
    }

    /// How long a read waits for its answer before it is hedged.
    pub(super) fn delay(&self) -> Duration {
        let Some(q) = self.policy.quantile else {
            return self.policy.after;
        };
        let mut times: Vec<Duration> = self.window.lock().iter().copied().collect();
        if times.len() < MIN_SAMPLES {
            return self.policy.after;
        }
        let rank = ((times.len() - 1) as f64 * q).round() as usize;
        let (_, at, _) = times.select_nth_unstable(rank);
        (*at).max(self.policy.after)
    }

    fn record(&self, took: Duration) {
        let mut window = self.window.lock();
        if window.len() == WINDOW {
            window.pop_front();
        }
        window.push_back(took);
    }

    /// One read of `inner`, hedged when it is slow to answer and the cap allows.
    pub(super) async fn read(
        &self,
        inner: &Arc<dyn Origin>,
        bucket: &str,
        key: &str,
        span: &Range<u64>,
        etag: &ETag,
    ) -> Answer {
        let reads = self.reads.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        let first = inner.read(bucket, key, span.clone(), etag);
        tokio::pin!(first);
        if let Ok(answer) = tokio::time::timeout(self.delay(), &mut first).await {
            self.record(started.elapsed());
            return answer;
        }
        let hedged = self.hedged.load(Ordering::Relaxed);
        if (hedged + 1) as f64 > self.policy.max_share * reads as f64 {
            let answer = first.await;
            self.record(started.elapsed());
            return answer;
        }
        self.hedged.fetch_add(1, Ordering::Relaxed);
        self.sent.inc();
        let second = inner.read(bucket, key, span.clone(), etag);
        tokio::pin!(second);
        // The first success wins; the loser is dropped, and its connection with it.
        let answer = tokio::select! {
            answer = &mut first => match answer {
                Ok(body) => Ok(body),
                Err(_) => self.won(second.await),
            },
            answer = &mut second => match answer {
                Ok(body) => self.won(Ok(body)),
                Err(_) => first.await,
            },
        };
        self.record(started.elapsed());
        answer
    }

    fn won(&self, answer: Answer) -> Answer {
        if answer.is_ok() {
            self.won.inc();
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_follows_the_quantile_of_recent_answers_above_its_floor() {
        let policy = HedgePolicy {
            after: Duration::from_millis(5),
            quantile: Some(0.9),
            max_share: 0.05,
        };
        let hedger = Hedger::new(
            policy,
            IntCounter::new("s", "s").unwrap(),
            IntCounter::new("w", "w").unwrap(),
        );
        for _ in 0..MIN_SAMPLES - 1 {
            hedger.record(Duration::from_millis(40));
        }
        assert_eq!(hedger.delay(), Duration::from_millis(5), "too few answers: the floor");
        for i in 0..100 {
            hedger.record(Duration::from_millis(if i % 10 == 0 { 200 } else { 10 }));
        }
        let delay = hedger.delay();
        assert!(
            (Duration::from_millis(10)..=Duration::from_millis(200)).contains(&delay),
            "{delay:?}"
        );
        for _ in 0..WINDOW {
            hedger.record(Duration::from_millis(1));
        }
        assert_eq!(
            hedger.delay(),
            Duration::from_millis(5),
            "fast answers: the floor again"
        );
        assert_eq!(hedger.window.lock().len(), WINDOW);
    }
}
