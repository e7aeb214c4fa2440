//! Criterion microbenchmarks of the hot pure code: range -> chunk plan, cache key and value
//! encoding (with the CRC32 of an 8 MiB chunk), SigV4 signing of an upstream request, and
//! SigV4 verification of a client request (what `auth` adds to every request), and the proof of
//! an 8 MiB chunk sent between cluster members (tagged by the owner, checked by the asker).
//!
//! `cargo bench --bench micro` (reports in target/criterion).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use foyer::Code;
use shardcache::auth::{AccessKey, AuthOptions, RequestParts, Verifier};
use shardcache::cache::plan::plan;
use shardcache::cache::{CacheKey, CacheValue};
use shardcache::config::{CredentialsConfig, CredentialsSource};
use shardcache::types::ObjectRef;
use shardcache::upstream::{Signer, UNSIGNED_PAYLOAD};

const CHUNK: u64 = 8 << 20;

fn chunk_plan(c: &mut Criterion) {
    let size = 1u64 << 30;
    c.bench_function("plan/whole 1 GiB object", |b| {
        b.iter(|| plan(black_box(0..size), CHUNK, size).count())
    });
    c.bench_function("plan/1 MiB range across a chunk boundary", |b| {
        b.iter(|| plan(black_box(CHUNK - 4096..CHUNK + (1 << 20) - 4096), CHUNK, size).count())
    });
}

fn key() -> CacheKey {
    let object = ObjectRef {
        upstream: "s3".into(),
        bucket: "datasets".into(),
        key: "imagenet/train/shard-000123.tar".into(),
    };
    CacheKey::Chunk(object, Arc::from("\"9b2cf535f27731c974343645a3985328\""), 17)
}

fn encoding(c: &mut Criterion) {
    let key = key();
    c.bench_function("key/encode", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(128);
            black_box(&key).encode(&mut out).unwrap();
            out
        })
    });
    let mut encoded = Vec::new();
    key.encode(&mut encoded).unwrap();
    c.bench_function("key/decode", |b| {
        b.iter(|| CacheKey::decode(&mut black_box(encoded.as_slice())).unwrap())
    });

    let value = CacheValue::Chunk(Bytes::from(vec![7u8; CHUNK as usize]));
    let mut group = c.benchmark_group("value 8 MiB chunk");
    group.throughput(Throughput::Bytes(CHUNK));
    let mut out = Vec::with_capacity(CHUNK as usize + 64);
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&value).encode(&mut out).unwrap();
        })
    });
    out.clear();
    value.encode(&mut out).unwrap();
    group.bench_function("decode (CRC checked)", |b| {
        b.iter(|| CacheValue::decode(&mut black_box(out.as_slice())).unwrap())
    });
    group.finish();
}

fn signing(c: &mut Criterion) {
    let config = CredentialsConfig {
        source: CredentialsSource::Static,
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
        ..Default::default()
    };
    let signer = Signer::new("us-east-1", &config, &|_| None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let now = SystemTime::now();
    c.bench_function("sigv4/sign a ranged GET", |b| {
        b.iter(|| {
            let mut req =
                pingora_http::RequestHeader::build("GET", b"/datasets/imagenet/train/shard-000123.tar", None).unwrap();
            req.insert_header("host", "s3.us-east-1.amazonaws.com").unwrap();
            req.insert_header("range", "bytes=142606336-150994943").unwrap();
            runtime.block_on(signer.sign(&mut req, UNSIGNED_PAYLOAD, now)).unwrap();
            req
        })
    });
}

fn verification(c: &mut Criterion) {
    let (id, secret) = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    let config = CredentialsConfig {
        source: CredentialsSource::Static,
        access_key_id: Some(id.into()),
        secret_access_key: Some(secret.into()),
        ..Default::default()
    };
    let signer = Signer::new("us-east-1", &config, &|_| None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let now = SystemTime::now();
    let mut req =
        pingora_http::RequestHeader::build("GET", b"/datasets/imagenet/train/shard-000123.tar", None).unwrap();
    req.insert_header("host", "127.0.0.1:8080").unwrap();
    req.insert_header("range", "bytes=142606336-142671871").unwrap();
    runtime.block_on(signer.sign(&mut req, UNSIGNED_PAYLOAD, now)).unwrap();
    let verifier = Verifier::new(AuthOptions {
        region: "us-east-1".into(),
        max_skew: Duration::from_secs(900),
        keys: vec![AccessKey {
            id: id.into(),
            secret: secret.into(),
            principal: "trainer".into(),
        }],
    });
    let parts = RequestParts {
        method: "GET",
        path: req.uri.path(),
        query: "",
        headers: &req.headers,
    };
    assert!(verifier.verify(&parts, now).is_ok());
    c.bench_function("sigv4/verify a client's ranged GET", |b| {
        b.iter(|| verifier.verify(black_box(&parts), now).unwrap())
    });

    // The same GET as a presigned URL (query auth), as the benchmark kit's trust case sends it.
    let mut settings = aws_sigv4::http_request::SigningSettings::default();
    settings.signature_location = aws_sigv4::http_request::SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(3600));
    let identity = aws_credential_types::Credentials::new(id, secret, None, None, "bench").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(now)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let url = "http://127.0.0.1:8080/datasets/imagenet/train/shard-000123.tar";
    let host = [("host", "127.0.0.1:8080")];
    let signable = aws_sigv4::http_request::SignableRequest::new(
        "GET",
        url,
        host.into_iter(),
        aws_sigv4::http_request::SignableBody::UnsignedPayload,
    )
    .unwrap();
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params).unwrap().into_parts();
    let mut presigned = http::Request::builder().uri(url).body(()).unwrap();
    instructions.apply_to_request_http1x(&mut presigned);
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "127.0.0.1:8080".parse().unwrap());
    let parts = RequestParts {
        method: "GET",
        path: presigned.uri().path(),
        query: presigned.uri().query().unwrap(),
        headers: &headers,
    };
    assert!(verifier.verify(&parts, now).is_ok());
    c.bench_function("sigv4/verify a presigned GET", |b| {
        b.iter(|| verifier.verify(black_box(&parts), now).unwrap())
    });
}

fn peer_proof(c: &mut Criterion) {
    use shardcache::cluster::auth::ClusterKey;
    let key = ClusterKey::new(&[7; 32]);
    let chunk = Bytes::from(vec![7u8; CHUNK as usize]);
    let mut framed = Vec::with_capacity(CHUNK as usize + 8192);
    let mut group = c.benchmark_group("peer proof, 8 MiB chunk");
    group.throughput(Throughput::Bytes(CHUNK));
    // The owner's side: pieces of 64 KiB, as a fill hands them out.
    group.bench_function("frame (owner)", |b| {
        b.iter(|| {
            framed.clear();
            let mut framer = key.framer("tag");
            for piece in (0..CHUNK as usize).step_by(64 << 10) {
                for part in framer.push(chunk.slice(piece..piece + (64 << 10))) {
                    framed.extend_from_slice(&part);
                }
            }
            framed.extend_from_slice(&framer.finish().unwrap_or_default());
        })
    });
    // The asker's side: the framed body in pieces of 16 KiB, as a connection reads it.
    group.bench_function("check (asker)", |b| {
        b.iter(|| {
            let mut unframer = key.unframer("tag", CHUNK);
            let mut got = 0;
            for piece in framed.chunks(16 << 10) {
                unframer.push(piece);
                while let Some(n) = unframer.check().unwrap() {
                    got += n;
                }
            }
            assert_eq!(got, CHUNK as usize);
        })
    });
    group.finish();
}

criterion_group!(benches, chunk_plan, encoding, signing, verification, peer_proof);
criterion_main!(benches);
