use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use super::io::IO_TIMEOUT;
use super::*;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = MIB;

fn options(dir: &Path, capacity: u64, engine: IoEngine, keys: Option<&str>) -> StoreOptions {
    StoreOptions {
        path: dir.to_path_buf(),
        capacity_bytes: capacity,
        chunk_size: CHUNK,
        // tmpfs refuses O_DIRECT; the fallback is exercised where the temp dir is one.
        direct: true,
        io_engine: engine,
        keys: keys.map(|text| Arc::new(Keys::parse(text).unwrap())),
    }
}

async fn open_with(dir: &Path, capacity: u64, engine: IoEngine, keys: Option<&str>) -> (Store, Arc<StoreMetrics>) {
    let store = open_opts(&options(dir, capacity, engine, keys)).await;
    let metrics = store.shared.metrics.clone();
    (store, metrics)
}

/// A store of `opts`, with metrics of its own.
async fn open_opts(opts: &StoreOptions) -> Store {
    let metrics = Arc::new(StoreMetrics::new(&shardcache_metrics::Registry::new()));
    Store::open(opts, metrics, tokio::runtime::Handle::current())
        .await
        .unwrap()
}

/// A store encrypted with one key, as by default.
async fn open(dir: &Path, capacity: u64, engine: IoEngine) -> (Store, Arc<StoreMetrics>) {
    open_with(dir, capacity, engine, Some(KEY_1)).await
}

const KEY_1: &str = "1:1111111111111111111111111111111111111111111111111111111111111111";
const KEY_2: &str = "2:2222222222222222222222222222222222222222222222222222222222222222";

fn chunk(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn put(store: &Store, hash: u64, value: &Bytes) {
    store.enqueue(hash, format!("key-{hash}").into_bytes(), 2, value.clone(), Box::new(()));
}

async fn get(store: &Store, hash: u64) -> Option<Bytes> {
    let loaded = store.load(hash).await?;
    assert_eq!(loaded.key, format!("key-{hash}").into_bytes());
    assert_eq!(loaded.kind, 2);
    Some(loaded.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_round_trip_and_survive_a_reopen_on_both_engines_sealed_or_not() {
    for (engine, keys) in [
        (IoEngine::Uring, Some(KEY_1)),
        (IoEngine::Psync, Some(KEY_1)),
        (IoEngine::Uring, None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let values = [
            chunk(1, 10),
            chunk(2, 3000),
            chunk(3, CHUNK as usize),
            chunk(4, 12345),
            Bytes::new(),
        ];
        {
            let (store, _) = open_with(dir.path(), 64 * MIB, engine, keys).await;
            for (i, v) in values.iter().enumerate() {
                put(&store, i as u64, v);
            }
            store.wait().await;
            for (i, v) in values.iter().enumerate() {
                assert!(get(&store, i as u64).await.as_ref() == Some(v), "{engine:?} entry {i}");
            }
        }
        let (store, _) = open_with(dir.path(), 64 * MIB, engine, keys).await;
        assert_eq!(store.entries(), values.len());
        for (i, v) in values.iter().enumerate() {
            assert!(
                get(&store, i as u64).await.as_ref() == Some(v),
                "{engine:?} entry {i} after reopen"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_write_of_a_key_wins_now_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
        for seed in 0..5 {
            put(&store, 7, &chunk(seed, 200_000));
        }
        store.wait().await;
        assert!(get(&store, 7).await == Some(chunk(4, 200_000)));
    }
    let (store, _) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    assert_eq!(store.entries(), 1);
    assert!(get(&store, 7).await == Some(chunk(4, 200_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_beats_a_queued_write_and_stays_deleted_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
        // Deleted while its write is under way.
        put(&store, 1, &chunk(1, CHUNK as usize));
        store.delete(1);
        // Deleted once written.
        put(&store, 2, &chunk(2, 100));
        store.wait().await;
        assert!(get(&store, 2).await.is_some());
        store.delete(2);
        store.wait().await;
        assert!(get(&store, 1).await.is_none());
        assert!(get(&store, 2).await.is_none());
        assert!(!store.contains(1) && !store.contains(2));
    }
    let (store, _) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    assert_eq!(store.entries(), 0, "a deleted entry came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_drops_the_keep_alive_of_a_write_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    let keep = Arc::new(());
    store.enqueue(1, b"k".to_vec(), 2, chunk(1, CHUNK as usize), Box::new(keep.clone()));
    store.delete(1);
    assert_eq!(Arc::strong_count(&keep), 1, "the deleted entry is still kept alive");
    store.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_bytes_read_as_a_counted_miss() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    put(&store, 1, &chunk(1, CHUNK as usize));
    put(&store, 2, &chunk(2, 100));
    store.wait().await;
    let g = store.shared.geometry;
    let (chunk_slot, small_slot) = {
        let index = store.shared.lock();
        (index.map[&1], index.map[&2])
    };
    // One bit in the middle of the chunk's data, and one in the small entry's inline value.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(dir.path().join(STORE_FILE))
        .unwrap();
    for at in [g.data_offset(chunk_slot) + CHUNK / 2, g.header_offset(small_slot) + 100] {
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
    }
    assert!(get(&store, 1).await.is_none());
    assert!(get(&store, 2).await.is_none());
    assert_eq!(metrics.cache_read_errors.get(), 2);
    assert!(!store.contains(1), "a damaged entry stays indexed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_evicts_the_least_recently_used_by_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    let slots = store.shared.geometry.slabs as u64;
    for hash in 0..slots {
        put(&store, hash, &chunk(hash as u8, CHUNK as usize));
    }
    store.wait().await;
    assert_eq!(metrics.disk_evictions.get(), 0);
    // A newcomer read twice before (its admission count outranks the residents', never read
    // through the cache) needs a slot; entry 0 is read, so it gets a second chance.
    assert!(get(&store, 0).await.is_some());
    // (Reads in between, so that each read of it is not taken for the same pass's.)
    let between = |from| from..from + 10;
    for hash in [slots]
        .into_iter()
        .chain(between(1000))
        .chain([slots])
        .chain(between(2000))
        .chain([slots])
    {
        store.admission().touch(hash);
    }
    put(&store, slots, &chunk(0, CHUNK as usize));
    store.wait().await;
    assert_eq!(metrics.disk_evictions.get(), 1);
    assert!(get(&store, 0).await.is_some(), "the entry just read was evicted");
    assert!(get(&store, 1).await.is_none(), "the entry not read was kept");
    assert!(get(&store, slots).await == Some(chunk(0, CHUNK as usize)));

    // A newcomer never read before does not displace a resident.
    let declined = metrics.disk_admissions_declined.get();
    put(&store, slots + 2, &chunk(2, CHUNK as usize));
    store.wait().await;
    assert_eq!(metrics.disk_admissions_declined.get(), declined + 1);
    assert!(get(&store, slots + 2).await.is_none());
}

/// Small values share cut slabs: a full store of them, none read, takes no newcomer in their
/// place (it evicted them by plain CLOCK, so a dataset of small objects thrashed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_of_small_values_admits_like_one_of_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngine::Psync).await;
    let value = |hash: u64| chunk(hash as u8, 200 << 10);
    for hash in 0..600 {
        put(&store, hash, &value(hash));
        store.wait().await;
    }
    assert!(metrics.disk_admissions_declined.get() > 0, "the store never filled");
    assert_eq!(
        metrics.disk_evictions.get(),
        0,
        "never-read newcomers displaced residents"
    );
    assert!(get(&store, 0).await == Some(value(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_geometry_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
        put(&store, 1, &chunk(1, 100));
        store.wait().await;
    }
    let (store, _) = open(dir.path(), 80 * MIB, IoEngine::Uring).await;
    assert_eq!(store.entries(), 0);
    assert!(get(&store, 1).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_chunk_write_reads_as_a_miss_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let g;
    let slot;
    {
        let (store, _) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
        put(&store, 1, &chunk(1, CHUNK as usize));
        store.wait().await;
        g = store.shared.geometry;
        slot = store.shared.lock().map[&1];
    }
    // As if a crash came while another chunk was being written over this slot's data.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(STORE_FILE))
        .unwrap();
    file.write_all_at(&vec![0xAB; 64 << 10], g.data_offset(slot) + 4096)
        .unwrap();
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    assert!(get(&store, 1).await.is_none());
    assert_eq!(metrics.cache_read_errors.get(), 1);
}

/// Whether `needle` occurs anywhere in the store's file.
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    let file = std::fs::read(dir.join(STORE_FILE)).unwrap();
    file.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_entries_leave_neither_bytes_nor_keys_in_the_clear() {
    let secret = b"training-shard-0042.tar".repeat(200);
    for (keys, readable) in [(None, true), (Some(KEY_1), false)] {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open_with(dir.path(), 32 * MIB, IoEngine::Uring, keys).await;
        store.enqueue(
            1,
            b"bucket/private-name".to_vec(),
            2,
            Bytes::from(secret.clone()),
            Box::new(()),
        );
        store.enqueue(
            2,
            b"bucket/other-name".to_vec(),
            1,
            Bytes::from_static(b"tiny secret value"),
            Box::new(()),
        );
        store.wait().await;
        // The scan itself is checked by the unencrypted store, where it must find everything.
        for needle in [&secret[..64], b"private-name", b"tiny secret value"] {
            assert_eq!(
                on_disk(dir.path(), needle),
                readable,
                "{:?} sealed: {}",
                String::from_utf8_lossy(needle),
                keys.is_some()
            );
        }
        assert!(store.load(1).await.unwrap().value == secret);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_keys_still_decrypt_and_a_removed_key_makes_misses() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open_with(dir.path(), 64 * MIB, IoEngine::Uring, Some(KEY_1)).await;
        put(&store, 1, &chunk(1, 300_000));
        store.wait().await;
    }
    {
        // Rotated: key 2 writes, key 1 still reads.
        let rotated = format!("{KEY_2}\n{KEY_1}");
        let (store, _) = open_with(dir.path(), 64 * MIB, IoEngine::Uring, Some(&rotated)).await;
        assert!(get(&store, 1).await == Some(chunk(1, 300_000)));
        put(&store, 2, &chunk(2, 300_000));
        store.wait().await;
    }
    // Key 1 removed: what it wrote is a miss; what key 2 wrote still reads.
    let (store, _) = open_with(dir.path(), 64 * MIB, IoEngine::Uring, Some(KEY_2)).await;
    assert!(get(&store, 1).await.is_none());
    assert!(get(&store, 2).await == Some(chunk(2, 300_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_encryption_on_starts_the_store_empty() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open_with(dir.path(), 64 * MIB, IoEngine::Uring, None).await;
        put(&store, 1, &chunk(1, 100));
        store.wait().await;
    }
    let (store, _) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    assert_eq!(store.entries(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_io_degrades_the_store_and_it_resumes_when_the_disk_works() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    put(&store, 1, &chunk(1, 100_000));
    store.wait().await;
    assert!(get(&store, 1).await.is_some());

    store.shared.io().fail_with.store(libc::ENOSPC, Ordering::Relaxed);
    for hash in 10..13 {
        put(&store, hash, &chunk(2, 100_000));
    }
    store.wait().await;
    let errors = |op: &str| metrics.disk_io_errors.with_label_values(&[op]).get();
    // A failed write's slot clear fails too; a write enqueued once degraded is dropped instead.
    assert!(errors("write") >= 2 && errors("write") + errors("clear") >= 3);
    assert_eq!(
        metrics.disk_degraded.get(),
        1,
        "three failures in a row did not degrade the store"
    );
    // Degraded: nothing is read or written, and nothing hangs.
    assert!(get(&store, 1).await.is_none());
    let drops = metrics.disk_write_drops.get();
    put(&store, 20, &chunk(3, 100));
    assert_eq!(metrics.disk_write_drops.get(), drops + 1);

    store.shared.io().fail_with.store(0, Ordering::Relaxed);
    let deadline = Instant::now() + 4 * HEALTH_CHECK;
    while metrics.disk_degraded.get() == 1 {
        assert!(
            Instant::now() < deadline,
            "the store did not resume once the disk worked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        get(&store, 1).await.is_some(),
        "an entry from before the failure was lost"
    );
    put(&store, 21, &chunk(4, 100_000));
    store.wait().await;
    assert!(get(&store, 21).await == Some(chunk(4, 100_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_disk_degrades_at_its_first_deadline_and_gets_no_io_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    put(&store, 1, &chunk(1, 100_000));
    put(&store, 2, &chunk(2, 100_000));
    store.wait().await;

    let io = store.shared.io();
    io.stall.store(true, Ordering::Relaxed);
    let started = Instant::now();
    assert!(get(&store, 1).await.is_none(), "a hung read is a miss");
    let waited = started.elapsed();
    assert!(
        waited < IO_TIMEOUT + Duration::from_millis(500),
        "the read waited {waited:?}"
    );
    assert_eq!(metrics.disk_degraded.get(), 1, "one deadline degrades the store");
    assert_eq!(metrics.disk_io_errors.with_label_values(&["read"]).get(), 1);
    // Degraded: a read costs nothing, and a delete's header clear waits for the disk.
    let started = Instant::now();
    assert!(get(&store, 2).await.is_none());
    assert!(started.elapsed() < Duration::from_millis(100));
    store.delete(2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.shared.unclear.lock().len(), 1, "the clear went to the hung disk");

    io.stall.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + 4 * HEALTH_CHECK;
    while metrics.disk_degraded.get() == 1 {
        assert!(
            Instant::now() < deadline,
            "the store did not resume once the disk answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.shared.unclear.lock().is_empty(), "the skipped clear was written");
    assert!(get(&store, 1).await == Some(chunk(1, 100_000)));
    drop(store);
    // The deleted entry stays deleted across a restart; the other is still there.
    let (store, _) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    assert!(get(&store, 2).await.is_none(), "a deleted entry came back");
    assert!(get(&store, 1).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_cache_directory_is_noticed_and_re_created_empty() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (store, metrics) = open(&cache, 64 * MIB, IoEngine::Uring).await;
    put(&store, 1, &chunk(1, 100_000));
    store.wait().await;
    std::fs::remove_dir_all(&cache).unwrap();
    let deadline = Instant::now() + 4 * HEALTH_CHECK;
    while !cache.join(STORE_FILE).exists() {
        assert!(Instant::now() < deadline, "the removed store file was not re-created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while metrics.disk_degraded.get() == 1 {
        assert!(Instant::now() < deadline, "the store did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        get(&store, 1).await.is_none(),
        "an entry of the removed file was served"
    );
    put(&store, 2, &chunk(2, 100_000));
    store.wait().await;
    assert!(get(&store, 2).await == Some(chunk(2, 100_000)));
    drop(store);
    // The new file holds what was written after it was re-created.
    let (store, _) = open(&cache, 64 * MIB, IoEngine::Uring).await;
    assert!(get(&store, 2).await == Some(chunk(2, 100_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_reads_and_checks_only_the_segments_that_cover_it() {
    for keys in [Some(KEY_1), None] {
        let dir = tempfile::tempdir().unwrap();
        let (store, metrics) = open_with(dir.path(), 64 * MIB, IoEngine::Uring, keys).await;
        let value = chunk(7, CHUNK as usize - 1000);
        put(&store, 1, &value);
        put(&store, 2, &chunk(8, 2000));
        store.wait().await;
        let segment = store.shared.geometry.segment_bytes;
        let len = value.len() as u64;
        for range in [
            0..1,
            5..segment + 5,
            segment..2 * segment,
            len - 10..len,
            3 * segment + 1..3 * segment + 1,
            0..len,
        ] {
            let read = metrics.disk_io_bytes.with_label_values(&["read"]).get();
            let part = read_all(&store, 1, range.clone()).await.unwrap();
            assert!(part[..] == value[range.start as usize..range.end as usize], "{range:?}");
            let covering = (range.end.div_ceil(segment) * segment).min(len) - range.start / segment * segment;
            let expected = BLOCK + covering.next_multiple_of(BLOCK).max(BLOCK);
            assert_eq!(
                metrics.disk_io_bytes.with_label_values(&["read"]).get() - read,
                expected,
                "{range:?}"
            );
        }
        let small = read_all(&store, 2, 100..200).await.unwrap();
        assert!(small[..] == chunk(8, 2000)[100..200]);
        assert!(
            store.read_range(1, 0..len + 1).await.is_none(),
            "a range past the value"
        );

        // Damage in the third segment: ranges elsewhere still read; one whose first group covers
        // it is a miss; one that reaches it later fails there, after the pieces before it.
        let slot = store.shared.lock().map[&1];
        let at = store.shared.geometry.data_offset(slot) + 2 * segment + 7;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join(STORE_FILE))
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 1], at).unwrap();
        assert!(read_all(&store, 1, 0..segment).await.is_some());
        assert!(store.read_range(1, 2 * segment..2 * segment + 1).await.is_none());
        assert_eq!(metrics.cache_read_errors.get(), 1);
        put(&store, 3, &value);
        store.wait().await;
        let slot = store.shared.lock().map[&3];
        let at = store.shared.geometry.data_offset(slot) + 5 * segment + 7;
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 1], at).unwrap();
        let mut reader = store.read_range(3, 0..len).await.unwrap();
        let mut good = 0;
        let failed = loop {
            match reader.next().await {
                Ok(Some(piece)) => good += piece.len() as u64,
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        assert!(
            failed && good > 0 && good <= 5 * segment,
            "{good} bytes before the damage"
        );
        assert_eq!(metrics.cache_read_errors.get(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_larger_than_the_staging_buffer_are_written_in_pieces() {
    for keys in [Some(KEY_1), None] {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            chunk_size: 4 * MIB,
            ..options(dir.path(), 64 * MIB, IoEngine::Uring, keys)
        };
        let store = open_opts(&opts).await;
        // Three whole staging pieces and a short last one.
        let value = chunk(9, (3 * MIB + 12_345) as usize);
        put(&store, 1, &value);
        store.wait().await;
        assert!(get(&store, 1).await == Some(value.clone()));
        let across = MIB - 100..MIB + 100;
        let part = read_all(&store, 1, across.clone()).await.unwrap();
        assert!(part[..] == value[across.start as usize..across.end as usize]);
    }
}

/// Every piece of a range read, joined; `None` if the read did not start or failed midway.
async fn read_all(store: &Store, hash: u64, range: Range<u64>) -> Option<Vec<u8>> {
    let mut reader = store.read_range(hash, range).await?;
    assert_eq!(reader.key(), format!("key-{hash}").as_bytes());
    let mut out = Vec::new();
    while let Some(piece) = reader.next().await.ok()? {
        out.extend_from_slice(&piece);
    }
    Some(out)
}

mod slabs;
