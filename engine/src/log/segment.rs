//! One segment file: creating it, mapping it, finding a record in it,
//! sealing it and compressing it.
//!
//! A segment is named by its zero-padded sequence number
//! (`00000000000000000007.seg`), has a fixed capacity and is preallocated
//! by writing zeros, so appends overwrite allocated space and `fdatasync`
//! never has to update file metadata. A segment removed by a purge may be
//! reused as a later segment instead (no zeros to write): its new header
//! page and zero footer make it a fresh segment, and its old records, all
//! indexed below the new first index, read as the end of the log. A sealed
//! segment carries an index
//! block (the offset of every record) and a footer, so a lookup by index
//! never scans. A compressed segment (`….seg.zst`) holds the same image,
//! compressed with zstd.
//!
//! Invariant: once a segment is sealed its bytes never change, except by
//! `truncate_after`, which first unseals it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::format::{
    self, CompressedHeader, Footer, SegmentHeader, Slot, COMPRESSED_HEADER_BYTES, FOOTER_BYTES, RECORDS_OFFSET,
    SEGMENT_HEADER_BYTES,
};
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::io::{OpenMode, ReadMap, Storage, StorageFile};

pub const SEGMENT_SUFFIX: &str = ".seg";
pub const COMPRESSED_SUFFIX: &str = ".seg.zst";
pub const TEMP_SUFFIX: &str = ".tmp";
/// Zeros are written in chunks of this size when a segment is created.
const ZERO_CHUNK_BYTES: usize = 1 << 20;
/// zstd level for cold segments: fast, and zeros and repeated headers
/// compress well at any level.
const COMPRESSION_LEVEL: i32 = 3;

pub fn segment_name(sequence: u64) -> String {
    format!("{sequence:020}{SEGMENT_SUFFIX}")
}

pub fn compressed_name(sequence: u64) -> String {
    format!("{sequence:020}{COMPRESSED_SUFFIX}")
}

/// The sequence number in a segment's file name, and whether it is
/// compressed. `None` for any other file.
pub fn parse_name(name: &str) -> Option<(u64, bool)> {
    let (stem, compressed) = if let Some(stem) = name.strip_suffix(COMPRESSED_SUFFIX) {
        (stem, true)
    } else {
        (name.strip_suffix(SEGMENT_SUFFIX)?, false)
    };
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, compressed))
}

/// Creates a new segment: writes zeros to its full capacity and its
/// header, syncs it, renames it into place and syncs the directory.
///
/// On disk when it returns `Ok`: the segment file, zero-filled but for its
/// header and an initial watermark (`durable_end = first_index`), durable,
/// with a durable directory entry. On error the temporary file is removed
/// (best effort) and nothing else changed.
pub fn create(storage: &dyn Storage, dir: &Path, header: SegmentHeader) -> Result<Arc<dyn StorageFile>> {
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", segment_name(header.sequence)));
    let file = create_spare(storage, &temp, header.capacity)?;
    install_spare(storage, dir, &temp, file, header)
}

/// Writes a zero-filled file of `capacity` bytes at `temp` and syncs it:
/// a spare, ready to become a segment. Its name ends in `.tmp`, so an
/// open after a crash removes it.
///
/// On disk when it returns `Ok`: the zeros, durable (the directory entry
/// is not synced: a spare lost in a crash costs nothing). On error the
/// file is removed (best effort).
pub fn create_spare(storage: &dyn Storage, temp: &Path, capacity: u64) -> Result<Arc<dyn StorageFile>> {
    let context = || format!("preallocating {}", temp.display());
    let write = || -> std::io::Result<Arc<dyn StorageFile>> {
        let file = storage.open(temp, OpenMode::CreateNew)?;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut offset = 0u64;
        while offset < capacity {
            let chunk = (capacity - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..chunk], offset)?;
            offset += chunk as u64;
        }
        file.sync_data()?;
        Ok(file)
    };
    write().map_err(|error| {
        let _ = storage.remove(temp);
        Error::io(context(), error)
    })
}

/// Turns a spare (zero-filled, or a recycled segment) into segment
/// `header.sequence`: writes its header page (header, initial watermark,
/// empty second slot) and a zero footer, syncs, renames it into place,
/// syncs the directory. Records of a recycled file's earlier life stay in
/// the record area: their indexes are below `first_index`, and recovery
/// reads the first of them as the end of the log.
///
/// On disk when it returns `Ok`: the segment, durable, under its final
/// name. On error the spare is removed (best effort).
pub fn install_spare(
    storage: &dyn Storage,
    dir: &Path,
    temp: &Path,
    file: Arc<dyn StorageFile>,
    header: SegmentHeader,
) -> Result<Arc<dyn StorageFile>> {
    let name = segment_name(header.sequence);
    let watermark = format::Watermark {
        generation: 0,
        durable_end: header.first_index,
        clean_end: 0,
    };
    // The whole header page, so that a recycled file keeps no watermark
    // of its earlier life, and a zeroed footer, so that it is not sealed.
    let mut page = vec![0u8; RECORDS_OFFSET as usize];
    page[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
    let slot = watermark.slot_offset() as usize;
    page[slot..slot + format::WATERMARK_BYTES].copy_from_slice(&watermark.encode());
    let install = || -> std::io::Result<()> {
        file.write_all_at(&page, 0)?;
        file.write_all_at(&[0u8; FOOTER_BYTES], header.capacity - FOOTER_BYTES as u64)?;
        file.sync_data()?;
        storage.rename(temp, &dir.join(&name))?;
        storage.sync_dir(dir)
    };
    install().map_err(|error| {
        let _ = storage.remove(temp);
        Error::io(format!("creating segment {name}"), error)
    })?;
    Ok(file)
}

/// Bytes a segment of `capacity` can hold in records when sealed with
/// `record_count` records.
pub fn records_limit(capacity: u64, record_count: u64) -> u64 {
    capacity
        .saturating_sub(FOOTER_BYTES as u64)
        .saturating_sub(record_count * format::INDEX_ENTRY_BYTES as u64)
}

/// Writes the index block of a segment and syncs it (with every record),
/// then writes the footer and syncs again.
///
/// On disk when it returns `Ok`: every record of the segment, its index
/// block and its footer, durable. The segment is sealed. A crash before it
/// returns leaves the segment unsealed (no valid footer) or sealed with
/// everything the footer describes durable.
pub fn seal(file: &dyn StorageFile, header: &SegmentHeader, offsets: &[u32], records_end: u64) -> Result<()> {
    let index_block = format::encode_index(offsets);
    let footer = Footer {
        sequence: header.sequence,
        first_index: header.first_index,
        record_count: offsets.len() as u64,
        records_end,
        index_crc: crc32fast::hash(&index_block),
    };
    let index_offset = footer
        .index_offset(header.capacity)
        .filter(|&offset| offset >= records_end)
        .ok_or_else(|| Error::invalid("segment has no room left for its index block"))?;
    let context = || format!("sealing segment {:020}", header.sequence);
    // The footer is the commit point: it is written only once the records
    // and the index block it describes are durable. One sync for both
    // would let a power loss keep the footer and lose records under it.
    let seal = || -> std::io::Result<()> {
        file.write_all_at(&index_block, index_offset)?;
        file.sync_data()?;
        file.write_all_at(&footer.encode(), header.capacity - FOOTER_BYTES as u64)?;
        file.sync_data()
    };
    seal().map_err(|error| Error::io(context(), error))
}

/// An image of a segment's bytes in memory (a decompressed segment),
/// 8-byte aligned so that payloads can be read in place.
#[derive(Debug)]
pub struct AlignedImage {
    words: Box<[u64]>,
    len: usize,
}

impl AlignedImage {
    fn zeroed(len: usize) -> Self {
        Self {
            words: vec![0u64; len.div_ceil(8)].into_boxed_slice(),
            len,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `words` holds `len.div_ceil(8) * 8 >= len` initialized
        // bytes; u8 has no alignment or validity requirements; the borrow of
        // `self` keeps the memory alive and unaliased for the slice's life.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

impl ReadMap for AlignedImage {
    fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`, shared instead of exclusive.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// A segment as readers see it.
#[derive(Debug)]
pub struct Segment {
    pub header: SegmentHeader,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    /// The segment being appended to; its record offsets live in the
    /// log's view, not here.
    Active { map: Arc<dyn ReadMap> },
    /// A sealed segment, mapped on first use; lookups go through its
    /// index block.
    Sealed {
        map: LazyMap,
        footer: Footer,
        /// Set once the index block's crc has been checked (lazily, on
        /// first use, so that opening never reads every index block).
        index_checked: OnceLock<Result<(), Corruption>>,
    },
    /// A sealed segment, compressed; decompressed on demand and cached.
    Compressed {
        path: PathBuf,
        header: CompressedHeader,
        image: Mutex<std::sync::Weak<AlignedImage>>,
    },
}

impl Segment {
    pub fn sequence(&self) -> u64 {
        self.header.sequence
    }

    pub fn first_index(&self) -> u64 {
        self.header.first_index
    }

    /// Records in a sealed or compressed segment; `None` for the active one.
    pub fn sealed_count(&self) -> Option<u64> {
        match &self.body {
            Body::Active { .. } => None,
            Body::Sealed { footer, .. } => Some(footer.record_count),
            Body::Compressed { header, .. } => Some(header.record_count),
        }
    }

    pub fn is_compressed(&self) -> bool {
        matches!(self.body, Body::Compressed { .. })
    }

    /// The bytes of the segment image: the map, or the decompressed image.
    pub fn bytes(&self, storage: &dyn Storage) -> Result<Arc<dyn ReadMap>> {
        match &self.body {
            Body::Active { map } => Ok(map.clone()),
            Body::Sealed { map, .. } => map.get(),
            Body::Compressed { path, header, image } => {
                let mut cached = image.lock().unwrap_or_else(|poison| poison.into_inner());
                if let Some(image) = cached.upgrade() {
                    return Ok(image);
                }
                let fresh = Arc::new(decompress(storage, path, header)?);
                *cached = Arc::downgrade(&fresh);
                Ok(fresh)
            }
        }
    }

    /// The offset of the record with `index` in a sealed segment, read from
    /// its index block (checked once).
    pub fn sealed_offset(&self, bytes: &[u8], index: u64) -> Result<u64> {
        let (footer, index_checked) = match &self.body {
            Body::Sealed {
                footer, index_checked, ..
            } => (*footer, Some(index_checked)),
            Body::Compressed { .. } => (self.footer_of_image(bytes)?, None),
            Body::Active { .. } => unreachable!("active segments are looked up in the view"),
        };
        let block = self.index_block(bytes, &footer)?;
        if let Some(checked) = index_checked {
            checked
                .get_or_init(|| self.check_index_crc(block, &footer))
                .clone()
                .map_err(Error::Corrupt)?;
        }
        let position = (index - self.header.first_index) as usize;
        let offset = format::index_entry(block, position)
            .ok_or_else(|| Error::Corrupt(self.corrupt(0, Some(index), CorruptionKind::IndexEntry)))?
            as u64;
        if offset < RECORDS_OFFSET || offset >= footer.records_end {
            return Err(Error::Corrupt(self.corrupt(
                offset,
                Some(index),
                CorruptionKind::IndexEntry,
            )));
        }
        Ok(offset)
    }

    fn footer_of_image(&self, bytes: &[u8]) -> Result<Footer> {
        let at = (self.header.capacity as usize).saturating_sub(FOOTER_BYTES);
        match Footer::decode(bytes.get(at..).unwrap_or(&[])) {
            Ok(Some(footer)) => Ok(footer),
            Ok(None) => Err(Error::Corrupt(self.corrupt(
                at as u64,
                None,
                CorruptionKind::UnsealedSegment,
            ))),
            Err(kind) => Err(Error::Corrupt(self.corrupt(at as u64, None, kind))),
        }
    }

    fn index_block<'a>(&self, bytes: &'a [u8], footer: &Footer) -> Result<&'a [u8]> {
        let start = footer.index_offset(self.header.capacity).unwrap_or(0) as usize;
        let end = (self.header.capacity as usize).saturating_sub(FOOTER_BYTES);
        bytes
            .get(start..end)
            .ok_or_else(|| Error::Corrupt(self.corrupt(start as u64, None, CorruptionKind::FooterInconsistent)))
    }

    fn check_index_crc(&self, block: &[u8], footer: &Footer) -> Result<(), Corruption> {
        if crc32fast::hash(block) == footer.index_crc {
            Ok(())
        } else {
            let start = footer.index_offset(self.header.capacity).unwrap_or(0);
            Err(self.corrupt(start, None, CorruptionKind::IndexChecksum))
        }
    }

    pub fn corrupt(&self, offset: u64, index: Option<u64>, kind: CorruptionKind) -> Corruption {
        format::corruption(self.header.sequence, offset, index, kind)
    }
}

/// A sealed segment's map, made on first use, so that opening a log maps
/// nothing but its tail.
#[derive(Debug)]
pub struct LazyMap {
    file: Arc<dyn StorageFile>,
    len: u64,
    map: OnceLock<Arc<dyn ReadMap>>,
}

impl LazyMap {
    pub fn lazy(file: Arc<dyn StorageFile>, len: u64) -> Self {
        Self {
            file,
            len,
            map: OnceLock::new(),
        }
    }

    /// A map that already exists (the segment was active until now).
    pub fn ready(file: Arc<dyn StorageFile>, len: u64, map: Arc<dyn ReadMap>) -> Self {
        let lazy = Self::lazy(file, len);
        let _ = lazy.map.set(map);
        lazy
    }

    pub fn get(&self) -> Result<Arc<dyn ReadMap>> {
        if let Some(map) = self.map.get() {
            return Ok(map.clone());
        }
        let map = self
            .file
            .map(self.len)
            .map_err(|error| Error::io("mapping a sealed segment", error))?;
        // Two readers may race to map; either map is as good.
        Ok(self.map.get_or_init(|| map).clone())
    }

    /// Whether nobody but the segment holds the map (or it was never made).
    pub fn is_unshared(&self) -> bool {
        self.map.get().is_none_or(|map| Arc::strong_count(map) == 1)
    }
}

/// Opens a segment file and decodes its header and footer (two small
/// reads; never the records), checking them against the file name. Only
/// an unsealed segment is mapped now; a sealed one on first use.
pub fn load_mapped(
    storage: &dyn Storage,
    path: &Path,
    sequence: u64,
    mode: OpenMode,
) -> Result<(Arc<dyn StorageFile>, Segment)> {
    let corrupt = |offset, kind| Error::Corrupt(format::corruption(sequence, offset, None, kind));
    let file = storage
        .open(path, mode)
        .map_err(|error| Error::io(format!("opening {}", path.display()), error))?;
    let len = file
        .len()
        .map_err(|error| Error::io(format!("reading the length of {}", path.display()), error))?;
    if len < RECORDS_OFFSET + FOOTER_BYTES as u64 {
        return Err(corrupt(0, CorruptionKind::SegmentTooShort));
    }
    let read = |offset: u64| -> Result<[u8; FOOTER_BYTES]> {
        let mut bytes = [0u8; FOOTER_BYTES];
        file.read_exact_at(&mut bytes, offset)
            .map_err(|error| Error::io(format!("reading {}", path.display()), error))?;
        Ok(bytes)
    };
    const _: () = assert!(SEGMENT_HEADER_BYTES == FOOTER_BYTES);
    let header = SegmentHeader::decode(&read(0)?).map_err(|kind| corrupt(0, kind))?;
    if header.sequence != sequence || header.capacity != len {
        return Err(corrupt(0, CorruptionKind::SegmentHeaderInconsistent));
    }
    let footer_at = len - FOOTER_BYTES as u64;
    let body = match Footer::decode(&read(footer_at)?).map_err(|kind| corrupt(footer_at, kind))? {
        None => Body::Active {
            map: file
                .map(len)
                .map_err(|error| Error::io(format!("mapping {}", path.display()), error))?,
        },
        Some(footer) => {
            footer.check(&header).map_err(|kind| corrupt(footer_at, kind))?;
            Body::Sealed {
                map: LazyMap::lazy(file.clone(), len),
                footer,
                index_checked: OnceLock::new(),
            }
        }
    };
    Ok((file, Segment { header, body }))
}

/// Reads a compressed segment's header (not its body).
pub fn load_compressed(storage: &dyn Storage, path: &Path, sequence: u64) -> Result<Segment> {
    let corrupt = |kind| Error::Corrupt(format::corruption(sequence, 0, None, kind));
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|error| Error::io(format!("opening {}", path.display()), error))?;
    let mut bytes = [0u8; COMPRESSED_HEADER_BYTES];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|error| Error::io(format!("reading {}", path.display()), error))?;
    let header = CompressedHeader::decode(&bytes).map_err(corrupt)?;
    if header.sequence != sequence {
        return Err(corrupt(CorruptionKind::SegmentHeaderInconsistent));
    }
    Ok(Segment {
        header: SegmentHeader {
            sequence,
            first_index: header.first_index,
            capacity: header.image_len,
        },
        body: Body::Compressed {
            path: path.to_owned(),
            header,
            image: Mutex::new(std::sync::Weak::new()),
        },
    })
}

/// Largest segment image that will be decompressed (a bound on memory).
pub const DECOMPRESSED_IMAGE_BYTES_MAX: u64 = 1 << 30;

fn decompress(storage: &dyn Storage, path: &Path, header: &CompressedHeader) -> Result<AlignedImage> {
    let corrupt = |reason: String| {
        Error::Corrupt(format::corruption(
            header.sequence,
            COMPRESSED_HEADER_BYTES as u64,
            None,
            CorruptionKind::Compressed(reason),
        ))
    };
    if header.image_len > DECOMPRESSED_IMAGE_BYTES_MAX {
        return Err(corrupt(format!("image length {} too large", header.image_len)));
    }
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|error| Error::io(format!("opening {}", path.display()), error))?;
    let len = file
        .len()
        .map_err(|error| Error::io(format!("reading the length of {}", path.display()), error))?;
    let map = file
        .map(len)
        .map_err(|error| Error::io(format!("mapping {}", path.display()), error))?;
    let body = map.bytes().get(COMPRESSED_HEADER_BYTES..).unwrap_or(&[]);
    if crc32fast::hash(body) != header.body_crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut image = AlignedImage::zeroed(header.image_len as usize);
    let written =
        zstd::bulk::decompress_to_buffer(body, image.bytes_mut()).map_err(|error| corrupt(error.to_string()))?;
    if written != header.image_len as usize {
        return Err(corrupt(format!(
            "decompressed {written} bytes, expected {}",
            header.image_len
        )));
    }
    Ok(image)
}

/// Writes a compressed copy of a sealed segment beside it, syncs it and
/// renames it into place, then removes the uncompressed file.
///
/// On disk when it returns `Ok`: `NNN.seg.zst`, durable, and no `NNN.seg`
/// (its removal durable too). A crash in between leaves both files; open
/// keeps the uncompressed one and removes the other.
pub fn compress(storage: &dyn Storage, dir: &Path, segment: &Segment, image: &[u8]) -> Result<()> {
    let Body::Sealed { footer, .. } = &segment.body else {
        return Err(Error::invalid("only sealed segments can be compressed"));
    };
    let sequence = segment.sequence();
    let context = || format!("compressing segment {sequence:020}");
    // Compress the records and the index block; the zeros between them
    // cost next to nothing.
    let body = zstd::bulk::compress(image, COMPRESSION_LEVEL).map_err(|error| Error::io(context(), error))?;
    let header = CompressedHeader {
        sequence,
        first_index: segment.first_index(),
        record_count: footer.record_count,
        image_len: image.len() as u64,
        body_crc: crc32fast::hash(&body),
    };
    let name = compressed_name(sequence);
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let write = || -> std::io::Result<()> {
        let file = storage.open(&temp, OpenMode::CreateNew)?;
        file.write_all_at(&header.encode(), 0)?;
        file.write_all_at(&body, COMPRESSED_HEADER_BYTES as u64)?;
        file.sync_data()?;
        storage.rename(&temp, &dir.join(&name))?;
        storage.sync_dir(dir)?;
        storage.remove(&dir.join(segment_name(sequence)))?;
        storage.sync_dir(dir)
    };
    write().map_err(|error| {
        let _ = storage.remove(&temp);
        Error::io(context(), error)
    })
}

/// Decodes the record at `offset`, expecting `index`, within `limit`.
pub fn read_slot(bytes: &[u8], offset: u64, limit: u64) -> Slot {
    format::decode_record(bytes, offset as usize, limit as usize)
}
