//! The disk tier failing under reads and writes: an entry damaged on disk after it was written,
//! and a disk behind a fault-injecting filesystem (`common/faulty_fs.rs`) that hangs or writes
//! short.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::faulty_fs::{Fault, FaultyFs};
use common::{data, free_port, Proxy, S3Server};

const CHUNK: u64 = 1 << 20;

/// The faulty filesystem, or `None` (the test then skips, saying why) where this machine cannot
/// mount FUSE; where `SHARDCACHE_REQUIRE_FUSE` is set (CI), that fails the test instead.
fn faulty_fs() -> Option<FaultyFs> {
    match FaultyFs::mount() {
        Ok(fs) => Some(fs),
        Err(why) if std::env::var_os("SHARDCACHE_REQUIRE_FUSE").is_none() => {
            eprintln!("skipped: {why} (set SHARDCACHE_REQUIRE_FUSE to fail instead)");
            None
        }
        Err(why) => panic!("FUSE is required here: {why}"),
    }
}

/// The time `path` took to read whole through `proxy`, checked against `want`.
async fn timed_read(proxy: &Proxy, path: &str, want: &[u8]) -> Duration {
    let started = Instant::now();
    let got = common::get(proxy.addr, path, &[]).await;
    assert!(got.status == 200 && got.body == want, "{path} read wrong");
    started.elapsed()
}

/// shardcache in front of `s3` with 1 MiB chunks and a disk tier at `dir`, unencrypted so the
/// tests can find an object's bytes in the store file.
fn proxy(s3: &S3Server, dir: &Path) -> Proxy {
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nthreads: 2\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\n\
         cache:\n  chunk_size: {CHUNK}\n  memory_bytes: 33554432\n  read_ahead_chunks: 0\n  \
         disk:\n    path: {}\n    capacity_bytes: 134217728\n    encryption: none\n\
         upstreams:\n  up:\n    kind: s3\n    endpoint: http://{}\n    credentials:\n      source: static\n      \
         access_key_id: {}\n      secret_access_key: {}\ndefault_upstream: up\n",
        free_port(),
        free_port(),
        dir.display(),
        s3.addr,
        common::ACCESS_KEY,
        common::SECRET_KEY,
    );
    Proxy::start_yaml(&yaml)
}

/// Flips a bit of the first copy of `needle` found in the files under `dir`; whether it found one.
fn damage(dir: &Path, needle: &[u8]) -> bool {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(mut bytes) = std::fs::read(&path) else { continue };
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at + needle.len() / 2] ^= 0x08;
            std::fs::write(&path, bytes).unwrap();
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_read_failing_midway_is_finished_afresh_and_the_entry_replaced() {
    let s3 = S3Server::start().await;
    s3.bucket("data");
    // Bytes that do not repeat, so that the ones damaged are found where they are meant to be.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let object: Vec<u8> = (0..10 * CHUNK as usize + 300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    s3.put("data", "shard.tar", object.clone()).await;
    let cache = tempfile::tempdir().unwrap();
    let first = proxy(&s3, cache.path());
    let got = common::get(first.addr, "/data/shard.tar", &[]).await;
    assert!(got.status == 200 && got.body == object, "the cold read");
    first.stop();

    // Past the first checked group (128 KiB) of chunk 9, which the client reads as a view (it
    // has taken 8 MiB quickly by then): the read fails after bytes of the chunk were sent.
    let at = 9 * CHUNK as usize + 600_000;
    assert!(
        damage(cache.path(), &object[at..at + 64]),
        "the chunk's bytes are in the store"
    );
    s3.clear();
    let proxy = proxy(&s3, cache.path());
    let got = common::get(proxy.addr, "/data/shard.tar", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), object.len(), "the whole body");
    assert!(got.body == object, "the right bytes");
    assert_eq!(proxy.metric("shardcache_disk_reads_resumed_total").await, 1.0);
    assert_eq!(proxy.metric("shardcache_cache_read_errors_total").await, 1.0);
    let fetched: Vec<Option<String>> = s3
        .requests("GET", "data", "shard.tar")
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(
        fetched,
        [Some(format!("bytes={}-{}", 9 * CHUNK, 10 * CHUNK - 1))],
        "chunk 9 fetched afresh, once; the others read from the disk"
    );
    // The fresh fill replaced the dropped entry: the next read costs the upstream nothing.
    s3.clear();
    let again = common::get(proxy.addr, "/data/shard.tar", &[]).await;
    assert!(again.status == 200 && again.body == object);
    assert_eq!(s3.requests("GET", "data", "shard.tar").len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_disk_costs_the_read_that_met_it_the_deadline_and_nothing_after() {
    let Some(fs) = faulty_fs() else { return };
    let s3 = S3Server::start().await;
    s3.bucket("data");
    let objects: Vec<Vec<u8>> = (0..4).map(|i| data(CHUNK as usize + 1000 * i, i as u8)).collect();
    for (i, bytes) in objects.iter().enumerate() {
        s3.put("data", &format!("o{i}"), bytes.clone()).await;
    }
    // Objects 0 and 1 go to the disk tier; after a restart only the disk holds them.
    let first = proxy(&s3, &fs.file);
    for (i, bytes) in objects.iter().enumerate().take(2) {
        let _ = timed_read(&first, &format!("/data/o{i}"), bytes).await;
    }
    first.stop();
    let proxy = proxy(&s3, &fs.file);
    let _ = timed_read(&proxy, "/data/o2", &objects[2]).await;
    assert_eq!(proxy.metric("shardcache_disk_degraded").await, 0.0);

    fs.set(Fault::Hang);
    // A memory hit never meets the disk.
    let hit = timed_read(&proxy, "/data/o2", &objects[2]).await;
    assert!(hit < Duration::from_millis(300), "a memory hit took {hit:?}");
    // A chunk only the hung disk holds: the read waits the I/O deadline (2 s), then the
    // upstream serves it.
    let met = timed_read(&proxy, "/data/o0", &objects[0]).await;
    assert!(
        met < Duration::from_millis(3500),
        "the read that met the hung disk took {met:?}"
    );
    assert_eq!(proxy.metric("shardcache_disk_degraded").await, 1.0);
    let ready = common::get(proxy.admin, "/readyz", &[]).await;
    assert!(
        ready.status == 200 && ready.text().contains("degraded"),
        "{}",
        ready.text()
    );
    // Degraded: the other disk-only chunk and a cold miss cost nothing, and the disk gets no
    // I/O but one probe, which it holds.
    let ops = fs.ops().len();
    let other = timed_read(&proxy, "/data/o1", &objects[1]).await;
    let cold = timed_read(&proxy, "/data/o3", &objects[3]).await;
    assert!(
        other < Duration::from_millis(1000),
        "a read after the degrade took {other:?}"
    );
    assert!(cold < Duration::from_millis(1000), "a cold miss took {cold:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let since: Vec<_> = fs.ops()[ops..].to_vec();
    assert!(since.len() <= 1, "the degraded disk got {since:?}");

    // The disk answers again: the probe returns, and the tier resumes.
    fs.set(Fault::None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.metric("shardcache_disk_degraded").await != 0.0 {
        assert!(Instant::now() < deadline, "the disk tier did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(common::get(proxy.admin, "/readyz", &[]).await.text(), "ready\n");
    eprintln!("memory hit {hit:?}, read that met the hung disk {met:?}, after: disk-only {other:?}, cold {cold:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_disk_takes_in_short_pieces_are_finished_and_read_back_whole() {
    let Some(fs) = faulty_fs() else { return };
    let s3 = S3Server::start().await;
    s3.bucket("data");
    let objects: Vec<Vec<u8>> = (0..3)
        .map(|i| data(CHUNK as usize + 70_000 * i, 20 + i as u8))
        .collect();
    for (i, bytes) in objects.iter().enumerate() {
        s3.put("data", &format!("o{i}"), bytes.clone()).await;
    }
    let first = proxy(&s3, &fs.file);
    // io_uring is asked for; on FUSE the disk tier takes psync (io_uring retries a short FUSE
    // write from the wrong offset, in the kernel: see crates/store/src/io.rs).
    let psync = "shardcache_disk_io_engine_info{engine=\"psync\"}";
    assert_eq!(first.metric(psync).await, 1.0);
    fs.set(Fault::ShortWrites);
    for (i, bytes) in objects.iter().enumerate() {
        let _ = timed_read(&first, &format!("/data/o{i}"), bytes).await;
    }
    first.stop();
    fs.set(Fault::None);
    // Each short write was followed by one for the rest, from the byte it stopped at.
    let writes: Vec<_> = fs.ops().into_iter().filter(|op| op.write).collect();
    let continued = writes
        .iter()
        .filter(|a| {
            a.len > 4096
                && writes
                    .iter()
                    .any(|b| b.offset == a.offset + 4096 && b.len == a.len - 4096)
        })
        .count();
    assert!(continued >= 3, "{continued} writes were taken short and continued");
    // After a restart the disk serves every byte: the upstream is asked for metadata only.
    s3.clear();
    let proxy = proxy(&s3, &fs.file);
    for (i, bytes) in objects.iter().enumerate() {
        let _ = timed_read(&proxy, &format!("/data/o{i}"), bytes).await;
    }
    let gets: usize = (0..3).map(|i| s3.requests("GET", "data", &format!("o{i}")).len()).sum();
    assert_eq!(gets, 0, "a chunk written short was not whole on disk");
    assert_eq!(proxy.metric("shardcache_cache_read_errors_total").await, 0.0);
}
