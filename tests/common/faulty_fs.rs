//! A fault-injecting filesystem for the disk tier (FUSE, through the `fuser` crate): one file,
//! `store`, at the root of the mount, kept in a real file beside it, whose reads and writes do
//! what the current [`Fault`] says: pass, hang until the fault is lifted, fail with EIO, or
//! write fewer bytes than asked. The file is opened in direct-I/O mode, so every read and write
//! of the store reaches it (no page cache in between), and each one is recorded.
//!
//! Mounting needs /dev/fuse and the right to mount (root, as in CI): [`FaultyFs::mount`] says
//! why not instead of mounting, for the test to skip with that reason where the machine has no
//! FUSE.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption, OpenFlags,
    ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};

/// The name of the one file.
pub const FILE: &str = "store";
const ROOT: INodeNo = INodeNo::ROOT;
const STORE: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(1);

/// What the file's reads and writes do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// They work.
    None,
    /// They wait, in the kernel, until the fault changes, then work.
    Hang,
    /// They fail with EIO.
    Eio,
    /// A write stores and reports at most 4 KiB; the writer must write the rest.
    ShortWrites,
}

/// One read or write the filesystem received.
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub write: bool,
    pub offset: u64,
    pub len: u32,
}

/// The state the mount and the test share.
struct State {
    fault: Mutex<Fault>,
    changed: Condvar,
    ops: Mutex<Vec<Op>>,
    backing: File,
}

struct Fs(Arc<State>);

/// The mounted filesystem; unmounted when dropped (after lifting any fault, so nothing stays
/// hung in the kernel).
pub struct FaultyFs {
    state: Arc<State>,
    /// The store file, inside the mount.
    pub file: PathBuf,
    session: Option<fuser::BackgroundSession>,
    _dirs: tempfile::TempDir,
}

impl FaultyFs {
    /// Mounts it with an empty file; `Err` says why it cannot be mounted here.
    pub fn mount() -> Result<Self, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        let dirs = tempfile::tempdir().unwrap();
        let mountpoint = dirs.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        let backing = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dirs.path().join("backing"))
            .unwrap();
        let state = Arc::new(State {
            fault: Mutex::new(Fault::None),
            changed: Condvar::new(),
            ops: Mutex::new(Vec::new()),
            backing,
        });
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("shardcache-faulty".into())];
        let session =
            fuser::spawn_mount(Fs(state.clone()), &mountpoint, &config).map_err(|e| format!("mounting FUSE: {e}"))?;
        Ok(Self {
            state,
            file: mountpoint.join(FILE),
            session: Some(session),
            _dirs: dirs,
        })
    }

    /// Makes reads and writes from now on (and those hung) do `fault`.
    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
        self.state.changed.notify_all();
    }

    /// The reads and writes received so far.
    pub fn ops(&self) -> Vec<Op> {
        self.state.ops.lock().unwrap().clone()
    }
}

impl Drop for FaultyFs {
    fn drop(&mut self) {
        self.set(Fault::None);
        drop(self.session.take());
    }
}

impl State {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let (kind, perm, size) = match ino {
            ROOT => (FileType::Directory, 0o755, 0),
            _ => (
                FileType::RegularFile,
                0o644,
                self.backing.metadata().map_or(0, |m| m.len()),
            ),
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Runs `op` once the fault lets it (now, or once a hang is lifted), on its own thread when
    /// it must wait, so the mount keeps answering everything else.
    fn when_allowed(self: &Arc<Self>, op: impl FnOnce(&State, Fault) + Send + 'static) {
        let fault = *self.fault.lock().unwrap();
        if fault != Fault::Hang {
            return op(self, fault);
        }
        let state = self.clone();
        std::thread::spawn(move || {
            let mut fault = state.fault.lock().unwrap();
            while *fault == Fault::Hang {
                fault = state.changed.wait(fault).unwrap();
            }
            let now = *fault;
            drop(fault);
            op(&state, now);
        });
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match parent == ROOT && name == FILE {
            true => reply.entry(&TTL, &self.0.attr(STORE), fuser::Generation(0)),
            false => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino == ROOT || ino == STORE {
            true => reply.attr(&TTL, &self.0.attr(ino)),
            false => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let Some(size) = size.filter(|_| ino == STORE) {
            if self.0.backing.set_len(size).is_err() {
                return reply.error(Errno::EIO);
            }
        }
        reply.attr(&TTL, &self.0.attr(ino));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let op = Op {
            write: false,
            offset,
            len: size,
        };
        self.0.ops.lock().unwrap().push(op);
        self.0.when_allowed(move |state, fault| {
            if fault == Fault::Eio {
                return reply.error(Errno::EIO);
            }
            let mut buf = vec![0u8; size as usize];
            match state.backing.read_at(&mut buf, offset) {
                Ok(n) => reply.data(&buf[..n]),
                Err(_) => reply.error(Errno::EIO),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let op = Op {
            write: true,
            offset,
            len: data.len() as u32,
        };
        self.0.ops.lock().unwrap().push(op);
        let data = data.to_vec();
        self.0.when_allowed(move |state, fault| {
            let n = match fault {
                Fault::Eio => return reply.error(Errno::EIO),
                Fault::ShortWrites => data.len().min(4096),
                Fault::None | Fault::Hang => data.len(),
            };
            match state.backing.write_all_at(&data[..n], offset) {
                Ok(()) => reply.written(n as u32),
                Err(_) => reply.error(Errno::EIO),
            }
        });
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Room for any capacity the tests ask for.
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 16, 15, 4096, 255, 4096);
    }
}
