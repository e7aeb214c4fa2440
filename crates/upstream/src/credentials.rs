//! Where an upstream's signing credentials come from: fixed keys (config, `AWS_*` variables or
//! a shared credentials file, read once at start-up), or a Kubernetes web identity token
//! exchanged with STS for temporary keys that are refreshed before they expire. Commands a user
//! runs by hand (`shardcache probe`) take theirs from the AWS SDKs' default chain instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::{StaticConfiguration, WebIdentityTokenCredentialsProvider};
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use parking_lot::RwLock;

use super::SignError;
use super::{CredentialsConfig, CredentialsSource};

/// Temporary credentials are renewed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// An upstream's credentials.
#[derive(Clone)]
pub enum CredentialSource {
    /// Requests go unsigned.
    Anonymous,
    /// Keys that do not change while shardcache runs.
    Fixed(Credentials),
    /// Temporary keys from STS for a web identity token.
    WebIdentity(Arc<WebIdentity>),
}

impl CredentialSource {
    /// Resolves the configured source. Fixed keys are read now; for a web identity the token
    /// file and role are checked now and keys are fetched on first use. `env` looks variables
    /// up; `region` is the STS region.
    pub fn new(
        config: &CredentialsConfig,
        region: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SignError> {
        let c = config;
        Ok(match c.source {
            CredentialsSource::Anonymous => Self::Anonymous,
            CredentialsSource::Static => Self::Fixed(keys(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                "static",
            )?),
            CredentialsSource::Env => Self::Fixed(keys(
                env("AWS_ACCESS_KEY_ID"),
                env("AWS_SECRET_ACCESS_KEY"),
                env("AWS_SESSION_TOKEN"),
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            )?),
            CredentialsSource::Profile => {
                let profile = c
                    .profile
                    .clone()
                    .or_else(|| env("AWS_PROFILE"))
                    .unwrap_or_else(|| "default".into());
                let file = c
                    .file
                    .clone()
                    .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
                    .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")))
                    .ok_or_else(|| SignError::Credentials("no credentials file and no $HOME".into()))?;
                Self::Fixed(from_profile(&file, &profile)?)
            }
            CredentialsSource::WebIdentity => Self::WebIdentity(Arc::new(WebIdentity::new(c, region, env)?)),
        })
    }

    /// Credentials to sign with now; `None` for anonymous.
    pub async fn current(&self) -> Result<Option<Credentials>, SignError> {
        match self {
            Self::Anonymous => Ok(None),
            Self::Fixed(c) => Ok(Some(c.clone())),
            Self::WebIdentity(w) => w.current().await.map(Some),
        }
    }
}

/// STS `AssumeRoleWithWebIdentity` credentials (AWS's own provider), cached until shortly
/// before they expire. The token file is read at every exchange, so a token Kubernetes
/// rotates is picked up.
pub struct WebIdentity {
    provider: WebIdentityTokenCredentialsProvider,
    cached: RwLock<Option<Credentials>>,
    /// One exchange at a time; requests arriving meanwhile wait for its result.
    exchange: tokio::sync::Mutex<()>,
}

impl WebIdentity {
    fn new(c: &CredentialsConfig, region: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, SignError> {
        let token_file = c
            .token_file
            .clone()
            .or_else(|| env("AWS_WEB_IDENTITY_TOKEN_FILE").map(PathBuf::from))
            .ok_or_else(|| {
                SignError::Credentials("web_identity needs token_file or $AWS_WEB_IDENTITY_TOKEN_FILE".into())
            })?;
        std::fs::metadata(&token_file)
            .map_err(|e| SignError::Credentials(format!("web identity token {}: {e}", token_file.display())))?;
        let role_arn = c
            .role_arn
            .clone()
            .or_else(|| env("AWS_ROLE_ARN"))
            .ok_or_else(|| SignError::Credentials("web_identity needs role_arn or $AWS_ROLE_ARN".into()))?;
        let session_name = c
            .session_name
            .clone()
            .or_else(|| env("AWS_ROLE_SESSION_NAME"))
            .unwrap_or_else(|| "shardcache".into());
        let provider = WebIdentityTokenCredentialsProvider::builder()
            .configure(&provider_config(region))
            .static_configuration(StaticConfiguration {
                web_identity_token_file: token_file,
                role_arn,
                session_name,
            })
            .build();
        Ok(Self {
            provider,
            cached: RwLock::new(None),
            exchange: tokio::sync::Mutex::new(()),
        })
    }

    async fn current(&self) -> Result<Credentials, SignError> {
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let _exchange = self.exchange.lock().await;
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let creds = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| SignError::Credentials(format!("web identity exchange failed: {}", causes(&e))))?;
        *self.cached.write() = Some(creds.clone());
        Ok(creds)
    }

    fn fresh(&self) -> Option<Credentials> {
        let cached = self.cached.read().clone()?;
        let renew_at = SystemTime::now() + REFRESH_MARGIN;
        cached.expiry().is_none_or(|e| e > renew_at).then_some(cached)
    }
}

/// Credentials from the AWS SDKs' default chain, as the aws CLI finds them: `AWS_*` variables,
/// the shared config and credentials files (`AWS_PROFILE`; a profile's role assumed), a web
/// identity token, the ECS container and the EC2 instance metadata endpoints (SSO is not built
/// in). The error says why the chain found none; `region` is the STS region.
pub async fn default_chain(region: &str) -> Result<Credentials, String> {
    let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .region(aws_config::Region::new(region.to_owned()))
        .configure(provider_config(region))
        .build()
        .await;
    chain.provide_credentials().await.map_err(|e| causes(&e))
}

/// An error with its whole cause chain: a provider's top-level message alone is usually just
/// "unhandled" or "no providers in chain".
fn causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(&format!(": {c}"));
        cause = c.source();
    }
    message
}

/// What AWS's providers are given: the STS region, and an HTTPS client with rustls on ring (the
/// one crypto provider of the binary).
fn provider_config(region: &str) -> ProviderConfig {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    ProviderConfig::without_region()
        .with_region(Some(aws_config::Region::new(region.to_owned())))
        .with_http_client(https)
}

fn keys(
    id: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    what: &str,
) -> Result<Credentials, SignError> {
    match (id.filter(|s| !s.is_empty()), secret.filter(|s| !s.is_empty())) {
        (Some(id), Some(secret)) => Ok(Credentials::new(
            id,
            secret,
            token.filter(|t| !t.is_empty()),
            None,
            "shardcache",
        )),
        _ => Err(SignError::Credentials(format!("{what} not set"))),
    }
}

/// Reads one profile of an AWS shared credentials file (INI: `[name]` then `key = value`).
fn from_profile(file: &Path, profile: &str) -> Result<Credentials, SignError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| SignError::Credentials(format!("cannot read {}: {e}", file.display())))?;
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
        } else if let (true, Some((k, v))) = (in_profile, line.split_once('=')) {
            let v = Some(v.trim().to_owned());
            match k.trim() {
                "aws_access_key_id" => id = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    keys(id, secret, token, &format!("profile `{profile}` in {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_the_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = A\naws_secret_access_key = B\n[other]\naws_access_key_id=C\n",
        )
        .unwrap();
        let creds = from_profile(&file, "default").unwrap();
        assert_eq!((creds.access_key_id(), creds.secret_access_key()), ("A", "B"));
        assert!(
            from_profile(&file, "other").is_err(),
            "a profile without a secret is an error"
        );
    }

    #[test]
    fn env_credentials_must_be_set() {
        let config = CredentialsConfig::default();
        assert!(CredentialSource::new(&config, "r", &|_| None).is_err());
    }

    #[test]
    fn web_identity_needs_a_readable_token_and_a_role() {
        let config = CredentialsConfig {
            source: CredentialsSource::WebIdentity,
            ..Default::default()
        };
        let err = |e: Result<CredentialSource, SignError>| e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(CredentialSource::new(&config, "r", &|_| None)).contains("token_file"));
        let missing = |v: &str| (v == "AWS_WEB_IDENTITY_TOKEN_FILE").then(|| "/nonexistent/token".to_owned());
        assert!(err(CredentialSource::new(&config, "r", &missing)).contains("/nonexistent/token"));
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "jwt").unwrap();
        let no_role = |v: &str| (v == "AWS_WEB_IDENTITY_TOKEN_FILE").then(|| token.display().to_string());
        assert!(err(CredentialSource::new(&config, "r", &no_role)).contains("role_arn"));
    }
}
