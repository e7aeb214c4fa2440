//! Per-job lineage through a running shardcache: reads tagged with a job (header, presigned URL
//! parameter, or the principal) are recorded with the ETag served, and come back from the admin
//! listener and `shardcache lineage` as JSON and CSV.

mod common;

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
use common::{data, Proxy, ProxyOptions, S3Server};

const CONFIG: &str = "\
auth:
  keys:
    - {access_key_id: AKIDTRAINER, secret_access_key: trainer-secret, principal: trainer}
  policy:
    - {effect: allow, principals: [trainer], actions: [GetObject], resources: ['data/*']}
    - {effect: allow, principals: [anonymous], actions: [GetObject], resources: ['data/public/*']}
";

/// A presigned GET of `path_and_query` as the trainer, valid for 5 minutes.
fn presign(addr: std::net::SocketAddr, path_and_query: &str) -> String {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(300));
    let identity = aws_credential_types::Credentials::new("AKIDTRAINER", "trainer-secret", None, None, "t").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let uri = format!("http://{addr}{path_and_query}");
    let host = addr.to_string();
    let signable = SignableRequest::new(
        "GET",
        &uri,
        [("host", host.as_str())].into_iter(),
        SignableBody::UnsignedPayload,
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().uri(&uri).body(()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req.uri().path_and_query().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_recorded_per_job_with_the_version_served() {
    let s3 = S3Server::start().await;
    s3.bucket("data");
    let (a, b) = (data(100_000, 1), data(30_000, 2));
    s3.put("data", "public/a.bin", a.clone()).await;
    s3.put("data", "train/b.bin", b.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "lineage-token\n").unwrap();
    let extra = format!(
        "{CONFIG}  admin_token_file: {}\nlineage:\n  path: {}\n",
        token.display(),
        dir.path().join("lineage.redb").display()
    );
    let proxy = Proxy::start(
        s3.addr,
        ProxyOptions {
            extra,
            ..Default::default()
        },
    );
    let authority = proxy.addr.to_string();
    let host = [("Host", authority.as_str())];

    // Job "run-7" by header: a whole read and a ranged one of the same object.
    let job = [("x-shardcache-job", "run-7")];
    assert!(common::get(proxy.addr, "/data/public/a.bin", &job).await.body == a);
    let ranged = [("x-shardcache-job", "run-7"), ("range", "bytes=0-999")];
    assert_eq!(common::get(proxy.addr, "/data/public/a.bin", &ranged).await.status, 206);
    // Job "run-8" in a presigned URL: still a cache read (the second is a hit, no upstream).
    let url = presign(proxy.addr, "/data/train/b.bin?x-shardcache-job=run-8");
    let first = common::get(proxy.addr, &url, &host).await;
    assert!(first.body == b, "{}", first.text());
    s3.clear();
    assert!(common::get(proxy.addr, &url, &host).await.body == b);
    assert_eq!(
        s3.request_count(),
        0,
        "a presigned read tagged with a job is a cache hit"
    );
    // No job named: the trainer's reads are recorded under its principal.
    let url = presign(proxy.addr, "/data/train/b.bin");
    assert_eq!(common::get(proxy.addr, &url, &host).await.status, 200);
    // Refused and anonymous-without-job reads are not recorded.
    assert_eq!(common::get(proxy.addr, "/data/train/b.bin", &job).await.status, 403);
    assert_eq!(common::get(proxy.addr, "/data/public/a.bin", &[]).await.status, 200);

    let admin: shardcache::ops::Endpoint = format!("http://{}", proxy.admin).parse().unwrap();
    let unauthorized = admin.call(http::Method::GET, "/lineage?job=run-7").await.unwrap();
    assert_eq!(unauthorized.status, 401);
    let admin = admin.with_bearer("lineage-token".into());
    let etag = |key: &'static str| {
        let client = s3.client();
        async move {
            client
                .head_object()
                .bucket("data")
                .key(key)
                .send()
                .await
                .unwrap()
                .e_tag
                .unwrap()
        }
    };
    let (etag_a, etag_b) = (etag("public/a.bin").await, etag("train/b.bin").await);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let manifest = |job: &'static str| {
        let admin = admin.clone();
        async move {
            loop {
                let r = admin
                    .call(http::Method::GET, &format!("/lineage?job={job}"))
                    .await
                    .unwrap();
                assert_eq!(r.status, 200, "{}", r.text());
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let objects = v["objects"].as_array().unwrap().clone();
                if !objects.is_empty() || std::time::Instant::now() > deadline {
                    return objects;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let run7 = manifest("run-7").await;
    assert_eq!(run7.len(), 1, "{run7:?}");
    assert_eq!(run7[0]["key"], "public/a.bin");
    assert_eq!(run7[0]["etag"].as_str(), Some(etag_a.as_str()));
    assert_eq!(
        (run7[0]["reads"].as_u64(), run7[0]["bytes"].as_u64()),
        (Some(2), Some(101_000))
    );
    let run8 = manifest("run-8").await;
    assert_eq!((run8.len(), run8[0]["reads"].as_u64()), (1, Some(2)), "{run8:?}");
    assert_eq!(run8[0]["etag"].as_str(), Some(etag_b.as_str()));
    let by_principal = manifest("trainer").await;
    assert_eq!(by_principal.len(), 1, "{by_principal:?}");
    assert_eq!(by_principal[0]["key"], "train/b.bin");

    // The command line, CSV.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardcache"))
        .args(["lineage", "run-8", "--format", "csv", "--admin"])
        .arg(format!("http://{}", proxy.admin))
        .arg("--admin-token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "bucket,key,etag,version_id,bytes,reads,first_read,last_read");
    let quoted_etag = format!("\"{}\"", etag_b.replace('"', "\"\""));
    assert!(
        lines[1].starts_with(&format!("data,train/b.bin,{quoted_etag},,60000,2,")),
        "{csv}"
    );
}
