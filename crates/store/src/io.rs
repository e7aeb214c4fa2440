//! Positioned reads and writes of whole [`DiskBuf`]s: through io_uring by default, through
//! `pread`/`pwrite` on tokio's blocking pool where io_uring cannot be set up (seccomp's EPERM in
//! a container runtime's default profile, ENOSYS, `kernel.io_uring_disabled`) or is not wanted.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use super::uring::Ring;
use crate::buf::{DiskBuf, ALIGN};

/// The disk tier's I/O engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring, falling back to `Psync` (logged) where it cannot be set up.
    #[default]
    Uring,
    /// `pread`/`pwrite` on tokio's blocking pool.
    Psync,
}

/// How long one read or write may take before it fails with `TimedOut`, which degrades the store
/// at once: a device that stopped answering costs the request that met it this long, and no
/// request after it. The buffer stays with the engine until the I/O ends, if it ever does.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The store's I/O engine.
pub struct Io {
    backend: Backend,
    timeout: Duration,
    /// Tests set an errno here to make every read and write fail with it.
    #[cfg(test)]
    pub fail_with: std::sync::atomic::AtomicI32,
    /// Tests set this to make every read and write hang while it is set.
    #[cfg(test)]
    pub stall: std::sync::atomic::AtomicBool,
}

enum Backend {
    Uring(Ring),
    Psync(Arc<File>),
}

impl Io {
    /// io_uring when `want`ed and working (tried with a read of the first block), else psync.
    pub async fn new(file: Arc<File>, want: IoEngine) -> Self {
        if want == IoEngine::Uring && on_fuse(&file) {
            // Measured on Linux 6.18: when a FUSE filesystem takes fewer bytes of a direct-I/O
            // write than asked, io_uring retries the rest inside the kernel from the write's
            // first offset, so the bytes land shifted while the completion reports them all
            // written. pwrite's short count is continued from the right offset.
            tracing::warn!(
                "the disk tier's file is on FUSE, where io_uring mishandles short writes; the disk tier uses psync"
            );
        } else if want == IoEngine::Uring {
            match Ring::start(file.clone()) {
                Ok(ring) => {
                    let io = Self::with(Backend::Uring(ring));
                    match io.read(DiskBuf::new(ALIGN), 0).await {
                        Ok(_) => return io,
                        Err(e) => tracing::warn!(error = %e, "io_uring reads fail here; the disk tier uses psync"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "io_uring is not available; the disk tier uses psync"),
            }
        }
        Self::with(Backend::Psync(file))
    }

    fn with(backend: Backend) -> Self {
        Self {
            backend,
            timeout: IO_TIMEOUT,
            #[cfg(test)]
            fail_with: Default::default(),
            #[cfg(test)]
            stall: Default::default(),
        }
    }

    /// The error tests asked for, if any, or a hang.
    async fn injected(&self) -> io::Result<()> {
        #[cfg(test)]
        {
            while self.stall.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            match self.fail_with.load(std::sync::atomic::Ordering::Relaxed) {
                0 => {}
                errno => return Err(io::Error::from_raw_os_error(errno)),
            }
        }
        Ok(())
    }

    /// `op`, failed with `TimedOut` if it takes longer than the timeout.
    async fn bounded<T>(&self, op: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        tokio::time::timeout(self.timeout, op)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// The engine in use, as `shardcache_disk_io_engine_info` names it.
    pub fn engine(&self) -> &'static str {
        match self.backend {
            Backend::Uring(_) => "io_uring",
            Backend::Psync(_) => "psync",
        }
    }

    /// Fills `buf` from `offset`, within the timeout.
    pub async fn read(&self, buf: DiskBuf, offset: u64) -> io::Result<DiskBuf> {
        self.bounded(self.read_unbounded(buf, offset)).await
    }

    /// Writes all of `buf` at `offset`, within the timeout.
    pub async fn write(&self, buf: DiskBuf, offset: u64) -> io::Result<DiskBuf> {
        self.bounded(self.write_unbounded(buf, offset)).await
    }

    /// [`Self::read`], for as long as the disk takes: for the health probe, which must know when
    /// its I/O has left the kernel.
    pub async fn read_unbounded(&self, buf: DiskBuf, offset: u64) -> io::Result<DiskBuf> {
        self.injected().await?;
        match &self.backend {
            Backend::Uring(ring) => ring.submit(false, buf, offset).await,
            Backend::Psync(file) => {
                blocking(file, move |file| {
                    let mut buf = buf;
                    file.read_exact_at(&mut buf, offset).map(|()| buf)
                })
                .await
            }
        }
    }

    /// [`Self::write`], for as long as the disk takes.
    pub async fn write_unbounded(&self, buf: DiskBuf, offset: u64) -> io::Result<DiskBuf> {
        self.injected().await?;
        match &self.backend {
            Backend::Uring(ring) => ring.submit(true, buf, offset).await,
            Backend::Psync(file) => blocking(file, move |file| file.write_all_at(&buf, offset).map(|()| buf)).await,
        }
    }
}

/// Whether `file` is on a FUSE filesystem.
fn on_fuse(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    const FUSE_SUPER_MAGIC: libc::c_long = 0x6573_5546;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a live out-struct.
    let ok = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } == 0;
    ok && st.f_type as libc::c_long == FUSE_SUPER_MAGIC
}

async fn blocking<T: Send + 'static>(
    file: &Arc<File>,
    f: impl FnOnce(&File) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || f(&file))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(engine: IoEngine) -> &'static str {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.set_len(1 << 20).unwrap();
        let io = Io::new(Arc::new(file), engine).await;
        // Many at once, so the ring has several in flight and a backlog.
        let writes = (0..200u64).map(|i| {
            let mut buf = DiskBuf::new(ALIGN);
            buf.fill(i as u8);
            io.write(buf, (i % 256) * ALIGN as u64)
        });
        for w in futures_util::future::join_all(writes).await {
            w.unwrap();
        }
        for i in 0..200u64 {
            let buf = io.read(DiskBuf::new(ALIGN), i * ALIGN as u64).await.unwrap();
            assert!(buf.iter().all(|&b| b == i as u8), "block {i}");
        }
        let past_end = io.read(DiskBuf::new(ALIGN), 1 << 20).await;
        assert_eq!(past_end.err().map(|e| e.kind()), Some(io::ErrorKind::UnexpectedEof));
        io.engine()
    }

    #[tokio::test]
    async fn a_hung_io_fails_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let mut io = Io::new(Arc::new(file), IoEngine::Psync).await;
        io.timeout = Duration::from_millis(100);
        io.stall.store(true, std::sync::atomic::Ordering::Relaxed);
        let result = tokio::time::timeout(Duration::from_secs(5), io.write(DiskBuf::new(ALIGN), 0))
            .await
            .expect("a hung write was not bounded");
        assert_eq!(result.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
    }

    #[tokio::test]
    async fn psync_reads_what_it_wrote() {
        assert_eq!(round_trip(IoEngine::Psync).await, "psync");
    }

    /// Skipped, saying why, where the kernel refuses io_uring (seccomp's EPERM, ENOSYS,
    /// `kernel.io_uring_disabled`); CI sets `SHARDCACHE_REQUIRE_URING`, so there a refusal fails.
    #[tokio::test]
    async fn io_uring_reads_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("probe")).unwrap();
        if let Err(e) = Ring::start(Arc::new(file)) {
            crate::uring::tests::skip_where_refused(&e);
            return;
        }
        assert_eq!(round_trip(IoEngine::Uring).await, "io_uring");
    }
}
