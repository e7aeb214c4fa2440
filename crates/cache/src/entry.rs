//! Cache keys and values, and their on-disk encoding.
//!
//! Every value on disk is framed by a versioned header so that a later format (encryption nonce
//! and tag, a different checksum) can be told apart, and a corrupt or foreign block is detected
//! rather than served:
//!
//! ```text
//! offset  size  field
//! 0       2     magic "SC"
//! 2       1     format version (2; chunks of version 1 are still read)
//! 3       1     kind: 1 = object metadata, 2 = chunk bytes
//! 4       4     payload length, u32 LE
//! 8       4     CRC-32 (IEEE) of the payload, u32 LE
//! 12      n     payload
//! ```
//!
//! Keys are encoded as a kind byte followed by length-prefixed UTF-8 fields (u16 LE lengths) and,
//! for chunks, the chunk index (u64 LE).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use foyer::{Code, Error as FoyerError, ErrorKind};
use http::HeaderValue;

use shardcache_store::buf::ChunkBuf;
use shardcache_types::{ETag, ObjectMeta, ObjectRef};

const MAGIC: &[u8; 2] = b"SC";
const FORMAT_VERSION: u8 = 2;
/// Version 1 differs only in its metadata payload, which is not read (a miss).
const CHUNK_FORMATS: [u8; 2] = [1, 2];
pub(super) const KIND_META: u8 = 1;
pub(super) const KIND_CHUNK: u8 = 2;
const HEADER_LEN: usize = 12;

/// A cache key: an object's metadata, or one chunk of one version (ETag) of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// Metadata of the current version of an object.
    Meta(ObjectRef),
    /// Chunk `index` of version `etag`.
    Chunk(ObjectRef, Arc<str>, u64),
}

/// Metadata with the time it was fetched, to apply the TTL, and the stamp its lookup took, to
/// tell it from metadata a write through shardcache made stale (see [`super::generation`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaEntry {
    /// The object's metadata.
    pub meta: ObjectMeta,
    /// When the upstream returned it.
    pub fetched_at: SystemTime,
    /// Taken before the lookup asked the upstream.
    pub stamp: u64,
}

/// A cache value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheValue {
    /// Object metadata.
    Meta(Arc<MetaEntry>),
    /// The bytes of one chunk.
    Chunk(Bytes),
}

impl CacheValue {
    /// Bytes this value holds in the memory tier (approximate for metadata).
    pub fn weight(&self) -> usize {
        match self {
            Self::Meta(m) => {
                let pairs = m.meta.headers.iter().chain(m.meta.checksums.iter().flatten());
                256 + pairs.map(|(k, v)| k.len() + v.len()).sum::<usize>()
            }
            Self::Chunk(b) => b.len(),
        }
    }
}

fn parse_err(what: &'static str) -> FoyerError {
    FoyerError::new(ErrorKind::Parse, what)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&b[..usize::from(len)]);
}

/// Header pairs: a u16 count, then each name and value (values as raw bytes: S3 passes user
/// metadata through byte for byte, UTF-8 or not).
fn put_headers(out: &mut Vec<u8>, headers: &[(String, HeaderValue)]) {
    let n = u16::try_from(headers.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    for (k, v) in headers.iter().take(usize::from(n)) {
        put_str(out, k);
        put_bytes(out, v.as_bytes());
    }
}

fn get_headers(buf: &mut &[u8]) -> Result<Vec<(String, HeaderValue)>, FoyerError> {
    let n = get_u16(buf)?;
    (0..n)
        .map(|_| {
            let name = get_str(buf)?;
            let len = usize::from(get_u16(buf)?);
            let value = HeaderValue::from_bytes(take(buf, len)?).map_err(|_| parse_err("bad header value"))?;
            Ok((name, value))
        })
        .collect()
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], FoyerError> {
    if buf.len() < n {
        return Err(parse_err("cache entry is shorter than its fields"));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn get_u16(buf: &mut &[u8]) -> Result<u16, FoyerError> {
    Ok(u16::from_le_bytes(
        take(buf, 2)?.try_into().map_err(|_| parse_err("u16"))?,
    ))
}

fn get_u64(buf: &mut &[u8]) -> Result<u64, FoyerError> {
    Ok(u64::from_le_bytes(
        take(buf, 8)?.try_into().map_err(|_| parse_err("u64"))?,
    ))
}

fn get_str(buf: &mut &[u8]) -> Result<String, FoyerError> {
    let len = usize::from(get_u16(buf)?);
    String::from_utf8(take(buf, len)?.to_vec()).map_err(|_| parse_err("cache entry field is not UTF-8"))
}

fn get_opt_str(buf: &mut &[u8]) -> Result<Option<String>, FoyerError> {
    match take(buf, 1)?[0] {
        0 => Ok(None),
        _ => get_str(buf).map(Some),
    }
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    out.push(u8::from(s.is_some()));
    if let Some(s) = s {
        put_str(out, s);
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn put_object(out: &mut Vec<u8>, o: &ObjectRef) {
    put_str(out, &o.upstream);
    put_str(out, &o.bucket);
    put_str(out, &o.key);
}

fn get_object(buf: &mut &[u8]) -> Result<ObjectRef, FoyerError> {
    Ok(ObjectRef {
        upstream: get_str(buf)?.into(),
        bucket: get_str(buf)?.into(),
        key: get_str(buf)?.into(),
    })
}

impl CacheKey {
    /// The key's encoding (without the length prefix [`Code`] adds).
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Self::Meta(o) => {
                out.push(KIND_META);
                put_object(&mut out, o);
            }
            Self::Chunk(o, etag, index) => {
                out.push(KIND_CHUNK);
                put_object(&mut out, o);
                put_str(&mut out, etag);
                out.extend_from_slice(&index.to_le_bytes());
            }
        }
        out
    }

    /// The key from [`Self::to_bytes`]'s encoding.
    pub(super) fn from_bytes(mut buf: &[u8]) -> Result<Self, FoyerError> {
        let buf = &mut buf;
        let key = match take(buf, 1)?[0] {
            KIND_META => Self::Meta(get_object(buf)?),
            KIND_CHUNK => {
                let o = get_object(buf)?;
                let etag = get_str(buf)?;
                Self::Chunk(o, etag.into(), get_u64(buf)?)
            }
            _ => return Err(parse_err("unknown cache key kind")),
        };
        Ok(key)
    }
}

impl Code for CacheKey {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        let bytes = self.to_bytes();
        writer
            .write_all(&(bytes.len() as u32).to_le_bytes())
            .map_err(FoyerError::io_error)?;
        writer.write_all(&bytes).map_err(FoyerError::io_error)
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).map_err(FoyerError::io_error)?;
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        reader.read_exact(&mut bytes).map_err(FoyerError::io_error)?;
        Self::from_bytes(&bytes)
    }

    fn estimated_size(&self) -> usize {
        4 + self.to_bytes().len()
    }
}

/// A metadata entry's encoding.
pub(super) fn meta_payload(m: &MetaEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&m.meta.size.to_le_bytes());
    put_str(&mut out, m.meta.etag.as_str());
    out.extend_from_slice(&unix_secs(m.meta.last_modified).to_le_bytes());
    put_opt_str(&mut out, m.meta.content_type.as_deref());
    put_opt_str(&mut out, m.meta.version_id.as_deref());
    put_headers(&mut out, &m.meta.headers);
    out.push(u8::from(m.meta.checksums.is_some()));
    if let Some(checksums) = &m.meta.checksums {
        put_headers(&mut out, checksums);
    }
    out.extend_from_slice(&unix_secs(m.fetched_at).to_le_bytes());
    out.extend_from_slice(&m.stamp.to_le_bytes());
    out
}

/// The metadata entry from [`meta_payload`]'s encoding.
pub(super) fn meta_from_payload(mut buf: &[u8]) -> Result<MetaEntry, FoyerError> {
    let buf = &mut buf;
    let size = get_u64(buf)?;
    let etag = ETag::parse(&get_str(buf)?).ok_or_else(|| parse_err("bad etag"))?;
    let last_modified = SystemTime::UNIX_EPOCH + Duration::from_secs(get_u64(buf)?);
    let content_type = get_opt_str(buf)?;
    let version_id = get_opt_str(buf)?;
    let headers = get_headers(buf)?;
    let checksums = match take(buf, 1)?[0] {
        0 => None,
        _ => Some(get_headers(buf)?),
    };
    let fetched_at = SystemTime::UNIX_EPOCH + Duration::from_secs(get_u64(buf)?);
    let stamp = get_u64(buf)?;
    let meta = ObjectMeta {
        size,
        etag,
        last_modified,
        content_type,
        version_id,
        headers,
        checksums,
    };
    Ok(MetaEntry {
        meta,
        fetched_at,
        stamp,
    })
}

impl Code for CacheValue {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        let meta_buf;
        let (kind, payload): (u8, &[u8]) = match self {
            Self::Meta(m) => {
                meta_buf = meta_payload(m);
                (KIND_META, &meta_buf)
            }
            Self::Chunk(b) => (KIND_CHUNK, b),
        };
        let mut header = [0u8; HEADER_LEN];
        header[..2].copy_from_slice(MAGIC);
        header[2] = FORMAT_VERSION;
        header[3] = kind;
        header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[8..12].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        writer.write_all(&header).map_err(FoyerError::io_error)?;
        writer.write_all(payload).map_err(FoyerError::io_error)
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        reader.read_exact(&mut header).map_err(FoyerError::io_error)?;
        let known = match header[3] {
            KIND_META => header[2] == FORMAT_VERSION,
            _ => CHUNK_FORMATS.contains(&header[2]),
        };
        if &header[..2] != MAGIC || !known {
            return Err(parse_err("cache entry has an unknown magic or format version"));
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let checked = |payload: &[u8]| match crc32fast::hash(payload) == crc {
            true => Ok(()),
            false => Err(parse_err("cache entry checksum mismatch")),
        };
        match header[3] {
            KIND_META => {
                let mut payload = vec![0u8; len];
                reader.read_exact(&mut payload).map_err(FoyerError::io_error)?;
                checked(&payload)?;
                Ok(Self::Meta(Arc::new(meta_from_payload(&payload)?)))
            }
            KIND_CHUNK => {
                // Read straight into a chunk buffer, as a fill would write it.
                let (buf, mut writer) = ChunkBuf::with_capacity(len);
                reader.read_exact(writer.spare()).map_err(FoyerError::io_error)?;
                writer.commit(len);
                let payload = buf.bytes(0..len);
                checked(&payload)?;
                Ok(Self::Chunk(payload))
            }
            _ => Err(parse_err("unknown cache value kind")),
        }
    }

    fn estimated_size(&self) -> usize {
        HEADER_LEN
            + match self {
                Self::Meta(m) => meta_payload(m).len(),
                Self::Chunk(b) => b.len(),
            }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trip<T: Code>(v: &T) -> foyer::Result<T> {
        let mut buf = Vec::new();
        v.encode(&mut buf)?;
        assert_eq!(buf.len(), v.estimated_size());
        T::decode(&mut buf.as_slice())
    }

    fn object(key: &str) -> ObjectRef {
        ObjectRef {
            upstream: "up".into(),
            bucket: "b".into(),
            key: key.into(),
        }
    }

    proptest! {
        #[test]
        fn chunk_values_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let v = CacheValue::Chunk(Bytes::from(data));
            prop_assert_eq!(round_trip(&v).unwrap(), v);
        }

        #[test]
        fn keys_round_trip(key in "\\PC{1,64}", etag in "[a-f0-9]{1,32}", index in any::<u64>()) {
            for k in [CacheKey::Meta(object(&key)), CacheKey::Chunk(object(&key), etag.clone().into(), index)] {
                prop_assert_eq!(round_trip(&k).unwrap(), k);
            }
        }

        #[test]
        fn meta_values_round_trip(size in any::<u64>(), secs in 0u64..4_000_000_000, ct in proptest::option::of("[a-z/]{1,20}"),
                                  headers in proptest::collection::vec(("x-amz-meta-[a-z]{1,8}", proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..16)), 0..4),
                                  checksums in proptest::option::of(proptest::collection::vec(("x-amz-checksum-[a-z0-9]{1,8}", "[A-Za-z0-9+/=]{4,12}"), 0..3)),
                                  stamp in any::<u64>()) {
            let value = |v: &[u8]| HeaderValue::from_bytes(v).unwrap();
            let meta = ObjectMeta {
                size,
                etag: ETag::parse("\"e\"").unwrap(),
                last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
                content_type: ct,
                version_id: None,
                headers: headers.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
                checksums: checksums.map(|c| c.iter().map(|(k, v)| (k.clone(), value(v.as_bytes()))).collect()),
            };
            let fetched_at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let v = CacheValue::Meta(Arc::new(MetaEntry { meta, fetched_at, stamp }));
            prop_assert_eq!(round_trip(&v).unwrap(), v);
        }
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        CacheValue::Chunk(Bytes::from_static(b"hello world"))
            .encode(&mut buf)
            .unwrap();
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(
                CacheValue::decode(&mut bad.as_slice()).is_err(),
                "flip at byte {i} not detected"
            );
        }
    }
}
