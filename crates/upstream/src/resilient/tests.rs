//! The retry, resume, hedge and breaker logic against a scripted origin.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;

/// What the scripted origin does with one call.
enum Step {
    /// Fails with this error.
    Fail(OriginError),
    /// Answers after a delay with `bytes` of the span, then breaks the body with a reset.
    Break(Duration, usize),
    /// Answers after a delay with the whole span.
    Whole(Duration),
}

/// An origin that plays `steps` in order (whole answers once they run out) and records the
/// spans it was asked for. Byte `i` of the object is `i % 251`.
#[derive(Default)]
struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    asked: Mutex<Vec<Range<u64>>>,
}

fn byte(i: u64) -> u8 {
    (i % 251) as u8
}

fn meta(size: u64) -> ObjectMeta {
    ObjectMeta {
        size,
        etag: ETag::parse("\"v1\"").unwrap(),
        last_modified: std::time::SystemTime::UNIX_EPOCH,
        content_type: None,
        version_id: None,
        headers: Vec::new(),
        checksums: None,
    }
}

struct Piecewise {
    data: Vec<u8>,
    sent: bool,
    breaks: bool,
}

#[async_trait]
impl OriginBody for Piecewise {
    async fn next(&mut self) -> Result<Option<&[u8]>, OriginError> {
        if !self.sent {
            self.sent = true;
            return Ok(Some(&self.data));
        }
        match self.breaks {
            true => Err(OriginError::Unreachable("connection reset".into())),
            false => Ok(None),
        }
    }
}

impl Scripted {
    fn with(steps: Vec<Step>) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(steps.into()),
            ..Default::default()
        })
    }

    fn asked(&self) -> Vec<Range<u64>> {
        self.asked.lock().unwrap().clone()
    }

    async fn answer(&self, span: Range<u64>) -> Result<Body, OriginError> {
        self.asked.lock().unwrap().push(span.clone());
        let step = self.steps.lock().unwrap().pop_front();
        let (delay, len, breaks) = match step {
            Some(Step::Fail(e)) => return Err(e),
            Some(Step::Break(delay, n)) => (delay, n, true),
            Some(Step::Whole(delay)) => (delay, (span.end - span.start) as usize, false),
            None => (Duration::ZERO, (span.end - span.start) as usize, false),
        };
        tokio::time::sleep(delay).await;
        let data = (span.start..span.start + len as u64).map(byte).collect();
        Ok(Box::new(Piecewise {
            data,
            sent: false,
            breaks,
        }))
    }
}

#[async_trait]
impl Origin for Scripted {
    async fn head(&self, _bucket: &str, _key: &str) -> Result<ObjectMeta, OriginError> {
        self.answer(0..0).await.map(|_| meta(1000))
    }

    async fn read(&self, _bucket: &str, _key: &str, span: Range<u64>, _etag: &ETag) -> Result<Body, OriginError> {
        self.answer(span).await
    }
}

fn opts() -> Resilience {
    Resilience {
        attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        deadline: Duration::from_secs(5),
        floor: None,
        breaker: BreakerPolicy {
            failures: 2,
            error_rate: None,
            open_for: Duration::from_millis(200),
        },
        hedge: None,
    }
}

fn resilient(origin: &Arc<Scripted>, opts: Resilience) -> (Resilient, UpstreamMetrics) {
    let metrics = UpstreamMetrics::new(&shardcache_metrics::Registry::new());
    (Resilient::new("up", origin.clone(), opts, &metrics), metrics)
}

fn slow_down() -> OriginError {
    OriginError::Rejected {
        status: 503,
        body: bytes::Bytes::from_static(b"<Error><Code>SlowDown</Code></Error>"),
    }
}

/// Reads a body to its end the way a fill does: resuming where it breaks.
async fn drain(mut body: Box<dyn OriginBody>) -> Result<Vec<u8>, OriginError> {
    let mut out = Vec::new();
    loop {
        match body.next().await {
            Ok(Some(piece)) => out.extend_from_slice(piece),
            Ok(None) => return Ok(out),
            Err(e) => {
                if !body.resume(&e).await? {
                    return Err(e);
                }
            }
        }
    }
}

fn etag() -> ETag {
    ETag::parse("\"v1\"").unwrap()
}

#[tokio::test]
async fn transient_failures_are_retried_and_answers_about_the_object_are_not() {
    let origin = Scripted::with(vec![
        Step::Fail(slow_down()),
        Step::Fail(OriginError::TimedOut("read".into())),
        Step::Whole(Duration::ZERO),
        Step::Fail(OriginError::NoSuchKey),
    ]);
    let (up, metrics) = resilient(&origin, opts());
    let body = up.read("b", "k", 0..100, &etag()).await.unwrap();
    assert_eq!(drain(body).await.unwrap(), (0..100).map(byte).collect::<Vec<_>>());
    assert!(matches!(up.head("b", "k").await, Err(OriginError::NoSuchKey)));
    assert_eq!(origin.asked().len(), 4, "three tries of the read, one of the HEAD");
    let retries = |reason| metrics.retries.with_label_values(&["up", reason]).get();
    assert_eq!((retries("throttled"), retries("timeout")), (1, 1));
}

#[tokio::test]
async fn a_call_gives_up_after_its_attempts() {
    let fail = || Step::Fail(OriginError::Unreachable("refused".into()));
    let origin = Scripted::with(vec![fail(), fail(), fail(), Step::Whole(Duration::ZERO)]);
    let (up, _) = resilient(
        &origin,
        Resilience {
            breaker: BreakerPolicy {
                failures: 0,
                ..opts().breaker
            },
            ..opts()
        },
    );
    assert!(matches!(up.head("b", "k").await, Err(OriginError::Unreachable(_))));
    assert_eq!(origin.asked().len(), 3);
}

#[tokio::test]
async fn a_broken_body_resumes_from_its_byte_and_reads_whole() {
    let origin = Scripted::with(vec![Step::Break(Duration::ZERO, 30), Step::Break(Duration::ZERO, 20)]);
    let (up, metrics) = resilient(&origin, opts());
    let body = up.read("b", "k", 100..200, &etag()).await.unwrap();
    assert_eq!(drain(body).await.unwrap(), (100..200).map(byte).collect::<Vec<_>>());
    assert_eq!(origin.asked(), vec![100..200, 130..200, 150..200]);
    assert_eq!(metrics.retries.with_label_values(&["up", "network"]).get(), 2);
}

#[tokio::test]
async fn a_body_that_keeps_breaking_ends_in_its_error() {
    let origin = Scripted::with((0..5).map(|_| Step::Break(Duration::ZERO, 10)).collect());
    let (up, _) = resilient(&origin, opts());
    let body = up.read("b", "k", 0..100, &etag()).await.unwrap();
    assert!(matches!(drain(body).await, Err(OriginError::Unreachable(_))));
    assert_eq!(
        origin.asked(),
        vec![0..100, 10..100, 20..100],
        "two resumes with 3 attempts"
    );
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_probes_and_closes() {
    let fail = || Step::Fail(OriginError::Unreachable("refused".into()));
    let origin = Scripted::with((0..9).map(|_| fail()).collect());
    let (up, metrics) = resilient(&origin, opts());
    let state = || metrics.breaker.with_label_values(&["up"]).get();
    for _ in 0..2 {
        assert!(matches!(up.head("b", "k").await, Err(OriginError::Unreachable(_))));
    }
    assert_eq!(
        (origin.asked().len(), state()),
        (6, 2),
        "two calls of 3 tries, then open"
    );
    assert!(matches!(up.head("b", "k").await, Err(OriginError::Unavailable(_))));
    assert_eq!(origin.asked().len(), 6, "open: no call made");
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The probe fails (its retries included) and reopens the breaker.
    assert!(up.head("b", "k").await.is_err());
    assert_eq!(state(), 2);
    assert!(matches!(up.head("b", "k").await, Err(OriginError::Unavailable(_))));
    tokio::time::sleep(Duration::from_millis(250)).await;
    up.head("b", "k").await.unwrap();
    assert_eq!(state(), 0);
    let rejected = metrics.breaker_rejections.with_label_values(&["up"]).get();
    assert_eq!(rejected, 2);
}

#[tokio::test]
async fn a_slow_read_is_hedged_and_the_faster_answer_wins() {
    let origin = Scripted::with(vec![Step::Whole(Duration::from_secs(5)), Step::Whole(Duration::ZERO)]);
    let hedge = Some(HedgePolicy {
        after: Duration::from_millis(20),
        quantile: None,
        max_share: 1.0,
    });
    let (up, metrics) = resilient(&origin, Resilience { hedge, ..opts() });
    let started = Instant::now();
    let body = up.read("b", "k", 0..50, &etag()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "waited for the slow answer");
    assert_eq!(drain(body).await.unwrap(), (0..50).map(byte).collect::<Vec<_>>());
    let hedges = |outcome| metrics.hedges.with_label_values(&["up", outcome]).get();
    assert_eq!((hedges("sent"), hedges("won")), (1, 1));
}

#[tokio::test]
async fn hedges_stay_within_their_share_of_reads() {
    let slow = || Step::Whole(Duration::from_millis(60));
    let origin = Scripted::with((0..10).map(|_| slow()).collect());
    let hedge = Some(HedgePolicy {
        after: Duration::from_millis(5),
        quantile: None,
        max_share: 0.25,
    });
    let (up, metrics) = resilient(&origin, Resilience { hedge, ..opts() });
    for _ in 0..8 {
        drain(up.read("b", "k", 0..10, &etag()).await.unwrap()).await.unwrap();
    }
    let sent = metrics.hedges.with_label_values(&["up", "sent"]).get();
    assert_eq!(sent, 2, "a quarter of 8 reads");
}

#[test]
fn backoff_stays_below_its_growing_ceiling() {
    let origin = Scripted::with(Vec::new());
    let (up, _) = resilient(
        &origin,
        Resilience {
            max_delay: Duration::from_millis(3),
            ..opts()
        },
    );
    for retry in 1..=30 {
        let ceiling = Duration::from_millis(1 << (retry - 1).min(20)).min(Duration::from_millis(3));
        assert!(up.0.backoff(retry) <= ceiling, "retry {retry}");
    }
}

#[test]
fn a_meter_does_not_count_the_time_its_reader_is_excused() {
    let floor = Floor {
        bytes_per_second: 1 << 20,
        window: Duration::from_millis(50),
    };
    let (mut judged, mut excused) = (floor.meter(), floor.meter());
    std::thread::sleep(Duration::from_millis(60));
    // A window has passed with one byte: below the floor, unless the reader held it back.
    excused.excuse(Duration::from_millis(60));
    assert!(judged.count(1).is_some(), "one byte in 60 ms is below 1 MiB/s");
    assert_eq!(excused.count(1), None, "the reader's 60 ms is not the source's");
    // An excuse never reaches past now: the next window is judged again.
    excused.excuse(Duration::from_secs(3600));
    std::thread::sleep(Duration::from_millis(60));
    assert!(excused.count(1).is_some());
}
