//! A fake cluster peer: a TCP relay that stands on the path between a node and a member's peer
//! listener and does harm to the member's answers, as a broken switch, a compromised host or a
//! dying owner would. Requests pass through untouched; each answer's header and body are
//! forwarded or changed as its [`Harm`] says.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the relay does to the answers of chunk requests (`206` answers). Others pass.
#[derive(Clone, Copy, Debug)]
pub enum Harm {
    /// Nothing: every byte as the member sent it.
    None,
    /// Flips the lowest bit of body byte `at` (counted in the framed body, as sent).
    FlipBit { at: usize },
    /// Changes the answer's ETag, keeping its length.
    ChangeEtag,
    /// Closes the connection after `at` bytes of the body.
    Cut { at: usize },
    /// Sends the body a byte at a time, one every `every`.
    Drip { every: Duration },
}

/// The relay, listening on 127.0.0.9 for the member at `target` (set once known), doing one harm.
pub struct FakePeer {
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    /// Chunk answers seen.
    answers: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakePeer {
    /// Starts the relay, doing `harm` once it knows its member ([`Self::relay_to`]).
    pub async fn start(harm: Harm) -> Self {
        let listener = TcpListener::bind(("127.0.0.9", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(None));
        let answers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (to, seen) = (target.clone(), answers.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let Some(member) = *to.lock().unwrap() else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(member).await else {
                        return;
                    };
                    let (mut client_read, client_write) = client.into_split();
                    let (server_read, mut server_write) = server.into_split();
                    let requests = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let _ = relay(server_read, client_write, harm, seen).await;
                    requests.abort();
                });
            }
        });
        Self { addr, target, answers }
    }

    /// Relays to the member listening at `member`.
    pub fn relay_to(&self, member: SocketAddr) {
        *self.target.lock().unwrap() = Some(member);
    }

    /// Chunk answers relayed so far.
    pub fn answers(&self) -> usize {
        self.answers.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Forwards the member's answers on one connection, doing `harm` to chunk answers.
async fn relay(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    harm: Harm,
    seen: Arc<std::sync::atomic::AtomicUsize>,
) -> std::io::Result<()> {
    let mut held = Vec::new();
    loop {
        while !held.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 16384];
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            held.extend_from_slice(&buf[..n]);
        }
        let end = held.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut head = String::from_utf8_lossy(&held[..end]).into_owned();
        held.drain(..end);
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let chunk = head.starts_with("HTTP/1.1 206");
        if chunk {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if chunk && matches!(harm, Harm::ChangeEtag) {
            // The ETag's first hex digit, changed: same length, another version.
            let at = head.to_lowercase().find("etag: \"").unwrap() + 7;
            let digit = if &head[at..at + 1] == "0" { "1" } else { "0" };
            head.replace_range(at..at + 1, digit);
        }
        to.write_all(head.as_bytes()).await?;
        let mut body = Vec::with_capacity(length);
        while body.len() + held.len() < length {
            let mut buf = [0u8; 16384];
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            held.extend_from_slice(&buf[..n]);
        }
        body.extend(held.drain(..length - body.len()));
        if !chunk {
            to.write_all(&body).await?;
            continue;
        }
        match harm {
            Harm::None | Harm::ChangeEtag => to.write_all(&body).await?,
            Harm::FlipBit { at } => {
                if let Some(b) = body.get_mut(at) {
                    *b ^= 1;
                }
                to.write_all(&body).await?;
            }
            Harm::Cut { at } => {
                to.write_all(&body[..at.min(body.len())]).await?;
                return Ok(());
            }
            Harm::Drip { every } => {
                for byte in body {
                    to.write_all(&[byte]).await?;
                    tokio::time::sleep(every).await;
                }
            }
        }
    }
}
