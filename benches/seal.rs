//! The disk tier's encryption, ring against RustCrypto's `aes-gcm`: AES-256-GCM sealing and
//! opening one 64 KiB segment in place (what the store does per segment), beside the CRC-32
//! that `encryption: none` computes instead.
//!
//! `cargo bench --features compare-aes-gcm --bench seal` (reports in target/criterion). The
//! feature only pulls `aes-gcm` in for this comparison; shardcache itself uses ring.

use std::hint::black_box;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

const SEGMENT: usize = 64 << 10;
const KEY: [u8; 32] = [7; 32];
const AAD: &[u8] = b"chunk key of about a hundred bytes: upstream, bucket, object key, etag and index";

fn nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&3u32.to_le_bytes());
    n
}

fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("64 KiB segment");
    group.throughput(Throughput::Bytes(SEGMENT as u64));
    let mut data = vec![0x5au8; SEGMENT];

    group.bench_function("crc32 (encryption: none)", |b| {
        b.iter(|| crc32fast::hash(black_box(&data)))
    });

    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).unwrap());
    group.bench_function("ring seal", |b| {
        b.iter(|| {
            let nonce = Nonce::assume_unique_for_key(nonce());
            ring_key
                .seal_in_place_separate_tag(nonce, Aad::from(AAD), black_box(&mut data))
                .unwrap()
        })
    });
    let tag = ring_key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce()), Aad::from(AAD), &mut data)
        .unwrap();
    let sealed = data.clone();
    group.bench_function("ring open", |b| {
        b.iter(|| {
            data.copy_from_slice(&sealed);
            let nonce = Nonce::assume_unique_for_key(nonce());
            ring_key
                .open_in_place_separate_tag(nonce, Aad::from(AAD), tag, black_box(&mut data[..]), 0..)
                .unwrap();
        })
    });

    let rc_key = Aes256Gcm::new(&KEY.into());
    let mut data = vec![0x5au8; SEGMENT];
    group.bench_function("aes-gcm seal", |b| {
        b.iter(|| {
            rc_key
                .encrypt_in_place_detached(&nonce().into(), AAD, black_box(&mut data[..]))
                .unwrap()
        })
    });
    let tag = rc_key
        .encrypt_in_place_detached(&nonce().into(), AAD, &mut data[..])
        .unwrap();
    let sealed = data.clone();
    group.bench_function("aes-gcm open", |b| {
        b.iter(|| {
            data.copy_from_slice(&sealed);
            rc_key
                .decrypt_in_place_detached(&nonce().into(), AAD, black_box(&mut data[..]), &tag)
                .unwrap();
        })
    });
    // The copy the two open cases include, alone.
    group.bench_function("copy alone", |b| b.iter(|| data.copy_from_slice(black_box(&sealed))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3));
    targets = seal
}
criterion_main!(benches);
