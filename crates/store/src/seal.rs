//! Encryption at rest: AES-256-GCM per segment, under a key of its own for every write.
//!
//! - **Master keys** come from a key file: one per line, `<id>:<64 hex digits>`; the first line
//!   is the active key (new writes), the others only decrypt. Removing a key makes what it wrote
//!   read as misses. With no file configured, shardcache creates one (mode 0600) with one random
//!   key.
//! - **Per-write key**: HKDF-SHA256 of the master key with a random 16-byte salt kept in the
//!   header. A fresh key per write is what makes the fixed nonces below safe: no key ever
//!   encrypts two messages with one nonce, even across restarts.
//! - **Nonce** of segment `i`: `i` (u32 LE), a last-segment flag, zeros; the entry's key is
//!   sealed as segment `u32::MAX`.
//! - **Additional data**: the entry's full key and the segment number, so bytes moved to another
//!   entry or another place in it fail to open: a miss, never wrong bytes.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of a GCM tag.
pub const TAG: usize = 16;
/// Bytes of a per-write salt.
pub const SALT: usize = 16;
/// The segment number the entry's key is sealed under.
const KEY_SEGMENT: u32 = u32::MAX;
const INFO: &[u8] = b"shardcache disk tier v1";

/// The key file's master keys.
pub struct Keys {
    active: u32,
    keys: HashMap<u32, [u8; 32]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes.
        let mut ids: Vec<_> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keys")
            .field("active", &self.active)
            .field("ids", &ids)
            .finish()
    }
}

/// The key file is unusable.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyError {
    /// The key file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl Keys {
    /// Reads the key file at `path`; if there is none, creates it (mode 0600) with one random key.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let err = |reason: String| KeyError {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(err),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| err("no randomness for a new key".into()))?;
                let text = format!(
                    "# shardcache disk tier keys: one per line, <id>:<64 hex digits>. The first encrypts\n\
                     # new writes; the others only decrypt. Losing this file loses the disk cache, nothing else.\n\
                     1:{}\n",
                    hex::encode(key)
                );
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| err(format!("cannot create a key file: {e}")))?;
                file.write_all(text.as_bytes())
                    .map_err(|e| err(format!("cannot write the key file: {e}")))?;
                tracing::info!(path = %path.display(), "created a key for the disk tier's encryption");
                Self::parse(&text).map_err(err)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut active = None;
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| format!("line {}: {what} (expected <id>:<64 hex digits>)", n + 1);
            let (id, hex_key) = line.split_once(':').ok_or_else(|| bad("no ':'"))?;
            let id: u32 = id.trim().parse().map_err(|_| bad("the id is not a number"))?;
            let mut key = [0u8; 32];
            hex::decode_to_slice(hex_key.trim(), &mut key).map_err(|_| bad("the key is not 64 hex digits"))?;
            if keys.insert(id, key).is_some() {
                return Err(bad("the id is used twice"));
            }
            active.get_or_insert(id);
        }
        let active = active.ok_or("no key in the file")?;
        Ok(Self { active, keys })
    }

    /// The key id new writes use.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// A fresh write key under the active master key, with its salt.
    pub fn new_write(&self) -> Option<(WriteKey, [u8; SALT])> {
        let mut salt = [0u8; SALT];
        SystemRandom::new().fill(&mut salt).ok()?;
        Some((self.write_key(self.active, &salt)?, salt))
    }

    /// The write key of master key `id` and `salt`; `None` if the key is not in the file.
    pub fn write_key(&self, id: u32, salt: &[u8; SALT]) -> Option<WriteKey> {
        let master = self.keys.get(&id)?;
        let prk = Salt::new(HKDF_SHA256, salt).extract(master);
        let okm = prk.expand(&[INFO], &AES_256_GCM).ok()?;
        Some(WriteKey(LessSafeKey::new(UnboundKey::from(okm))))
    }
}

/// The key of one write.
pub struct WriteKey(LessSafeKey);

fn nonce(segment: u32, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&segment.to_le_bytes());
    n[4] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn aad(key: &[u8], segment: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(key.len() + 4);
    aad.extend_from_slice(key);
    aad.extend_from_slice(&segment.to_le_bytes());
    aad
}

impl WriteKey {
    /// Encrypts segment `segment` of the entry under `key` in place; returns its tag.
    pub fn seal(&self, key: &[u8], segment: u32, last: bool, data: &mut [u8]) -> [u8; TAG] {
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(segment, last), Aad::from(aad(key, segment)), data)
            .expect("AES-GCM seals any segment under 64 GiB");
        tag.as_ref().try_into().expect("a GCM tag is 16 bytes")
    }

    /// Decrypts segment `segment` in place; `false` (and `data` unusable) if it does not open.
    pub fn open(&self, key: &[u8], segment: u32, last: bool, data: &mut [u8], tag: &[u8]) -> bool {
        let Ok(tag) = Tag::try_from(tag) else { return false };
        self.0
            .open_in_place_separate_tag(nonce(segment, last), Aad::from(aad(key, segment)), tag, data, 0..)
            .is_ok()
    }

    /// Encrypts the entry's key in place (bound to its hash); returns the tag.
    pub fn seal_key(&self, hash: u64, key: &mut [u8]) -> [u8; TAG] {
        self.seal(&hash.to_le_bytes(), KEY_SEGMENT, true, key)
    }

    /// Decrypts the entry's key in place.
    pub fn open_key(&self, hash: u64, key: &mut [u8], tag: &[u8]) -> bool {
        self.open(&hash.to_le_bytes(), KEY_SEGMENT, true, key, tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::parse(&format!("# comment\n2:{}\n1:{}\n", "ab".repeat(32), "cd".repeat(32))).unwrap()
    }

    #[test]
    fn the_first_key_is_active_and_every_key_decrypts() {
        let keys = keys();
        assert_eq!(keys.active(), 2);
        let (write, salt) = keys.new_write().unwrap();
        let mut data = b"chunk bytes".to_vec();
        let tag = write.seal(b"k", 3, false, &mut data);
        assert_ne!(&data, b"chunk bytes");
        let read = keys.write_key(2, &salt).unwrap();
        assert!(read.open(b"k", 3, false, &mut data, &tag));
        assert_eq!(&data, b"chunk bytes");
        assert!(keys.write_key(1, &salt).is_some());
        assert!(keys.write_key(3, &salt).is_none());
    }

    #[test]
    fn moved_or_altered_bytes_do_not_open() {
        let keys = keys();
        let (write, salt) = keys.new_write().unwrap();
        let mut sealed = b"segment".to_vec();
        let tag = write.seal(b"key", 1, false, &mut sealed);
        let read = keys.write_key(2, &salt).unwrap();
        let try_open = |key: &[u8], segment, last, data: &[u8], tag: &[u8]| {
            let mut data = data.to_vec();
            read.open(key, segment, last, &mut data, tag)
        };
        assert!(try_open(b"key", 1, false, &sealed, &tag));
        assert!(!try_open(b"other", 1, false, &sealed, &tag), "another entry's key");
        assert!(!try_open(b"key", 2, false, &sealed, &tag), "another segment");
        assert!(!try_open(b"key", 1, true, &sealed, &tag), "a truncated entry");
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert!(!try_open(b"key", 1, false, &flipped, &tag), "altered bytes");
        let other_salt = keys.write_key(2, &[9; SALT]).unwrap();
        let mut data = sealed.clone();
        assert!(
            !other_salt.open(b"key", 1, false, &mut data, &tag),
            "another write's key"
        );
    }

    #[test]
    fn bad_key_files_name_the_line() {
        for (text, expected) in [
            ("", "no key"),
            ("1:abc\n", "line 1: the key is not 64 hex digits"),
            ("x:00\n", "line 1: the id is not a number"),
            (
                &format!("1:{0}\n1:{0}\n", "00".repeat(32)),
                "line 2: the id is used twice",
            ),
        ] {
            let err = Keys::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_missing_key_file_is_created_private_and_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.key");
        let first = Keys::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = Keys::load_or_create(&path).unwrap();
        assert_eq!(first.keys, again.keys);
    }
}
