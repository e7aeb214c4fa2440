//! Slow, idle and too many clients: the S3 listener cuts or refuses them and keeps serving, and
//! the admin listener keeps answering health checks.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{free_port, get, Proxy, Served};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A local-directory upstream with one object, `b/k`, and a proxy in front of it with the
/// `clients` section `clients`.
fn proxy(clients: &str) -> (tempfile::TempDir, Proxy) {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("b")).unwrap();
    std::fs::write(root.path().join("b/k"), b"hello").unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\nclients: {clients}\ncache:\n  disk: null\n  memory_bytes: 33554432\n\
         upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
        free_port(),
        free_port(),
        root.path().display()
    );
    (root, Proxy::start_yaml(&yaml))
}

/// Waits until the server closes `stream` (reads end or fail); returns how long that took, or
/// `None` if it stayed open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, wait).await.ok().map(|()| started.elapsed())
}

/// A GET that must be answered within 2 s.
async fn get_soon(addr: SocketAddr, path: &str) -> common::Response {
    tokio::time::timeout(Duration::from_secs(2), get(addr, path, &[]))
        .await
        .unwrap_or_else(|_| panic!("{path} not answered within 2 s"))
}

async fn healthz(admin: SocketAddr) -> u16 {
    tokio::time::timeout(Duration::from_secs(2), get(admin, "/healthz", &[]))
        .await
        .expect("/healthz answered within 2 s")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_sent_a_byte_at_a_time_is_cut_at_the_header_timeout() {
    let (_root, proxy) = proxy("{header_timeout_seconds: 1}");
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    let request = b"GET /b/k HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let trickle = async {
        for byte in request.iter().take(30) {
            for s in &mut slow {
                let _ = s.write_all(&[*byte]).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Meanwhile an honest client is served.
    let (_, honest) = tokio::join!(trickle, get(proxy.addr, "/b/k", &[]));
    assert_eq!((honest.status, honest.body.as_slice()), (200, &b"hello"[..]));
    for (i, s) in slow.iter_mut().enumerate() {
        let took = closed_within(s, Duration::from_secs(3)).await;
        assert!(
            took.is_some(),
            "slow client {i} still connected 6 s after its first byte"
        );
    }
    let cut = proxy
        .metric_at_least("shardcache_connections_shed_total{reason=\"header_timeout\"}", 50.0)
        .await;
    assert_eq!(cut, 50.0);
    assert_eq!(get(proxy.addr, "/b/k", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_slow_down_and_health_checks_still_answer() {
    let (_root, proxy) = proxy("{max_connections: 20, header_timeout_seconds: 30}");
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // Accepted in order: once the 20 are counted, the next is refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.metric("shardcache_client_connections").await < 20.0 {
        assert!(Instant::now() < deadline, "20 connections never counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = get(proxy.addr, "/b/k", &[]).await;
    assert_eq!(refused.status, 503);
    assert!(refused.text().contains("<Code>SlowDown</Code>"), "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(healthz(proxy.admin).await, 200);
    assert_eq!(
        proxy
            .metric("shardcache_connections_shed_total{reason=\"over_limit\"}")
            .await,
        1.0
    );
    // A slot freed is a slot taken again.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(proxy.addr, "/b/k", &[]).await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot was never reused: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_root, proxy) = proxy("{idle_timeout_seconds: 1}");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = s.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    let took = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("an idle connection closed within 5 s");
    assert!(
        took >= Duration::from_millis(800),
        "closed after {took:?}, before the idle timeout"
    );
}

#[test]
fn near_the_open_file_limit_the_cap_shrinks_and_health_checks_still_answer() {
    use std::os::unix::process::CommandExt;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("b")).unwrap();
    std::fs::write(root.path().join("b/k"), b"hello").unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let config = root.path().join("shardcache.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\ngrace_period_seconds: 0\n\
             graceful_shutdown_timeout_seconds: 1\nclients: {{header_timeout_seconds: 60}}\n\
             cache:\n  disk: null\n  memory_bytes: 33554432\n\
             upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
            root.path().display()
        ),
    )
    .unwrap();
    // 512 open files: room for (512 - 256) / 2 = 128 client connections.
    let _served = Served::start_with(&config, admin_port, |command| unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 512,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let mut idle = Vec::new();
        for _ in 0..600 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let refused = get_soon(addr, "/b/k").await;
        assert_eq!(refused.status, 503, "600 idle connections must fill a cap of 128");
        assert_eq!(healthz(admin).await, 200);
        let metrics = get_soon(admin, "/metrics").await.text();
        assert!(
            metrics.contains("shardcache_client_connections 128"),
            "{}",
            metrics
                .lines()
                .filter(|l| l.contains("client_conn"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(5);
        while get_soon(addr, "/b/k").await.status != 200 {
            assert!(Instant::now() < deadline, "still refusing after the idle clients left");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_stalls_fails_after_the_body_timeout() {
    // An upstream that takes anything and never answers: the wait is on the client's body.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\nclients: {{body_timeout_seconds: 1}}\n\
         cache:\n  disk: null\n  memory_bytes: 33554432\n\
         upstreams:\n  up:\n    kind: s3\n    endpoint: http://{upstream_addr}\n    read_timeout_seconds: 30\n\
         \x20   credentials: {{source: anonymous}}\ndefault_upstream: up\n",
        free_port(),
        free_port()
    );
    let proxy = Proxy::start_yaml(&yaml);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let took = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("a stalled upload ended within 10 s");
    assert!(took < Duration::from_secs(4), "ended after {took:?} (body timeout 1 s)");
}
