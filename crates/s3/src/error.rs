//! The S3 errors shardcache itself answers with, and their wire form.
//!
//! Every failure a client can see is decided here: [`S3Error::status`] and [`S3Error::code`] are
//! the one mapping from error to HTTP status to S3 error code (which is also the metric label).

use bytes::Bytes;
use http::StatusCode;

use crate::auth::chunked::ChunkError;
use crate::auth::AuthError;

/// An error answered to the client as an S3 XML error document.
#[derive(Debug, Clone, thiserror::Error)]
pub enum S3Error {
    /// The key does not exist in the bucket.
    #[error("The specified key does not exist.")]
    NoSuchKey,
    /// The bucket is not routed to any upstream, or the upstream does not have it.
    #[error("The specified bucket does not exist.")]
    NoSuchBucket,
    /// The policy does not allow the request, or the upstream refused shardcache's credentials.
    #[error("Access Denied")]
    AccessDenied,
    /// The request's credentials were refused (see [`AuthError`] for each reason).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A well-formed `Range` that does not overlap the object.
    #[error("The requested range is not satisfiable")]
    InvalidRange {
        /// The `Range` header as the client sent it.
        requested: String,
        /// Object size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// A conditional header failed (412).
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed {
        /// The header that failed (`If-Match`, `If-Unmodified-Since`).
        condition: &'static str,
    },
    /// The request names no bucket, or a name that cannot be one.
    #[error("The specified bucket is not valid.")]
    InvalidBucketName,
    /// A malformed request (bad key, bad path encoding, ...); the message says what.
    #[error("{0}")]
    InvalidRequest(String),
    /// A query parameter or header value that cannot be taken (a parameter given twice, a copy
    /// source that names no object); the message says which.
    #[error("{0}")]
    InvalidArgument(String),
    /// An XML body that does not parse, or breaks S3's limits (DeleteObjects over 1,000 keys).
    #[error("The XML you provided was not well-formed or did not validate against our published schema")]
    MalformedXml,
    /// A body larger than shardcache reads for the operation.
    #[error("Your request was too big.")]
    MaxMessageLengthExceeded,
    /// A `Content-MD5` or `x-amz-checksum-*` that does not match the body; says which.
    #[error("The {0} you specified did not match the calculated checksum.")]
    BadDigest(&'static str),
    /// A body whose SHA-256 is not the `x-amz-content-sha256` it was signed with.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    /// A request body shorter than it said it would be.
    #[error("You did not provide the number of bytes specified by the Content-Length HTTP header.")]
    IncompleteBody,
    /// The operation is not offered by this upstream (writes to a local-directory origin).
    #[error("{0}")]
    NotImplemented(String),
    /// The upstream could not be reached or answered nonsense. What happened (which may name
    /// the upstream's address) is for the log only, never the client.
    #[error("The upstream could not be reached.")]
    BadGateway(String),
    /// The upstream did not answer within its timeouts, retries included. What happened is for
    /// the log only.
    #[error("The upstream did not answer in time.")]
    GatewayTimeout(String),
    /// The upstream's circuit breaker is open: misses fail fast until it is probed again.
    #[error("Please reduce your request rate.")]
    SlowDown,
    /// Something failed inside shardcache; the message is logged, not leaked.
    #[error("We encountered an internal error. Please try again.")]
    Internal,
}

/// What a client is answered for a failure: one of shardcache's own S3 errors, or an upstream's
/// error document passed through with its status.
#[derive(Debug)]
pub enum Failure {
    /// One of shardcache's own S3 errors.
    S3(S3Error),
    /// The upstream's own error document, passed through with its status.
    Upstream {
        /// Upstream status.
        status: u16,
        /// Upstream error body (S3 XML).
        body: Bytes,
    },
}

impl From<S3Error> for Failure {
    fn from(e: S3Error) -> Self {
        Self::S3(e)
    }
}

impl Failure {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::S3(e) => e.status().as_u16(),
            Self::Upstream { status, .. } => *status,
        }
    }
}

impl From<ChunkError> for S3Error {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::Signature => Self::Auth(AuthError::SignatureMismatch),
            ChunkError::Incomplete => Self::IncompleteBody,
            e @ (ChunkError::Malformed(_) | ChunkError::TooLong) => Self::InvalidRequest(e.to_string()),
        }
    }
}

impl S3Error {
    /// HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoSuchKey | Self::NoSuchBucket => StatusCode::NOT_FOUND,
            Self::AccessDenied => StatusCode::FORBIDDEN,
            Self::Auth(e) => match e {
                AuthError::HeaderMalformed(_)
                | AuthError::QueryMalformed(_)
                | AuthError::MissingHeader(_)
                | AuthError::WrongScope { .. }
                | AuthError::SigV2 => StatusCode::BAD_REQUEST,
                _ => StatusCode::FORBIDDEN,
            },
            Self::InvalidRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::InvalidBucketName
            | Self::InvalidRequest(_)
            | Self::InvalidArgument(_)
            | Self::MalformedXml
            | Self::MaxMessageLengthExceeded
            | Self::BadDigest(_)
            | Self::ContentSha256Mismatch
            | Self::IncompleteBody => StatusCode::BAD_REQUEST,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::SlowDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// S3 error code (the `<Code>` element).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoSuchKey => "NoSuchKey",
            Self::NoSuchBucket => "NoSuchBucket",
            Self::AccessDenied => "AccessDenied",
            Self::Auth(e) => match e {
                AuthError::HeaderMalformed(_) | AuthError::WrongScope { .. } => "AuthorizationHeaderMalformed",
                AuthError::QueryMalformed(_) => "AuthorizationQueryParametersError",
                AuthError::MissingHeader(_) => "MissingSecurityHeader",
                AuthError::UnknownKey => "InvalidAccessKeyId",
                AuthError::SignatureMismatch => "SignatureDoesNotMatch",
                AuthError::Skewed => "RequestTimeTooSkewed",
                AuthError::Expired | AuthError::NotYetValid | AuthError::UnsignedHeader(_) => "AccessDenied",
                AuthError::SigV2 => "InvalidRequest",
            },
            Self::InvalidRange { .. } => "InvalidRange",
            Self::PreconditionFailed { .. } => "PreconditionFailed",
            Self::InvalidBucketName => "InvalidBucketName",
            Self::InvalidRequest(_) => "InvalidRequest",
            Self::InvalidArgument(_) => "InvalidArgument",
            Self::MalformedXml => "MalformedXML",
            Self::MaxMessageLengthExceeded => "MaxMessageLengthExceeded",
            Self::BadDigest(_) => "BadDigest",
            Self::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
            Self::IncompleteBody => "IncompleteBody",
            Self::NotImplemented(_) => "NotImplemented",
            Self::BadGateway(_) => "BadGateway",
            Self::GatewayTimeout(_) => "GatewayTimeout",
            Self::SlowDown => "SlowDown",
            Self::Internal => "InternalError",
        }
    }

    /// The XML error document for a request to `at`, with the fields S3 adds for this error.
    pub fn to_xml(&self, at: &ErrorSite<'_>) -> Bytes {
        let mut fields: Vec<(&str, String)> = Vec::new();
        match self {
            Self::NoSuchKey => fields.extend(at.key.map(|k| ("Key", k.to_owned()))),
            Self::NoSuchBucket => fields.extend(at.bucket.map(|b| ("BucketName", b.to_owned()))),
            Self::InvalidRange { requested, size } => {
                fields.push(("RangeRequested", requested.clone()));
                fields.push(("ActualObjectSize", size.to_string()));
            }
            Self::PreconditionFailed { condition } => fields.push(("Condition", (*condition).to_owned())),
            _ => {}
        }
        error_xml(self.code(), &self.to_string(), &fields, at)
    }
}

/// What an error document says about the request it answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorSite<'a> {
    /// The request path.
    pub resource: &'a str,
    /// The request's id.
    pub request_id: &'a str,
    /// The bucket as the client named it, if any.
    pub bucket: Option<&'a str>,
    /// The key, if any.
    pub key: Option<&'a str>,
}

/// Builds an S3 `<Error>` document: code, message, the error's own `fields`, resource and
/// request id.
pub fn error_xml(code: &str, message: &str, fields: &[(&str, String)], at: &ErrorSite<'_>) -> Bytes {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>",
        escape(code),
        escape(message)
    );
    for (name, value) in fields {
        x.push_str(&format!("<{name}>{}</{name}>", escape(value)));
    }
    x.push_str(&format!(
        "<Resource>{}</Resource><RequestId>{}</RequestId></Error>",
        escape(at.resource),
        escape(at.request_id)
    ));
    x.into()
}

/// Escapes text for an XML element body or attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A parser turns a raw CR into a line feed: written as a reference, it stays a CR.
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// Reads the `<Code>` of an S3 error document, if `body` is one.
pub fn code_of_error_body(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Error {
        #[serde(rename = "Code")]
        code: String,
    }
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("<Error") {
        return None;
    }
    crate::xml::from_xml::<Error>(body).map(|e| e.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> ErrorSite<'static> {
        ErrorSite {
            resource: "/b/a&b<c>",
            request_id: "req-1",
            bucket: Some("b"),
            key: Some("a&b<c>"),
        }
    }

    fn text(xml: &Bytes) -> &str {
        std::str::from_utf8(xml).unwrap()
    }

    #[test]
    fn error_documents_escape_the_resource() {
        let xml = S3Error::NoSuchKey.to_xml(&site());
        let xml = text(&xml);
        assert!(xml.contains("<Code>NoSuchKey</Code>"));
        assert!(xml.contains("<Key>a&amp;b&lt;c&gt;</Key>"));
        assert!(xml.contains("<Resource>/b/a&amp;b&lt;c&gt;</Resource>"));
        assert_eq!(code_of_error_body(xml.as_bytes()).as_deref(), Some("NoSuchKey"));
    }

    #[test]
    fn error_documents_carry_the_fields_s3_adds() {
        let bucket = S3Error::NoSuchBucket.to_xml(&site());
        assert!(text(&bucket).contains("<BucketName>b</BucketName>"));
        let range = S3Error::InvalidRange {
            requested: "bytes=10-".into(),
            size: 3,
        };
        let range = range.to_xml(&site());
        assert!(
            text(&range).contains("<RangeRequested>bytes=10-</RangeRequested><ActualObjectSize>3</ActualObjectSize>")
        );
        let failed = S3Error::PreconditionFailed { condition: "If-Match" }.to_xml(&site());
        assert!(text(&failed).contains("<Condition>If-Match</Condition>"));
    }

    #[test]
    fn auth_failures_answer_as_s3_does() {
        let cases = [
            (AuthError::SignatureMismatch, 403, "SignatureDoesNotMatch"),
            (AuthError::UnknownKey, 403, "InvalidAccessKeyId"),
            (AuthError::Skewed, 403, "RequestTimeTooSkewed"),
            (AuthError::Expired, 403, "AccessDenied"),
            (
                AuthError::HeaderMalformed("x".into()),
                400,
                "AuthorizationHeaderMalformed",
            ),
            (
                AuthError::QueryMalformed("x".into()),
                400,
                "AuthorizationQueryParametersError",
            ),
            (AuthError::MissingHeader("x-amz-date"), 400, "MissingSecurityHeader"),
            (AuthError::SigV2, 400, "InvalidRequest"),
        ];
        for (e, status, code) in cases {
            let e = S3Error::from(e);
            assert_eq!((e.status().as_u16(), e.code()), (status, code));
        }
    }

    #[test]
    fn statuses_follow_s3() {
        let range = S3Error::InvalidRange {
            requested: String::new(),
            size: 3,
        };
        assert_eq!(range.status(), 416);
        assert_eq!(S3Error::NoSuchBucket.status(), 404);
        assert_eq!(S3Error::NotImplemented("x".into()).status(), 501);
        assert_eq!(code_of_error_body(b"<html>"), None);
    }
}
