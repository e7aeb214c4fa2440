//! The gate every S3 request passes before routing, the cache or the upstream: its signature is
//! verified, then the policy is asked whether its principal may do what it asks, on the names
//! the client used (before routing renames buckets).

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use http::Method;
use pingora_http::RequestHeader;

use crate::auth::{self, Action, Policy, RequestParts, Verified, Verifier};
use crate::metrics::Metrics;
use crate::s3::{query_keys, query_param, Operation, S3Error, S3Request};
use crate::types::Identity;

/// Client authentication and authorization.
pub struct Gate {
    /// Signature checks.
    pub verifier: Verifier,
    /// Who may do what.
    pub policy: Policy,
}

/// The gate in force. A reload replaces it whole; a request keeps the one it started with.
pub struct SharedGate(RwLock<Arc<Gate>>);

impl SharedGate {
    /// Starts with `gate`.
    pub fn new(gate: Gate) -> Self {
        Self(RwLock::new(Arc::new(gate)))
    }

    /// The gate in force now.
    pub fn current(&self) -> Arc<Gate> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `gate` in force for the requests that start from now on.
    pub fn replace(&self, gate: Gate) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(gate);
    }
}

impl Gate {
    /// Verifies the request's signature. With authentication off (`gate` is `None`) every
    /// request is anonymous, and a presigned URL's parameters are still set aside, so that it
    /// reads through the cache like any GET.
    fn verify(gate: Option<&Gate>, req: &RequestParts<'_>, metrics: &Metrics) -> Result<Verified, S3Error> {
        match gate {
            None => Ok(Verified {
                identity: Default::default(),
                presigned: auth::sigv4::is_presigned(req.query),
                chunks: None,
            }),
            Some(g) => g.verifier.verify(req, SystemTime::now()).map_err(|e| {
                let e = S3Error::from(e);
                metrics.auth_failures.with_label_values(&[e.code()]).inc();
                e
            }),
        }
    }

    /// Whether `verified` may make `req` (parsed with presigned parameters already removed).
    /// A denial is counted by action.
    fn authorize(
        &self,
        verified: &Verified,
        method: &Method,
        req: &S3Request,
        metrics: &Metrics,
    ) -> Result<(), S3Error> {
        let (action, resource) = action_of(method, req);
        if self.policy.allows(&verified.identity, action, &resource) {
            return Ok(());
        }
        metrics.access_denied.with_label_values(&[action.as_str()]).inc();
        Err(S3Error::AccessDenied)
    }
}

/// A request the gate turned away: why, and what is known of it (for the audit log).
pub struct Refused {
    /// The answer.
    pub error: S3Error,
    /// Refused by the signature checks or the policy (not for being malformed).
    pub denied: bool,
    /// Who asked, if the signature verified.
    pub identity: Identity,
    /// What was asked, if it could be read.
    pub request: Option<S3Request>,
}

/// Reads a request as S3 and lets it in, or says why not: its signature verified (with `gate`),
/// its presigned parameters set aside, then the policy asked about what it does.
pub fn admit(
    gate: Option<&Gate>,
    req: &RequestHeader,
    vhost_domains: &[String],
    metrics: &Metrics,
) -> Result<(Verified, S3Request), Box<Refused>> {
    let parts = RequestParts {
        method: req.method.as_str(),
        path: req.uri.path(),
        query: req.uri.query().unwrap_or_default(),
        headers: &req.headers,
    };
    let host = req
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host());
    let parse = |presigned: bool| {
        let query = forwarded_query(presigned, parts.query);
        S3Request::parse(&req.method, parts.path, Some(&query), host, vhost_domains)
    };
    let verified = Gate::verify(gate, &parts, metrics).map_err(|error| Refused {
        error,
        denied: true,
        identity: Identity::Anonymous,
        request: parse(auth::sigv4::is_presigned(parts.query)).ok(),
    })?;
    let parsed = parse(verified.presigned).map_err(|error| Refused {
        error,
        denied: false,
        identity: verified.identity.clone(),
        request: None,
    })?;
    if let Some(gate) = gate {
        if let Err(error) = gate.authorize(&verified, &req.method, &parsed, metrics) {
            return Err(Box::new(Refused {
                error,
                denied: true,
                identity: verified.identity,
                request: Some(parsed),
            }));
        }
    }
    Ok((verified, parsed))
}

/// The action a request takes and the resource it names.
fn action_of(method: &Method, req: &S3Request) -> (Action, String) {
    let bucket = req.bucket.as_ref().map_or("", |b| b.as_str());
    let object = |key: &str| format!("{bucket}/{key}");
    let key = req.key.as_ref().map(|k| k.as_str());
    match (req.op, key) {
        (Operation::ListBuckets, _) => (Action::ListAllMyBuckets, "*".into()),
        (Operation::GetObject | Operation::HeadObject, Some(k)) => (Action::GetObject, object(k)),
        (Operation::ListObjects | Operation::ListObjectsV2, _) => (
            Action::ListBucket,
            object(&query_param(&req.query, "prefix").unwrap_or_default()),
        ),
        (Operation::HeadBucket, _) => (Action::ListBucket, bucket.into()),
        (Operation::GetBucketLocation, _) => (Action::GetBucketLocation, bucket.into()),
        // DeleteObjects names its keys in the body, which is not read before it is forwarded.
        (Operation::DeleteObjects, _) => (Action::DeleteObject, object("*")),
        (Operation::WriteObject, Some(k))
            if method == Method::DELETE && !query_keys(&req.query).any(|k| k == "uploadId") =>
        {
            (Action::DeleteObject, object(k))
        }
        (Operation::WriteObject, Some(k)) => (Action::PutObject, object(k)),
        // A read of one version, one part, or with response header overrides is still a read.
        (Operation::Other, Some(k))
            if (method == Method::GET || method == Method::HEAD) && reads_object(&req.query) =>
        {
            (Action::GetObject, object(k))
        }
        (_, Some(k)) => (Action::Other, object(k)),
        (_, None) => (Action::Other, bucket.into()),
    }
}

/// Whether a GET/HEAD query only selects what to read: a version, a part, answer headers.
fn reads_object(query: &str) -> bool {
    query_keys(query).all(|k| matches!(k, "versionId" | "partNumber" | "x-id") || k.starts_with("response-"))
}

/// The query to route and forward: a presigned URL's signature parameters removed, and the
/// job parameter (`x-shardcache-job`), which is shardcache's alone.
fn forwarded_query(presigned: bool, raw: &str) -> std::borrow::Cow<'_, str> {
    let raw: std::borrow::Cow<'_, str> = match presigned {
        true => auth::sigv4::strip_presigned(raw).into(),
        false => raw.into(),
    };
    if !query_keys(&raw).any(|k| k == super::record::JOB) {
        return raw;
    }
    raw.split('&')
        .filter(|p| p.split_once('=').map_or(*p, |(k, _)| k) != super::record::JOB)
        .collect::<Vec<_>>()
        .join("&")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(method: Method, path: &str, query: &str) -> (Action, String) {
        let req = S3Request::parse(&method, path, Some(query), None, &[]).unwrap();
        action_of(&method, &req)
    }

    #[test]
    fn requests_map_to_iam_actions_on_client_names() {
        assert_eq!(
            action(Method::GET, "/d/a/b.tar", ""),
            (Action::GetObject, "d/a/b.tar".into())
        );
        assert_eq!(action(Method::HEAD, "/d/k", ""), (Action::GetObject, "d/k".into()));
        assert_eq!(
            action(Method::GET, "/d/k", "versionId=3"),
            (Action::GetObject, "d/k".into())
        );
        assert_eq!(action(Method::GET, "/d/k", "acl"), (Action::Other, "d/k".into()));
        assert_eq!(
            action(Method::GET, "/d", "list-type=2&prefix=train%2F"),
            (Action::ListBucket, "d/train/".into())
        );
        assert_eq!(action(Method::GET, "/d", ""), (Action::ListBucket, "d/".into()));
        assert_eq!(action(Method::HEAD, "/d", ""), (Action::ListBucket, "d".into()));
        assert_eq!(action(Method::PUT, "/d/k", ""), (Action::PutObject, "d/k".into()));
        assert_eq!(
            action(Method::POST, "/d/k", "uploads"),
            (Action::PutObject, "d/k".into())
        );
        assert_eq!(
            action(Method::DELETE, "/d/k", "uploadId=1"),
            (Action::PutObject, "d/k".into())
        );
        assert_eq!(action(Method::DELETE, "/d/k", ""), (Action::DeleteObject, "d/k".into()));
        assert_eq!(
            action(Method::POST, "/d", "delete"),
            (Action::DeleteObject, "d/*".into())
        );
        assert_eq!(action(Method::GET, "/", ""), (Action::ListAllMyBuckets, "*".into()));
        assert_eq!(action(Method::PUT, "/d", "policy"), (Action::Other, "d".into()));
    }
}
