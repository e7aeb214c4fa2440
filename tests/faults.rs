//! Upstream faults, injected by an origin that misbehaves on cue.
//!
//! For every fault the client gets the whole object, an S3 error, or a correct prefix and a
//! closed connection, never wrong bytes; nothing partial is cached; the next read is exact; and
//! the give-up time stays within the configured bounds.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, Proxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Chunk size of the proxies here; objects are 3 chunks less a bit.
const CHUNK: u64 = 64 << 10;
const SIZE: u64 = 3 * CHUNK - 1000;

/// Byte `i` of every object.
fn byte(i: u64) -> u8 {
    (i % 251) as u8 ^ (i >> 16) as u8
}

fn object() -> Vec<u8> {
    (0..SIZE).map(byte).collect()
}

/// What the origin does with one GET.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Closes the connection without answering.
    Refuse,
    /// Waits `STALL` before the header.
    StallHead,
    /// Sends the header and half the body, then waits `STALL`.
    StallBody,
    /// Sends the header and half the body, then resets the connection.
    Reset,
    /// Sends the header and half the body, then closes the connection.
    Short,
    /// Answers with half the body, validly framed (its Content-Length says half) under a
    /// Content-Range of the whole span, and keeps the connection.
    Truncated,
    /// Sends the header, then the body a byte every 200 ms: each read arrives well within the
    /// read timeout, so only the rate floor can cut it.
    Drip,
    /// Sends the body and 100 bytes more than its Content-Length.
    Long,
    /// Answers 503 SlowDown.
    SlowDown,
    /// Answers 500 InternalError.
    ServerError,
    /// Answers 412: the object changed (the read is pinned with If-Match).
    Changed,
    /// Answers 206 with a Content-Range one byte off.
    WrongRange,
    /// Answers 200 with the whole object to a ranged GET.
    Whole,
}

/// Faults still to play, by key and chunk.
type FaultTable = HashMap<(String, u64), VecDeque<Fault>>;

/// How long a stall lasts: well past the proxies' 1 s read timeout.
/// How long a stall lasts: far longer than anything shardcache should wait, so that a read that
/// ends within half of it proves a timeout cut the stall (without timing shardcache itself).
const STALL: Duration = Duration::from_secs(60);

/// An origin serving objects of `SIZE` bytes (ETag "v1") whose GETs misbehave on cue: faults
/// queued for (key, chunk) are played in order, one per GET whose range starts in that chunk
/// (so a resumed read of the rest of a chunk meets the chunk's next fault).
#[derive(Clone, Default)]
struct FaultOrigin {
    faults: Arc<Mutex<FaultTable>>,
    /// Every GET: key and range.
    gets: Arc<Mutex<Vec<(String, String)>>>,
    /// When set, HEADs are answered with this status (and no body).
    head_status: Arc<Mutex<Option<u16>>>,
    /// The ETag of every object.
    etag: &'static str,
}

impl FaultOrigin {
    async fn start() -> (SocketAddr, Self) {
        Self::start_as("v1").await
    }

    /// An origin whose objects have the ETag `etag` (same bytes: a replica).
    async fn start_as(etag: &'static str) -> (SocketAddr, Self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = Self {
            etag,
            ..Self::default()
        };
        let serving = origin.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(stream));
            }
        });
        (addr, origin)
    }

    /// Queues `faults` for the GETs of `key` whose range starts in chunk `chunk`.
    fn inject(&self, key: &str, chunk: u64, faults: &[Fault]) {
        let mut table = self.faults.lock().unwrap();
        table.entry((key.to_owned(), chunk)).or_default().extend(faults);
    }

    fn gets(&self, key: &str) -> Vec<String> {
        let gets = self.gets.lock().unwrap();
        gets.iter().filter(|(k, _)| k == key).map(|(_, r)| r.clone()).collect()
    }

    async fn serve(self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        loop {
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
                head.push(line);
            }
            let mut words = head[0].split(' ');
            let (method, path) = (words.next().unwrap().to_owned(), words.next().unwrap());
            let key = path.trim_start_matches("/b/").to_owned();
            let common = format!(
                "ETag: \"{}\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n",
                self.etag
            );
            if method == "HEAD" {
                let resp = match *self.head_status.lock().unwrap() {
                    Some(status) => format!("HTTP/1.1 {status} Failing\r\nContent-Length: 0\r\n\r\n"),
                    None => format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n{common}\r\n"),
                };
                stream.get_mut().write_all(resp.as_bytes()).await.unwrap();
                continue;
            }
            let range = head
                .iter()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("range: bytes=")
                        .map(|r| r.trim().to_owned())
                })
                .unwrap();
            self.gets.lock().unwrap().push((key.clone(), range.clone()));
            let (a, b) = range.split_once('-').unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            let b = b.min(SIZE - 1);
            let fault = self
                .faults
                .lock()
                .unwrap()
                .get_mut(&(key.clone(), a / CHUNK))
                .and_then(VecDeque::pop_front);
            let body: Vec<u8> = (a..=b).map(byte).collect();
            let len = body.len();
            let ok = format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {len}\r\nContent-Range: bytes {a}-{b}/{SIZE}\r\n{common}\r\n");
            let error = |status: &str, code: &str| {
                let xml = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code></Error>");
                format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{xml}", xml.len())
            };
            let out = stream.get_mut();
            let sent = match fault {
                None => async {
                    out.write_all(ok.as_bytes()).await?;
                    out.write_all(&body).await
                }
                .await,
                Some(Fault::Refuse) => return,
                Some(Fault::StallHead) => {
                    tokio::time::sleep(STALL).await;
                    return;
                }
                Some(Fault::StallBody | Fault::Reset | Fault::Short) => {
                    let _ = out.write_all(ok.as_bytes()).await;
                    let _ = out.write_all(&body[..len / 2]).await;
                    let _ = out.flush().await;
                    match fault {
                        Some(Fault::StallBody) => tokio::time::sleep(STALL).await,
                        Some(Fault::Reset) => {
                            let _ = out.set_zero_linger();
                        }
                        _ => {}
                    }
                    return;
                }
                Some(Fault::Truncated) => async {
                    let half = format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{SIZE}\r\n{common}\r\n", len / 2);
                    out.write_all(half.as_bytes()).await?;
                    out.write_all(&body[..len / 2]).await
                }
                .await,
                Some(Fault::Drip) => {
                    let _ = out.write_all(ok.as_bytes()).await;
                    for b in &body {
                        if out.write_all(&[*b]).await.is_err() || out.flush().await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(())
                }
                Some(Fault::Long) => async {
                    out.write_all(ok.as_bytes()).await?;
                    out.write_all(&body).await?;
                    out.write_all(&[b'!'; 100]).await
                }
                .await,
                Some(Fault::SlowDown) => out.write_all(error("503 Slow Down", "SlowDown").as_bytes()).await,
                Some(Fault::ServerError) => out.write_all(error("500 Internal Server Error", "InternalError").as_bytes()).await,
                Some(Fault::Changed) => out.write_all(error("412 Precondition Failed", "PreconditionFailed").as_bytes()).await,
                Some(Fault::WrongRange) => async {
                    let wrong = format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {len}\r\nContent-Range: bytes {}-{}/{SIZE}\r\n{common}\r\n", a + 1, b + 1);
                    out.write_all(wrong.as_bytes()).await?;
                    out.write_all(&body).await
                }
                .await,
                Some(Fault::Whole) => async {
                    let all = object();
                    let whole = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n{common}\r\n");
                    out.write_all(whole.as_bytes()).await?;
                    out.write_all(&all).await
                }
                .await,
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

/// A proxy in front of `origin`: 1 s timeouts, 3 attempts, a rate floor measured over 1 s, and
/// `breaker` failures to open.
fn proxy(origin: SocketAddr, breaker: u32, disk: Option<&std::path::Path>) -> Proxy {
    proxy_with(origin, breaker, disk, "")
}

/// [`proxy`], with `extra` YAML at the end of the file (after `default_upstream`).
fn proxy_with(origin: SocketAddr, breaker: u32, disk: Option<&std::path::Path>, extra: &str) -> Proxy {
    let disk = match disk {
        Some(p) => format!(
            "  disk:\n    path: {0}\n    capacity_bytes: 67108864\n    write_queue_bytes: 131072\n    encryption: none\n",
            p.display()
        ),
        None => "  disk: null\n".to_owned(),
    };
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\ncache:\n  chunk_size: {CHUNK}\n  memory_bytes: 33554432\n{disk}\
         upstreams:\n  up:\n    kind: s3\n    endpoint: http://{origin}\n    read_timeout_seconds: 1\n\
         \x20   connect_timeout_seconds: 1\n    credentials: {{source: anonymous}}\n\
         \x20   retry: {{attempts: 3, base_delay_ms: 10, max_delay_ms: 50, floor_window_seconds: 1}}\n\
         \x20   breaker: {{failures: {breaker}, open_seconds: 2}}\ndefault_upstream: up\n{extra}",
        free_port(),
        free_port()
    );
    Proxy::start_yaml(&yaml)
}

/// What a client got: status, declared length, and the body bytes that arrived before the
/// connection ended (cleanly or not).
struct Got {
    status: u16,
    declared: Option<u64>,
    body: Vec<u8>,
    took: Duration,
    /// Marked as served under stale-if-error.
    stale: bool,
}

async fn fetch(proxy: &Proxy, key: &str) -> Got {
    fetch_path(proxy, &format!("/b/{key}")).await
}

async fn fetch_path(proxy: &Proxy, path: &str) -> Got {
    fetch_with(proxy, path, "").await
}

/// [`fetch_path`] with `headers` (each line ending in CRLF) added to the request.
async fn fetch_with(proxy: &Proxy, path: &str, headers: &str) -> Got {
    let started = Instant::now();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut piece = [0u8; 64 << 10];
    let read = async {
        loop {
            match s.read(&mut piece).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&piece[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the proxy answered within 30 s");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response header");
    let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let stale = head.contains("x-shardcache-stale: revalidation-failed");
    let declared = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap());
    Got {
        status,
        declared,
        body: buf[split + 4..].to_vec(),
        took: started.elapsed(),
        stale,
    }
}

/// Sends `request` (whole, with `Connection: close`) on a new connection and returns all the
/// proxy sent back before closing it, within 30 s.
async fn exchange(proxy: &Proxy, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got))
        .await
        .expect("the connection closed within 30 s")
        .unwrap();
    got
}

/// Checks the never-wrong rule: a 200 carries a correct prefix of the object (all of it when
/// `whole`); anything else is an S3 error document.
fn check(got: &Got, what: &str, whole: bool) {
    let want = object();
    match got.status {
        200 => {
            assert_eq!(got.declared, Some(SIZE), "{what}");
            assert!(got.body.len() as u64 <= SIZE, "{what}: more bytes than the object");
            assert!(got.body == want[..got.body.len()], "{what}: wrong bytes");
            if whole {
                assert_eq!(got.body.len() as u64, SIZE, "{what}: the read did not complete");
            }
        }
        status => {
            assert!(!whole, "{what}: answered {status}");
            let text = String::from_utf8_lossy(&got.body);
            assert!(text.contains("<Error>"), "{what}: {status} without an S3 error: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_or_resumed_and_the_read_completes() {
    let (addr, origin) = FaultOrigin::start().await;
    let proxy = proxy(addr, 0, None);
    use Fault::*;
    let cases = [
        Refuse,
        StallHead,
        StallBody,
        Reset,
        Short,
        Truncated,
        Drip,
        SlowDown,
        ServerError,
        WrongRange,
        Whole,
    ];
    for (i, fault) in cases.into_iter().enumerate() {
        // The fault hits the first chunk (the GET that opens the object) once, and the second
        // chunk twice in a row.
        let key = format!("t{i}");
        origin.inject(&key, 0, &[fault]);
        origin.inject(&key, 1, &[fault, fault]);
        let got = fetch(&proxy, &key).await;
        check(&got, &format!("{fault:?}"), true);
        // Each stall is cut at the 1 s read timeout (about 3 s in all); one not cut would take
        // a whole STALL.
        assert!(got.took < STALL / 2, "{fault:?}: took {:?}", got.took);
        let gets = origin.gets(&key);
        assert_eq!(
            gets.len(),
            2 + 3 + 1,
            "{fault:?}: chunk 0 tried twice, chunk 1 three times: {gets:?}"
        );
        if matches!(fault, StallBody | Short | Truncated | Drip) {
            // Resumed from the byte where the body broke, not from the chunk's start. (A reset
            // may discard what had arrived but was not read yet, so it can resume anywhere.)
            let mid_chunk = |r: &String| r.split('-').next().unwrap().parse::<u64>().unwrap() % CHUNK != 0;
            assert_eq!(gets.iter().filter(|r| mid_chunk(r)).count(), 3, "{fault:?}: {gets:?}");
        }
        let again = fetch(&proxy, &key).await;
        check(&again, &format!("{fault:?}, cached"), true);
        assert_eq!(origin.gets(&key).len(), 6, "{fault:?}: the second read was not a hit");
    }
    let retries = proxy.metric("shardcache_upstream_retries_total").await;
    // Two retries of chunk 1 for each fault, one of chunk 0 for the nine a GET that opens an
    // object retries (a wrong range or a whole object there is taken as metadata only, and the
    // chunk read again).
    assert_eq!(retries, 31.0, "retries counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_a_retry_cannot_mend_end_in_an_error_or_a_prefix_and_cache_nothing() {
    let (addr, origin) = FaultOrigin::start().await;
    let proxy = proxy(addr, 0, None);
    use Fault::*;
    for (i, fault) in [Changed, Long].into_iter().enumerate() {
        // On the second chunk, so the client already has a 200 header and the first chunk.
        let key = format!("p{i}");
        origin.inject(&key, 1, &[fault]);
        let got = fetch(&proxy, &key).await;
        let what = format!("{fault:?}");
        check(&got, &what, false);
        if !matches!(fault, Long) {
            assert!(
                (got.body.len() as u64) < SIZE,
                "{what}: a failed chunk must end the response early"
            );
        }
        // Whatever happened, the next read is exact and the chunk was not cached from the fault.
        let again = fetch(&proxy, &key).await;
        check(&again, &format!("{what}, next read"), true);
    }
    // The over-long body's connection was not reused: every later read through the pool is
    // exact (a reused connection would start the next answer with the extra bytes).
    for i in 0..4 {
        let got = fetch(&proxy, &format!("after{i}")).await;
        check(&got, "a read after the long body", true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_fails_misses_fast_and_keeps_serving_hits() {
    let (addr, origin) = FaultOrigin::start().await;
    let proxy = proxy(addr, 2, None);
    check(&fetch(&proxy, "hot").await, "warming", true);
    for i in 0..2 {
        origin.inject(&format!("cold{i}"), 0, &[Fault::ServerError; 3]);
        let got = fetch(&proxy, &format!("cold{i}")).await;
        assert_eq!(got.status, 500, "the upstream's own error, after its retries");
    }
    let before = origin.gets.lock().unwrap().len();
    let got = fetch(&proxy, "cold-while-open").await;
    assert_eq!(got.status, 503, "{}", String::from_utf8_lossy(&got.body));
    assert!(String::from_utf8_lossy(&got.body).contains("<Code>SlowDown</Code>"));
    assert_eq!(origin.gets.lock().unwrap().len(), before, "no upstream call while open");
    check(&fetch(&proxy, "hot").await, "a hit while the breaker is open", true);
    assert_eq!(
        proxy.metric("shardcache_upstream_breaker_state{upstream=\"up\"}").await,
        2.0
    );
    // After open_seconds, a probe goes through, succeeds, and closes the breaker.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    check(&fetch(&proxy, "cold-after").await, "after the breaker closed", true);
    assert_eq!(
        proxy.metric("shardcache_upstream_breaker_state{upstream=\"up\"}").await,
        0.0
    );
    assert!(proxy.metric("shardcache_upstream_breaker_rejections_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_stalled_on_the_upstream_never_hold_back_another_miss() {
    let (addr, origin) = FaultOrigin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A write budget of two chunks, and four fills stalled mid-body (each resumed twice, and
    // stalled again, for about 3 s in all).
    let proxy = proxy(addr, 0, Some(dir.path()));
    let mut stalled = Vec::new();
    for i in 0..4 {
        let key = format!("slow{i}");
        origin.inject(&key, 0, &[Fault::StallBody; 3]);
        let proxy_addr = proxy.addr;
        stalled.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(proxy_addr).await.unwrap();
            let req = format!("GET /b/{key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = fetch(&proxy, "unrelated").await;
    check(&got, "a cold read beside stalled fills", true);
    // Held back behind the stalled fills, it would have ended after them (their three reads
    // are each cut at the 1 s read timeout).
    assert!(
        !stalled.iter().any(|task| task.is_finished()),
        "the cold read ended after a stalled fill gave up ({:?})",
        got.took
    );
    for task in stalled {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_expired_metadata_only_while_the_upstream_fails() {
    let (addr, origin) = FaultOrigin::start().await;
    // Bucket `b` may serve metadata up to 2 s past its 1 s TTL when revalidation fails; `c`,
    // the same upstream bucket, may not.
    let buckets = "buckets:\n  - {name: b, upstream: up, metadata_ttl_seconds: 1, stale_if_error_seconds: 2}\n  \
                   - {name: c, upstream: up, upstream_bucket: b, metadata_ttl_seconds: 1}\n";
    let proxy = proxy_with(addr, 0, None, buckets);
    for path in ["/b/s", "/c/s"] {
        check(&fetch_path(&proxy, path).await, "warming", true);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    *origin.head_status.lock().unwrap() = Some(503);
    let stale = fetch_path(&proxy, "/b/s").await;
    check(&stale, "stale-if-error", true);
    assert!(stale.stale, "a stale answer must say so");
    let strict = fetch_path(&proxy, "/c/s").await;
    assert_eq!(strict.status, 503, "a bucket without stale-if-error fails");
    assert_eq!(
        proxy.metric("shardcache_stale_responses_total{upstream=\"up\"}").await,
        1.0
    );
    // A 404 is an answer about the object, not a failure: never covered by stale metadata.
    *origin.head_status.lock().unwrap() = Some(404);
    assert_eq!(fetch_path(&proxy, "/b/s").await.status, 404);
    // Past TTL + stale window, a failing upstream is an error again.
    check(&fetch_path(&proxy, "/b/t").await, "warming t", true);
    *origin.head_status.lock().unwrap() = Some(503);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let expired = fetch_path(&proxy, "/b/t").await;
    assert_eq!(expired.status, 503);
    assert!(!expired.stale);
    // And once the upstream answers again, answers are fresh and unmarked.
    *origin.head_status.lock().unwrap() = None;
    let fresh = fetch_path(&proxy, "/b/t").await;
    check(&fresh, "after recovery", true);
    assert!(!fresh.stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_bucket_is_read_from_its_fallback_without_mixing_versions() {
    let (primary_addr, primary) = FaultOrigin::start().await;
    // The replica holds the same bytes under its own ETags, as another provider would.
    let (replica_addr, replica) = FaultOrigin::start_as("r1").await;
    let upstream = |name: &str, addr: SocketAddr| {
        format!(
            "  {name}:\n    kind: s3\n    endpoint: http://{addr}\n    read_timeout_seconds: 1\n    \
             credentials: {{source: anonymous}}\n    retry: {{attempts: 2, base_delay_ms: 10}}\n"
        )
    };
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\ncache:\n  chunk_size: {CHUNK}\n  memory_bytes: 33554432\n  disk: null\n\
         upstreams:\n{}{}buckets:\n  - {{name: b, upstream: up, fallback: {{upstream: replica}}}}\n",
        free_port(),
        free_port(),
        upstream("up", primary_addr),
        upstream("replica", replica_addr)
    );
    let proxy = Proxy::start_yaml(&yaml);
    // The primary fails the GET that opens the object (both tries): the replica answers, and
    // the later chunks, pinned to the replica's ETag, come from it too.
    primary.inject("f", 0, &[Fault::ServerError; 2]);
    let got = fetch(&proxy, "f").await;
    check(&got, "read through the fallback", true);
    assert_eq!(
        replica.gets("f").len(),
        3,
        "every chunk from the replica: {:?}",
        replica.gets("f")
    );
    assert!(
        proxy
            .metric("shardcache_fallback_reads_total{upstream=\"replica\"}")
            .await
            >= 3.0
    );
    // Cached under the replica's ETag: read again with nothing asked of either upstream.
    let (before_primary, before_replica) = (primary.gets("f").len(), replica.gets("f").len());
    check(&fetch(&proxy, "f").await, "cached from the fallback", true);
    assert_eq!(
        (primary.gets("f").len(), replica.gets("f").len()),
        (before_primary, before_replica)
    );
    // A healthy primary serves its own objects; the replica is not asked.
    check(&fetch(&proxy, "g").await, "from the primary", true);
    assert!(replica.gets("g").is_empty());
    // A 404 from the primary is its answer, not a reason to ask the replica.
    *primary.head_status.lock().unwrap() = Some(404);
    let head = proxy.client().head_object().bucket("b").key("h").send().await;
    assert!(head.is_err(), "a missing object must stay missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_is_given_up_on_within_the_configured_bounds() {
    let (addr, origin) = FaultOrigin::start().await;
    let proxy = proxy(addr, 0, None);
    // Three tries, each cut at the 1 s read timeout, with backoffs under 50 ms: about 3 s. A
    // stall not cut would take a whole STALL.
    let bound = STALL / 2;
    // Before the answer started: an S3 error naming the timeout.
    origin.inject("silent", 0, &[Fault::StallHead; 3]);
    let got = fetch(&proxy, "silent").await;
    assert_eq!(got.status, 504, "{}", String::from_utf8_lossy(&got.body));
    assert!(String::from_utf8_lossy(&got.body).contains("<Code>GatewayTimeout</Code>"));
    assert!(got.took < bound, "gave up after {:?}", got.took);
    // After it started: a correct prefix and a closed connection, in the same bound.
    origin.inject("stalls", 1, &[Fault::StallBody; 3]);
    let got = fetch(&proxy, "stalls").await;
    check(&got, "a chunk that stalls on every try", false);
    assert!((got.body.len() as u64) < SIZE);
    assert!(got.took < bound, "gave up after {:?}", got.took);
    // Nothing partial was kept: both read whole now that the upstream answers.
    check(&fetch(&proxy, "silent").await, "after the stalls", true);
    check(&fetch(&proxy, "stalls").await, "after the stalls", true);
    assert_eq!(
        proxy.metric("shardcache_chunk_fills_total{result=\"failed\"}").await,
        1.0,
        "the stalled chunk's fill failed and was not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_read_from_a_dripping_upstream_is_cut_at_the_floor() {
    let (addr, origin) = FaultOrigin::start().await;
    // An uncached bucket: its GETs pass through to the upstream as they are.
    let live = "buckets:\n  - {name: live, upstream: up, upstream_bucket: b, cache: none}\n";
    let proxy = proxy_with(addr, 0, None, live);
    origin.inject("drip", 0, &[Fault::Drip]);
    let range = format!("Range: bytes=0-{}\r\n", CHUNK - 1);
    let started = Instant::now();
    let req = format!("GET /live/drip HTTP/1.1\r\nHost: x\r\n{range}Connection: close\r\n\r\n");
    // A byte every 200 ms is far below the floor (64 KiB/s over 1 s): the read is cut after
    // about a second. Not cut, it would take hours.
    let got = exchange(&proxy, &req).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        started.elapsed()
    );
    // The few bytes that came may not have reached the client (small writes wait to go out
    // with the next), so it sees a closed connection: with a correct prefix, if anything.
    if let Some(split) = got.windows(4).position(|w| w == b"\r\n\r\n") {
        let body = &got[split + 4..];
        assert!(got.starts_with(b"HTTP/1.1 206"), "{}", String::from_utf8_lossy(&got));
        assert!(body == &object()[..body.len()] && (body.len() as u64) < CHUNK);
    }
    // A whole answer on the same path is not cut.
    let got = fetch_with(&proxy, "/live/whole", &range).await;
    assert_eq!((got.status, got.body.len() as u64), (206, CHUNK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_judges_the_upstream_not_a_client_that_reads_slowly() {
    let s3 = common::S3Server::start().await;
    s3.bucket("live");
    let want = common::data(64 << 20, 9);
    s3.put("live", "big", want.clone()).await;
    // A floor of 1 MiB/s over 1 s, which the upstream meets with ease; the client does not.
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\ncache:\n  memory_bytes: 33554432\n  disk: null\n\
         upstreams:\n  up:\n    kind: s3\n    endpoint: http://{}\n    credentials:\n      source: static\n      \
         access_key_id: {}\n      secret_access_key: {}\n\
         \x20   retry: {{floor_bytes_per_second: 1048576, floor_window_seconds: 1}}\n\
         default_upstream: up\nbuckets:\n  - {{name: live, upstream: up, cache: none}}\n",
        free_port(),
        free_port(),
        s3.addr,
        common::ACCESS_KEY,
        common::SECRET_KEY,
    );
    let proxy = Proxy::start_yaml(&yaml);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = "GET /live/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    // Far more than the socket buffers on the way hold, read 256 KiB at a time with 1.5 s
    // pauses at first: each window then moves well under 1 MiB/s, all for the client's pace.
    let mut got = Vec::new();
    let mut piece = vec![0u8; 256 << 10];
    for _ in 0..4 {
        let mut taken = 0;
        while taken < piece.len() {
            match s.read(&mut piece[taken..]).await.unwrap() {
                0 => break,
                n => taken += n,
            }
        }
        got.extend_from_slice(&piece[..taken]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got))
        .await
        .expect("the rest within 30 s")
        .unwrap();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got[..split])
    );
    assert_eq!(got.len() - split, want.len(), "the read was cut");
    assert!(got[split..] == want[..], "wrong bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_copy_that_keeps_its_answer_alive_with_spaces_is_not_cut() {
    // S3 answers a long CopyObject (and CompleteMultipartUpload) 200 at once and sends a space
    // now and then until its result: a slow answer by design, not a dripping one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let xml = "<CopyObjectResult><ETag>\"v2\"</ETag></CopyObjectResult>";
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        while stream.read_line(&mut line).await.unwrap() > 2 {
            line.clear();
        }
        let spaces = 8;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", spaces + xml.len());
        let out = stream.get_mut();
        out.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..spaces {
            out.write_all(b" ").await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        out.write_all(xml.as_bytes()).await.unwrap();
    });
    // The floor (64 KiB/s over 1 s) would cut this answer after a second.
    let proxy = proxy(addr, 0, None);
    let req = "PUT /b/copy HTTP/1.1\r\nHost: x\r\nx-amz-copy-source: /b/original\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let got = exchange(&proxy, req).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with(xml), "the copy's answer was cut: {got}");
}
