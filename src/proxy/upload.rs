//! Chunk-signed uploads on the passthrough path. The client's chunk signatures chain from its
//! own key, so they are checked here, as the body streams, and the body is forwarded decoded
//! under shardcache's signature ([`crate::auth::chunked`] does the decoding).

use std::time::Duration;

use bytes::BytesMut;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

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
