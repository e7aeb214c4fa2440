//! Criterion microbenchmarks of the hot pure code: range -> chunk plan, cache key and value
//! encoding (with the CRC32 of an 8 MiB chunk), and SigV4 signing of an upstream request.
//!
//! `cargo bench --bench micro` (reports in target/criterion).

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use foyer::Code;
use shardcache::cache::plan::plan;
use shardcache::cache::{CacheKey, CacheValue, ObjectRef};
use shardcache::config::{CredentialsConfig, CredentialsSource};
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

criterion_group!(benches, chunk_plan, encoding, signing);
criterion_main!(benches);
