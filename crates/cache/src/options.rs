//! What the cache is opened with (the `cache` section of the config, as `app` turns it into
//! options), and why opening it can fail.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::{CacheKey, IoEngine};
use shardcache_store::{KeyError, StoreError};

/// Cache settings, from the `cache` section of the config.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// Memory tier capacity in bytes.
    pub memory_bytes: u64,
    /// Disk tier, if any.
    pub disk: Option<DiskOptions>,
    /// Buckets whose objects are never written to the disk tier.
    pub memory_only: MemoryOnly,
}

/// Upstream buckets (upstream name -> bucket names) whose objects stay in the memory tier: nothing
/// of them, chunks or metadata, is ever written to local disk.
#[derive(Clone, Debug, Default)]
pub struct MemoryOnly(HashMap<String, HashSet<String>>);

impl MemoryOnly {
    /// Adds bucket `bucket` of upstream `upstream`.
    pub fn insert(&mut self, upstream: &str, bucket: &str) {
        self.0.entry(upstream.to_owned()).or_default().insert(bucket.to_owned());
    }

    /// Whether `key` belongs to a memory-only bucket.
    pub fn covers(&self, key: &CacheKey) -> bool {
        let (CacheKey::Meta(o) | CacheKey::Chunk(o, ..)) = key;
        self.0
            .get(&*o.upstream)
            .is_some_and(|buckets| buckets.contains(&*o.bucket))
    }
}

/// Disk tier settings.
#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// Directory (created if missing; the store is a file in it) or block device / file.
    pub path: PathBuf,
    /// Capacity in bytes.
    pub capacity_bytes: u64,
    /// Open with O_DIRECT.
    pub direct: bool,
    /// Bytes of chunk writes allowed to wait for the disk.
    pub write_queue_bytes: u64,
    /// I/O engine.
    pub io_engine: IoEngine,
    /// The master key file, for encryption at rest; `None` stores entries in the clear.
    pub key_file: Option<PathBuf>,
}

/// The cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// foyer refused the device or the settings.
    #[error("cannot open the cache at {path}: {source}")]
    Open {
        /// Disk tier path.
        path: String,
        /// foyer's error.
        source: foyer::Error,
    },
    /// The disk tier could not be opened.
    #[error("cannot open the disk tier: {0}")]
    Store(#[from] StoreError),
    /// The disk tier's key file is unusable.
    #[error("cache.disk.key_file: {0}")]
    Keys(#[from] KeyError),
    /// The background runtime could not start.
    #[error("cannot start the cache runtime: {0}")]
    Runtime(#[from] std::io::Error),
}
