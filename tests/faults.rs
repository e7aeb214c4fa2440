//! Upstream faults, injected with a deliberately broken origin.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{get, Proxy, ProxyOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SIZE: usize = 100_000;

/// A request's head, line by line (`None` once the client hung up).
async fn read_head(stream: &mut BufReader<tokio::net::TcpStream>) -> Option<Vec<String>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push(line);
    }
}

/// How the origin misbehaves on GET (it answers HEAD honestly).
#[derive(Clone, Copy)]
enum Fault {
    /// Sends half of every (ranged) body, then hangs up.
    Truncate,
    /// Sends the header and half the body, then stalls with the connection open; for
    /// `/b/silent`, stalls before the header.
    Stall,
}

/// A deliberately broken origin; returns its address and a count of the GETs it received.
async fn faulty_origin(fault: Fault) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gets = Arc::new(AtomicUsize::new(0));
    let count = gets.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    let common = "ETag: \"v1\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n";
                    if head[0].starts_with("HEAD") {
                        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n{common}\r\n");
                        stream.get_mut().write_all(resp.as_bytes()).await.unwrap();
                        continue;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let silent = matches!(fault, Fault::Stall) && head[0].contains("/b/silent");
                    if !silent {
                        let range = head
                            .iter()
                            .find_map(|l| {
                                l.to_lowercase()
                                    .strip_prefix("range: bytes=")
                                    .map(|r| r.trim().to_owned())
                            })
                            .unwrap();
                        let (a, b) = range.split_once('-').unwrap();
                        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                        let b = b.min(SIZE - 1); // as S3 does, a range past the end is clipped
                        let len = b - a + 1;
                        let resp = format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {len}\r\nContent-Range: bytes {a}-{b}/{SIZE}\r\n{common}\r\n");
                        let _ = stream.get_mut().write_all(resp.as_bytes()).await;
                        let _ = stream.get_mut().write_all(&vec![b'x'; len / 2]).await;
                    }
                    if matches!(fault, Fault::Stall) {
                        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                    }
                    return; // hang up mid-body
                }
            });
        }
    });
    (addr, gets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_upstream_body_is_never_cached_or_passed_off_as_whole() {
    let (origin, gets) = faulty_origin(Fault::Truncate).await;
    let proxy = Proxy::start(
        origin,
        ProxyOptions {
            chunk_size: 1 << 20,
            ..Default::default()
        },
    );
    for attempt in 1..=2 {
        let r = get(proxy.addr, "/b/k", &[]).await;
        let declared: Option<usize> = r.header("content-length").and_then(|v| v.parse().ok());
        if r.status == 200 {
            assert_eq!(declared, Some(SIZE));
            assert!(r.body.len() < SIZE, "a short upstream body must end the response early");
        } else {
            assert_eq!(r.status, 502, "attempt {attempt}");
        }
        assert_eq!(
            gets.load(Ordering::SeqCst),
            attempt,
            "attempt {attempt} must go upstream again"
        );
    }
    assert_eq!(
        proxy.metric("shardcache_chunk_fills_total{result=\"failed\"}").await,
        2.0
    );
    assert_eq!(
        proxy.metric("shardcache_chunk_fills_total{result=\"complete\"}").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_is_abandoned_after_the_read_timeout() {
    let (origin, _) = faulty_origin(Fault::Stall).await;
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\ncache:\n  chunk_size: 1048576\n  memory_bytes: 33554432\n  disk: null\n\
         upstreams:\n  up:\n    kind: s3\n    endpoint: http://{origin}\n    read_timeout_seconds: 1\n\
         \x20   credentials: {{source: anonymous}}\ndefault_upstream: up\n",
        common::free_port(),
        common::free_port()
    );
    let proxy = Proxy::start_yaml(&yaml);
    for path in ["/b/silent", "/b/stall"] {
        let start = std::time::Instant::now();
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), get(proxy.addr, path, &[]))
            .await
            .unwrap_or_else(|_| panic!("{path}: still waiting after 10 s (read timeout 1 s)"));
        let waited = start.elapsed();
        assert!(
            waited < std::time::Duration::from_secs(5),
            "{path}: answered after {waited:?}"
        );
        if r.status == 200 {
            assert!(
                r.body.len() < SIZE,
                "{path}: a stalled body must end the response early"
            );
        } else {
            assert_eq!(r.status, 502, "{path}: {}", r.text());
        }
    }
    assert_eq!(
        proxy.metric("shardcache_chunk_fills_total{result=\"complete\"}").await,
        0.0
    );
}
