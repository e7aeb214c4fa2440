//! The S3 wire vocabulary: request addressing, ranges, conditional headers and errors.
//! Knows nothing of the cache, the upstream or the request lifecycle.

pub mod conditional;
mod error;
pub mod range;
mod request;
pub mod xml;

pub use error::{code_of_error_body, escape, ErrorSite, S3Error};
pub use request::{encode_path, query_keys, query_param, Addressing, Operation, S3Request};
