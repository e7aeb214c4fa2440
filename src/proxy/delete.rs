//! DeleteObjects, answered by shardcache itself: the body is read whole (bounded), checked
//! against its integrity header and signed hash, parsed as XML, and each key authorized on its
//! own. The keys allowed are forwarded in a body written anew (what was authorized is what the
//! upstream reads); the keys denied come back as per-key AccessDenied errors beside the
//! upstream's answer. The cache forgets exactly the keys the upstream reports deleted (all the
//! keys sent, when its answer cannot be read), before the client hears of it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use pingora_proxy::Session;
use tokio::sync::Semaphore;

use super::respond::send_xml;
use super::routes::Route;
use super::upload::PayloadCheck;
use super::{ProxyState, RequestCtx};
use crate::auth::chunked::ChunkSigning;
use crate::metrics::Outcome;
use crate::s3::xml::{DeleteError, DeleteObject, DeleteRequest, DeleteResult};
use crate::s3::{checksum, code_of_error_body, object_key, Failure, Operation, S3Error};
use crate::upstream::S3Origin;

/// Largest DeleteObjects body read: 1,000 keys of 1,024 bytes, each written with character
/// references, fit with room to spare.
const MAX_BODY: usize = 8 << 20;
/// DeleteObjects bodies held at once, all requests together, in KiB: past this, SlowDown.
static BODIES: Semaphore = Semaphore::const_new(64 << 10);
/// The longest a DeleteObjects body may take to arrive, whole.
const BODY_DEADLINE: Duration = Duration::from_secs(60);
/// The header that asks to delete past a governance-mode lock, forwarded when allowed.
const BYPASS: &str = "x-amz-bypass-governance-retention";

/// Answers a DeleteObjects to an S3 upstream. `extra` are the actions its headers ask for on
/// each key, besides deleting it.
pub async fn serve(
    state: &ProxyState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    origin: &S3Origin,
    chunks: Option<ChunkSigning>,
    extra: &[&'static str],
) -> Result<()> {
    let gate = state.gate.as_ref().map(|g| g.current());
    // Nothing is read for a principal that may delete nothing in the bucket.
    let prefix = format!("{}/", ctx.bucket_name);
    let deletes = ["DeleteObject", "DeleteObjectVersion"];
    if gate
        .as_ref()
        .is_some_and(|g| !g.policy.may_allow_under(&ctx.identity, &deletes, &prefix))
    {
        state.metrics.access_denied.with_label_values(&["DeleteObject"]).inc();
        ctx.denied = true;
        return ctx.fail(session, S3Error::AccessDenied).await;
    }
    let Ok(_held) = BODIES.try_acquire_many((MAX_BODY >> 10) as u32) else {
        return ctx.fail(session, S3Error::SlowDown).await;
    };
    let read = tokio::time::timeout(BODY_DEADLINE, read_request(session, chunks, state.gate.is_some()));
    let request = match read.await.unwrap_or(Err(S3Error::IncompleteBody)) {
        Ok(r) => r,
        Err(e) => return ctx.fail(session, e).await,
    };
    let mut result = DeleteResult::default();
    let mut allowed: Vec<DeleteObject> = Vec::new();
    for object in request.objects {
        let action = match object.version_id {
            Some(_) => "DeleteObjectVersion",
            None => "DeleteObject",
        };
        let mut actions = vec![action];
        actions.extend_from_slice(extra);
        let refused = match object_key(&object.key) {
            Err(invalid) => Some(invalid),
            Ok(_) => gate
                .as_ref()
                .filter(|g| !g.allows_object(&ctx.identity, &actions, &ctx.bucket_name, &object.key))
                .map(|_| {
                    state.metrics.access_denied.with_label_values(&[action]).inc();
                    S3Error::AccessDenied
                }),
        };
        match refused {
            None => allowed.push(object),
            Some(e) => result.errors.push(DeleteError {
                key: object.key,
                version_id: object.version_id,
                code: e.code().into(),
                message: e.to_string(),
            }),
        }
    }
    if !allowed.is_empty() {
        let forget = |key: &str| state.reader.invalidate(route.source.object(key));
        let body = Bytes::from(DeleteRequest::to_xml(&allowed));
        let mut headers = vec![("content-md5", checksum::content_md5(&body))];
        if let Some(v) = session.req_header().headers.get(BYPASS).and_then(|v| v.to_str().ok()) {
            headers.push((BYPASS, v.to_owned()));
        }
        ctx.outcome = Outcome::Passthrough;
        let labels = [&*route.upstream.name, Operation::DeleteObjects.as_str()];
        state.metrics.upstream.requests.with_label_values(&labels).inc();
        let answer = origin
            .call("POST", &route.source.bucket, "delete", &headers, body)
            .await;
        match answer.map(|(status, body)| (status, DeleteResult::parse(&body).filter(|_| status == 200), body)) {
            Ok((_, Some(upstream), _)) => {
                forgotten(&allowed, &upstream).into_iter().for_each(forget);
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
                state.metrics.upstream.errors.with_label_values(&labels).inc();
                allowed.iter().for_each(|o| forget(&o.key));
                return ctx.fail(session, e.answer()).await;
            }
        }
    }
    ctx.answered(send_xml(session, result.to_xml(request.quiet), &ctx.request_id).await)
}

/// The keys to forget after the upstream answered `answer` to a delete of `sent`: those it
/// reports deleted. Sent without Quiet, the answer names every key; one that names fewer may
/// have deleted what it does not name, so then every key sent is forgotten.
fn forgotten<'a>(sent: &'a [DeleteObject], answer: &'a DeleteResult) -> Vec<&'a str> {
    match answer.deleted.len() + answer.errors.len() < sent.len() {
        true => sent.iter().map(|o| o.key.as_str()).collect(),
        false => answer.deleted.iter().map(|d| d.key.as_str()).collect(),
    }
}

/// Reads the body whole and checks it: its chunk signatures (chunk-signed) or its signed hash,
/// its integrity header, then its XML.
async fn read_request(
    session: &mut Session,
    chunks: Option<ChunkSigning>,
    checked: bool,
) -> Result<DeleteRequest, S3Error> {
    let mut decoder = super::upload::admit(session, chunks, checked).await?;
    if decoder.as_ref().is_some_and(|d| d.keeps_trailer()) {
        return Err(S3Error::InvalidRequest(
            "DeleteObjects takes its checksum in a header (Content-MD5 or x-amz-checksum-*), not a trailer.".into(),
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::xml::Deleted;

    #[test]
    fn exactly_the_keys_reported_deleted_are_forgotten_unless_some_go_unreported() {
        let sent: Vec<DeleteObject> = ["a", "b", "c"]
            .iter()
            .map(|k| DeleteObject {
                key: (*k).into(),
                ..Default::default()
            })
            .collect();
        let deleted = |keys: &[&str]| -> Vec<Deleted> {
            keys.iter()
                .map(|k| Deleted {
                    key: (*k).into(),
                    ..Default::default()
                })
                .collect()
        };
        let failed = DeleteError {
            key: "c".into(),
            code: "InternalError".into(),
            ..Default::default()
        };
        let answer = DeleteResult {
            deleted: deleted(&["a", "b"]),
            errors: vec![failed],
        };
        assert_eq!(forgotten(&sent, &answer), ["a", "b"]);
        let short = DeleteResult {
            deleted: deleted(&["a"]),
            errors: Vec::new(),
        };
        assert_eq!(forgotten(&sent, &short), ["a", "b", "c"]);
    }
}
