//! How cluster members prove a peer request comes from one of them: an HMAC-SHA256, under the
//! cluster secret, over the request's method, path and query, the sending node and the time.
//!
//! The header is `x-shardcache-peer: v1 node=<id> t=<unix seconds> sig=<64 hex>`. A request is
//! accepted within `max_skew` of the receiver's clock. Peer requests are reads, so a replay
//! inside that window can only fetch again what the original request fetched.

use std::time::{Duration, SystemTime};

use ring::hmac;

/// The header carrying a peer request's proof.
pub const PEER_HEADER: &str = "x-shardcache-peer";

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

/// The cluster secret.
pub struct ClusterKey(hmac::Key);

impl ClusterKey {
    /// A key from the secret's bytes (at least 32 of them, checked with the config).
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The proof for a request by node `node` of `target` (path and query) at `now`.
    pub fn sign(&self, method: &str, target: &str, node: &str, now: SystemTime) -> String {
        let t = unix_seconds(now);
        let tag = hmac::sign(&self.0, &message(method, target, node, t));
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
        hmac::verify(&self.0, &message(method, target, node, t), &sig).map_err(|_| PeerAuthError::Mismatch)?;
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
}
