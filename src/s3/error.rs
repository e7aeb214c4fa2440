//! The S3 errors shardcache itself answers with, and their wire form.
//!
//! Every failure a client can see is decided here: [`S3Error::status`] and [`S3Error::code`] are
//! the one mapping from error to HTTP status to S3 error code (which is also the metric label).

use bytes::Bytes;
use http::StatusCode;

/// An error answered to the client as an S3 XML error document.
#[derive(Debug, Clone, thiserror::Error)]
pub enum S3Error {
    /// The key does not exist in the bucket.
    #[error("The specified key does not exist.")]
    NoSuchKey,
    /// The bucket is not routed to any upstream, or the upstream does not have it.
    #[error("The specified bucket does not exist.")]
    NoSuchBucket,
    /// The upstream refused shardcache's credentials.
    #[error("Access Denied")]
    AccessDenied,
    /// A well-formed `Range` that does not overlap the object.
    #[error("The requested range is not satisfiable")]
    InvalidRange {
        /// Object size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// A conditional header failed (412).
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    /// The request names no bucket, or a name that cannot be one.
    #[error("The specified bucket is not valid.")]
    InvalidBucketName,
    /// A malformed request (bad key, bad path encoding, ...); the message says what.
    #[error("{0}")]
    InvalidRequest(String),
    /// The operation is not offered by this upstream (writes to a local-directory origin).
    #[error("{0}")]
    NotImplemented(String),
    /// The HTTP method is not allowed on this resource.
    #[error("The specified method is not allowed against this resource.")]
    MethodNotAllowed,
    /// The upstream could not be reached or answered nonsense.
    #[error("The upstream could not be reached: {0}")]
    BadGateway(String),
    /// Something failed inside shardcache; the message is logged, not leaked.
    #[error("We encountered an internal error. Please try again.")]
    Internal,
}

impl S3Error {
    /// HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoSuchKey | Self::NoSuchBucket => StatusCode::NOT_FOUND,
            Self::AccessDenied => StatusCode::FORBIDDEN,
            Self::InvalidRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::InvalidBucketName | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// S3 error code (the `<Code>` element).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoSuchKey => "NoSuchKey",
            Self::NoSuchBucket => "NoSuchBucket",
            Self::AccessDenied => "AccessDenied",
            Self::InvalidRange { .. } => "InvalidRange",
            Self::PreconditionFailed => "PreconditionFailed",
            Self::InvalidBucketName => "InvalidBucketName",
            Self::InvalidRequest(_) => "InvalidRequest",
            Self::NotImplemented(_) => "NotImplemented",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::BadGateway(_) => "BadGateway",
            Self::Internal => "InternalError",
        }
    }

    /// The XML error document for `resource` (the request path).
    pub fn to_xml(&self, resource: &str, request_id: &str) -> Bytes {
        error_xml(self.code(), &self.to_string(), resource, request_id)
    }
}

/// Builds an S3 `<Error>` document.
pub fn error_xml(code: &str, message: &str, resource: &str, request_id: &str) -> Bytes {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
         <Resource>{}</Resource><RequestId>{}</RequestId></Error>",
        escape(code),
        escape(message),
        escape(resource),
        escape(request_id)
    )
    .into()
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
            c => out.push(c),
        }
    }
    out
}

/// Reads the `<Code>` of an S3 error document, if `body` is one.
pub fn code_of_error_body(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("<Error>") {
        return None;
    }
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(&text[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_escape_the_resource() {
        let xml = S3Error::NoSuchKey.to_xml("/b/a&b<c>", "req-1");
        let xml = std::str::from_utf8(&xml).unwrap();
        assert!(xml.contains("<Code>NoSuchKey</Code>"));
        assert!(xml.contains("<Resource>/b/a&amp;b&lt;c&gt;</Resource>"));
        assert_eq!(code_of_error_body(xml.as_bytes()), Some("NoSuchKey"));
    }

    #[test]
    fn statuses_follow_s3() {
        assert_eq!(S3Error::InvalidRange { size: 3 }.status(), 416);
        assert_eq!(S3Error::NoSuchBucket.status(), 404);
        assert_eq!(S3Error::NotImplemented("x".into()).status(), 501);
        assert_eq!(code_of_error_body(b"<html>"), None);
    }
}
