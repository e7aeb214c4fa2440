//! A minimal HTTP/1.1 client for the operator commands: one request per connection, over
//! `http://` or `https://` (certificates verified against the system's roots, plus
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`). Calls carry a bearer token or a SigV4 signature when the
//! endpoint has one.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use pingora_rustls::{ClientConfig, RootCertStore, TlsConnector};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A base address such as `http://127.0.0.1:9090`, and how its calls authenticate.
#[derive(Clone, Debug)]
pub struct Endpoint {
    authority: String,
    tls: bool,
    auth: Option<CallAuth>,
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How calls authenticate.
#[derive(Clone)]
enum CallAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// Signed with an access key for `region` (service `s3`).
    SigV4 {
        key: String,
        secret: String,
        region: String,
    },
}

impl std::fmt::Debug for CallAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token or a secret.
        f.write_str(match self {
            Self::Bearer(_) => "Bearer",
            Self::SigV4 { .. } => "SigV4",
        })
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{s:?}: expected http://HOST:PORT or https://HOST:PORT")),
        };
        match uri.authority() {
            Some(a) if uri.path() == "/" || uri.path().is_empty() => Ok(Self {
                authority: a.as_str().to_owned(),
                tls,
                auth: None,
            }),
            Some(_) => Err(format!("{s:?}: give the base address, without a path")),
            None => Err(format!("{s:?}: expected http://HOST:PORT or https://HOST:PORT")),
        }
    }
}

/// A response: status and the whole body.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Endpoint {
    /// The same endpoint, its calls carrying `Authorization: Bearer <token>`.
    pub fn with_bearer(self, token: String) -> Self {
        Self {
            auth: Some(CallAuth::Bearer(token)),
            ..self
        }
    }

    /// The same endpoint, its calls signed (SigV4, service `s3`) with `key` and `secret` for
    /// `region`.
    pub fn with_sigv4(self, key: String, secret: String, region: String) -> Self {
        Self {
            auth: Some(CallAuth::SigV4 { key, secret, region }),
            ..self
        }
    }

    /// A TLS session over `stream`, verifying the server's certificate for the endpoint's host.
    async fn tls_connect(&self, stream: TcpStream) -> Result<impl Io, String> {
        pingora_rustls::install_default_crypto_provider();
        let mut roots = RootCertStore::empty();
        pingora_rustls::load_platform_certs_incl_env_into_store(&mut roots).map_err(|e| e.to_string())?;
        let config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(h, _)| h);
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).map_err(|e| e.to_string())?;
        TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())
    }

    /// The headers that sign `method path_and_query`, as S3 verifies them (no body).
    fn signature(
        &self,
        (key, secret, region): (&str, &str, &str),
        method: &Method,
        path_and_query: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = Credentials::new(key, secret, None, None, "shardcache").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let scheme = if self.tls { "https" } else { "http" };
        let uri = format!("{scheme}://{}{path_and_query}", self.authority);
        let host = [("host", self.authority.as_str())];
        let signable = SignableRequest::new(
            method.as_str(),
            uri,
            host.into_iter(),
            SignableBody::Precomputed(crate::auth::sigv4::UNSIGNED_PAYLOAD.into()),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// Sends `method path_and_query` and reads the whole answer.
    pub async fn call(&self, method: Method, path_and_query: &str) -> Result<Reply, String> {
        let scheme = if self.tls { "https" } else { "http" };
        let fail = |e: &dyn std::fmt::Display| format!("{method} {scheme}://{}{path_and_query}: {e}", self.authority);
        let stream = TcpStream::connect(&self.authority).await.map_err(|e| fail(&e))?;
        let stream: Box<dyn Io> = match self.tls {
            false => Box::new(stream),
            true => Box::new(self.tls_connect(stream).await.map_err(|e| fail(&e))?),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(&e))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .header(http::header::HOST, &self.authority);
        match &self.auth {
            Some(CallAuth::Bearer(token)) => {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            Some(CallAuth::SigV4 { key, secret, region }) => {
                for (k, v) in self.signature((key, secret, region), &method, path_and_query)? {
                    req = req.header(k, v);
                }
            }
            None => {}
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| fail(&e))?;
        let res = sender.send_request(req).await.map_err(|e| fail(&e))?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.map_err(|e| fail(&e))?.to_bytes();
        driver.abort();
        Ok(Reply { status, body })
    }
}
