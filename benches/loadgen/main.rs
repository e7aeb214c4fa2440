//! The benchmark load client: HTTP/1.1 GETs over keep-alive connections, timing each request's
//! time to first byte and total latency, printing one JSON object per run.
//!
//! - `loadgen get`: `--connections` workers issue GETs for `--duration` seconds (or `--requests`
//!   in all), cycling through the paths; `--range-size` asks for random ranges of that size
//!   instead of whole objects; `--whole-range` sends `Range: bytes=0-(size-1)` (for caches whose
//!   API demands a range). All workers start together, so `--requests` = `--connections` is a
//!   burst of simultaneous first requests.
//! - `loadgen epoch`: a training-loader simulation. `--workers` loaders read the shards in a new
//!   shuffled order each epoch and hand each finished shard to a simulated accelerator that
//!   consumes `--consume-rate` bytes per second; loaders run at most `--prefetch` shards ahead.
//!   Accelerator utilisation is busy time over epoch time (MLPerf Storage's AU).
//!
//! Built with `cargo build --release --example loadgen`; driven by `benches/run.sh`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Barrier};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// GETs for a while, or a burst.
    Get(GetArgs),
    /// A training-loader simulation over shards.
    Epoch(EpochArgs),
}

#[derive(Args, Clone)]
struct Target {
    /// Server address, host:port (loopback).
    #[arg(long)]
    addr: String,
    /// A file of request paths, one per line: `/bucket/key SIZE`.
    #[arg(long)]
    paths: std::path::PathBuf,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Send `Range: bytes=0-(size-1)` with whole-object reads.
    #[arg(long)]
    whole_range: bool,
}

#[derive(Args)]
struct GetArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds to run (ignored with --requests).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Total requests instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Read random ranges of this many bytes instead of whole objects.
    #[arg(long)]
    range_size: Option<u64>,
}

#[derive(Args)]
struct EpochArgs {
    #[command(flatten)]
    target: Target,
    /// Loader workers (connections).
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: u32,
    /// Bytes per second the simulated accelerator consumes.
    #[arg(long)]
    consume_rate: f64,
    /// Shards loaded ahead of the accelerator.
    #[arg(long, default_value_t = 4)]
    prefetch: usize,
}

struct Object {
    path: String,
    size: u64,
}

fn read_paths(file: &std::path::Path) -> Vec<Object> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (path, size) = l.split_once(' ').expect("`/bucket/key SIZE` per line");
            Object {
                path: path.to_owned(),
                size: size.trim().parse().expect("size in bytes"),
            }
        })
        .collect()
}

/// One keep-alive connection.
struct Conn {
    addr: String,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

/// What one request measured.
struct Sample {
    ttfb: Duration,
    total: Duration,
    bytes: u64,
}

impl Conn {
    async fn sender(&mut self) -> &mut SendRequest<Empty<Bytes>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(&self.addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        self.sender.as_mut().expect("set above")
    }

    /// GETs `path` (with `range`), reads the body to the end, discarding it.
    async fn get(&mut self, target: &Target, path: &str, range: Option<(u64, u64)>) -> Result<Sample, String> {
        let mut req = Request::get(path).header("host", &target.addr);
        for h in &target.headers {
            let (name, value) = h.split_once(':').expect("header as `Name: value`");
            req = req.header(name.trim(), value.trim());
        }
        if let Some((first, last)) = range {
            req = req.header("range", format!("bytes={first}-{last}"));
        }
        let req = req.body(Empty::new()).expect("valid request");
        let start = Instant::now();
        let sender = self.sender().await;
        // A keep-alive connection takes the next request only once it has finished the last one.
        if let Err(e) = sender.ready().await {
            self.sender = None;
            return Err(e.to_string());
        }
        let res = match sender.send_request(req).await {
            Ok(res) => res,
            Err(e) => {
                self.sender = None;
                return Err(e.to_string());
            }
        };
        let status = res.status();
        let mut body = res.into_body();
        let mut ttfb = None;
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref() {
                ttfb.get_or_insert_with(|| start.elapsed());
                bytes += data.len() as u64;
            }
        }
        let total = start.elapsed();
        if !(status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT) {
            return Err(format!("{path}: HTTP {status}"));
        }
        Ok(Sample {
            ttfb: ttfb.unwrap_or(total),
            total,
            bytes,
        })
    }
}

fn percentiles(mut v: Vec<Duration>) -> serde_json::Value {
    v.sort();
    let at = |p: f64| {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1e3
    };
    json!({ "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0) })
}

/// A small xorshift generator: the load client must not spend its time in a CSPRNG.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

async fn run_get(args: GetArgs) -> serde_json::Value {
    let objects = Arc::new(read_paths(&args.target.paths));
    let target = Arc::new(args.target);
    let barrier = Arc::new(Barrier::new(args.connections));
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|w| {
            let (objects, target, barrier, issued) = (objects.clone(), target.clone(), barrier.clone(), issued.clone());
            let (requests, range_size) = (args.requests, args.range_size);
            tokio::spawn(async move {
                let mut conn = Conn {
                    addr: target.addr.clone(),
                    sender: None,
                };
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                let mut samples = Vec::new();
                let mut errors = Vec::new();
                barrier.wait().await;
                let begin = Instant::now();
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    match requests {
                        Some(limit) if n >= limit => break,
                        None if begin.elapsed() >= deadline => break,
                        _ => {}
                    }
                    let object = &objects[n as usize % objects.len()];
                    let range = match range_size {
                        Some(len) => {
                            let first = rng.below(object.size.saturating_sub(len) + 1);
                            Some((first, (first + len).min(object.size) - 1))
                        }
                        None if target.whole_range => Some((0, object.size - 1)),
                        None => None,
                    };
                    match conn.get(&target, &object.path, range).await {
                        Ok(s) => samples.push(s),
                        Err(e) => errors.push(e),
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    for w in workers {
        let (s, e) = w.await.expect("worker");
        samples.extend(s);
        errors.extend(e);
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes: u64 = samples.iter().map(|s| s.bytes).sum();
    json!({
        "requests": samples.len(),
        "errors": errors.len(),
        "first_error": errors.first(),
        "bytes": bytes,
        "seconds": secs,
        "gb_per_s": bytes as f64 / secs / 1e9,
        "req_per_s": samples.len() as f64 / secs,
        "ttfb": percentiles(samples.iter().map(|s| s.ttfb).collect()),
        "latency": percentiles(samples.iter().map(|s| s.total).collect()),
    })
}

async fn run_epochs(args: EpochArgs) -> serde_json::Value {
    let shards = Arc::new(read_paths(&args.target.paths));
    let target = Arc::new(args.target);
    let mut epochs = Vec::new();
    for epoch in 0..args.epochs {
        let mut order: Vec<usize> = (0..shards.len()).collect();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(epoch + 1));
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let order = Arc::new(order);
        let next = Arc::new(AtomicU64::new(0));
        let (ready, mut loaded) = mpsc::channel::<Result<u64, String>>(args.prefetch.max(1));
        let started = Instant::now();
        for _ in 0..args.workers {
            let (shards, target, order, next, ready) = (
                shards.clone(),
                target.clone(),
                order.clone(),
                next.clone(),
                ready.clone(),
            );
            tokio::spawn(async move {
                let mut conn = Conn {
                    addr: target.addr.clone(),
                    sender: None,
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&shard) = order.get(i) else { break };
                    let object = &shards[shard];
                    let range = target.whole_range.then(|| (0, object.size - 1));
                    let result = conn.get(&target, &object.path, range).await.map(|s| s.bytes);
                    if ready.send(result).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(ready);
        // The accelerator: waits for the next loaded shard, then computes on it.
        let (mut busy, mut bytes, mut errors) = (Duration::ZERO, 0u64, 0u64);
        while let Some(result) = loaded.recv().await {
            match result {
                Ok(n) => {
                    let compute = Duration::from_secs_f64(n as f64 / args.consume_rate);
                    tokio::time::sleep(compute).await;
                    busy += compute;
                    bytes += n;
                }
                Err(_) => errors += 1,
            }
        }
        let secs = started.elapsed().as_secs_f64();
        epochs.push(json!({
            "epoch": epoch + 1,
            "bytes": bytes,
            "errors": errors,
            "seconds": secs,
            "gb_per_s": bytes as f64 / secs / 1e9,
            "accelerator_utilization": busy.as_secs_f64() / secs,
        }));
    }
    json!({ "epochs": epochs })
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let out = runtime.block_on(async {
        match cli.command {
            Command::Get(args) => run_get(args).await,
            Command::Epoch(args) => run_epochs(args).await,
        }
    });
    println!("{out}");
}
