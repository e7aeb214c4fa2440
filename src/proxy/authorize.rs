//! The gate every S3 request passes before routing, the cache or the upstream: its signature is
//! verified, then the policy is asked whether its principal may do what it asks, on the names
//! the client used (before routing renames buckets).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use pingora_http::RequestHeader;

use crate::auth::{Policy, RequestParts, Target, Verified, Verifier};
use crate::metrics::Metrics;
use crate::s3::{ResourceKind, S3Error, S3Request};
use crate::types::Identity;

/// Client authentication and authorization.
pub struct Gate {
    /// Signature checks.
    pub verifier: Verifier,
    /// Who may do what.
    pub policy: Policy,
}

/// The gate in force. A reload replaces it whole; a request keeps the one it started with.
pub struct SharedGate(ArcSwap<Gate>);

impl SharedGate {
    /// Starts with `gate`.
    pub fn new(gate: Gate) -> Self {
        Self(ArcSwap::from_pointee(gate))
    }

    /// The gate in force now.
    pub fn current(&self) -> Arc<Gate> {
        self.0.load_full()
    }

    /// Puts `gate` in force for the requests that start from now on.
    pub fn replace(&self, gate: Gate) {
        self.0.store(Arc::new(gate));
    }
}

impl Gate {
    /// Verifies the request's signature. With authentication off (`gate` is `None`) every
    /// request is anonymous (a presigned URL's parameters are still set aside when the request
    /// is parsed, so that it reads through the cache like any GET).
    fn verify(gate: Option<&Gate>, req: &RequestParts<'_>, metrics: &Metrics) -> Result<Verified, S3Error> {
        match gate {
            None => Ok(Verified {
                identity: Default::default(),
                chunks: None,
            }),
            Some(g) => g.verifier.verify(req, SystemTime::now()).map_err(|e| {
                let e = S3Error::from(e);
                metrics.auth_failures.with_label_values(&[e.code()]).inc();
                e
            }),
        }
    }

    /// Whether `verified` may make `req`: every check its operation needs passes. A denial is
    /// counted by action (`*` for an operation the table does not know).
    fn authorize(&self, verified: &Verified, req: &S3Request, metrics: &Metrics) -> Result<(), S3Error> {
        for check in checks(req) {
            if !self.policy.allows(&verified.identity, check.action, check.target()) {
                let label = check.action.unwrap_or("*");
                metrics.access_denied.with_label_values(&[label]).inc();
                return Err(S3Error::AccessDenied);
            }
        }
        Ok(())
    }

    /// Whether `identity` may do each of `actions` on `bucket/key`: DeleteObjects asks this of
    /// each key its body names.
    pub fn allows_object(&self, identity: &Identity, actions: &[&str], bucket: &str, key: &str) -> bool {
        let resource = format!("{bucket}/{key}");
        actions
            .iter()
            .all(|a| self.policy.allows(identity, Some(a), Target::Exact(&resource)))
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
/// then the policy asked about what it does, on the query as parsed once (what is forwarded).
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
    let parse = || S3Request::parse(&req.method, parts.path, parts.query, &req.headers, vhost_domains);
    let verified = Gate::verify(gate, &parts, metrics).map_err(|error| Refused {
        error,
        denied: true,
        identity: Identity::Anonymous,
        request: parse().ok(),
    })?;
    let parsed = parse().map_err(|error| Refused {
        error,
        denied: false,
        identity: verified.identity.clone(),
        request: None,
    })?;
    if let Some(gate) = gate {
        if let Err(error) = gate.authorize(&verified, &parsed, metrics) {
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

/// One thing a request needs the policy to allow.
#[derive(Debug, PartialEq, Eq)]
struct Check {
    /// The IAM action; `None` for an operation the table does not know.
    action: Option<&'static str>,
    /// The resource, in the client's names.
    resource: String,
    /// Every resource under `resource` (a listing's prefix).
    under: bool,
}

impl Check {
    fn target(&self) -> Target<'_> {
        match self.under {
            true => Target::Under(&self.resource),
            false => Target::Exact(&self.resource),
        }
    }
}

/// What `req` needs allowed: its operation's action on its resource, and for a copy, reading
/// the source. DeleteObjects needs nothing here: each key of its body is checked once read.
fn checks(req: &S3Request) -> Vec<Check> {
    let bucket = req.bucket.as_ref().map_or("", |b| b.as_str());
    let object = |key: &str| format!("{bucket}/{key}");
    let exact = |action, resource| Check {
        action,
        resource,
        under: false,
    };
    let Some(row) = req.row else {
        let resource = match (&req.bucket, &req.key) {
            (None, _) => "*".into(),
            (Some(_), None) => bucket.into(),
            (Some(_), Some(k)) => object(k.as_str()),
        };
        return vec![exact(None, resource)];
    };
    let action = Some(row.action_for(&req.query));
    let key = req.key.as_ref().map_or("", |k| k.as_str());
    let mut checks = match row.resource {
        ResourceKind::Service => vec![exact(action, "*".into())],
        ResourceKind::Bucket => vec![exact(action, bucket.into())],
        ResourceKind::Object => std::iter::once(action)
            .chain(req.header_actions.iter().map(|a| Some(*a)))
            .map(|a| exact(a, object(key)))
            .collect(),
        ResourceKind::Listing => vec![Check {
            action,
            resource: object(req.query.get("prefix").unwrap_or_default()),
            under: true,
        }],
        // DeleteObjects' keys, each with the header's actions, are checked once the body is read.
        ResourceKind::BodyKeys => Vec::new(),
    };
    if row.resource == ResourceKind::Bucket {
        checks.extend(req.header_actions.iter().map(|a| exact(Some(*a), bucket.into())));
    }
    if let Some(source) = &req.copy_source {
        let read = match source.version_id {
            Some(_) => "GetObjectVersion",
            None => "GetObject",
        };
        checks.push(exact(Some(read), format!("{}/{}", source.bucket, source.key)));
    }
    checks
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    fn checks_of(
        method: Method,
        path: &str,
        query: &str,
        copy: Option<&str>,
    ) -> Vec<(Option<&'static str>, String, bool)> {
        let mut headers = http::HeaderMap::new();
        if let Some(c) = copy {
            headers.insert("x-amz-copy-source", c.parse().unwrap());
        }
        let req = S3Request::parse(&method, path, query, &headers, &[]).unwrap();
        checks(&req)
            .into_iter()
            .map(|c| (c.action, c.resource, c.under))
            .collect()
    }

    #[test]
    fn requests_map_to_iam_actions_on_client_names() {
        let one = |action: &'static str, resource: &str| vec![(Some(action), resource.to_owned(), false)];
        assert_eq!(
            checks_of(Method::GET, "/d/a/b.tar", "", None),
            one("GetObject", "d/a/b.tar")
        );
        assert_eq!(
            checks_of(Method::HEAD, "/d/k", "versionId=3", None),
            one("GetObjectVersion", "d/k")
        );
        assert_eq!(checks_of(Method::GET, "/d/k", "acl", None), one("GetObjectAcl", "d/k"));
        assert_eq!(
            checks_of(Method::GET, "/d", "list-type=2&prefix=train%2F", None),
            vec![(Some("ListBucket"), "d/train/".to_owned(), true)]
        );
        assert_eq!(checks_of(Method::HEAD, "/d", "", None), one("ListBucket", "d"));
        assert_eq!(
            checks_of(Method::DELETE, "/d/k", "uploadId=1", None),
            one("AbortMultipartUpload", "d/k")
        );
        assert_eq!(checks_of(Method::POST, "/d", "delete", None), vec![]);
        assert_eq!(checks_of(Method::GET, "/", "", None), one("ListAllMyBuckets", "*"));
        assert_eq!(
            checks_of(Method::PUT, "/d", "policy", None),
            one("PutBucketPolicy", "d")
        );
        assert_eq!(
            checks_of(Method::PUT, "/d/k", "frob", None),
            vec![(None, "d/k".to_owned(), false)]
        );
        let put_acl = S3Request::parse(
            &Method::PUT,
            "/d/k",
            "",
            &[(
                http::header::HeaderName::from_static("x-amz-acl"),
                "public-read".parse().unwrap(),
            )]
            .into_iter()
            .collect(),
            &[],
        )
        .unwrap();
        let actions: Vec<_> = checks(&put_acl).into_iter().map(|c| c.action).collect();
        assert_eq!(actions, [Some("PutObject"), Some("PutObjectAcl")]);
        assert_eq!(
            checks_of(Method::PUT, "/d/out/k", "", Some("/src/a%20b?versionId=7")),
            vec![
                (Some("PutObject"), "d/out/k".to_owned(), false),
                (Some("GetObjectVersion"), "src/a b".to_owned(), false)
            ]
        );
    }
}
