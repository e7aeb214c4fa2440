//! The `upstreams` section: where objects come from, and how each upstream is reached.

use std::path::PathBuf;

use serde::Deserialize;

use super::resilience::{self, BreakerConfig, HedgeConfig, RetryConfig};
use super::{defaults, invalid, ConfigError};
pub use crate::upstream::{CredentialsConfig, CredentialsSource, UpstreamAddressing};

/// One upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamConfig {
    /// An S3-compatible endpoint.
    S3(Box<S3UpstreamConfig>),
    /// A local directory whose top-level folders are buckets (read-only).
    Fs {
        /// Root directory. `${ENV}` is expanded. Required.
        root: PathBuf,
    },
}

/// An S3-compatible endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3UpstreamConfig {
    /// `https://host[:port]` or `http://host[:port]`. `${ENV}` is expanded. Required.
    pub endpoint: String,
    /// Signing region. Default: `us-east-1`.
    #[serde(default = "defaults::region")]
    pub region: String,
    /// `path` (`endpoint/bucket/key`) or `virtual` (`bucket.endpoint/key`). Default: `path`.
    #[serde(default)]
    pub addressing: UpstreamAddressing,
    /// Credentials used to sign requests to this upstream. Default: `source: env`.
    #[serde(default)]
    pub credentials: CredentialsConfig,
    /// Seconds allowed to connect. Default: `10`.
    #[serde(default = "defaults::connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// Seconds allowed between two reads from the upstream. Default: `60`.
    #[serde(default = "defaults::read_timeout_seconds")]
    pub read_timeout_seconds: u64,
    /// PEM bundle of the CAs an `https` endpoint's certificate must chain to, instead of the
    /// system's roots (`${ENV}` expanded). Default: none (the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Retries of idempotent reads. Default: see [`RetryConfig`].
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker. Default: see [`BreakerConfig`].
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Hedged chunk reads. Default: none (off).
    #[serde(default)]
    pub hedge: Option<HedgeConfig>,
}

/// Checks S3 upstream `name`; the error names the field.
pub(super) fn validate_s3(name: &str, s3: &S3UpstreamConfig) -> Result<(), ConfigError> {
    let field = |f: &str| format!("upstreams.{name}.{f}");
    let uri: http::Uri = s3
        .endpoint
        .parse()
        .map_err(|e| invalid(field("endpoint"), format!("not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(invalid(
            field("endpoint"),
            "must be http://host[:port] or https://host[:port]",
        ));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(invalid(field("endpoint"), "must not have a path"));
    }
    if let Some(ca) = &s3.ca_file {
        if uri.scheme_str() != Some("https") {
            return Err(invalid(field("ca_file"), "applies to https endpoints only"));
        }
        crate::tls::ca_bundle(ca).map_err(|e| invalid(field("ca_file"), e.to_string()))?;
    }
    let c = &s3.credentials;
    if c.source == CredentialsSource::Static {
        for (f, v) in [
            ("access_key_id", &c.access_key_id),
            ("secret_access_key", &c.secret_access_key),
        ] {
            if v.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    field(&format!("credentials.{f}")),
                    "required when source is static",
                ));
            }
        }
    }
    resilience::validate(name, &s3.retry, &s3.breaker, s3.hedge.as_ref())
}
