//! DeleteObjects, answered by shardcache itself: the body is read whole (bounded), checked
//! against its integrity header and signed hash, parsed as XML, and each key authorized on its
//! own. The keys allowed are forwarded in a body written anew (what was authorized is what the
//! upstream reads); the keys denied come back as per-key AccessDenied errors beside the
//! upstream's answer. The cache forgets exactly the keys the upstream reports deleted (all the
//! keys sent, when its answer cannot be read), before the client hears of it.

use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use pingora_proxy::Session;

use super::respond::{send_xml, Failure};
use super::routes::Route;
use super::upload::PayloadCheck;
use super::{ProxyState, RequestCtx};
use crate::auth::chunked::ChunkSigning;
use crate::cache::ObjectRef;
use crate::metrics::{Outcome, UpstreamCall};
use crate::s3::xml::{DeleteError, DeleteObject, DeleteRequest, DeleteResult};
use crate::s3::{checksum, code_of_error_body, S3Error};
use crate::upstream::S3Origin;

/// Largest DeleteObjects body read: 1,000 keys of 1,024 bytes, each written with character
/// references, fit with room to spare.
const MAX_BODY: usize = 8 << 20;

/// Answers a DeleteObjects to an S3 upstream.
pub async fn serve(
    state: &ProxyState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    origin: &S3Origin,
    chunks: Option<ChunkSigning>,
) -> Result<()> {
    let request = match read_request(session, chunks, state.gate.is_some()).await {
        Ok(r) => r,
        Err(e) => return ctx.fail(session, e).await,
    };
    let gate = state.gate.as_ref().map(|g| g.current());
    let mut result = DeleteResult::default();
    let mut allowed: Vec<DeleteObject> = Vec::new();
    for object in request.objects {
        let action = match object.version_id {
            Some(_) => "DeleteObjectVersion",
            None => "DeleteObject",
        };
        let ok = gate
            .as_ref()
            .is_none_or(|g| g.allows_object(&ctx.identity, action, &ctx.bucket_name, &object.key));
        match ok {
            true => allowed.push(object),
            false => {
                state.metrics.access_denied.with_label_values(&[action]).inc();
                result.errors.push(DeleteError {
                    key: object.key,
                    version_id: object.version_id,
                    code: S3Error::AccessDenied.code().into(),
                    message: S3Error::AccessDenied.to_string(),
                });
            }
        }
    }
    if !allowed.is_empty() {
        let forget = |key: &str| {
            let object = ObjectRef {
                upstream: route.upstream.name.clone(),
                bucket: route.bucket.clone(),
                key: key.into(),
            };
            state.meta.invalidate(&state.cache, object);
        };
        let body = Bytes::from(DeleteRequest::to_xml(&allowed));
        let headers = [("content-md5", checksum::content_md5(&body))];
        ctx.outcome = Outcome::Passthrough;
        let labels = [&*route.upstream.name, UpstreamCall::Passthrough.as_str()];
        state.metrics.upstream_requests.with_label_values(&labels).inc();
        let answer = origin.call("POST", &route.bucket, "delete", &headers, body).await;
        match answer.map(|(status, body)| (status, DeleteResult::parse(&body).filter(|_| status == 200), body)) {
            Ok((_, Some(upstream), _)) => {
                upstream.deleted.iter().for_each(|d| forget(&d.key));
                result.deleted = upstream.deleted;
                result.errors.extend(upstream.errors);
            }
            // The upstream may have deleted some or all: forget every key it was sent.
            Ok((status, None, body)) => {
                allowed.iter().for_each(|o| forget(&o.key));
                let failure = match code_of_error_body(&body) {
                    Some(_) => Failure::Upstream { status, body },
                    None => S3Error::BadGateway(format!("DeleteObjects answered {status} without a result")).into(),
                };
                return ctx.fail(session, failure).await;
            }
            Err(e) => {
                state.metrics.upstream_errors.with_label_values(&labels).inc();
                allowed.iter().for_each(|o| forget(&o.key));
                return ctx.fail(session, Failure::from(&e)).await;
            }
        }
    }
    ctx.answered(send_xml(session, result.to_xml(request.quiet), &ctx.request_id).await)
}

/// Reads the body whole and checks it: its chunk signatures (chunk-signed) or its signed hash,
/// its integrity header, then its XML.
async fn read_request(
    session: &mut Session,
    chunks: Option<ChunkSigning>,
    checked: bool,
) -> Result<DeleteRequest, S3Error> {
    let mut decoder = super::upload::admit(session, chunks, checked).await?;
    let mut payload = PayloadCheck::for_request(session.req_header())?;
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(S3Error::MaxMessageLengthExceeded);
    }
    let mut body = BytesMut::new();
    loop {
        let piece = session.read_request_body().await.map_err(|_| S3Error::IncompleteBody)?;
        let end = piece.is_none();
        if let Some(p) = &piece {
            if body.len() + p.len() > MAX_BODY {
                return Err(S3Error::MaxMessageLengthExceeded);
            }
        }
        match decoder.as_mut() {
            Some(d) => {
                if let Some(p) = &piece {
                    d.feed(p, &mut body)?;
                }
                if end {
                    d.finish(&mut body)?;
                }
            }
            None => {
                let mut piece = piece;
                if let Some(check) = payload.as_mut() {
                    check.feed(&mut piece, end)?;
                }
                body.extend_from_slice(&piece.unwrap_or_default());
            }
        }
        if end {
            break;
        }
    }
    checksum::check(&session.req_header().headers, &body, true)?;
    DeleteRequest::parse(&body)
}
