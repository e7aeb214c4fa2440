//! Disk faults: counted I/O failures, the degraded state, and the check that ends it.
//!
//! Three failures in a row, one I/O that outlasts its deadline (a hung device), or the store's
//! file removed or replaced under it (its device and inode are checked every [`HEALTH_CHECK`])
//! make the store degraded: it submits no I/O at all, and the cache serves from memory and the
//! upstream. The same check then probes the disk (a write and read-back of a block kept past the
//! layout's end; one probe in the kernel at a time, however long the disk holds it) or re-creates
//! a removed file, empty. When that works, the header clears the store skipped meanwhile are
//! written (else a deleted entry would come back at the next start) and it resumes: no restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::file::{self, random_u64};
use super::format::{Superblock, BLOCK};
use super::io::{Io, IO_TIMEOUT};
use super::{zeroed, Index, Shared};
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
            // Clears that failed while the disk worked are retried.
            if let Err(e) = self.replay_clears().await {
                self.io_error("clear", &e);
            }
            return;
        }
        let healed = match gone {
            true => self.reopen().await,
            false => match self.probe().await {
                Ok(()) => self.replay_clears().await,
                Err(e) => Err(e),
            },
        };
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

    /// Writes and reads back the probe block past the layout's end, waiting for it at most
    /// twice the I/O deadline. A probe the disk still holds is not joined by another: a hung
    /// disk keeps one probe, not one per check.
    async fn probe(self: &Arc<Self>) -> std::io::Result<()> {
        if self.probing.swap(true, Ordering::AcqRel) {
            return Err(std::io::Error::other("the last probe has not come back from the disk"));
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        let shared = self.clone();
        self.runtime.spawn(async move {
            let result = shared.probe_block().await;
            shared.probing.store(false, Ordering::Release);
            let _ = done.send(result);
        });
        match tokio::time::timeout(2 * IO_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            _ => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    async fn probe_block(&self) -> std::io::Result<()> {
        let offset = self.geometry.bytes();
        let mut block = DiskBuf::new(BLOCK as usize);
        block.fill(0);
        block[..8].copy_from_slice(&random_u64().to_le_bytes());
        let expected = block[..8].to_vec();
        let io = self.io();
        io.write_unbounded(block, offset).await?;
        let back = io.read_unbounded(DiskBuf::new(BLOCK as usize), offset).await?;
        match back[..8] == expected[..] {
            true => Ok(()),
            false => Err(std::io::Error::other("the probe block read back different bytes")),
        }
    }

    /// Writes the header clears skipped or failed so far, releasing each slot once it is done;
    /// the rest wait for the next try.
    async fn replay_clears(&self) -> std::io::Result<()> {
        let slots = std::mem::take(&mut *self.unclear.lock());
        for (i, &loc) in slots.iter().enumerate() {
            if let Err(e) = self.io().write(zeroed(), self.geometry.header_offset(loc)).await {
                self.unclear.lock().extend_from_slice(&slots[i..]);
                return Err(e);
            }
            self.release_cleared(loc);
        }
        Ok(())
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
        self.unclear.lock().clear();
        self.epoch.store(sb.epoch, Ordering::Relaxed);
        self.io.store(Arc::new(io));
        *self.file.lock() = (opened.path, opened.identity);
        tracing::info!(path = %opts.path.display(), "re-created the disk tier's file; it starts empty");
        Ok(())
    }

    pub(super) fn io_error(&self, op: &str, e: &std::io::Error) {
        self.metrics.disk_io_errors.with_label_values(&[op]).inc();
        tracing::warn!(op, error = %e, "disk tier I/O failed");
        if e.kind() == std::io::ErrorKind::TimedOut {
            self.degrade("a disk I/O outlasted its deadline");
        } else if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_TO_DEGRADE {
            self.degrade("disk I/O keeps failing");
        }
    }
}
