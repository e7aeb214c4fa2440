//! The store's file: opened (created if needed) with O_DIRECT where the filesystem allows it,
//! sized to what fits, and recognised again by its device and inode.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::STORE_FILE;
use crate::buf::ALIGN;

/// The open store file.
pub struct StoreFile {
    /// The file.
    pub file: File,
    /// Its path (the directory's `shardcache.store`, or the configured file or device).
    pub path: PathBuf,
    /// Bytes to use: the configured capacity, or for a file on a filesystem with less room, what
    /// fits (with a warning).
    pub capacity: u64,
    /// (device, inode), to notice the file being removed or replaced.
    pub identity: (u64, u64),
}

/// Opens `path` (a directory, created if missing, or a file or block device) for a store of
/// `capacity` bytes; `clamp` lets a file on a filesystem with less room use 90% of the room.
pub fn open(path: &Path, capacity: u64, direct: bool, clamp: bool) -> std::io::Result<StoreFile> {
    let is_dir = !path.exists() || path.is_dir();
    let path = if is_dir {
        std::fs::create_dir_all(path)?;
        path.join(STORE_FILE)
    } else {
        path.to_path_buf()
    };
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(is_dir);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(&path)
    };
    let file = match open(direct) {
        // tmpfs and some overlay filesystems refuse O_DIRECT.
        Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(path = %path.display(), "the disk tier's filesystem refuses O_DIRECT; using buffered I/O");
            open(false)?
        }
        other => other?,
    };
    let meta = file.metadata()?;
    let identity = (meta.dev(), meta.ino());
    if meta.file_type().is_block_device() {
        let sector = logical_block_size(&file)?;
        if sector > ALIGN as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the device's logical block size, {sector} bytes, is more than the {ALIGN} the store aligns its I/O to"),
            ));
        }
        let size = device_size(&file)?;
        let capacity = capacity.min(size);
        return Ok(StoreFile {
            file,
            path,
            capacity,
            identity,
        });
    }
    let room = meta.len().max(meta.blocks() * 512) + free_bytes(&path)?;
    let capacity = if clamp && capacity > room {
        let fitted = room / 10 * 9;
        tracing::warn!(
            path = %path.display(),
            configured = capacity,
            using = fitted,
            "cache.disk.capacity_bytes is more than the filesystem has room for; using 90% of the room"
        );
        fitted
    } else {
        capacity
    };
    // Sparse: blocks are taken as slots are first written.
    file.set_len(capacity)?;
    Ok(StoreFile {
        file,
        path,
        capacity,
        identity,
    })
}

/// The (device, inode) at `path` now, if anything is there.
pub fn identity_at(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A random number (the store's epochs).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `len` bytes into the live buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 8 {
        // Only an epoch: distinct from the last one is what matters.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(bytes)
}

fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let dir = path.parent().unwrap_or(path);
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live out-struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn logical_block_size(file: &File) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int into the live out-variable.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut size) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size as u64)
}

fn device_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::End(0))
}
