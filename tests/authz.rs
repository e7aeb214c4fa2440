//! Authorization against a hostile client: each request shape an attacker tried (copy sources,
//! sub-resources, duplicate and re-spelled query parameters, DeleteObjects bodies written to
//! fool a parser, bodies that do not match their signed hash, prefixes wider than a grant) is
//! refused or handled as S3 would, before anything reaches the upstream. The upstream checks
//! signatures (s3s-fs); requests are signed by hand with aws-sigv4 so they can be shaped freely.

mod common;

use std::net::SocketAddr;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use bytes::Bytes;
use common::{Proxy, S3Server};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

const POLICY: &str = "\
auth:
  keys:
    - {access_key_id: AKREADER, secret_access_key: reader-secret, principal: reader}
    - {access_key_id: AKWRITER, secret_access_key: writer-secret, principal: writer}
    - {access_key_id: AKCOPIER, secret_access_key: copier-secret, principal: copier}
    - {access_key_id: AKDELETER, secret_access_key: deleter-secret, principal: deleter}
  policy:
    - {effect: allow, principals: [reader], actions: [GetObject, ListBucket], resources: ['data/public/*', 'files/public/*']}
    - {effect: allow, principals: [reader], actions: [ListBucket], resources: ['data/a.bin']}
    - {effect: allow, principals: [writer], actions: [PutObject, DeleteObject], resources: ['data/out/*']}
    - {effect: allow, principals: [copier], actions: [GetObject], resources: ['data/src/*']}
    - {effect: allow, principals: [copier], actions: [PutObject], resources: ['data/out/*']}
    - {effect: allow, principals: [deleter], actions: [GetObject, DeleteObject], resources: ['data/*']}
    - {effect: deny, principals: [deleter], actions: [DeleteObject], resources: ['data/keep.bin']}
";

struct Setup {
    s3: S3Server,
    proxy: Proxy,
    /// The local directory's root, deleted when dropped.
    _files: tempfile::TempDir,
}

/// s3s-fs with buckets `updata` (served as `data`, and as `live` uncached) and `hidden` (served
/// by no route), and a local directory served as `files`; the admin token `t0ken`, and an
/// audit log of every request in the directory's `audit.log`.
async fn setup() -> Setup {
    let s3 = S3Server::start().await;
    s3.bucket("updata");
    s3.bucket("hidden");
    let files = tempfile::tempdir().unwrap();
    for (path, body) in [
        ("files/public/p.txt", "public"),
        ("files/secret/s.txt", "secret"),
        ("token", "t0ken"),
    ] {
        let path = files.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nthreads: 2\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\ncache:\n  chunk_size: 65536\n  memory_bytes: 33554432\n  disk: null\n\
         upstreams:\n  up:\n    kind: s3\n    endpoint: http://{}\n    credentials:\n      source: static\n      \
         access_key_id: {}\n      secret_access_key: {}\n  local:\n    kind: fs\n    root: {}\n\
         buckets:\n  - {{name: data, upstream: up, upstream_bucket: updata}}\n  - {{name: files, upstream: local}}\n\
         \x20 - {{name: live, upstream: up, upstream_bucket: updata, cache: none}}\n\
         audit:\n  requests: all\n  file: {dir}/audit.log\n{POLICY}  admin_token_file: {dir}/token\n",
        common::free_port(),
        common::free_port(),
        s3.addr,
        common::ACCESS_KEY,
        common::SECRET_KEY,
        files.path().display(),
        dir = files.path().display(),
    );
    let proxy = Proxy::start_yaml(&yaml);
    Setup {
        s3,
        proxy,
        _files: files,
    }
}

/// An answer: status and body.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn code(&self) -> &str {
        self.body
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map_or("", |(code, _)| code)
    }
}

/// A request signed with SigV4 as `key` (secret: the key's name, lower-cased, `-secret`), with
/// the body's real SHA-256 unless `payload_hash` names another.
struct Signed<'a> {
    method: &'a str,
    target: &'a str,
    headers: Vec<(&'a str, String)>,
    body: Vec<u8>,
    payload_hash: Option<String>,
}

impl<'a> Signed<'a> {
    fn new(method: &'a str, target: &'a str) -> Self {
        Self {
            method,
            target,
            headers: Vec::new(),
            body: Vec::new(),
            payload_hash: None,
        }
    }

    fn header(mut self, name: &'a str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    async fn send(self, addr: SocketAddr, key: &str) -> Answer {
        use aws_sigv4::http_request::{
            sign, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
        };
        let secret = format!("{}-secret", key.trim_start_matches("AK").to_lowercase());
        let hash = self
            .payload_hash
            .unwrap_or_else(|| hex::encode(Sha256::digest(&self.body)));
        let mut headers = self.headers;
        headers.push(("host", addr.to_string()));
        headers.push(("x-amz-content-sha256", hash.clone()));
        let identity = Credentials::new(key, secret, None, None, "test").into();
        // As S3 clients sign: the path as sent, encoded once.
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let uri = format!("http://{addr}{}", self.target);
        let signable = SignableRequest::new(
            self.method,
            &uri,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Precomputed(hash),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = http::Request::builder().method(self.method).uri(self.target);
        for (k, v) in headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(instructions.headers())
        {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(self.body))).unwrap();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// A DeleteObjects body naming `keys` as written (escaped or not by the caller).
fn delete_body(keys: &[&str]) -> String {
    let objects: String = keys
        .iter()
        .map(|k| format!("<Object><Key>{k}</Key></Object>"))
        .collect();
    format!("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{objects}</Delete>")
}

fn content_md5(body: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

async fn delete_objects(addr: SocketAddr, key: &str, body: &str) -> Answer {
    Signed::new("POST", "/data?delete")
        .header("content-md5", &content_md5(body.as_bytes()))
        .body(body)
        .send(addr, key)
        .await
}

async fn read(addr: SocketAddr, key: &str, path: &str) -> Answer {
    Signed::new("GET", path).send(addr, key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_need_a_read_grant_on_a_routed_source() {
    let Setup { s3, proxy, .. } = setup().await;
    s3.put("updata", "secret.bin", b"top secret".to_vec()).await;
    s3.put("updata", "src/ok.bin", b"copy me".to_vec()).await;
    s3.put("hidden", "x.bin", b"unrouted".to_vec()).await;
    s3.clear();
    for (source, why) in [
        ("/data/secret.bin", "no read grant on the source"),
        ("/hidden/x.bin", "a bucket no route serves"),
        ("/updata/secret.bin", "the upstream's own name for a routed bucket"),
    ] {
        let copy = Signed::new("PUT", "/data/out/stolen.bin")
            .header("x-amz-copy-source", source)
            .send(proxy.addr, "AKWRITER")
            .await;
        assert!(matches!(copy.status, 403 | 404), "{why}: {} {}", copy.status, copy.body);
        let part = Signed::new("PUT", "/data/out/stolen.bin?partNumber=1&uploadId=u1")
            .header("x-amz-copy-source", source)
            .send(proxy.addr, "AKCOPIER")
            .await;
        assert!(
            matches!(part.status, 403 | 404),
            "UploadPartCopy, {why}: {}",
            part.status
        );
    }
    assert_eq!(s3.request_count(), 0, "no copy reached the upstream");

    // A copy the policy allows names the source as the upstream knows it.
    let copy = Signed::new("PUT", "/data/out/ok.bin")
        .header("x-amz-copy-source", "/data/src/ok.bin")
        .send(proxy.addr, "AKCOPIER")
        .await;
    assert_eq!(copy.status, 200, "{}", copy.body);
    let back = read(proxy.addr, "AKDELETER", "/data/out/ok.bin").await;
    assert_eq!((back.status, back.body.as_str()), (200, "copy me"));
    let bad = Signed::new("PUT", "/data/out/x.bin")
        .header("x-amz-copy-source", "/data")
        .send(proxy.addr, "AKCOPIER")
        .await;
    assert_eq!((bad.status, bad.code()), (400, "InvalidArgument"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_resources_need_their_own_actions() {
    let Setup { s3, proxy, .. } = setup().await;
    s3.put("updata", "out/k.bin", b"k".to_vec()).await;
    s3.clear();
    let writer = |method, target| Signed::new(method, target).send(proxy.addr, "AKWRITER");
    let select = writer("POST", "/data/out/k.bin?select&select-type=2").await;
    assert_eq!(
        (select.status, select.code()),
        (403, "AccessDenied"),
        "SelectObjectContent reads"
    );
    for (method, target) in [
        ("PUT", "/data/out/k.bin?acl"),
        ("PUT", "/data/out/k.bin?tagging"),
        ("DELETE", "/data/out/k.bin?tagging"),
        ("PUT", "/data/out/k.bin?retention"),
        ("POST", "/data/out/k.bin"),
    ] {
        let r = writer(method, target).await;
        assert_eq!((r.status, r.code()), (403, "AccessDenied"), "{method} {target}");
    }
    for sub in ["policy", "acl", "versioning", "location", "tagging"] {
        let target = format!("/data?list-type=2&prefix=public/&{sub}");
        let r = read(proxy.addr, "AKREADER", &target).await;
        assert_eq!((r.status, r.code()), (403, "AccessDenied"), "{target}");
    }
    assert_eq!(s3.request_count(), 0, "nothing reached the upstream");
    let list = read(proxy.addr, "AKREADER", "/data?list-type=2&prefix=public/").await;
    assert_eq!(list.status, 200, "{}", list.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_that_is_authorized_is_the_query_that_is_forwarded() {
    let Setup { s3, proxy, _files } = setup().await;
    s3.put("updata", "secret/s.bin", b"s".to_vec()).await;
    s3.put("updata", "public/p.bin", b"p".to_vec()).await;
    for bucket in ["data", "files"] {
        for query in [
            "list-type=2&prefix=public/&prefix=secret/",
            "list-type=2&prefix=public/&%70refix=secret/",
            "list-type=2&list-type=2&prefix=public/",
        ] {
            let r = read(proxy.addr, "AKREADER", &format!("/{bucket}?{query}")).await;
            assert_eq!(
                (r.status, r.code()),
                (400, "InvalidArgument"),
                "/{bucket}?{query}: {}",
                r.body
            );
            assert!(!r.body.contains("secret/s"), "{}", r.body);
        }
        let respelled = read(
            proxy.addr,
            "AKREADER",
            &format!("/{bucket}?list-type=2&%70refix=secret/"),
        )
        .await;
        assert_eq!(respelled.status, 403, "`%70refix` is `prefix`");
        let ok = read(
            proxy.addr,
            "AKREADER",
            &format!("/{bucket}?list-type=2&%70refix=public%2F"),
        )
        .await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert!(
            ok.body.contains("public/p") && !ok.body.contains("secret"),
            "{}",
            ok.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_needs_a_grant_on_every_key_its_prefix_reaches() {
    let Setup { s3, proxy, .. } = setup().await;
    s3.put("updata", "a.bin", b"a".to_vec()).await;
    s3.put("updata", "a.bin.bak-2026", b"b".to_vec()).await;
    let r = read(proxy.addr, "AKREADER", "/data?list-type=2&prefix=a.bin").await;
    assert_eq!((r.status, r.code()), (403, "AccessDenied"), "{}", r.body);
    assert!(!r.body.contains("bak"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_objects_checks_each_key_and_forgets_exactly_what_was_deleted() {
    let Setup { s3, proxy, .. } = setup().await;
    for key in ["a.bin", "keep.bin", "x.bin", "y.bin", "z.bin", "A.bin"] {
        s3.put("updata", key, key.as_bytes().to_vec()).await;
    }
    let addr = proxy.addr;
    // Cache each object, so a missed invalidation would serve it after its deletion.
    for key in ["a.bin", "keep.bin", "x.bin", "y.bin", "z.bin", "A.bin"] {
        assert_eq!(
            read(addr, "AKDELETER", &format!("/data/{key}")).await.status,
            200,
            "{key}"
        );
    }

    let r = delete_objects(addr, "AKDELETER", &delete_body(&["a.bin", "keep.bin"])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<Deleted><Key>a.bin</Key>"), "{}", r.body);
    assert!(
        r.body.contains("<Key>keep.bin</Key><Code>AccessDenied</Code>"),
        "{}",
        r.body
    );
    assert_eq!(read(addr, "AKDELETER", "/data/a.bin").await.status, 404);
    assert_eq!(read(addr, "AKDELETER", "/data/keep.bin").await.status, 200);
    assert_eq!(
        s3.requests("GET", "updata", "keep.bin").len(),
        1,
        "keep.bin stays cached"
    );

    // Keys written with character references, CDATA, padded past 2 MiB: each is deleted
    // upstream and forgotten by the cache.
    let padded = delete_body(&["z.bin"]).replace("<Object>", &format!("<!--{}--><Object>", " ".repeat(3 << 20)));
    for (body, key) in [
        (delete_body(&["x&#46;bin"]), "x.bin"),
        (delete_body(&["<![CDATA[y.bin]]>"]), "y.bin"),
        (delete_body(&["&#x41;.bin"]), "A.bin"),
        (padded, "z.bin"),
    ] {
        let r = delete_objects(addr, "AKDELETER", &body).await;
        assert_eq!(r.status, 200, "{key}: {}", r.body);
        assert_eq!(
            read(addr, "AKDELETER", &format!("/data/{key}")).await.status,
            404,
            "{key}"
        );
    }

    // Refused before anything is forwarded: a body that does not parse, more than 1,000 keys,
    // no integrity header.
    s3.put("updata", "b.bin", b"b".to_vec()).await;
    s3.clear();
    let many: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for body in [
        "<Delete><Object><Key>b.bin</Key></Object>".to_owned(),
        delete_body(&many),
    ] {
        let r = delete_objects(addr, "AKDELETER", &body).await;
        assert_eq!((r.status, r.code()), (400, "MalformedXML"), "{}", r.body);
    }
    let unchecked = Signed::new("POST", "/data?delete")
        .body(delete_body(&["b.bin"]))
        .send(addr, "AKDELETER")
        .await;
    assert_eq!(unchecked.status, 400, "{}", unchecked.body);
    let wrong_md5 = Signed::new("POST", "/data?delete")
        .header("content-md5", &content_md5(b"something else"))
        .body(delete_body(&["b.bin"]))
        .send(addr, "AKDELETER")
        .await;
    assert_eq!((wrong_md5.status, wrong_md5.code()), (400, "BadDigest"));
    assert_eq!(s3.request_count(), 0, "nothing was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_match_its_signed_hash_never_lands() {
    let Setup { s3, proxy, .. } = setup().await;
    let body = vec![7u8; 300_000];
    let mut altered = body.clone();
    altered[299_999] = 8;
    let mut put = Signed::new("PUT", "/data/out/altered.bin").body(altered);
    put.payload_hash = Some(hex::encode(Sha256::digest(&body)));
    let r = put.send(proxy.addr, "AKWRITER").await;
    assert_eq!((r.status, r.code()), (400, "XAmzContentSHA256Mismatch"), "{}", r.body);
    let mut empty = Signed::new("PUT", "/data/out/empty.bin");
    empty.payload_hash = Some(hex::encode(Sha256::digest(b"x")));
    let r = empty.send(proxy.addr, "AKWRITER").await;
    assert_eq!((r.status, r.code()), (400, "XAmzContentSHA256Mismatch"), "{}", r.body);
    for key in ["altered.bin", "empty.bin"] {
        assert!(!s3.root.path().join("updata/out").join(key).exists(), "{key} landed");
    }
    let ok = Signed::new("PUT", "/data/out/ok.bin")
        .body(body)
        .send(proxy.addr, "AKWRITER")
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_are_audited_and_warm_keeps_residency() {
    let Setup { s3, proxy, _files } = setup().await;
    s3.put("updata", "w.bin", b"warm me".to_vec()).await;
    let warm = |bucket: &str, token: &str| {
        let (admin, target) = (proxy.admin, format!("/warm?bucket={bucket}&key=w.bin"));
        let token = format!("Bearer {token}");
        async move {
            let stream = tokio::net::TcpStream::connect(admin).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = http::Request::post(target)
                .header("host", "admin")
                .header("authorization", token)
                .body(Full::new(Bytes::new()))
                .unwrap();
            sender.send_request(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(warm("live", "t0ken").await, 409, "a `cache: none` bucket is not warmed");
    assert_eq!(warm("data", "wrong").await, 403);
    assert_eq!(warm("data", "t0ken").await, 200);
    let log = _files.path().join("audit.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let warms = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let warms: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["operation"] == "shardcache:Warm")
            .collect();
        if warms.len() >= 3 || std::time::Instant::now() > deadline {
            break warms;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let seen: Vec<_> = warms
        .iter()
        .map(|l| {
            (
                l["principal"].as_str().unwrap(),
                l["status"].as_u64().unwrap(),
                l["denied"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("admin-token", 409, false),
            ("anonymous", 403, true),
            ("admin-token", 200, false)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_do_not_name_the_upstream() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(closed, common::ProxyOptions::default());
    for path in ["/b/k", "/b?list-type=2"] {
        let r = common::get(proxy.addr, path, &[]).await;
        assert_eq!(r.status, 502, "{path}");
        let body = r.text();
        assert!(
            body.contains("<Code>BadGateway</Code>") && body.contains("<RequestId>"),
            "{body}"
        );
        assert!(!body.contains(&closed.port().to_string()), "{path}: {body}");
    }
}

/// Found by a review after the first fix: a path with an empty bucket passed for ListBuckets and
/// was forwarded as a read; `..` segments could leave a granted prefix at an upstream that
/// normalises paths (s3s-fs does); headers that set ACLs, tags and locks rode on PutObject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_or_header_reaches_past_the_action_checked() {
    let Setup { s3, proxy, .. } = setup().await;
    s3.put("updata", "secret.bin", b"s".to_vec()).await;
    s3.put("hidden", "x.bin", b"x".to_vec()).await;
    s3.clear();
    let writer = |method, target| Signed::new(method, target);
    for target in ["//updata/secret.bin", "//hidden/x.bin", "//hidden?prefix=x"] {
        let r = read(proxy.addr, "AKREADER", target).await;
        assert_eq!((r.status, r.code()), (400, "InvalidBucketName"), "{target}: {}", r.body);
    }
    for target in [
        "/data/out/%2E%2E/secret.bin",
        "/data/out/../secret.bin",
        "/data/out/./k",
    ] {
        let r = writer("PUT", target).body("x").send(proxy.addr, "AKWRITER").await;
        assert_eq!((r.status, r.code()), (400, "InvalidArgument"), "{target}: {}", r.body);
    }
    let copy = writer("PUT", "/data/out/c.bin")
        .header("x-amz-copy-source", "/data/src/../secret.bin")
        .send(proxy.addr, "AKCOPIER")
        .await;
    assert_eq!((copy.status, copy.code()), (400, "InvalidArgument"));
    for (header, value) in [
        ("x-amz-acl", "public-read"),
        (
            "x-amz-grant-read",
            "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\"",
        ),
        ("x-amz-tagging", "a=b"),
        ("x-amz-object-lock-mode", "COMPLIANCE"),
        ("x-amz-object-lock-legal-hold", "ON"),
    ] {
        let r = writer("PUT", "/data/out/h.bin")
            .header(header, value)
            .body("x")
            .send(proxy.addr, "AKWRITER")
            .await;
        assert_eq!((r.status, r.code()), (403, "AccessDenied"), "{header}");
    }
    let bypass = writer("DELETE", "/data/out/h.bin")
        .header("x-amz-bypass-governance-retention", "true")
        .send(proxy.addr, "AKWRITER")
        .await;
    assert_eq!((bypass.status, bypass.code()), (403, "AccessDenied"));
    assert_eq!(s3.request_count(), 0, "nothing reached the upstream");

    // DeleteObjects: nothing is read for a principal that may delete nothing in the bucket, and
    // a `..` key is refused on its own.
    let body = delete_body(&["secret.bin"]);
    let r = delete_objects(proxy.addr, "AKREADER", &body).await;
    assert_eq!((r.status, r.code()), (403, "AccessDenied"), "{}", r.body);
    let r = delete_objects(proxy.addr, "AKDELETER", &delete_body(&["out/../secret.bin"])).await;
    assert!(r.body.contains("<Code>InvalidArgument</Code>"), "{}", r.body);
    assert_eq!(s3.request_count(), 0, "nothing reached the upstream");
}

/// At an upstream addressed by host name, `DATA` and `data` are one bucket: a name in upper case
/// would be checked by the policy as another bucket. It names none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upper_case_buckets_name_nothing_at_a_virtual_hosted_upstream() {
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nthreads: 2\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\ncache:\n  memory_bytes: 33554432\n  disk: null\n\
         upstreams:\n  up:\n    kind: s3\n    endpoint: http://127.0.0.1:9\n    addressing: virtual\n    \
         credentials:\n      source: anonymous\ndefault_upstream: up\n",
        common::free_port(),
        common::free_port(),
    );
    let proxy = Proxy::start_yaml(&yaml);
    let r = common::get(proxy.addr, "/DATA/secret/x", &[]).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("<Code>NoSuchBucket</Code>"), "{}", r.text());
}
