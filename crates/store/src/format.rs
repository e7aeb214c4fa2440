//! The store's on-disk format: one superblock, a table of slot headers, then the slabs.
//!
//! ```text
//! block 0              superblock: magic, version, geometry, epoch, CRC-32
//! blocks 1 ..= S       small slots: a header with its value inline (metadata, short tails)
//! blocks S+1 ..= S+C   one block per slab: the header of the chunk in it, or its cut mark
//! then                 C slabs of `slab_bytes` each (a chunk rounded up to 4 KiB)
//! ```
//!
//! A slab holds one chunk, or is *cut* into 2^k slots for values too large to sit inline and
//! too small to be worth a slab (short tails, small objects): the headers of its 2^k slots
//! first (k up to 10, slots of at least 32 KiB), then their data areas, all 4 KiB aligned.
//! Slabs are cut on demand, so the mix of sizes follows the data. A cut slab's table block is
//! its cut mark:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "SCCUT\0\0\0"
//! 8       2     format version (1)
//! 10      1     k: the slab holds 2^k slots
//! 12      4     bytes of each slot's data area
//! 16      8     epoch of the store
//! 24      8     stamp: a random number chosen at each cut
//! 4092    4     CRC-32 of bytes 0..4092
//! ```
//!
//! The headers of a cut slab's slots carry the store's epoch XOR the cut's stamp, so headers
//! left in a slab by an earlier cut are foreign to the current one.
//!
//! Every header is one 4 KiB block:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "SCSLOT\0\0"
//! 8       2     format version (1), u16 LE (all integers are LE)
//! 10      1     value kind (opaque to the store: the cache's metadata or chunk)
//! 11      1     flags: bit 0 = the value is inline, after the checks; bit 1 = sealed (encrypted)
//! 12      4     segment size in bytes
//! 16      8     epoch of the store the header belongs to (XOR the stamp, in a cut slab)
//! 24      8     generation: the store-wide write number; the highest wins a key
//! 32      8     key hash
//! 40      8     value length
//! 48      2     key length k
//! 50      2     segment count n
//! 52      4     sealed: id of the master key
//! 56      16    sealed: the write's salt
//! 72      16    sealed: the GCM tag of the key
//! 88      k     the full key (encrypted when sealed)
//! 88+k    w*n   per segment: its CRC-32 (w = 4), or when sealed its GCM tag (w = 16)
//! ...           the value itself, when inline (encrypted when sealed)
//! 4092    4     CRC-32 of bytes 0..4092
//! ```
//!
//! A header is trusted only whole: magic, version, epoch and its own checksum must match. The
//! store returns a value only if every segment read matches its check. So a torn write, a slot
//! rewritten under a stale header, or a header from before the store was re-formatted (another
//! epoch) or the slab re-cut (another stamp) reads as a miss, never as wrong bytes.

use crate::buf::{DiskBuf, ALIGN};

/// Bytes per header and per superblock.
pub const BLOCK: u64 = ALIGN as u64;

const SUPER_MAGIC: &[u8; 8] = b"SCSTORE\0";
const SLOT_MAGIC: &[u8; 8] = b"SCSLOT\0\0";
const CUT_MAGIC: &[u8; 8] = b"SCCUT\0\0\0";
const VERSION: u16 = 1;
const FIXED: usize = 88;
const CRC_AT: usize = ALIGN - 4;

/// Segments per chunk at most: segments are at least 64 KiB, and chunks of more than 8 MiB get
/// larger segments so that a header keeps room for a full S3 key.
const MAX_SEGMENTS: u64 = 128;

/// The smallest slot a slab is cut into, its header included. Smaller cuts would spend more of
/// the slab on headers (1/8 of it at this size), and recovery reads every header of a cut slab.
const MIN_CUT: u64 = 32 << 10;
/// A slab is cut into at most 2^10 slots.
const MAX_CUT: u8 = 10;

/// Where everything lives in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Slots whose value sits inside their header.
    pub small_slots: u32,
    /// Slabs, each one chunk or cut into smaller slots.
    pub slabs: u32,
    /// Bytes of each slab.
    pub slab_bytes: u64,
    /// Bytes per checksummed segment of a value.
    pub segment_bytes: u64,
}

/// A slot: small (value inline in its header), or in a slab, where class 0 is the whole slab
/// and class k one of the 2^k slots of a slab cut that way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loc {
    /// A small slot.
    Small(u32),
    /// A slot in a slab.
    Slab {
        /// Which slab.
        slab: u32,
        /// How it is cut.
        class: u8,
        /// Which of its slots.
        sub: u16,
    },
}

/// Where a value of some length goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Inline in a small slot's header.
    Inline,
    /// In a slab slot of this class.
    Slab(u8),
}

impl Geometry {
    /// The layout of `capacity` bytes for chunks of `chunk_size`: a small-slot region of 1/32
    /// of the capacity (16 MiB to 1 GiB), the rest slabs. `None` if not even one chunk fits.
    pub fn new(capacity: u64, chunk_size: u64) -> Option<Self> {
        let slab_bytes = chunk_size.next_multiple_of(BLOCK);
        let small_bytes = (capacity / 32).clamp(16 << 20, 1 << 30).min(capacity / 4);
        let small_slots = u32::try_from(small_bytes / BLOCK).ok()?;
        let rest = capacity.checked_sub(BLOCK * (1 + u64::from(small_slots)))?;
        let slabs = u32::try_from(rest / (slab_bytes + BLOCK)).ok()?;
        (slabs > 0).then_some(Self {
            small_slots,
            slabs,
            slab_bytes,
            segment_bytes: (64 << 10)
                .max(chunk_size.div_ceil(MAX_SEGMENTS))
                .next_multiple_of(BLOCK),
        })
    }

    /// Slots of a slab of `class`, and the data bytes of each; `None` for a class this slab
    /// size does not have.
    pub fn cut(&self, class: u8) -> Option<(u16, u64)> {
        if class > MAX_CUT {
            return None;
        }
        let subs = 1u64 << class;
        if class > 0 && self.slab_bytes / subs < MIN_CUT {
            return None;
        }
        let data = match class {
            0 => self.slab_bytes,
            _ => (self.slab_bytes - subs * BLOCK) / subs / BLOCK * BLOCK,
        };
        Some((subs as u16, data))
    }

    /// Classes of slab slots: 0 (whole slabs) up to the finest cut.
    pub fn classes(&self) -> u8 {
        (0..=MAX_CUT).take_while(|&c| self.cut(c).is_some()).count() as u8
    }

    /// Where a value of `len` bytes under a key of `key_len` goes: inline if it fits, else the
    /// smallest slab slot that holds it; `None` if nothing does.
    pub fn fit(&self, key_len: usize, len: usize, sealed: bool) -> Option<Fit> {
        let w = check_width(sealed);
        if FIXED + key_len + w * segments(len as u64, self.segment_bytes) + len <= CRC_AT {
            return Some(Fit::Inline);
        }
        if FIXED + key_len + w * MAX_SEGMENTS as usize > CRC_AT {
            return None;
        }
        (0..self.classes())
            .rev()
            .find(|&c| self.cut(c).is_some_and(|(_, data)| len as u64 <= data))
            .map(Fit::Slab)
    }

    /// Data bytes of the slot at `loc`.
    pub fn room(&self, loc: Loc) -> u64 {
        match loc {
            Loc::Small(_) => 0,
            Loc::Slab { class, .. } => self.cut(class).map_or(0, |(_, data)| data),
        }
    }

    /// Offset of slab `slab`'s block in the table: its chunk's header, or its cut mark.
    pub fn table_offset(&self, slab: u32) -> u64 {
        BLOCK * (1 + u64::from(self.small_slots) + u64::from(slab))
    }

    /// Offset of slab `slab`.
    pub fn slab_offset(&self, slab: u32) -> u64 {
        let first = BLOCK * (1 + u64::from(self.small_slots) + u64::from(self.slabs));
        first + u64::from(slab) * self.slab_bytes
    }

    /// Offset of the header of the slot at `loc`.
    pub fn header_offset(&self, loc: Loc) -> u64 {
        match loc {
            Loc::Small(slot) => BLOCK * (1 + u64::from(slot)),
            Loc::Slab { slab, class: 0, .. } => self.table_offset(slab),
            Loc::Slab { slab, sub, .. } => self.slab_offset(slab) + u64::from(sub) * BLOCK,
        }
    }

    /// Offset of the data area of the slot at `loc` (a small slot's value is in its header).
    pub fn data_offset(&self, loc: Loc) -> u64 {
        match loc {
            Loc::Small(_) => self.header_offset(loc),
            Loc::Slab { slab, class, sub } => {
                let (subs, data) = self.cut(class).unwrap_or((1, 0));
                let headers = if class == 0 { 0 } else { u64::from(subs) * BLOCK };
                self.slab_offset(slab) + headers + u64::from(sub) * data
            }
        }
    }

    /// Bytes the layout spans.
    pub fn bytes(&self) -> u64 {
        self.slab_offset(self.slabs)
    }
}

/// Segments of a value of `len` bytes.
pub fn segments(len: u64, segment_bytes: u64) -> usize {
    len.div_ceil(segment_bytes) as usize
}

/// Bytes of each segment's check: a CRC-32, or a GCM tag.
pub fn check_width(sealed: bool) -> usize {
    if sealed {
        super::seal::TAG
    } else {
        4
    }
}

/// The superblock: the geometry the file was formatted with and the epoch its headers carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The layout.
    pub geometry: Geometry,
    /// A random number chosen at each format: headers of another epoch are not this store's.
    pub epoch: u64,
    /// Whether entries are encrypted: turning encryption on or off starts the store empty.
    pub sealed: bool,
}

impl Superblock {
    /// The superblock as its on-disk block.
    pub fn encode(&self) -> DiskBuf {
        let mut buf = DiskBuf::new(ALIGN);
        buf.fill(0);
        let g = &self.geometry;
        buf[..8].copy_from_slice(SUPER_MAGIC);
        buf[8..10].copy_from_slice(&VERSION.to_le_bytes());
        buf[12..16].copy_from_slice(&g.small_slots.to_le_bytes());
        buf[16..20].copy_from_slice(&g.slabs.to_le_bytes());
        buf[24..32].copy_from_slice(&g.slab_bytes.to_le_bytes());
        buf[32..40].copy_from_slice(&g.segment_bytes.to_le_bytes());
        buf[40..48].copy_from_slice(&self.epoch.to_le_bytes());
        buf[48] = u8::from(self.sealed);
        seal(&mut buf);
        buf
    }

    /// The superblock in `block`, if it is one and whole.
    pub fn decode(block: &[u8]) -> Option<Self> {
        if block.len() < ALIGN || &block[..8] != SUPER_MAGIC || u16_at(block, 8) != VERSION || !sealed(block) {
            return None;
        }
        Some(Self {
            geometry: Geometry {
                small_slots: u32_at(block, 12),
                slabs: u32_at(block, 16),
                slab_bytes: u64_at(block, 24),
                segment_bytes: u64_at(block, 32),
            },
            epoch: u64_at(block, 40),
            sealed: block[48] == 1,
        })
    }
}

/// A cut slab's mark: how it is cut, and the stamp its slots' headers carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutMark {
    /// The class: the slab holds 2^class slots.
    pub class: u8,
    /// The store's epoch.
    pub epoch: u64,
    /// Chosen at random at each cut; its slots' headers carry `epoch ^ stamp`.
    pub stamp: u64,
}

impl CutMark {
    /// The mark as its on-disk block, for a slab of `geometry`.
    pub fn encode(&self, geometry: &Geometry) -> DiskBuf {
        let mut buf = DiskBuf::new(ALIGN);
        buf.fill(0);
        let (_, data) = geometry.cut(self.class).unwrap_or((0, 0));
        buf[..8].copy_from_slice(CUT_MAGIC);
        buf[8..10].copy_from_slice(&VERSION.to_le_bytes());
        buf[10] = self.class;
        buf[12..16].copy_from_slice(&(data as u32).to_le_bytes());
        buf[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        buf[24..32].copy_from_slice(&self.stamp.to_le_bytes());
        seal(&mut buf);
        buf
    }

    /// The mark in `block`, if it is one, whole, of `epoch`, and a cut `geometry` has.
    pub fn decode(block: &[u8], epoch: u64, geometry: &Geometry) -> Option<Self> {
        if block.len() < ALIGN || &block[..8] != CUT_MAGIC || u16_at(block, 8) != VERSION || !sealed(block) {
            return None;
        }
        let class = block[10];
        let (_, data) = geometry.cut(class).filter(|_| class > 0)?;
        if u64::from(u32_at(block, 12)) != data || u64_at(block, 16) != epoch {
            return None;
        }
        Some(Self {
            class,
            epoch,
            stamp: u64_at(block, 24),
        })
    }
}

/// One slot's header, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The store's epoch.
    pub epoch: u64,
    /// Write number.
    pub generation: u64,
    /// Key hash.
    pub hash: u64,
    /// Value kind, opaque to the store.
    pub kind: u8,
    /// Value length.
    pub len: u64,
    /// Segment size the checksums cover.
    pub segment_bytes: u64,
    /// The full key, as stored (encrypted when sealed).
    pub key: Vec<u8>,
    /// How the entry is encrypted, if it is.
    pub sealed: Option<Sealed>,
    /// Each segment's check ([`check_width`] bytes each).
    pub checks: Vec<u8>,
    /// The value as stored, for a small slot.
    pub inline: Option<Vec<u8>>,
}

/// What a sealed header adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The master key's id.
    pub key_id: u32,
    /// The write's salt.
    pub salt: [u8; 16],
    /// The GCM tag of the encrypted key.
    pub key_tag: [u8; 16],
}

impl Header {
    /// The header as its on-disk block. The caller checked that it fits
    /// ([`Geometry::fit`]).
    pub fn encode(&self) -> DiskBuf {
        let mut buf = DiskBuf::new(ALIGN);
        buf.fill(0);
        buf[..8].copy_from_slice(SLOT_MAGIC);
        buf[8..10].copy_from_slice(&VERSION.to_le_bytes());
        buf[10] = self.kind;
        buf[11] = u8::from(self.inline.is_some()) | u8::from(self.sealed.is_some()) << 1;
        buf[12..16].copy_from_slice(&(self.segment_bytes as u32).to_le_bytes());
        buf[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        buf[24..32].copy_from_slice(&self.generation.to_le_bytes());
        buf[32..40].copy_from_slice(&self.hash.to_le_bytes());
        buf[40..48].copy_from_slice(&self.len.to_le_bytes());
        buf[48..50].copy_from_slice(&(self.key.len() as u16).to_le_bytes());
        let n = segments(self.len, self.segment_bytes);
        buf[50..52].copy_from_slice(&(n as u16).to_le_bytes());
        if let Some(s) = &self.sealed {
            buf[52..56].copy_from_slice(&s.key_id.to_le_bytes());
            buf[56..72].copy_from_slice(&s.salt);
            buf[72..88].copy_from_slice(&s.key_tag);
        }
        let mut at = FIXED;
        let mut put = |bytes: &[u8]| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.key);
        put(&self.checks);
        if let Some(value) = &self.inline {
            put(value);
        }
        seal(&mut buf);
        buf
    }

    /// The header in `block` if it is whole and of `epoch` (its value's checks are the store's).
    pub fn decode(block: &[u8], epoch: u64) -> Option<Self> {
        if block.len() < ALIGN || &block[..8] != SLOT_MAGIC || u16_at(block, 8) != VERSION || !sealed(block) {
            return None;
        }
        if u64_at(block, 16) != epoch {
            return None;
        }
        let key_len = usize::from(u16_at(block, 48));
        let n = usize::from(u16_at(block, 50));
        let len = u64_at(block, 40);
        let segment_bytes = u64::from(u32_at(block, 12));
        if segment_bytes == 0 || n != segments(len, segment_bytes) {
            return None;
        }
        let is_sealed = block[11] & 2 != 0;
        let checks_at = FIXED + key_len;
        let value_at = checks_at + check_width(is_sealed) * n;
        if value_at > CRC_AT {
            return None;
        }
        let inline = match block[11] & 1 {
            0 => None,
            _ => {
                let end = value_at.checked_add(usize::try_from(len).ok()?)?;
                Some(block.get(value_at..end).filter(|_| end <= CRC_AT)?.to_vec())
            }
        };
        let sealed = is_sealed.then(|| Sealed {
            key_id: u32_at(block, 52),
            salt: block[56..72].try_into().expect("16 bytes"),
            key_tag: block[72..88].try_into().expect("16 bytes"),
        });
        Some(Self {
            epoch,
            generation: u64_at(block, 24),
            hash: u64_at(block, 32),
            kind: block[10],
            len,
            segment_bytes,
            key: block[FIXED..checks_at].to_vec(),
            sealed,
            checks: block[checks_at..value_at].to_vec(),
            inline,
        })
    }
}

fn seal(block: &mut [u8]) {
    let crc = crc32fast::hash(&block[..CRC_AT]);
    block[CRC_AT..ALIGN].copy_from_slice(&crc.to_le_bytes());
}

fn sealed(block: &[u8]) -> bool {
    crc32fast::hash(&block[..CRC_AT]) == u32_at(block, CRC_AT)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn geometry_fits_the_capacity() {
        for (capacity, chunk) in [
            (64 * MIB, 4 * MIB),
            (10 << 30, 8 * MIB),
            (1 << 40, 64 * MIB),
            (32 * MIB, 64 << 10),
        ] {
            let g = Geometry::new(capacity, chunk).unwrap();
            assert!(g.bytes() <= capacity, "{g:?} spans {} > {capacity}", g.bytes());
            assert!(g.slabs > 0 && g.small_slots > 0);
            assert!(chunk.div_ceil(g.segment_bytes) <= MAX_SEGMENTS);
        }
        assert_eq!(Geometry::new(8 * MIB, 8 * MIB), None);
    }

    #[test]
    fn every_cut_fits_its_slab_aligned_and_without_overlap() {
        for chunk in [64 << 10, MIB, 8 * MIB, 8 * MIB + 1000, 64 * MIB] {
            let g = Geometry::new(1 << 40, chunk).unwrap();
            assert!(g.classes() >= 2, "{g:?}");
            for class in 0..g.classes() {
                let (subs, room) = g.cut(class).unwrap();
                let slab = g.slabs - 1;
                let mut spans = Vec::new();
                for sub in 0..subs {
                    let loc = Loc::Slab { slab, class, sub };
                    if class > 0 {
                        spans.push((g.header_offset(loc), BLOCK));
                    }
                    spans.push((g.data_offset(loc), room));
                }
                spans.sort();
                assert!(spans[0].0 >= g.slab_offset(slab));
                assert!(spans.iter().all(|&(at, len)| at % BLOCK == 0 && len % BLOCK == 0));
                assert!(
                    spans.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0),
                    "overlap in class {class}"
                );
                let (at, len) = spans[spans.len() - 1];
                assert!(at + len <= g.bytes(), "class {class} runs past the layout");
            }
            // The finest cut still holds more than a small slot.
            let (_, finest) = g.cut(g.classes() - 1).unwrap();
            assert!(finest >= BLOCK * 2, "{g:?}");
        }
    }

    #[test]
    fn cut_marks_round_trip_and_detect_damage() {
        let g = Geometry::new(256 * MIB, 8 * MIB).unwrap();
        let mark = CutMark {
            class: 3,
            epoch: 42,
            stamp: 99,
        };
        let block = mark.encode(&g);
        assert_eq!(CutMark::decode(&block, 42, &g), Some(mark));
        assert_eq!(CutMark::decode(&block, 43, &g), None);
        let other = Geometry::new(256 * MIB, 4 * MIB).unwrap();
        assert_eq!(CutMark::decode(&block, 42, &other), None, "a cut of another slab size");
        let mut bad = block.to_vec();
        bad[26] ^= 1;
        assert_eq!(CutMark::decode(&bad, 42, &g), None);
    }

    #[test]
    fn superblock_round_trips_and_detects_damage() {
        let sb = Superblock {
            geometry: Geometry::new(256 * MIB, 8 * MIB).unwrap(),
            epoch: 42,
            sealed: true,
        };
        let block = sb.encode();
        assert_eq!(Superblock::decode(&block), Some(sb));
        let mut bad = block.to_vec();
        bad[20] ^= 1;
        assert_eq!(Superblock::decode(&bad), None);
    }

    fn header(key: Vec<u8>, value: &[u8], inline: bool, sealed: bool) -> Header {
        let n = segments(value.len() as u64, 64 << 10);
        Header {
            epoch: 7,
            generation: 9,
            hash: 11,
            kind: 2,
            len: value.len() as u64,
            segment_bytes: 64 << 10,
            key,
            sealed: sealed.then_some(Sealed {
                key_id: 3,
                salt: [5; 16],
                key_tag: [6; 16],
            }),
            checks: (0..n * check_width(sealed)).map(|i| i as u8).collect(),
            inline: inline.then(|| value.to_vec()),
        }
    }

    proptest! {
        #[test]
        fn headers_round_trip(key in proptest::collection::vec(any::<u8>(), 0..1500),
                              value in proptest::collection::vec(any::<u8>(), 0..2000),
                              inline in any::<bool>(), sealed in any::<bool>()) {
            let g = Geometry::new(256 * MIB, 8 * MIB).unwrap();
            prop_assume!(!inline || g.fit(key.len(), value.len(), sealed) == Some(Fit::Inline));
            let h = header(key, &value, inline, sealed);
            let block = h.encode();
            prop_assert_eq!(Header::decode(&block, 7), Some(h));
            prop_assert_eq!(Header::decode(&block, 8), None, "another epoch's header was accepted");
        }

        #[test]
        fn any_flipped_bit_is_a_miss(at in 0..ALIGN, bit in 0u8..8) {
            let block = header(b"key".to_vec(), b"value", true, false).encode();
            let mut bad = block.to_vec();
            bad[at] ^= 1 << bit;
            prop_assert_eq!(Header::decode(&bad, 7), None);
        }

        #[test]
        fn sealed_garbage_never_panics(mut block in proptest::collection::vec(any::<u8>(), ALIGN)) {
            // Past the magic, version and checksum, so that every field is parsed.
            block[..8].copy_from_slice(SLOT_MAGIC);
            block[8..10].copy_from_slice(&VERSION.to_le_bytes());
            block[16..24].copy_from_slice(&7u64.to_le_bytes());
            seal(&mut block);
            let _ = Header::decode(&block, 7);
            block[..8].copy_from_slice(SUPER_MAGIC);
            seal(&mut block);
            let _ = Superblock::decode(&block);
        }
    }
}
