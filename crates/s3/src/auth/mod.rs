//! Who is asking, and may they: SigV4 verification of client requests against the configured
//! access keys, and the policy that decides what each principal may do.
//!
//! A leaf like `s3`: it sees a request's method, path, query and headers, never the cache or the
//! upstream. `proxy` asks it before anything else, so a refused request touches neither.

pub mod chunked;
mod policy;
pub mod sigv4;
mod timestamp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use parking_lot::Mutex;

use chunked::ChunkSigning;
pub use policy::{Action, Effect, Policy, Resource, Statement, Target, GET_LINEAGE, WARM};
use sigv4::SignedRequest;

use shardcache_types::Identity;

/// Why a request's credentials were refused. [`crate::S3Error`] turns each into S3's answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The `Authorization` header cannot be read.
    #[error("{0}")]
    HeaderMalformed(String),
    /// A presigned URL's query parameters cannot be read.
    #[error("{0}")]
    QueryMalformed(String),
    /// A header SigV4 needs is missing.
    #[error("Your request was missing a required header: {0}")]
    MissingHeader(&'static str),
    /// No such access key.
    #[error("The AWS Access Key Id you provided does not exist in our records.")]
    UnknownKey,
    /// The signature does not match.
    #[error("The request signature we calculated does not match the signature you provided. Check your key and signing method.")]
    SignatureMismatch,
    /// Signed too long ago or too far ahead.
    #[error("The difference between the request time and the current time is too large.")]
    Skewed,
    /// A presigned URL past its expiry.
    #[error("Request has expired")]
    Expired,
    /// A presigned URL whose date is ahead of now.
    #[error("Request is not valid yet")]
    NotYetValid,
    /// Signed for another region or service.
    #[error("The authorization was signed for {got}; this endpoint expects {want}")]
    WrongScope {
        /// What the client signed for.
        got: String,
        /// What shardcache expects.
        want: String,
    },
    /// An `x-amz-*` header the signature does not cover.
    #[error("There were headers present in the request which were not signed: {0}")]
    UnsignedHeader(String),
    /// Signature Version 2 (`AWS key:signature`), which S3 itself is retiring.
    #[error("Signature Version 2 is not supported: sign requests with Signature Version 4 (AWS4-HMAC-SHA256).")]
    SigV2,
}

/// An access key and the principal it authenticates.
#[derive(Clone, Debug)]
pub struct AccessKey {
    /// Access key id.
    pub id: String,
    /// Secret.
    pub secret: String,
    /// The principal's name, as policies name it.
    pub principal: String,
}

/// Verifier settings, from the `auth` section of the config.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    /// The region clients sign for.
    pub region: String,
    /// Largest difference between a header-signed request's date and now.
    pub max_skew: Duration,
    /// The keys clients sign with.
    pub keys: Vec<AccessKey>,
}

/// What a verified request carries on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Who signed it, or anonymous.
    pub identity: Identity,
    /// For a chunk-signed body, what its chunk signatures chain from.
    pub chunks: Option<ChunkSigning>,
}

/// Signing keys cached at once before the cache starts over (one per key: the day's).
const SIGNING_KEYS: usize = 4096;

/// A signing key, derived for one access key and day: as bytes (chunk signatures chain from
/// it) and prepared for HMAC (its padded blocks hashed once, not per request).
struct SigningKey {
    /// `yyyymmdd`.
    date: String,
    bytes: Arc<[u8]>,
    hmac: ring::hmac::Key,
}

/// Checks SigV4 signatures against the configured keys.
pub struct Verifier {
    opts: AuthOptions,
    /// The keys by id, each with its principal as requests carry it.
    keys: HashMap<String, (AccessKey, Arc<str>)>,
    /// Signing keys by access key id (the latest day's): deriving one takes four HMACs.
    signing_keys: Mutex<HashMap<String, Arc<SigningKey>>>,
}

/// The parts of a request a signature covers.
pub struct RequestParts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path as received (percent-encoded).
    pub path: &'a str,
    /// Query as received, without `?`.
    pub query: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
}

impl Verifier {
    /// A verifier for `opts`.
    pub fn new(opts: AuthOptions) -> Self {
        let keys = opts
            .keys
            .iter()
            .map(|k| (k.id.clone(), (k.clone(), k.principal.as_str().into())))
            .collect();
        Self {
            opts,
            keys,
            signing_keys: Mutex::new(HashMap::new()),
        }
    }

    /// How many access keys it knows.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Verifies `req` at time `now`. A request with no signature at all is anonymous (the
    /// policy decides what anonymous may do).
    pub fn verify(&self, req: &RequestParts<'_>, now: SystemTime) -> Result<Verified, AuthError> {
        let authorization = req.headers.get("authorization").map(|v| v.to_str().unwrap_or_default());
        // Percent-decoded presigned values, which `signed` borrows.
        let mut scratch = Vec::new();
        let signed = match authorization {
            Some(a) if a.starts_with("AWS ") => return Err(AuthError::SigV2),
            Some(a) => sigv4::parse_header(a, req.headers)?,
            None => match sigv4::parse_query(req.query, &mut scratch)? {
                Some(signed) => signed,
                None if req.query.split('&').any(|p| p.starts_with("Signature=")) => return Err(AuthError::SigV2),
                None => {
                    return Ok(Verified {
                        identity: Identity::Anonymous,
                        chunks: None,
                    })
                }
            },
        };
        self.check_time(&signed, now)?;
        self.check_scope(&signed)?;
        if let Some(name) = unsigned_amz_header(req.headers, &signed) {
            return Err(AuthError::UnsignedHeader(name));
        }
        let (key, principal) = self
            .keys
            .get(signed.credential.access_key)
            .ok_or(AuthError::UnknownKey)?;
        let signing_key = self.signing_key(key, &signed);
        let matched = sigv4::canonical_paths(req.path).any(|path| {
            sigv4::canonical_request(req.method, &path, req.query, req.headers, &signed).is_ok_and(|canonical| {
                let sts = sigv4::string_to_sign(&canonical, &signed);
                sigv4::signature_matches(
                    &sigv4::hmac_sha256_with(&signing_key.hmac, sts.as_bytes()),
                    signed.signature,
                )
            })
        });
        if !matched {
            return Err(AuthError::SignatureMismatch);
        }
        let chunks = [chunked::STREAMING_SIGNED, chunked::STREAMING_SIGNED_TRAILER]
            .contains(&signed.payload)
            .then(|| {
                let c = &signed.credential;
                ChunkSigning {
                    key: signing_key.bytes.clone(),
                    timestamp: signed.timestamp.to_owned(),
                    scope: format!("{}/{}/{}/aws4_request", c.date, c.region, c.service),
                    seed: signed.signature.to_ascii_lowercase(),
                }
            });
        Ok(Verified {
            identity: Identity::Principal(principal.clone()),
            chunks,
        })
    }

    fn check_time(&self, signed: &SignedRequest<'_>, now: SystemTime) -> Result<(), AuthError> {
        let skew = self.opts.max_skew;
        match signed.expires {
            // Presigned: valid from its date (give or take the skew) until date + expires.
            Some(expires) => {
                if signed.signed_at > now + skew {
                    return Err(AuthError::NotYetValid);
                }
                if now > signed.signed_at + expires {
                    return Err(AuthError::Expired);
                }
            }
            None => {
                let apart = now.duration_since(signed.signed_at).unwrap_or_else(|e| e.duration());
                if apart > skew {
                    return Err(AuthError::Skewed);
                }
            }
        }
        Ok(())
    }

    fn check_scope(&self, signed: &SignedRequest<'_>) -> Result<(), AuthError> {
        let c = &signed.credential;
        if c.region != self.opts.region || c.service != "s3" {
            return Err(AuthError::WrongScope {
                got: format!("region '{}', service '{}'", c.region, c.service),
                want: format!("region '{}', service 's3'", self.opts.region),
            });
        }
        Ok(())
    }

    fn signing_key(&self, key: &AccessKey, signed: &SignedRequest<'_>) -> Arc<SigningKey> {
        let date = signed.credential.date;
        let mut cache = self.signing_keys.lock();
        if let Some(k) = cache.get(&key.id).filter(|k| k.date == date) {
            return k.clone();
        }
        if cache.len() >= SIGNING_KEYS {
            cache.clear();
        }
        let derived = aws_sigv4::sign::v4::generate_signing_key(&key.secret, signed.signed_at, &self.opts.region, "s3");
        let derived = Arc::new(SigningKey {
            date: date.to_owned(),
            bytes: derived.as_ref().into(),
            hmac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()),
        });
        cache.insert(key.id.clone(), derived.clone());
        derived
    }
}

/// The first `x-amz-*` header present that the signature does not cover (a client could
/// otherwise add one, such as `x-amz-copy-source`, to a request signed by someone else).
fn unsigned_amz_header(headers: &HeaderMap, signed: &SignedRequest<'_>) -> Option<String> {
    headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-amz-"))
        .find(|k| !signed.signed_headers().any(|s| s == *k))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
