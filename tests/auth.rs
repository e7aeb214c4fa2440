//! Client authentication and authorization through a running shardcache, with aws-sdk-s3 as the
//! client and a signature-checking S3 server behind: who may read, write and list what, on cache
//! hits as on misses, and presigned URLs.

mod common;

use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use common::{data, Proxy, ProxyOptions, S3Server};

const AUTH: &str = "\
auth:
  keys:
    - {access_key_id: AKIDTRAINER, secret_access_key: trainer-secret, principal: trainer}
    - {access_key_id: AKIDWRITER, secret_access_key: writer-secret, principal: writer}
    - {access_key_id: AKIDOTHER, secret_access_key: other-secret}
  policy:
    - {effect: allow, principals: [trainer], actions: [GetObject, ListBucket], resources: ['data/train/*']}
    - {effect: allow, principals: [writer], actions: ['*'], resources: ['data/*']}
    - {effect: deny, principals: ['*'], actions: ['*'], resources: ['data/train/secret*']}
    - {effect: allow, principals: [anonymous], actions: [GetObject], resources: ['data/public/*']}
";

async fn setup() -> (S3Server, Proxy) {
    let s3 = S3Server::start().await;
    s3.bucket("data");
    let opts = ProxyOptions {
        extra: AUTH.into(),
        ..Default::default()
    };
    let proxy = Proxy::start(s3.addr, opts);
    (s3, proxy)
}

fn client(proxy: &Proxy, key: &str, secret: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{}", proxy.addr))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .force_path_style(true)
        .http_client(common::http_client())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The S3 error code of a failed call, or "ok".
async fn code<T, E>(r: Result<T, aws_sdk_s3::error::SdkError<E>>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
{
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e
            .as_service_error()
            .and_then(|s| s.code())
            .map_or_else(|| format!("{e:?}"), str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_read_only_what_their_policy_allows_hits_included() {
    let (s3, proxy) = setup().await;
    let body = data(150_000, 3);
    s3.put("data", "train/1.tar", body.clone()).await;
    s3.put("data", "train/secret.tar", body.clone()).await;
    let trainer = client(&proxy, "AKIDTRAINER", "trainer-secret");
    let other = client(&proxy, "AKIDOTHER", "other-secret");

    let get = |c: &aws_sdk_s3::Client, key: &str| c.get_object().bucket("data").key(key).send();
    let out = get(&trainer, "train/1.tar").await.unwrap();
    assert_eq!(out.body.collect().await.unwrap().into_bytes().to_vec(), body);

    // The object is cached now: a principal without a grant is still refused, before the cache.
    s3.clear();
    assert_eq!(code(get(&other, "train/1.tar").await).await, "AccessDenied");
    assert_eq!(
        code(get(&trainer, "train/secret.tar").await).await,
        "AccessDenied",
        "explicit deny wins"
    );
    let anonymous = common::get(proxy.addr, "/data/train/1.tar", &[]).await;
    assert_eq!(anonymous.status, 403);
    assert_eq!(
        s3.request_count(),
        0,
        "refused requests reach neither the cache's fills nor the upstream"
    );

    let wrong_secret = client(&proxy, "AKIDTRAINER", "not-the-secret");
    assert_eq!(
        code(get(&wrong_secret, "train/1.tar").await).await,
        "SignatureDoesNotMatch"
    );
    let unknown = client(&proxy, "AKIDNOBODY", "x");
    assert_eq!(code(get(&unknown, "train/1.tar").await).await, "InvalidAccessKeyId");
    for (metric, at_least) in [
        ("shardcache_auth_failures_total{code=\"SignatureDoesNotMatch\"}", 1.0),
        ("shardcache_auth_failures_total{code=\"InvalidAccessKeyId\"}", 1.0),
        ("shardcache_access_denied_total{action=\"GetObject\"}", 3.0),
    ] {
        assert!(proxy.metric(metric).await >= at_least, "{metric}");
    }

    // Listing is allowed within the granted prefix only.
    let list = |prefix: &str| trainer.list_objects_v2().bucket("data").prefix(prefix).send();
    assert_eq!(code(list("train/").await).await, "ok");
    assert_eq!(code(list("").await).await, "AccessDenied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_grant_and_anonymous_reads_only_what_a_statement_names() {
    let (s3, proxy) = setup().await;
    let writer = client(&proxy, "AKIDWRITER", "writer-secret");
    let trainer = client(&proxy, "AKIDTRAINER", "trainer-secret");
    let put = |c: &aws_sdk_s3::Client, key: &str| {
        c.put_object()
            .bucket("data")
            .key(key)
            .body(b"hello".to_vec().into())
            .send()
    };
    assert_eq!(code(put(&trainer, "train/new.tar").await).await, "AccessDenied");
    assert_eq!(code(put(&writer, "public/hello.txt").await).await, "ok");
    let r = common::get(proxy.addr, "/data/public/hello.txt", &[]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"hello".as_slice()));
    let del = trainer
        .delete_object()
        .bucket("data")
        .key("public/hello.txt")
        .send()
        .await;
    assert_eq!(code(del).await, "AccessDenied");
    assert_eq!(s3.requests("DELETE", "data", "public/hello.txt").len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_gets_are_cached_reads_and_expire() {
    let (s3, proxy) = setup().await;
    let body = data(100_000, 5);
    s3.put("data", "train/p.tar", body.clone()).await;
    let trainer = client(&proxy, "AKIDTRAINER", "trainer-secret");
    let presigned = trainer
        .get_object()
        .bucket("data")
        .key("train/p.tar")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let uri: http::Uri = presigned.uri().parse().unwrap();
    let path = uri.path_and_query().unwrap().as_str();
    let host = [("Host", uri.authority().unwrap().as_str())];
    let first = common::get(proxy.addr, path, &host).await;
    assert_eq!((first.status, first.body.len()), (200, body.len()));
    s3.clear();
    let second = common::get(proxy.addr, path, &host).await;
    assert_eq!(second.body, body);
    assert_eq!(s3.request_count(), 0, "the second presigned GET is a cache hit");
    let tampered = common::get(proxy.addr, &path.replace("/p.tar", "/q.tar"), &host).await;
    assert_eq!(tampered.status, 403);
    assert!(tampered.text().contains("SignatureDoesNotMatch"), "{}", tampered.text());

    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired = PresigningConfig::builder()
        .start_time(an_hour_ago)
        .expires_in(Duration::from_secs(60))
        .build()
        .unwrap();
    let old = trainer
        .get_object()
        .bucket("data")
        .key("train/p.tar")
        .presigned(expired)
        .await
        .unwrap();
    let uri: http::Uri = old.uri().parse().unwrap();
    let r = common::get(proxy.addr, uri.path_and_query().unwrap().as_str(), &host).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("Request has expired"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_lets_anyone_read_the_demo_bucket_and_nothing_more() {
    // config/shardcache.yaml as shipped, on free ports and with its disk tier in a temporary
    // directory.
    let cache = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("config/shardcache.yaml").unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    config["listen"] = format!("127.0.0.1:{}", common::free_port()).into();
    config["admin_listen"] = format!("127.0.0.1:{}", common::free_port()).into();
    config["cache"]["disk"]["path"] = cache.path().display().to_string().into();
    // Without a config file to put it beside, the disk tier's key file must be named.
    config["cache"]["disk"]["key_file"] = cache.path().join("disk.key").display().to_string().into();
    let proxy = Proxy::start_yaml(&serde_yaml::to_string(&config).unwrap());

    let hello = common::get(proxy.addr, "/demo/hello.txt", &[]).await;
    assert_eq!(hello.status, 200, "the README's first command");
    assert_eq!(hello.body, std::fs::read("data/demo/hello.txt").unwrap());
    assert_eq!(common::get(proxy.addr, "/demo?list-type=2", &[]).await.status, 200);
    for refused in ["/", "/other/k", "/other?list-type=2"] {
        let r = common::get(proxy.addr, refused, &[]).await;
        assert_eq!(r.status, 403, "{refused}: {}", r.text());
    }
}

/// A chunk-signed PUT of `chunks` to `/data/{key}` as the writer, built by hand so that it can
/// be damaged: the seed signed by aws-sigv4, each chunk chained from it. Returns the request's
/// head and its body.
fn chunk_signed_put(addr: std::net::SocketAddr, key: &str, chunks: &[&[u8]]) -> (String, Vec<u8>) {
    use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
    use sha2::{Digest, Sha256};
    const STREAMING: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    let empty = hex::encode(Sha256::digest(b""));
    let decoded: usize = chunks.iter().map(|c| c.len()).sum();
    let framed: usize = chunks
        .iter()
        .chain([&&b""[..]])
        .map(|c| format!("{:x}", c.len()).len() + 17 + 64 + 2 + c.len() + 2)
        .sum();
    let host = addr.to_string();
    let (decoded_s, framed_s) = (decoded.to_string(), framed.to_string());
    let headers = [
        ("host", host.as_str()),
        ("content-encoding", "aws-chunked"),
        ("content-length", framed_s.as_str()),
        ("x-amz-decoded-content-length", decoded_s.as_str()),
    ];
    let now = SystemTime::now();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let identity = Credentials::new("AKIDWRITER", "writer-secret", None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(now)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let uri = format!("http://{host}/data/{key}");
    let signable = SignableRequest::new(
        "PUT",
        &uri,
        headers.iter().copied(),
        SignableBody::Precomputed(STREAMING.into()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut head = format!("PUT /data/{key} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers.iter().copied().chain(instructions.headers()) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let auth = instructions.headers().find(|(k, _)| *k == "authorization").unwrap().1;
    let mut previous = auth.rsplit("Signature=").next().unwrap().to_owned();
    let timestamp = instructions.headers().find(|(k, _)| *k == "x-amz-date").unwrap().1;
    let scope = format!("{}/us-east-1/s3/aws4_request", &timestamp[..8]);
    let signing_key = aws_sigv4::sign::v4::generate_signing_key("writer-secret", now, "us-east-1", "s3");
    let mut body = Vec::new();
    for chunk in chunks.iter().chain([&&b""[..]]) {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{timestamp}\n{scope}\n{previous}\n{empty}\n{}",
            hex::encode(Sha256::digest(chunk))
        );
        previous = aws_sigv4::sign::v4::calculate_signature(signing_key.as_ref(), sts.as_bytes());
        body.extend_from_slice(format!("{:x};chunk-signature={previous}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    assert_eq!(body.len(), framed);
    (head, body)
}

/// Sends a request's head, then its body in `parts` 300 ms apart, over a fresh connection (then,
/// with `hang_up`, closes its write side, as a client that dies mid-upload); the answer, or ""
/// when the connection closed with none.
async fn send_raw(addr: std::net::SocketAddr, head: &str, parts: &[&[u8]], hang_up: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let _ = s.write_all(part).await;
    }
    if hang_up {
        let _ = s.shutdown().await;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer));
    let _ = read.await.expect("an answer or a close within 20 s");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_signed_uploads_are_verified_chunk_by_chunk_and_forwarded_decoded() {
    let (s3, proxy) = setup().await;
    let payload = data(70_000, 9);
    let chunks = [&payload[..65_536], &payload[65_536..]];
    let exists = |key: &'static str| {
        let client = s3.client();
        async move { client.head_object().bucket("data").key(key).send().await.is_ok() }
    };

    let (head, body) = chunk_signed_put(proxy.addr, "up/good.bin", &chunks);
    let answer = send_raw(proxy.addr, &head, &[&body], false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stored = s3
        .client()
        .get_object()
        .bucket("data")
        .key("up/good.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(stored.body.collect().await.unwrap().into_bytes().to_vec(), payload);

    // A changed byte in the second chunk: refused, and the upstream never has the object.
    let (head, mut body) = chunk_signed_put(proxy.addr, "up/tampered.bin", &chunks);
    body[66_000] ^= 0x20;
    let answer = send_raw(proxy.addr, &head, &[&body], false).await;
    assert!(answer.contains("SignatureDoesNotMatch"), "{answer}");
    assert!(!exists("up/tampered.bin").await, "a tampered upload was stored");

    // All data sent and verified, then a forged final chunk after a pause: the upstream, which
    // was told the length, never gets the last byte.
    let (head, mut body) = chunk_signed_put(proxy.addr, "up/forged-end.bin", &chunks);
    let final_chunk = body.len() - 86;
    body[final_chunk + 20] = if body[final_chunk + 20] == b'0' { b'1' } else { b'0' };
    let answer = send_raw(proxy.addr, &head, &[&body[..final_chunk], &body[final_chunk..]], false).await;
    assert!(answer.contains("SignatureDoesNotMatch"), "{answer}");
    assert!(
        !exists("up/forged-end.bin").await,
        "stored before its final chunk verified"
    );

    // Cut short before the final chunk: never whole upstream.
    let (head, body) = chunk_signed_put(proxy.addr, "up/cut.bin", &chunks);
    let answer = send_raw(proxy.addr, &head, &[&body[..body.len() - 90]], true).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!exists("up/cut.bin").await, "a truncated upload was stored");

    // An empty object is verified whole before the upstream hears of it.
    let (head, body) = chunk_signed_put(proxy.addr, "up/empty.bin", &[]);
    let mut forged = body.clone();
    forged[20] = if forged[20] == b'0' { b'1' } else { b'0' };
    let answer = send_raw(proxy.addr, &head, &[&forged], false).await;
    assert!(answer.contains("SignatureDoesNotMatch"), "{answer}");
    assert!(
        s3.requests("PUT", "data", "up/empty.bin").is_empty(),
        "forwarded before verifying"
    );
    let answer = send_raw(proxy.addr, &head, &[&body], false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(exists("up/empty.bin").await);
}

/// Keys rotate without a restart: a secret file rewritten and SIGHUP, then one rewritten with no
/// signal (noticed by polling); a broken reload keeps the keys in force; a connection opened
/// before the reloads is still served after them; a key deleted from the config stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_on_sighup_and_on_file_change_without_dropping_connections() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/b/public")).unwrap();
    std::fs::write(dir.path().join("data/b/k"), b"rotating").unwrap();
    std::fs::write(dir.path().join("data/b/public/p"), b"open").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "first-secret\n").unwrap();
    let (s3, admin) = (common::free_port(), common::free_port());
    let config = dir.path().join("config.yaml");
    let yaml = |statement: &str| {
        format!(
            "listen: 127.0.0.1:{s3}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\n\
             graceful_shutdown_timeout_seconds: 1\ncache:\n  memory_bytes: 33554432\n  disk: null\n\
             upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n\
             auth:\n  keys:\n    - {{access_key_id: AKROT, secret_access_key_file: {}, principal: rot}}\n\
             \x20 policy:\n    - {statement}\n    - {{effect: allow, principals: [anonymous], actions: [GetObject], resources: ['b/public/*']}}\n",
            dir.path().join("data").display(),
            secret.display()
        )
    };
    let allow_rot = "{effect: allow, principals: [rot], actions: [GetObject], resources: ['b/*']}";
    std::fs::write(&config, yaml(allow_rot)).unwrap();
    let served = common::Served::start(&config, admin);
    let metrics: shardcache::ops::Endpoint = format!("http://127.0.0.1:{admin}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metrics.call(http::Method::GET, "/readyz").await.map(|r| r.status) != Ok(200) {
        assert!(std::time::Instant::now() < deadline, "shardcache did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let endpoint = format!("http://127.0.0.1:{s3}");
    let read = |secret: &'static str| {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new("AKROT", secret, None, None, "test"))
            .force_path_style(true)
            .http_client(common::http_client())
            .build();
        async move {
            code(
                aws_sdk_s3::Client::from_conf(conf)
                    .get_object()
                    .bucket("b")
                    .key("k")
                    .send()
                    .await,
            )
            .await
        }
    };
    // Waits up to `within` for `secret` to read; returns how long it took.
    let until_ok = |secret: &'static str, within: Duration| {
        let read = &read;
        async move {
            let start = std::time::Instant::now();
            while read(secret).await != "ok" {
                assert!(start.elapsed() < within, "{secret} not in force after {within:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            start.elapsed()
        }
    };
    // A keep-alive connection opened before any reload, reading the public object.
    let conn = tokio::net::TcpStream::connect(("127.0.0.1", s3)).await.unwrap();
    let mut conn = BufReader::new(conn);
    let mut public_read = async || {
        conn.get_mut()
            .write_all(b"GET /b/public/p HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut status = String::new();
        conn.read_line(&mut status).await.unwrap();
        let mut len = 0;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await.unwrap();
        (status, body)
    };
    assert!(public_read().await.0.starts_with("HTTP/1.1 200"));
    assert_eq!(read("first-secret").await, "ok");

    std::fs::write(&secret, "second-secret\n").unwrap();
    served.signal(libc::SIGHUP);
    let on_signal = until_ok("second-secret", Duration::from_secs(1)).await;
    assert_eq!(read("first-secret").await, "SignatureDoesNotMatch");

    // A policy naming no action: refused, and the keys in force stay.
    std::fs::write(
        &config,
        yaml("{effect: allow, principals: [rot], actions: [Fly], resources: ['*']}"),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let failed_reloads = ["shardcache_reloads_total{", "what=\"auth\"", "result=\"error\""];
    while metrics_value(&metrics, &failed_reloads).await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken reload was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read("second-secret").await, "ok");

    // No signal: the poll notices the files.
    std::fs::write(&config, yaml(allow_rot)).unwrap();
    std::fs::write(&secret, "third-secret\n").unwrap();
    let polled = until_ok("third-secret", Duration::from_secs(10)).await;
    let (status, body) = public_read().await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, b"open", "the connection opened before the reloads still serves");

    // Revocation: the key deleted from the config, its principal still named by a statement.
    let keyless = yaml(allow_rot);
    let key_line = keyless.lines().find(|l| l.contains("AKROT")).unwrap().to_owned() + "\n";
    std::fs::write(
        &config,
        keyless.replace(&key_line, "").replace("  keys:\n", "  keys: []\n"),
    )
    .unwrap();
    served.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read("third-secret").await != "InvalidAccessKeyId" {
        assert!(std::time::Instant::now() < deadline, "a deleted key still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("new secret in force {on_signal:?} after SIGHUP, {polled:?} after a file change");
}

/// The sum of the samples whose line starts with `parts[0]` and contains the other parts.
async fn metrics_value(admin: &shardcache::ops::Endpoint, parts: &[&str]) -> f64 {
    let text = admin.call(http::Method::GET, "/metrics").await.unwrap().text();
    text.lines()
        .filter(|l| l.starts_with(parts[0]) && parts[1..].iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The audit log's lines, once there are `n` (or after 5 s).
async fn audit_lines(log: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_who_read_what_and_every_denial() {
    let s3 = S3Server::start().await;
    s3.bucket("data");
    let body = data(70_000, 6);
    s3.put("data", "public/a.bin", body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let audit = format!("audit:\n  requests: writes\n  file: {}\n", log.display());
    let opts = ProxyOptions {
        extra: format!("{AUTH}{audit}"),
        ..Default::default()
    };
    let proxy = Proxy::start(s3.addr, opts);
    let job = [("x-shardcache-job", "resnet-run-7")];
    // A read (not logged with `writes`), a denied read, a write.
    let read = common::get(proxy.addr, "/data/public/a.bin", &job).await;
    assert_eq!((read.status, read.body.len()), (200, body.len()));
    let denied = common::get(proxy.addr, "/data/train/x", &job).await;
    assert_eq!(denied.status, 403);
    let writer = client(&proxy, "AKIDWRITER", "writer-secret");
    let put = writer
        .put_object()
        .bucket("data")
        .key("up/w.bin")
        .body(b"w".to_vec().into());
    assert_eq!(code(put.send().await).await, "ok");

    let lines = audit_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (refused, wrote) = (&lines[0], &lines[1]);
    assert_eq!(refused["principal"], "anonymous");
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["denied"], true);
    assert_eq!(refused["error"], "AccessDenied");
    assert_eq!(refused["key"], "train/x");
    assert_eq!(refused["job"], "resnet-run-7");
    assert_eq!(wrote["principal"], "writer");
    assert_eq!(
        (wrote["method"].as_str(), wrote["status"].as_u64()),
        (Some("PUT"), Some(200))
    );
    assert_eq!(wrote["operation"], "PutObject");
    assert!(wrote["etag"].as_str().is_some_and(|e| e.starts_with('"')), "{wrote}");
    assert!(
        wrote["source"].as_str().is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{wrote}"
    );
    assert_eq!(proxy.metric("shardcache_audit_dropped_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_of_all_requests_records_what_each_read_served() {
    let s3 = S3Server::start().await;
    s3.bucket("data");
    let body = data(70_000, 8);
    s3.put("data", "public/b.bin", body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let opts = ProxyOptions {
        extra: format!("{AUTH}audit:\n  requests: all\n  file: {}\n", log.display()),
        ..Default::default()
    };
    let proxy = Proxy::start(s3.addr, opts);
    let range = [("range", "bytes=10-99"), ("x-shardcache-job", "j1")];
    for _ in 0..2 {
        let r = common::get(proxy.addr, "/data/public/b.bin", &range).await;
        assert_eq!((r.status, r.body.as_slice()), (206, &body[10..100]));
    }
    let etag = s3
        .client()
        .head_object()
        .bucket("data")
        .key("public/b.bin")
        .send()
        .await
        .unwrap();
    let lines = audit_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The second read is served by the cache: from memory, or from the first one's fill if it
    // is still being stored.
    for (line, cache) in lines.iter().zip([&["miss"][..], &["memory_hit", "coalesced"]]) {
        assert_eq!(line["operation"], "GetObject");
        assert_eq!(line["range"], "bytes=10-99");
        assert_eq!(line["bytes"], 90);
        assert_eq!(line["etag"].as_str(), etag.e_tag());
        assert!(cache.contains(&line["cache"].as_str().unwrap()), "{line}");
        assert_eq!(line["job"], "j1");
        assert_eq!(line["denied"], false);
    }
}
