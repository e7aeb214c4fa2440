//! Memory under clients that read slowly or not at all: shardcache as a child process (its RSS
//! read from /proc), a local-directory upstream, a 64 MiB memory tier of 8 MiB chunks and a
//! disk tier. The bound: the memory tier and 64 MiB over the idle figure.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, Served};

const MIB: u64 = 1 << 20;
const MEMORY_TIER: u64 = 64 * MIB;
const OBJECTS: usize = 50;

/// The process's resident set, in bytes.
fn rss(served: &Served) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", served.child.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

/// shardcache over `dir/data` (objects `bench/obj-<i>`, 16 MiB each, one file hard-linked:
/// distinct objects to the cache), with its caches under `dir`; and its S3 and admin addresses.
fn serve(dir: &Path) -> (Served, SocketAddr, SocketAddr) {
    let data = dir.join("data/bench");
    std::fs::create_dir_all(&data).unwrap();
    let bytes: Vec<u8> = (0..16 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(data.join("obj-0"), bytes).unwrap();
    for i in 1..OBJECTS {
        std::fs::hard_link(data.join("obj-0"), data.join(format!("obj-{i}"))).unwrap();
    }
    let (s3, admin) = (free_port(), free_port());
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{s3}\nadmin_listen: 127.0.0.1:{admin}\n\
             cache:\n  chunk_size: 8388608\n  memory_bytes: {MEMORY_TIER}\n  read_ahead_chunks: 2\n  \
             disk:\n    path: {}\n    capacity_bytes: 2147483648\n\
             upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
            dir.join("cache").display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    let served = Served::start(&config, admin);
    (served, ([127, 0, 0, 1], s3).into(), ([127, 0, 0, 1], admin).into())
}

/// Sends a GET for `path` on a new connection with a small receive buffer, and returns it
/// unread.
fn request(addr: SocketAddr, path: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
    let size: libc::c_int = 64 << 10;
    // SAFETY: a live socket and an int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    (&s).write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    s
}

/// The highest RSS seen while `work` runs on other threads, sampled every 50 ms.
fn peak_while(served: &Served, work: impl FnOnce() + Send) -> u64 {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            work();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut peak = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss(served));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

/// `shardcache_copied_bytes_total`, scraped from `admin`.
fn copied_bytes(admin: SocketAddr) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(common::metric(admin, "shardcache_copied_bytes_total"))
}

#[test]
fn a_client_whose_socket_takes_a_piece_at_once_gets_a_view_and_one_that_reads_nothing_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (_served, addr, admin) = serve(dir.path());
    // Three times the first MiB of an object (a miss, then hits), each read whole at once on a
    // connection of its own: every piece fits in the socket's room, so none is copied (before,
    // a client that had not yet taken 8 MiB got every piece copied: 3 MiB here).
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /bench/obj-0 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1048575\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert!(answer.len() > MIB as usize, "a short answer: {} bytes", answer.len());
    }
    assert_eq!(copied_bytes(admin), 0.0);
    // A client that reads nothing fills its socket: what its socket cannot take is copied.
    let idle = request(addr, "/bench/obj-1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while copied_bytes(admin) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "nothing was copied for a client that reads nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(idle);
}

#[test]
fn slow_readers_of_distinct_objects_cost_a_piece_each_not_a_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (served, addr, _) = serve(dir.path());
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss(&served);
    // Fifty clients each read 16 KiB of a distinct 16 MiB object every 100 ms, for 8 s.
    let peak = peak_while(&served, || {
        std::thread::scope(|scope| {
            for i in 0..OBJECTS {
                scope.spawn(move || {
                    let mut s = request(addr, &format!("/bench/obj-{i}"));
                    let mut buf = [0u8; 16 << 10];
                    let started = Instant::now();
                    while started.elapsed() < Duration::from_secs(8) {
                        if s.read(&mut buf).unwrap_or(0) == 0 {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
            }
        });
    });
    let over = peak.saturating_sub(idle);
    eprintln!("idle {} MiB, peak {} MiB", idle / MIB, peak / MIB);
    // Each reader pinned its 8 MiB chunk before: 790 MiB over idle with these settings.
    assert!(over <= MEMORY_TIER + 64 * MIB, "RSS rose {} MiB over idle", over / MIB);
}

#[test]
fn memory_a_connection_flood_took_is_given_back_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (served, addr, _) = serve(dir.path());
    // The object is cached before the idle figure is taken: the flood adds only connections.
    let mut warm = TcpStream::connect(addr).unwrap();
    warm.write_all(b"GET /bench/obj-0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let _ = warm.read_to_end(&mut Vec::new());
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss(&served);
    // 2,000 connections each ask for the object and read nothing, then all leave.
    let peak = peak_while(&served, || {
        let held: Vec<TcpStream> = (0..2000).map(|_| request(addr, "/bench/obj-0")).collect();
        std::thread::sleep(Duration::from_secs(3));
        drop(held);
    });
    // While it lasts: the memory tier and 64 MiB (each connection had a 64 KiB read buffer
    // before, 2,000 of them 125 MiB).
    assert!(
        peak.saturating_sub(idle) <= MEMORY_TIER + 64 * MIB,
        "RSS rose {} MiB over idle during the flood",
        peak.saturating_sub(idle) / MIB
    );
    // The heap is trimmed every 10 s once it holds much free memory.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = rss(&served);
    while after > idle + 64 * MIB && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        after = rss(&served);
    }
    eprintln!(
        "idle {} MiB, flood peak {} MiB, after {} MiB",
        idle / MIB,
        peak / MIB,
        after / MIB
    );
    assert!(
        after <= idle + 64 * MIB,
        "RSS stayed {} MiB over idle after the flood",
        after.saturating_sub(idle) / MIB
    );
}
