use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;

/// AWS's published chunk-signed upload example ("Signature Calculations for the Authorization
/// Header: Transferring Payload in Multiple Chunks"): 66,560 bytes of `a` in chunks of 65,536,
/// 1,024 and 0 bytes, signed with the documentation's example key on 2013-05-24.
const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const EXAMPLE_SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const EXAMPLE_CHUNKS: [(usize, &str); 3] = [
    (
        65536,
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    ),
    (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
];

fn example_signing() -> ChunkSigning {
    let day = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 2013-05-24T00:00:00Z
    let key = aws_sigv4::sign::v4::generate_signing_key(EXAMPLE_SECRET, day, "us-east-1", "s3");
    ChunkSigning {
        key: key.as_ref().into(),
        timestamp: "20130524T000000Z".into(),
        scope: "20130524/us-east-1/s3/aws4_request".into(),
        seed: EXAMPLE_SEED.into(),
    }
}

fn example_body() -> Vec<u8> {
    let mut body = Vec::new();
    for (size, signature) in EXAMPLE_CHUNKS {
        body.extend_from_slice(format!("{size:x};chunk-signature={signature}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'a', size));
        body.extend_from_slice(b"\r\n");
    }
    body
}

/// Feeds `body` in pieces of `step` bytes; returns what was written before `finish`, and the
/// result of `finish` with everything written.
fn decode(mut d: Decoder, body: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
    let mut out = BytesMut::new();
    for piece in body.chunks(step.max(1)) {
        d.feed(piece, &mut out)?;
    }
    let before = out.to_vec();
    d.finish(&mut out)?;
    Ok((before, out.to_vec()))
}

/// An independent chunk signer for bodies other than AWS's example (test side only).
fn sign_body(s: &ChunkSigning, chunks: &[&[u8]], trailer: Option<(&str, &str)>) -> Vec<u8> {
    let mut previous = s.seed.clone();
    let mut sign = |kind: &str, hashes: String| {
        let sts = format!("{kind}\n{}\n{}\n{previous}\n{hashes}", s.timestamp, s.scope);
        previous = aws_sigv4::sign::v4::calculate_signature(&*s.key, sts.as_bytes());
        previous.clone()
    };
    let mut body = Vec::new();
    for data in chunks.iter().copied().chain([&b""[..]]) {
        let hashes = format!("{EMPTY_SHA256}\n{}", hex::encode(Sha256::digest(data)));
        let signature = sign("AWS4-HMAC-SHA256-PAYLOAD", hashes);
        body.extend_from_slice(format!("{:x};chunk-signature={signature}\r\n", data.len()).as_bytes());
        body.extend_from_slice(data);
        if !data.is_empty() {
            body.extend_from_slice(b"\r\n");
        }
    }
    if let Some((name, value)) = trailer {
        let signature = sign(
            "AWS4-HMAC-SHA256-TRAILER",
            hex::encode(Sha256::digest(format!("{name}:{value}\n"))),
        );
        body.extend_from_slice(format!("{name}:{value}\r\nx-amz-trailer-signature:{signature}\r\n").as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    body
}

#[test]
fn aws_example_decodes_to_its_payload_in_any_split() {
    let body = example_body();
    assert_eq!(body.len(), 66_824, "the example's Content-Length");
    for step in [1, 7, 86, 4096, body.len()] {
        let d = Decoder::new(Some(example_signing()), 66_560, None).unwrap();
        assert_eq!(d.forwarded_len(), 66_560);
        let (before, after) = decode(d, &body, step).unwrap();
        assert_eq!(after, vec![b'a'; 66_560], "split every {step} bytes");
        assert_eq!(before.len(), 66_559, "the last byte waits for the final chunk");
    }
}

#[test]
fn every_chunk_signature_is_checked() {
    let body = example_body();
    // A changed data byte in each chunk, and a changed signature digit in each header.
    for at in [100, 65_700, 88 + 10] {
        let mut tampered = body.clone();
        tampered[at] ^= 1;
        let d = Decoder::new(Some(example_signing()), 66_560, None).unwrap();
        let err = decode(d, &tampered, 4096).unwrap_err();
        assert!(
            matches!(err, ChunkError::Signature | ChunkError::Malformed(_)),
            "byte {at}: {err:?}"
        );
    }
    let final_sig = body.len() - 10;
    let mut tampered = body.clone();
    tampered[final_sig] = if tampered[final_sig] == b'0' { b'1' } else { b'0' };
    let d = Decoder::new(Some(example_signing()), 66_560, None).unwrap();
    assert_eq!(decode(d, &tampered, 4096).unwrap_err(), ChunkError::Signature);
    // Another seed: the chain does not verify from the first chunk on.
    let mut other = example_signing();
    other.seed = "0".repeat(64);
    let d = Decoder::new(Some(other), 66_560, None).unwrap();
    assert_eq!(decode(d, &body, 4096).unwrap_err(), ChunkError::Signature);
}

#[test]
fn a_body_cut_short_never_completes() {
    let body = example_body();
    for cut in [0, 1, 87, 88, 65_624, 65_626, body.len() - 2, body.len() - 1] {
        let mut d = Decoder::new(Some(example_signing()), 66_560, None).unwrap();
        let mut out = BytesMut::new();
        d.feed(&body[..cut], &mut out).unwrap();
        assert!(out.len() < 66_560, "cut at {cut}: the whole payload was released");
        assert_eq!(d.finish(&mut out).unwrap_err(), ChunkError::Incomplete, "cut at {cut}");
    }
}

#[test]
fn declared_length_must_match_the_chunks() {
    let body = example_body();
    let d = Decoder::new(Some(example_signing()), 66_561, None).unwrap();
    assert_eq!(decode(d, &body, 4096).unwrap_err(), ChunkError::Incomplete);
    let d = Decoder::new(Some(example_signing()), 65_536, None).unwrap();
    assert_eq!(decode(d, &body, 4096).unwrap_err(), ChunkError::TooLong);
}

#[test]
fn bytes_after_the_final_chunk_are_refused() {
    let mut body = example_body();
    body.extend_from_slice(b"x");
    let d = Decoder::new(Some(example_signing()), 66_560, None).unwrap();
    assert!(matches!(decode(d, &body, 4096), Err(ChunkError::Malformed(_))));
}

#[test]
fn trailer_variant_is_forwarded_as_one_unsigned_frame_with_its_trailer() {
    let s = example_signing();
    let trailer = ("x-amz-checksum-crc32c", "sOO8/Q==");
    let body = sign_body(&s, &[&[1u8; 9000], &[2u8; 100]], Some(trailer));
    for step in [1, 13, body.len()] {
        let d = Decoder::new(Some(s.clone()), 9100, Some("x-amz-checksum-crc32c")).unwrap();
        let len = d.forwarded_len();
        let (_, out) = decode(d, &body, step).unwrap();
        let mut want = b"238c\r\n".to_vec();
        want.extend_from_slice(&[1u8; 9000]);
        want.extend_from_slice(&[2u8; 100]);
        want.extend_from_slice(b"\r\n0\r\nx-amz-checksum-crc32c:sOO8/Q==\r\n\r\n");
        assert_eq!(out, want);
        assert_eq!(len, want.len() as u64);
    }
    // minio-go's layout: the trailer ends with a bare LF, then an empty line, then its signature.
    let text = String::from_utf8(body.clone()).unwrap();
    let minio = text.replace("sOO8/Q==\r\nx-amz-trailer", "sOO8/Q==\n\r\nx-amz-trailer");
    assert_ne!(minio, text);
    let d = Decoder::new(Some(s.clone()), 9100, Some("x-amz-checksum-crc32c")).unwrap();
    assert_eq!(
        decode(d, minio.as_bytes(), 77).unwrap().1.len() as u64,
        len_of(&s, 9100)
    );
    // An empty object with a trailer.
    let body = sign_body(&s, &[], Some(trailer));
    let d = Decoder::new(Some(s.clone()), 0, Some("x-amz-checksum-crc32c")).unwrap();
    let len = d.forwarded_len();
    let (_, out) = decode(d, &body, 5).unwrap();
    assert_eq!(out, b"0\r\nx-amz-checksum-crc32c:sOO8/Q==\r\n\r\n");
    assert_eq!(len, out.len() as u64);
}

fn len_of(s: &ChunkSigning, declared: u64) -> u64 {
    Decoder::new(Some(s.clone()), declared, Some("x-amz-checksum-crc32c"))
        .unwrap()
        .forwarded_len()
}

#[test]
fn trailer_must_be_signed_and_be_the_announced_one() {
    let s = example_signing();
    let body = sign_body(&s, &[b"hello"], Some(("x-amz-checksum-crc32c", "sOO8/Q==")));
    let text = String::from_utf8(body.clone()).unwrap();
    let d = || Decoder::new(Some(s.clone()), 5, Some("x-amz-checksum-crc32c")).unwrap();
    // A changed checksum value.
    let tampered = text.replace("sOO8/Q==", "sOO8/Q=A");
    assert_eq!(decode(d(), tampered.as_bytes(), 64).unwrap_err(), ChunkError::Signature);
    // No trailer signature.
    let cut = text.find("x-amz-trailer-signature").unwrap();
    let unsigned = format!("{}\r\n", &text[..cut]);
    assert_eq!(
        decode(d(), unsigned.as_bytes(), 64).unwrap_err(),
        ChunkError::Incomplete
    );
    let unsigned_then_more = format!("{unsigned}x\r\n");
    assert!(matches!(
        decode(d(), unsigned_then_more.as_bytes(), 64),
        Err(ChunkError::Malformed(_))
    ));
    // Another checksum than announced.
    let d = Decoder::new(Some(s.clone()), 5, Some("x-amz-checksum-sha256")).unwrap();
    assert!(matches!(decode(d, &body, 64), Err(ChunkError::Malformed(_))));
    assert!(Decoder::new(None, 5, Some("x-amz-meta-foo")).is_err());
}

#[test]
fn without_authentication_framing_is_stripped_unchecked() {
    let mut other = example_signing();
    other.seed = "0".repeat(64);
    let body = sign_body(&other, &[b"hello ", b"world"], None);
    let (_, out) = decode(Decoder::new(None, 11, None).unwrap(), &body, 3).unwrap();
    assert_eq!(out, b"hello world");
}

#[test]
fn malformed_headers_are_refused() {
    let sig = "a".repeat(64);
    for header in [
        "5\r\n".to_owned(),
        format!("5;chunk-signature={}\r\n", &sig[1..]),
        format!("5;chunk-signature={sig}x\r\n"),
        format!("zz;chunk-signature={sig}\r\n"),
        format!("11111111111111111;chunk-signature={sig}\r\n"),
        format!("1000001;chunk-signature={sig}\r\n"),
        format!(";chunk-signature={sig}\r\n"),
        format!("5;chunk-signature={sig}\n"),
        format!("5;signature={sig}\r\n"),
        "x".repeat(2000),
    ] {
        let mut d = Decoder::new(Some(example_signing()), 5, None).unwrap();
        let err = d.feed(header.as_bytes(), &mut BytesMut::new()).unwrap_err();
        assert!(matches!(err, ChunkError::Malformed(_)), "{header:?}: {err:?}");
    }
}

proptest! {
    /// Arbitrary bytes, or a valid body with arbitrary damage, never panic, and never release
    /// the whole payload unless the body verified.
    #[test]
    fn damaged_bodies_never_release_the_whole_payload(
        at in 0usize..66_824, byte in any::<u8>(), cut in 0usize..66_824, step in 1usize..70_000,
    ) {
        let original = example_body();
        let mut body = original.clone();
        body[at] = byte;
        body.truncate(cut.max(at + 1));
        let d = Decoder::new(Some(example_signing()), 66_560, None).unwrap();
        if let Ok((_, out)) = decode(d, &body, step) {
            // Only the whole body verifies, give or take the case of a signature's hex digit.
            prop_assert_eq!(body.len(), original.len());
            prop_assert_eq!(byte.to_ascii_lowercase(), original[at]);
            prop_assert_eq!(out, vec![b'a'; 66_560]);
        }
    }

    #[test]
    fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..512), step in 1usize..64) {
        let d = Decoder::new(Some(example_signing()), 100, Some("x-amz-checksum-crc32")).unwrap();
        let _ = decode(d, &input, step);
    }
}
