//! A minimal HTTP/1.1 client for the operator commands: one request per connection, plain
//! `http://` only (shardcache's listeners are node-local).

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A base address such as `http://127.0.0.1:9090`, and the bearer token its calls carry.
#[derive(Clone, Debug)]
pub struct Endpoint {
    authority: String,
    bearer: Option<String>,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(a)) if uri.path() == "/" || uri.path().is_empty() => Ok(Self {
                authority: a.as_str().to_owned(),
                bearer: None,
            }),
            (Some("http"), Some(_)) => Err(format!("{s:?}: give the base address, without a path")),
            _ => Err(format!("{s:?}: expected http://HOST:PORT")),
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
            bearer: Some(token),
            ..self
        }
    }

    /// Sends `method path_and_query` and reads the whole answer.
    pub async fn call(&self, method: Method, path_and_query: &str) -> Result<Reply, String> {
        let fail = |e: &dyn std::fmt::Display| format!("{method} http://{}{path_and_query}: {e}", self.authority);
        let stream = TcpStream::connect(&self.authority).await.map_err(|e| fail(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(&e))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .header(http::header::HOST, &self.authority);
        if let Some(token) = &self.bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| fail(&e))?;
        let res = sender.send_request(req).await.map_err(|e| fail(&e))?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.map_err(|e| fail(&e))?.to_bytes();
        driver.abort();
        Ok(Reply { status, body })
    }
}
