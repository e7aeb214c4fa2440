//! The ring worker's completion handling and unwinding, driven directly: injected completions,
//! and a panic with a read in the kernel.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;
use crate::buf::RELEASED;

/// Fails the test for `e`, from setting up io_uring, unless the kernel refuses io_uring here
/// (seccomp's EPERM, ENOSYS, `kernel.io_uring_disabled`) and CI did not set
/// `SHARDCACHE_REQUIRE_URING`: then says the test is skipped.
pub(crate) fn skip_where_refused(e: &io::Error) {
    let refused = matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS | libc::EACCES));
    let required = std::env::var_os("SHARDCACHE_REQUIRE_URING").is_some();
    assert!(refused && !required, "io_uring could not be set up: {e}");
    eprintln!("skipped: the kernel refuses io_uring here ({e})");
}

/// The ring of a test, or `None` where it is skipped ([`skip_where_refused`]).
fn ring_or_skip() -> Option<IoUring> {
    setup().inspect_err(skip_where_refused).ok()
}

/// A FIFO opened for reading and writing: a read of it stays in the kernel until it is
/// written to, which nothing here does.
fn fifo(dir: &std::path::Path) -> File {
    let path = std::ffi::CString::new(dir.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; the result is checked.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("fifo"))
        .unwrap()
}

/// A read at offset 0 into `buf`, and where its answer comes.
fn read_into(buf: DiskBuf) -> (Op, oneshot::Receiver<io::Result<DiskBuf>>) {
    let (reply, answer) = oneshot::channel();
    let op = Op {
        write: false,
        buf,
        offset: 0,
        done: 0,
        reply,
    };
    (op, answer)
}

/// Takes the op next in the backlog as `push_backlog` would submit it: its index, and the
/// byte of its buffer the submission starts at.
fn submit(worker: &mut Worker<'_>) -> (usize, usize) {
    let i = worker.backlog.pop().expect("an op waits for submission");
    worker.in_kernel += 1;
    (i, worker.ops[i].as_ref().expect("a live op").done)
}

/// Completions are injected, as a device that moves fewer bytes than asked would give them:
/// a short write is resubmitted for the rest from where it stopped (an interrupted one for
/// the same rest), and succeeds only when every byte is written; a write of nothing fails.
#[test]
fn short_writes_are_resubmitted_for_the_rest_and_succeed_only_whole() {
    let Some(ring) = ring_or_skip() else { return };
    let shared = Shared::new().unwrap();
    let mut worker = Worker::new(ring, -1, &shared);
    let write = |len| {
        let (mut op, answer) = read_into(DiskBuf::new(len));
        op.write = true;
        (op, answer)
    };
    let (op, mut answer) = write(3 * 4096);
    worker.add(op);
    let (i, from) = submit(&mut worker);
    assert_eq!(from, 0);
    worker.completed(i, 4096);
    assert!(answer.try_recv().is_err(), "a short write was taken as complete");
    let (i, from) = submit(&mut worker);
    assert_eq!(from, 4096, "the rest is written from where the short write stopped");
    worker.completed(i, -libc::EINTR);
    let (i, from) = submit(&mut worker);
    assert_eq!(from, 4096, "an interrupted write is written again from the same byte");
    worker.completed(i, 8192);
    let written = answer.try_recv().expect("answered once whole").expect("written");
    assert_eq!(written.len(), 3 * 4096);

    let (op, mut answer) = write(4096);
    worker.add(op);
    let (i, _) = submit(&mut worker);
    worker.completed(i, 0);
    let failed = answer.try_recv().expect("answered").err().map(|e| e.kind());
    assert_eq!(failed, Some(io::ErrorKind::WriteZero));
    assert_eq!((worker.in_kernel, worker.live()), (0, 0));
}

/// The worker thread panicking while a read is in the kernel (the case the unwind path
/// exists for): the read is cancelled, and its buffer released only once the kernel's
/// completion of it was reaped (its requester hears `ECANCELED`, from that completion); bytes
/// written to the FIFO afterwards are still there, so no read of the kernel's is left to take
/// them into memory the pool may hand out. A read that completes normally gives its buffer
/// back too, which shows the release check can see one.
#[test]
fn a_worker_unwinding_mid_read_releases_the_buffer_only_after_the_kernel_let_go() {
    let Some(ring) = ring_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut fifo = fifo(dir.path());
    let shared = Shared::new().unwrap();
    // Large enough to be a mapped, pooled buffer: what the next chunk would be given.
    let buf = DiskBuf::new(1 << 20);
    let addr = buf.as_ptr() as usize;
    let (op, answer) = read_into(buf);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        let mut worker = Worker::new(ring, fifo.as_raw_fd(), &shared);
        worker.add(op);
        worker.push_backlog();
        worker.ring.submit().unwrap();
        assert_eq!(worker.in_kernel, 1, "the read is in the kernel");
        panic!("the worker fails with a read in the kernel");
    }));
    assert!(unwound.is_err());
    // The kernel's completion of that very read was reaped (it says the read was
    // cancelled) before its buffer was released.
    let ended = answer.blocking_recv().expect("the requester was answered");
    let code = ended.err().and_then(|e| e.raw_os_error());
    assert_eq!(code, Some(libc::ECANCELED), "the read's own completion was not seen");
    let released = RELEASED.with(|r| r.borrow().contains(&addr));
    assert!(released, "the cancelled read's buffer was not given back");
    // The kernel's read is over: what is written now stays in the FIFO (read back without
    // blocking, so a read still in the kernel that took it fails the test, not hangs it).
    use std::io::{Read, Write};
    fifo.write_all(b"after").unwrap();
    // SAFETY: F_SETFL on a descriptor we own; the result is checked.
    assert_eq!(
        unsafe { libc::fcntl(fifo.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) },
        0
    );
    let mut back = [0u8; 5];
    let read = fifo.read_exact(&mut back);
    assert!(
        read.is_ok(),
        "a read of the unwound worker was still in the kernel: {read:?}"
    );
    assert_eq!(&back, b"after");

    // A read that completes gives its buffer back once it is dropped.
    let Some(ring) = ring_or_skip() else { return };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("data"))
        .unwrap();
    file.set_len(1 << 20).unwrap();
    let mut worker = Worker::new(ring, file.as_raw_fd(), &shared);
    let buf = DiskBuf::new(1 << 20);
    let addr = buf.as_ptr() as usize;
    // The pool may hand back the region released above: forget that release.
    RELEASED.with(|r| r.borrow_mut().clear());
    let (op, answer) = read_into(buf);
    worker.add(op);
    while worker.live() > 0 {
        worker.push_backlog();
        worker.submit_and_wait().unwrap();
        worker.reap();
    }
    worker.disarm_doorbell();
    drop(answer.blocking_recv().unwrap().unwrap());
    assert!(
        RELEASED.with(|r| r.borrow().contains(&addr)),
        "a finished read's buffer was kept"
    );
}
