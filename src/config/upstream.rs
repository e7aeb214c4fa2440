//! The `upstreams` section: where objects come from, and how each upstream is reached.

use std::path::PathBuf;

use serde::Deserialize;

use super::resilience::{self, BreakerConfig, HedgeConfig, RetryConfig};
use super::{defaults, invalid, ConfigError};

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

/// Upstream addressing style.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamAddressing {
    /// `endpoint/bucket/key`.
    #[default]
    Path,
    /// `bucket.endpoint-host/key`.
    Virtual,
}

/// Where an upstream's credentials come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// `static` (the keys below), `env` (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`), `profile` (the shared credentials file), `web_identity` (a
    /// Kubernetes service-account token exchanged with STS) or `anonymous` (unsigned).
    /// Default: `env`.
    #[serde(default)]
    pub source: CredentialsSource,
    /// Access key id for `static`; `${ENV}` is expanded. Default: none.
    pub access_key_id: Option<String>,
    /// Secret key for `static`; `${ENV}` is expanded. Default: none.
    pub secret_access_key: Option<String>,
    /// Session token for `static`; `${ENV}` is expanded. Default: none.
    pub session_token: Option<String>,
    /// Profile for `profile`. Default: `$AWS_PROFILE`, else `default`.
    pub profile: Option<String>,
    /// Credentials file for `profile`. Default: `$AWS_SHARED_CREDENTIALS_FILE`, else
    /// `$HOME/.aws/credentials`.
    pub file: Option<PathBuf>,
    /// Role to assume for `web_identity`. Default: `$AWS_ROLE_ARN`.
    pub role_arn: Option<String>,
    /// Web identity token file for `web_identity`. Default: `$AWS_WEB_IDENTITY_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// Session name for `web_identity`. Default: `$AWS_ROLE_SESSION_NAME`, else `shardcache`.
    pub session_name: Option<String>,
}

/// See [`CredentialsConfig::source`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsSource {
    /// Keys written in the config (usually as `${ENV}` references).
    Static,
    /// The standard `AWS_*` environment variables.
    #[default]
    Env,
    /// A profile of the shared credentials file.
    Profile,
    /// STS AssumeRoleWithWebIdentity with a token file (IRSA, EKS Pod Identity's OIDC flavour,
    /// GKE/AKS workload identity federation to AWS); temporary keys, refreshed before expiry.
    WebIdentity,
    /// No signing (public buckets, test servers).
    Anonymous,
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
