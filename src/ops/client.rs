//! A minimal HTTP/1.1 client for the operator commands: one request per connection, or GETs on
//! a [`Connection`] kept open, over `http://` or `https://` (certificates verified against the
//! system's roots, plus `SSL_CERT_FILE` / `SSL_CERT_DIR`). Calls carry a bearer token or a SigV4
//! signature when the endpoint has one.

use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use pingora_rustls::{ClientConfig, RootCertStore, TlsConnector};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

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
    /// Signed with an access key (and session token, if any) for `region` (service `s3`).
    SigV4 { credentials: Credentials, region: String },
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

    /// The same endpoint, its calls signed (SigV4, service `s3`) with `credentials` for `region`.
    pub fn with_sigv4(self, credentials: Credentials, region: String) -> Self {
        Self {
            auth: Some(CallAuth::SigV4 { credentials, region }),
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
        credentials: &Credentials,
        region: &str,
        method: &Method,
        path_and_query: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = credentials.clone().into();
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

    /// A new connection to the endpoint, its HTTP/1.1 handshake done; the connection's driver
    /// runs until the returned handle is aborted.
    async fn open(&self) -> Result<(SendRequest<Empty<Bytes>>, JoinHandle<()>), String> {
        let stream = TcpStream::connect(&self.authority).await.map_err(|e| e.to_string())?;
        let stream: Box<dyn Io> = match self.tls {
            false => Box::new(stream),
            true => Box::new(self.tls_connect(stream).await?),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((sender, driver))
    }

    /// `method path_and_query`, with its `Host` and its authentication.
    fn request(&self, method: Method, path_and_query: &str) -> Result<Request<Empty<Bytes>>, String> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .header(http::header::HOST, &self.authority);
        match &self.auth {
            Some(CallAuth::Bearer(token)) => {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            Some(CallAuth::SigV4 { credentials, region }) => {
                for (k, v) in self.signature(credentials, region, &method, path_and_query)? {
                    req = req.header(k, v);
                }
            }
            None => {}
        }
        req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())
    }

    /// What a failed call says: the call, then why.
    fn failure(&self, method: &Method, path_and_query: &str, why: &dyn std::fmt::Display) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{method} {scheme}://{}{path_and_query}: {why}", self.authority)
    }

    /// [`Endpoint::call`], given up after `deadline`.
    pub async fn call_within(&self, method: Method, path_and_query: &str, deadline: Duration) -> Result<Reply, String> {
        match timeout(deadline, self.call(method.clone(), path_and_query)).await {
            Ok(reply) => reply,
            Err(_) => Err(self.failure(&method, path_and_query, &format!("no answer in {deadline:?}"))),
        }
    }

    /// Sends `method path_and_query` on a connection of its own and reads the whole answer.
    pub async fn call(&self, method: Method, path_and_query: &str) -> Result<Reply, String> {
        let fail = |e: &dyn std::fmt::Display| self.failure(&method, path_and_query, e);
        let (mut sender, driver) = self.open().await.map_err(|e| fail(&e))?;
        let req = self.request(method.clone(), path_and_query).map_err(|e| fail(&e))?;
        let res = sender.send_request(req).await.map_err(|e| fail(&e))?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.map_err(|e| fail(&e))?.to_bytes();
        driver.abort();
        Ok(Reply { status, body })
    }
}

/// One connection kept open across GETs (HTTP/1.1 keep-alive), as S3 clients keep theirs: a
/// request pays for a connection (and a TLS handshake) only when the last one was lost.
pub struct Connection {
    endpoint: Endpoint,
    open: Option<(SendRequest<Empty<Bytes>>, JoinHandle<()>)>,
}

/// A GET read to its end without keeping the body.
#[derive(Debug)]
pub struct Fetched {
    /// HTTP status.
    pub status: u16,
    /// From sending the request to its answer's header.
    pub first_byte: Duration,
    /// Body bytes.
    pub bytes: u64,
    /// The answer's `ETag`.
    pub etag: Option<String>,
    /// The body's start when the status is not 2xx (an S3 error document).
    pub error: Option<String>,
}

impl Connection {
    /// A connection to `endpoint`, opened at the first request.
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint, open: None }
    }

    /// GETs `path_and_query` and reads the body to its end, calling `progress` with each piece's
    /// length. A new connection must be made, the answer's header must come, and each piece of
    /// the body, within `deadline` each. A failed GET closes the connection; the next one opens
    /// another.
    pub async fn get(
        &mut self,
        path_and_query: &str,
        deadline: Duration,
        mut progress: impl FnMut(u64),
    ) -> Result<Fetched, String> {
        let result = async {
            if self.open.as_ref().is_none_or(|(sender, _)| sender.is_closed()) {
                self.close();
                let opened = timeout(deadline, self.endpoint.open())
                    .await
                    .map_err(|_| format!("no connection in {deadline:?}"))?;
                self.open = Some(opened?);
            }
            let (sender, _) = self.open.as_mut().ok_or_else(|| "not connected".to_owned())?;
            timeout(deadline, sender.ready())
                .await
                .map_err(|_| "the connection was not ready in time".to_owned())?
                .map_err(|e| e.to_string())?;
            let req = self.endpoint.request(Method::GET, path_and_query)?;
            let sent = Instant::now();
            let res = timeout(deadline, sender.send_request(req))
                .await
                .map_err(|_| format!("no answer in {deadline:?}"))?
                .map_err(|e| e.to_string())?;
            let first_byte = sent.elapsed();
            let status = res.status().as_u16();
            let etag = res
                .headers()
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = res.into_body();
            let (mut bytes, mut kept) = (0u64, Vec::new());
            while let Some(frame) = timeout(deadline, body.frame())
                .await
                .map_err(|_| format!("the body stalled for {deadline:?}"))?
            {
                let frame = frame.map_err(|e| e.to_string())?;
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    progress(data.len() as u64);
                    if !(200..300).contains(&status) && kept.len() < 1024 {
                        kept.extend_from_slice(data);
                    }
                }
            }
            Ok(Fetched {
                status,
                first_byte,
                bytes,
                etag,
                error: (!(200..300).contains(&status)).then(|| String::from_utf8_lossy(&kept).into_owned()),
            })
        }
        .await;
        if result.is_err() {
            self.close();
        }
        result.map_err(|e: String| self.endpoint.failure(&Method::GET, path_and_query, &e))
    }

    fn close(&mut self) {
        if let Some((_, driver)) = self.open.take() {
            driver.abort();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}
