//! GetObject/HeadObject through the cache against a real S3 server, with a real S3 client.

mod common;

use std::time::Duration;

use aws_sdk_s3::operation::get_object::GetObjectOutput;

use common::{data, Proxy, ProxyOptions, S3Server};

const C: usize = 64 << 10; // chunk size used by these tests

async fn setup(bucket: &str, opts: ProxyOptions) -> (S3Server, Proxy) {
    let s3 = S3Server::start().await;
    s3.bucket(bucket);
    let proxy = Proxy::start(s3.addr, opts);
    (s3, proxy)
}

/// GetObject through shardcache, optionally ranged.
async fn get_object(proxy: &Proxy, bucket: &str, key: &str, range: Option<&str>) -> GetObjectOutput {
    proxy
        .client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_range(range.map(str::to_owned))
        .send()
        .await
        .unwrap()
}

async fn get(proxy: &Proxy, bucket: &str, key: &str) -> Vec<u8> {
    let out = get_object(proxy, bucket, key, None).await;
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_are_byte_exact_at_every_size_around_the_chunk_size() {
    let (s3, proxy) = setup("sizes", ProxyOptions::default()).await;
    for (i, size) in [0, 1, C - 1, C, C + 1, 3 * C + 5].into_iter().enumerate() {
        let key = format!("obj-{size}");
        let body = data(size, i as u8);
        s3.put("sizes", &key, body.clone()).await;
        assert_eq!(get(&proxy, "sizes", &key).await, body, "first read of {size} bytes");
        assert_eq!(get(&proxy, "sizes", &key).await, body, "cached read of {size} bytes");
        let head = proxy
            .client()
            .head_object()
            .bucket("sizes")
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(size as i64));
        assert!(head.e_tag().is_some());
    }
    assert!(proxy.metric("shardcache_served_bytes_total{source=\"memory\"}").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_range_form_is_served_and_unsatisfiable_ranges_get_416() {
    let (s3, proxy) = setup("ranges", ProxyOptions::default()).await;
    let size = 2 * C + 100;
    let body = data(size, 7);
    s3.put("ranges", "k", body.clone()).await;
    let cases = [
        ("bytes=0-9", 0..10),
        ("bytes=10-", 10..size),
        ("bytes=-5", size - 5..size),
        (&*format!("bytes={}-{}", C - 1, C), C - 1..C + 1),
        (&*format!("bytes=5-{}", size * 2), 5..size),
        ("bytes=-999999999", 0..size),
    ];
    for (range, want) in cases {
        let out = get_object(&proxy, "ranges", "k", Some(range)).await;
        let expect_header = format!("bytes {}-{}/{size}", want.start, want.end - 1);
        assert_eq!(out.content_range(), Some(expect_header.as_str()), "{range}");
        assert_eq!(
            out.body.collect().await.unwrap().into_bytes().to_vec(),
            body[want].to_vec(),
            "{range}"
        );
    }
    let r = common::get(proxy.addr, "/ranges/k", &[("Range", &format!("bytes={size}-"))]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{size}").as_str()));
    assert!(r.text().contains("<Code>InvalidRange</Code>"));
    // A header S3 cannot use (multiple ranges) is ignored: the whole object comes back.
    let r = common::get(proxy.addr, "/ranges/k", &[("Range", "bytes=0-1,5-6")]).await;
    assert_eq!((r.status, r.body.len()), (200, size));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_headers_answer_304_and_412_as_s3_does() {
    let (s3, proxy) = setup("cond", ProxyOptions::default()).await;
    s3.put("cond", "k", data(100, 1)).await;
    let head = proxy
        .client()
        .head_object()
        .bucket("cond")
        .key("k")
        .send()
        .await
        .unwrap();
    let etag = head.e_tag().unwrap().to_owned();
    let status = |name: &'static str, value: String| async move {
        common::get(proxy.addr, "/cond/k", &[(name, &value)]).await.status
    };
    assert_eq!(status("If-None-Match", etag.clone()).await, 304);
    assert_eq!(status("If-None-Match", "\"other\"".into()).await, 200);
    assert_eq!(status("If-Match", etag.clone()).await, 200);
    let r = common::get(proxy.addr, "/cond/k", &[("If-Match", "\"other\"")]).await;
    assert_eq!(r.status, 412);
    assert!(r.text().contains("PreconditionFailed"));
    assert_eq!(
        status("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT".into()).await,
        304
    );
    assert_eq!(
        status("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 GMT".into()).await,
        412
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_keys_and_buckets_are_s3_errors() {
    let (_s3, proxy) = setup("errs", ProxyOptions::default()).await;
    let err = proxy
        .client()
        .get_object()
        .bucket("errs")
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_no_such_key());
    // The upstream's own error document is passed through.
    let r = common::get(proxy.addr, "/no-such-bucket?list-type=2", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("<Code>NoSuchBucket</Code>"), "{}", r.text());
    let r = common::get(proxy.addr, "/b%ff/k", &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("<Code>InvalidRequest</Code>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_without_a_route_are_no_such_bucket() {
    let s3 = S3Server::start().await;
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ncache:\n  disk: null\n  memory_bytes: 16777216\n\
         upstreams:\n  up:\n    kind: s3\n    endpoint: http://{}\n    credentials:\n      source: anonymous\n\
         buckets:\n  - name: routed\n    upstream: up\n",
        common::free_port(),
        common::free_port(),
        s3.addr
    );
    let proxy = Proxy::start_yaml(&yaml);
    let r = common::get(proxy.addr, "/unrouted/k", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("<Code>NoSuchBucket</Code>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosted_requests_reach_the_same_objects() {
    let (s3, proxy) = setup("vhost", ProxyOptions::default()).await;
    s3.put("vhost", "dir/k", b"virtual".to_vec()).await;
    let r = common::get(proxy.addr, "/dir/k", &[("Host", "vhost.s3.test.local")]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"virtual".as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_lists_and_deletes_pass_through_and_invalidate_metadata() {
    let (_s3, proxy) = setup("rw-bucket", ProxyOptions::default()).await;
    let c = proxy.client();
    c.put_object()
        .bucket("rw-bucket")
        .key("k")
        .body(b"version one".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(get(&proxy, "rw-bucket", "k").await, b"version one");
    c.put_object()
        .bucket("rw-bucket")
        .key("k")
        .body(b"version two!".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        get(&proxy, "rw-bucket", "k").await,
        b"version two!",
        "an overwrite through the proxy is seen at once"
    );

    // Multipart upload, streamed through.
    let part = data(5 << 20, 3);
    let up = c
        .create_multipart_upload()
        .bucket("rw-bucket")
        .key("mp")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    for n in 1..=2 {
        let p = c
            .upload_part()
            .bucket("rw-bucket")
            .key("mp")
            .upload_id(id)
            .part_number(n)
            .body(part.clone().into())
            .send()
            .await
            .unwrap();
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().unwrap())
                .build(),
        );
    }
    let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build();
    c.complete_multipart_upload()
        .bucket("rw-bucket")
        .key("mp")
        .upload_id(id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    assert_eq!(get(&proxy, "rw-bucket", "mp").await, [part.clone(), part].concat());

    let listed = c.list_objects_v2().bucket("rw-bucket").send().await.unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["k", "mp"]);

    c.delete_object().bucket("rw-bucket").key("k").send().await.unwrap();
    let err = c.get_object().bucket("rw-bucket").key("k").send().await.unwrap_err();
    assert!(
        err.into_service_error().is_no_such_key(),
        "a delete through the proxy is seen at once"
    );
    for (op, at_least) in [
        ("PutObject", 2.0),
        ("CreateMultipartUpload", 1.0),
        ("UploadPart", 1.0),
        ("CompleteMultipartUpload", 1.0),
        ("DeleteObject", 1.0),
    ] {
        let prefix = format!("shardcache_requests_total{{operation=\"{op}\",outcome=\"passthrough\"");
        assert!(proxy.metric_at_least(&prefix, at_least).await >= at_least, "{op}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_gets_fetch_each_chunk_once() {
    let (s3, proxy) = setup("herd", ProxyOptions::default()).await;
    let body = data(4 * C, 9);
    s3.put("herd", "shard", body.clone()).await;
    s3.clear();
    let reads = (0..16).map(|_| {
        let c = proxy.client();
        tokio::spawn(async move {
            let out = c.get_object().bucket("herd").key("shard").send().await.unwrap();
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    });
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.unwrap(), body);
    }
    let gets = s3.requests("GET", "herd", "shard");
    assert_eq!(gets.len(), 4, "one upstream GET per chunk, got {gets:?}");
    // The SDK asks for the object's checksums, which a ranged GET cannot carry: one HEAD ran
    // beside the first chunk's GET.
    assert_eq!(
        s3.requests("HEAD", "herd", "shard").len(),
        1,
        "the metadata came with the first chunk, the checksums with one HEAD"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_read_opens_the_object_with_the_chunk_it_starts_in() {
    let (s3, proxy) = setup("open", ProxyOptions::default()).await;
    let size = 3 * C + 5;
    let body = data(size, 4);
    for key in ["mid", "tail", "past"] {
        s3.put("open", key, body.clone()).await;
    }
    s3.clear();

    // One upstream request before the first byte: a GET of chunk 1 that also brings the metadata.
    let range = format!("bytes={}-{}", C + 10, C + 20);
    let out = get_object(&proxy, "open", "mid", Some(&range)).await;
    assert_eq!(
        out.content_range(),
        Some(format!("bytes {}-{}/{size}", C + 10, C + 20).as_str())
    );
    assert_eq!(
        out.body.collect().await.unwrap().into_bytes().to_vec(),
        body[C + 10..C + 21].to_vec()
    );
    let gets = s3.requests("GET", "open", "mid");
    let want = format!("bytes={C}-{}", 2 * C - 1);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].range.as_deref(), Some(want.as_str()));
    assert!(s3.requests("HEAD", "open", "mid").is_empty());
    assert_eq!(
        proxy
            .metric_at_least(
                "shardcache_requests_total{operation=\"GetObject\",outcome=\"miss\",status=\"206\"}",
                1.0
            )
            .await,
        1.0,
        "the request whose lookup fetched the chunk is a miss, not a coalesced read"
    );

    // A suffix range needs the size first: HEAD, then the pinned chunk read.
    let out = get_object(&proxy, "open", "tail", Some("bytes=-5")).await;
    assert_eq!(
        out.body.collect().await.unwrap().into_bytes().to_vec(),
        body[size - 5..].to_vec()
    );
    assert_eq!(s3.requests("HEAD", "open", "tail").len(), 1);
    assert_eq!(s3.requests("GET", "open", "tail").len(), 1);

    // A range past the end of a cold object is still a 416 that names the size.
    let r = common::get(proxy.addr, "/open/past", &[("Range", &format!("bytes={}-", 5 * C))]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{size}").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_fetch_the_next_chunks_ahead() {
    let (s3, proxy) = setup(
        "ahead",
        ProxyOptions {
            read_ahead: 2,
            ..Default::default()
        },
    )
    .await;
    s3.put("ahead", "k", data(8 * C, 2)).await;
    s3.clear();
    let first = get_object(&proxy, "ahead", "k", Some(&format!("bytes=0-{}", C - 1))).await;
    assert_eq!(first.body.collect().await.unwrap().into_bytes().len(), C);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s3.requests("GET", "ahead", "k").len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "read-ahead did not fetch chunks 1 and 2"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.metric("shardcache_readahead_chunks_total").await, 2.0);
    let second = get_object(&proxy, "ahead", "k", Some(&format!("bytes={C}-{}", 2 * C - 1))).await;
    assert_eq!(
        second.body.collect().await.unwrap().into_bytes().to_vec(),
        data(8 * C, 2)[C..2 * C].to_vec()
    );
}

/// A distant upstream answers each GET late: a reader that waits on one chunk at a time gets a
/// small share of what the upstream can give. Read-ahead widens while the reader keeps catching
/// up with chunks still being fetched, and no chunk is fetched twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_widens_for_a_reader_that_waits_on_a_distant_upstream() {
    let (s3, proxy) = setup(
        "wide",
        ProxyOptions {
            read_ahead: 2,
            ..Default::default()
        },
    )
    .await;
    let body = data(64 * C, 9);
    s3.put("wide", "k", body.clone()).await;
    s3.clear();
    s3.delay_gets(Duration::from_millis(40));
    assert_eq!(get(&proxy, "wide", "k").await, body);
    assert_eq!(s3.requests("GET", "wide", "k").len(), 64, "each chunk fetched once");
    assert!(
        s3.peak_gets() >= 12,
        "at most {} chunk fetches at once for one sequential reader",
        s3.peak_gets()
    );
}

/// The chunks a request asks for are wanted: read-ahead fetches them up to its most at once
/// from the first, without waiting for a window to widen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chunks_a_request_asks_for_are_fetched_at_once() {
    let (s3, proxy) = setup(
        "asked",
        ProxyOptions {
            read_ahead: 1,
            cache_extra: "  read_ahead_max_chunks: 8\n".into(),
            ..Default::default()
        },
    )
    .await;
    let body = data(32 * C, 12);
    s3.put("asked", "k", body.clone()).await;
    s3.clear();
    s3.delay_gets(Duration::from_millis(100));
    // From the middle of the object: not a sequential pass, so nothing past its end is read.
    let range = format!("bytes={}-{}", 8 * C, 16 * C - 1);
    let out = get_object(&proxy, "asked", "k", Some(&range)).await;
    assert_eq!(
        out.body.collect().await.unwrap().into_bytes().to_vec(),
        body[8 * C..16 * C].to_vec()
    );
    // Chunk 8 comes with the metadata; then chunks 9 to 15 at once (a window widening from 1
    // had at most 4 at once).
    assert!(s3.peak_gets() >= 7, "{} fetches at once", s3.peak_gets());
}

/// However many readers widen their read-ahead, one upstream has at most
/// `read_ahead_per_upstream` of its fetches at once, besides the chunks readers wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_is_bounded_per_upstream() {
    let (s3, proxy) = setup(
        "bound",
        ProxyOptions {
            read_ahead: 2,
            cache_extra: "  read_ahead_per_upstream: 3\n".into(),
            ..Default::default()
        },
    )
    .await;
    let bodies = [data(32 * C, 10), data(32 * C, 11)];
    for (i, b) in bodies.iter().enumerate() {
        s3.put("bound", &format!("k{i}"), b.clone()).await;
    }
    s3.clear();
    s3.delay_gets(Duration::from_millis(40));
    let (a, b) = tokio::join!(get(&proxy, "bound", "k0"), get(&proxy, "bound", "k1"));
    assert!(a == bodies[0] && b == bodies[1]);
    for key in ["k0", "k1"] {
        assert_eq!(
            s3.requests("GET", "bound", key).len(),
            32,
            "each chunk of {key} fetched once"
        );
    }
    // Three read ahead, and each reader's own chunk.
    assert!(s3.peak_gets() <= 5, "{} fetches at once", s3.peak_gets());
}

/// shardcache over a disk tier in `disk` (chunks of `chunk_size`), read `bucket`/k (`body`)
/// through once, then restarted: the new process holds the object on disk only, and the
/// upstream's request log is cleared.
async fn restarted_over_disk(disk: &std::path::Path, chunk_size: u64, bucket: &str, body: &[u8]) -> (S3Server, Proxy) {
    let s3 = S3Server::start().await;
    s3.bucket(bucket);
    s3.put(bucket, "k", body.to_vec()).await;
    let opts = || ProxyOptions {
        disk: Some(disk.to_path_buf()),
        chunk_size,
        ..Default::default()
    };
    let proxy = Proxy::start(s3.addr, opts());
    assert_eq!(get(&proxy, bucket, "k").await, body);
    tokio::task::spawn_blocking(move || proxy.stop()).await.unwrap();
    s3.clear();
    let proxy = Proxy::start(s3.addr, opts());
    (s3, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_after_a_restart_come_from_disk_without_upstream_gets() {
    let disk = tempfile::tempdir().unwrap();
    let body = data(3 * C + 17, 4);
    let (s3, proxy) = restarted_over_disk(disk.path(), C as u64, "persist", &body).await;
    assert_eq!(get(&proxy, "persist", "k").await, body);
    assert_eq!(
        s3.requests("GET", "persist", "k").len(),
        0,
        "no upstream GETs after a restart"
    );
    assert!(proxy.metric("shardcache_served_bytes_total{source=\"disk\"}").await >= body.len() as f64);
    // Whole chunks streamed from disk were put back in the memory tier on the way.
    assert_eq!(get(&proxy, "persist", "k").await, body);
    let outcome = |o: &str| format!("shardcache_requests_total{{operation=\"GetObject\",outcome=\"{o}\"");
    assert_eq!(proxy.metric(&outcome("disk_hit")).await, 1.0);
    assert_eq!(
        proxy.metric(&outcome("memory_hit")).await,
        1.0,
        "the second read was not a memory hit"
    );
    assert!(proxy.metric("shardcache_served_bytes_total{source=\"memory\"}").await >= body.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_a_new_client_reads_from_disk_go_back_in_the_memory_tier() {
    // 1 MiB chunks: a client that has not yet taken 8 MiB reads each of them a piece at a time
    // (copies: `cache::read::body::copies`), each piece a disk read of its own. The chunks
    // must still go back in the memory tier, or a dataset that was pushed out of memory once is
    // read from disk for good.
    const CHUNK: usize = 1 << 20;
    let disk = tempfile::tempdir().unwrap();
    let body = data(3 * CHUNK + 17, 9);
    let (s3, proxy) = restarted_over_disk(disk.path(), CHUNK as u64, "back", &body).await;
    assert_eq!(get(&proxy, "back", "k").await, body);
    let memory = proxy
        .metric_at_least("shardcache_cache_usage_bytes{tier=\"memory\"}", body.len() as f64)
        .await;
    assert!(memory >= body.len() as f64, "{memory} bytes in the memory tier");
    assert_eq!(get(&proxy, "back", "k").await, body);
    let outcome = |o: &str| format!("shardcache_requests_total{{operation=\"GetObject\",outcome=\"{o}\"");
    assert_eq!(proxy.metric(&outcome("disk_hit")).await, 1.0);
    assert_eq!(proxy.metric(&outcome("memory_hit")).await, 1.0);
    assert_eq!(
        s3.requests("GET", "back", "k").len(),
        0,
        "no upstream GETs after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_waiting_for_its_disk_write_is_already_a_memory_hit() {
    // A block is flushed to disk only when it fills up, so a small object's chunks wait in
    // foyer's buffer; a second read meanwhile must be a memory hit, not a reader of a fill
    // that has long finished.
    let disk = tempfile::tempdir().unwrap();
    let (s3, proxy) = setup(
        "pending",
        ProxyOptions {
            disk: Some(disk.path().to_path_buf()),
            chunk_size: 4 << 20,
            ..Default::default()
        },
    )
    .await;
    let body = data(2 * (4 << 20), 6);
    s3.put("pending", "k", body.clone()).await;
    assert_eq!(get(&proxy, "pending", "k").await, body);
    assert_eq!(get(&proxy, "pending", "k").await, body);
    let outcome = |o: &'static str| {
        let proxy = &proxy;
        async move {
            proxy
                .metric(&format!(
                    "shardcache_requests_total{{operation=\"GetObject\",outcome=\"{o}\""
                ))
                .await
        }
    };
    assert_eq!(outcome("miss").await, 1.0);
    assert_eq!(
        outcome("memory_hit").await,
        1.0,
        "coalesced: {}, disk: {}",
        outcome("coalesced").await,
        outcome("disk_hit").await
    );
    assert_eq!(
        s3.requests("GET", "pending", "k").len(),
        2,
        "one upstream GET per chunk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_of_a_large_object_survives_a_restart() {
    // A fast origin (a local directory) and 8 MiB chunks filled 5 at a time (read-ahead): several
    // chunks complete while others are being written to disk.
    let root = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("large")).unwrap();
    let body = data(12 * (8 << 20) + 1, 6);
    std::fs::write(root.path().join("large/k"), &body).unwrap();
    let yaml = || {
        format!(
            "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\n\
             cache:\n  memory_bytes: 33554432\n  read_ahead_chunks: 4\n  disk:\n    path: {d}\n    capacity_bytes: 1073741824\n    key_file: {d}/disk.key\n\
             upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
            common::free_port(),
            common::free_port(),
            root.path().display(),
            d = disk.path().display(),
        )
    };
    let upstream_gets = "shardcache_upstream_requests_total{call=\"GetObject\",upstream=\"local\"}";

    let proxy = Proxy::start_yaml(&yaml());
    assert_eq!(get(&proxy, "large", "k").await, body);
    let dropped = proxy.metric("shardcache_disk_write_drops_total").await;
    assert_eq!(dropped, 0.0, "disk writes were dropped");
    tokio::task::spawn_blocking(move || proxy.stop()).await.unwrap();

    let proxy = Proxy::start_yaml(&yaml());
    assert_eq!(get(&proxy, "large", "k").await, body);
    eprintln!(
        "disk bytes served {}",
        proxy.metric("shardcache_served_bytes_total{source=\"disk\"}").await
    );
    assert_eq!(
        proxy.metric(upstream_gets).await,
        0.0,
        "chunks refetched after a restart"
    );
    let disk_usage = proxy.metric("shardcache_cache_usage_bytes{tier=\"disk\"}").await;
    assert!(
        disk_usage >= body.len() as f64,
        "disk usage {disk_usage} is below what it holds"
    );
    tokio::task::spawn_blocking(move || proxy.stop()).await.unwrap();

    // With memory empty, 1 MiB from the middle of a chunk reads about 1 MiB from disk, not the
    // whole 8 MiB chunk.
    let proxy = Proxy::start_yaml(&yaml());
    let start = 3 * (8 << 20) + (3 << 20) + 12_345;
    let range = format!("bytes={start}-{}", start + (1 << 20) - 1);
    let part = get_object(&proxy, "large", "k", Some(&range)).await;
    let part = part.body.collect().await.unwrap().into_bytes();
    assert!(
        part[..] == body[start..start + (1 << 20)],
        "the range read from disk differs"
    );
    let read = proxy.metric("shardcache_disk_io_bytes_total{op=\"read\"}").await;
    assert!(
        read > 0.0 && read < (2 << 20) as f64,
        "{read} bytes read from disk for a 1 MiB range"
    );
    assert_eq!(proxy.metric(upstream_gets).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_changed_behind_the_cache_is_served_whole_from_its_new_version() {
    let (s3, proxy) = setup("changed", ProxyOptions::default()).await;
    let (v1, v2) = (data(3 * C, 1), data(3 * C, 2));
    s3.put("changed", "k", v1.clone()).await;
    let first = get_object(&proxy, "changed", "k", Some(&format!("bytes=0-{}", C - 1))).await;
    assert_eq!(
        first.body.collect().await.unwrap().into_bytes().to_vec(),
        v1[..C].to_vec()
    );

    // Overwritten at the upstream, not through shardcache: its metadata (TTL 60 s) is now stale.
    s3.put("changed", "k", v2.clone()).await;
    let range = format!("bytes={C}-{}", 2 * C - 1);
    let second = get_object(&proxy, "changed", "k", Some(&range)).await;
    assert_eq!(
        second.e_tag(),
        s3.client()
            .head_object()
            .bucket("changed")
            .key("k")
            .send()
            .await
            .unwrap()
            .e_tag()
    );
    assert_eq!(
        second.body.collect().await.unwrap().into_bytes().to_vec(),
        v2[C..2 * C].to_vec()
    );
    assert_eq!(
        get(&proxy, "changed", "k").await,
        v2,
        "no chunk of the old version is mixed in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled_and_reused() {
    let (s3, proxy) = setup("pool", ProxyOptions::default()).await;
    for key in ["a", "b"] {
        s3.put("pool", key, data(4 * C, 3)).await;
    }
    s3.clear();
    for key in ["a", "b", "a"] {
        assert_eq!(get(&proxy, "pool", key).await, data(4 * C, 3));
    }
    // 8 chunk reads (the first of each object brings its metadata) one after another, and a HEAD
    // beside each object's first GET for the checksums the SDK asks for. Without reuse that is
    // 10 connections. With it, a few: a client can get its last byte just before the finished
    // upstream connection is back in the pool, and the next request then opens another.
    assert_eq!(s3.request_count(), 10);
    let connections = s3.connection_count();
    assert!(connections < 6, "{connections} connections for 10 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_can_keep_off_the_disk_or_out_of_the_cache() {
    let s3 = S3Server::start().await;
    for bucket in ["normal", "private", "live"] {
        s3.bucket(bucket);
        s3.put(bucket, "k", data(3 * C, 4)).await;
    }
    let disk = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        s3.addr,
        ProxyOptions {
            disk: Some(disk.path().to_path_buf()),
            extra: "buckets:\n  - {name: private, upstream: up, cache: memory}\n  - {name: live, upstream: up, cache: none}\n"
                .into(),
            ..ProxyOptions::default()
        },
    );
    let written = || proxy.metric("shardcache_disk_io_bytes_total{op=\"write\"}");

    // Memory only: cached (the second read is a hit), and nothing written to disk.
    for _ in 0..2 {
        assert!(get(&proxy, "private", "k").await == data(3 * C, 4));
    }
    assert_eq!(
        s3.requests("GET", "private", "k").len(),
        3,
        "one upstream GET per chunk"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(written().await, 0.0, "a memory-only bucket reached the disk");

    // Not cached: every read goes to the upstream, passed through.
    for _ in 0..2 {
        assert!(get(&proxy, "live", "k").await == data(3 * C, 4));
    }
    assert_eq!(s3.requests("GET", "live", "k").len(), 2);
    let passed = proxy
        .metric_at_least(
            "shardcache_requests_total{operation=\"GetObject\",outcome=\"passthrough\"",
            2.0,
        )
        .await;
    assert_eq!(passed, 2.0, "uncached reads are counted as passed through");

    // The control: an ordinary bucket is written to disk.
    assert!(get(&proxy, "normal", "k").await == data(3 * C, 4));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while written().await == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "an ordinary bucket was not written to disk"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
