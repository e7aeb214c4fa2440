//! A chunk being fetched from the upstream, shared by every request that wants it meanwhile.
//!
//! The fetching task appends pieces as they arrive; each reader walks the pieces at its own pace
//! and waits for more. Readers never wait for the whole chunk, so time to first byte on a miss is
//! the upstream's, and concurrent readers of one chunk cause one upstream fetch.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

/// Why a fill did not complete. Readers see it after the bytes that did arrive.
pub type FillError = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Default)]
struct State {
    pieces: Vec<Bytes>,
    outcome: Option<Result<(), FillError>>,
}

/// A chunk in flight.
pub struct Fill {
    state: Mutex<State>,
    /// Bumped on every change; readers wait on it.
    changed: watch::Sender<u64>,
}

impl Fill {
    /// A new, empty fill.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a reader panicked mid-read; the state itself is still consistent
        // (every mutation is a single push or assignment).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends bytes that arrived from the upstream.
    pub fn push(&self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        self.state().pieces.push(piece);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Ends the fill; on success returns the whole chunk as one buffer.
    pub fn finish(&self, outcome: Result<(), FillError>) -> Option<Bytes> {
        let mut state = self.state();
        let whole = outcome.is_ok().then(|| {
            let len = state.pieces.iter().map(Bytes::len).sum();
            let mut buf = BytesMut::with_capacity(len);
            state.pieces.iter().for_each(|p| buf.extend_from_slice(p));
            buf.freeze()
        });
        state.outcome = Some(outcome);
        drop(state);
        self.changed.send_modify(|v| *v += 1);
        whole
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

/// One request's position in a [`Fill`].
pub struct FillReader {
    fill: Arc<Fill>,
    next: usize,
    changed: watch::Receiver<u64>,
}

impl FillReader {
    /// The next piece, `Ok(None)` at the end of a complete chunk, or the fill's error.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FillError> {
        loop {
            {
                let state = self.fill.state();
                if let Some(piece) = state.pieces.get(self.next) {
                    self.next += 1;
                    return Ok(Some(piece.clone()));
                }
                match &state.outcome {
                    Some(Ok(())) => return Ok(None),
                    Some(Err(e)) => return Err(e.clone()),
                    None => {}
                }
            }
            if self.changed.changed().await.is_err() {
                // The sender lives in the fill we hold, so this cannot happen; be safe anyway.
                return Err(Arc::new(std::io::Error::other("fill abandoned")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_see_pieces_as_they_arrive_and_the_end() {
        let fill = Fill::new();
        let mut early = fill.reader();
        fill.push(Bytes::from_static(b"ab"));
        assert_eq!(early.next().await.unwrap().unwrap(), "ab");
        let waiting = tokio::spawn(async move {
            let second = early.next().await.unwrap().unwrap();
            (second, early.next().await.unwrap())
        });
        fill.push(Bytes::from_static(b"cd"));
        assert_eq!(fill.finish(Ok(())).unwrap(), "abcd");
        assert_eq!(waiting.await.unwrap(), (Bytes::from_static(b"cd"), None));
        let mut late = fill.reader();
        assert_eq!(late.next().await.unwrap().unwrap(), "ab");
    }

    #[tokio::test]
    async fn a_failed_fill_reports_its_error_after_the_bytes_that_arrived() {
        let fill = Fill::new();
        fill.push(Bytes::from_static(b"ab"));
        assert!(fill.finish(Err(Arc::new(std::io::Error::other("cut")))).is_none());
        let mut r = fill.reader();
        assert_eq!(r.next().await.unwrap().unwrap(), "ab");
        assert_eq!(r.next().await.unwrap_err().to_string(), "cut");
    }
}
