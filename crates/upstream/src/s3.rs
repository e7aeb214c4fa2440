//! An S3-compatible upstream reached over HTTP(S) through Pingora's pooled connector.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::WrappedX509;
use pingora_http::{RequestHeader, ResponseHeader};

use super::UpstreamAddressing;
use super::{Body, Opened, Origin, OriginBody, OriginError, Signer, UNSIGNED_PAYLOAD};
use shardcache_s3::{code_of_error_body, encode_path};
use shardcache_types::{ETag, ObjectMeta};

/// Asks for the object's checksums with its metadata (S3 returns them only when asked).
const CHECKSUM_MODE: (&str, &str) = ("x-amz-checksum-mode", "ENABLED");
/// Largest error body read from an upstream.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Largest answer [`S3Origin::call`] reads (a DeleteObjects answer for 1,000 long keys).
const MAX_CALL_ANSWER: usize = 16 << 20;
/// How long an idle upstream connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// How long a resolved upstream address is reused before DNS is asked again.
const DNS_TTL: Duration = Duration::from_secs(30);
/// Resolved names kept at once (one per bucket with virtual addressing); past this the table
/// starts over.
const DNS_ENTRIES: usize = 1024;

/// Settings of one S3 upstream.
pub struct S3OriginOptions {
    /// `http(s)://host[:port]`, already validated.
    pub endpoint: http::Uri,
    /// Path or virtual-hosted addressing at the upstream.
    pub addressing: UpstreamAddressing,
    /// Signs requests with this upstream's credentials.
    pub signer: Signer,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout between two reads.
    pub read_timeout: Duration,
    /// For https: the CAs to trust instead of the system's roots.
    pub ca: Option<Arc<[WrappedX509]>>,
}

/// An S3-compatible upstream.
pub struct S3Origin {
    tls: bool,
    host: String,
    port: u16,
    addressing: UpstreamAddressing,
    signer: Signer,
    connect_timeout: Duration,
    read_timeout: Duration,
    ca: Option<Arc<[WrappedX509]>>,
    connector: Arc<Connector>,
    /// Resolved addresses by DNS name, so no request waits on a blocking lookup.
    resolved: Mutex<HashMap<String, (Instant, SocketAddr)>>,
}

impl S3Origin {
    /// A new upstream with its own connection pool.
    pub fn new(opts: S3OriginOptions) -> Self {
        let tls = opts.endpoint.scheme_str() == Some("https");
        Self {
            tls,
            host: opts
                .endpoint
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned(),
            port: opts.endpoint.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            addressing: opts.addressing,
            signer: opts.signer,
            connect_timeout: opts.connect_timeout,
            read_timeout: opts.read_timeout,
            ca: opts.ca,
            connector: Arc::new(Connector::new(None)),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// Whether buckets are named in the host (`bucket.endpoint`), where DNS ignores case.
    pub fn virtual_hosted(&self) -> bool {
        self.addressing == UpstreamAddressing::Virtual
    }

    /// The DNS name serving `bucket` (the endpoint itself for service-level calls).
    fn dns_name(&self, bucket: &str) -> String {
        match self.addressing {
            UpstreamAddressing::Virtual if !bucket.is_empty() => format!("{bucket}.{}", self.host),
            _ => self.host.clone(),
        }
    }

    /// The host (and port, when not the scheme's default) that serves `bucket`.
    pub fn host_for(&self, bucket: &str) -> String {
        let host = self.dns_name(bucket);
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }

    /// Path (and query) of a request for `bucket` and optional `key` at this upstream.
    pub fn path_for(&self, bucket: &str, key: Option<&str>, query: &str) -> String {
        let mut path = String::from("/");
        if self.addressing == UpstreamAddressing::Path && !bucket.is_empty() {
            path.push_str(&encode_path(bucket));
            if key.is_some() {
                path.push('/');
            }
        }
        if let Some(key) = key {
            path.push_str(&encode_path(key));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        path
    }

    /// The connection target for `bucket`, with this upstream's timeouts.
    pub async fn peer(&self, bucket: &str) -> Result<HttpPeer, OriginError> {
        let sni = self.dns_name(bucket);
        let addr = self.resolve(&sni).await?;
        let mut peer = HttpPeer::new(addr, self.tls, sni);
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.idle_timeout = Some(POOL_IDLE);
        peer.options.ca = self.ca.clone();
        Ok(peer)
    }

    /// The address of `name`, from a recent lookup or a fresh (asynchronous) one.
    async fn resolve(&self, name: &str) -> Result<SocketAddr, OriginError> {
        let cached = self.resolved.lock().get(name).copied();
        if let Some((_, addr)) = cached.filter(|(at, _)| at.elapsed() < DNS_TTL) {
            return Ok(addr);
        }
        let addr = tokio::net::lookup_host((name, self.port))
            .await
            .map_err(|e| OriginError::Unreachable(format!("resolving {name}: {e}")))?
            .next()
            .ok_or_else(|| OriginError::Unreachable(format!("{name} has no address")))?;
        let mut table = self.resolved.lock();
        if table.len() >= DNS_ENTRIES {
            table.clear();
        }
        table.insert(name.to_owned(), (Instant::now(), addr));
        Ok(addr)
    }

    /// The signer for requests to this upstream.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Sends a body-less request and reads the response header.
    async fn send(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        headers: &[(&str, &str)],
    ) -> Result<(HttpSession, ResponseHeader, HttpPeer), OriginError> {
        let peer = self.peer(bucket).await?;
        let mut req = RequestHeader::build(method, self.path_for(bucket, Some(key), "").as_bytes(), None)
            .map_err(|e| OriginError::Invalid(e.to_string()))?;
        req.insert_header("host", self.host_for(bucket))
            .map_err(|e| OriginError::Invalid(e.to_string()))?;
        for (name, value) in headers {
            req.insert_header(name.to_string(), *value)
                .map_err(|e| OriginError::Invalid(e.to_string()))?;
        }
        self.signer
            .sign(&mut req, UNSIGNED_PAYLOAD, SystemTime::now())
            .await
            .map_err(|e| OriginError::Invalid(e.to_string()))?;
        let (session, resp) = exchange(&self.connector, &peer, req, self.read_timeout).await?;
        Ok((session, resp, peer))
    }

    /// Sends a bucket call with a whole (small) body, signed with its SHA-256, and reads the
    /// whole answer: DeleteObjects, whose body shardcache forwards re-encoded. No retry: a call
    /// that changes state is not repeated blind.
    pub async fn call(
        &self,
        method: &str,
        bucket: &str,
        query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(u16, Bytes), OriginError> {
        use sha2::Digest as _;
        let invalid = |e: &dyn std::fmt::Display| OriginError::Invalid(e.to_string());
        let peer = self.peer(bucket).await?;
        let mut req = RequestHeader::build(method, self.path_for(bucket, None, query).as_bytes(), None)
            .map_err(|e| invalid(&e))?;
        let hash = hex::encode(sha2::Sha256::digest(&body));
        let fixed = [
            ("host", self.host_for(bucket)),
            ("content-length", body.len().to_string()),
            ("x-amz-content-sha256", hash.clone()),
        ];
        for (name, value) in fixed.iter().chain(headers) {
            req.insert_header(name.to_string(), value).map_err(|e| invalid(&e))?;
        }
        self.signer
            .sign(&mut req, &hash, SystemTime::now())
            .await
            .map_err(|e| invalid(&e))?;
        let (mut session, _reused) = self.connector.get_http_session(&peer).await.map_err(network_error)?;
        session.set_read_timeout(Some(self.read_timeout));
        session.set_write_timeout(Some(self.read_timeout));
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(network_error)?;
        session.write_request_body(body, true).await.map_err(network_error)?;
        session.finish_request_body().await.map_err(network_error)?;
        session.read_response_header().await.map_err(network_error)?;
        let status = session
            .response_header()
            .map(|r| r.status.as_u16())
            .ok_or_else(|| OriginError::Invalid("no response header".into()))?;
        let mut answer = BytesMut::new();
        while let Some(piece) = session.read_response_body().await.map_err(network_error)? {
            if answer.len() + piece.len() > MAX_CALL_ANSWER {
                return Err(OriginError::Invalid(format!("an answer over {MAX_CALL_ANSWER} bytes")));
            }
            answer.extend_from_slice(&piece);
        }
        Self::release(&self.connector, session, &peer).await;
        Ok((status, answer.freeze()))
    }

    /// Reads a (small) error body and turns the response into an error.
    async fn error_from(&self, mut session: HttpSession, status: u16) -> OriginError {
        let mut body = BytesMut::new();
        while body.len() < MAX_ERROR_BODY {
            match session.read_response_body().await {
                Ok(Some(b)) => body.extend_from_slice(&b),
                _ => break,
            }
        }
        let body = body.freeze();
        match (status, code_of_error_body(&body).as_deref()) {
            (404, Some("NoSuchBucket")) => OriginError::NoSuchBucket,
            (404, _) => OriginError::NoSuchKey,
            (412, _) => OriginError::Changed,
            _ => OriginError::Rejected { status, body },
        }
    }

    /// Returns a fully read session to the pool.
    async fn release(connector: &Connector, session: HttpSession, peer: &HttpPeer) {
        connector.release_http_session(session, peer, Some(POOL_IDLE)).await;
    }
}

/// Sends body-less request `req` to `peer` over a pooled connection of `connector` and reads the
/// answer's header. Every wait on the session is bounded by `timeout`: the answer's header, each
/// read of its body (also when a fill reads it later), and each write.
pub async fn exchange(
    connector: &Connector,
    peer: &HttpPeer,
    req: RequestHeader,
    timeout: Duration,
) -> Result<(HttpSession, ResponseHeader), OriginError> {
    let (mut session, _reused) = connector.get_http_session(peer).await.map_err(network_error)?;
    session.set_read_timeout(Some(timeout));
    session.set_write_timeout(Some(timeout));
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(network_error)?;
    session.finish_request_body().await.map_err(network_error)?;
    session.read_response_header().await.map_err(network_error)?;
    let resp = session
        .response_header()
        .cloned()
        .ok_or_else(|| OriginError::Invalid("no response header".into()))?;
    Ok((session, resp))
}

/// A failed connect, write or read, told apart by whether it timed out.
pub fn network_error(e: Box<pingora_error::Error>) -> OriginError {
    use pingora_error::ErrorType::{ConnectTimedout, ReadTimedout, TLSHandshakeTimedout, WriteTimedout};
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => OriginError::TimedOut(e.to_string()),
        _ => OriginError::Unreachable(e.to_string()),
    }
}

fn header<'a>(resp: &'a ResponseHeader, name: &str) -> Option<&'a str> {
    resp.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The object's size from a whole-object answer (HEAD or 200 GET).
fn content_length(resp: &ResponseHeader) -> Result<u64, OriginError> {
    header(resp, "content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| OriginError::Invalid("answer without Content-Length".into()))
}

/// `(first, last, size)` of a 206's `Content-Range: bytes first-last/size`.
pub fn content_range(resp: &ResponseHeader) -> Option<(u64, u64, u64)> {
    let (span, size) = header(resp, "content-range")?.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, size) = (first.parse().ok()?, last.parse().ok()?, size.parse().ok()?);
    (first <= last && last < size).then_some((first, last, size))
}

/// Metadata from an answer's headers. `whole` says the answer is about the whole object (a HEAD
/// or a 200 GET, asked with checksum mode on), so its checksums, or their absence, are the
/// object's; a ranged answer carries none.
pub fn meta_from(resp: &ResponseHeader, size: u64, whole: bool) -> Result<ObjectMeta, OriginError> {
    let etag = header(resp, "etag")
        .and_then(ETag::parse)
        .ok_or_else(|| OriginError::Invalid("answer without ETag".into()))?;
    let last_modified = header(resp, "last-modified")
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let pairs = |keep: fn(&str) -> bool| {
        resp.headers
            .iter()
            .filter(|(k, _)| keep(k.as_str()))
            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
            .collect::<Vec<_>>()
    };
    Ok(ObjectMeta {
        size,
        etag,
        last_modified,
        content_type: header(resp, "content-type").map(str::to_owned),
        version_id: header(resp, "x-amz-version-id").map(str::to_owned),
        headers: pairs(ObjectMeta::keeps_header),
        checksums: whole.then(|| pairs(ObjectMeta::is_checksum_header)),
    })
}

/// Checks that a ranged response carries exactly `span`.
fn check_span(resp: &ResponseHeader, span: &Range<u64>) -> Result<(), OriginError> {
    let want = format!("bytes {}-{}/", span.start, span.end - 1);
    match resp.status.as_u16() {
        206 if header(resp, "content-range").is_some_and(|v| v.starts_with(&want)) => Ok(()),
        200 if span.start == 0
            && header(resp, "content-length").and_then(|v| v.parse::<u64>().ok()) == Some(span.end) =>
        {
            Ok(())
        }
        s => Err(OriginError::Invalid(format!("status {s} for range {want}"))),
    }
}

#[async_trait]
impl Origin for S3Origin {
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, OriginError> {
        let (session, resp, peer) = self.send("HEAD", bucket, key, &[CHECKSUM_MODE]).await?;
        if resp.status.is_success() {
            let meta = content_length(&resp).and_then(|size| meta_from(&resp, size, true));
            Self::release(&self.connector, session, &peer).await;
            return meta;
        }
        // A HEAD error has no body to name its code: a 404 is taken as NoSuchKey (a HEAD through
        // shardcache answers 404 with no body either way, as S3 does).
        Err(self.error_from(session, resp.status.as_u16()).await)
    }

    async fn open(&self, bucket: &str, key: &str, span: Range<u64>) -> Result<Opened, OriginError> {
        let range = format!("bytes={}-{}", span.start, span.end - 1);
        let (session, resp, peer) = self
            .send("GET", bucket, key, &[("range", range.as_str()), CHECKSUM_MODE])
            .await?;
        let (meta, answered) = match resp.status.as_u16() {
            206 => {
                let (first, last, size) = content_range(&resp)
                    .ok_or_else(|| OriginError::Invalid("206 without a valid Content-Range".into()))?;
                (meta_from(&resp, size, false)?, first..last + 1)
            }
            200 => {
                let size = content_length(&resp)?;
                (meta_from(&resp, size, true)?, 0..size)
            }
            // The object ends before the span starts (or is empty): nothing to read.
            416 => {
                drop(session);
                let meta = self.head(bucket, key).await?;
                return Ok(Opened {
                    meta,
                    body: None,
                    headed: true,
                });
            }
            status => return Err(self.error_from(session, status).await),
        };
        // Keep the body only if it is exactly the span asked for, clipped to the object; an
        // upstream that answers otherwise (a whole large object for a range) is hung up on.
        let wanted = span.start..span.end.min(meta.size);
        let body = (answered == wanted && !wanted.is_empty()).then(|| S3Body::boxed(session, peer, &self.connector));
        Ok(Opened {
            meta,
            body,
            headed: false,
        })
    }

    async fn read(&self, bucket: &str, key: &str, span: Range<u64>, etag: &ETag) -> Result<Body, OriginError> {
        let range = format!("bytes={}-{}", span.start, span.end - 1);
        let (session, resp, peer) = self
            .send(
                "GET",
                bucket,
                key,
                &[("range", range.as_str()), ("if-match", etag.as_str())],
            )
            .await?;
        if !resp.status.is_success() {
            return Err(self.error_from(session, resp.status.as_u16()).await);
        }
        // `If-Match` already pins the version; upstreams that ignore it (some S3 look-alikes do)
        // are caught by the ETag they answer with.
        if header(&resp, "etag").and_then(ETag::parse).is_some_and(|t| &t != etag) {
            return Err(OriginError::Changed);
        }
        check_span(&resp, &span)?;
        Ok(S3Body::boxed(session, peer, &self.connector))
    }
}

/// The body of the response on `session` (from `peer`, through `connector`), read piece by
/// piece; the connection goes back to the pool once it is all read.
pub fn pooled_body(session: HttpSession, peer: HttpPeer, connector: &Arc<Connector>) -> Box<dyn OriginBody> {
    S3Body::boxed(session, peer, connector)
}

/// A response body being read; the connection goes back to the pool once it is all read.
struct S3Body {
    session: Option<HttpSession>,
    peer: HttpPeer,
    connector: Arc<Connector>,
    /// The last piece of an HTTP/2 body (HTTP/1 pieces are borrowed from the connection).
    held: Bytes,
}

impl S3Body {
    fn boxed(session: HttpSession, peer: HttpPeer, connector: &Arc<Connector>) -> Box<dyn OriginBody> {
        Box::new(Self {
            session: Some(session),
            peer,
            connector: connector.clone(),
            held: Bytes::new(),
        })
    }
}

#[async_trait]
impl OriginBody for S3Body {
    async fn next(&mut self) -> Result<Option<&[u8]>, OriginError> {
        let done = match self.session.as_mut() {
            Some(session) => session.response_done(),
            None => return Ok(None),
        };
        if done {
            if let Some(session) = self.session.take() {
                S3Origin::release(&self.connector, session, &self.peer).await;
            }
            return Ok(None);
        }
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        match session {
            HttpSession::H1(h1) => h1.read_body_ref().await.map_err(network_error),
            other => match other.read_response_body().await.map_err(network_error)? {
                Some(piece) => {
                    self.held = piece;
                    Ok(Some(&self.held))
                }
                None => Ok(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CredentialsConfig, CredentialsSource};

    fn origin(endpoint: &str, addressing: UpstreamAddressing) -> S3Origin {
        let anon = CredentialsConfig {
            source: CredentialsSource::Anonymous,
            ..Default::default()
        };
        S3Origin::new(S3OriginOptions {
            endpoint: endpoint.parse().unwrap(),
            addressing,
            signer: Signer::new("us-east-1", &anon, &|_| None).unwrap(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            ca: None,
        })
    }

    #[test]
    fn path_style_targets_put_the_bucket_in_the_path() {
        let o = origin("http://127.0.0.1:9000", UpstreamAddressing::Path);
        assert_eq!(o.host_for("b"), "127.0.0.1:9000");
        assert_eq!(o.path_for("b", Some("a b/c"), ""), "/b/a%20b/c");
        assert_eq!(o.path_for("b", None, "list-type=2"), "/b?list-type=2");
    }

    #[test]
    fn metadata_keeps_header_values_byte_exact_and_checksums_only_from_whole_answers() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("etag", "\"e\"").unwrap();
        let utf8 = http::HeaderValue::from_bytes("caf\u{e9} \u{1F680}".as_bytes()).unwrap();
        resp.insert_header("x-amz-meta-note", utf8.clone()).unwrap();
        resp.insert_header("x-amz-checksum-crc32", "2JMqrA==").unwrap();
        resp.insert_header("x-amz-request-id", "not kept").unwrap();
        let meta = meta_from(&resp, 2, true).unwrap();
        assert_eq!(meta.headers, vec![("x-amz-meta-note".to_owned(), utf8)]);
        let crc = http::HeaderValue::from_static("2JMqrA==");
        assert_eq!(meta.checksums, Some(vec![("x-amz-checksum-crc32".to_owned(), crc)]));
        assert_eq!(meta_from(&resp, 2, false).unwrap().checksums, None);
    }

    #[test]
    fn virtual_style_targets_put_the_bucket_in_the_host() {
        let o = origin("https://s3.example.com", UpstreamAddressing::Virtual);
        assert_eq!(o.host_for("b"), "b.s3.example.com");
        assert_eq!(o.path_for("b", Some("k"), "x=1"), "/k?x=1");
        assert_eq!(o.path_for("b", None, ""), "/");
    }
}
