//! Request bodies on the passthrough path, checked as they stream: chunk-signed uploads (the
//! client's chunk signatures chain from its own key, so they are checked here and the body is
//! forwarded decoded under shardcache's signature; [`crate::auth::chunked`] does the decoding),
//! and bodies signed with their SHA-256 ([`PayloadCheck`]): shardcache re-signs what it
//! forwards, so an altered body must be stopped here.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use sha2::{Digest, Sha256};

use crate::auth::chunked::{
    ChunkError, ChunkSigning, Decoder, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER,
};
use crate::auth::sigv4::UNSIGNED_PAYLOAD;
use crate::s3::S3Error;

/// How long the body of an empty chunk-signed upload may take to arrive (it is read whole,
/// about a hundred bytes, before the upstream hears of the request).
const EMPTY_BODY_WAIT: Duration = Duration::from_secs(30);
/// The most bytes an empty upload's body may take (its final chunk and trailer).
const EMPTY_BODY_MAX: usize = 4096;

/// A decoder when the request carries a chunk-signed body, `None` for any other body. With
/// client authentication on (`checked`), the request must have been signed: its signature
/// (`chunks`) seeds the chunks'.
///
/// A body that forwards as zero bytes is read and verified here, before the upstream hears of
/// the request: it would otherwise have that body whole as soon as it has the headers. Pingora
/// then forwards what was read (its retry buffer) through `request_body_filter` as usual.
pub async fn admit(
    session: &mut Session,
    chunks: Option<ChunkSigning>,
    checked: bool,
) -> Result<Option<Decoder>, S3Error> {
    let Some(decoder) = decoder_for(session.req_header(), chunks, checked)? else {
        return Ok(None);
    };
    if decoder.forwarded_len() == 0 {
        verify_empty(session, decoder.clone()).await?;
    }
    Ok(Some(decoder))
}

fn decoder_for(req: &RequestHeader, chunks: Option<ChunkSigning>, checked: bool) -> Result<Option<Decoder>, S3Error> {
    let header = |name| req.headers.get(name).and_then(|v| v.to_str().ok());
    let trailer = match header("x-amz-content-sha256") {
        Some(STREAMING_SIGNED) => None,
        Some(STREAMING_SIGNED_TRAILER) => Some(
            header("x-amz-trailer")
                .ok_or_else(|| S3Error::InvalidRequest("x-amz-trailer is required with this payload".into()))?,
        ),
        _ => return Ok(None),
    };
    if checked && chunks.is_none() {
        return Err(S3Error::InvalidRequest(
            "A chunk-signed body needs a request signed in the Authorization header.".into(),
        ));
    }
    let declared = header("x-amz-decoded-content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| S3Error::InvalidRequest("x-amz-decoded-content-length is required with this payload".into()))?;
    Ok(Some(Decoder::new(chunks, declared, trailer)?))
}

async fn verify_empty(session: &mut Session, mut check: Decoder) -> Result<(), S3Error> {
    session.as_mut().enable_retry_buffering();
    let mut out = BytesMut::new();
    let mut read = 0;
    let body = async {
        while let Some(b) = session.read_request_body().await.map_err(|_| ChunkError::Incomplete)? {
            read += b.len();
            if read > EMPTY_BODY_MAX {
                return Err(ChunkError::TooLong);
            }
            check.feed(&b, &mut out)?;
        }
        check.finish(&mut out)
    };
    tokio::time::timeout(EMPTY_BODY_WAIT, body)
        .await
        .map_err(|_| S3Error::IncompleteBody)??;
    Ok(())
}

/// Rewrites the upstream request's framing headers for the decoded body; returns the payload
/// hash to sign it with.
pub fn forward_headers(req: &mut RequestHeader, decoder: &Decoder) -> pingora_error::Result<&'static str> {
    // One framing only: the decoded body has a length.
    req.remove_header("transfer-encoding");
    req.insert_header("content-length", decoder.forwarded_len())?;
    if decoder.keeps_trailer() {
        return Ok(STREAMING_UNSIGNED_TRAILER);
    }
    req.remove_header("x-amz-decoded-content-length");
    let encodings: Vec<String> = req
        .headers
        .get_all("content-encoding")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .map(str::to_owned)
        .collect();
    req.remove_header("content-encoding");
    if !encodings.is_empty() {
        req.insert_header("content-encoding", encodings.join(", "))?;
    }
    Ok(UNSIGNED_PAYLOAD)
}

/// The SHA-256 of an empty body, in hex.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A body checked against the SHA-256 it was signed with (`x-amz-content-sha256`) as it streams
/// to the upstream. The last piece received is held back until the body has ended and its hash
/// matched, so that a body that does not match never reaches the upstream whole: the upload is
/// cut short and cannot complete.
pub struct PayloadCheck {
    hasher: Sha256,
    expected: [u8; 32],
    held: Option<Bytes>,
}

impl PayloadCheck {
    /// A check when the request names its body's hash; `None` for unsigned and chunk-signed
    /// bodies (each chunk carries its own signature). An empty body is checked here, at once.
    pub fn for_request(req: &RequestHeader) -> Result<Option<Self>, S3Error> {
        let Some(claimed) = req.headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let mut expected = [0u8; 32];
        if hex::decode_to_slice(claimed, &mut expected).is_err() {
            return Ok(None);
        }
        let empty = req.headers.get("content-length").is_some_and(|v| v.as_bytes() == b"0")
            && req.headers.get("transfer-encoding").is_none();
        match empty {
            true if claimed.eq_ignore_ascii_case(EMPTY_SHA256) => Ok(None),
            true => Err(S3Error::ContentSha256Mismatch),
            false => Ok(Some(Self {
                hasher: Sha256::new(),
                expected,
                held: None,
            })),
        }
    }

    /// Takes the next piece of the body (`end`: it is the last) and leaves in `body` what may
    /// go upstream now; at the end, the rest if the hash matched.
    pub fn feed(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<(), S3Error> {
        let incoming = body.take();
        if let Some(b) = &incoming {
            self.hasher.update(b);
        }
        if !end {
            // An empty piece, not `None`: Pingora takes `None` for the end of the body.
            *body = Some(match incoming {
                Some(b) => self.held.replace(b).unwrap_or_default(),
                None => Bytes::new(),
            });
            return Ok(());
        }
        if self.hasher.finalize_reset().as_slice() != self.expected {
            return Err(S3Error::ContentSha256Mismatch);
        }
        *body = Some(match (self.held.take(), incoming) {
            (Some(held), Some(last)) => [held, last].concat().into(),
            (held, last) => held.or(last).unwrap_or_default(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(hash: &str, len: usize) -> RequestHeader {
        let mut req = RequestHeader::build("PUT", b"/b/k", None).unwrap();
        req.insert_header("x-amz-content-sha256", hash).unwrap();
        req.insert_header("content-length", len.to_string()).unwrap();
        req
    }

    /// Feeds `pieces`; returns what went upstream, or the error.
    fn stream(check: &mut PayloadCheck, pieces: &[&[u8]]) -> Result<Vec<u8>, S3Error> {
        let mut sent = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(piece));
            check.feed(&mut body, i + 1 == pieces.len())?;
            sent.extend_from_slice(&body.expect("never None: that would end the body"));
        }
        Ok(sent)
    }

    #[test]
    fn a_matching_body_goes_through_whole_and_a_different_one_never_does() {
        let hash = hex::encode(Sha256::digest(b"hello world"));
        let mut check = PayloadCheck::for_request(&request(&hash, 11)).unwrap().unwrap();
        assert_eq!(stream(&mut check, &[b"hello", b" ", b"world"]).unwrap(), b"hello world");
        let mut check = PayloadCheck::for_request(&request(&hash, 11)).unwrap().unwrap();
        let mut sent = Vec::new();
        for piece in [&b"hello"[..], b" "] {
            let mut body = Some(Bytes::copy_from_slice(piece));
            check.feed(&mut body, false).unwrap();
            sent.extend_from_slice(&body.unwrap());
        }
        assert_eq!(sent, b"hello", "the last piece is held back");
        let mut last = Some(Bytes::from_static(b"World"));
        assert!(matches!(
            check.feed(&mut last, true),
            Err(S3Error::ContentSha256Mismatch)
        ));
    }

    #[test]
    fn empty_unsigned_and_streaming_bodies() {
        assert!(PayloadCheck::for_request(&request(EMPTY_SHA256, 0)).unwrap().is_none());
        let other = hex::encode(Sha256::digest(b"x"));
        assert!(matches!(
            PayloadCheck::for_request(&request(&other, 0)),
            Err(S3Error::ContentSha256Mismatch)
        ));
        for claim in [UNSIGNED_PAYLOAD, STREAMING_SIGNED] {
            assert!(PayloadCheck::for_request(&request(claim, 5)).unwrap().is_none());
        }
    }
}
