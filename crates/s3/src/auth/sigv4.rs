//! AWS Signature Version 4 as S3 checks it: the two ways a request carries a signature (the
//! `Authorization` header, or a presigned URL's query), the canonical request, and the signature
//! itself. Pure functions over the request's parts; no I/O, no clock (the caller passes `now`).
//!
//! Reference: <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html>.
//! S3 differs from other services in two ways that matter here: the canonical URI is the path
//! encoded once (no normalisation, no double encoding), and the payload hash comes from the
//! `x-amz-content-sha256` header (`UNSIGNED-PAYLOAD` for presigned URLs).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::timestamp::parse_timestamp;
use super::AuthError;

/// The only algorithm SigV4 names.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash of presigned URLs and of requests whose body is not hashed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The longest a presigned URL may be valid: 7 days.
pub const MAX_EXPIRES: Duration = Duration::from_secs(7 * 24 * 3600);

/// Characters SigV4 leaves unencoded in a query key or value: RFC 3986's unreserved set.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// And in a path: the unreserved set and `/`.
const PATH_SAFE: &AsciiSet = &UNRESERVED.remove(b'/');

/// `<key>/<yyyymmdd>/<region>/<service>/aws4_request`, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credential<'a> {
    /// The access key id.
    pub access_key: &'a str,
    /// `yyyymmdd`.
    pub date: &'a str,
    /// Signing region.
    pub region: &'a str,
    /// Signing service (`s3`).
    pub service: &'a str,
}

/// A request's signature and what it signs, from either carrier, borrowed from the request (or,
/// for a presigned URL's percent-encoded values, from the caller's scratch buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    /// The credential scope.
    pub credential: Credential<'a>,
    /// Lower-case header names separated by `;`, in the order the client listed them.
    signed_headers: &'a str,
    /// The signature: 64 hex digits, either case.
    pub signature: &'a str,
    /// `x-amz-date` (or the presigned `X-Amz-Date`) as sent: `yyyymmddThhmmssZ`.
    pub timestamp: &'a str,
    /// When the request was signed.
    pub signed_at: SystemTime,
    /// The payload hash the signature covers.
    pub payload: &'a str,
    /// For a presigned URL, how long it is valid.
    pub expires: Option<Duration>,
}

impl<'a> SignedRequest<'a> {
    /// The signed header names, in the client's order.
    pub fn signed_headers(&self) -> impl Iterator<Item = &'a str> + Clone {
        self.signed_headers.split(';')
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` with the request's
/// `x-amz-date` and `x-amz-content-sha256` headers.
pub fn parse_header<'a>(authorization: &'a str, headers: &'a HeaderMap) -> Result<SignedRequest<'a>, AuthError> {
    let malformed = |why: &str| AuthError::HeaderMalformed(why.to_owned());
    let rest = authorization
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| malformed("the authorization header must start with AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| malformed("a component has no value"))?;
        let slot = match name.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(malformed("unknown component in the authorization header")),
        };
        if slot.replace(value.trim()).is_some() {
            return Err(malformed("a component appears twice"));
        }
    }
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp = text("x-amz-date").ok_or(AuthError::MissingHeader("x-amz-date"))?;
    let payload = text("x-amz-content-sha256").ok_or(AuthError::MissingHeader("x-amz-content-sha256"))?;
    signed_request(
        credential.ok_or_else(|| malformed("missing Credential"))?,
        signed.ok_or_else(|| malformed("missing SignedHeaders"))?,
        signature.ok_or_else(|| malformed("missing Signature"))?,
        timestamp,
        payload,
        None,
    )
    .map_err(|e| match e {
        AuthError::QueryMalformed(why) => AuthError::HeaderMalformed(why),
        e => e,
    })
}

/// The query parameters of a presigned URL's signature, in the order [`parse_query`] reads them.
pub const PRESIGNED_PARAMS: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
];

/// Parses a presigned URL's `X-Amz-*` query parameters; `None` if the query carries no presigned
/// signature (neither `X-Amz-Algorithm` nor `X-Amz-Signature`). Values with percent-escapes are
/// decoded into `scratch`, which the answer borrows.
pub fn parse_query<'a>(query: &'a str, scratch: &'a mut Vec<u8>) -> Result<Option<SignedRequest<'a>>, AuthError> {
    let malformed = |why: &str| AuthError::QueryMalformed(why.to_owned());
    let (mut raw, mut twice): ([Option<&str>; 6], bool) = Default::default();
    for (k, v) in query_pairs(query) {
        if let Some(i) = PRESIGNED_PARAMS.iter().position(|n| *n == k) {
            twice |= raw[i].replace(v).is_some();
        }
    }
    if raw[0].is_none() && raw[5].is_none() {
        return Ok(None);
    }
    if twice {
        return Err(malformed("a parameter appears twice"));
    }
    // Decode what needs it into `scratch` first, then borrow: the buffer grows only before.
    let mut decoded: [Option<std::ops::Range<usize>>; 6] = Default::default();
    for (slot, value) in decoded.iter_mut().zip(raw) {
        if let Some(v) = value.filter(|v| v.contains('%')) {
            let start = scratch.len();
            scratch.extend(percent_decode_str(v));
            *slot = Some(start..scratch.len());
        }
    }
    let scratch: &'a [u8] = scratch;
    let mut fields: [Option<&'a str>; 6] = raw;
    for (field, range) in fields.iter_mut().zip(decoded) {
        if let Some(r) = range {
            let text = std::str::from_utf8(&scratch[r]);
            *field = Some(text.map_err(|_| malformed("a query parameter is not valid UTF-8"))?);
        }
    }
    let [algorithm, credential, date, expires, signed, signature] = fields;
    let missing = |name: &str| malformed(&format!("missing {name}"));
    if algorithm != Some(ALGORITHM) {
        return Err(malformed("X-Amz-Algorithm must be AWS4-HMAC-SHA256"));
    }
    let expires: u64 = expires
        .ok_or_else(|| missing("X-Amz-Expires"))?
        .parse()
        .map_err(|_| malformed("X-Amz-Expires must be a number of seconds"))?;
    let expires = Duration::from_secs(expires);
    if expires > MAX_EXPIRES {
        return Err(malformed("X-Amz-Expires must be less than a week (604800 seconds)"));
    }
    signed_request(
        credential.ok_or_else(|| missing("X-Amz-Credential"))?,
        signed.ok_or_else(|| missing("X-Amz-SignedHeaders"))?,
        signature.ok_or_else(|| missing("X-Amz-Signature"))?,
        date.ok_or_else(|| missing("X-Amz-Date"))?,
        UNSIGNED_PAYLOAD,
        Some(expires),
    )
    .map(Some)
}

fn signed_request<'a>(
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    timestamp: &'a str,
    payload: &'a str,
    expires: Option<Duration>,
) -> Result<SignedRequest<'a>, AuthError> {
    let malformed = |why: &str| AuthError::QueryMalformed(why.to_owned());
    let credential = parse_credential(credential)?;
    let well_formed = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b"0123456789-_.".contains(&b))
    };
    let names = signed_headers.split(';');
    if names.clone().count() > 64 || !names.clone().all(well_formed) {
        return Err(malformed("SignedHeaders must be at most 64 lower-case header names"));
    }
    if !names.clone().any(|h| h == "host") {
        return Err(malformed("the host header must be signed"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("the signature must be 64 hex digits"));
    }
    let signed_at = parse_timestamp(timestamp).ok_or_else(|| malformed("the date must be yyyymmddThhmmssZ"))?;
    if !timestamp.starts_with(credential.date) {
        return Err(malformed("the credential's date is not the request's date"));
    }
    Ok(SignedRequest {
        credential,
        signed_headers,
        signature,
        timestamp,
        signed_at,
        payload,
        expires,
    })
}

fn parse_credential(text: &str) -> Result<Credential<'_>, AuthError> {
    let malformed = || AuthError::QueryMalformed("the credential must be KEY/yyyymmdd/region/s3/aws4_request".into());
    let mut parts = text.rsplitn(5, '/');
    let (terminator, service, region, date, key) = (
        parts.next().ok_or_else(malformed)?,
        parts.next().ok_or_else(malformed)?,
        parts.next().ok_or_else(malformed)?,
        parts.next().ok_or_else(malformed)?,
        parts.next().ok_or_else(malformed)?,
    );
    let date_ok = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    if terminator != "aws4_request" || key.is_empty() || region.is_empty() || !date_ok {
        return Err(malformed());
    }
    Ok(Credential {
        access_key: key,
        date,
        region,
        service,
    })
}

/// The query's `key=value` pairs, raw (still percent-encoded).
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// A query key or value percent-decoded (borrowed when there is nothing to decode).
fn decode(s: &str) -> Result<Cow<'_, str>, AuthError> {
    percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| AuthError::QueryMalformed("a query parameter is not valid UTF-8".into()))
}

/// The canonical query string: every parameter but the signature, keys and values encoded with
/// SigV4's rules, sorted.
fn canonical_query(query: &str) -> Result<String, AuthError> {
    let mut pairs = Vec::new();
    for (k, v) in query_pairs(query) {
        if k == "X-Amz-Signature" {
            continue;
        }
        pairs.push((canonical_component(k)?, canonical_component(v)?));
    }
    pairs.sort_unstable();
    let mut out = String::with_capacity(query.len() + 16);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Ok(out)
}

/// A query key or value as SigV4 encodes it. SDKs send most already in that form (unreserved
/// characters as is, everything else as `%XX` in upper case): those are borrowed as they are.
fn canonical_component(s: &str) -> Result<Cow<'_, str>, AuthError> {
    let b = s.as_bytes();
    let mut i = 0;
    let canonical = loop {
        match b.get(i) {
            None => break true,
            Some(c) if c.is_ascii_alphanumeric() || b"-._~".contains(c) => i += 1,
            Some(b'%') => {
                let hex = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c));
                let value = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
                let reserved = value.is_some_and(|v| !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)));
                if !(hex(b.get(i + 1)) && hex(b.get(i + 2)) && reserved) {
                    break false;
                }
                i += 3;
            }
            Some(_) => break false,
        }
    };
    if canonical {
        return Ok(s.into());
    }
    Ok(utf8_percent_encode(&decode(s)?, UNRESERVED).to_string().into())
}

/// The value a header contributes to the canonical request: every value of the name, trimmed,
/// inner runs of spaces folded to one, joined with commas.
/// Appends it to `out`; `false` if the request has no such header.
fn push_canonical_header(out: &mut String, headers: &HeaderMap, name: &str) -> bool {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return false;
    }
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let text = String::from_utf8_lossy(v.as_bytes());
        for (j, word) in text.split_whitespace().enumerate() {
            if j > 0 {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    true
}

/// The canonical request for `uri_path` (as it is to be signed: encoded once).
pub fn canonical_request(
    method: &str,
    uri_path: &str,
    query: &str,
    headers: &HeaderMap,
    signed: &SignedRequest<'_>,
) -> Result<String, AuthError> {
    let mut out = String::with_capacity(512);
    for part in [method, "\n", uri_path, "\n", &canonical_query(query)?, "\n"] {
        out.push_str(part);
    }
    for name in signed.signed_headers() {
        out.push_str(name);
        out.push(':');
        if !push_canonical_header(&mut out, headers, name) {
            let why = format!("the signed header `{name}` is not in the request");
            return Err(AuthError::HeaderMalformed(why));
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed.signed_headers);
    out.push('\n');
    out.push_str(signed.payload);
    Ok(out)
}

/// The string to sign for a canonical request.
pub fn string_to_sign(canonical_request: &str, signed: &SignedRequest<'_>) -> String {
    let c = &signed.credential;
    let mut out = String::with_capacity(160);
    for part in [
        ALGORITHM,
        "\n",
        signed.timestamp,
        "\n",
        c.date,
        "/",
        c.region,
        "/",
        c.service,
    ] {
        out.push_str(part);
    }
    out.push_str("/aws4_request\n");
    push_hex(&mut out, &Sha256::digest(canonical_request.as_bytes()));
    out
}

/// HMAC-SHA256 of `msg` under `key` (ring's, as the cluster's peer proofs): a signature is this,
/// under the signing key, of the string to sign.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    hmac_sha256_with(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), msg)
}

/// [`hmac_sha256`] under a key already prepared (its padded blocks hashed once).
pub fn hmac_sha256_with(key: &ring::hmac::Key, msg: &[u8]) -> [u8; 32] {
    let tag = ring::hmac::sign(key, msg);
    let mut mac = [0u8; 32];
    mac.copy_from_slice(tag.as_ref());
    mac
}

/// Appends `bytes` to `out` as lower-case hex.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// Whether `mac` is the signature a client sent as hex (either case), compared in constant time.
pub fn signature_matches(mac: &[u8; 32], signature: &str) -> bool {
    let nibble = |c: u8| (c as char).to_digit(16);
    let mut sent = [0u8; 32];
    let hex = signature.as_bytes();
    if hex.len() != 64 {
        return false;
    }
    for (byte, pair) in sent.iter_mut().zip(hex.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => *byte = ((hi << 4) | lo) as u8,
            _ => return false,
        }
    }
    bool::from(mac.ct_eq(&sent))
}

/// The candidate canonical URIs of a request path as received: re-encoded with SigV4's rules
/// (the form SDKs sign), then the path exactly as sent, for clients that sign what they send.
pub fn canonical_paths(raw_path: &str) -> impl Iterator<Item = Cow<'_, str>> {
    // The common case: nothing to decode and nothing SigV4 would encode.
    let plain = raw_path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
    let encoded = (!plain)
        .then(|| utf8_percent_encode(&percent_decode_str(raw_path).decode_utf8_lossy(), PATH_SAFE).to_string())
        .filter(|e| e != raw_path);
    let as_sent = Some(Cow::Borrowed(raw_path));
    match encoded {
        Some(e) => [Some(Cow::Owned(e)), as_sent],
        None => [as_sent, None],
    }
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's worked examples use this secret, key and date.
    pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn signature(canonical: &str, signed: &SignedRequest<'_>) -> String {
        let key = aws_sigv4::sign::v4::generate_signing_key(SECRET, signed.signed_at, "us-east-1", "s3");
        let ours = hmac_sha256(key.as_ref(), string_to_sign(canonical, signed).as_bytes());
        let theirs = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign(canonical, signed).as_bytes());
        assert!(signature_matches(&ours, &theirs), "our HMAC agrees with aws-sigv4's");
        theirs
    }

    #[test]
    fn aws_example_get_object_with_a_range() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let h = headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", empty),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
                    SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
                    Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
        let signed = parse_header(auth, &h).unwrap();
        assert_eq!(signed.credential.access_key, "AKIAIOSFODNN7EXAMPLE");
        let canonical = canonical_request("GET", "/test.txt", "", &h, &signed).unwrap();
        let sts = string_to_sign(&canonical, &signed);
        assert!(
            sts.ends_with("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"),
            "{sts}"
        );
        assert_eq!(signature(&canonical, &signed), signed.signature);
    }

    #[test]
    fn aws_example_presigned_url() {
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256\
                     &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
                     &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
                     &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let mut scratch = Vec::new();
        let signed = parse_query(query, &mut scratch).unwrap().unwrap();
        assert_eq!(signed.expires, Some(Duration::from_secs(86400)));
        let h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
        let canonical = canonical_request("GET", "/test.txt", query, &h, &signed).unwrap();
        assert_eq!(signature(&canonical, &signed), signed.signature);
    }

    #[test]
    fn malformed_authorization_is_refused_never_a_panic() {
        let h = headers(&[
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ]);
        let sig = "a".repeat(64);
        for bad in [
            "AWS4-HMAC-SHA256".to_owned(),
            "AWS4-HMAC-SHA256X Credential=a/20130524/us-east-1/s3/aws4_request".to_owned(),
            format!("AWS4-HMAC-SHA256 Credential=a/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=a/2013052/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=a/20130524/us-east-1/s3/aws5_request, SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=a/20130525/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=a/20130524/us-east-1/s3/aws4_request, SignedHeaders=range, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=a/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;Range, Signature={sig}"),
            "AWS4-HMAC-SHA256 Credential=a/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=zz".to_owned(),
        ] {
            assert!(matches!(parse_header(&bad, &h), Err(AuthError::HeaderMalformed(_))), "{bad}");
        }
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=a/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}"
        );
        assert!(matches!(
            parse_header(&auth, &HeaderMap::new()),
            Err(AuthError::MissingHeader("x-amz-date"))
        ));
    }

    #[test]
    fn malformed_presigned_queries_are_refused() {
        let good = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
                    &X-Amz-Date=20130524T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=";
        let sig = "b".repeat(64);
        assert!(parse_query(&format!("{good}{sig}"), &mut Vec::new()).unwrap().is_some());
        assert_eq!(parse_query("list-type=2&prefix=a%2F", &mut Vec::new()), Ok(None));
        for bad in [
            format!("{good}{sig}&X-Amz-Date=20130524T000000Z"),
            good.replace("Expires=60", "Expires=604801") + &sig,
            good.replace("Expires=60", "Expires=soon") + &sig,
            good.replace("T000000Z", "T250000Z") + &sig,
            good.replace("&X-Amz-SignedHeaders=host", "") + &sig,
            good.replace("AWS4-HMAC-SHA256&", "AWS4-HMAC-SHA1&") + &sig,
        ] {
            let mut scratch = Vec::new();
            let parsed = parse_query(&bad, &mut scratch);
            assert!(matches!(parsed, Err(AuthError::QueryMalformed(_))), "{bad}");
        }
    }

    #[test]
    fn canonical_queries_sort_and_encode_like_sigv4() {
        let q = "prefix=a%2Fb&list-type=2&x=%7E&empty&z=a+b";
        assert_eq!(
            canonical_query(q).unwrap(),
            "empty=&list-type=2&prefix=a%2Fb&x=~&z=a%2Bb"
        );
        assert_eq!(canonical_query("a=%7e%2f&b=%2F%20x").unwrap(), "a=~%2F&b=%2F%20x");
        assert_eq!(canonical_query("k=%GZ&e=&p=%2").unwrap(), "e=&k=%25GZ&p=%252");
        assert_eq!(canonical_paths("/b/a b").collect::<Vec<_>>(), ["/b/a%20b", "/b/a b"]);
        assert_eq!(canonical_paths("/b/a%20b").collect::<Vec<_>>(), ["/b/a%20b"]);
        assert_eq!(canonical_paths("/b/a-b.c").collect::<Vec<_>>(), ["/b/a-b.c"]);
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(auth in "\\PC{0,200}", query in "\\PC{0,200}") {
            let h = headers(&[("x-amz-date", "20130524T000000Z"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")]);
            let _ = parse_header(&auth, &h);
            let _ = parse_query(&query, &mut Vec::new());
            let _ = canonical_query(&query);
            let _ = parse_timestamp(&auth);
        }
    }
}
