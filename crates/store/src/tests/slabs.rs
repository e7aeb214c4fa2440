//! Slabs cut into slots, block devices, and the recovery measurement.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_between_inline_and_a_chunk_share_cut_slabs_and_survive_a_reopen() {
    for keys in [Some(KEY_1), None] {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [5_000, 12_000, 20_000, 100_000, 300_000, 600_000];
        let values: Vec<Bytes> = (0..60).map(|i| chunk(i as u8, sizes[i % sizes.len()])).collect();
        let expected_slabs = {
            let (store, _) = open_with(dir.path(), 64 * MIB, IoEngine::Uring, keys).await;
            for (i, v) in values.iter().enumerate() {
                put(&store, i as u64, v);
            }
            store.wait().await;
            let g = store.shared.geometry;
            // Each value sits in the smallest slot that holds it, and slabs of one cut are
            // shared: n values of a class take ceil(n / slots per slab) slabs.
            let mut per_class = HashMap::new();
            for (i, v) in values.iter().enumerate() {
                let Loc::Slab { class, .. } = store.shared.lock().map[&(i as u64)] else {
                    panic!("a {} byte value went inline", v.len());
                };
                let (_, room) = g.cut(class).unwrap();
                assert!(room >= v.len() as u64);
                assert!(g.cut(class + 1).is_none_or(|(_, finer)| finer < v.len() as u64));
                *per_class.entry(class).or_insert(0u64) += 1;
            }
            assert!(per_class.len() >= 4, "{per_class:?}");
            let slabs: u64 = per_class
                .iter()
                .map(|(&class, &n)| n.div_ceil(u64::from(g.cut(class).unwrap().0)))
                .sum();
            assert_eq!(store.used_bytes(), slabs * (g.slab_bytes + BLOCK));
            for (i, v) in values.iter().enumerate() {
                assert!(get(&store, i as u64).await.as_ref() == Some(v), "entry {i}");
            }
            slabs
        };
        let (store, _) = open_with(dir.path(), 64 * MIB, IoEngine::Uring, keys).await;
        assert_eq!(store.entries(), values.len());
        assert_eq!(
            store.used_bytes(),
            expected_slabs * (store.shared.geometry.slab_bytes + BLOCK)
        );
        for (i, v) in values.iter().enumerate() {
            assert!(
                get(&store, i as u64).await.as_ref() == Some(v),
                "entry {i} after reopen"
            );
            let part = read_all(&store, i as u64, 1000..v.len() as u64 - 7).await.unwrap();
            assert!(part[..] == v[1000..v.len() - 7], "range of entry {i}");
        }
        // Deleting every value frees the slabs; a new write reuses them.
        for i in 0..values.len() {
            store.delete(i as u64);
        }
        store.wait().await;
        assert_eq!(store.used_bytes(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slab_cut_again_leaves_no_old_slot_behind() {
    let dir = tempfile::tempdir().unwrap();
    let small = 20_000;
    let slabs;
    {
        let (store, metrics) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
        slabs = store.shared.geometry.slabs as u64;
        // Two small values in slab 0, the other slabs full of chunks, all of them read since.
        put(&store, 1000, &chunk(1, small));
        put(&store, 1001, &chunk(2, small));
        for hash in 1..slabs {
            put(&store, hash, &chunk(hash as u8, CHUNK as usize));
        }
        store.wait().await;
        for hash in 1..slabs {
            assert!(get(&store, hash).await.is_some());
        }
        // A value of another size: CLOCK evicts slab 0 (not read) whole and cuts it coarser,
        // so the header of the old second slot sits where the new cut's second header goes.
        // (Warmed, so that the admission policy takes it in place of values it never saw read.)
        store.admission().favour(2000);
        put(&store, 2000, &chunk(3, 100_000));
        store.wait().await;
        assert_eq!(metrics.disk_evictions.get(), 2);
        assert!(!store.contains(1000) && !store.contains(1001));
        let Loc::Slab { slab: 0, sub: 0, .. } = store.shared.lock().map[&2000] else {
            panic!("the new value is not in slab 0");
        };
    }
    let (store, metrics) = open(dir.path(), 64 * MIB, IoEngine::Uring).await;
    assert_eq!(
        store.entries() as u64,
        slabs,
        "an old slot came back: {:?}",
        store.shared.lock().map
    );
    assert!(get(&store, 2000).await == Some(chunk(3, 100_000)));
    assert_eq!(metrics.cache_read_errors.get(), 0);
}

/// A loop device over a file, detached when dropped.
struct LoopDevice(std::path::PathBuf);

impl LoopDevice {
    /// `None` where loop devices cannot be set up (not root, none in this container).
    fn attach(file: &Path) -> Option<Self> {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .ok()?;
        let device = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && device.starts_with("/dev/loop")).then(|| Self(device.trim().into()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_device_holds_the_store_sized_to_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("device.img");
    std::fs::File::create(&backing).unwrap().set_len(64 * MIB).unwrap();
    let Some(device) = LoopDevice::attach(&backing) else {
        eprintln!("skipped: no loop device can be attached here (needs root and /dev/loop-control)");
        return;
    };
    let values = [chunk(1, CHUNK as usize), chunk(2, 100_000), chunk(3, 100)];
    for round in 0..2 {
        // More than the device holds: the device's size is used.
        let (store, _) = open(&device.0, 1 << 30, IoEngine::Uring).await;
        assert!(store.shared.geometry.bytes() <= 64 * MIB);
        if round == 0 {
            for (i, v) in values.iter().enumerate() {
                put(&store, i as u64, v);
            }
            store.wait().await;
        }
        for (i, v) in values.iter().enumerate() {
            assert!(
                get(&store, i as u64).await.as_ref() == Some(v),
                "entry {i} in round {round}"
            );
        }
    }
}

/// Recovery time of a full tier, by value size: not a check, a measurement (ARCHITECTURE.md and
/// benches/NOTES.md quote it). `SHARDCACHE_RECOVERY_DIR` picks the disk (default: the temp dir).
/// `cargo test --release --lib recovery_time -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement that writes 10 GiB per value size"]
async fn recovery_time_of_a_full_10_gib_tier() {
    let base = std::env::var_os("SHARDCACHE_RECOVERY_DIR").map_or_else(std::env::temp_dir, Into::into);
    for size in [8 << 20, 100_000, 20_000] {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let opts = StoreOptions {
            chunk_size: 8 * MIB,
            ..options(dir.path(), 10 << 30, IoEngine::Uring, Some(KEY_1))
        };
        let value = chunk(1, size);
        let store = open_opts(&opts).await;
        let started = std::time::Instant::now();
        let mut hash = 0;
        // Until the first eviction: every slab holds entries.
        let metrics = store.shared.metrics.clone();
        while metrics.disk_evictions.get() == 0 {
            for _ in 0..64 {
                put(&store, hash, &value);
                hash += 1;
            }
            store.wait().await;
        }
        let filled = started.elapsed();
        let entries = store.entries();
        drop(store);
        let started = std::time::Instant::now();
        let store = open_opts(&opts).await;
        let recovery = started.elapsed();
        assert_eq!(store.entries(), entries);
        eprintln!("values of {size} bytes: {entries} entries written in {filled:.1?}; recovered in {recovery:.2?}");
    }
}
