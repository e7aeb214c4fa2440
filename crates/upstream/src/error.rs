//! What went wrong talking to an upstream, and every decision taken from it, in one place: what
//! the client is answered ([`OriginError::answer`]), whether a retry may change it and under
//! which metric label ([`OriginError::retry_reason`]), whether it counts against the upstream's
//! circuit breaker ([`OriginError::counts_against_breaker`]), and whether it says the upstream is
//! failing rather than something about the object ([`OriginError::upstream_failing`]: reads go
//! to the fallback, stale metadata is served, a peer asks the upstream itself).
//!
//! Every fill error is one of these ([`shardcache_cache::FillError`]), so no caller inspects a
//! type-erased error.

use bytes::Bytes;

use shardcache_s3::{code_of_error_body, Failure, S3Error};

/// What went wrong talking to an origin (an upstream, or a peer answering for one).
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The key does not exist.
    #[error("no such key")]
    NoSuchKey,
    /// The bucket does not exist.
    #[error("no such bucket")]
    NoSuchBucket,
    /// The object no longer has the ETag the read was pinned to.
    #[error("the object changed since its metadata was read")]
    Changed,
    /// The upstream refused; `body` is its error document (S3 XML when it sent one).
    #[error("upstream answered {status}")]
    Rejected {
        /// HTTP status from the upstream.
        status: u16,
        /// Error body (may be empty).
        body: Bytes,
    },
    /// Connecting, sending or reading failed.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// Connecting, the answer, or the next read of its body took longer than allowed.
    #[error("upstream timed out: {0}")]
    TimedOut(String),
    /// The upstream's circuit breaker is open: the call was not made.
    #[error("upstream {0} is failing; its circuit breaker is open")]
    Unavailable(String),
    /// The upstream's answer made no sense (missing ETag, bad Content-Range, ...).
    #[error("invalid upstream response: {0}")]
    Invalid(String),
    /// A chunk's body ended with more or fewer bytes than the chunk holds.
    #[error("upstream sent {received} bytes for a chunk of {expected}")]
    WrongLength {
        /// Bytes the chunk should have.
        expected: u64,
        /// Bytes received (so far, when too many).
        received: u64,
    },
    /// A local I/O error (local-directory origin).
    #[error("local I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl OriginError {
    /// Why a failed call may succeed if tried again, as the retry metric labels it; `None` for
    /// answers a retry would not change.
    pub fn retry_reason(&self) -> Option<&'static str> {
        match self {
            Self::TimedOut(_) => Some("timeout"),
            Self::Unreachable(_) => Some("network"),
            Self::Rejected { status: 429 | 503, .. } => Some("throttled"),
            Self::Rejected {
                status: 500 | 502 | 504,
                ..
            } => Some("server_error"),
            // An answer that made no sense (a wrong Content-Range, a 200 to a range, a body of
            // the wrong length): its connection is closed, and another try is most likely
            // answered properly.
            Self::Invalid(_) | Self::WrongLength { .. } => Some("invalid"),
            _ => None,
        }
    }

    /// Whether a call that ended with this (after its retries) counts against the upstream's
    /// circuit breaker: exactly the failures a retry may cure.
    pub fn counts_against_breaker(&self) -> bool {
        self.retry_reason().is_some()
    }

    /// Whether this says the upstream is failing, rather than something about the object (404,
    /// 403, 412 are answers): what counts against the breaker, and the breaker's own refusal.
    pub fn upstream_failing(&self) -> bool {
        self.counts_against_breaker() || matches!(self, Self::Unavailable(_))
    }

    /// What the client is answered for it.
    pub fn answer(&self) -> Failure {
        match self {
            Self::NoSuchKey => S3Error::NoSuchKey.into(),
            Self::NoSuchBucket => S3Error::NoSuchBucket.into(),
            Self::Changed => S3Error::PreconditionFailed { condition: "If-Match" }.into(),
            Self::Rejected { status, body } if code_of_error_body(body).is_some() => Failure::Upstream {
                status: *status,
                body: body.clone(),
            },
            Self::Rejected { status: 403, .. } => S3Error::AccessDenied.into(),
            // Throttled without an error document (the answer to a HEAD has no body).
            Self::Rejected { status: 429 | 503, .. } => S3Error::SlowDown.into(),
            Self::Rejected { status, .. } => S3Error::BadGateway(format!("upstream answered {status}")).into(),
            Self::Unreachable(m) | Self::Invalid(m) => S3Error::BadGateway(m.clone()).into(),
            Self::WrongLength { .. } => S3Error::BadGateway(self.to_string()).into(),
            Self::TimedOut(m) => S3Error::GatewayTimeout(m.clone()).into(),
            Self::Unavailable(_) => S3Error::SlowDown.into(),
            Self::Io(e) => {
                tracing::error!(error = %e, "local origin I/O error");
                S3Error::Internal.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every failure a retry may cure counts against the breaker and says the upstream is
    /// failing; answers about the object do neither.
    #[test]
    fn the_decisions_agree() {
        let rejected = |status| OriginError::Rejected {
            status,
            body: Bytes::new(),
        };
        let failing = [
            OriginError::TimedOut("t".into()),
            OriginError::Unreachable("u".into()),
            OriginError::Invalid("i".into()),
            OriginError::WrongLength {
                expected: 2,
                received: 1,
            },
            rejected(429),
            rejected(500),
            rejected(502),
            rejected(503),
            rejected(504),
        ];
        for e in &failing {
            assert!(
                e.retry_reason().is_some() && e.counts_against_breaker() && e.upstream_failing(),
                "{e:?}"
            );
            assert!(e.answer().status() >= 500 || e.answer().status() == 429, "{e:?}");
        }
        let answers = [
            OriginError::NoSuchKey,
            OriginError::NoSuchBucket,
            OriginError::Changed,
            rejected(403),
            rejected(501),
        ];
        for e in &answers {
            assert!(e.retry_reason().is_none() && !e.upstream_failing(), "{e:?}");
        }
        let open = OriginError::Unavailable("u".into());
        assert!(open.upstream_failing() && !open.counts_against_breaker() && open.retry_reason().is_none());
        assert_eq!(open.answer().status(), 503);
    }
}
