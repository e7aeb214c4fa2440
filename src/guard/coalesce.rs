//! Writes to a client, coalesced. Pingora's HTTP/1 writer sends a response's header and its
//! body as two writes, and its connection buffer (about one packet) passes any body larger than
//! that straight through: a 64 KiB hit took two `send` calls, header then body. Here a small
//! write (a header, a small body) is held until the next write or flush, and goes out with it in
//! one vectored write.
//!
//! Holding follows Pingora's own rule for its buffer: bytes wait for the next write only until a
//! flush, and Pingora flushes whenever a response is complete, has no known length (so may be
//! real-time), or is informational.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

/// Largest write held back (and most bytes held): a response header, with room to spare.
const HOLD_AT_MOST: usize = 8 << 10;

/// Bytes held back from the connection, and how many of them are sent.
#[derive(Debug, Default)]
pub(super) struct Coalesce {
    held: Vec<u8>,
    sent: usize,
}

impl Coalesce {
    /// Writes `buf` through `inner`: held if small, else sent along with what is held.
    pub(super) fn poll_write<W: AsyncWrite + ?Sized>(
        &mut self,
        mut inner: Pin<&mut W>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let held = self.held.len() - self.sent;
        if held + buf.len() <= HOLD_AT_MOST && inner.is_write_vectored() {
            self.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        if held == 0 {
            return inner.poll_write(cx, buf);
        }
        loop {
            let pending = &self.held[self.sent..];
            let n = ready!(inner
                .as_mut()
                .poll_write_vectored(cx, &[IoSlice::new(pending), IoSlice::new(buf)]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < pending.len() {
                self.sent += n;
                continue;
            }
            let of_buf = n - pending.len();
            self.clear();
            return match of_buf {
                0 => inner.poll_write(cx, buf),
                n => Poll::Ready(Ok(n)),
            };
        }
    }

    /// Sends what is held through `inner` (not flushing it).
    pub(super) fn poll_drain<W: AsyncWrite + ?Sized>(
        &mut self,
        mut inner: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(inner.as_mut().poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.clear();
        Poll::Ready(Ok(()))
    }

    fn clear(&mut self) {
        self.held.clear();
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    /// A vectored sink that takes at most `limit` bytes per call and records each call.
    #[derive(Default)]
    struct Sink {
        data: Vec<u8>,
        calls: Vec<usize>,
        limit: usize,
    }

    impl AsyncWrite for Sink {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.data.extend_from_slice(&buf[..n]);
            self.calls.push(n);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.limit - n);
                self.data.extend_from_slice(&b[..take]);
                n += take;
            }
            self.calls.push(n);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write_all(c: &mut Coalesce, sink: &mut Sink, mut buf: &[u8]) {
        while !buf.is_empty() {
            let n = poll_fn(|cx| c.poll_write(Pin::new(&mut *sink), cx, buf)).await.unwrap();
            buf = &buf[n..];
        }
    }

    /// A new coalescer and a sink taking at most `limit` bytes a call.
    fn fresh(limit: usize) -> (Coalesce, Sink) {
        let sink = Sink {
            limit,
            ..Sink::default()
        };
        (Coalesce::default(), sink)
    }

    #[tokio::test]
    async fn a_header_and_a_large_body_go_out_in_one_call() {
        let (mut c, mut sink) = fresh(usize::MAX);
        let body = vec![7u8; 64 << 10];
        write_all(&mut c, &mut sink, b"HTTP/1.1 200 OK\r\n\r\n").await;
        assert!(sink.calls.is_empty(), "the header is held");
        write_all(&mut c, &mut sink, &body).await;
        assert_eq!(sink.calls, [19 + body.len()]);
        assert_eq!(&sink.data[..19], b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(&sink.data[19..], &body[..]);
    }

    #[tokio::test]
    async fn partial_writes_keep_every_byte_in_order() {
        let (mut c, mut sink) = fresh(1000);
        let header: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let body: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
        write_all(&mut c, &mut sink, &header).await;
        write_all(&mut c, &mut sink, &body).await;
        write_all(&mut c, &mut sink, b"tail").await;
        poll_fn(|cx| c.poll_drain(Pin::new(&mut sink), cx)).await.unwrap();
        let want: Vec<u8> = [&header[..], &body[..], b"tail"].concat();
        assert_eq!(sink.data, want);
    }

    #[tokio::test]
    async fn small_writes_wait_for_the_drain() {
        let (mut c, mut sink) = fresh(usize::MAX);
        write_all(&mut c, &mut sink, b"header").await;
        write_all(&mut c, &mut sink, b"small body").await;
        assert!(sink.calls.is_empty());
        poll_fn(|cx| c.poll_drain(Pin::new(&mut sink), cx)).await.unwrap();
        assert_eq!(sink.calls, [16]);
        assert_eq!(sink.data, b"headersmall body");
    }
}
