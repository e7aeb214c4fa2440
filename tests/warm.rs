//! `shardcache warm` against a running shardcache in front of a real S3 server (s3s-fs).

mod common;

use aws_credential_types::Credentials;
use common::{data, Proxy, ProxyOptions, S3Server};
use shardcache::ops::warm::{run, WarmArgs};

const C: usize = 64 << 10; // chunk size of the test proxy

fn args(proxy: &Proxy, target: &str, manifest: Option<String>) -> WarmArgs {
    WarmArgs {
        target: target.to_owned(),
        manifest,
        endpoint: format!("http://{}", proxy.addr).parse().unwrap(),
        admin: format!("http://{}", proxy.admin).parse().unwrap(),
        concurrency: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warmed_prefix_is_read_without_touching_the_upstream() {
    let s3 = S3Server::start().await;
    s3.bucket("dataset");
    let shards: Vec<Vec<u8>> = (0..3).map(|i| data(3 * C + 100 * i, i as u8)).collect();
    for (i, body) in shards.iter().enumerate() {
        s3.put("dataset", &format!("train/shard-{i}.tar"), body.clone()).await;
    }
    s3.put("dataset", "val/shard-0.tar", data(C, 7)).await;
    let proxy = Proxy::start(s3.addr, ProxyOptions::default());
    s3.clear();

    let summary = run(args(&proxy, "s3://dataset/train/", None)).await.unwrap();
    assert_eq!(summary.objects, 3, "{summary}");
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(summary.bytes, shards.iter().map(|s| s.len() as u64).sum::<u64>());
    assert_eq!(summary.cached_bytes, 0);
    let fetched: usize = (0..3)
        .map(|i| s3.requests("GET", "dataset", &format!("train/shard-{i}.tar")).len())
        .sum();
    let chunks: usize = shards.iter().map(|s| s.len().div_ceil(C)).sum();
    assert_eq!(fetched, chunks, "one upstream GET per chunk");
    assert!(
        s3.requests("GET", "dataset", "val/shard-0.tar").is_empty(),
        "outside the prefix"
    );

    s3.clear();
    for (i, body) in shards.iter().enumerate() {
        let out = proxy
            .client()
            .get_object()
            .bucket("dataset")
            .key(format!("train/shard-{i}.tar"))
            .send()
            .await
            .unwrap();
        assert_eq!(&out.body.collect().await.unwrap().into_bytes()[..], &body[..]);
    }
    assert_eq!(s3.request_count(), 0, "every read was a hit");

    let again = run(args(&proxy, "s3://dataset/train/", None)).await.unwrap();
    assert_eq!(again.cached_bytes, again.bytes, "{again}");
    assert!(proxy.metric("shardcache_warmed_bytes_total{source=\"cache\"}").await >= again.bytes as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_reports_missing_keys_and_warms_the_rest() {
    let s3 = S3Server::start().await;
    s3.bucket("dataset");
    s3.put("dataset", "a.tar", data(2 * C, 1)).await;
    let proxy = Proxy::start(s3.addr, ProxyOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("keys.txt");
    std::fs::write(&manifest, "# two keys\na.tar\ns3://dataset/missing.tar\n").unwrap();

    let summary = run(args(&proxy, "s3://dataset", Some(manifest.display().to_string())))
        .await
        .unwrap();
    assert_eq!(summary.objects, 1);
    assert_eq!(summary.bytes, 2 * C as u64);
    assert_eq!(summary.failed.len(), 1);
    assert_eq!(summary.failed[0].0, "s3://dataset/missing.tar");
    assert!(summary.failed[0].1.contains("404"), "{:?}", summary.failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_endpoint_rejects_incomplete_requests() {
    let s3 = S3Server::start().await;
    let proxy = Proxy::start(s3.addr, ProxyOptions::default());
    let admin: shardcache::ops::Endpoint = format!("http://{}", proxy.admin).parse().unwrap();
    let reply = admin.call(http::Method::POST, "/warm?bucket=ds").await.unwrap();
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("bucket and key"), "{}", reply.text());
    let reply = admin.call(http::Method::GET, "/warm?bucket=ds&key=a").await.unwrap();
    assert_eq!(reply.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_on_warming_needs_the_admin_token() {
    let s3 = S3Server::start().await;
    s3.bucket("dataset");
    s3.put("dataset", "a.tar", data(2 * C, 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "s3cr3t-admin-token\n").unwrap();
    let auth = |token: Option<&std::path::Path>| {
        let file = token.map_or(String::new(), |f| format!("  admin_token_file: {}\n", f.display()));
        format!(
            "auth:\n{file}  policy:\n    - {{effect: allow, principals: [anonymous], actions: [ListBucket], resources: ['dataset/*']}}\n"
        )
    };
    let warm = |proxy: &Proxy, token: Option<&str>| {
        let mut a = args(proxy, "s3://dataset/", None);
        if let Some(t) = token {
            a.admin = a.admin.with_bearer(t.to_owned());
        }
        run(a)
    };

    let proxy = Proxy::start(
        s3.addr,
        ProxyOptions {
            extra: auth(Some(&token_file)),
            ..Default::default()
        },
    );
    for (token, why) in [(None, "HTTP 401"), (Some("guess"), "HTTP 403")] {
        let refused = warm(&proxy, token).await.unwrap();
        assert_eq!(refused.failed.len(), 1, "{refused}");
        assert!(refused.failed[0].1.starts_with(why), "{:?}", refused.failed);
    }
    assert_eq!(proxy.metric("shardcache_warmed_bytes_total").await, 0.0);
    let warmed = warm(&proxy, Some("s3cr3t-admin-token")).await.unwrap();
    assert!(warmed.failed.is_empty() && warmed.objects == 1, "{warmed}");
    drop(proxy);

    // Authentication on and no token configured: warming is off.
    let proxy = Proxy::start(
        s3.addr,
        ProxyOptions {
            extra: auth(None),
            ..Default::default()
        },
    );
    let refused = warm(&proxy, Some("s3cr3t-admin-token")).await.unwrap();
    assert!(
        refused.failed[0].1.contains("auth.admin_token_file"),
        "{:?}",
        refused.failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_allowed_shardcache_warm_warms_with_its_own_signature() {
    let s3 = S3Server::start().await;
    s3.bucket("dataset");
    s3.put("dataset", "a.tar", data(2 * C, 2)).await;
    s3.put("dataset", "b.tar", data(C, 3)).await;
    let extra = "auth:\n  keys:\n\
                 \x20   - {access_key_id: AKWARM, secret_access_key: warm-secret, principal: warmer}\n\
                 \x20   - {access_key_id: AKREAD, secret_access_key: read-secret, principal: reader}\n\
                 \x20 policy:\n\
                 \x20   - {effect: allow, principals: ['*'], actions: [ListBucket, GetObject], resources: ['dataset/*']}\n\
                 \x20   - {effect: allow, principals: [warmer], actions: ['shardcache:Warm'], resources: ['dataset/*']}\n\
                 \x20   - {effect: deny, principals: [warmer], actions: ['shardcache:Warm'], resources: ['dataset/b.tar']}\n";
    let proxy = Proxy::start(
        s3.addr,
        ProxyOptions {
            extra: extra.into(),
            ..Default::default()
        },
    );
    let warm = |key: &str, secret: &str| {
        let mut a = args(&proxy, "s3://dataset/", None);
        let credentials = Credentials::new(key, secret, None, None, "test");
        let sign = |e: shardcache::ops::Endpoint| e.with_sigv4(credentials.clone(), "us-east-1".into());
        a.endpoint = sign(a.endpoint);
        a.admin = sign(a.admin);
        run(a)
    };
    let warmed = warm("AKWARM", "warm-secret").await.unwrap();
    assert_eq!(warmed.objects, 1, "{warmed}");
    assert_eq!(warmed.failed.len(), 1, "{warmed}");
    assert!(
        warmed.failed[0]
            .1
            .contains("not allowed shardcache:Warm on dataset/b.tar"),
        "{warmed}"
    );
    let reader = warm("AKREAD", "read-secret").await.unwrap();
    assert_eq!((reader.objects, reader.failed.len()), (0, 2), "{reader}");
    assert!(
        reader.failed.iter().all(|(_, why)| why.starts_with("HTTP 403")),
        "{reader}"
    );
    let forged = warm("AKWARM", "not-the-secret").await;
    assert!(
        forged.is_err_and(|e| e.contains("SignatureDoesNotMatch")),
        "the listing is refused first"
    );
    assert_eq!(proxy.metric("shardcache_warmed_bytes_total").await, (2 * C) as f64);
}
