//! An io_uring that sleeps when idle.
//!
//! One thread owns the ring. With nothing in flight it blocks on its request channel (a futex:
//! no CPU, no iowait). With I/O in flight it waits in the ring for a completion, with a read of a
//! doorbell eventfd armed beside the I/O; a request sent meanwhile rings the doorbell, but only
//! when the thread says it is waiting there, so a busy ring costs no extra syscalls.
//!
//! The thread owns each buffer from submission until its completion, whatever happens to the
//! request that asked (a dropped future only loses the answer), and even if the thread panics:
//! unwinding cancels the I/O in the kernel and releases a buffer only once its completion came
//! (see `Worker`'s `Drop`). Short reads and writes are resubmitted for the rest, `EINTR` and
//! `EAGAIN` retried. Dropping the [`Ring`] closes the channel; the thread finishes what is in
//! flight and exits. Its waits in the ring are not
//! counted as iowait where the kernel allows (`IORING_ENTER_NO_IOWAIT`, Linux 6.15).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types, EnterFlags, IoUring};
use tokio::sync::oneshot;

use crate::buf::DiskBuf;

/// Submission queue entries; more requests than this wait in the thread's backlog.
const ENTRIES: u32 = 128;
/// `user_data` of the doorbell read.
const DOORBELL: u64 = u64::MAX;
/// `user_data` of the cancellation an unwinding worker sends.
const CANCEL: u64 = u64::MAX - 1;
/// How long an unwinding worker waits for its cancelled I/O to complete.
const UNWIND_WAIT: Duration = Duration::from_secs(2);

struct Op {
    write: bool,
    buf: DiskBuf,
    offset: u64,
    done: usize,
    reply: oneshot::Sender<io::Result<DiskBuf>>,
}

struct Shared {
    /// Set while the thread waits in the ring: a sender must ring the doorbell.
    waiting: AtomicBool,
    doorbell: OwnedFd,
}

impl Shared {
    /// Not waiting, with a new doorbell.
    fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            waiting: AtomicBool::new(false),
            // SAFETY: `fd` is a new descriptor nothing else owns.
            doorbell: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ring_doorbell(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a live buffer to an eventfd we own. A full counter
        // (EAGAIN) still wakes the reader, so the result does not matter.
        unsafe { libc::write(self.doorbell.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

/// A handle to the ring thread.
pub struct Ring {
    tx: Option<mpsc::Sender<Op>>,
    shared: Arc<Shared>,
}

impl Ring {
    /// Starts a ring thread for `file`. Fails where io_uring cannot be set up (seccomp's EPERM,
    /// ENOSYS, `kernel.io_uring_disabled`).
    pub fn start(file: Arc<File>) -> io::Result<Self> {
        let shared = Arc::new(Shared::new()?);
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("shardcache-uring".into())
            .spawn(move || {
                // The ring is made on the thread that submits to it: single issuer needs that.
                match setup() {
                    Ok(ring) => {
                        let _ = ready_tx.send(Ok(()));
                        Worker::new(ring, file.as_raw_fd(), &thread_shared).run(&rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        match ready_rx.recv() {
            // The thread is not joined: it holds the file and every buffer it was given, and
            // exits once its channel is closed and its I/O is done.
            Ok(Ok(())) => Ok(Self { tx: Some(tx), shared }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(io::Error::other("the io_uring thread exited while starting")),
        }
    }

    /// Reads `buf.len()` bytes at `offset` into `buf`, or writes them from it.
    pub async fn submit(&self, write: bool, buf: DiskBuf, offset: u64) -> io::Result<DiskBuf> {
        let (reply, answer) = oneshot::channel();
        let op = Op {
            write,
            buf,
            offset,
            done: 0,
            reply,
        };
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(op).is_ok());
        if !sent {
            return Err(io::Error::other("the io_uring thread has stopped"));
        }
        // Pairs with the thread's fence between setting `waiting` and looking at the channel:
        // either it sees this request, or this sees it waiting and rings.
        fence(Ordering::SeqCst);
        if self.shared.waiting.load(Ordering::SeqCst) {
            self.shared.ring_doorbell();
        }
        answer
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the io_uring thread dropped a request")))
    }
}

impl Drop for Ring {
    /// Closes the channel and wakes the thread, which finishes what is in flight and exits.
    /// Nothing waits for it here: a ring is dropped from async code (a disk tier re-opened after
    /// a failure), where a blocking join would hold a runtime thread for as long as the disk.
    fn drop(&mut self) {
        drop(self.tx.take());
        self.shared.ring_doorbell();
    }
}

/// A ring with the kernel's cheaper modes where it has them: single issuer and deferred task
/// running (Linux 6.1), else cooperative task running (5.19), else plain.
fn setup() -> io::Result<IoUring> {
    let attempts: [fn() -> io::Result<IoUring>; 3] = [
        || {
            IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .build(ENTRIES)
        },
        || IoUring::builder().setup_coop_taskrun().build(ENTRIES),
        || IoUring::new(ENTRIES),
    ];
    let mut last = io::Error::from_raw_os_error(libc::ENOSYS);
    for attempt in attempts {
        match attempt() {
            Ok(ring) => return Ok(ring),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

struct Worker<'a> {
    ring: IoUring,
    fd: RawFd,
    shared: &'a Shared,
    ops: Vec<Option<Op>>,
    free: Vec<usize>,
    /// Ops to (re)submit once the submission queue has room.
    backlog: Vec<usize>,
    /// Ops in the kernel.
    in_kernel: usize,
    doorbell_armed: bool,
    doorbell_buf: Box<[u8; 8]>,
}

impl Drop for Worker<'_> {
    /// On a normal exit nothing is left. If the thread unwinds with I/O in the kernel, that I/O
    /// is cancelled and its completions waited for ([`UNWIND_WAIT`] at most): a buffer is
    /// released once its operation completed, or if it never reached the kernel. A buffer whose
    /// operation outlasts the wait is leaked, not freed: the kernel may still write to it, and a
    /// freed buffer would go back to the pool for the next chunk.
    fn drop(&mut self) {
        self.cancel_in_kernel();
        for (i, slot) in self.ops.iter_mut().enumerate() {
            let Some(op) = slot.take() else { continue };
            match self.backlog.contains(&i) {
                true => drop(op),
                false => std::mem::forget(op.buf),
            }
        }
        if self.doorbell_armed {
            std::mem::forget(std::mem::replace(&mut self.doorbell_buf, Box::new([0; 8])));
        }
    }
}

impl<'a> Worker<'a> {
    fn new(ring: IoUring, fd: RawFd, shared: &'a Shared) -> Self {
        Self {
            ring,
            fd,
            shared,
            ops: Vec::new(),
            free: Vec::new(),
            backlog: Vec::new(),
            in_kernel: 0,
            doorbell_armed: false,
            doorbell_buf: Box::new([0; 8]),
        }
    }

    fn live(&self) -> usize {
        self.ops.len() - self.free.len()
    }

    fn run(mut self, rx: &mpsc::Receiver<Op>) {
        let mut closed = false;
        loop {
            if self.live() == 0 {
                if closed {
                    break;
                }
                // Nothing in flight: sleep on the channel.
                match rx.recv() {
                    Ok(op) => self.add(op),
                    Err(_) => break,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(op) => self.add(op),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.push_backlog();
            self.shared.waiting.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            // A request sent before `waiting` was set did not ring: look once more.
            match rx.try_recv() {
                Ok(op) => {
                    self.shared.waiting.store(false, Ordering::SeqCst);
                    self.add(op);
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => closed = true,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let waited = self.submit_and_wait();
            self.shared.waiting.store(false, Ordering::SeqCst);
            if let Err(e) = waited {
                if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) {
                    self.fail_all(&e);
                    return;
                }
            }
            self.reap();
        }
        self.disarm_doorbell();
    }

    fn add(&mut self, op: Op) {
        let i = match self.free.pop() {
            Some(i) => {
                self.ops[i] = Some(op);
                i
            }
            None => {
                self.ops.push(Some(op));
                self.ops.len() - 1
            }
        };
        self.backlog.push(i);
    }

    /// Moves backlogged ops, and the doorbell read, into the submission queue while it has room.
    fn push_backlog(&mut self) {
        if !self.doorbell_armed {
            let read = opcode::Read::new(
                types::Fd(self.shared.doorbell.as_raw_fd()),
                self.doorbell_buf.as_mut_ptr(),
                8,
            )
            .build()
            .user_data(DOORBELL);
            // SAFETY: the doorbell buffer lives in this worker, which waits for the read to
            // complete before it is dropped (`disarm_doorbell`).
            if unsafe { self.ring.submission().push(&read) }.is_ok() {
                self.doorbell_armed = true;
            }
        }
        while self.in_kernel < ENTRIES as usize - 1 {
            let Some(i) = self.backlog.pop() else { break };
            let op = self.ops[i].as_mut().expect("a backlogged op is live");
            let ptr = op.buf[op.done..].as_mut_ptr();
            let len = u32::try_from(op.buf.len() - op.done).unwrap_or(u32::MAX);
            let offset = op.offset + op.done as u64;
            let entry = if op.write {
                opcode::Write::new(types::Fd(self.fd), ptr, len).offset(offset).build()
            } else {
                opcode::Read::new(types::Fd(self.fd), ptr, len).offset(offset).build()
            };
            // SAFETY: the buffer is owned by `ops[i]`, which stays put until its completion is
            // reaped; nothing else touches it meanwhile.
            if unsafe { self.ring.submission().push(&entry.user_data(i as u64)) }.is_err() {
                self.backlog.push(i);
                break;
            }
            self.in_kernel += 1;
        }
    }

    fn reap(&mut self) {
        let done: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (user_data, result) in done {
            match user_data {
                DOORBELL => self.doorbell_armed = false,
                i => self.completed(i as usize, result),
            }
        }
    }

    /// Op `i`'s submission completed with `result` (bytes moved, or `-errno`): a transfer short
    /// of the rest is resubmitted for what is left, from where it stopped; `EINTR` and `EAGAIN`
    /// resubmit the same rest; a transfer of nothing, or any other error, fails the op. Only
    /// when every byte has moved does the op succeed.
    fn completed(&mut self, i: usize, result: i32) {
        self.in_kernel -= 1;
        let op = self.ops[i].as_mut().expect("a completion for a live op");
        match result {
            r if r == -libc::EINTR || r == -libc::EAGAIN => self.backlog.push(i),
            r if r < 0 => self.finish(i, Err(io::Error::from_raw_os_error(-r))),
            0 => {
                let kind = if op.write {
                    io::ErrorKind::WriteZero
                } else {
                    io::ErrorKind::UnexpectedEof
                };
                self.finish(i, Err(kind.into()));
            }
            n => {
                op.done += n as usize;
                if op.done >= op.buf.len() {
                    self.finish(i, Ok(()));
                } else {
                    self.backlog.push(i);
                }
            }
        }
    }

    fn finish(&mut self, i: usize, result: io::Result<()>) {
        let op = self.ops[i].take().expect("a finished op is live");
        self.free.push(i);
        let _ = op.reply.send(result.map(|()| op.buf));
    }

    /// The ring failed as a whole: answer every op with the error. Ops still in the kernel keep
    /// their buffers, leaked, since the kernel may still write to them.
    fn fail_all(&mut self, e: &io::Error) {
        tracing::error!(error = %e, "the disk tier's io_uring failed; its pending I/O fails");
        for slot in &mut self.ops {
            if let Some(Op { buf, reply, .. }) = slot.take() {
                let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string())));
                std::mem::forget(buf);
            }
        }
        std::mem::forget(std::mem::replace(&mut self.doorbell_buf, Box::new([0; 8])));
        self.doorbell_armed = false;
        // Every op was answered and its buffer leaked: nothing is left to wait for.
        self.in_kernel = 0;
        self.backlog.clear();
    }

    /// Submits what is queued and waits for a completion; where the kernel has it (6.15), the
    /// wait is not counted as iowait, which would make an idle-but-armed ring look like a busy
    /// disk on the node's dashboards.
    fn submit_and_wait(&mut self) -> io::Result<usize> {
        if !self.ring.params().is_feature_no_iowait() {
            return self.ring.submit_and_wait(1);
        }
        let queued = self.ring.submission().len() as u32;
        let flags = (EnterFlags::GETEVENTS | EnterFlags::NO_IOWAIT).bits();
        // SAFETY: the plain io_uring_enter of `submit_and_wait(1)`, with one more flag and no
        // extended argument; every queued entry's buffer is owned by `self.ops` until reaped.
        unsafe { self.ring.submitter().enter::<libc::sigset_t>(queued, 1, flags, None) }
    }

    /// Cancels every operation in the kernel (and ends the doorbell read), then reaps
    /// completions until none is left or [`UNWIND_WAIT`] has passed; each op that completed is
    /// answered with how it ended (its buffer released). Never panics: it runs while the thread
    /// unwinds. Where the kernel cannot wait with a timeout (before 5.11) it waits for nothing.
    fn cancel_in_kernel(&mut self) {
        if self.in_kernel == 0 && !self.doorbell_armed {
            return;
        }
        // One cancellation per op in the kernel (by its `user_data`, which every kernel with
        // io_uring reads, where cancelling "any" needs 5.19); the doorbell read ends when rung.
        let in_kernel = (0..self.ops.len()).filter(|i| self.ops[*i].is_some() && !self.backlog.contains(i));
        for i in in_kernel.collect::<Vec<_>>() {
            let cancel = opcode::AsyncCancel::new(i as u64).build().user_data(CANCEL);
            // SAFETY: a cancellation carries no buffer.
            while unsafe { self.ring.submission().push(&cancel) }.is_err() {
                if self.ring.submit().is_err() {
                    return;
                }
            }
        }
        if self.doorbell_armed {
            self.shared.ring_doorbell();
        }
        let deadline = Instant::now() + UNWIND_WAIT;
        while self.in_kernel > 0 || self.doorbell_armed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let timeout = types::Timespec::from(left);
            let args = types::SubmitArgs::new().timespec(&timeout);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                Err(_) => return,
            }
            let done: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
            for (user_data, result) in done {
                match user_data {
                    DOORBELL => self.doorbell_armed = false,
                    CANCEL => {}
                    i => {
                        if let Some(op) = self.ops.get_mut(i as usize).and_then(Option::take) {
                            self.in_kernel = self.in_kernel.saturating_sub(1);
                            self.free.push(i as usize);
                            // The kernel is done with the buffer: it is released here, and the
                            // requester hears how its operation ended.
                            let e = match result {
                                r if r < 0 => io::Error::from_raw_os_error(-r),
                                _ => io::Error::other("the io_uring thread failed"),
                            };
                            let _ = op.reply.send(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Completes the doorbell read before the worker (and its buffer) goes away.
    fn disarm_doorbell(&mut self) {
        while self.doorbell_armed {
            self.shared.ring_doorbell();
            if self.ring.submit_and_wait(1).is_err() {
                return;
            }
            self.reap();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
