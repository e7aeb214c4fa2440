//! Read-your-writes through shardcache, and objects that change behind it: the consistency
//! contract of SEMANTICS.md, against a real S3 server with a real S3 client.

mod common;

use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use common::{data, Proxy, ProxyOptions, S3Server};

const C: usize = 64 << 10; // chunk size used by these tests

async fn setup(bucket: &str, disk: bool) -> (S3Server, Proxy, Option<tempfile::TempDir>) {
    let s3 = S3Server::start().await;
    s3.bucket(bucket);
    let dir = disk.then(|| tempfile::tempdir().unwrap());
    let opts = ProxyOptions {
        disk: dir.as_ref().map(|d| d.path().to_path_buf()),
        ..Default::default()
    };
    let proxy = Proxy::start(s3.addr, opts);
    (s3, proxy, dir)
}

/// The object's bytes through the proxy, or `None` if it answers NoSuchKey.
async fn read(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match c.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
        Err(e) => panic!("GET {key}: {e:?}"),
    }
}

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap();
}

/// Cycles per writer; `WRITERS` run at once, each on its own keys.
const CYCLES: usize = 250;
const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_writes_through_the_proxy_never_see_the_old_object() {
    let (_s3, proxy, _disk) = setup("ryw", true).await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let c = proxy.client();
        writers.push(tokio::spawn(async move {
            let mut stale = Vec::new();
            for i in 0..CYCLES {
                // put / get / delete / get
                let key = format!("deleted/{w}");
                let body = format!("{w}-{i}-deleted").into_bytes();
                put(&c, "ryw", &key, body.clone()).await;
                if read(&c, "ryw", &key).await.as_ref() != Some(&body) {
                    stale.push(format!("{key} cycle {i}: not the bytes just written"));
                }
                c.delete_object().bucket("ryw").key(&key).send().await.unwrap();
                if read(&c, "ryw", &key).await.is_some() {
                    stale.push(format!("{key} cycle {i}: served after its delete"));
                }
                // put / get / overwrite / get
                let key = format!("overwritten/{w}");
                put(&c, "ryw", &key, format!("{w}-{i}-first").into_bytes()).await;
                read(&c, "ryw", &key).await;
                let second = format!("{w}-{i}-second").into_bytes();
                put(&c, "ryw", &key, second.clone()).await;
                if read(&c, "ryw", &key).await.as_ref() != Some(&second) {
                    stale.push(format!("{key} cycle {i}: old bytes after an overwrite"));
                }
            }
            stale
        }));
    }
    let mut stale = Vec::new();
    for w in writers {
        stale.extend(w.await.unwrap());
    }
    assert!(
        stale.is_empty(),
        "{} stale reads in {} cycles, first: {:?}",
        stale.len(),
        2 * CYCLES * WRITERS,
        &stale[..stale.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_of_many_keys_are_seen_at_once() {
    let (_s3, proxy, _disk) = setup("batch", true).await;
    let c = proxy.client();
    let keys: Vec<String> = (0..20).map(|i| format!("k &<{i}>")).collect();
    for k in &keys {
        put(&c, "batch", k, k.clone().into_bytes()).await;
        assert_eq!(read(&c, "batch", k).await, Some(k.clone().into_bytes()));
    }
    let ids = keys
        .iter()
        .map(|k| aws_sdk_s3::types::ObjectIdentifier::builder().key(k).build().unwrap())
        .collect();
    let delete = aws_sdk_s3::types::Delete::builder()
        .set_objects(Some(ids))
        .build()
        .unwrap();
    c.delete_objects().bucket("batch").delete(delete).send().await.unwrap();
    for k in &keys {
        assert_eq!(read(&c, "batch", k).await, None, "{k} served after DeleteObjects");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_mid_read_is_read_whole_at_the_next_request() {
    let (s3, proxy, _disk) = setup("replaced", false).await;
    let c = proxy.client();
    let (v1, v2) = (data(3 * C, 1), data(3 * C, 2));
    s3.put("replaced", "k", v1.clone()).await;
    // Caches the metadata and the first chunk only.
    let first = c
        .get_object()
        .bucket("replaced")
        .key("k")
        .range(format!("bytes=0-{}", C - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(first.body.collect().await.unwrap().into_bytes().to_vec(), v1[..C]);

    // Replaced behind shardcache: the next whole read starts with the cached first chunk, then its
    // second chunk's pinned read gets 412 after the header is out, and the connection is cut.
    // (A raw GET: the SDK asks for checksums, and metadata without them would be refreshed first.)
    s3.put("replaced", "k", v2.clone()).await;
    let cut = common::get(proxy.addr, "/replaced/k", &[]).await;
    assert_eq!(cut.status, 200);
    assert_eq!(cut.header("content-length"), Some(v1.len().to_string().as_str()));
    assert!(
        cut.body.len() < v1.len(),
        "a body mixing two versions must not complete"
    );
    assert_eq!(
        cut.body,
        v1[..cut.body.len()],
        "what was sent is the old version's prefix"
    );

    // The change was seen: the very next read gets the new object whole, not the TTL later.
    assert_eq!(read(&c, "replaced", "k").await, Some(v2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_are_returned_to_clients_that_ask_for_them() {
    let (s3, proxy, _disk) = setup("sums", false).await;
    let body = data(2 * C + 5, 7);
    s3.client()
        .put_object()
        .bucket("sums")
        .key("k")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let direct = s3
        .client()
        .head_object()
        .bucket("sums")
        .key("k")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let expected = direct.checksum_crc32().expect("the upstream stores a CRC32").to_owned();

    let c = proxy.client();
    // A ranged read first caches metadata that cannot know the checksums.
    let part = c
        .get_object()
        .bucket("sums")
        .key("k")
        .range("bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(part.checksum_crc32(), None, "ranged answers carry no object checksum");
    for round in ["cold", "cached"] {
        let head = c
            .head_object()
            .bucket("sums")
            .key("k")
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(head.checksum_crc32(), Some(expected.as_str()), "HEAD, {round}");
        let got = c
            .get_object()
            .bucket("sums")
            .key("k")
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(got.checksum_crc32(), Some(expected.as_str()), "GET, {round}");
        // The SDK validates the body against it.
        assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
    }
    let plain = common::get(proxy.addr, "/sums/k", &[]).await;
    assert_eq!(plain.header("x-amz-checksum-crc32"), None, "only sent when asked for");
}
