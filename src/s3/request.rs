//! Reading an incoming HTTP request as an S3 request: which bucket and key it addresses
//! (path-style or virtual-hosted-style) and which operation it is.

use std::borrow::Cow;

use http::Method;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::s3::S3Error;
use crate::types::{BucketName, ObjectKey};

/// The operations shardcache tells apart. Everything it does not serve itself is `Other` and is
/// forwarded to the upstream unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `GET /bucket/key` with no sub-resource: served through the cache.
    GetObject,
    /// `HEAD /bucket/key` with no sub-resource: served from cached metadata.
    HeadObject,
    /// `GET /bucket?list-type=2`.
    ListObjectsV2,
    /// `GET /bucket` with no sub-resource (ListObjects v1).
    ListObjects,
    /// `GET /bucket?location`.
    GetBucketLocation,
    /// `HEAD /bucket`.
    HeadBucket,
    /// `GET /`.
    ListBuckets,
    /// A PUT, POST or DELETE on a key (PutObject, CopyObject, multipart, DeleteObject):
    /// on success the key's cached metadata is dropped.
    WriteObject,
    /// `POST /bucket?delete` (DeleteObjects): on success the named keys' metadata is dropped.
    DeleteObjects,
    /// Anything else (GetObject with versionId/partNumber/response-*, ACLs, ...).
    Other,
}

impl Operation {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetObject => "get_object",
            Self::HeadObject => "head_object",
            Self::ListObjectsV2 => "list_objects_v2",
            Self::ListObjects => "list_objects",
            Self::GetBucketLocation => "get_bucket_location",
            Self::HeadBucket => "head_bucket",
            Self::ListBuckets => "list_buckets",
            Self::WriteObject => "write_object",
            Self::DeleteObjects => "delete_objects",
            Self::Other => "other",
        }
    }
}

/// How the client named the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `http://endpoint/bucket/key`
    Path,
    /// `http://bucket.base-domain/key`
    VirtualHost,
}

/// An incoming request, parsed.
#[derive(Clone, Debug)]
pub struct S3Request {
    /// The addressed bucket; `None` for service-level calls (ListBuckets).
    pub bucket: Option<BucketName>,
    /// The addressed key, if any.
    pub key: Option<ObjectKey>,
    /// The operation.
    pub op: Operation,
    /// How the bucket was named.
    pub addressing: Addressing,
    /// The raw query string (without `?`), forwarded as is.
    pub query: String,
}

/// Query parameters that do not change what a GET/HEAD of an object returns: the AWS SDKs add
/// `x-id=GetObject` to every GetObject.
const NEUTRAL_PARAMS: &[&str] = &["x-id"];

/// The parameters of ListObjects (v1); any other makes a `GET /bucket` another operation.
const LIST_V1_PARAMS: &[&str] = &["prefix", "delimiter", "marker", "max-keys", "encoding-type", "x-id"];

impl S3Request {
    /// Parses method, path, query and `Host`. `vhost_domains` are the base domains under which
    /// `bucket.domain` names a bucket.
    pub fn parse(
        method: &Method,
        path: &str,
        query: Option<&str>,
        host: Option<&str>,
        vhost_domains: &[String],
    ) -> Result<Self, S3Error> {
        let query = query.unwrap_or_default().to_owned();
        let vhost_bucket = host.and_then(|h| bucket_from_host(h, vhost_domains));
        let (addressing, bucket, raw_key) = match vhost_bucket {
            Some(b) => (Addressing::VirtualHost, Some(b), path.strip_prefix('/').unwrap_or(path)),
            None => {
                let rest = path.strip_prefix('/').unwrap_or(path);
                let (b, k) = rest.split_once('/').unwrap_or((rest, ""));
                (Addressing::Path, (!b.is_empty()).then_some(b), k)
            }
        };
        let bucket = bucket
            .map(|b| BucketName::parse(&decode(b)?).ok_or(S3Error::InvalidBucketName))
            .transpose()?;
        let key = match raw_key {
            "" => None,
            k => Some(
                ObjectKey::parse(&decode(k)?)
                    .ok_or_else(|| S3Error::InvalidRequest("Your key is too long.".to_owned()))?,
            ),
        };
        let op = classify(method, bucket.is_some(), key.is_some(), &query);
        Ok(Self {
            bucket,
            key,
            op,
            addressing,
            query,
        })
    }
}

/// The parameter names of a query string, in order (raw, as sent).
pub fn query_keys(query: &str) -> impl Iterator<Item = &str> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
}

/// The percent-decoded value of `name` in a query string (`None` if absent or not UTF-8).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode_str(v).decode_utf8().ok()).flatten()
    })
}

fn classify(method: &Method, has_bucket: bool, has_key: bool, query: &str) -> Operation {
    let params: Vec<&str> = query_keys(query).collect();
    let plain = params.iter().all(|p| NEUTRAL_PARAMS.contains(p));
    match (method, has_bucket, has_key) {
        // Other AWS services (STS, IAM) take `Action=` at `/`; S3's only service call is GET /.
        (&Method::GET, false, _) if !params.contains(&"Action") => Operation::ListBuckets,
        (&Method::GET, true, true) if plain => Operation::GetObject,
        (&Method::HEAD, true, true) if plain => Operation::HeadObject,
        (&Method::GET, true, false) if query.split('&').any(|p| p == "list-type=2") => Operation::ListObjectsV2,
        (&Method::GET, true, false) if params.iter().all(|p| LIST_V1_PARAMS.contains(p)) => Operation::ListObjects,
        (&Method::GET, true, false) if params == ["location"] => Operation::GetBucketLocation,
        (&Method::HEAD, true, false) if plain => Operation::HeadBucket,
        (&Method::POST, true, false) if params.contains(&"delete") => Operation::DeleteObjects,
        (&Method::PUT | &Method::POST | &Method::DELETE, true, true) => Operation::WriteObject,
        _ => Operation::Other,
    }
}

fn bucket_from_host<'a>(host: &'a str, domains: &[String]) -> Option<&'a str> {
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    domains.iter().find_map(|d| {
        let prefix = host.strip_suffix(d.as_str())?.strip_suffix('.')?;
        (!prefix.is_empty()).then_some(prefix)
    })
}

fn decode(s: &str) -> Result<String, S3Error> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| S3Error::InvalidRequest("The request path is not valid UTF-8.".to_owned()))
}

/// Characters S3's canonical URI encoding leaves alone in a path: unreserved plus `/`.
const PATH_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a key (or bucket) for a request path, the way SigV4 canonicalises it.
pub fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH_SAFE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str, query: Option<&str>, host: &str) -> S3Request {
        S3Request::parse(&method, path, query, Some(host), &["s3.local".to_owned()]).unwrap()
    }

    #[test]
    fn path_style_names_bucket_and_key() {
        let r = parse(Method::GET, "/data/a/b%20c.tar", None, "127.0.0.1:8080");
        assert_eq!(r.bucket.unwrap().as_str(), "data");
        assert_eq!(r.key.unwrap().as_str(), "a/b c.tar");
        assert_eq!(r.op, Operation::GetObject);
        assert_eq!(r.addressing, Addressing::Path);
    }

    #[test]
    fn virtual_host_style_takes_the_bucket_from_the_host() {
        let r = parse(Method::HEAD, "/k", None, "data.s3.local:8080");
        assert_eq!(r.bucket.unwrap().as_str(), "data");
        assert_eq!(r.key.unwrap().as_str(), "k");
        assert_eq!(r.op, Operation::HeadObject);
        assert_eq!(r.addressing, Addressing::VirtualHost);
        let bare = parse(Method::GET, "/data/k", None, "s3.local");
        assert_eq!(bare.addressing, Addressing::Path);
    }

    #[test]
    fn operations_are_classified() {
        let op = |m: Method, p: &str, q: Option<&str>| parse(m, p, q, "h").op;
        assert_eq!(op(Method::GET, "/", None), Operation::ListBuckets);
        assert_eq!(op(Method::GET, "/", Some("Action=GetCallerIdentity")), Operation::Other);
        assert_eq!(op(Method::POST, "/", None), Operation::Other);
        assert_eq!(
            op(Method::GET, "/b", Some("list-type=2&prefix=a")),
            Operation::ListObjectsV2
        );
        assert_eq!(op(Method::GET, "/b", None), Operation::ListObjects);
        assert_eq!(op(Method::GET, "/b", Some("prefix=a&marker=b")), Operation::ListObjects);
        assert_eq!(op(Method::GET, "/b", Some("location")), Operation::GetBucketLocation);
        assert_eq!(op(Method::HEAD, "/b", None), Operation::HeadBucket);
        assert_eq!(op(Method::GET, "/b", Some("policy")), Operation::Other);
        assert_eq!(op(Method::GET, "/b/k", Some("x-id=GetObject")), Operation::GetObject);
        assert_eq!(op(Method::GET, "/b/k", Some("versionId=3")), Operation::Other);
        assert_eq!(op(Method::GET, "/b/k", Some("partNumber=1")), Operation::Other);
        assert_eq!(op(Method::PUT, "/b/k", None), Operation::WriteObject);
        assert_eq!(op(Method::POST, "/b/k", Some("uploads")), Operation::WriteObject);
        assert_eq!(op(Method::POST, "/b", Some("delete")), Operation::DeleteObjects);
        assert_eq!(op(Method::DELETE, "/b/k", None), Operation::WriteObject);
    }

    #[test]
    fn bad_input_is_an_s3_error() {
        let p = |path: &str| S3Request::parse(&Method::GET, path, None, None, &[]);
        assert!(matches!(p("/b%ff/k"), Err(S3Error::InvalidRequest(_))));
        assert!(matches!(p("/b!/k"), Err(S3Error::InvalidBucketName)));
        assert!(matches!(
            p(&format!("/b/{}", "k".repeat(1025))),
            Err(S3Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = "bucket=shards&key=train%2Fshard%20000.tar&uploads";
        assert_eq!(query_param(q, "bucket").as_deref(), Some("shards"));
        assert_eq!(query_param(q, "key").as_deref(), Some("train/shard 000.tar"));
        assert_eq!(query_param(q, "prefix"), None);
        assert_eq!(query_keys(q).collect::<Vec<_>>(), ["bucket", "key", "uploads"]);
    }

    #[test]
    fn paths_encode_like_sigv4() {
        assert_eq!(encode_path("a b/c+d~e"), "a%20b/c%2Bd~e");
    }
}
