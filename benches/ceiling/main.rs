//! The loopback ceiling: how many bytes per second this machine moves over TCP on loopback when
//! nothing else is done with them, with large writes. `--streams` connections, each a tokio
//! sender writing `--write-size` bytes at a time and a receiver reading into a buffer of that
//! size, for `--seconds`, on a runtime of `--threads` threads (the proxy's two by default).
//! Prints one JSON object: the bytes received per second, in GB/s.
//!
//! iperf3 measures the same with one thread per stream and 128 KiB writes by default; this is the
//! figure a tokio program with the proxy's thread count can reach, which is what a cache hit is
//! measured against. Built with `cargo build --release --example ceiling`; run by `benches/run.sh`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    /// Connections.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Bytes per write and per read.
    #[arg(long, default_value_t = 1 << 20)]
    write_size: usize,
    /// Seconds to measure (after a quarter-second warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Runtime threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()
        .expect("runtime");
    let gb_per_s = runtime.block_on(measure(&cli));
    let out = json!({
        "streams": cli.streams,
        "write_size": cli.write_size,
        "threads": cli.threads,
        "gb_per_s": gb_per_s,
    });
    println!("{out}");
}

async fn measure(cli: &Cli) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let size = cli.write_size;
    for _ in 0..cli.streams {
        let (mut sender, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut receiver, _) = accepted.expect("accept");
        let stop_sending = stop.clone();
        tokio::spawn(async move {
            let data = vec![0x5a_u8; size];
            let sender = sender.as_mut().expect("connect");
            while !stop_sending.load(Ordering::Relaxed) {
                if sender.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        let count = received.clone();
        tokio::spawn(async move {
            let mut buf = vec![0_u8; size];
            while let Ok(n) = receiver.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (start, before) = (Instant::now(), received.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs_f64(cli.seconds)).await;
    let bytes = received.load(Ordering::Relaxed) - before;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    bytes as f64 / secs / 1e9
}
