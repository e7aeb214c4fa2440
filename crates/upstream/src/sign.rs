//! SigV4 signing of requests to an S3 upstream, with the settings S3 needs (single
//! percent-encoding, no path normalisation, `x-amz-content-sha256` always sent).

use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use pingora_http::RequestHeader;

use super::credentials::CredentialSource;
use super::CredentialsConfig;

/// Payload hash for bodies that are streamed rather than hashed (S3 accepts it on every request).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Headers the client may have sent for its own signature; they are dropped before re-signing.
const CLIENT_SIGNING_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Headers left out of the signature although they are forwarded: hop-by-hop headers, and headers
/// that proxies and HTTP clients add or rewrite on the way. Signing one breaks the request at an
/// upstream that leaves it out of its canonical request, as botocore does with `expect` (boto3
/// sends `Expect: 100-continue` on every PutObject and UploadPart), or at one that sees it
/// altered. This is botocore's list (`SIGNED_HEADERS_BLACKLIST`), plus `authorization` and the
/// headers proxies rewrite.
const UNSIGNED_HEADERS: &[&str] = &[
    "accept-encoding",
    "authorization",
    "connection",
    "expect",
    "forwarded",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
    "x-amzn-trace-id",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Credentials could not be found or the request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A credential source is empty or unreadable.
    #[error("credentials: {0}")]
    Credentials(String),
    /// aws-sigv4 refused the request.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Signs requests for one upstream.
#[derive(Clone)]
pub struct Signer {
    region: String,
    credentials: CredentialSource,
}

impl Signer {
    /// Resolves the configured credentials (see [`CredentialSource::new`]). `env` looks
    /// variables up.
    pub fn new(
        region: &str,
        config: &CredentialsConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SignError> {
        Ok(Self {
            region: region.to_owned(),
            credentials: CredentialSource::new(config, region, env)?,
        })
    }

    /// Signs `req` in place. `host` must already be set; `payload_hash` is the body's SHA-256 in
    /// hex, [`UNSIGNED_PAYLOAD`], or a streaming marker the client chose.
    pub async fn sign(&self, req: &mut RequestHeader, payload_hash: &str, now: SystemTime) -> Result<(), SignError> {
        for name in CLIENT_SIGNING_HEADERS {
            req.remove_header(*name);
        }
        let Some(creds) = self.credentials.current().await? else {
            return Ok(());
        };
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.excluded_headers = Some(UNSIGNED_HEADERS.iter().map(|h| (*h).into()).collect());
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| SignError::Sign(e.to_string()))?
            .into();
        let uri = req.uri.to_string();
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let signable = SignableRequest::new(
            req.method.as_str(),
            uri,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Precomputed(payload_hash.to_owned()),
        )
        .map_err(|e| SignError::Sign(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| SignError::Sign(e.to_string()))?
            .into_parts();
        for (name, value) in instructions.headers() {
            req.insert_header(name.to_owned(), value.to_owned())
                .map_err(|e| SignError::Sign(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::CredentialsSource;

    fn static_signer() -> Signer {
        let config = CredentialsConfig {
            source: CredentialsSource::Static,
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("SECRET".into()),
            ..Default::default()
        };
        Signer::new("us-east-1", &config, &|_| None).unwrap()
    }

    #[tokio::test]
    async fn requests_are_signed_for_s3_and_client_signatures_are_dropped() {
        let signer = static_signer();
        let mut req = RequestHeader::build("GET", b"/bucket/a%20b", None).unwrap();
        req.insert_header("host", "127.0.0.1:9000").unwrap();
        req.insert_header("authorization", "AWS4-HMAC-SHA256 client").unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        signer.sign(&mut req, UNSIGNED_PAYLOAD, t).await.unwrap();
        let auth = req.headers.get("authorization").unwrap().to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/s3/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date"),
            "{auth}"
        );
        assert_eq!(req.headers.get("x-amz-content-sha256").unwrap(), UNSIGNED_PAYLOAD);
    }

    #[tokio::test]
    async fn hop_by_hop_and_proxy_altered_headers_are_left_unsigned() {
        let signer = static_signer();
        let mut req = RequestHeader::build("PUT", b"/bucket/k", None).unwrap();
        for (name, value) in [
            ("host", "127.0.0.1:9000"),
            ("expect", "100-continue"),
            ("user-agent", "Boto3/1.43"),
            ("accept-encoding", "identity"),
            ("content-type", "text/plain"),
            ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ("x-amz-meta-a", "b"),
        ] {
            req.insert_header(name, value).unwrap();
        }
        signer
            .sign(&mut req, UNSIGNED_PAYLOAD, SystemTime::now())
            .await
            .unwrap();
        let auth = req.headers.get("authorization").unwrap().to_str().unwrap();
        let signed = auth.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
        assert_eq!(
            signed,
            "content-md5;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-a"
        );
        assert_eq!(req.headers.get("expect").unwrap(), "100-continue", "still forwarded");
    }

    #[tokio::test]
    async fn anonymous_requests_go_unsigned() {
        let anon = CredentialsConfig {
            source: CredentialsSource::Anonymous,
            ..Default::default()
        };
        let mut req = RequestHeader::build("GET", b"/b/k", None).unwrap();
        req.insert_header("authorization", "client").unwrap();
        let signer = Signer::new("r", &anon, &|_| None).unwrap();
        signer
            .sign(&mut req, UNSIGNED_PAYLOAD, SystemTime::now())
            .await
            .unwrap();
        assert!(
            req.headers.get("authorization").is_none(),
            "anonymous requests go unsigned"
        );
    }
}
