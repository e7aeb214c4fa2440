//! The disk tier under the process: killed mid-write, restarted, read again.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OBJECTS: usize = 24;
const CHUNK: usize = 1 << 20;

fn object(i: usize) -> Vec<u8> {
    // Three chunks and a tail, each object different.
    common::data(3 * CHUNK + 1000 + i, i as u8)
}

/// The body of `GET /b/o{i}`, or `None` if the answer was not a whole 200 (the process was
/// killed under it): a whole answer must be byte-exact, a cut one is only ever a prefix.
async fn fetch(addr: SocketAddr, i: usize) -> Option<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /b/o{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
    let body = buf[split + 4..].to_vec();
    let expected = object(i);
    assert!(
        expected.starts_with(&body),
        "object {i}: the bytes served are not the object's"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    (head.starts_with("http/1.1 200") && body.len() == length).then_some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_heavy_fills_it_restarts_serving_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/b")).unwrap();
    for i in 0..OBJECTS {
        std::fs::write(dir.path().join(format!("data/b/o{i}")), object(i)).unwrap();
    }
    let (s3, admin) = (common::free_port(), common::free_port());
    let addr: SocketAddr = format!("127.0.0.1:{s3}").parse().unwrap();
    let config = dir.path().join("config.yaml");
    // A 64 MiB disk tier holds about 47 chunks of the 96 read: it is full and evicting, and the
    // 4 MiB memory tier sends most hits to disk.
    std::fs::write(
        &config,
        format!(
            "listen: {addr}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\n\
             graceful_shutdown_timeout_seconds: 1\n\
             cache:\n  chunk_size: {CHUNK}\n  memory_bytes: 4194304\n  read_ahead_chunks: 2\n\
             \x20 disk:\n    path: {}\n    capacity_bytes: 67108864\n    write_queue_bytes: 8388608\n\
             upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
            dir.path().join("cache").display(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();

    let mut recovered = Vec::new();
    for round in 0..5u64 {
        let served = common::Served::start(&config, admin);
        // Every object, read whole and exact, right after the restart: cold reads are served.
        let started = Instant::now();
        for i in 0..OBJECTS {
            let body = tokio::time::timeout(Duration::from_secs(20), fetch(addr, i))
                .await
                .unwrap_or_else(|_| panic!("round {round}: object {i} hung"));
            assert!(body.is_some(), "round {round}: object {i} was not served whole");
        }
        let metrics = common::get(format!("127.0.0.1:{admin}").parse().unwrap(), "/metrics", &[]).await;
        recovered.push(metric(
            &metrics.text(),
            "shardcache_served_bytes_total{source=\"disk\"}",
        ));
        eprintln!("round {round}: all objects in {:?}", started.elapsed());

        // Heavy fills and disk hits from four readers, then SIGKILL at a point that moves.
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|r| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = fetch(addr, (r * 7 + n * 5) % OBJECTS).await;
                        n += 1;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + 150 * round)).await;
        served.signal(libc::SIGKILL);
        drop(served);
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            // A reader that saw wrong bytes panicked: that fails the test here.
            reader.await.unwrap();
        }
    }
    // The first pass after each restart found chunks on disk from before the kill.
    assert!(
        recovered[1..].iter().all(|&bytes| bytes > 0.0),
        "no disk hits after a restart: {recovered:?}"
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A seccomp filter for this machine: the syscalls `names` get `matched`, every other one gets
/// `otherwise` (seccompiler's actions: "allow", or {"errno": N}).
fn seccomp_filter(names: &[&str], matched: serde_json::Value, otherwise: serde_json::Value) -> seccompiler::BpfProgram {
    let rules: Vec<_> = names.iter().map(|n| serde_json::json!({"syscall": n})).collect();
    let json = serde_json::json!({"main": {"match_action": matched, "mismatch_action": otherwise, "filter": rules}});
    let arch = std::env::consts::ARCH.try_into().unwrap();
    let mut filters = seccompiler::compile_from_json(json.to_string().as_bytes(), arch).unwrap();
    filters.remove("main").unwrap()
}

/// `shardcache serve` with `filter` installed in the child just before it runs, as a container
/// runtime does.
fn serve_under(config: &std::path::Path, admin: u16, filter: seccompiler::BpfProgram) -> common::Served {
    use std::os::unix::process::CommandExt;
    common::Served::start_with(config, admin, move |command| {
        // SAFETY: between fork and exec the closure only makes the prctl and seccomp calls.
        unsafe {
            command.pre_exec(move || seccompiler::apply_filter(&filter).map_err(std::io::Error::other));
        }
    })
}

/// A local-directory upstream with one 20 MiB object and a disk tier; returns (S3 address,
/// admin port, config path, the object).
fn seccomp_setup(dir: &std::path::Path) -> (SocketAddr, u16, std::path::PathBuf, Vec<u8>) {
    std::fs::create_dir_all(dir.join("data/b")).unwrap();
    let body = common::data(20 << 20, 9);
    std::fs::write(dir.join("data/b/o"), &body).unwrap();
    let (s3, admin) = (common::free_port(), common::free_port());
    let addr: SocketAddr = format!("127.0.0.1:{s3}").parse().unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {addr}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\n\
             graceful_shutdown_timeout_seconds: 1\n\
             cache:\n  memory_bytes: 8388608\n  disk:\n    path: {}\n    capacity_bytes: 134217728\n\
             upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
            dir.join("cache").display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    (addr, admin, config, body)
}

async fn metrics(admin: u16) -> String {
    common::get(format!("127.0.0.1:{admin}").parse().unwrap(), "/metrics", &[])
        .await
        .text()
}

/// The disk tier runs on `engine`, and in the round after a restart (round 1) it served chunks
/// written before it.
async fn assert_disk_tier(admin: u16, engine: &str, round: u32) {
    let text = metrics(admin).await;
    let info = format!("shardcache_disk_io_engine_info{{engine=\"{engine}\"}} 1");
    assert!(text.contains(&info), "round {round}: {text}");
    if round == 1 {
        assert!(metric(&text, "shardcache_served_bytes_total{source=\"disk\"}") > 0.0);
    }
}

async fn get_object(addr: SocketAddr) -> Vec<u8> {
    let r = common::get(addr, "/b/o", &[]).await;
    assert_eq!(r.status, 200);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_io_uring_refused_by_seccomp_the_disk_tier_runs_on_psync() {
    // As under a container runtime's default profile (containerd 2.x, Docker 25+).
    let dir = tempfile::tempdir().unwrap();
    let (addr, admin, config, body) = seccomp_setup(dir.path());
    let refuse = ["io_uring_setup", "io_uring_enter", "io_uring_register"];
    for round in 0..2 {
        let eperm = serde_json::json!({"errno": libc::EPERM});
        let served = serve_under(&config, admin, seccomp_filter(&refuse, eperm, "allow".into()));
        assert!(get_object(addr).await == body, "round {round}");
        assert_disk_tier(admin, "psync", round).await;
        drop(served);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_seccomp_profile_lets_shardcache_run_on_io_uring() {
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("helm/shardcache/files/seccomp.json").unwrap()).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let allowed: Vec<&str> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|rule| rule["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (addr, admin, config, body) = seccomp_setup(dir.path());
    for round in 0..2 {
        let eperm = serde_json::json!({"errno": libc::EPERM});
        let mut served = serve_under(&config, admin, seccomp_filter(&allowed, "allow".into(), eperm));
        // Cold (fills and disk writes), then again; after the restart, disk hits.
        for _ in 0..2 {
            assert!(get_object(addr).await == body, "round {round}");
        }
        assert_disk_tier(admin, "io_uring", round).await;
        served.signal(libc::SIGTERM);
        let status = served.child.wait().unwrap();
        assert!(
            status.success(),
            "round {round}: shardcache stopped with {status} under the profile"
        );
    }
}
