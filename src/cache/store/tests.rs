use std::os::unix::fs::FileExt;

use super::*;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = MIB;

fn options(dir: &Path, capacity: u64, engine: IoEngineKind) -> StoreOptions {
    StoreOptions {
        path: dir.to_path_buf(),
        capacity_bytes: capacity,
        chunk_size: CHUNK,
        // tmpfs refuses O_DIRECT; the fallback is exercised where the temp dir is one.
        direct: true,
        io_engine: engine,
    }
}

async fn open(dir: &Path, capacity: u64, engine: IoEngineKind) -> (Store, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(
        &options(dir, capacity, engine),
        metrics.clone(),
        tokio::runtime::Handle::current(),
    )
    .await
    .unwrap();
    (store, metrics)
}

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
async fn entries_round_trip_and_survive_a_reopen_on_both_engines() {
    for engine in [IoEngineKind::Uring, IoEngineKind::Psync] {
        let dir = tempfile::tempdir().unwrap();
        let values = [
            chunk(1, 10),
            chunk(2, 3000),
            chunk(3, CHUNK as usize),
            chunk(4, 12345),
            Bytes::new(),
        ];
        {
            let (store, _) = open(dir.path(), 64 * MIB, engine).await;
            for (i, v) in values.iter().enumerate() {
                put(&store, i as u64, v);
            }
            store.wait().await;
            for (i, v) in values.iter().enumerate() {
                assert!(get(&store, i as u64).await.as_ref() == Some(v), "{engine:?} entry {i}");
            }
        }
        let (store, _) = open(dir.path(), 64 * MIB, engine).await;
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
        let (store, _) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
        for seed in 0..5 {
            put(&store, 7, &chunk(seed, 200_000));
        }
        store.wait().await;
        assert!(get(&store, 7).await == Some(chunk(4, 200_000)));
    }
    let (store, _) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
    assert_eq!(store.entries(), 1);
    assert!(get(&store, 7).await == Some(chunk(4, 200_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_beats_a_queued_write_and_stays_deleted_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
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
    let (store, _) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
    assert_eq!(store.entries(), 0, "a deleted entry came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_drops_the_keep_alive_of_a_write_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
    let keep = Arc::new(());
    store.enqueue(1, b"k".to_vec(), 2, chunk(1, CHUNK as usize), Box::new(keep.clone()));
    store.delete(1);
    assert_eq!(Arc::strong_count(&keep), 1, "the deleted entry is still kept alive");
    store.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_bytes_read_as_a_counted_miss() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
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
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
    let slots = store.shared.geometry.chunk_slots as u64;
    for hash in 0..slots {
        put(&store, hash, &chunk(hash as u8, CHUNK as usize));
    }
    store.wait().await;
    assert_eq!(metrics.disk_evictions.get(), 0);
    // Entry 0 is read, so it gets a second chance; then one more entry needs a slot.
    assert!(get(&store, 0).await.is_some());
    put(&store, slots, &chunk(0, CHUNK as usize));
    store.wait().await;
    assert_eq!(metrics.disk_evictions.get(), 1);
    assert!(get(&store, 0).await.is_some(), "the entry just read was evicted");
    assert!(get(&store, 1).await.is_none(), "the entry not read was kept");
    assert!(get(&store, slots).await == Some(chunk(0, CHUNK as usize)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_geometry_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
        put(&store, 1, &chunk(1, 100));
        store.wait().await;
    }
    let (store, _) = open(dir.path(), 80 * MIB, IoEngineKind::Uring).await;
    assert_eq!(store.entries(), 0);
    assert!(get(&store, 1).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_chunk_write_reads_as_a_miss_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let g;
    let slot;
    {
        let (store, _) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
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
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngineKind::Uring).await;
    assert!(get(&store, 1).await.is_none());
    assert_eq!(metrics.cache_read_errors.get(), 1);
}
