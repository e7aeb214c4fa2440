//! Limits on the clients of the S3 listener, so that slow or idle clients cannot wedge it:
//!
//! - **A connection cap.** Beyond `clients.max_connections` open connections (kept below the
//!   process's file-descriptor limit), a new connection is answered 503 SlowDown and closed.
//!   The admin listener is not counted, so health checks keep answering.
//! - **A header deadline.** A request's header must arrive whole within
//!   `clients.header_timeout_seconds` of its first byte (of the connection's opening, for a
//!   connection's first request): a client trickling its header a byte at a time is cut.
//!
//! Pingora accepts and hands each request of a connection to [`ServerApp::process_new`]; the
//! guard wraps the proxy's app there, and wraps each connection's stream in [`Counted`], which
//! holds its slot under the cap, sees its first bytes, and coalesces its writes (a response's
//! header goes out with its body in one `writev`: [`coalesce`]). The proxy marks a request's header
//! whole with [`header_done`] once Pingora has parsed it. The listener speaks HTTP/1 only (its
//! TLS settings offer no `h2`), so each call of `process_new` is one request.
//!
//! It uses Pingora's server side and `metrics`; it must not reach the S3 layer, the cache or the
//! upstreams: it knows connections and bytes, not requests' meaning.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    raw_connect::ProxyDigest, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::Metrics;
use coalesce::Coalesce;

mod coalesce;

/// File descriptors left out of the connection cap: upstream connections, the disk tier, the
/// admin listener and its clients.
const FD_RESERVE: u64 = 256;
/// How long a refused client gets to take its 503.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// How long a closing connection waits for the client to take the bytes still held.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);

/// The S3 listener's limits on clients.
#[derive(Clone, Copy, Debug)]
pub struct ClientLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A request's header must arrive whole within this.
    pub header_timeout: Duration,
}

/// `app` behind the limits.
pub struct Guard<A> {
    app: Arc<A>,
    slots: Arc<Semaphore>,
    header_timeout: Duration,
    open: IntGauge,
    over_limit: IntCounter,
    header_timeouts: IntCounter,
}

impl<A> Guard<A> {
    /// Guards `app`; the cap is `limits.max_connections`, lowered to fit the process's
    /// file-descriptor limit (each client connection may need an upstream one too).
    pub fn new(app: A, limits: ClientLimits, metrics: &Metrics) -> Self {
        let cap = limits.max_connections.min(fd_room());
        if cap < limits.max_connections {
            tracing::warn!(
                configured = limits.max_connections,
                cap,
                "clients.max_connections lowered to fit the open-file limit (ulimit -n)"
            );
        }
        let shed = |reason: &str| metrics.connections_shed.with_label_values(&[reason]);
        Self {
            app: Arc::new(app),
            slots: Arc::new(Semaphore::new(cap)),
            header_timeout: limits.header_timeout,
            open: metrics.client_connections.clone(),
            over_limit: shed("over_limit"),
            header_timeouts: shed("header_timeout"),
        }
    }
}

/// Client connections the open-file limit has room for: half of what the reserve leaves, as
/// each may need an upstream connection too.
fn fd_room() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    usize::try_from(limit.rlim_cur.saturating_sub(FD_RESERVE) / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guard<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let (stream, clock) = match stream.as_any().downcast_ref::<Counted>() {
            // A later request of a connection already counted: its header clock starts at its
            // first byte, so an idle keep-alive connection is not cut (Pingora's keep-alive
            // timeout closes those).
            Some(counted) => {
                let clock = counted.clock.clone();
                clock.next_request();
                (stream, clock)
            }
            None => {
                let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                    self.over_limit.inc();
                    refuse(stream).await;
                    return None;
                };
                let clock = Arc::new(HeaderClock::started(Instant::now()));
                let counted = Counted::new(stream, slot, clock.clone(), self.open.clone());
                (Box::new(counted) as Stream, clock)
            }
        };
        tokio::select! {
            reusable = self.app.process_new(stream, shutdown) => reusable,
            () = clock.expired(self.header_timeout) => {
                self.header_timeouts.inc();
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Answers a connection over the cap with 503 SlowDown, and closes it.
async fn refuse(mut stream: Stream) {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
               <Message>Too many connections; please reduce your request rate.</Message></Error>";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Retry-After: 1\r\nConnection: close\r\nServer: shardcache\r\n\r\n{xml}",
        xml.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.flush().await
    })
    .await;
    Shutdown::shutdown(&mut *stream).await;
}

/// Marks the header of the request on `stream` as read whole, stopping its header deadline.
pub fn header_done(stream: Option<&Stream>) {
    if let Some(counted) = stream.and_then(|s| s.as_any().downcast_ref::<Counted>()) {
        counted.clock.done.store(true, Ordering::Relaxed);
    }
}

/// How long, in all, the connection on `stream` has held bytes back that it could not send:
/// the client's receive window was closed, or the send buffer full (the kernel's
/// `tcpi_rwnd_limited` and `tcpi_sndbuf_limited`; zero before Linux 4.10). `None`: the stream
/// cannot tell.
pub fn held_back(stream: Option<&Stream>) -> Option<Duration> {
    let fd = stream?.id();
    // SAFETY: `tcp_info` is integers only, for which all zeroes is a value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let at = std::ptr::addr_of_mut!(info).cast();
    // SAFETY: getsockopt writes at most `len` bytes at `at` (a kernel with a shorter struct
    // leaves the rest zero) and the length it wrote to `len`; on a descriptor that is not a TCP
    // socket it fails.
    let read = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, at, &mut len) };
    (read == 0).then(|| Duration::from_micros(info.tcpi_rwnd_limited + info.tcpi_sndbuf_limited))
}

/// When the current request's header started, and whether it is whole.
struct HeaderClock {
    started: Mutex<Option<Instant>>,
    done: AtomicBool,
    /// Signalled when the first byte of a request arrives.
    first_byte: Notify,
}

impl HeaderClock {
    fn started(at: Instant) -> Self {
        Self {
            started: Mutex::new(Some(at)),
            done: AtomicBool::new(false),
            first_byte: Notify::new(),
        }
    }

    fn started_at(&self) -> Option<Instant> {
        *self.started.lock()
    }

    /// A new request on the connection: the clock waits for its first byte.
    fn next_request(&self) {
        *self.started.lock() = None;
        self.done.store(false, Ordering::Relaxed);
    }

    /// Bytes arrived: starts the clock if it waits for a request's first byte.
    fn saw_bytes(&self) {
        if self.done.load(Ordering::Relaxed) {
            return;
        }
        let mut started = self.started.lock();
        if started.is_none() {
            *started = Some(Instant::now());
            self.first_byte.notify_one();
        }
    }

    /// Resolves once the header has taken longer than `limit`; never, once it is whole.
    async fn expired(&self, limit: Duration) {
        let started = loop {
            let wake = self.first_byte.notified();
            if let Some(at) = self.started_at() {
                break at;
            }
            wake.await;
        };
        tokio::time::sleep_until(started + limit).await;
        if self.done.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    }
}

/// A client connection holding its slot under the cap; it sees the bytes it reads, for the
/// header clock. Everything else is the wrapped stream's.
pub struct Counted {
    inner: Stream,
    /// Small writes held back to go out with the next one (see [`coalesce`]).
    out: Coalesce,
    clock: Arc<HeaderClock>,
    open: IntGauge,
    _slot: OwnedSemaphorePermit,
}

impl Counted {
    fn new(inner: Stream, slot: OwnedSemaphorePermit, clock: Arc<HeaderClock>, open: IntGauge) -> Self {
        open.inc();
        Self {
            inner,
            out: Coalesce::default(),
            clock,
            open,
            _slot: slot,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl fmt::Debug for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counted").field("inner", &self.inner).finish()
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.saw_bytes();
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.out.poll_write(Pin::new(&mut *this.inner), cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.out.poll_drain(Pin::new(&mut *this.inner), cx))?;
        Pin::new(&mut *this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.out.poll_drain(Pin::new(&mut *this.inner), cx))?;
        Pin::new(&mut *this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.out.poll_drain(Pin::new(&mut *this.inner), cx))?;
        Pin::new(&mut *this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Counted {
    async fn shutdown(&mut self) {
        // What is held goes out first, if the client takes it soon.
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, AsyncWriteExt::flush(self)).await;
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for Counted {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Counted {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Counted {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Counted {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Counted {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Counted {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
