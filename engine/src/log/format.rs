//! The on-disk format of a segment, byte by byte. Version 1.
//!
//! Everything is little-endian and fixed-width; nothing on disk is a
//! `usize`. Every structure has a magic, a version and a crc32 (crc32fast,
//! the IEEE polynomial).
//!
//! ```text
//! segment file, CAPACITY bytes, preallocated with zeros
//! ┌──────────────────────────────┐ 0
//! │ segment header (64 B)        │
//! │ zeros                        │
//! │ watermark slot A (32 B)      │ 512
//! │ watermark slot B (32 B)      │ 1024
//! │ zeros                        │
//! ├──────────────────────────────┤ 4096 = RECORDS_OFFSET
//! │ record, record, record …     │ each 8-byte aligned
//! │ zeros                        │
//! │ index block (sealed only)    │ record_count × u32 offsets
//! │ footer (sealed only, 64 B)   │ CAPACITY - 64
//! └──────────────────────────────┘ CAPACITY
//! ```
//!
//! The header and the two watermark slots sit in separate 512-byte
//! sectors, so a torn write of one slot never damages the other or the
//! header.

use crate::error::{Corruption, CorruptionKind};

/// Bytes of the header page at the start of every segment.
pub const RECORDS_OFFSET: u64 = 4096;
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The largest log index: far beyond any real log, and low enough that
/// an index plus any count of records in a segment never overflows. The
/// log refuses to go past it, and bytes on disk that claim more are
/// corruption.
pub const INDEX_MAX: u64 = 1 << 62;
/// The largest segment sequence number, for the same reason.
pub const SEQUENCE_MAX: u64 = 1 << 62;

// ---------------------------------------------------------------------------
// Segment header, at offset 0.
//
//   offset size field
//   0      8    magic "FLOGSEG\0"
//   8      4    format version (u32) = 1
//   12     4    crc32 of bytes [0, 12) ++ [16, 64)
//   16     8    segment sequence number (u64), also in the file name
//   24     8    first index: the log index of the segment's first record
//   32     8    capacity in bytes (u64)
//   40     24   reserved, zero
// ---------------------------------------------------------------------------

pub const SEGMENT_MAGIC: [u8; 8] = *b"FLOGSEG\0";
pub const SEGMENT_HEADER_BYTES: usize = 64;

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub sequence: u64,
    pub first_index: u64,
    pub capacity: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.capacity.to_le_bytes());
        seal_prologue(&mut bytes, &SEGMENT_MAGIC);
        bytes
    }

    /// Decodes and checks a header. The error names what is wrong; the
    /// caller adds the location.
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptionKind> {
        let bytes = bytes
            .get(..SEGMENT_HEADER_BYTES)
            .ok_or(CorruptionKind::SegmentTooShort)?;
        check_prologue(
            bytes,
            &SEGMENT_MAGIC,
            CorruptionKind::BadSegmentMagic,
            CorruptionKind::SegmentHeaderChecksum,
        )?;
        let header = Self {
            sequence: read_u64(bytes, 16),
            first_index: read_u64(bytes, 24),
            capacity: read_u64(bytes, 32),
        };
        let in_bounds = header.sequence <= SEQUENCE_MAX
            && header.first_index <= INDEX_MAX
            && (super::SEGMENT_BYTES_MIN..=super::SEGMENT_BYTES_MAX).contains(&header.capacity);
        if !in_bounds {
            return Err(CorruptionKind::SegmentHeaderInconsistent);
        }
        Ok(header)
    }
}

// ---------------------------------------------------------------------------
// Watermark slots, at offsets 512 (slot A) and 1024 (slot B).
//
//   offset size field
//   0      4    magic "FLWM"
//   4      4    crc32 of bytes [0, 4) ++ [8, 32)
//   8      8    generation (u64); the valid slot with the higher one wins
//   16     8    durable end: every record with index < durable end was
//                acknowledged durable
//   24     8    clean end: written only by a clean close, the offset just
//                past the last record, after which nothing was ever written
//                in this life of the file; 0 while the log is open or after
//                a crash (then bytes past the records may be unsynced
//                writes, and recovery zeroes them)
//
// Generation g is written to slot g % 2, so the previous slot is intact
// while the next one is being written.
// ---------------------------------------------------------------------------

pub const WATERMARK_MAGIC: [u8; 4] = *b"FLWM";
pub const WATERMARK_BYTES: usize = 32;
pub const WATERMARK_SLOT_OFFSETS: [u64; 2] = [512, 1024];

/// A durable high-water mark, written with the group commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermark {
    pub generation: u64,
    pub durable_end: u64,
    /// See the layout: non-zero only after a clean close.
    pub clean_end: u64,
}

impl Watermark {
    pub fn slot_offset(&self) -> u64 {
        WATERMARK_SLOT_OFFSETS[(self.generation % 2) as usize]
    }

    pub fn encode(&self) -> [u8; WATERMARK_BYTES] {
        let mut bytes = [0u8; WATERMARK_BYTES];
        bytes[0..4].copy_from_slice(&WATERMARK_MAGIC);
        bytes[8..16].copy_from_slice(&self.generation.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.durable_end.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.clean_end.to_le_bytes());
        let crc = crc_skipping(&bytes, 4);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// `None` for an empty (never written) or damaged slot.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..WATERMARK_BYTES)?;
        if bytes[0..4] != WATERMARK_MAGIC || read_u32(bytes, 4) != crc_skipping(bytes, 4) {
            return None;
        }
        Some(Self {
            generation: read_u64(bytes, 8),
            durable_end: read_u64(bytes, 16),
            clean_end: read_u64(bytes, 24),
        })
    }

    /// The newest valid watermark of a segment's header page, if any.
    pub fn newest(header_page: &[u8]) -> Option<Self> {
        WATERMARK_SLOT_OFFSETS
            .iter()
            .filter_map(|&offset| {
                let start = offset as usize;
                Self::decode(header_page.get(start..start + WATERMARK_BYTES)?)
            })
            .max_by_key(|watermark| watermark.generation)
    }
}

// ---------------------------------------------------------------------------
// Record, at an 8-byte aligned offset ≥ RECORDS_OFFSET.
//
//   offset size field
//   0      4    payload length in bytes (u32)
//   4      4    crc32 of bytes [0, 4) ++ [8, 32) ++ payload
//   8      8    log index (u64)
//   16     8    term (u64)
//   24     4    group id (u32); 0 until many Raft groups share a log
//   28     1    record format version (u8) = 1
//   29     1    reserved, zero
//   30     2    type tag (u16), see `crate::kinds`
//   32     …    payload, `length` bytes, 8-byte aligned
//   …      …    zero padding to the next multiple of 8
//
// A zeroed header is never valid (its crc would have to be 0, and the crc
// of 28 zero bytes is not), so preallocated space reads as "end of log".
// ---------------------------------------------------------------------------

pub const RECORD_HEADER_BYTES: usize = 32;
pub const RECORD_VERSION: u8 = 1;
/// Records start, and payloads start, at multiples of this.
pub const RECORD_ALIGN: usize = 8;

/// The fields of a record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub length: u32,
    pub crc: u32,
    pub index: u64,
    pub term: u64,
    pub group: u32,
    pub kind: u16,
}

impl RecordHeader {
    /// The header bytes with the crc field zero; the crc is filled in by
    /// [`seal_record_crc`] once the payload is known.
    pub fn encode_without_crc(&self) -> [u8; RECORD_HEADER_BYTES] {
        let mut bytes = [0u8; RECORD_HEADER_BYTES];
        bytes[0..4].copy_from_slice(&self.length.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.index.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.term.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.group.to_le_bytes());
        bytes[28] = RECORD_VERSION;
        bytes[30..32].copy_from_slice(&self.kind.to_le_bytes());
        bytes
    }

    /// Parses a header without checking its crc.
    pub fn parse(bytes: &[u8; RECORD_HEADER_BYTES]) -> Result<Self, CorruptionKind> {
        if bytes[28] != RECORD_VERSION {
            return Err(CorruptionKind::UnknownRecordVersion(bytes[28]));
        }
        Ok(Self {
            length: read_u32(bytes, 0),
            crc: read_u32(bytes, 4),
            index: read_u64(bytes, 8),
            term: read_u64(bytes, 16),
            group: read_u32(bytes, 24),
            kind: u16::from_le_bytes([bytes[30], bytes[31]]),
        })
    }

    /// The whole record's size on disk: header, payload and padding.
    pub fn framed_len(&self) -> u64 {
        framed_len(self.length as usize) as u64
    }
}

/// Size on disk of a record with a payload of `payload_len` bytes.
pub const fn framed_len(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + align_up(payload_len)
}

pub const fn align_up(len: usize) -> usize {
    (len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Computes the crc of a record whose header (crc field zero) and payload
/// are in `record` and writes it into the header.
pub fn seal_record_crc(record: &mut [u8], payload_len: usize) {
    let crc = record_crc(record, payload_len);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn record_crc(record: &[u8], payload_len: usize) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[0..4]);
    hasher.update(&record[8..RECORD_HEADER_BYTES]);
    hasher.update(&record[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_len]);
    hasher.finalize()
}

/// What one position in a segment holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    /// A complete record whose crc matches.
    Valid(RecordHeader),
    /// Zero bytes: the preallocated space after the last record.
    Zero,
    /// Anything else: a torn or damaged record.
    Invalid(CorruptionKind),
}

/// Decodes the record at `offset` of `segment`, never reading past
/// `limit` (the end of the record area). Checks the header and the crc.
pub fn decode_record(segment: &[u8], offset: usize, limit: usize) -> Slot {
    let limit = limit.min(segment.len());
    let Some(header_bytes) = offset
        .checked_add(RECORD_HEADER_BYTES)
        .filter(|&end| end <= limit)
        .map(|end| &segment[offset..end])
    else {
        return Slot::Invalid(CorruptionKind::RecordPastEnd);
    };
    if header_bytes.iter().all(|&byte| byte == 0) {
        return Slot::Zero;
    }
    let header_array: &[u8; RECORD_HEADER_BYTES] = header_bytes
        .try_into()
        .expect("slice is RECORD_HEADER_BYTES long by construction");
    let header = match RecordHeader::parse(header_array) {
        Ok(header) => header,
        Err(kind) => return Slot::Invalid(kind),
    };
    let end = offset as u64 + header.framed_len();
    if end > limit as u64 {
        return Slot::Invalid(CorruptionKind::RecordPastEnd);
    }
    let record = &segment[offset..end as usize];
    if record_crc(record, header.length as usize) != header.crc {
        return Slot::Invalid(CorruptionKind::RecordChecksum);
    }
    Slot::Valid(header)
}

// ---------------------------------------------------------------------------
// Index block and footer of a sealed segment, at the end of the file.
//
//   index block: record_count × u32 (LE), the offset of each record in
//                index order, ending where the footer starts.
//   footer, at CAPACITY - 64:
//   offset size field
//   0      8    magic "FLOGEND\0"
//   8      4    format version (u32) = 1
//   12     4    crc32 of bytes [0, 12) ++ [16, 64)
//   16     8    segment sequence number
//   24     8    first index
//   32     8    record count
//   40     8    records end: the offset just past the last record
//   48     4    crc32 of the index block
//   52     12   reserved, zero
// ---------------------------------------------------------------------------

pub const FOOTER_MAGIC: [u8; 8] = *b"FLOGEND\0";
pub const FOOTER_BYTES: usize = 64;
pub const INDEX_ENTRY_BYTES: usize = 4;

/// The decoded footer of a sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub sequence: u64,
    pub first_index: u64,
    pub record_count: u64,
    pub records_end: u64,
    pub index_crc: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut bytes = [0u8; FOOTER_BYTES];
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.record_count.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.records_end.to_le_bytes());
        bytes[48..52].copy_from_slice(&self.index_crc.to_le_bytes());
        seal_prologue(&mut bytes, &FOOTER_MAGIC);
        bytes
    }

    /// `Ok(None)` when the footer area is all zeros (the segment is not
    /// sealed).
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, CorruptionKind> {
        let bytes = bytes.get(..FOOTER_BYTES).ok_or(CorruptionKind::SegmentTooShort)?;
        if bytes.iter().all(|&byte| byte == 0) {
            return Ok(None);
        }
        check_prologue(
            bytes,
            &FOOTER_MAGIC,
            CorruptionKind::BadFooterMagic,
            CorruptionKind::FooterChecksum,
        )?;
        Ok(Some(Self {
            sequence: read_u64(bytes, 16),
            first_index: read_u64(bytes, 24),
            record_count: read_u64(bytes, 32),
            records_end: read_u64(bytes, 40),
            index_crc: read_u32(bytes, 48),
        }))
    }

    /// Where the index block starts in a segment of `capacity` bytes.
    pub fn index_offset(&self, capacity: u64) -> Option<u64> {
        let index_bytes = self.record_count.checked_mul(INDEX_ENTRY_BYTES as u64)?;
        capacity.checked_sub(FOOTER_BYTES as u64)?.checked_sub(index_bytes)
    }

    /// Checks the footer's fields against each other and the segment,
    /// without reading the index block.
    pub fn check(&self, header: &SegmentHeader) -> Result<(), CorruptionKind> {
        let index_offset = self
            .index_offset(header.capacity)
            .ok_or(CorruptionKind::FooterInconsistent)?;
        let consistent = self.sequence == header.sequence
            && self.first_index == header.first_index
            && self.records_end >= RECORDS_OFFSET
            && self.records_end <= index_offset
            && self.records_end.is_multiple_of(RECORD_ALIGN as u64);
        if consistent {
            Ok(())
        } else {
            Err(CorruptionKind::FooterInconsistent)
        }
    }
}

/// Encodes an index block.
pub fn encode_index(offsets: &[u32]) -> Vec<u8> {
    offsets.iter().flat_map(|offset| offset.to_le_bytes()).collect()
}

/// The offset of entry `position` of an index block.
pub fn index_entry(index_block: &[u8], position: usize) -> Option<u32> {
    let start = position.checked_mul(INDEX_ENTRY_BYTES)?;
    let bytes = index_block.get(start..start.checked_add(INDEX_ENTRY_BYTES)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

// ---------------------------------------------------------------------------
// META: the log's purge point, replaced atomically (tmp + rename).
//
//   offset size field
//   0      8    magic "FLOGMETA"
//   8      4    format version (u32) = 1
//   12     4    crc32 of bytes [0, 12) ++ [16, 32)
//   16     8    first index: records below it are purged
//   24     8    reserved, zero
// ---------------------------------------------------------------------------

pub const META_MAGIC: [u8; 8] = *b"FLOGMETA";
pub const META_BYTES: usize = 32;

pub fn encode_meta(first_index: u64) -> [u8; META_BYTES] {
    let mut bytes = [0u8; META_BYTES];
    bytes[16..24].copy_from_slice(&first_index.to_le_bytes());
    seal_prologue(&mut bytes, &META_MAGIC);
    bytes
}

pub fn decode_meta(bytes: &[u8]) -> Result<u64, CorruptionKind> {
    let bytes = bytes.get(..META_BYTES).ok_or(CorruptionKind::MetaDamaged)?;
    check_prologue(
        bytes,
        &META_MAGIC,
        CorruptionKind::MetaDamaged,
        CorruptionKind::MetaDamaged,
    )?;
    let first_index = read_u64(bytes, 16);
    if first_index > INDEX_MAX {
        return Err(CorruptionKind::MetaDamaged);
    }
    Ok(first_index)
}

// ---------------------------------------------------------------------------
// Compressed segment ("NNN.seg.zst"): a sealed segment's whole image,
// compressed with zstd, behind a header.
//
//   offset size field
//   0      8    magic "FLOGZST\0"
//   8      4    format version (u32) = 1
//   12     4    crc32 of bytes [0, 12) ++ [16, 64)
//   16     8    segment sequence number
//   24     8    first index
//   32     8    record count
//   40     8    uncompressed image length (= the segment's capacity)
//   48     4    crc32 of the compressed bytes that follow
//   52     12   reserved, zero
//   64     …    one zstd frame
// ---------------------------------------------------------------------------

pub const COMPRESSED_MAGIC: [u8; 8] = *b"FLOGZST\0";
pub const COMPRESSED_HEADER_BYTES: usize = 64;

/// The decoded header of a compressed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressedHeader {
    pub sequence: u64,
    pub first_index: u64,
    pub record_count: u64,
    pub image_len: u64,
    pub body_crc: u32,
}

impl CompressedHeader {
    pub fn encode(&self) -> [u8; COMPRESSED_HEADER_BYTES] {
        let mut bytes = [0u8; COMPRESSED_HEADER_BYTES];
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.record_count.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.image_len.to_le_bytes());
        bytes[48..52].copy_from_slice(&self.body_crc.to_le_bytes());
        seal_prologue(&mut bytes, &COMPRESSED_MAGIC);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptionKind> {
        let bytes = bytes
            .get(..COMPRESSED_HEADER_BYTES)
            .ok_or(CorruptionKind::SegmentTooShort)?;
        check_prologue(
            bytes,
            &COMPRESSED_MAGIC,
            CorruptionKind::BadSegmentMagic,
            CorruptionKind::SegmentHeaderChecksum,
        )?;
        let header = Self {
            sequence: read_u64(bytes, 16),
            first_index: read_u64(bytes, 24),
            record_count: read_u64(bytes, 32),
            image_len: read_u64(bytes, 40),
            body_crc: read_u32(bytes, 48),
        };
        let in_bounds = header.sequence <= SEQUENCE_MAX
            && header.first_index <= INDEX_MAX
            && (super::SEGMENT_BYTES_MIN..=super::SEGMENT_BYTES_MAX).contains(&header.image_len)
            && header.record_count <= header.image_len / RECORD_HEADER_BYTES as u64;
        if !in_bounds {
            return Err(CorruptionKind::SegmentHeaderInconsistent);
        }
        Ok(header)
    }
}

// The prologue shared by the segment header, the footer, META and the
// compressed header: magic at 0 (8 bytes), format version at 8 (u32), and
// at 12 the crc32 of every other byte of the structure.
const PROLOGUE_CRC_AT: usize = 12;

/// Writes the prologue; call it last, once every field is in place.
fn seal_prologue(bytes: &mut [u8], magic: &[u8; 8]) {
    bytes[0..8].copy_from_slice(magic);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc_skipping(bytes, PROLOGUE_CRC_AT);
    bytes[PROLOGUE_CRC_AT..PROLOGUE_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the prologue: magic, then version, then crc.
fn check_prologue(
    bytes: &[u8],
    magic: &[u8; 8],
    bad_magic: CorruptionKind,
    bad_crc: CorruptionKind,
) -> Result<(), CorruptionKind> {
    if bytes[0..8] != *magic {
        return Err(bad_magic);
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(CorruptionKind::UnknownFormatVersion(version));
    }
    if read_u32(bytes, PROLOGUE_CRC_AT) != crc_skipping(bytes, PROLOGUE_CRC_AT) {
        return Err(bad_crc);
    }
    Ok(())
}

/// The crc of `bytes` leaving out the 4-byte crc field at `crc_at`.
fn crc_skipping(bytes: &[u8], crc_at: usize) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..crc_at]);
    hasher.update(&bytes[crc_at + 4..]);
    hasher.finalize()
}

pub fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut array = [0u8; 4];
    array.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(array)
}

pub fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(array)
}

/// Where a location-bearing corruption error points.
pub fn corruption(segment: u64, offset: u64, index: Option<u64>, kind: CorruptionKind) -> Corruption {
    Corruption {
        segment,
        offset,
        index,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_header_is_end_of_log_not_a_record() {
        let segment = vec![0u8; 256];
        assert_eq!(decode_record(&segment, 0, 256), Slot::Zero);
    }

    #[test]
    fn record_round_trips_and_detects_every_single_bit_flip() {
        let payload = b"hello, farm";
        let header = RecordHeader {
            length: payload.len() as u32,
            crc: 0,
            index: 42,
            term: 7,
            group: 0,
            kind: 3,
        };
        let mut record = vec![0u8; framed_len(payload.len())];
        record[..RECORD_HEADER_BYTES].copy_from_slice(&header.encode_without_crc());
        record[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload.len()].copy_from_slice(payload);
        seal_record_crc(&mut record, payload.len());
        let Slot::Valid(decoded) = decode_record(&record, 0, record.len()) else {
            panic!("fresh record must decode");
        };
        assert_eq!((decoded.index, decoded.term, decoded.kind), (42, 7, 3));
        for bit in 0..(RECORD_HEADER_BYTES + payload.len()) * 8 {
            let mut flipped = record.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&flipped, 0, flipped.len()), Slot::Valid(_)),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn watermark_newest_valid_slot_wins() {
        let mut page = vec![0u8; RECORDS_OFFSET as usize];
        assert_eq!(Watermark::newest(&page), None);
        for generation in 1..=3 {
            let watermark = Watermark {
                generation,
                durable_end: generation * 10,
                clean_end: 0,
            };
            let at = watermark.slot_offset() as usize;
            page[at..at + WATERMARK_BYTES].copy_from_slice(&watermark.encode());
        }
        assert_eq!(Watermark::newest(&page).map(|w| w.durable_end), Some(30));
        // Damage the newest slot: the previous generation is still there.
        page[WATERMARK_SLOT_OFFSETS[1] as usize + 20] ^= 1;
        assert_eq!(Watermark::newest(&page).map(|w| w.durable_end), Some(20));
    }
}
