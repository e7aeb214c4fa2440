//! The verifier against requests signed by the AWS SDK's own signer (aws-sigv4), as S3 clients
//! sign them: header auth with each payload mode, presigned URLs, and every way to get it wrong.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use http::HeaderMap;

use super::*;

const KEY: &str = "AKIDSHARDCACHE";
const SECRET: &str = "shardcache/secret+key";

fn verifier() -> Verifier {
    Verifier::new(AuthOptions {
        region: "us-east-1".into(),
        max_skew: Duration::from_secs(900),
        keys: vec![AccessKey {
            id: KEY.into(),
            secret: SECRET.into(),
            principal: "trainer".into(),
        }],
    })
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A request as a client sends it: method, path?query, headers; signed by aws-sigv4 at `at`
/// (`presign`: in the query, valid that long).
struct Signed {
    method: &'static str,
    path: String,
    query: String,
    headers: HeaderMap,
}

impl Signed {
    fn new(
        method: &'static str,
        uri: &str,
        headers: &[(&str, &str)],
        at: SystemTime,
        presign: Option<Duration>,
    ) -> Self {
        Self::with(method, uri, headers, at, presign, SECRET, "us-east-1")
    }

    fn with(
        method: &'static str,
        uri: &str,
        headers: &[(&str, &str)],
        at: SystemTime,
        presign: Option<Duration>,
        secret: &str,
        region: &str,
    ) -> Self {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        if let Some(expires) = presign {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(expires);
        } else {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let identity = Credentials::new(KEY, secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("s3")
            .time(at)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let body = match presign {
            Some(_) => SignableBody::UnsignedPayload,
            None => SignableBody::Precomputed(
                headers
                    .iter()
                    .find(|(k, _)| *k == "x-amz-content-sha256")
                    .map_or("UNSIGNED-PAYLOAD", |(_, v)| v)
                    .to_owned(),
            ),
        };
        let request = SignableRequest::new(
            method,
            format!("http://shardcache.test{uri}"),
            headers.iter().copied(),
            body,
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://shardcache.test{uri}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(()).unwrap();
        instructions.apply_to_request_http1x(&mut req);
        Self {
            method,
            path: req.uri().path().to_owned(),
            query: req.uri().query().unwrap_or_default().to_owned(),
            headers: req.headers().clone(),
        }
    }

    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
        }
    }
}

const HOST: (&str, &str) = ("host", "shardcache.test");

#[test]
fn header_signed_requests_verify_in_each_payload_mode() {
    let v = verifier();
    let hash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    for payload in ["UNSIGNED-PAYLOAD", hash, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"] {
        let headers = [HOST, ("x-amz-content-sha256", payload), ("range", "bytes=0-9")];
        let r = Signed::new("GET", "/data/dir/a%20b~c.tar?x-id=GetObject", &headers, t0(), None);
        let ok = v.verify(&r.parts(), t0() + Duration::from_secs(60)).unwrap();
        assert_eq!(ok.identity, Identity::Principal("trainer".into()));
    }
}

#[test]
fn presigned_urls_verify_until_they_expire() {
    let v = verifier();
    let r = Signed::new("GET", "/data/k.tar", &[HOST], t0(), Some(Duration::from_secs(3600)));
    assert!(sigv4::parse_query(&r.query, &mut Vec::new()).unwrap().is_some());
    let ok = v.verify(&r.parts(), t0() + Duration::from_secs(3599)).unwrap();
    assert_eq!(ok.identity, Identity::Principal("trainer".into()));
    assert_eq!(
        v.verify(&r.parts(), t0() + Duration::from_secs(3601)),
        Err(AuthError::Expired)
    );
    assert_eq!(
        v.verify(&r.parts(), t0() - Duration::from_secs(901)),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn tampering_is_a_signature_mismatch() {
    let v = verifier();
    let headers = [
        HOST,
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("range", "bytes=0-9"),
    ];
    let mut r = Signed::new("GET", "/data/k.tar", &headers, t0(), None);
    r.headers.insert("range", "bytes=0-99".parse().unwrap());
    assert_eq!(v.verify(&r.parts(), t0()), Err(AuthError::SignatureMismatch));
    let mut r = Signed::new("GET", "/data/k.tar", &headers, t0(), None);
    r.path = "/data/other.tar".into();
    assert_eq!(v.verify(&r.parts(), t0()), Err(AuthError::SignatureMismatch));
    let mut r = Signed::new("GET", "/data/k.tar", &[HOST], t0(), Some(Duration::from_secs(60)));
    r.query = r.query.replace("X-Amz-Expires=60", "X-Amz-Expires=600");
    assert_eq!(v.verify(&r.parts(), t0()), Err(AuthError::SignatureMismatch));
    let wrong = Signed::with(
        "GET",
        "/data/k.tar",
        &headers,
        t0(),
        None,
        "not-the-secret",
        "us-east-1",
    );
    assert_eq!(v.verify(&wrong.parts(), t0()), Err(AuthError::SignatureMismatch));
}

#[test]
fn keys_clocks_scopes_and_unsigned_headers_are_checked() {
    let v = verifier();
    let headers = [HOST, ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    let r = Signed::new("GET", "/data/k.tar", &headers, t0(), None);
    assert_eq!(
        v.verify(&r.parts(), t0() + Duration::from_secs(901)),
        Err(AuthError::Skewed)
    );
    assert_eq!(
        v.verify(&r.parts(), t0() - Duration::from_secs(901)),
        Err(AuthError::Skewed)
    );
    let other = Verifier::new(AuthOptions {
        keys: vec![],
        ..verifier().opts
    });
    assert_eq!(other.verify(&r.parts(), t0()), Err(AuthError::UnknownKey));
    let west = Signed::with("GET", "/data/k.tar", &headers, t0(), None, SECRET, "us-west-2");
    assert!(matches!(
        v.verify(&west.parts(), t0()),
        Err(AuthError::WrongScope { .. })
    ));
    let mut added = Signed::new("PUT", "/data/k.tar", &headers, t0(), None);
    added.headers.insert("x-amz-copy-source", "/secret/k".parse().unwrap());
    assert_eq!(
        v.verify(&added.parts(), t0()),
        Err(AuthError::UnsignedHeader("x-amz-copy-source".into()))
    );
}

#[test]
fn unsigned_requests_are_anonymous_and_sigv2_is_refused() {
    let v = verifier();
    let mut headers = HeaderMap::new();
    headers.insert("host", "shardcache.test".parse().unwrap());
    let anonymous = RequestParts {
        method: "GET",
        path: "/demo/hello.txt",
        query: "",
        headers: &headers,
    };
    assert_eq!(v.verify(&anonymous, t0()).unwrap().identity, Identity::Anonymous);
    let mut signed_v2 = headers.clone();
    signed_v2.insert("authorization", "AWS AKID:c2lnbmF0dXJl".parse().unwrap());
    let v2 = RequestParts {
        headers: &signed_v2,
        ..anonymous
    };
    assert_eq!(v.verify(&v2, t0()), Err(AuthError::SigV2));
}

/// The seed request of AWS's chunk-signed upload example verifies, and hands on what its
/// chunks chain from ([`chunked`]'s tests check the chunks themselves).
#[test]
fn aws_example_chunked_upload_seed_verifies_and_seeds_the_chunks() {
    let v = Verifier::new(AuthOptions {
        region: "us-east-1".into(),
        max_skew: Duration::from_secs(900),
        keys: vec![AccessKey {
            id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            principal: "example".into(),
        }],
    });
    let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", chunked::STREAMING_SIGNED),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", "66824"),
    ] {
        headers.insert(k, v.parse().unwrap());
    }
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
         SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;\
         x-amz-decoded-content-length;x-amz-storage-class,Signature={seed}"
    );
    headers.insert("authorization", auth.parse().unwrap());
    let req = RequestParts {
        method: "PUT",
        path: "/examplebucket/chunkObject.txt",
        query: "",
        headers: &headers,
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
    let verified = v.verify(&req, at).unwrap();
    let chunks = verified.chunks.expect("a chunk-signed request seeds its chunks");
    assert_eq!(chunks.seed, seed);
    assert_eq!(chunks.scope, "20130524/us-east-1/s3/aws4_request");
    assert_eq!(chunks.timestamp, "20130524T000000Z");
    // Other payload modes have no chunks to chain.
    let plain = Signed::new(
        "PUT",
        "/b/k",
        &[HOST, ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
        t0(),
        None,
    );
    assert_eq!(verifier().verify(&plain.parts(), t0()).unwrap().chunks, None);
}
