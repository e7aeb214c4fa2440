//! The asking side of cluster mode: which member owns a chunk, and fetching it from that owner
//! over its peer listener.
//!
//! A chunk this node does not own is asked of its owner: `GET /peer/v1/chunk` with the chunk's
//! upstream, bucket, key and byte span, and its ETag once known (the owner pins its own upstream
//! read to it). Without the ETag (a cold read), the owner opens the object and answers with its
//! metadata too. The owner answers from its cache, from its fill in flight, or by filling from
//! the upstream itself; it never forwards a peer request (one hop).
//!
//! Whatever goes wrong with the owner costs time, never bytes: an owner that cannot be reached,
//! times out or answers nonsense is passed over for the upstream, and its breaker ejects it for
//! a while (its chunks then go to the second choice); a body that breaks mid-chunk, drips below
//! the floor or fails its proof continues from the upstream at the byte where it stopped (the
//! last proven one), pinned to the same ETag. Every answer is proven under the cluster secret
//! (see [`crate::auth`]): a byte is passed on only once its segment's tag matched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures_util::future::BoxFuture;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use prometheus::IntCounter;

use super::auth::{framed_len, unframed_len, ClusterKey, Unframer, ANSWER_HEADER, PEER_HEADER};
use super::placement::{Member, Place, Placement};
use crate::metrics::ClusterMetrics;
use shardcache_types::{ETag, ObjectMeta, ObjectRef};
use shardcache_upstream::{
    content_range, exchange, meta_from, network_error, pooled_body, BodyFetch, Breaker, BreakerPolicy, Floor, Meter,
    OriginBody, OriginError,
};

/// The peer listener's one path.
pub const CHUNK_PATH: &str = "/peer/v1/chunk";
/// The peer listener's path naming the node that answers.
pub const MEMBER_PATH: &str = "/peer/v1/member";
/// Longest answer to [`MEMBER_PATH`] read.
const MAX_MEMBER_ANSWER: usize = 4096;
/// The error code of an owner whose upstream is failing (503): not held against the owner.
pub const UPSTREAM_FAILING: &str = "UpstreamFailing";
/// The owner's answer header saying where the chunk came from: `hit` or `fill`.
pub const OUTCOME_HEADER: &str = "x-shardcache-peer-outcome";
/// How long an idle connection to a peer stays pooled.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Reads a span of a chunk from the upstream: the fallback, and the continuation of a broken
/// peer body.
pub type UpstreamFetch = Box<dyn FnOnce(Range<u64>) -> BodyFetch + Send>;

/// Who sent a fetched chunk's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The chunk's owner (which keeps it); should its body break, the upstream sends the rest.
    Owner,
    /// The upstream: this node is the one to fetch the chunk, or the owner failed.
    Upstream,
}

/// A chunk fetch through the cluster: the body, and who sent it.
pub type PeerFetch = BoxFuture<'static, Result<(Box<dyn OriginBody>, Served), OriginError>>;

/// A chunk, by where it belongs.
#[derive(Clone, Debug)]
pub struct ChunkPlace {
    /// Upstream name.
    pub upstream: Arc<str>,
    /// Bucket at the upstream.
    pub bucket: Arc<str>,
    /// Object key.
    pub key: Arc<str>,
    /// Chunk index.
    pub index: u64,
}

impl ChunkPlace {
    /// Chunk `index` of `object`.
    pub fn new(object: &ObjectRef, index: u64) -> Self {
        Self {
            upstream: object.upstream.clone(),
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            index,
        }
    }

    fn place(&self) -> Place<'_> {
        Place {
            upstream: &self.upstream,
            bucket: &self.bucket,
            key: &self.key,
            chunk: self.index,
        }
    }

    /// The peer request's target for bytes `span` of this chunk, pinned to `etag` if known.
    fn target(&self, span: &Range<u64>, etag: Option<&ETag>) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let mut t = format!(
            "{CHUNK_PATH}?upstream={}&bucket={}&key={}&start={}&end={}",
            enc(&self.upstream),
            enc(&self.bucket),
            enc(&self.key),
            span.start,
            span.end
        );
        if let Some(etag) = etag {
            t.push_str("&etag=");
            t.push_str(&enc(etag.as_str()));
        }
        t
    }
}

/// The answer to [`MEMBER_PATH`].
#[derive(serde::Serialize, serde::Deserialize)]
pub struct MemberAnswer {
    /// The node's id.
    pub node: String,
    /// Its zone.
    pub zone: Option<String>,
}

/// Settings of the asking side.
pub struct PeerOptions {
    /// This node.
    pub me: Member,
    /// The cluster secret.
    pub key: ClusterKey,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for an answer or the next bytes of a body.
    pub read_timeout: Duration,
    /// When a peer is ejected.
    pub breaker: BreakerPolicy,
    /// The least an owner's body must deliver, else the rest comes from the upstream.
    pub floor: Option<Floor>,
}

/// A member this node can ask.
struct Peer {
    addr: SocketAddr,
    breaker: Breaker,
}

/// The members as last known.
struct View {
    placement: Placement,
    peers: HashMap<String, Arc<Peer>>,
}

/// The cluster as one node sees it. Cheap to share.
pub struct Peers {
    opts: PeerOptions,
    view: ArcSwap<View>,
    connector: Arc<Connector>,
    metrics: Arc<ClusterMetrics>,
}

/// What asking a chunk's owner came to.
enum Asked {
    /// This node is the one to fetch it (the owner, or the choice after an ejected owner).
    Local,
    /// The owner failed: fetch from the upstream.
    Failed,
    /// The owner answered that the object is not there, or changed.
    Answer(OriginError),
    /// The owner's answer, to read.
    Got(Box<Reply>),
}

struct Reply {
    session: HttpSession,
    resp: ResponseHeader,
    peer: HttpPeer,
    /// The tag of the answer's header, which its body's tags chain to.
    tag: String,
    /// The member that answered.
    from: Arc<Peer>,
}

impl Peers {
    /// The asking side, with no member but this node until [`Self::set_members`].
    pub fn new(opts: PeerOptions, metrics: Arc<ClusterMetrics>) -> Self {
        let me = opts.me.clone();
        let peers = Self {
            view: ArcSwap::from_pointee(View {
                placement: Placement::new(&me, std::slice::from_ref(&me)),
                peers: HashMap::new(),
            }),
            opts,
            connector: Arc::new(Connector::new(None)),
            metrics,
        };
        peers.metrics.cluster_members.set(1);
        peers
    }

    /// Replaces the members (this node is added if missing). A member kept keeps its breaker.
    pub fn set_members(&self, members: Vec<(Member, SocketAddr)>) {
        let me = &self.opts.me;
        let old = self.view();
        let mut list: Vec<Member> = members.iter().map(|(m, _)| m.clone()).collect();
        if !list.iter().any(|m| m.id == me.id) {
            list.push(me.clone());
        }
        let peers = members
            .into_iter()
            .filter(|(m, _)| m.id != me.id)
            .map(|(m, addr)| {
                let peer = match old.peers.get(&m.id) {
                    Some(p) if p.addr == addr => p.clone(),
                    _ => Arc::new(Peer {
                        addr,
                        breaker: Breaker::new(
                            format!("peer {}", m.id),
                            self.opts.breaker,
                            self.metrics.peer_breaker.with_label_values(&[&m.id]),
                            self.metrics.peer_breaker_rejections.with_label_values(&[&m.id]),
                        ),
                    }),
                };
                (m.id, peer)
            })
            .collect();
        let placement = Placement::new(me, &list);
        self.metrics.cluster_members.set(placement.members() as i64);
        self.view.store(Arc::new(View { placement, peers }));
    }

    /// Updates the gauge of ejected members (called before each scrape).
    pub fn refresh_gauges(&self) {
        let view = self.view();
        let open = |id: &String| self.metrics.peer_breaker.with_label_values(&[id]).get() == 2;
        let ejected = view.peers.keys().filter(|id| open(id)).count();
        self.metrics.cluster_ejected.set(ejected as i64);
    }

    fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// A fetch of bytes `span` of chunk `chunk` (version `etag`): from its owner, or with
    /// `upstream` when this node is the one to fetch it or the owner fails.
    pub fn fetch(
        self: &Arc<Self>,
        chunk: ChunkPlace,
        span: Range<u64>,
        etag: ETag,
        upstream: UpstreamFetch,
    ) -> PeerFetch {
        let peers = self.clone();
        let from_upstream = |fetch: BodyFetch| async move { Ok((fetch.await?, Served::Upstream)) };
        Box::pin(async move {
            let reply = match peers.ask(&chunk, &chunk.target(&span, Some(&etag))).await {
                Asked::Local | Asked::Failed => return from_upstream(upstream(span)).await,
                Asked::Answer(e) => return Err(e),
                Asked::Got(reply) => reply,
            };
            let resp = &reply.resp;
            let len = span.end - span.start;
            let header = |name| resp.headers.get(name).and_then(|v| v.to_str().ok());
            let fits = resp.status.as_u16() == 206
                && header("content-length").and_then(|v| v.parse::<u64>().ok()) == Some(framed_len(len))
                && header("etag").and_then(ETag::parse).as_ref() == Some(&etag);
            if !fits {
                reply.from.breaker.record_failure();
                peers.failed(&chunk, "answer does not fit the request");
                return from_upstream(upstream(span)).await;
            }
            Ok((peers.body(reply, span, upstream), Served::Owner))
        })
    }

    /// Opens the object of `chunk` at the chunk's owner, reading bytes `span` (within the chunk)
    /// along with the metadata. `None` when this node is the one to open it, or the owner failed;
    /// `resume` makes the upstream continuation of the body once the ETag is known.
    pub async fn open(
        &self,
        chunk: &ChunkPlace,
        span: Range<u64>,
        resume: impl FnOnce(&ETag) -> UpstreamFetch,
    ) -> Option<Result<(ObjectMeta, Option<Box<dyn OriginBody>>), OriginError>> {
        let reply = match self.ask(chunk, &chunk.target(&span, None)).await {
            Asked::Local | Asked::Failed => return None,
            Asked::Answer(e) => return Some(Err(e)),
            Asked::Got(reply) => reply,
        };
        let resp = &reply.resp;
        let header = |name| resp.headers.get(name).and_then(|v| v.to_str().ok());
        let opened = match resp.status.as_u16() {
            206 => content_range(resp).and_then(|(first, last, size)| {
                let wanted = span.start..span.end.min(size);
                let framed = header("content-length").and_then(|v| v.parse::<u64>().ok());
                ((first..last + 1) == wanted && framed == Some(framed_len(last + 1 - first))).then_some(size)
            }),
            // The object ends before the span: metadata only.
            416 => header("content-range")
                .and_then(|v| v.strip_prefix("bytes */"))
                .and_then(|v| v.parse().ok())
                .filter(|size| *size <= span.start),
            _ => None,
        };
        let meta = opened.and_then(|size| meta_from(resp, size, false).ok());
        let Some(meta) = meta else {
            reply.from.breaker.record_failure();
            self.failed(chunk, "answer does not fit the request");
            return None;
        };
        if resp.status.as_u16() == 416 {
            return Some(Ok((meta, None)));
        }
        let span = span.start..span.end.min(meta.size);
        let upstream = resume(&meta.etag);
        Some(Ok((meta, Some(self.body(reply, span, upstream)))))
    }

    /// The chunk's owner asked for `target`; or why not.
    async fn ask(&self, chunk: &ChunkPlace, target: &str) -> Asked {
        let view = self.view();
        let (first, second) = view.placement.owners(&chunk.place());
        let placed = |owner: &str| self.metrics.cluster_placements.with_label_values(&[owner]).inc();
        for member in [first, second].into_iter().flatten() {
            if member.id == self.opts.me.id {
                break;
            }
            let Some(peer) = view.peers.get(&member.id) else {
                continue;
            };
            // An ejected owner is skipped: its chunks go to the second choice.
            let Ok(ticket) = peer.breaker.admit(&member.id) else {
                continue;
            };
            placed("peer");
            let reply = match self.send(peer.clone(), target).await {
                Ok(reply) => reply,
                Err(e) => {
                    ticket.settle(false);
                    self.failed(chunk, &e.to_string());
                    return Asked::Failed;
                }
            };
            let status = reply.resp.status.as_u16();
            let code = reply.resp.headers.get("x-amz-error-code").and_then(|v| v.to_str().ok());
            let answer = match (status, code) {
                (200 | 206 | 416, _) => None,
                (404, Some("NoSuchBucket")) => Some(OriginError::NoSuchBucket),
                (404, _) => Some(OriginError::NoSuchKey),
                (412, _) => Some(OriginError::Changed),
                (503, Some(UPSTREAM_FAILING)) => {
                    // The owner is fine; its upstream is not, and likely ours neither.
                    ticket.settle(true);
                    self.failed(chunk, "the owner's upstream is failing");
                    return Asked::Failed;
                }
                _ => {
                    ticket.settle(false);
                    self.failed(chunk, &format!("answered {status}"));
                    return Asked::Failed;
                }
            };
            ticket.settle(true);
            return match answer {
                Some(e) => Asked::Answer(e),
                None => Asked::Got(Box::new(reply)),
            };
        }
        placed("self");
        Asked::Local
    }

    /// Sends a peer request for `target` to `peer` and reads the answer's header.
    async fn send(&self, peer: Arc<Peer>, target: &str) -> Result<Reply, OriginError> {
        let (session, resp, hp, tag) = self.request(peer.addr, target).await?;
        Ok(Reply {
            session,
            resp,
            peer: hp,
            tag,
            from: peer,
        })
    }

    /// Who listens at `addr`: its node id and zone, from its `GET /peer/v1/member`.
    pub async fn identify(&self, addr: SocketAddr) -> Result<Member, OriginError> {
        let (mut session, resp, _, tag) = self.request(addr, MEMBER_PATH).await?;
        let framed = resp
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let len = framed
            .and_then(unframed_len)
            .filter(|len| *len <= MAX_MEMBER_ANSWER as u64);
        let Some(len) = len else {
            return Err(OriginError::Invalid("member answer: no framed length".into()));
        };
        let mut unframer = self.opts.key.unframer(&tag, len);
        let mut body = Vec::new();
        while !unframer.whole() {
            match session.read_response_body().await.map_err(network_error)? {
                Some(piece) => unframer.push(&piece),
                None => return Err(OriginError::Invalid("member answer: cut short".into())),
            }
            while unframer.check().map_err(|e| self.unproven(e))?.is_some() {
                body.extend_from_slice(unframer.segment());
            }
        }
        if resp.status.as_u16() != 200 {
            return Err(OriginError::Rejected {
                status: resp.status.as_u16(),
                body: body.into(),
            });
        }
        let answer: MemberAnswer =
            serde_json::from_slice(&body).map_err(|e| OriginError::Invalid(format!("member answer: {e}")))?;
        Ok(Member {
            id: answer.node,
            zone: answer.zone,
        })
    }

    /// Sends a signed peer request for `target` to `addr` and reads the answer's header.
    async fn request(
        &self,
        addr: SocketAddr,
        target: &str,
    ) -> Result<(HttpSession, ResponseHeader, HttpPeer, String), OriginError> {
        let mut hp = HttpPeer::new(addr, false, String::new());
        hp.options.connection_timeout = Some(self.opts.connect_timeout);
        hp.options.read_timeout = Some(self.opts.read_timeout);
        hp.options.idle_timeout = Some(POOL_IDLE);
        let invalid = |e: Box<pingora_error::Error>| OriginError::Invalid(e.to_string());
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).map_err(invalid)?;
        req.insert_header("host", addr.to_string()).map_err(invalid)?;
        let key = &self.opts.key;
        let proof = key.sign("GET", target, &self.opts.me.id, SystemTime::now());
        req.insert_header(PEER_HEADER, &proof).map_err(invalid)?;
        let (session, resp) = exchange(&self.connector, &hp, req, self.opts.read_timeout).await?;
        // Nothing of an answer is believed, not even its status, unless it is the owner's.
        let status = resp.status.as_u16();
        let Some(tag) = resp.headers.get(ANSWER_HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(OriginError::Invalid(format!("answered {status} without a proof")));
        };
        let headers = resp
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()));
        if !key.check_header(tag, &proof, status, headers) {
            self.metrics.peer_reads.with_label_values(&["rejected"]).inc();
            return Err(OriginError::Invalid(format!(
                "answered {status} under a header that fails its proof"
            )));
        }
        let tag = tag.to_owned();
        Ok((session, resp, hp, tag))
    }

    /// Counts an answer's body that failed its proof, as the error that ends it.
    fn unproven(&self, e: crate::auth::Unproven) -> OriginError {
        self.metrics.peer_reads.with_label_values(&["rejected"]).inc();
        OriginError::Invalid(e.to_string())
    }

    /// The body of an owner's answer for bytes `span`, counted by the owner's outcome.
    fn body(&self, reply: Box<Reply>, span: Range<u64>, upstream: UpstreamFetch) -> Box<dyn OriginBody> {
        let reply = *reply;
        let outcome = match reply.resp.headers.get(OUTCOME_HEADER).map(|v| v.as_bytes()) {
            Some(b"hit") => "owner_hit",
            _ => "owner_fill",
        };
        self.metrics.peer_reads.with_label_values(&[outcome]).inc();
        Box::new(PeerBody {
            body: pooled_body(reply.session, reply.peer, &self.connector),
            unframer: self.opts.key.unframer(&reply.tag, span.end - span.start),
            meter: self.opts.floor.map(Floor::meter),
            from: reply.from,
            span,
            received: 0,
            ended: false,
            upstream: Some(upstream),
            fallen_back: None,
            bytes: self.metrics.peer_received_bytes.clone(),
            failed: self.metrics.peer_reads.with_label_values(&["failed"]),
            rejected: self.metrics.peer_reads.with_label_values(&["rejected"]),
        })
    }

    fn failed(&self, chunk: &ChunkPlace, why: &str) {
        self.metrics.peer_reads.with_label_values(&["failed"]).inc();
        tracing::warn!(
            ?chunk,
            error = why,
            "the chunk's owner failed; reading from the upstream"
        );
    }
}

/// A chunk's bytes from its owner, each segment passed on once proven; a break, a proof that
/// fails or a rate below the floor continues from the upstream.
struct PeerBody {
    body: Box<dyn OriginBody>,
    /// Checks the framed body, segment by segment.
    unframer: Unframer,
    /// The body's rate against the floor, if there is one.
    meter: Option<Meter>,
    /// The member sending it, whose breaker hears of a break.
    from: Arc<Peer>,
    /// The bytes of the object this body carries.
    span: Range<u64>,
    /// Bytes proven and passed on.
    received: u64,
    /// Every byte came, and the answer's end was lost.
    ended: bool,
    upstream: Option<UpstreamFetch>,
    /// The upstream's body, once the owner's broke.
    fallen_back: Option<Box<dyn OriginBody>>,
    bytes: IntCounter,
    failed: IntCounter,
    rejected: IntCounter,
}

#[async_trait]
impl OriginBody for PeerBody {
    async fn next(&mut self) -> Result<Option<&[u8]>, OriginError> {
        if let Some(body) = &mut self.fallen_back {
            return body.next().await;
        }
        if self.ended {
            return Ok(None);
        }
        loop {
            match self.unframer.check() {
                Ok(Some(n)) => {
                    self.received += n as u64;
                    break;
                }
                // More is needed; once the body is whole, its end.
                Ok(None) => {}
                Err(e) => {
                    self.rejected.inc();
                    return Err(OriginError::Invalid(e.to_string()));
                }
            }
            match self.body.next().await? {
                Some(piece) => {
                    self.bytes.inc_by(piece.len() as u64);
                    if let Some(why) = self.meter.as_mut().and_then(|m| m.count(piece.len())) {
                        return Err(OriginError::TimedOut(why));
                    }
                    self.unframer.push(piece);
                }
                // Short, however well framed: the fill asks to resume, and the rest comes from
                // the upstream like after a break.
                None => return Ok(None),
            }
        }
        Ok(Some(self.unframer.segment()))
    }

    async fn resume(&mut self, error: &OriginError) -> Result<bool, OriginError> {
        if let Some(body) = &mut self.fallen_back {
            return body.resume(error).await;
        }
        let Some(upstream) = self.upstream.take() else {
            return Ok(false);
        };
        self.failed.inc();
        self.from.breaker.record_failure();
        tracing::warn!(%error, received = self.received, "the owner's body broke; continuing from the upstream");
        let rest = self.span.start + self.received..self.span.end;
        match rest.is_empty() {
            // Every byte came; only the end of the answer was lost.
            true => self.ended = true,
            false => self.fallen_back = Some(upstream(rest).await?),
        }
        Ok(true)
    }
}
