//! `shardcache probe` against the in-process S3 server (signatures checked) and a shardcache in
//! front of it, with objects of fixed sizes: every request and byte the report says went to the
//! upstream is one the server saw, and the passes through shardcache fetch each byte once.

mod common;

use std::time::Duration;

use aws_credential_types::Credentials;
use common::{Proxy, ProxyOptions, S3Server, ACCESS_KEY, SECRET_KEY};
use shardcache::ops::probe::{self, ProbeArgs, Upstream};

/// Sizes of the objects under `train/`: below, at and across 64 KiB chunks, and an empty one.
const SIZES: [usize; 10] = [0, 1, 1000, 65_535, 65_536, 65_537, 200_000, 300_001, 524_288, 1_000_003];

async fn dataset(s3: &S3Server) -> u64 {
    s3.bucket("data");
    for (i, size) in SIZES.iter().enumerate() {
        s3.put("data", &format!("train/{i:02}.bin"), common::data(*size, i as u8))
            .await;
    }
    s3.put("data", "other/not-listed.bin", common::data(5000, 99)).await;
    SIZES.iter().map(|&s| s as u64).sum()
}

fn args(s3: &S3Server, proxy: &Proxy, max_objects: usize) -> ProbeArgs {
    ProbeArgs {
        target: "s3://data/train/".into(),
        upstream: Upstream {
            endpoint: Some(format!("http://{}", s3.addr).parse().unwrap()),
            region: "us-east-1".into(),
            credentials: Some(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test")),
            unsigned: false,
        },
        endpoint: format!("http://{}", proxy.addr).parse().unwrap(),
        admin: format!("http://{}", proxy.admin).parse().unwrap(),
        max_objects,
        max_bytes: u64::MAX,
        list_max: 1000,
        readers: 3,
        price_per_gb: 0.09,
        seed: 1,
        deadline: Duration::from_secs(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_counts_it_reports_are_what_the_upstream_saw() {
    let s3 = S3Server::start().await;
    let listed = dataset(&s3).await;
    let proxy = Proxy::start(s3.addr, ProxyOptions::default());
    s3.clear();

    // Every object, the empty one among them (a chunk GET of it is answered 416, then a HEAD).
    let all = SIZES.len();
    let report = probe::run(args(&s3, &proxy, all)).await.unwrap();

    assert_eq!((report.listed_objects, report.listed_bytes), (all as u64, listed));
    assert!(!report.listing_truncated);
    assert_eq!((report.sampled_objects, report.sampled_bytes), (all as u64, listed));
    let sampled = report.sampled_bytes;
    let [direct, cold, warm] = &report.passes[..] else {
        panic!("three passes: {:?}", report.passes);
    };
    for pass in &report.passes {
        assert!(pass.errors.is_empty(), "{}: {:?}", pass.name, pass.errors);
        assert_eq!((pass.objects, pass.bytes), (all as u64, sampled), "{}", pass.name);
    }
    assert_eq!(
        (direct.upstream_requests, direct.upstream_bytes),
        (Some(all as u64), Some(sampled))
    );
    assert_eq!(
        cold.upstream_bytes,
        Some(sampled),
        "the cold pass fetches each byte once"
    );
    assert_eq!((warm.upstream_requests, warm.upstream_bytes), (Some(0), Some(0)));

    let reported_bytes: u64 = report.passes.iter().map(|p| p.upstream_bytes.unwrap()).sum();
    assert_eq!(reported_bytes, s3.get_bytes(), "bytes the server sent in GET answers");
    let reported_requests: u64 = report.passes.iter().map(|p| p.upstream_requests.unwrap()).sum();
    assert_eq!(
        reported_requests + report.listing_requests,
        s3.request_count() as u64,
        "requests the server saw: {:#?}",
        s3.seen()
    );

    // All of the prefix fits the cache and the warm pass fetched nothing: all of it is saved.
    let egress = report.egress.as_ref().unwrap();
    assert_eq!((egress.saved_bytes, egress.cached_bytes), (listed, 0));
    assert!((egress.saved_dollars - listed as f64 / 1e9 * 0.09).abs() < 1e-12);

    // A listing cut at 4 objects: the report says so, and samples and projects those 4.
    let cut = probe::run(ProbeArgs {
        list_max: 4,
        ..args(&s3, &proxy, all)
    })
    .await
    .unwrap();
    assert!(cut.listing_truncated);
    assert_eq!((cut.listed_objects, cut.sampled_objects), (4, 4));
    assert!(cut.to_string().contains("at least 4 objects"), "{cut}");
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_json_and_reads_its_keys_from_the_aws_chain() {
    let s3 = S3Server::start().await;
    let listed = dataset(&s3).await;
    let proxy = Proxy::start(s3.addr, ProxyOptions::default());
    let urls = [s3.addr, proxy.addr, proxy.admin].map(|a| format!("http://{a}"));
    let run = move |extra: &[&str], key: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_shardcache"))
            .args([
                "probe",
                "s3://data/train/",
                "--json",
                "--readers",
                "2",
                "--max-objects",
                "4",
            ])
            .args([
                "--upstream-endpoint",
                &urls[0],
                "--endpoint",
                &urls[1],
                "--admin",
                &urls[2],
            ])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(move || {
        let good = run(&["--max-bytes", "1MiB"], ACCESS_KEY);
        let wrong = run(&[], "AKIDNOTKNOWN");
        (good, wrong)
    })
    .await
    .unwrap();
    let (good, wrong) = out;
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let report: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(report["listed_bytes"], listed);
    assert!(report["sampled_bytes"].as_u64().unwrap() <= 1 << 20, "--max-bytes 1MiB");
    let passes = report["passes"].as_array().unwrap();
    let names: Vec<&str> = passes.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["direct", "cold", "warm"]);
    assert_eq!(passes[2]["upstream_bytes"], 0);
    // A key the upstream does not know: the listing is refused, and the command says so.
    assert!(!wrong.status.success());
    let why = String::from_utf8_lossy(&wrong.stderr);
    assert!(why.contains("listing s3://data/train/: HTTP 403"), "{why}");
    proxy.stop();
}
