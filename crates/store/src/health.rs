//! Disk faults: counted I/O failures, the degraded state, and the check that ends it.
//!
//! Three failures in a row, or the store's file removed or replaced under it (its device and
//! inode are checked every [`HEALTH_CHECK`]), make the store degraded: it reads and writes
//! nothing and the cache serves from memory and the upstream. The same check then probes the
//! disk (a write and read-back of a block kept past the layout's end) or re-creates a removed
//! file, empty, and the store resumes when that works: no restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::file::{self, random_u64};
use super::format::{Superblock, BLOCK};
use super::io::Io;
use super::{Index, Shared};
use crate::buf::DiskBuf;

/// I/O failures in a row that make the store degraded.
const FAILURES_TO_DEGRADE: u32 = 3;
/// How often the store checks that its file is still there, and when degraded, the disk.
pub(super) const HEALTH_CHECK: Duration = Duration::from_secs(2);

impl Shared {
    pub(super) fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn degrade(&self, why: &str) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            self.metrics.disk_degraded.set(1);
            tracing::error!(
                path = %self.opts.path.display(),
                why,
                "the disk tier is degraded: serving from memory and upstream until the disk works again"
            );
        }
    }

    /// The periodic check: is the file still ours; and when degraded, does the disk work again.
    pub(super) async fn check_health(self: &Arc<Self>) {
        let (path, identity) = self.file.lock().clone();
        let gone = file::identity_at(&path) != Some(identity);
        if gone {
            self.degrade("the disk tier's file was removed or replaced");
        }
        if !self.degraded() {
            return;
        }
        let healed = if gone { self.reopen().await } else { self.probe().await };
        match healed {
            Ok(()) => {
                self.failures.store(0, Ordering::Relaxed);
                self.degraded.store(false, Ordering::Relaxed);
                self.metrics.disk_degraded.set(0);
                tracing::info!(path = %self.opts.path.display(), "the disk tier works again");
            }
            Err(e) => tracing::debug!(error = %e, "the disk tier is still failing"),
        }
    }

    /// Writes and reads back the probe block past the layout's end.
    async fn probe(&self) -> std::io::Result<()> {
        let offset = self.geometry.bytes();
        let mut block = DiskBuf::new(BLOCK as usize);
        block.fill(0);
        block[..8].copy_from_slice(&random_u64().to_le_bytes());
        let expected = block[..8].to_vec();
        let io = self.io();
        io.write(block, offset).await?;
        let back = io.read(DiskBuf::new(BLOCK as usize), offset).await?;
        match back[..8] == expected[..] {
            true => Ok(()),
            false => Err(std::io::Error::other("the probe block read back different bytes")),
        }
    }

    /// Re-creates a removed or replaced file, empty, with a new epoch, and swaps it in.
    async fn reopen(self: &Arc<Self>) -> std::io::Result<()> {
        let opts = &self.opts;
        let opened = file::open(&opts.path, self.capacity, opts.direct, false)?;
        let io = Io::new(Arc::new(opened.file), opts.io_engine).await;
        let sb = Superblock {
            geometry: self.geometry,
            epoch: random_u64(),
            sealed: self.keys.is_some(),
        };
        io.write(sb.encode(), 0).await?;
        // Writes still running against the old file find their slots gone and leave them.
        *self.lock() = Index::new(&self.geometry);
        self.epoch.store(sb.epoch, Ordering::Relaxed);
        self.io.store(Arc::new(io));
        *self.file.lock() = (opened.path, opened.identity);
        tracing::info!(path = %opts.path.display(), "re-created the disk tier's file; it starts empty");
        Ok(())
    }

    pub(super) fn io_error(&self, op: &str, e: &std::io::Error) {
        self.metrics.disk_io_errors.with_label_values(&[op]).inc();
        tracing::warn!(op, error = %e, "disk tier I/O failed");
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_TO_DEGRADE {
            self.degrade("disk I/O keeps failing");
        }
    }
}
