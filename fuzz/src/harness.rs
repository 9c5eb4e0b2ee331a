//! Fuzz harnesses for farmlog's on-disk format and recovery.
//!
//! Two entry points, each one cargo-fuzz target, and each replayed over its
//! corpus as an ordinary test by `engine/tests/fuzz_corpus.rs`:
//!
//! - [`open_arbitrary_dir`]: builds a log directory on a [`SimStorage`] from
//!   the input, opens it read-only and writable, and reads, verifies and
//!   appends to whatever opened.
//! - [`decode_arbitrary_record`]: runs every decoder of `log::format`, and
//!   the bench payload validator, over the input.
//!
//! What they check, for any input: no panic, no hang, no out-of-bounds
//! read; every failure is a typed `Err`. And properties that hold whatever
//! the bytes are: decoders round-trip what they accept and never point
//! outside their input; a read-only open changes no byte; records read
//! back with consecutive indexes and 8-byte aligned payloads; a record
//! acknowledged by `append` reads back, also after reopening.
//!
//! [`seed_inputs`] builds the seed corpora (valid logs and records, so the
//! fuzzer starts deep); the replay test writes them out on request.
//!
//! This file depends on `farmlog_engine` and `std` only: it is compiled
//! both as the fuzz crate's library and as a module of an engine test.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use farmlog_engine::io::{OpenMode, SimConfig, SimStorage, Storage};
use farmlog_engine::kinds::{self, BenchPayload};
use farmlog_engine::log::format::{
    self, CompressedHeader, Footer, RecordHeader, SegmentHeader, Slot, Watermark, COMPRESSED_HEADER_BYTES,
    COMPRESSED_MAGIC, FOOTER_BYTES, FOOTER_MAGIC, INDEX_ENTRY_BYTES, META_BYTES, META_MAGIC, RECORDS_OFFSET,
    RECORD_ALIGN, RECORD_HEADER_BYTES, RECORD_VERSION, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, WATERMARK_BYTES,
    WATERMARK_MAGIC, WATERMARK_SLOT_OFFSETS,
};
use farmlog_engine::{Error, FlushMode, Log, LogOptions, NewRecord};

/// The corpus directory (under `fuzz/corpus/`) and target name of
/// [`open_arbitrary_dir`].
pub const OPEN_DIR: &str = "open_dir";
/// The corpus directory and target name of [`decode_arbitrary_record`].
pub const DECODE_RECORD: &str = "decode_record";

/// Where the log lives on the simulated disk.
const LOG_DIR: &str = "/log";
/// Seeds the simulated disk. No fault is armed, so it only has to be fixed.
const SIM_SEED: u64 = 0xF422_10C5;
/// Segment files written by the raw mode, at most.
const FILES_MAX: usize = 3;
/// Largest file either mode writes: big enough for a few 64 KiB segments'
/// worth of records, small enough that one run takes well under a
/// millisecond.
const FILE_BYTES_MAX: usize = 256 << 10;
/// Patches applied by the mutation mode, at most.
const PATCHES_MAX: usize = 64;
/// Records read by one scan of an opened log, at most (a log built from
/// the input holds far fewer; the bound only guarantees termination).
const RECORDS_READ_MAX: usize = 1 << 16;
/// Base logs the mutation mode starts from; see [`build_base_log`].
const BASE_SHAPES: usize = 4;
/// What the writable open appends, and expects to read back.
const PROBE_PAYLOAD: &[u8] = b"appended by the fuzz harness";

const _: () = assert!(FILES_MAX >= 1);
const _: () = assert!(FILE_BYTES_MAX as u64 >= 4 * LOG_SEGMENT_BYTES);
const _: () = assert!(
    BASE_SHAPES.is_power_of_two() && BASE_SHAPES <= 4,
    "two control bits choose the shape"
);

// ---------------------------------------------------------------------------
// open_dir input, byte by byte.
//
//   byte 0, the control byte:
//     bit 0     0: raw mode, 1: mutation mode
//     bit 1     fix every checksum after building the files (see
//               `fix_checksums`), so that the fuzzer gets past crc checks
//     bits 2-3  mutation mode: which base log to start from
//
//   raw mode, after the control byte:
//     1 byte    count = 1 + (b & 3) % 3 segment files; META = (b >> 2) % 3:
//               0 none, 1 the next 32 input bytes, 2 encode_meta(next u64)
//     per file  1 byte name selector (see `file_name`), 3 bytes length (LE,
//               at most FILE_BYTES_MAX)
//     META      as chosen above
//     contents  each file's bytes in turn; a file the input runs out for is
//               zero-filled to its length, so a seed need not carry the
//               zeros at the end of a segment
//
//   mutation mode, after the control byte, patches until the input ends
//   (at most PATCHES_MAX), each:
//     1 byte    file: index into the base log's files (modulo their count)
//     1 byte    op: 0..=253 write that many bytes, 254 truncate, 255 remove
//     3 bytes   offset (LE), modulo the file's length + 1
//     …         write: the bytes (a write never grows a file past
//               FILE_BYTES_MAX)
// ---------------------------------------------------------------------------

const CONTROL_MUTATE: u8 = 1 << 0;
const CONTROL_FIX_CHECKSUMS: u8 = 1 << 1;
const CONTROL_SHAPE_SHIFT: u32 = 2;
const RAW_META_NONE: u8 = 0;
const RAW_META_BYTES: u8 = 1;
const RAW_META_ENCODED: u8 = 2;
const PATCH_TRUNCATE: u8 = 254;
const PATCH_REMOVE: u8 = 255;
const META_NAME: &str = "META";
const LOCK_NAME: &str = "LOCK";
const LOG_SEGMENT_BYTES: u64 = 64 << 10;

/// A log directory's files as (name, bytes), before it is written out or
/// after it is read back; sorted by name when read back.
pub type DirImage = Vec<(String, Vec<u8>)>;

/// Builds a log directory from `data` (see the layout above), then opens
/// it read-only and writable, reads and verifies every record of whatever
/// opened, appends one record and reopens. Panics only if the engine
/// breaks one of the properties in the module documentation.
pub fn open_arbitrary_dir(data: &[u8]) {
    let mut input = Input::new(data);
    let control = input.u8();
    let mut image = if control & CONTROL_MUTATE == 0 {
        raw_image(&mut input)
    } else {
        let shape = usize::from(control >> CONTROL_SHAPE_SHIFT) % BASE_SHAPES;
        mutated_image(base_log(shape).clone(), &mut input)
    };
    if control & CONTROL_FIX_CHECKSUMS != 0 {
        fix_checksums(&mut image);
    }
    let storage = SimStorage::new(SimConfig { seed: SIM_SEED });
    write_dir_image(&storage, &image);
    exercise_dir(&storage);
}

/// Decodes a record at the start of `data`, at a few other offsets and
/// limits, and as a chain; then every other on-disk structure of
/// `log::format` and a bench payload. Panics only if a decoder breaks one
/// of the properties in the module documentation.
pub fn decode_arbitrary_record(data: &[u8]) {
    check_record_chain(data, 0, data.len());
    check_record_chain(data, 0, usize::MAX);
    if let [low, high, ..] = *data {
        check_slot(data, RECORD_ALIGN, usize::from(u16::from_le_bytes([low, high])));
    }
    let len = data.len();
    for offset in [
        RECORD_ALIGN,
        2 * RECORD_ALIGN,
        len.saturating_sub(RECORD_HEADER_BYTES),
        len,
        usize::MAX - RECORD_HEADER_BYTES + 1,
        usize::MAX,
    ] {
        check_slot(data, offset, len);
        check_slot(data, offset, usize::MAX);
    }
    check_structures(data);
    check_bench(data);
}

// ---------------------------------------------------------------------------
// Building the directory.
// ---------------------------------------------------------------------------

/// Reads fixed-size fields off the front of the input; past its end every
/// field reads as zero and every byte run as empty, so any input is valid.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, tail) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = tail;
        head
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u24(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        let taken = self.take(3);
        bytes[..taken.len()].copy_from_slice(taken);
        u32::from_le_bytes(bytes)
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        let taken = self.take(8);
        bytes[..taken.len()].copy_from_slice(taken);
        u64::from_le_bytes(bytes)
    }
}

/// The raw mode: segment files (and maybe META) straight from the input.
fn raw_image(input: &mut Input<'_>) -> DirImage {
    let files = input.u8();
    let count = 1 + usize::from(files & 0x03) % FILES_MAX;
    let meta_choice = (files >> 2) % 3;
    let mut layout = Vec::with_capacity(count);
    for position in 0..count {
        let name = file_name(input.u8(), position);
        let len = (input.u24() as usize).min(FILE_BYTES_MAX);
        layout.push((name, len));
    }
    let mut image = DirImage::with_capacity(count + 1);
    match meta_choice {
        RAW_META_NONE => {}
        RAW_META_BYTES => image.push((META_NAME.to_owned(), input.take(META_BYTES).to_vec())),
        RAW_META_ENCODED => image.push((META_NAME.to_owned(), format::encode_meta(input.u64()).to_vec())),
        _ => unreachable!("meta_choice is taken modulo 3"),
    }
    for (name, len) in layout {
        let mut bytes = input.take(len).to_vec();
        bytes.resize(len, 0);
        image.push((name, bytes));
    }
    image
}

/// The name of a raw-mode file. Selector bits 0-2 choose the sequence
/// number (0: the file's position + 1, the name a healthy log would use),
/// bits 3-4 the kind of file (plain, compressed, or a leftover temporary).
fn file_name(selector: u8, position: usize) -> String {
    let sequence: u64 = match selector & 0x07 {
        0 => position as u64 + 1,
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        5 => 1 << 40,
        6 => u64::MAX - 1,
        _ => u64::MAX,
    };
    let suffix = match (selector >> 3) & 0x03 {
        0 | 1 => ".seg",
        2 => ".seg.zst",
        _ => ".seg.tmp",
    };
    format!("{sequence:020}{suffix}")
}

/// The mutation mode: patches applied to a valid base log.
fn mutated_image(mut image: DirImage, input: &mut Input<'_>) -> DirImage {
    for _ in 0..PATCHES_MAX {
        if input.is_empty() || image.is_empty() {
            break;
        }
        let file = usize::from(input.u8()) % image.len();
        let op = input.u8();
        let bytes = &mut image[file].1;
        let offset = input.u24() as usize % (bytes.len() + 1);
        match op {
            PATCH_REMOVE => {
                image.remove(file);
            }
            PATCH_TRUNCATE => bytes.truncate(offset),
            len => {
                let patch = input.take(usize::from(len));
                let end = (offset + patch.len()).min(FILE_BYTES_MAX);
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[offset..end].copy_from_slice(&patch[..end - offset]);
            }
        }
    }
    image
}

/// The options of every writable open: small segments, no free-space
/// reserve (the simulated disk has no limit anyway), no flusher thread.
fn log_options() -> LogOptions {
    LogOptions {
        segment_bytes: LOG_SEGMENT_BYTES,
        disk_reserve_bytes: 0,
        flush: FlushMode::Manual,
        ..LogOptions::default()
    }
}

/// The base log of `shape`, built once per process.
fn base_log(shape: usize) -> &'static DirImage {
    assert!(shape < BASE_SHAPES);
    static BASES: OnceLock<Vec<DirImage>> = OnceLock::new();
    &BASES.get_or_init(|| (0..BASE_SHAPES).map(build_base_log).collect())[shape]
}

/// A small valid log, built by the engine on a simulated disk:
///
/// - 0: one active segment with 5 records;
/// - 1: a sealed segment and an active one;
/// - 2: a compressed segment, a sealed one and an active one;
/// - 3: two segments and a META purge point inside the first.
fn build_base_log(shape: usize) -> DirImage {
    let storage = SimStorage::new(SimConfig { seed: SIM_SEED });
    let log = Log::open_with(Arc::new(storage.clone()), Path::new(LOG_DIR), log_options())
        .expect("a fresh log on an empty simulated disk opens");
    let built = match shape {
        0 => append_records(&log, 5),
        1 => append_records(&log, 8)
            .and_then(|()| log.seal())
            .and_then(|()| append_records(&log, 3)),
        2 => append_records(&log, 4)
            .and_then(|()| log.seal())
            .and_then(|()| append_records(&log, 4))
            .and_then(|()| log.seal())
            .and_then(|()| append_records(&log, 2))
            .and_then(|()| log.compress_cold(1).map(drop)),
        _ => append_records(&log, 6)
            .and_then(|()| log.seal())
            .and_then(|()| append_records(&log, 6))
            .and_then(|()| log.purge_before(4)),
    };
    built.unwrap_or_else(|error| panic!("building base log {shape} on a fault-free disk failed: {error}"));
    drop(log);
    read_dir_image(&storage)
}

/// Appends `count` records, one commit each: raw payloads of varied
/// lengths, and every third a bench payload.
fn append_records(log: &Log, count: u64) -> farmlog_engine::Result<()> {
    for position in 0..count {
        let sequence = log.next_index();
        let (kind, payload) = if sequence.is_multiple_of(3) {
            let bench = BenchPayload {
                appender: 1,
                sequence,
                body: vec![sequence as u8; (sequence % 5) as usize * 7],
            };
            (kinds::BENCH, kinds::encode_bench(&bench))
        } else {
            (kinds::RAW, vec![0xA0 | position as u8; (sequence * 13 % 61) as usize])
        };
        log.append(&[NewRecord {
            term: 1 + sequence / 4,
            group: 0,
            kind,
            payload: &payload,
        }])?;
    }
    Ok(())
}

/// Writes the files of `image` into the log directory. A name that is
/// already taken (the raw mode can choose one twice) keeps its first file.
fn write_dir_image(storage: &SimStorage, image: &DirImage) {
    let dir = Path::new(LOG_DIR);
    storage
        .create_dir_all(dir)
        .expect("creating a directory on a fault-free simulated disk");
    for (name, bytes) in image {
        let Ok(file) = storage.open(&dir.join(name), OpenMode::CreateNew) else {
            continue;
        };
        file.write_all_at(bytes, 0)
            .expect("writing a small file on a fault-free simulated disk");
    }
}

/// Every file of the log directory but the lock, sorted by name.
fn read_dir_image(storage: &SimStorage) -> DirImage {
    let dir = Path::new(LOG_DIR);
    let names = storage.list(dir).expect("the log directory exists");
    names
        .into_iter()
        .filter(|name| name != LOCK_NAME)
        .map(|name| {
            let file = storage
                .open(&dir.join(&name), OpenMode::Read)
                .expect("a listed file opens");
            let len = file.len().expect("a simulated file has a length");
            let mut bytes = vec![0u8; usize::try_from(len).expect("simulated files fit in memory")];
            file.read_exact_at(&mut bytes, 0)
                .expect("a simulated file reads to its length");
            (name, bytes)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Fixing checksums: recomputes every crc field whose structure's magic is
// in place, leaving every other byte as the input made it.
// ---------------------------------------------------------------------------

fn fix_checksums(image: &mut DirImage) {
    for (name, bytes) in image.iter_mut() {
        if name.ends_with(".seg.zst") {
            fix_compressed(bytes);
        } else if name.ends_with(".seg") {
            fix_segment(bytes);
        } else if name == META_NAME {
            fix_meta(bytes);
        }
    }
}

fn fix_segment(bytes: &mut [u8]) {
    if bytes.len() >= SEGMENT_HEADER_BYTES && bytes[..8] == SEGMENT_MAGIC {
        put_crc_skipping(&mut bytes[..SEGMENT_HEADER_BYTES], 12);
    }
    for slot in WATERMARK_SLOT_OFFSETS {
        let start = slot as usize;
        if let Some(watermark) = bytes.get_mut(start..start + WATERMARK_BYTES) {
            if watermark[..4] == WATERMARK_MAGIC {
                put_crc_skipping(watermark, 4);
            }
        }
    }
    fix_records(bytes);
    fix_footer(bytes);
}

/// Reseals the crc of each record of the chain that starts at the first
/// record offset, as long as headers parse and records fit in the file.
fn fix_records(bytes: &mut [u8]) {
    let mut offset = RECORDS_OFFSET as usize;
    while let Some(header) = bytes.get(offset..offset + RECORD_HEADER_BYTES) {
        if header.iter().all(|&byte| byte == 0) || header[28] != RECORD_VERSION {
            return;
        }
        let payload_len = format::read_u32(header, 0) as usize;
        let end = offset + format::framed_len(payload_len);
        let Some(record) = bytes.get_mut(offset..end) else {
            return;
        };
        format::seal_record_crc(record, payload_len);
        offset = end;
    }
}

/// Recomputes a footer's index block crc (when its record count fits the
/// file) and its own crc.
fn fix_footer(bytes: &mut [u8]) {
    let Some(footer_at) = bytes.len().checked_sub(FOOTER_BYTES) else {
        return;
    };
    if bytes[footer_at..footer_at + 8] != FOOTER_MAGIC {
        return;
    }
    let record_count = format::read_u64(&bytes[footer_at..], 32);
    let index_start = record_count
        .checked_mul(INDEX_ENTRY_BYTES as u64)
        .and_then(|index_bytes| (footer_at as u64).checked_sub(index_bytes));
    if let Some(index_start) = index_start {
        let index_crc = crc32(&bytes[index_start as usize..footer_at]);
        bytes[footer_at + 48..footer_at + 52].copy_from_slice(&index_crc.to_le_bytes());
    }
    put_crc_skipping(&mut bytes[footer_at..], 12);
}

fn fix_compressed(bytes: &mut [u8]) {
    if bytes.len() < COMPRESSED_HEADER_BYTES || bytes[..8] != COMPRESSED_MAGIC {
        return;
    }
    let body_crc = crc32(&bytes[COMPRESSED_HEADER_BYTES..]);
    bytes[48..52].copy_from_slice(&body_crc.to_le_bytes());
    put_crc_skipping(&mut bytes[..COMPRESSED_HEADER_BYTES], 12);
}

fn fix_meta(bytes: &mut [u8]) {
    if bytes.len() >= META_BYTES && bytes[..8] == META_MAGIC {
        put_crc_skipping(&mut bytes[..META_BYTES], 12);
    }
}

/// Writes at `crc_at` the crc of `bytes` leaving out those 4 bytes: the
/// layout of every crc field of the format but the record's.
fn put_crc_skipping(bytes: &mut [u8], crc_at: usize) {
    let crc = crc32_update(crc32_update(!0, &bytes[..crc_at]), &bytes[crc_at + 4..]);
    bytes[crc_at..crc_at + 4].copy_from_slice(&(!crc).to_le_bytes());
}

/// crc32 with the IEEE polynomial, as the engine's crc32fast computes it.
/// Written out here so that this file needs no dependency but the engine.
fn crc32(bytes: &[u8]) -> u32 {
    !crc32_update(!0, bytes)
}

fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        crc = CRC32_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

static CRC32_TABLE: [u32; 256] = crc32_table();

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut entry = 0;
    while entry < 256 {
        let mut crc = entry as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[entry] = crc;
        entry += 1;
    }
    table
}

// ---------------------------------------------------------------------------
// Opening and exercising the directory.
// ---------------------------------------------------------------------------

fn exercise_dir(storage: &SimStorage) {
    let dir = Path::new(LOG_DIR);
    let before = read_dir_image(storage);
    match Log::open_read_only_with(Arc::new(storage.clone()), dir) {
        Ok(log) => read_everything(&log),
        Err(error) => describe(&error),
    }
    assert!(
        read_dir_image(storage) == before,
        "a read-only open changed the log directory"
    );

    let appended = match Log::open_with(Arc::new(storage.clone()), dir, log_options()) {
        Ok(log) => {
            read_everything(&log);
            append_probe(&log)
        }
        Err(error) => {
            describe(&error);
            None
        }
    };
    let Some(index) = appended else {
        return;
    };
    // The probe was acknowledged durable: it must survive a reopen.
    let log = Log::open_with(Arc::new(storage.clone()), dir, log_options())
        .unwrap_or_else(|error| panic!("reopening after an acknowledged append failed: {error}"));
    let record = log
        .read(index)
        .unwrap_or_else(|error| panic!("the acknowledged record {index} is unreadable after a reopen: {error}"));
    assert_eq!(record.payload(), PROBE_PAYLOAD);
    read_everything(&log);
}

/// Reads every record in order, reads the ends by index, and verifies.
/// Errors are fine; wrong answers are not.
fn read_everything(log: &Log) {
    let (first, next) = (log.first_index(), log.next_index());
    assert!(first <= next, "first index {first} is past the next index {next}");
    let _ = log.segments();
    let _ = log.recovery_report();
    for (position, record) in log.range(..).take(RECORDS_READ_MAX).enumerate() {
        let Ok(record) = record else {
            break;
        };
        let expected = first.checked_add(position as u64);
        assert_eq!(Some(record.index()), expected, "range skipped or repeated an index");
        check_record_payload(record.kind(), record.payload());
    }
    if let Some(last) = log.last_index() {
        assert_eq!(last + 1, next);
        for index in [first, last] {
            if let Ok(record) = log.read(index) {
                assert_eq!(record.index(), index);
            }
        }
    }
    assert!(
        matches!(log.read(next), Err(Error::OutOfRange { .. })),
        "reading the next index {next} must be out of range"
    );
    if let Err(error) = log.verify(&mut |_| {}) {
        describe(&error);
    }
}

fn check_record_payload(kind: u16, payload: &[u8]) {
    assert_eq!(
        payload.as_ptr() as usize % RECORD_ALIGN,
        0,
        "a record's payload must be {RECORD_ALIGN}-byte aligned"
    );
    if kind == kinds::BENCH {
        if let Ok(bench) = kinds::access_bench(payload) {
            assert_inside(bench.body.as_slice(), payload);
        }
    }
}

/// Appends one record; `Some(index)` if it was acknowledged, after checking
/// that it reads back.
fn append_probe(log: &Log) -> Option<u64> {
    let probe = NewRecord {
        term: 1,
        group: 0,
        kind: kinds::RAW,
        payload: PROBE_PAYLOAD,
    };
    match log.append(&[probe]) {
        Ok(index) => {
            let record = log
                .read(index)
                .unwrap_or_else(|error| panic!("the record {index} just appended is unreadable: {error}"));
            assert_eq!(record.payload(), PROBE_PAYLOAD);
            Some(index)
        }
        Err(error) => {
            describe(&error);
            None
        }
    }
}

/// Renders an error, so that its `Display` (which formats paths, offsets
/// and nested errors) runs too.
fn describe(error: &Error) {
    let _ = error.to_string();
    let _ = error.corruption();
}

// ---------------------------------------------------------------------------
// Decoding.
// ---------------------------------------------------------------------------

/// Decodes records one after another from `offset`, as the tail scan does.
fn check_record_chain(data: &[u8], mut offset: usize, limit: usize) {
    // Each record is at least a header long, so the chain ends by itself.
    while let Some(framed) = check_slot(data, offset, limit) {
        offset += framed;
    }
}

/// Decodes one slot and checks the answer against the bytes; returns the
/// framed length of a valid record.
fn check_slot(data: &[u8], offset: usize, limit: usize) -> Option<usize> {
    let bound = limit.min(data.len());
    match format::decode_record(data, offset, limit) {
        Slot::Valid(header) => {
            let framed = usize::try_from(header.framed_len()).expect("a u32 length frames within usize");
            assert!(offset + framed <= bound, "a valid record runs past its limit");
            let payload_start = offset + RECORD_HEADER_BYTES;
            let payload = &data[payload_start..payload_start + header.length as usize];
            assert_eq!(
                RecordHeader::parse(&header.encode_without_crc()),
                Ok(RecordHeader { crc: 0, ..header }),
                "a record header does not round-trip"
            );
            if header.kind == kinds::BENCH {
                check_bench(payload);
            }
            Some(framed)
        }
        Slot::Zero => {
            let end = offset + RECORD_HEADER_BYTES;
            assert!(end <= bound, "a zero slot past the limit");
            assert!(
                data[offset..end].iter().all(|&byte| byte == 0),
                "a non-zero slot read as zero"
            );
            None
        }
        Slot::Invalid(kind) => {
            let _ = kind.to_string();
            None
        }
    }
}

/// Every other structure of the format, at the start (and, for the
/// footer, at the end) of `data`. Whatever decodes must round-trip.
fn check_structures(data: &[u8]) {
    let segment_header = SegmentHeader::decode(data);
    if let Ok(header) = segment_header {
        assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
    }
    let footer_at = data.len().saturating_sub(FOOTER_BYTES);
    for bytes in [data, &data[footer_at..]] {
        let Ok(Some(footer)) = Footer::decode(bytes) else {
            continue;
        };
        assert_eq!(Footer::decode(&footer.encode()), Ok(Some(footer)));
        let _ = footer.index_offset(data.len() as u64);
        if let Ok(header) = segment_header {
            if footer.check(&header).is_ok() {
                let index_offset = footer
                    .index_offset(header.capacity)
                    .expect("a checked footer has an index");
                assert!(footer.records_end <= index_offset);
            }
        }
    }
    if let Some(watermark) = Watermark::decode(data) {
        assert_eq!(Watermark::decode(&watermark.encode()), Some(watermark));
    }
    let _ = Watermark::newest(data);
    if let Ok(header) = CompressedHeader::decode(data) {
        assert_eq!(CompressedHeader::decode(&header.encode()), Ok(header));
    }
    if let Ok(first_index) = format::decode_meta(data) {
        assert_eq!(format::decode_meta(&format::encode_meta(first_index)), Ok(first_index));
    }
    check_index_entries(data);
}

/// Looks up index block entries near the block's end and at a position
/// read from the input.
fn check_index_entries(data: &[u8]) {
    let entries = data.len() / INDEX_ENTRY_BYTES;
    let mut position_bytes = [0u8; 8];
    let taken = data.len().min(8);
    position_bytes[..taken].copy_from_slice(&data[..taken]);
    let from_input = u64::from_le_bytes(position_bytes) as usize;
    for position in [0, entries.saturating_sub(1), entries, from_input] {
        let entry = format::index_entry(data, position);
        assert_eq!(
            entry.is_some(),
            position < entries,
            "index entry {position} of {entries}"
        );
    }
}

/// Validates `bytes` as a bench payload at a 16-byte aligned address and
/// at an 8-byte aligned one that is not 16-byte aligned.
fn check_bench(bytes: &[u8]) {
    for misalignment in [0, 8] {
        let mut buffer = vec![0u8; bytes.len() + 32];
        let start = (16 - buffer.as_ptr() as usize % 16) % 16 + misalignment;
        let copy = &mut buffer[start..start + bytes.len()];
        copy.copy_from_slice(bytes);
        if let Ok(bench) = kinds::access_bench(copy) {
            let _ = (bench.appender, bench.sequence);
            assert_inside(bench.body.as_slice(), copy);
        }
    }
}

/// Panics unless `inner` lies within `outer`: a zero-copy view must point
/// into the bytes it was validated from.
fn assert_inside(inner: &[u8], outer: &[u8]) {
    let outer_range = outer.as_ptr_range();
    let inner_range = inner.as_ptr_range();
    assert!(
        outer_range.start <= inner_range.start && inner_range.end <= outer_range.end,
        "a zero-copy view points outside its bytes"
    );
}

// ---------------------------------------------------------------------------
// Seed corpora.
// ---------------------------------------------------------------------------

/// One seed input: its target (and corpus directory), file name and bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

/// The seed corpora of both targets: valid logs and records, and a few
/// near misses, so that the fuzzer starts past the magic and crc checks.
pub fn seed_inputs() -> Vec<Seed> {
    let mut seeds = open_dir_seeds();
    seeds.extend(decode_record_seeds());
    seeds.extend(regression_inputs());
    seeds
}

/// Inputs that made the engine panic, written by hand after the fuzzer (or
/// a reading of the code) found each bug, so that the replay test keeps
/// reproducing it until it is fixed, and guards the fix after that.
fn regression_inputs() -> Vec<Seed> {
    let mutate_fixed = |shape: u8| CONTROL_MUTATE | CONTROL_FIX_CHECKSUMS | (shape << CONTROL_SHAPE_SHIFT);
    let meta_file = 2; // base log 3's files, by name: segments 1 and 2, META
    let compressed_file = 0; // base log 2's files: 1.seg.zst, 2.seg, 3.seg
    let index_max = u64::MAX.to_le_bytes();
    let mut sealed_first_index_max = patch_input(mutate_fixed(1), 0, 24, &(u64::MAX - 1).to_le_bytes());
    sealed_first_index_max
        .extend_from_slice(&patch_input(0, 0, LOG_SEGMENT_BYTES as u32 - 64 + 24, &(u64::MAX - 1).to_le_bytes())[1..]);
    vec![
        Seed {
            // META's purge point past the end of an unsealed last segment
            // (a crash inside `purge_before(past the end)` leaves this):
            // the log claims indexes it does not hold and `range` indexes
            // past `active_offsets` (log/mod.rs, `locate`).
            target: OPEN_DIR,
            name: "regression-purge-point-past-active-end",
            bytes: patch_input(mutate_fixed(3), meta_file, 16, &100u64.to_le_bytes()),
        },
        Seed {
            // A compressed segment's record count is trusted: first index +
            // record count overflows (recovery.rs, `segment_end`).
            target: OPEN_DIR,
            name: "regression-compressed-record-count-overflow",
            bytes: patch_input(mutate_fixed(2), compressed_file, 32, &index_max),
        },
        Seed {
            // A sealed segment whose header and footer agree on a first
            // index near u64::MAX: `Footer::check` accepts it and first
            // index + record count overflows (recovery.rs, `segment_end`).
            target: OPEN_DIR,
            name: "regression-sealed-first-index-overflow",
            bytes: sealed_first_index_max,
        },
        Seed {
            // An empty log whose META purge point is u64::MAX (what
            // `purge_before(u64::MAX)` writes): the next append computes
            // its last index with an overflow (commit.rs, `write_batch`).
            target: OPEN_DIR,
            name: "regression-append-at-index-max",
            bytes: raw_files_input(&[], Some(u64::MAX)),
        },
        Seed {
            // A segment named and headed with sequence u64::MAX: the next
            // sequence number overflows (recovery.rs, `recover`).
            target: OPEN_DIR,
            name: "regression-sequence-max",
            bytes: raw_files_input(&[(7, fresh_segment(u64::MAX, 1, &[]))], None),
        },
        Seed {
            // An active segment whose first index is u64::MAX, holding
            // that record: the tail scan's next expected index overflows
            // (recovery.rs, `scan_tail`).
            target: OPEN_DIR,
            name: "regression-tail-index-max",
            bytes: raw_files_input(
                &[(
                    0,
                    fresh_segment(1, u64::MAX, &[encode_record(u64::MAX, kinds::RAW, b"last")]),
                )],
                None,
            ),
        },
        Seed {
            // `index_entry` checks position * 4 for overflow but not
            // position * 4 + 4 (format.rs, `index_entry`).
            target: DECODE_RECORD,
            name: "regression-index-entry-position-overflow",
            bytes: (u64::MAX / INDEX_ENTRY_BYTES as u64).to_le_bytes().to_vec(),
        },
    ]
}

/// A raw-mode input with the given (name selector, bytes) files and an
/// encoded META purge point; without the zeros that end the last file.
fn raw_files_input(files: &[(u8, Vec<u8>)], purge_point: Option<u64>) -> Vec<u8> {
    assert!(files.len() <= FILES_MAX);
    let count = files.len().max(1);
    let meta_choice = if purge_point.is_some() {
        RAW_META_ENCODED
    } else {
        RAW_META_NONE
    };
    let mut input = vec![0, (count - 1) as u8 | meta_choice << 2];
    if files.is_empty() {
        // The raw mode writes at least one file: make it a leftover
        // temporary, which opening ignores or removes.
        input.extend_from_slice(&[3 << 3, 0, 0, 0]);
    }
    for (selector, bytes) in files {
        input.push(*selector);
        input.extend_from_slice(&(bytes.len() as u32).to_le_bytes()[..3]);
    }
    if let Some(purge_point) = purge_point {
        input.extend_from_slice(&purge_point.to_le_bytes());
    }
    for (_, bytes) in files {
        input.extend_from_slice(bytes);
    }
    let kept = input.iter().rposition(|&byte| byte != 0).map_or(0, |last| last + 1);
    input.truncate(kept.max(2));
    input
}

/// A segment image as `segment::create` leaves it, with `records` written
/// from the first record offset.
fn fresh_segment(sequence: u64, first_index: u64, records: &[Vec<u8>]) -> Vec<u8> {
    let header = SegmentHeader {
        sequence,
        first_index,
        capacity: LOG_SEGMENT_BYTES,
    };
    let watermark = Watermark {
        generation: 0,
        durable_end: first_index,
        clean_end: 0,
    };
    let mut segment = vec![0u8; LOG_SEGMENT_BYTES as usize];
    segment[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
    let slot = watermark.slot_offset() as usize;
    segment[slot..slot + WATERMARK_BYTES].copy_from_slice(&watermark.encode());
    let mut offset = RECORDS_OFFSET as usize;
    for record in records {
        segment[offset..offset + record.len()].copy_from_slice(record);
        offset += record.len();
    }
    segment
}

fn open_dir_seeds() -> Vec<Seed> {
    let mutate = |shape: u8, fix: bool| {
        CONTROL_MUTATE | (shape << CONTROL_SHAPE_SHIFT) | if fix { CONTROL_FIX_CHECKSUMS } else { 0 }
    };
    let seed = |name, bytes| Seed {
        target: OPEN_DIR,
        name,
        bytes,
    };
    let first_payload = RECORDS_OFFSET as u32 + RECORD_HEADER_BYTES as u32;
    let torn_at = records_end(&base_log(0)[0].1) as u32;
    vec![
        seed("seed-mutate-active", vec![mutate(0, false)]),
        seed("seed-mutate-sealed-active", vec![mutate(1, false)]),
        seed("seed-mutate-compressed", vec![mutate(2, false)]),
        seed("seed-mutate-purged", vec![mutate(3, true)]),
        // A payload byte changed and the crc fixed: a valid, different log.
        seed(
            "seed-mutate-sealed-payload-fixed",
            patch_input(mutate(1, true), 0, first_payload, &[0x5a]),
        ),
        // Garbage after the last record: a torn tail to cut off.
        seed(
            "seed-mutate-torn-tail",
            patch_input(mutate(0, false), 0, torn_at, &[0xab; 40]),
        ),
        // A record flipped in the durable part of the active segment.
        seed(
            "seed-mutate-durable-damaged",
            patch_input(mutate(0, false), 0, first_payload, &[0xff]),
        ),
        seed("seed-raw-empty-file", vec![0]),
        seed("seed-raw-active", raw_input(base_log(0), false)),
        seed("seed-raw-sealed-active", raw_input(base_log(1), false)),
        seed("seed-raw-compressed", raw_input(base_log(2), false)),
        seed("seed-raw-purged-meta", raw_input(base_log(3), true)),
    ]
}

/// A mutation-mode input with one write patch.
fn patch_input(control: u8, file: u8, offset: u32, bytes: &[u8]) -> Vec<u8> {
    assert!(offset < 1 << 24 && bytes.len() < usize::from(PATCH_TRUNCATE));
    let mut input = vec![control, file, bytes.len() as u8];
    input.extend_from_slice(&offset.to_le_bytes()[..3]);
    input.extend_from_slice(bytes);
    input
}

/// The raw-mode input that rebuilds `image` (at most one META and
/// FILES_MAX segment files named 1, 2, 3), without the zeros that end the
/// last file.
fn raw_input(image: &DirImage, fix: bool) -> Vec<u8> {
    let meta = image.iter().find(|(name, _)| name == META_NAME);
    let files: Vec<&(String, Vec<u8>)> = image.iter().filter(|(name, _)| name != META_NAME).collect();
    assert!((1..=FILES_MAX).contains(&files.len()));
    let meta_choice = if meta.is_some() { RAW_META_BYTES } else { RAW_META_NONE };
    let control = if fix { CONTROL_FIX_CHECKSUMS } else { 0 };
    let mut input = vec![control, (files.len() - 1) as u8 | meta_choice << 2];
    for (position, (name, bytes)) in files.iter().enumerate() {
        let selector = if name.ends_with(".seg.zst") { 2 << 3 } else { 0 };
        assert_eq!(&file_name(selector, position), name, "raw_input names files 1, 2, 3");
        assert!(bytes.len() <= FILE_BYTES_MAX);
        input.push(selector);
        input.extend_from_slice(&(bytes.len() as u32).to_le_bytes()[..3]);
    }
    if let Some((_, bytes)) = meta {
        assert_eq!(bytes.len(), META_BYTES);
        input.extend_from_slice(bytes);
    }
    for (_, bytes) in &files {
        input.extend_from_slice(bytes);
    }
    let kept = input.iter().rposition(|&byte| byte != 0).map_or(0, |last| last + 1);
    input.truncate(kept);
    input
}

/// The offset just past the last record of the chain in a segment image.
fn records_end(segment: &[u8]) -> usize {
    let mut offset = RECORDS_OFFSET as usize;
    while let Slot::Valid(header) = format::decode_record(segment, offset, segment.len()) {
        offset += header.framed_len() as usize;
    }
    offset
}

fn decode_record_seeds() -> Vec<Seed> {
    let seed = |name, bytes| Seed {
        target: DECODE_RECORD,
        name,
        bytes,
    };
    let bench = kinds::encode_bench(&BenchPayload {
        appender: 2,
        sequence: 9,
        body: b"seed body".to_vec(),
    });
    let raw_record = encode_record(7, kinds::RAW, b"hello, farm");
    let bench_record = encode_record(8, kinds::BENCH, &bench);
    let segment_header = SegmentHeader {
        sequence: 1,
        first_index: 1,
        capacity: LOG_SEGMENT_BYTES,
    };
    let footer = Footer {
        sequence: 1,
        first_index: 1,
        record_count: 2,
        records_end: RECORDS_OFFSET + 128,
        index_crc: 0,
    };
    let compressed = CompressedHeader {
        sequence: 1,
        first_index: 1,
        record_count: 2,
        image_len: LOG_SEGMENT_BYTES,
        body_crc: 0,
    };
    let watermark = Watermark {
        generation: 3,
        durable_end: 12,
        clean_end: 0,
    };
    vec![
        seed("seed-record-raw", raw_record.clone()),
        seed("seed-record-bench", bench_record.clone()),
        seed(
            "seed-record-chain",
            [raw_record.clone(), bench_record, vec![0; RECORD_HEADER_BYTES]].concat(),
        ),
        seed(
            "seed-record-torn",
            raw_record[..raw_record.len() - RECORD_ALIGN].to_vec(),
        ),
        seed("seed-bench-payload", bench),
        seed("seed-segment-header", segment_header.encode().to_vec()),
        seed("seed-footer", footer.encode().to_vec()),
        seed("seed-compressed-header", compressed.encode().to_vec()),
        seed("seed-watermark", watermark.encode().to_vec()),
        seed("seed-meta", format::encode_meta(4).to_vec()),
    ]
}

/// A framed, sealed record.
fn encode_record(index: u64, kind: u16, payload: &[u8]) -> Vec<u8> {
    let header = RecordHeader {
        length: payload.len() as u32,
        crc: 0,
        index,
        term: 2,
        group: 0,
        kind,
    };
    let mut record = vec![0u8; format::framed_len(payload.len())];
    record[..RECORD_HEADER_BYTES].copy_from_slice(&header.encode_without_crc());
    record[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload.len()].copy_from_slice(payload);
    format::seal_record_crc(&mut record, payload.len());
    record
}
