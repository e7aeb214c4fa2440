//! Test harness: a real S3 server (s3s + s3s-fs, SigV4 enforced) on an ephemeral loopback port
//! that records every request it receives, and shardcache itself running on a background
//! thread, configured to use it. Each test gets its own servers, directories and buckets.

#![allow(dead_code)] // each test binary uses a different part of the harness

#[path = "../support/s3s_service.rs"]
mod s3s_service;

pub mod cluster;
pub mod fake_peer;
pub mod faulty_fs;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora_core::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub const ACCESS_KEY: &str = "shardcache-test";
pub const SECRET_KEY: &str = "shardcache-test-secret";

/// One request seen by the upstream.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

/// The in-process S3 server.
pub struct S3Server {
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    gets: Arc<Gets>,
    stop: Option<oneshot::Sender<()>>,
}

/// How the server answers GETs: after a delay (a distant store's time to first byte), how many
/// it was answering at once at most, and the body bytes its answers carried.
#[derive(Default)]
struct Gets {
    delay_ms: std::sync::atomic::AtomicU64,
    answering: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    bytes: std::sync::atomic::AtomicU64,
}

impl S3Server {
    /// Starts s3s-fs on 127.0.0.1 with one access key, on the current runtime.
    pub async fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        let service = s3s_service::s3s_service(root.path(), ACCESS_KEY, SECRET_KEY);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel();
        let log = seen.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let gets = Arc::new(Gets::default());
        let answering = gets.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = &mut stopped => break,
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let service = service.clone();
                let log = log.clone();
                let gets = answering.clone();
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    log.lock().unwrap().push(Seen {
                        method: req.method().to_string(),
                        path: req.uri().path().to_owned(),
                        range: req.headers().get("range").map(|v| v.to_str().unwrap().to_owned()),
                    });
                    let (service, gets) = (service.clone(), gets.clone());
                    async move {
                        use std::sync::atomic::Ordering::SeqCst;
                        if req.method() != http::Method::GET {
                            return hyper::service::Service::call(&service, req).await;
                        }
                        let now = gets.answering.fetch_add(1, SeqCst) + 1;
                        gets.peak.fetch_max(now, SeqCst);
                        tokio::time::sleep(Duration::from_millis(gets.delay_ms.load(SeqCst))).await;
                        let answer = hyper::service::Service::call(&service, req).await;
                        gets.answering.fetch_sub(1, SeqCst);
                        let answered = answer.as_ref().ok().filter(|a| a.status().is_success());
                        let length = answered.and_then(|a| a.headers().get("content-length"));
                        let length = length.and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                        gets.bytes.fetch_add(length.unwrap_or(0), SeqCst);
                        answer
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            root,
            seen,
            connections,
            gets,
            stop: Some(stop),
        }
    }

    /// Answers every GET from now on `delay` late, as a distant store would.
    pub fn delay_gets(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.gets.delay_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// The most GETs it was answering at once (waiting out the delay, or reading the object)
    /// since the last `clear`.
    pub fn peak_gets(&self) -> usize {
        self.gets.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The body bytes of the 2xx GET answers it sent (their `Content-Length`) since the last
    /// `clear`.
    pub fn get_bytes(&self) -> u64 {
        self.gets.bytes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A client talking to the S3 server directly (for seeding and checking).
    pub fn client(&self) -> aws_sdk_s3::Client {
        client(self.addr)
    }

    /// Creates a bucket (a top-level directory for s3s-fs).
    pub fn bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.path().join(name)).unwrap();
    }

    /// Stores an object through the S3 API.
    pub async fn put(&self, bucket: &str, key: &str, data: Vec<u8>) {
        self.client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
    }

    /// Requests seen so far matching `method` and a path ending in `/bucket/key`.
    pub fn requests(&self, method: &str, bucket: &str, key: &str) -> Vec<Seen> {
        let path = format!("/{bucket}/{key}");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .cloned()
            .collect()
    }

    /// Forgets recorded requests and connections.
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
        self.connections.store(0, std::sync::atomic::Ordering::SeqCst);
        self.gets.peak.store(0, std::sync::atomic::Ordering::SeqCst);
        self.gets.bytes.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request seen since the last `clear`.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests seen since the last `clear`.
    pub fn request_count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Connections accepted since the last `clear`.
    pub fn connection_count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An aws-sdk-s3 client for `addr`, path-style.
pub fn client(addr: SocketAddr) -> aws_sdk_s3::Client {
    let creds = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{addr}"))
        .credentials_provider(creds)
        .force_path_style(true)
        .http_client(http_client())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The SDK's HTTP client for loopback endpoints (plain HTTP): the SDK is built without its
/// default HTTPS client, whose TLS would link a second crypto provider.
pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_http()
}

/// A loopback port for shardcache to bind: free when probed, never handed out twice in this
/// process (tests run in parallel), and below the kernel's ephemeral range (32768 and up by
/// default) so that servers binding port 0 cannot take it between the probe and the bind.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 400) as u16 * 30;
    loop {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(offset < 10_000, "no free port found");
        let port = base + offset;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Stop(tokio::sync::Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for Stop {
    async fn recv(&self) -> ShutdownSignal {
        if let Some(rx) = self.0.lock().await.take() {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

/// Options for a test proxy.
pub struct ProxyOptions {
    pub chunk_size: u64,
    pub read_ahead: u32,
    /// More keys of the `cache` section, each line indented by two spaces.
    pub cache_extra: String,
    pub disk: Option<std::path::PathBuf>,
    pub extra: String,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            chunk_size: 64 << 10,
            read_ahead: 0,
            cache_extra: String::new(),
            disk: None,
            extra: String::new(),
        }
    }
}

/// shardcache on a background thread.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts shardcache with an S3 upstream `up` at `upstream` (every bucket routed to it).
    pub fn start(upstream: SocketAddr, opts: ProxyOptions) -> Self {
        let disk = match &opts.disk {
            Some(p) => format!(
                "  disk:\n    path: {0}\n    capacity_bytes: 268435456\n    write_queue_bytes: 16777216\n    key_file: {0}/disk.key\n",
                p.display()
            ),
            None => "  disk: null\n".to_owned(),
        };
        let yaml = format!(
            "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nthreads: 2\ngrace_period_seconds: 0\n\
             graceful_shutdown_timeout_seconds: 1\nvirtual_host_domains: [s3.test.local]\n\
             cache:\n  chunk_size: {}\n  memory_bytes: 33554432\n  read_ahead_chunks: {}\n{}{disk}\
             upstreams:\n  up:\n    kind: s3\n    endpoint: http://{upstream}\n    credentials:\n      source: static\n      \
             access_key_id: {ACCESS_KEY}\n      secret_access_key: {SECRET_KEY}\ndefault_upstream: up\n{}",
            free_port(),
            free_port(),
            opts.chunk_size,
            opts.read_ahead,
            opts.cache_extra,
            opts.extra
        );
        Self::start_yaml(&yaml)
    }

    /// Starts shardcache from a YAML config.
    pub fn start_yaml(yaml: &str) -> Self {
        let config = shardcache::config::Config::from_yaml(yaml, &|_| None).unwrap();
        let (addr, admin) = (config.listen, config.admin_listen);
        let (stop, rx) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let args = RunArgs {
                shutdown_signal: Box::new(Stop(tokio::sync::Mutex::new(Some(rx)))),
            };
            shardcache::app::run(config, None, Some(args)).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() || std::net::TcpStream::connect(admin).is_err() {
            assert!(Instant::now() < deadline, "shardcache did not start listening");
            std::thread::sleep(Duration::from_millis(5));
        }
        Self {
            addr,
            admin,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A client pointed at shardcache.
    pub fn client(&self) -> aws_sdk_s3::Client {
        client(self.addr)
    }

    /// Sum of the samples of a metric whose line starts with `prefix` (name and labels).
    #[must_use]
    pub async fn metric(&self, prefix: &str) -> f64 {
        metric(self.admin, prefix).await
    }

    /// [`Self::metric`] once it reaches `at_least`, or its value after 5 s. A request's metrics
    /// are recorded when it is logged, just after its last byte reached the client. The value
    /// must be asserted on: discarding it is a compile error in the tests (`-D warnings`).
    #[must_use]
    pub async fn metric_at_least(&self, prefix: &str, at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let value = self.metric(prefix).await;
            if value >= at_least || Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops shardcache and waits until it has flushed its cache.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sum of the samples, scraped from the admin listener at `admin`, of a metric whose line starts
/// with `prefix` (name and labels).
#[must_use]
pub async fn metric(admin: SocketAddr, prefix: &str) -> f64 {
    let admin: shardcache::ops::Endpoint = format!("http://{admin}").parse().unwrap();
    let text = admin.call(http::Method::GET, "/metrics").await.unwrap().text();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Deterministic test bytes.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `shardcache serve --config CONFIG` as a child process (its output discarded), returned once
/// its admin port accepts connections; stopped with SIGTERM (and waited for) when dropped.
pub struct Served {
    pub child: std::process::Child,
}

impl Served {
    pub fn start(config: &std::path::Path, admin_port: u16) -> Self {
        Self::start_with(config, admin_port, |_| {})
    }

    /// [`Self::start`], with `configure` applied to the command first.
    pub fn start_with(
        config: &std::path::Path,
        admin_port: u16,
        configure: impl FnOnce(&mut std::process::Command),
    ) -> Self {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shardcache"));
        command
            .args(["serve", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        configure(&mut command);
        let child = command.spawn().unwrap();
        let served = Self { child };
        // The admin listener can open before the S3 one: wait for both, or a test's first request
        // is refused.
        let yaml: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
        let s3: Option<SocketAddr> = yaml["listen"].as_str().and_then(|l| l.parse().ok());
        let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in std::iter::once(admin).chain(s3) {
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "shardcache did not start listening on {addr}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        served
    }

    /// Sends `signal` (SIGHUP, SIGTERM, ...) to the process.
    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// An HTTP answer, as the wire carried it.
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A GET of `path` (query included) over a fresh connection, with `Host: x` unless `headers`
/// names another. Raw HTTP, so tests see exactly what went over the wire.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str("Host: x\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    }
}

/// `0..n` in a reproducible shuffled order (xorshift from `seed`), as a data loader reshuffles
/// its shards each epoch.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// The key of training shard `i` in bucket `train` (the dataset tests' layout).
pub fn shard_key(i: usize) -> String {
    format!("shard-{i:03}.tar")
}

/// `n` shards of `size` bytes each (`data(size, i)`) in bucket `train` of `s3`.
pub async fn put_shards(s3: &S3Server, n: usize, size: usize) {
    s3.bucket("train");
    for i in 0..n {
        s3.put("train", &shard_key(i), data(size, i as u8)).await;
    }
}

/// The share of `n` shards of bucket `train` that `s3` served (GETs) since its last `clear`.
pub fn shards_fetched(s3: &S3Server, n: usize) -> f64 {
    let fetched: usize = (0..n).map(|i| s3.requests("GET", "train", &shard_key(i)).len()).sum();
    fetched as f64 / n as f64
}
