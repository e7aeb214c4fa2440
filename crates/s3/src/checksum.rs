//! A whole body checked against the integrity headers it came with: `Content-MD5` and the
//! `x-amz-checksum-*` family (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256), each the base64 of the
//! digest, as S3 checks them. Used for the bodies shardcache reads whole and forwards re-encoded
//! (DeleteObjects), where the upstream can no longer check what the client sent.

use base64::Engine as _;
use crc_fast::CrcAlgorithm;
use http::HeaderMap;
use md5::Digest as _;

use crate::S3Error;

/// The headers S3 takes as a body's integrity check, with the name its error gives each.
const HEADERS: [(&str, &str); 6] = [
    ("content-md5", "Content-MD5"),
    ("x-amz-checksum-crc32", "CRC32"),
    ("x-amz-checksum-crc32c", "CRC32C"),
    ("x-amz-checksum-crc64nvme", "CRC64NVME"),
    ("x-amz-checksum-sha1", "SHA1"),
    ("x-amz-checksum-sha256", "SHA256"),
];

/// Checks every integrity header present against `body`; with `required`, at least one must be
/// (S3 requires one on DeleteObjects). A mismatch is 400 BadDigest.
pub fn check(headers: &HeaderMap, body: &[u8], required: bool) -> Result<(), S3Error> {
    let mut seen = false;
    for (header, name) in HEADERS {
        let Some(value) = headers.get(header) else { continue };
        seen = true;
        let given = base64::engine::general_purpose::STANDARD
            .decode(value.as_bytes())
            .map_err(|_| S3Error::InvalidArgument(format!("{header} is not base64")))?;
        if given != digest(header, body) {
            return Err(S3Error::BadDigest(name));
        }
    }
    match (seen, required) {
        (false, true) => Err(S3Error::InvalidRequest(
            "Missing required header for this request: Content-MD5 (or an x-amz-checksum-* header)".into(),
        )),
        _ => Ok(()),
    }
}

/// `Content-MD5` for `body`.
pub fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

fn digest(header: &str, body: &[u8]) -> Vec<u8> {
    let crc = |algorithm, bytes: usize| {
        let sum = crc_fast::checksum(algorithm, body).to_be_bytes();
        sum[8 - bytes..].to_vec()
    };
    match header {
        "content-md5" => md5::Md5::digest(body).to_vec(),
        "x-amz-checksum-crc32" => crc(CrcAlgorithm::Crc32IsoHdlc, 4),
        "x-amz-checksum-crc32c" => crc(CrcAlgorithm::Crc32Iscsi, 4),
        "x-amz-checksum-crc64nvme" => crc(CrcAlgorithm::Crc64Nvme, 8),
        "x-amz-checksum-sha1" => sha1::Sha1::digest(body).to_vec(),
        _ => sha2::Sha256::digest(body).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_headers as headers;

    /// Each algorithm's standard check value, over `123456789` (CRC-64/NVME's from its
    /// catalogue entry; the digests from Python's hashlib).
    #[test]
    fn each_header_is_checked_against_the_body() {
        for (header, value) in [
            ("content-md5", "JfnnlDI7RTiF9RgfG2JNCw=="),
            ("x-amz-checksum-crc32", "y/Q5Jg=="),
            ("x-amz-checksum-crc32c", "4waSgw=="),
            ("x-amz-checksum-crc64nvme", "rosUhgp5mIg="),
            ("x-amz-checksum-sha1", "98O8HYCOBHMq32eZZczDTKeuNEE="),
            ("x-amz-checksum-sha256", "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU="),
        ] {
            assert!(
                check(&headers(&[(header, value)]), b"123456789", true).is_ok(),
                "{header}"
            );
            let altered = check(&headers(&[(header, value)]), b"123456780", true);
            assert!(matches!(altered, Err(S3Error::BadDigest(_))), "{header}");
        }
        assert_eq!(content_md5(b"123456789"), "JfnnlDI7RTiF9RgfG2JNCw==");
    }

    #[test]
    fn one_header_is_required_where_s3_requires_it() {
        assert!(matches!(
            check(&HeaderMap::new(), b"x", true),
            Err(S3Error::InvalidRequest(_))
        ));
        assert!(check(&HeaderMap::new(), b"x", false).is_ok());
        let bad = headers(&[("content-md5", "not base64!")]);
        assert!(matches!(check(&bad, b"x", true), Err(S3Error::InvalidArgument(_))));
    }
}
