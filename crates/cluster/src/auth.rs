//! How cluster members prove a peer request comes from one of them: an HMAC-SHA256, under the
//! cluster secret, over the request's method, path and query, the sending node and the time.
//!
//! The header is `x-shardcache-peer: v1 node=<id> t=<unix seconds> sig=<64 hex>`. A request is
//! accepted within `max_skew` of the receiver's clock. Peer requests are reads, so a replay
//! inside that window can only fetch again what the original request fetched.
//!
//! Answers are proven too, so that nothing on the path (and no listener without the secret) can
//! change a byte the asker serves or stores. Under a key derived from the secret:
//! - the header's tag (`x-shardcache-peer-answer: <64 hex>`) covers the request's proof, the
//!   status and every header but the transport's ([`Self::seal_header`]);
//! - the body is framed in segments of [`SEGMENT`] bytes (the last one shorter), each followed
//!   by its 32-byte tag over the header's tag, its index and its bytes ([`Framer`],
//!   [`Unframer`]). The asker checks each segment before it passes a byte of it on.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ring::hmac;
use subtle::ConstantTimeEq;

/// The header carrying a peer request's proof.
pub const PEER_HEADER: &str = "x-shardcache-peer";
/// The header carrying the tag of a peer answer's header.
pub const ANSWER_HEADER: &str = "x-shardcache-peer-answer";
/// Bytes of an answer's body per tagged segment.
pub const SEGMENT: usize = 32 << 10;
/// Bytes of a segment's tag.
pub const TAG: usize = 32;
/// Headers of an answer its tag does not cover: the transport's, which a hop may rewrite.
const TRANSPORT_HEADERS: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "date",
    "server",
    ANSWER_HEADER,
];

/// Why a peer request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    /// No proof, or not one this version reads.
    #[error("malformed peer proof")]
    Malformed,
    /// The time is too far from the receiver's.
    #[error("peer proof outside the allowed clock skew")]
    Skewed,
    /// The signature does not match: another secret, or an altered request.
    #[error("peer proof does not match")]
    Mismatch,
}

/// The cluster secret: the key of requests' proofs, and the one derived from it for answers.
pub struct ClusterKey {
    requests: hmac::Key,
    answers: hmac::Key,
}

impl ClusterKey {
    /// A key from the secret's bytes (at least 32 of them, checked with the config).
    pub fn new(secret: &[u8]) -> Self {
        let requests = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&requests, b"shardcache peer answers v1");
        Self {
            answers: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            requests,
        }
    }

    /// The tag of an answer to the request proven by `proof`: its `status` and `headers`
    /// (lower-case names; the transport's are left out), as hex.
    pub fn seal_header<'h>(
        &self,
        proof: &str,
        status: u16,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    ) -> String {
        let mut covered: Vec<(&str, &[u8])> = headers.filter(|(name, _)| !TRANSPORT_HEADERS.contains(name)).collect();
        covered.sort();
        let mut ctx = hmac::Context::with_key(&self.answers);
        for part in [proof.as_bytes(), &status.to_be_bytes()] {
            update_prefixed(&mut ctx, part);
        }
        for (name, value) in covered {
            update_prefixed(&mut ctx, name.as_bytes());
            update_prefixed(&mut ctx, value);
        }
        hex::encode(ctx.sign().as_ref())
    }

    /// Whether `tag` (hex) is the tag of that answer.
    pub fn check_header<'h>(
        &self,
        tag: &str,
        proof: &str,
        status: u16,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    ) -> bool {
        let Ok(tag) = hex::decode(tag) else {
            return false;
        };
        let want = hex::decode(self.seal_header(proof, status, headers)).unwrap_or_default();
        want.ct_eq(&tag).into()
    }

    /// The tagging of the body of the answer whose header's tag is `header` (hex).
    pub fn framer(&self, header: &str) -> Framer {
        Framer {
            segments: Segments::new(&self.answers, header),
            open: None,
        }
    }

    /// The checking of the body of the answer whose header's tag is `header` (hex), `len`
    /// bytes before framing.
    pub fn unframer(&self, header: &str, len: u64) -> Unframer {
        Unframer {
            segments: Segments::new(&self.answers, header),
            left: len,
            held: Vec::new(),
            passed: 0,
        }
    }

    /// The proof for a request by node `node` of `target` (path and query) at `now`.
    pub fn sign(&self, method: &str, target: &str, node: &str, now: SystemTime) -> String {
        let t = unix_seconds(now);
        let tag = hmac::sign(&self.requests, &message(method, target, node, t));
        format!("v1 node={node} t={t} sig={}", hex::encode(tag.as_ref()))
    }

    /// The sending node's id if `proof` is valid for `method` and `target` at `now`.
    pub fn verify(
        &self,
        proof: &str,
        method: &str,
        target: &str,
        now: SystemTime,
        max_skew: Duration,
    ) -> Result<String, PeerAuthError> {
        let mut fields = proof.strip_prefix("v1 ").ok_or(PeerAuthError::Malformed)?.split(' ');
        let mut field = |name: &str| {
            fields
                .next()
                .and_then(|f| f.strip_prefix(name))
                .ok_or(PeerAuthError::Malformed)
        };
        let node = field("node=")?;
        let t: u64 = field("t=")?.parse().map_err(|_| PeerAuthError::Malformed)?;
        let sig = hex::decode(field("sig=")?).map_err(|_| PeerAuthError::Malformed)?;
        if unix_seconds(now).abs_diff(t) > max_skew.as_secs() {
            return Err(PeerAuthError::Skewed);
        }
        // ring compares in constant time.
        hmac::verify(&self.requests, &message(method, target, node, t), &sig).map_err(|_| PeerAuthError::Mismatch)?;
        Ok(node.to_owned())
    }
}

/// What is signed: each part length-prefixed, so no two requests sign the same bytes.
fn message(method: &str, target: &str, node: &str, t: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + target.len());
    for part in [method.as_bytes(), target.as_bytes(), node.as_bytes(), &t.to_be_bytes()] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn update_prefixed(ctx: &mut hmac::Context, part: &[u8]) {
    ctx.update(&(part.len() as u64).to_be_bytes());
    ctx.update(part);
}

/// The length of a body of `len` bytes, framed.
pub fn framed_len(len: u64) -> u64 {
    len + len.div_ceil(SEGMENT as u64) * TAG as u64
}

/// The length of the body that, framed, is `framed` bytes long, if one is.
pub fn unframed_len(framed: u64) -> Option<u64> {
    let segments = framed.div_ceil((SEGMENT + TAG) as u64);
    let len = framed.checked_sub(segments * TAG as u64)?;
    (framed_len(len) == framed).then_some(len)
}

/// The tags of one answer's segments, in order.
struct Segments {
    key: hmac::Key,
    header: Vec<u8>,
    index: u64,
}

impl Segments {
    fn new(answers: &hmac::Key, header: &str) -> Self {
        Self {
            key: answers.clone(),
            header: header.as_bytes().to_vec(),
            index: 0,
        }
    }

    /// The context of the next segment's tag, its header's tag and index already in.
    fn next(&mut self) -> hmac::Context {
        let mut ctx = hmac::Context::with_key(&self.key);
        update_prefixed(&mut ctx, &self.header);
        ctx.update(&self.index.to_be_bytes());
        self.index += 1;
        ctx
    }
}

/// Frames a body piece by piece: the pieces, split at segment ends, each segment followed by its
/// tag. The owner's side.
pub struct Framer {
    segments: Segments,
    /// The tag of the segment being sent, and its bytes so far.
    open: Option<(hmac::Context, usize)>,
}

impl Framer {
    /// `piece` as it is to be sent: split at segment ends, each followed by its segment's tag.
    pub fn push(&mut self, mut piece: Bytes) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(3);
        while !piece.is_empty() {
            let (ctx, filled) = self.open.get_or_insert_with(|| (self.segments.next(), 0));
            let part = piece.split_to(piece.len().min(SEGMENT - *filled));
            ctx.update(&part);
            *filled += part.len();
            let ended = *filled == SEGMENT;
            out.push(part);
            if ended {
                out.extend(self.finish());
            }
        }
        out
    }

    /// The tag of the last segment, unless it was sent already.
    pub fn finish(&mut self) -> Option<Bytes> {
        let (ctx, _) = self.open.take()?;
        Some(Bytes::copy_from_slice(ctx.sign().as_ref()))
    }
}

/// A segment whose tag does not match its bytes, or bytes past the body's end.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the owner's answer fails its proof at segment {0}")]
pub struct Unproven(pub u64);

/// Checks a framed body: takes its bytes as they come, and gives each segment's bytes once its
/// tag is checked. The asker's side.
pub struct Unframer {
    segments: Segments,
    /// Body bytes (unframed) not yet checked.
    left: u64,
    /// Bytes received and not yet given.
    held: Vec<u8>,
    /// Bytes at `held`'s start given already (the last segment and its tag).
    passed: usize,
}

impl Unframer {
    /// Takes the next bytes of the framed body.
    pub fn push(&mut self, piece: &[u8]) {
        self.held.extend_from_slice(piece);
    }

    /// Checks the next segment once all of it and its tag are held: its length if it matches
    /// (its bytes are then [`Self::segment`]); `None` while more is needed, or once the body is
    /// whole ([`Self::whole`]).
    pub fn check(&mut self) -> Result<Option<usize>, Unproven> {
        self.held.drain(..std::mem::take(&mut self.passed));
        let n = (SEGMENT as u64).min(self.left) as usize;
        if n == 0 {
            return match self.held.is_empty() {
                true => Ok(None),
                false => Err(Unproven(self.segments.index)),
            };
        }
        if self.held.len() < n + TAG {
            return Ok(None);
        }
        let index = self.segments.index;
        let mut ctx = self.segments.next();
        ctx.update(&self.held[..n]);
        if !bool::from(ctx.sign().as_ref().ct_eq(&self.held[n..n + TAG])) {
            return Err(Unproven(index));
        }
        self.left -= n as u64;
        self.passed = n + TAG;
        Ok(Some(n))
    }

    /// The bytes of the segment [`Self::check`] last passed.
    pub fn segment(&self) -> &[u8] {
        &self.held[..self.passed.saturating_sub(TAG)]
    }

    /// Whether every segment was checked and given.
    pub fn whole(&self) -> bool {
        self.left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "/peer/chunk?upstream=s3&bucket=b&key=k&etag=%22e%22&index=3";
    const SKEW: Duration = Duration::from_secs(60);

    #[test]
    fn a_proof_verifies_for_its_request_only() {
        let key = ClusterKey::new(&[7; 32]);
        let now = SystemTime::now();
        let proof = key.sign("GET", TARGET, "node-a", now);
        assert_eq!(key.verify(&proof, "GET", TARGET, now, SKEW), Ok("node-a".to_owned()));
        let later = now + Duration::from_secs(30);
        assert_eq!(key.verify(&proof, "GET", TARGET, later, SKEW), Ok("node-a".to_owned()));
        let other = TARGET.replace("index=3", "index=4");
        assert_eq!(
            key.verify(&proof, "GET", &other, now, SKEW),
            Err(PeerAuthError::Mismatch)
        );
        assert_eq!(
            key.verify(&proof, "HEAD", TARGET, now, SKEW),
            Err(PeerAuthError::Mismatch)
        );
        let forged = proof.replace("node=node-a", "node=node-b");
        assert_eq!(
            key.verify(&forged, "GET", TARGET, now, SKEW),
            Err(PeerAuthError::Mismatch)
        );
    }

    #[test]
    fn another_secret_an_old_proof_or_garbage_is_refused() {
        let key = ClusterKey::new(&[7; 32]);
        let now = SystemTime::now();
        let proof = key.sign("GET", TARGET, "node-a", now);
        let stranger = ClusterKey::new(&[8; 32]);
        assert_eq!(
            stranger.verify(&proof, "GET", TARGET, now, SKEW),
            Err(PeerAuthError::Mismatch)
        );
        let late = now + Duration::from_secs(61);
        assert_eq!(
            key.verify(&proof, "GET", TARGET, late, SKEW),
            Err(PeerAuthError::Skewed)
        );
        for garbage in [
            "",
            "v2 node=a t=1 sig=00",
            "v1 node=a",
            "v1 node=a t=x sig=00",
            "v1 node=a t=1 sig=zz",
        ] {
            assert_eq!(
                key.verify(garbage, "GET", TARGET, now, SKEW),
                Err(PeerAuthError::Malformed),
                "{garbage}"
            );
        }
    }

    /// `body` framed under `header`'s tag, sent in pieces of `piece` bytes.
    fn framed(key: &ClusterKey, header: &str, body: &[u8], piece: usize) -> Vec<u8> {
        let mut framer = key.framer(header);
        let mut out = Vec::new();
        for part in body.chunks(piece) {
            framer
                .push(Bytes::copy_from_slice(part))
                .iter()
                .for_each(|b| out.extend_from_slice(b));
        }
        out.extend_from_slice(&framer.finish().unwrap_or_default());
        out
    }

    /// What the asker takes from `wire` (a framed body of `len` bytes, received in pieces of
    /// `piece` bytes): the checked bytes, and how it ended.
    fn unframed(
        key: &ClusterKey,
        header: &str,
        wire: &[u8],
        len: u64,
        piece: usize,
    ) -> (Vec<u8>, Result<bool, Unproven>) {
        let mut unframer = key.unframer(header, len);
        let mut got = Vec::new();
        for part in wire.chunks(piece) {
            unframer.push(part);
            loop {
                match unframer.check() {
                    Ok(Some(_)) => got.extend_from_slice(unframer.segment()),
                    Ok(None) => break,
                    Err(e) => return (got, Err(e)),
                }
            }
        }
        let whole = unframer.whole();
        (got, unframer.check().map(|_| whole))
    }

    #[test]
    fn a_framed_body_passes_whole_in_any_pieces_and_fails_at_any_changed_bit() {
        let key = ClusterKey::new(&[7; 32]);
        let body: Vec<u8> = (0..SEGMENT * 2 + 1000).map(|i| (i * 31 % 251) as u8).collect();
        let wire = framed(&key, "aa", &body, 5000);
        assert_eq!(wire.len() as u64, framed_len(body.len() as u64));
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT] {
            assert_eq!(unframed_len(framed_len(len as u64)), Some(len as u64));
        }
        assert_eq!(unframed_len(TAG as u64), None, "a tag alone frames nothing");
        assert_eq!(
            wire,
            framed(&key, "aa", &body, SEGMENT * 3),
            "framing does not depend on pieces"
        );
        for piece in [1, 999, SEGMENT + TAG, wire.len()] {
            assert_eq!(
                unframed(&key, "aa", &wire, body.len() as u64, piece),
                (body.clone(), Ok(true))
            );
        }
        // A bit flipped in any segment's bytes or tag: what came before it passes, nothing after.
        for at in [0, SEGMENT - 1, SEGMENT + 5, SEGMENT + TAG + 7, wire.len() - 1] {
            let mut bad = wire.clone();
            bad[at] ^= 0x10;
            let (got, ended) = unframed(&key, "aa", &bad, body.len() as u64, 4096);
            let segment = at / (SEGMENT + TAG);
            assert_eq!(ended, Err(Unproven(segment as u64)), "bit at {at}");
            assert_eq!(got, body[..segment * SEGMENT], "bit at {at}");
        }
        // Under another answer's header, another secret, or moved: nothing passes.
        let stranger = ClusterKey::new(&[8; 32]);
        assert_eq!(
            unframed(&key, "ab", &wire, body.len() as u64, 4096),
            (vec![], Err(Unproven(0)))
        );
        assert_eq!(
            unframed(&stranger, "aa", &wire, body.len() as u64, 4096),
            (vec![], Err(Unproven(0)))
        );
        let mut swapped = wire[SEGMENT + TAG..2 * (SEGMENT + TAG)].to_vec();
        swapped.extend_from_slice(&wire[..SEGMENT + TAG]);
        assert_eq!(
            unframed(&key, "aa", &swapped, body.len() as u64, 4096),
            (vec![], Err(Unproven(0)))
        );
        // Cut short: what came is checked, and the body is not whole. Longer: refused.
        let (got, ended) = unframed(&key, "aa", &wire[..wire.len() - 10], body.len() as u64, 4096);
        assert_eq!((got.len(), ended), (2 * SEGMENT, Ok(false)));
        let mut long = wire.clone();
        long.push(0);
        assert_eq!(unframed(&key, "aa", &long, body.len() as u64, 4096).1, Err(Unproven(3)));
    }

    #[test]
    fn an_answer_header_tag_covers_its_request_status_and_headers_but_not_the_transport() {
        let key = ClusterKey::new(&[7; 32]);
        let proof = key.sign("GET", TARGET, "node-a", SystemTime::now());
        let headers: [(&str, &[u8]); 3] = [("etag", b"\"e\""), ("content-length", b"10"), ("x-amz-meta-a", b"1")];
        let tag = key.seal_header(&proof, 206, headers.into_iter());
        let check = |proof: &str, status, headers: &[(&str, &[u8])]| {
            key.check_header(&tag, proof, status, headers.iter().copied())
        };
        assert!(check(&proof, 206, &headers));
        let mut reordered = headers;
        reordered.reverse();
        let mut moved: Vec<(&str, &[u8])> = reordered.to_vec();
        moved.push(("connection", b"keep-alive"));
        moved.push(("date", b"now"));
        assert!(
            check(&proof, 206, &moved),
            "order and the transport's headers do not count"
        );
        assert!(!check(&proof, 200, &headers), "another status");
        assert!(!check(&proof, 206, &headers[..2]), "a header left out");
        let changed: [(&str, &[u8]); 3] = [("etag", b"\"f\""), headers[1], headers[2]];
        assert!(!check(&proof, 206, &changed), "a header changed");
        let other = key.sign("GET", TARGET, "node-b", SystemTime::now());
        assert!(!check(&other, 206, &headers), "the answer to another request");
        assert!(!key.check_header("zz", &proof, 206, headers.iter().copied()));
        let stranger = ClusterKey::new(&[8; 32]);
        assert!(!stranger.check_header(&tag, &proof, 206, headers.iter().copied()));
    }
}
