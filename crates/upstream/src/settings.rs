//! The settings an upstream is built from that the config file spells out as they are: its
//! addressing style and where its credentials come from. The config's `upstreams` section uses
//! these types (so the YAML names their fields); everything else of the section is turned into
//! [`S3OriginOptions`](super::S3OriginOptions) by `app`.

use std::path::PathBuf;

use serde::Deserialize;

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
