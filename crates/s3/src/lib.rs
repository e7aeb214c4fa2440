//! The S3 wire vocabulary: request addressing, the query, the operation table, ranges,
//! conditional headers, errors and XML; and [`auth`], SigV4 as S3 checks it and the policy.
//! Knows nothing of the cache, the upstream or the request lifecycle; it uses only
//! `shardcache-types`.

pub mod auth;
pub mod checksum;
pub mod conditional;
mod error;
pub mod operation;
mod query;
pub mod range;
mod request;
pub mod xml;

pub use error::{code_of_error_body, escape, ErrorSite, Failure, S3Error};
pub use operation::{Operation, ResourceKind};
pub use query::Query;
pub use request::{encode_path, object_key, query_param, Addressing, CopySource, S3Request, JOB_PARAM};

/// A header map of `(name, value)` pairs, for the module tests.
#[cfg(test)]
fn test_headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
        .collect()
}
