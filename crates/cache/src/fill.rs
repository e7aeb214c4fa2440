//! A chunk being fetched from the upstream, shared by every request that wants it meanwhile.
//!
//! The fetching task copies bytes into the chunk's buffer as they arrive; each reader takes what
//! is written at its own pace (as views of that buffer, not copies) and waits for more. Readers
//! never wait for the whole chunk, so time to first byte on a miss is the upstream's, and
//! concurrent readers of one chunk cause one upstream fetch. The completed buffer is the cached
//! chunk.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::watch;

use shardcache_store::buf::{ChunkBuf, ChunkWriter};
use shardcache_upstream::{OriginBody, OriginError};

/// Readers are woken at a fill's first bytes (the time to first byte is the upstream's), then
/// each time this many more have arrived, when the upstream pauses ([`ANNOUNCE_WITHIN`]), and at
/// the end. Waking them for every piece the upstream connection yields (64 KiB at most) cost a
/// wakeup of another thread and a client write per piece: a cold 1 MiB object took 16 of each.
const ANNOUNCE_BYTES: usize = 256 << 10;
/// The longest a reader waits for bytes already in the buffer: when the upstream's next piece
/// takes longer than this, what arrived is announced. (Tokio's timers count whole milliseconds,
/// so this is also the shortest that means what it says.)
const ANNOUNCE_WITHIN: Duration = Duration::from_millis(1);

/// Why a fill did not complete. Readers see it after the bytes that did arrive.
pub type FillError = Arc<OriginError>;

/// What a chunk fetch found: the body, read piece by piece straight into the chunk's buffer
/// (a broken body is [resumed](OriginBody::resume) where it can be), and where the chunk may be
/// kept.
pub struct Fetched {
    /// The chunk's bytes.
    pub body: Box<dyn OriginBody>,
    /// Whether the chunk may go to the disk tier once complete (else the memory tier only: a
    /// chunk from its cluster owner, which keeps it on disk).
    pub keep_on_disk: bool,
}

impl Fetched {
    /// A body whose chunk may be kept on disk.
    pub fn kept(body: Box<dyn OriginBody>) -> Self {
        Self {
            body,
            keep_on_disk: true,
        }
    }
}

/// A chunk fetch: resolves once the source answered, to the body.
pub type ChunkFetch = BoxFuture<'static, Result<Fetched, OriginError>>;

/// A chunk in flight.
pub struct Fill {
    buf: Arc<ChunkBuf>,
    outcome: Mutex<Option<Result<(), FillError>>>,
    /// Bumped on every change; readers wait on it.
    changed: watch::Sender<u64>,
}

impl Fill {
    /// A new, empty fill of a chunk of `len` bytes, and the one handle that writes it.
    pub fn new(len: usize) -> (Arc<Self>, FillWriter) {
        let (buf, writer) = ChunkBuf::with_capacity(len);
        let fill = Arc::new(Self {
            buf,
            outcome: Mutex::new(None),
            changed: watch::channel(0).0,
        });
        (
            fill.clone(),
            FillWriter {
                fill,
                writer,
                announced: 0,
            },
        )
    }

    fn outcome(&self) -> MutexGuard<'_, Option<Result<(), FillError>>> {
        // A poisoned lock means a reader panicked mid-read; the outcome itself is a single
        // assignment, so it is still consistent.
        self.outcome.lock()
    }

    /// A reader starting at the first byte of the chunk.
    pub fn reader(self: &Arc<Self>) -> FillReader {
        FillReader {
            fill: self.clone(),
            next: 0,
            changed: self.changed.subscribe(),
        }
    }
}

/// The fetching task's end of a [`Fill`]: appends bytes as they arrive, then ends it.
pub struct FillWriter {
    fill: Arc<Fill>,
    writer: ChunkWriter,
    /// Bytes written when readers were last woken.
    announced: usize,
}

impl FillWriter {
    /// Appends bytes that arrived from the upstream, and wakes the readers if these are the
    /// first bytes or [`ANNOUNCE_BYTES`] have arrived since they were last woken.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), OriginError> {
        if piece.is_empty() {
            return Ok(());
        }
        let expected = self.fill.buf.capacity() as u64;
        let received = (self.writer.written() + piece.len()) as u64;
        self.writer
            .write(piece)
            .map_err(|_| OriginError::WrongLength { expected, received })?;
        if self.announced == 0 || self.written() - self.announced >= ANNOUNCE_BYTES {
            self.announce();
        }
        Ok(())
    }

    /// Whether bytes were written since the readers were last woken.
    fn unannounced(&self) -> bool {
        self.written() != self.announced
    }

    /// Wakes the readers to take what is written.
    fn announce(&mut self) {
        self.announced = self.written();
        self.fill.changed.send_modify(|v| *v += 1);
    }

    /// Bytes pushed so far.
    pub fn written(&self) -> usize {
        self.writer.written()
    }

    /// Ends the fill; returns the chunk if `outcome` is a success and every byte arrived.
    pub fn finish(self, outcome: Result<(), FillError>) -> Option<Bytes> {
        let fill = &self.fill;
        let complete = outcome.is_ok() && self.written() == fill.buf.capacity();
        let whole = complete.then(|| fill.buf.bytes(0..fill.buf.capacity()));
        *fill.outcome() = Some(outcome);
        fill.changed.send_modify(|v| *v += 1);
        whole
    }
}

/// One request's position in a [`Fill`].
pub struct FillReader {
    fill: Arc<Fill>,
    next: usize,
    changed: watch::Receiver<u64>,
}

impl FillReader {
    /// Everything written since the last call (at least one byte), `Ok(None)` at the end of a
    /// complete chunk, or the fill's error.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FillError> {
        loop {
            let written = self.fill.buf.written();
            if written > self.next {
                let piece = self.fill.buf.bytes(self.next..written);
                self.next = written;
                return Ok(Some(piece));
            }
            match &*self.fill.outcome() {
                Some(Ok(())) => return Ok(None),
                Some(Err(e)) => return Err(e.clone()),
                None => {}
            }
            if self.changed.changed().await.is_err() {
                // The sender lives in the fill we hold, so this cannot happen; be safe anyway.
                return Err(Arc::new(OriginError::Unreachable("fill abandoned".into())));
            }
        }
    }
}

/// Reads the fetch's body into the fill, checking it is exactly `len` bytes (a body that ends
/// short is asked to resume, as one that breaks); returns whether the chunk may go to disk
/// ([`Fetched::keep_on_disk`]).
pub(super) async fn pump(fill: &mut FillWriter, len: u64, fetch: ChunkFetch) -> Result<bool, FillError> {
    let Fetched { mut body, keep_on_disk } = fetch.await.map_err(Arc::new)?;
    loop {
        let next = {
            let mut next = body.next();
            if fill.unannounced() {
                // Bytes the readers were not woken for: they wait for the next piece at most
                // ANNOUNCE_WITHIN.
                match tokio::time::timeout(ANNOUNCE_WITHIN, &mut next).await {
                    Ok(next) => next,
                    Err(_) => {
                        fill.announce();
                        next.await
                    }
                }
            } else {
                next.await
            }
        };
        let received = fill.written() as u64;
        // A body that ends before the chunk, however well framed, is cut like any other: the
        // body resumes from the byte reached (the upstream's rest, or the owner's from the
        // upstream) where it can.
        let next = match next {
            Ok(None) if received < len => Err(OriginError::WrongLength {
                expected: len,
                received,
            }),
            next => next,
        };
        match next {
            Ok(Some(piece)) => fill.push(piece).map_err(Arc::new)?,
            Ok(None) => break,
            Err(e) => {
                // Resuming is another upstream request: readers take what arrived meanwhile.
                if fill.unannounced() {
                    fill.announce();
                }
                match body.resume(&e).await {
                    Ok(true) => {}
                    Ok(false) => return Err(Arc::new(e)),
                    Err(last) => return Err(Arc::new(last)),
                }
            }
        }
    }
    let received = fill.written() as u64;
    if received != len {
        return Err(Arc::new(OriginError::WrongLength {
            expected: len,
            received,
        }));
    }
    Ok(keep_on_disk)
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;

    #[tokio::test]
    async fn readers_see_bytes_as_they_arrive_and_the_end() {
        let (fill, mut w) = Fill::new(4);
        let mut early = fill.reader();
        w.push(b"ab").unwrap();
        assert_eq!(early.next().await.unwrap().unwrap(), "ab");
        let waiting = tokio::spawn(async move {
            let second = early.next().await.unwrap().unwrap();
            (second, early.next().await.unwrap())
        });
        tokio::task::yield_now().await;
        w.push(b"cd").unwrap();
        assert_eq!(w.finish(Ok(())).unwrap(), "abcd");
        assert_eq!(waiting.await.unwrap(), (Bytes::from_static(b"cd"), None));
        let mut late = fill.reader();
        assert_eq!(late.next().await.unwrap().unwrap(), "abcd");
        assert_eq!(late.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_failed_fill_reports_its_error_after_the_bytes_that_arrived() {
        let (fill, mut w) = Fill::new(4);
        w.push(b"ab").unwrap();
        assert!(w
            .finish(Err(Arc::new(OriginError::Unreachable("cut".into()))))
            .is_none());
        let mut r = fill.reader();
        assert_eq!(r.next().await.unwrap().unwrap(), "ab");
        assert_eq!(r.next().await.unwrap_err().to_string(), "upstream unreachable: cut");
    }

    /// A body that yields its pieces, each after its delay.
    struct Timed(Vec<(Duration, Vec<u8>)>, Vec<u8>);

    #[async_trait]
    impl OriginBody for Timed {
        async fn next(&mut self) -> Result<Option<&[u8]>, OriginError> {
            if self.0.is_empty() {
                return Ok(None);
            }
            let (delay, piece) = self.0.remove(0);
            tokio::time::sleep(delay).await;
            self.1 = piece;
            Ok(Some(&self.1))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn readers_get_bytes_within_the_bound_when_the_upstream_pauses() {
        let ms = Duration::from_millis;
        let body = Timed(
            vec![
                (ms(0), vec![1; 1024]),
                (ms(1), vec![2; 1024]),
                (ms(10_000), vec![3; 1024]),
            ],
            vec![],
        );
        let fetch: ChunkFetch = Box::pin(async move { Ok(Fetched::kept(Box::new(body))) });
        let (fill, mut w) = Fill::new(3 * 1024);
        let mut reader = fill.reader();
        let pumping = tokio::spawn(async move { pump(&mut w, 3 * 1024, fetch).await.map(|_| w) });
        let start = tokio::time::Instant::now();
        // The first piece wakes the reader at once; the second (far below ANNOUNCE_BYTES) is
        // announced when the third is late, not when it arrives 10 s later.
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], &[1; 1024]);
        // Bounded, so that a reader left waiting fails the test rather than hang it: the fill
        // is only finished below.
        let second = tokio::time::timeout(ms(60_000), reader.next()).await;
        let waited = start.elapsed();
        let second = second.unwrap_or_else(|_| panic!("the reader waited {waited:?} and got nothing"));
        assert_eq!(&second.unwrap().unwrap()[..], &[2; 1024]);
        // The timer's granularity is a millisecond.
        let bound = ms(1) + ANNOUNCE_WITHIN + ms(1);
        assert!(waited <= bound, "the reader waited {waited:?} for the second piece");
        let whole = pumping.await.unwrap().unwrap().finish(Ok(())).unwrap();
        assert_eq!(whole.len(), 3 * 1024);
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], &[3; 1024]);
        assert_eq!(reader.next().await.unwrap(), None);
    }

    #[test]
    fn bytes_past_the_chunk_are_refused() {
        let (_fill, mut w) = Fill::new(3);
        w.push(b"ab").unwrap();
        let e = w.push(b"cd").unwrap_err();
        assert!(
            matches!(
                e,
                OriginError::WrongLength {
                    expected: 3,
                    received: 4
                }
            ),
            "{e:?}"
        );
        assert_eq!(w.written(), 2);
    }
}
