//! Reading an incoming HTTP request as an S3 request: which bucket and key it addresses
//! (path-style or virtual-hosted-style), its query (parsed once), its copy source, and which
//! row of the operation table it is.

use std::borrow::Cow;

use http::{HeaderMap, Method};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::auth::sigv4::PRESIGNED_PARAMS;
use crate::operation::{self, Operation, ResourceKind, Row, Target};
use crate::{Query, S3Error};
use shardcache_types::{BucketName, ObjectKey};

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
    /// Its row of the operation table (`None` for [`Operation::Unknown`]).
    pub row: Option<&'static Row>,
    /// How the bucket was named.
    pub addressing: Addressing,
    /// The query, decoded; what the policy reads and, re-encoded, what is forwarded.
    pub query: Query,
    /// `x-amz-copy-source` (CopyObject, UploadPartCopy).
    pub copy_source: Option<CopySource>,
    /// The actions its headers ask for besides the operation's (`x-amz-acl` on a PutObject
    /// needs PutObjectAcl, ...), on the same resource.
    pub header_actions: Vec<&'static str>,
}

/// The object a copy reads, from `x-amz-copy-source` (`[/]bucket/key[?versionId=v]`,
/// percent-encoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySource {
    /// The bucket, as the client names it.
    pub bucket: BucketName,
    /// The key.
    pub key: ObjectKey,
    /// The version read, if one is named.
    pub version_id: Option<String>,
}

impl CopySource {
    /// Parses the header's value; a value that names no object is 400 InvalidArgument.
    pub fn parse(value: &str) -> Result<Self, S3Error> {
        let invalid = || S3Error::InvalidArgument("Invalid copy source object key".into());
        let value = value.strip_prefix('/').unwrap_or(value);
        let (path, query) = value.split_once('?').unwrap_or((value, ""));
        let path = decode(path).map_err(|_| invalid())?;
        let (bucket, key) = path.split_once('/').ok_or_else(invalid)?;
        let version_id = match Query::parse(query).map_err(|_| invalid())? {
            q if q.is_empty() => None,
            q if q.names().eq(["versionId"]) => q.get("versionId").map(str::to_owned),
            _ => return Err(invalid()),
        };
        Ok(Self {
            bucket: BucketName::parse(bucket).ok_or_else(invalid)?,
            key: object_key(key).map_err(|_| invalid())?,
            version_id,
        })
    }

    /// The header's value for an upstream that names the bucket `bucket`.
    pub fn to_header(&self, bucket: &str) -> String {
        let mut v = format!("/{}/{}", encode_path(bucket), encode_path(self.key.as_str()));
        if let Some(version) = &self.version_id {
            v.push_str("?versionId=");
            v.extend(utf8_percent_encode(version, NON_ALPHANUMERIC));
        }
        v
    }
}

/// Whether a query parameter is not the upstream's: a presigned URL's signature (checked here;
/// the upstream gets shardcache's own), its session token, and shardcache's job name.
fn not_forwarded(name: &str) -> bool {
    PRESIGNED_PARAMS.contains(&name) || name == "X-Amz-Security-Token" || name == JOB_PARAM
}

/// The query parameter naming a request's training job (for lineage); shardcache's alone.
pub const JOB_PARAM: &str = "x-shardcache-job";

impl S3Request {
    /// Parses method, path, query and headers (`Host`, `x-amz-copy-source`). `vhost_domains`
    /// are the base domains under which `bucket.domain` names a bucket.
    pub fn parse(
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        vhost_domains: &[String],
    ) -> Result<Self, S3Error> {
        let mut query = Query::parse_skipping(query, &PRESIGNED_PARAMS)?;
        query.remove_if(not_forwarded);
        let host = headers.get("host").and_then(|h| h.to_str().ok());
        let vhost_bucket = host.and_then(|h| bucket_from_host(h, vhost_domains));
        let (addressing, bucket, raw_key) = match vhost_bucket {
            Some(b) => (Addressing::VirtualHost, Some(b), path.strip_prefix('/').unwrap_or(path)),
            None => {
                let rest = path.strip_prefix('/').unwrap_or(path);
                let (b, k) = rest.split_once('/').unwrap_or((rest, ""));
                // `//bucket/key` names no bucket but a key: it must not pass for a service call.
                if b.is_empty() && !k.is_empty() {
                    return Err(S3Error::InvalidBucketName);
                }
                (Addressing::Path, (!b.is_empty()).then_some(b), k)
            }
        };
        let bucket = bucket
            .map(|b| BucketName::parse(&decode(b)?).ok_or(S3Error::InvalidBucketName))
            .transpose()?;
        let key = match raw_key {
            "" => None,
            k => Some(object_key(&decode(k)?)?),
        };
        let copy_source = match headers.get("x-amz-copy-source") {
            None => None,
            Some(v) => {
                Some(CopySource::parse(v.to_str().map_err(|_| {
                    S3Error::InvalidArgument("Invalid copy source object key".into())
                })?)?)
            }
        };
        let target = match (&bucket, &key) {
            (None, _) => Target::Service,
            (Some(_), None) => Target::Bucket,
            (Some(_), Some(_)) => Target::Object,
        };
        let row = operation::classify(method, target, &query, copy_source.is_some());
        let op = row.map_or(Operation::Unknown, |r| r.op);
        if row.is_some_and(|r| r.resource == ResourceKind::Listing) && query.get("delimiter") == Some("") {
            // S3 reads an empty delimiter as none (the AWS CRT always sends one); some S3
            // servers group by the empty string instead, so it is not forwarded.
            query.remove_if(|n| n == "delimiter");
        }
        Ok(Self {
            bucket,
            key,
            op,
            row,
            addressing,
            query,
            copy_source,
            header_actions: operation::header_actions(op, headers),
        })
    }

    /// A GetObject or HeadObject of the current version, whole or by `Range`: what the cache
    /// serves. A version, a part or answer-header overrides go to the upstream.
    pub fn cacheable(&self) -> bool {
        matches!(self.op, Operation::GetObject | Operation::HeadObject) && self.query.names().all(|n| n == "x-id")
    }
}

/// The percent-decoded value of `name` in a raw query string (`None` if absent or not UTF-8).
/// For what is not an S3 request (the admin listener's calls); S3 requests parse a [`Query`].
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode_str(v).decode_utf8().ok()).flatten()
    })
}

/// A key as S3 names it. A `.` or `..` segment is refused: a server or path normaliser behind
/// shardcache could resolve `granted/../other` outside the prefix the policy allowed.
pub fn object_key(key: &str) -> Result<ObjectKey, S3Error> {
    if key.split('/').any(|s| s == "." || s == "..") {
        return Err(S3Error::InvalidArgument(
            "Keys with a `.` or `..` path segment are refused.".into(),
        ));
    }
    ObjectKey::parse(key).ok_or_else(|| S3Error::InvalidRequest("Your key is too long.".to_owned()))
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
    use crate::test_headers as headers;

    fn parse(method: Method, path: &str, query: &str, host: &str) -> S3Request {
        S3Request::parse(
            &method,
            path,
            query,
            &headers(&[("host", host)]),
            &["s3.local".to_owned()],
        )
        .unwrap()
    }

    #[test]
    fn path_style_names_bucket_and_key() {
        let r = parse(Method::GET, "/data/a/b%20c.tar", "", "127.0.0.1:8080");
        assert_eq!(r.bucket.unwrap().as_str(), "data");
        assert_eq!(r.key.unwrap().as_str(), "a/b c.tar");
        assert_eq!(r.op, Operation::GetObject);
        assert_eq!(r.addressing, Addressing::Path);
    }

    #[test]
    fn virtual_host_style_takes_the_bucket_from_the_host() {
        let r = parse(Method::HEAD, "/k", "", "data.s3.local:8080");
        assert_eq!(r.bucket.unwrap().as_str(), "data");
        assert_eq!(r.key.unwrap().as_str(), "k");
        assert_eq!(r.op, Operation::HeadObject);
        assert_eq!(r.addressing, Addressing::VirtualHost);
        let bare = parse(Method::GET, "/data/k", "", "s3.local");
        assert_eq!(bare.addressing, Addressing::Path);
    }

    #[test]
    fn only_plain_reads_of_the_current_version_are_cacheable() {
        assert!(parse(Method::GET, "/b/k", "x-id=GetObject", "h").cacheable());
        assert!(parse(Method::HEAD, "/b/k", "", "h").cacheable());
        for query in ["versionId=3", "partNumber=1", "response-content-type=a"] {
            let r = parse(Method::GET, "/b/k", query, "h");
            assert_eq!(r.op, Operation::GetObject);
            assert!(!r.cacheable(), "{query}");
        }
        assert!(!parse(Method::GET, "/b/k", "acl", "h").cacheable());
    }

    #[test]
    fn signature_and_job_parameters_are_not_forwarded() {
        let r = parse(
            Method::GET,
            "/b/k",
            "versionId=3&X-Amz-Date=1&X-Amz-Signature=a&x-shardcache-job=j",
            "h",
        );
        assert_eq!(r.query.encode(), "versionId=3");
    }

    #[test]
    fn an_empty_delimiter_is_no_delimiter() {
        // The AWS CRT (s3torchconnector, mountpoint-s3) lists with `delimiter=`; S3 reads it as
        // no delimiter, and so must every upstream shardcache forwards it to.
        for (query, forwarded) in [
            ("list-type=2&delimiter=&prefix=a%2F", "list-type=2&prefix=a%2F"),
            ("delimiter", ""),
            ("versions&delimiter=", "versions"),
            ("uploads&delimiter=", "uploads"),
            ("list-type=2&delimiter=%2F", "list-type=2&delimiter=%2F"),
        ] {
            let r = parse(Method::GET, "/b", query, "h");
            assert_eq!(r.query.encode(), forwarded, "{query}");
        }
    }

    #[test]
    fn copy_sources_are_decoded_and_re_encoded_for_the_upstream() {
        let c = CopySource::parse("/src/a%20b/c%3Fd.tar?versionId=v%2B1").unwrap();
        assert_eq!((c.bucket.as_str(), c.key.as_str()), ("src", "a b/c?d.tar"));
        assert_eq!(c.version_id.as_deref(), Some("v+1"));
        assert_eq!(c.to_header("up-src"), "/up-src/a%20b/c%3Fd.tar?versionId=v%2B1");
        assert_eq!(CopySource::parse("src/k").unwrap().version_id, None);
        for bad in [
            "src",
            "/src/",
            "b!/k",
            "src/k?acl",
            "src/k?versionId=1&versionId=2",
            "src/%ff",
            "src/a/%2E%2E/b",
        ] {
            assert!(
                matches!(CopySource::parse(bad), Err(S3Error::InvalidArgument(_))),
                "{bad}"
            );
        }
        let copy = S3Request::parse(
            &Method::PUT,
            "/dst/k",
            "",
            &headers(&[("x-amz-copy-source", "/src/k")]),
            &[],
        )
        .unwrap();
        assert_eq!(copy.op, Operation::CopyObject);
        assert_eq!(copy.copy_source.unwrap().bucket.as_str(), "src");
    }

    #[test]
    fn bad_input_is_an_s3_error() {
        let p = |path: &str, query: &str| S3Request::parse(&Method::GET, path, query, &HeaderMap::new(), &[]);
        assert!(matches!(p("/b%ff/k", ""), Err(S3Error::InvalidRequest(_))));
        assert!(matches!(p("/b!/k", ""), Err(S3Error::InvalidBucketName)));
        assert!(matches!(
            p(&format!("/b/{}", "k".repeat(1025)), ""),
            Err(S3Error::InvalidRequest(_))
        ));
        assert!(matches!(
            p("/b", "list-type=2&prefix=public/&prefix=secret/"),
            Err(S3Error::InvalidArgument(_))
        ));
        assert!(matches!(p("//prod/secret.bin", ""), Err(S3Error::InvalidBucketName)));
        assert!(p("/", "").is_ok());
        for dotted in ["/b/a/../k", "/b/%2E%2E/k", "/b/./k", "/b/.."] {
            assert!(matches!(p(dotted, ""), Err(S3Error::InvalidArgument(_))), "{dotted}");
        }
        assert!(p("/b/a..b/.k/k.", "").is_ok(), "dots inside a segment are fine");
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = "bucket=shards&key=train%2Fshard%20000.tar&uploads";
        assert_eq!(query_param(q, "bucket").as_deref(), Some("shards"));
        assert_eq!(query_param(q, "key").as_deref(), Some("train/shard 000.tar"));
        assert_eq!(query_param(q, "prefix"), None);
    }

    #[test]
    fn paths_encode_like_sigv4() {
        assert_eq!(encode_path("a b/c+d~e"), "a%20b/c%2Bd~e");
    }
}
