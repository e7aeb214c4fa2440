//! Response headers and error answers. The one place a failure becomes what the client sees.

use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::RequestCtx;
use crate::s3::range::{content_range, unsatisfied_content_range};
use crate::s3::{ErrorSite, Failure, S3Error};
use crate::types::ObjectMeta;

/// S3's default content type for objects stored without one.
const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

fn internal(e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(ErrorType::InternalError, e.to_string())
}

/// A response header with the headers every shardcache answer carries.
pub fn base_header(status: StatusCode, request_id: &str) -> Result<ResponseHeader> {
    let mut h = ResponseHeader::build(status, None)?;
    h.insert_header("x-amz-request-id", request_id)?;
    h.insert_header("date", httpdate::fmt_http_date(SystemTime::now()))?;
    h.insert_header("server", "shardcache")?;
    Ok(h)
}

impl RequestCtx {
    /// Answers the request with an error and records its status.
    pub(super) async fn fail(&mut self, session: &mut Session, failure: impl Into<Failure>) -> Result<()> {
        let site = ErrorSite {
            resource: &self.resource,
            request_id: &self.request_id,
            bucket: Some(self.bucket_name.as_str()).filter(|b| !b.is_empty()),
            key: self.key.as_ref().map(|k| k.as_str()),
        };
        let failure = failure.into();
        if let Failure::S3(e) = &failure {
            self.error = Some(e.code());
        }
        // What went wrong upstream can name its address: the log has it, the client does not.
        if let Failure::S3(S3Error::BadGateway(why) | S3Error::GatewayTimeout(why)) = &failure {
            tracing::warn!(request_id = %self.request_id, error = %why, "upstream failure");
        }
        self.status = send_failure(session, failure, &site).await?;
        Ok(())
    }
}

/// Writes an error answer; returns its status.
async fn send_failure(session: &mut Session, failure: Failure, at: &ErrorSite<'_>) -> Result<u16> {
    let head = session.req_header().method == http::Method::HEAD;
    let (status, body, range_size) = match &failure {
        Failure::S3(e) => {
            let size = match e {
                S3Error::InvalidRange { size, .. } => Some(*size),
                _ => None,
            };
            (e.status(), e.to_xml(at), size)
        }
        Failure::Upstream { status, body } => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            body.clone(),
            None,
        ),
    };
    let mut h = base_header(status, at.request_id)?;
    h.insert_header("content-type", "application/xml")?;
    h.insert_header("content-length", body.len().to_string())?;
    if let Some(size) = range_size {
        h.insert_header("content-range", unsatisfied_content_range(size))?;
    }
    // HEAD answers carry no body, as S3's do.
    session.write_response_header(Box::new(h), head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(status.as_u16())
}

/// Which checksums an object answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksums {
    /// None: not asked for, or a ranged answer.
    Off,
    /// Those a HEAD answer carries.
    Head,
    /// Those a whole-object GET answer carries.
    Get,
}

/// The header of a GET/HEAD answer: 200 for the whole object, 206 for `span` of it, with the
/// object's `checksums` that apply.
pub fn object_header(
    meta: &ObjectMeta,
    span: Option<&Range<u64>>,
    checksums: Checksums,
    request_id: &str,
) -> Result<ResponseHeader> {
    let status = if span.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut h = validator_header(meta, status, request_id)?;
    let len = span.map_or(meta.size, |s| s.end - s.start);
    h.insert_header("content-length", len.to_string())?;
    if let Some(span) = span {
        h.insert_header("content-range", content_range(span, meta.size))?;
    }
    h.insert_header(
        "content-type",
        meta.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE),
    )?;
    let checksums = match checksums {
        Checksums::Off => &[],
        Checksums::Head => meta.checksums_for(true),
        Checksums::Get => meta.checksums_for(false),
    };
    for (name, value) in meta.headers.iter().chain(checksums) {
        h.append_header(name.clone(), value.clone()).map_err(internal)?;
    }
    Ok(h)
}

/// The header of a 304, or the validators of any object answer.
pub fn validator_header(meta: &ObjectMeta, status: StatusCode, request_id: &str) -> Result<ResponseHeader> {
    let mut h = base_header(status, request_id)?;
    h.insert_header("etag", meta.etag.as_str())?;
    h.insert_header("last-modified", httpdate::fmt_http_date(meta.last_modified))?;
    h.insert_header("accept-ranges", "bytes")?;
    if let Some(v) = &meta.version_id {
        h.insert_header("x-amz-version-id", v.as_str())?;
    }
    Ok(h)
}

/// XML body answer (local listings).
pub async fn send_xml(session: &mut Session, xml: String, request_id: &str) -> Result<u16> {
    let mut h = base_header(StatusCode::OK, request_id)?;
    h.insert_header("content-type", "application/xml")?;
    h.insert_header("content-length", xml.len().to_string())?;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(Bytes::from(xml)), true).await?;
    Ok(200)
}
