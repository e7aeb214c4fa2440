//! Chunk-signed uploads: `aws-chunked` request bodies whose every chunk carries a signature
//! chained from the request's own (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, and its `-TRAILER`
//! variant that ends with a signed checksum trailer).
//!
//! Those signatures chain from the client's key, so shardcache cannot pass them on under its
//! own. [`Decoder`] checks each chunk as it streams and rewrites the body for the upstream:
//! the plain payload (the `x-amz-decoded-content-length` bytes) or, for the trailer variant,
//! one unsigned `aws-chunked` frame followed by the same checksum trailer
//! (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`), so the upstream still checks and stores it.
//!
//! The last byte of the rewritten body is held back until the final chunk (and trailer) has
//! been verified: the upstream is told the exact length in advance, so a body that is cut
//! short or fails a signature never becomes whole there.
//!
//! Body format (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html>):
//! `hex-size;chunk-signature=SIG\r\n<data>\r\n` per chunk, a final chunk of size 0, then either
//! `\r\n` or the trailer lines, `x-amz-trailer-signature:SIG\r\n` and `\r\n`.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sha2::{Digest, Sha256};

use super::sigv4::{hmac_sha256, push_hex, signature_matches};

/// The payload hash of a chunk-signed body.
/// The largest object S3 stores (50 TB); a larger declared body is refused.
const MAX_OBJECT: u64 = 50_000_000_000_000;

pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// The payload hash of a chunk-signed body that ends with a signed trailer.
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/// The payload hash of an unsigned `aws-chunked` body with a trailer: what the trailer variant
/// is forwarded as.
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

/// The largest chunk accepted (SDKs send 64 KiB to 1 MiB chunks).
pub const MAX_CHUNK: u64 = 16 << 20;
/// The longest chunk header or trailer line.
const MAX_LINE: usize = 1024;
/// SHA-256 of the empty string: the "previous headers" hash in every chunk's string to sign.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What chains chunk signatures to the request's: the derived signing key, the request's
/// timestamp and scope, and its signature (the seed).
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkSigning {
    /// The signing key derived for the request's date, region and service.
    pub key: Arc<[u8]>,
    /// `yyyymmddThhmmssZ`, as the request signed it.
    pub timestamp: String,
    /// `yyyymmdd/region/s3/aws4_request`.
    pub scope: String,
    /// The request's own signature.
    pub seed: String,
}

impl std::fmt::Debug for ChunkSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ChunkSigning")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why a chunk-signed body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk or trailer signature does not match.
    #[error("a chunk signature does not match")]
    Signature,
    /// The framing cannot be read; the message says where.
    #[error("malformed aws-chunked body: {0}")]
    Malformed(&'static str),
    /// The body ended before its final chunk, or its chunks do not add up to the declared length.
    #[error("the body is shorter than x-amz-decoded-content-length")]
    Incomplete,
    /// More data than `x-amz-decoded-content-length` declared.
    #[error("the body is longer than x-amz-decoded-content-length")]
    TooLong,
}

/// The checksum trailer a `-TRAILER` body ends with, as `x-amz-trailer` announced it.
#[derive(Clone, Debug)]
struct Trailer {
    /// Lower-case header name, such as `x-amz-checksum-crc32c`.
    name: String,
    /// The base64 length of that checksum's value, which fixes the forwarded body's length.
    value_len: usize,
}

#[derive(Clone, Debug)]
enum State {
    /// Reading a chunk header line.
    Header,
    /// Inside a chunk's data.
    Data {
        left: u64,
        signature: [u8; 64],
        hash: Sha256,
    },
    /// Reading the `\r\n` after a chunk's data.
    DataEnd { signature: [u8; 64], hash: Sha256 },
    /// After the final chunk: the trailer lines, if any, then an empty line.
    Trailer {
        lines: Vec<(String, String)>,
        signature: Option<String>,
    },
    /// Complete and verified.
    Done,
}

/// A complete line and the input after it.
type Line<'a> = (Vec<u8>, &'a [u8]);

/// Decodes and verifies one chunk-signed body as it streams.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// `None` when client authentication is off: framing is stripped, nothing is checked.
    signing: Option<ChunkSigning>,
    /// The previous signature in the chain (the seed at first).
    previous: String,
    state: State,
    /// A partial header or trailer line.
    line: Vec<u8>,
    /// `x-amz-decoded-content-length`.
    declared: u64,
    decoded: u64,
    trailer: Option<Trailer>,
    /// Whether the trailer variant's frame header has been written.
    started: bool,
    /// The last byte written so far, held back until the body has been verified whole.
    held: Option<u8>,
}

impl Decoder {
    /// A decoder for a body that declares `declared` payload bytes. `trailer` is the request's
    /// `x-amz-trailer` for the `-TRAILER` variant (`None` for the plain one).
    pub fn new(signing: Option<ChunkSigning>, declared: u64, trailer: Option<&str>) -> Result<Self, ChunkError> {
        // S3's largest object (so that the framing arithmetic below cannot overflow).
        if declared > MAX_OBJECT {
            return Err(ChunkError::TooLong);
        }
        let trailer = match trailer {
            None => None,
            Some(name) => {
                let name = name.trim().to_ascii_lowercase();
                let value_len = checksum_len(&name).ok_or(ChunkError::Malformed("x-amz-trailer names no checksum"))?;
                Some(Trailer { name, value_len })
            }
        };
        Ok(Self {
            previous: signing.as_ref().map(|s| s.seed.clone()).unwrap_or_default(),
            signing,
            state: State::Header,
            line: Vec::new(),
            declared,
            decoded: 0,
            trailer,
            started: false,
            held: None,
        })
    }

    /// The length of the body this decoder writes: the payload, or for the trailer variant the
    /// payload in one unsigned frame followed by the trailer.
    pub fn forwarded_len(&self) -> u64 {
        let Some(t) = &self.trailer else {
            return self.declared;
        };
        let frame = if self.declared == 0 {
            0
        } else {
            format!("{:x}\r\n", self.declared).len() as u64 + self.declared + 2
        };
        // "0\r\n" + "name:value\r\n" + "\r\n"
        frame + 3 + (t.name.len() + 1 + t.value_len + 2) as u64 + 2
    }

    /// Whether this body is forwarded as `aws-chunked` with its trailer.
    pub fn keeps_trailer(&self) -> bool {
        self.trailer.is_some()
    }

    /// Whether the body has been read whole and verified.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Reads `input`, appending what may be forwarded to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), ChunkError> {
        if !self.started && !input.is_empty() {
            self.started = true;
            if self.trailer.is_some() && self.declared > 0 {
                self.emit(format!("{:x}\r\n", self.declared).as_bytes(), out);
            }
        }
        while !input.is_empty() {
            input = match &mut self.state {
                State::Data { left, hash, .. } => {
                    let n = (*left).min(input.len() as u64) as usize;
                    let (data, rest) = input.split_at(n);
                    hash.update(data);
                    *left -= n as u64;
                    if *left == 0 {
                        let State::Data { signature, hash, .. } = std::mem::replace(&mut self.state, State::Done)
                        else {
                            unreachable!("matched above")
                        };
                        self.state = State::DataEnd { signature, hash };
                    }
                    self.emit(data, out);
                    rest
                }
                State::Done => return Err(ChunkError::Malformed("data after the final chunk")),
                _ => {
                    // minio-go ends its trailer lines with a bare LF.
                    let lf_only = matches!(self.state, State::Trailer { .. });
                    let Some((line, rest)) = self.take_line(input, lf_only)? else {
                        return Ok(());
                    };
                    self.on_line(&line, out)?;
                    rest
                }
            };
        }
        Ok(())
    }

    /// Called at the end of the body: fails unless the final chunk was read and verified, then
    /// releases the held-back last byte.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), ChunkError> {
        if !self.is_done() {
            return Err(ChunkError::Incomplete);
        }
        out.extend(self.held.take());
        Ok(())
    }

    /// Collects a line ending in `\r\n` (or a bare `\n`, with `lf_only`) across calls; `None`
    /// until one is complete.
    fn take_line<'a>(&mut self, input: &'a [u8], lf_only: bool) -> Result<Option<Line<'a>>, ChunkError> {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            self.line.extend_from_slice(input);
            return match self.line.len() > MAX_LINE {
                true => Err(ChunkError::Malformed("a chunk header or trailer line is too long")),
                false => Ok(None),
            };
        };
        self.line.extend_from_slice(&input[..end]);
        let mut line = std::mem::take(&mut self.line);
        match line.last() {
            Some(b'\r') => {
                line.pop();
            }
            _ if lf_only => {}
            _ => return Err(ChunkError::Malformed("lines must end with CRLF")),
        }
        if line.len() > MAX_LINE {
            return Err(ChunkError::Malformed("a chunk header or trailer line is too long"));
        }
        Ok(Some((line, &input[end + 1..])))
    }

    fn on_line(&mut self, line: &[u8], out: &mut BytesMut) -> Result<(), ChunkError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Header => self.on_header(line, out),
            State::DataEnd { signature, hash } => {
                if !line.is_empty() {
                    return Err(ChunkError::Malformed("chunk data is longer than its size"));
                }
                let mut data_hash = String::with_capacity(64);
                push_hex(&mut data_hash, &hash.finalize());
                self.check_chunk(&signature, &data_hash)?;
                self.state = State::Header;
                Ok(())
            }
            State::Trailer { lines, signature } => self.on_trailer_line(line, lines, signature, out),
            State::Data { .. } | State::Done => unreachable!("lines are read only in these states"),
        }
    }

    fn on_header(&mut self, line: &[u8], out: &mut BytesMut) -> Result<(), ChunkError> {
        let line = std::str::from_utf8(line).map_err(|_| ChunkError::Malformed("a chunk header is not text"))?;
        let (size, ext) = line
            .split_once(';')
            .ok_or(ChunkError::Malformed("a chunk header has no chunk-signature"))?;
        let signature = ext
            .strip_prefix("chunk-signature=")
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(ChunkError::Malformed("chunk-signature must be 64 hex digits"))?;
        let signature: [u8; 64] = signature.as_bytes().try_into().expect("checked length");
        if size.is_empty() || size.len() > 16 {
            return Err(ChunkError::Malformed("a chunk size must be 1 to 16 hex digits"));
        }
        let size = u64::from_str_radix(size, 16).map_err(|_| ChunkError::Malformed("a chunk size is not hex"))?;
        if size > MAX_CHUNK {
            return Err(ChunkError::Malformed("a chunk is larger than 16 MiB"));
        }
        if size == 0 {
            self.check_chunk(&signature, EMPTY_SHA256)?;
            if self.decoded != self.declared {
                return Err(ChunkError::Incomplete);
            }
            if self.trailer.is_some() && self.declared > 0 {
                self.emit(b"\r\n", out);
            }
            self.state = State::Trailer {
                lines: Vec::new(),
                signature: None,
            };
            return Ok(());
        }
        self.decoded += size;
        if self.decoded > self.declared {
            return Err(ChunkError::TooLong);
        }
        self.state = State::Data {
            left: size,
            signature,
            hash: Sha256::new(),
        };
        Ok(())
    }

    fn on_trailer_line(
        &mut self,
        line: &[u8],
        mut lines: Vec<(String, String)>,
        signature: Option<String>,
        out: &mut BytesMut,
    ) -> Result<(), ChunkError> {
        let text = std::str::from_utf8(line).map_err(|_| ChunkError::Malformed("a trailer is not text"))?;
        if !text.is_empty() {
            if signature.is_some() {
                return Err(ChunkError::Malformed("a trailer follows x-amz-trailer-signature"));
            }
            let (name, value) = text
                .split_once(':')
                .ok_or(ChunkError::Malformed("a trailer has no ':'"))?;
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            let signature = match name == "x-amz-trailer-signature" {
                true => Some(value),
                false if lines.len() < 4 => {
                    lines.push((name, value));
                    None
                }
                false => return Err(ChunkError::Malformed("too many trailers")),
            };
            self.state = State::Trailer { lines, signature };
            return Ok(());
        }
        if self.trailer.is_some() && signature.is_none() {
            // minio-go puts an empty line between the trailer and its signature.
            self.state = State::Trailer { lines, signature };
            return Ok(());
        }
        // The empty line that ends the body.
        match (&self.trailer, lines.as_slice()) {
            (None, []) => {}
            (Some(t), [(name, value)]) if *name == t.name && value.len() == t.value_len => {
                let signature = signature.ok_or(ChunkError::Malformed("the trailer is not signed"))?;
                let canonical = format!("{name}:{value}\n");
                self.check(
                    &signature,
                    "AWS4-HMAC-SHA256-TRAILER",
                    &hex::encode(Sha256::digest(canonical)),
                )?;
                self.emit(format!("0\r\n{name}:{value}\r\n\r\n").as_bytes(), out);
            }
            _ => {
                return Err(ChunkError::Malformed(
                    "the trailer is not the one x-amz-trailer announced",
                ))
            }
        }
        self.state = State::Done;
        Ok(())
    }

    /// Verifies a chunk's signature over its data's hash and moves the chain on.
    fn check_chunk(&mut self, signature: &[u8; 64], data_hash: &str) -> Result<(), ChunkError> {
        let signature = std::str::from_utf8(signature).expect("checked hex");
        let hashes = format!("{EMPTY_SHA256}\n{data_hash}");
        self.check(signature, "AWS4-HMAC-SHA256-PAYLOAD", &hashes)
    }

    fn check(&mut self, signature: &str, algorithm: &str, hashes: &str) -> Result<(), ChunkError> {
        let Some(s) = &self.signing else {
            return Ok(());
        };
        let sts = format!("{algorithm}\n{}\n{}\n{}\n{hashes}", s.timestamp, s.scope, self.previous);
        let mac = hmac_sha256(&s.key, sts.as_bytes());
        if !signature_matches(&mac, signature) {
            return Err(ChunkError::Signature);
        }
        self.previous.clear();
        push_hex(&mut self.previous, &mac);
        Ok(())
    }

    /// Appends `bytes` to `out`, keeping the last byte back.
    fn emit(&mut self, bytes: &[u8], out: &mut BytesMut) {
        let Some((&last, rest)) = bytes.split_last() else {
            return;
        };
        out.extend(self.held.replace(last));
        out.put_slice(rest);
    }
}

/// The base64 length of a checksum's value, by its trailer name.
fn checksum_len(name: &str) -> Option<usize> {
    Some(match name {
        "x-amz-checksum-crc32" | "x-amz-checksum-crc32c" => 8,
        "x-amz-checksum-crc64nvme" => 12,
        "x-amz-checksum-sha1" => 28,
        "x-amz-checksum-sha256" => 44,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
