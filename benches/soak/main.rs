//! The reliability soak: shardcache (the release binary, as a child process) in front of an
//! origin that injects faults, under mixed load, for a bounded time. It checks every byte a
//! client receives, samples the server's RSS and open file descriptors, and prints a report
//! (JSON to `--out`, a summary on stdout) for RELIABILITY.md.
//!
//! Load: `--workers` clients read random objects whole (60%), in random ranges (30%) or HEAD
//! them (10%). The origin answers a `--fault-rate` share of GETs with a random fault (refuse,
//! stall before or mid-body, reset, short or long body, 500, 503 SlowDown, 412, a wrong
//! Content-Range, 200 to a range). Every 4 minutes it fails everything for 15 s (an outage:
//! breakers open, stale-if-error answers); every minute 100 clients trickle a header a byte at a
//! time; every 90 s 300 idle connections are opened and held for 10 s.
//!
//! Run with `benches/soak.sh` (builds, then runs for 20 minutes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    /// How long to run.
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Share of upstream GETs answered with a fault.
    #[arg(long, default_value_t = 0.05)]
    fault_rate: f64,
    /// The shardcache binary.
    #[arg(long, default_value = "target/release/shardcache")]
    bin: PathBuf,
    /// Where the JSON report goes.
    #[arg(long, default_value = "benches/soak-report.json")]
    out: PathBuf,
}

const CHUNK: u64 = 1 << 20;
const OBJECTS: u64 = 48;

/// Size of object `i`: 100 KB to about 24 MiB, most of them a few MiB.
fn size_of(i: u64) -> u64 {
    100_000 + (i * i * 10_007 % (24 << 20))
}

/// Byte `pos` of object `i`.
fn byte(i: u64, pos: u64) -> u8 {
    (pos.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8 ^ (pos >> 20) as u8
}

/// A small, fast generator; each task has its own.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        Self(t.as_nanos() as u64 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const FAULTS: [&str; 11] = [
    "refuse",
    "stall_head",
    "stall_body",
    "reset",
    "short",
    "long",
    "500",
    "503",
    "412",
    "wrong_range",
    "200_to_range",
];

/// The origin: objects `o0`.. in bucket `b`, ETag per object, faults at random.
struct Origin {
    fault_rate: f64,
    outage: AtomicBool,
    injected: Mutex<BTreeMap<&'static str, u64>>,
    gets: AtomicU64,
}

impl Origin {
    async fn serve(self: Arc<Self>, stream: TcpStream, mut rng: Rng) {
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
                head.push(line.to_lowercase());
            }
            let mut words = head[0].split(' ');
            let (method, path) = (
                words.next().unwrap_or("").to_owned(),
                words.next().unwrap_or("").to_owned(),
            );
            let Some(i) = path
                .strip_prefix("/b/o")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|i| *i < OBJECTS)
            else {
                let _ = stream
                    .get_mut()
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
                continue;
            };
            let size = size_of(i);
            let common = format!("ETag: \"e{i}\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n");
            let out = stream.get_mut();
            if self.outage.load(Ordering::Relaxed) {
                let xml = "<Error><Code>SlowDown</Code></Error>";
                let _ = out
                    .write_all(
                        format!("HTTP/1.1 503 Slow Down\r\nContent-Length: {}\r\n\r\n{xml}", xml.len()).as_bytes(),
                    )
                    .await;
                continue;
            }
            if method == "head" {
                let _ = out
                    .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n{common}\r\n").as_bytes())
                    .await;
                continue;
            }
            self.gets.fetch_add(1, Ordering::Relaxed);
            let range = head
                .iter()
                .find_map(|l| l.strip_prefix("range: bytes=").map(|r| r.trim().to_owned()));
            let (a, b) = match range.as_deref().and_then(|r| r.split_once('-')) {
                Some((a, b)) => (
                    a.parse().unwrap_or(0),
                    b.parse::<u64>().unwrap_or(size - 1).min(size - 1),
                ),
                None => (0, size - 1),
            };
            let body: Vec<u8> = (a..=b).map(|p| byte(i, p)).collect();
            let ok = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{size}\r\n{common}\r\n",
                body.len()
            );
            let fault = rng
                .chance(self.fault_rate)
                .then(|| FAULTS[rng.below(FAULTS.len() as u64) as usize]);
            if let Some(f) = fault {
                *self.injected.lock().unwrap().entry(f).or_default() += 1;
            }
            let half = &body[..body.len() / 2];
            let error = |status: &str, code: &str| {
                let xml = format!("<Error><Code>{code}</Code></Error>");
                format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{xml}", xml.len())
            };
            let result = match fault {
                None => async {
                    out.write_all(ok.as_bytes()).await?;
                    out.write_all(&body).await
                }
                .await,
                Some("refuse") => return,
                Some("stall_head") => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    return;
                }
                Some(f @ ("stall_body" | "reset" | "short")) => {
                    let _ = out.write_all(ok.as_bytes()).await;
                    let _ = out.write_all(half).await;
                    match f {
                        "stall_body" => tokio::time::sleep(Duration::from_secs(3)).await,
                        "reset" => {
                            let _ = out.set_zero_linger();
                        }
                        _ => {}
                    }
                    return;
                }
                Some("long") => async {
                    out.write_all(ok.as_bytes()).await?;
                    out.write_all(&body).await?;
                    out.write_all(&[b'!'; 64]).await
                }
                .await,
                Some("500") => out.write_all(error("500 Internal Server Error", "InternalError").as_bytes()).await,
                Some("503") => out.write_all(error("503 Slow Down", "SlowDown").as_bytes()).await,
                Some("412") => out.write_all(error("412 Precondition Failed", "PreconditionFailed").as_bytes()).await,
                Some("wrong_range") => async {
                    let wrong = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{size}\r\n{common}\r\n",
                        body.len(),
                        a + 1,
                        b + 1
                    );
                    out.write_all(wrong.as_bytes()).await?;
                    out.write_all(&body).await
                }
                .await,
                Some(_) => async {
                    let whole: Vec<u8> = (0..size).map(|p| byte(i, p)).collect();
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n{common}\r\n");
                    out.write_all(head.as_bytes()).await?;
                    out.write_all(&whole).await
                }
                .await,
            };
            if result.is_err() {
                return;
            }
        }
    }
}

/// What one client request came to.
fn classify(status: u16, declared: Option<u64>, body: &[u8], want: &[u8], head: bool) -> String {
    match status {
        200 | 206 if head => "ok".into(),
        200 | 206 => {
            if declared != Some(want.len() as u64) || body.len() > want.len() || body != &want[..body.len()] {
                "WRONG_BYTES".into()
            } else if body.len() < want.len() {
                "truncated".into()
            } else {
                "ok".into()
            }
        }
        s => format!("status_{s}"),
    }
}

/// One request through shardcache; its outcome.
async fn request(addr: SocketAddr, rng: &mut Rng) -> String {
    let i = rng.below(OBJECTS);
    let size = size_of(i);
    let roll = rng.below(10);
    let (method, range) = match roll {
        0 => ("HEAD", None),
        1..=3 => {
            let len = 1 + rng.below((4 << 20).min(size));
            let a = rng.below(size - len + 1);
            ("GET", Some((a, a + len - 1)))
        }
        _ => ("GET", None),
    };
    let want: Vec<u8> = match range {
        Some((a, b)) => (a..=b).map(|p| byte(i, p)).collect(),
        None => (0..size).map(|p| byte(i, p)).collect(),
    };
    let mut req = format!("{method} /b/o{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some((a, b)) = range {
        req.push_str(&format!("Range: bytes={a}-{b}\r\n"));
    }
    req.push_str("\r\n");
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|_| "connect_failed".to_owned())?;
        s.write_all(req.as_bytes())
            .await
            .map_err(|_| "send_failed".to_owned())?;
        let mut buf = Vec::with_capacity(want.len() + 1024);
        let mut piece = vec![0u8; 256 << 10];
        loop {
            match s.read(&mut piece).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&piece[..n]),
            }
        }
        Ok::<_, String>(buf)
    };
    let buf = match tokio::time::timeout(Duration::from_secs(60), exchange).await {
        Err(_) => return "HUNG".into(),
        Ok(Err(e)) => return e,
        Ok(Ok(buf)) => buf,
    };
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return "no_answer".into();
    };
    let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let declared = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let outcome = classify(status, declared, &buf[split + 4..], &want, method == "HEAD");
    if head.contains("x-shardcache-stale") && outcome == "ok" {
        return "ok_stale".into();
    }
    outcome
}

/// VmRSS in KiB and open file descriptors of process `pid`.
fn sample(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// Clients that send a request header a byte every 200 ms for 20 s.
async fn slowloris(addr: SocketAddr, clients: usize) {
    let mut streams = Vec::new();
    for _ in 0..clients {
        if let Ok(s) = TcpStream::connect(addr).await {
            streams.push(s);
        }
    }
    let header = b"GET /b/o1 HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    for b in header.iter().take(100) {
        for s in &mut streams {
            let _ = s.write_all(&[*b]).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Idle connections held for 10 s.
async fn idle_flood(addr: SocketAddr, clients: usize) {
    let mut streams = Vec::new();
    for _ in 0..clients {
        if let Ok(s) = TcpStream::connect(addr).await {
            streams.push(s);
        }
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = listener.local_addr().unwrap();
    let origin = Arc::new(Origin {
        fault_rate: cli.fault_rate,
        outage: AtomicBool::new(false),
        injected: Mutex::new(BTreeMap::new()),
        gets: AtomicU64::new(0),
    });
    let serving = origin.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(serving.clone().serve(stream, Rng::seeded(n)));
        }
    });
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.path().join("soak.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\ngrace_period_seconds: 0\n\
             graceful_shutdown_timeout_seconds: 2\nclients: {{max_connections: 1024, header_timeout_seconds: 5}}\n\
             cache:\n  chunk_size: {CHUNK}\n  memory_bytes: 67108864\n  metadata_ttl_seconds: 5\n  stale_if_error_seconds: 30\n\
             \x20 disk:\n    path: {}\n    capacity_bytes: 268435456\n    write_queue_bytes: 16777216\n    key_file: {}\n\
             upstreams:\n  up:\n    kind: s3\n    endpoint: http://{origin_addr}\n    read_timeout_seconds: 1\n\
             \x20   connect_timeout_seconds: 1\n    credentials: {{source: anonymous}}\n\
             \x20   retry: {{attempts: 3, base_delay_ms: 20, max_delay_ms: 200, deadline_seconds: 10}}\n\
             \x20   breaker: {{failures: 5, open_seconds: 3}}\n    hedge: {{after_ms: 100, quantile: 0.95, max_share: 0.05}}\n\
             default_upstream: up\n",
            dir.path().join("cache").display(),
            dir.path().join("disk.key").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("shardcache.log")).unwrap();
    let mut child = std::process::Command::new(&cli.bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("SHARDCACHE_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("shardcache binary (build it with cargo build --release)");
    let pid = child.id();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let started = Instant::now();
    while TcpStream::connect(admin).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "shardcache did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_for = Duration::from_secs_f64(cli.minutes * 60.0);
    let deadline = Instant::now() + run_for;
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..cli.workers {
        let outcomes = outcomes.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::seeded(1000 + w as u64);
            while Instant::now() < deadline {
                let outcome = request(addr, &mut rng).await;
                *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
            }
        }));
    }
    let chaos = {
        let origin = origin.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut background = Vec::new();
            while Instant::now() < deadline {
                tick.tick().await;
                let s = t0.elapsed().as_secs();
                origin.outage.store(s % 240 >= 120 && s % 240 < 135, Ordering::Relaxed);
                if s % 60 == 30 {
                    background.push(tokio::spawn(slowloris(addr, 100)));
                }
                if s % 90 == 45 {
                    background.push(tokio::spawn(idle_flood(addr, 300)));
                }
            }
            origin.outage.store(false, Ordering::Relaxed);
            for b in background {
                let _ = b.await;
            }
        })
    };
    let mut timeline = Vec::new();
    while Instant::now() < deadline {
        let (rss, fds) = sample(pid);
        let done: u64 = outcomes.lock().unwrap().values().sum();
        timeline.push(json!({"t": started.elapsed().as_secs(), "rss_kib": rss, "fds": fds, "requests": done}));
        println!(
            "t={:>5}s rss={:>7} KiB fds={:>5} requests={done}",
            started.elapsed().as_secs(),
            rss,
            fds
        );
        tokio::time::sleep(Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = chaos.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, fds) = sample(pid);
    timeline.push(json!({"t": started.elapsed().as_secs(), "rss_kib": rss, "fds": fds}));
    let metrics = scrape(admin).await;
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    let outcomes = outcomes.lock().unwrap().clone();
    let injected = origin.injected.lock().unwrap().clone();
    let report = json!({
        "minutes": cli.minutes,
        "workers": cli.workers,
        "fault_rate": cli.fault_rate,
        "upstream_gets": origin.gets.load(Ordering::Relaxed),
        "outcomes": outcomes,
        "faults_injected": injected,
        "timeline": timeline,
        "server_metrics": metrics,
    });
    std::fs::write(&cli.out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!(
        "{}",
        serde_json::to_string_pretty(
            &json!({"outcomes": outcomes, "faults_injected": injected, "server_metrics": report["server_metrics"]})
        )
        .unwrap()
    );
    let bad = outcomes.get("WRONG_BYTES").copied().unwrap_or(0) + outcomes.get("HUNG").copied().unwrap_or(0);
    std::process::exit(if bad == 0 { 0 } else { 1 });
}

/// The server's counters of interest, by series.
async fn scrape(admin: SocketAddr) -> BTreeMap<String, f64> {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    let keep = [
        "shardcache_upstream_retries_total",
        "shardcache_upstream_hedges_total",
        "shardcache_upstream_breaker_rejections_total",
        "shardcache_stale_responses_total",
        "shardcache_connections_shed_total",
        "shardcache_chunk_fills_total",
        "shardcache_upstream_errors_total",
        "shardcache_upstream_requests_total",
        "shardcache_requests_total",
    ];
    text.lines()
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .filter(|(_, v)| *v > 0.0)
        .collect()
}
