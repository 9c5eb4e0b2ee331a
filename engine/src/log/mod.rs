//! The segmented log: append, read, truncate, purge, seal, compress.
//!
//! Reads go through read-only memory maps of every segment and are
//! zero-copy: a [`Record`] borrows its payload straight from the page cache
//! (or from a decompressed image). Writes are positioned writes plus
//! `fdatasync`, never through a map. Appends are group-committed: many
//! appenders share one sync, and an append is acknowledged only when its
//! bytes are durable (see `commit.rs`).
//!
//! Invariants:
//! - Indexes are dense: the log holds every index in `[first, next)`.
//! - A record is visible to readers once written, and acknowledged only
//!   once durable; `durable_end <= next_index`.
//! - Only `truncate_after` removes records from the end, and it lowers the
//!   durable watermark on disk before it zeroes anything.

mod commit;
pub mod format;
pub mod recovery;
pub mod segment;
mod verify;

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{CorruptionKind, Error, Result};
use crate::io::{LockGuard, OsStorage, ReadMap, Storage};
pub use commit::OnDurable;
use format::{Slot, RECORD_HEADER_BYTES};
pub use recovery::{RecoveryReport, TailCase};
use segment::{Body, Segment};
pub use verify::VerifySummary;

/// Default segment capacity: 64 MiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment capacity: room for the header page, a few records, the
/// index block and the footer.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest segment capacity: record offsets in the index block are u32.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Largest payload of one record.
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;
/// Most records in one append.
pub const BATCH_RECORDS_MAX: usize = 16 << 10;
/// Most bytes (framed) in one append.
pub const BATCH_BYTES_MAX: u64 = 64 << 20;
/// Appenders wait while this many written bytes are not yet synced.
pub const UNSYNCED_BYTES_MAX: u64 = 64 << 20;
/// Appends waiting for a sync, at most; further appenders wait.
pub const PENDING_APPENDS_MAX: usize = 64 << 10;
/// Client writes are refused while free space is below this many times
/// the disk reserve (see [`Log::check_room_for_clients`]).
pub const CLIENT_RESERVE_FACTOR: u64 = 2;

/// Default free-space reserve: appends are refused below it.
pub const DISK_RESERVE_BYTES_DEFAULT: u64 = 256 << 20;
/// How long the log must be idle before the flusher brings the on-disk
/// watermark up to date with one extra sync.
pub const IDLE_WATERMARK_DELAY_DEFAULT: Duration = Duration::from_millis(20);
/// Purged segment files kept for reuse, at most: a log with retention
/// reuses them instead of writing a new segment's worth of zeros.
pub const RECYCLED_SEGMENTS_MAX: usize = 2;
/// Decompressed segment images kept in memory, at most.
pub const DECOMPRESSED_CACHED_MAX: usize = 2;

const LOCK_NAME: &str = "LOCK";

/// Who drives the group commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMode {
    /// A flusher thread syncs whenever appends are waiting, and blocking
    /// appenders lead a commit themselves when none is running.
    Background,
    /// No thread: blocking appends lead their own commits; appends with a
    /// callback ([`Log::submit`]) complete only when the caller runs
    /// [`Log::commit_pending`]. For deterministic simulation.
    Manual,
}

/// Whether acknowledgements wait for `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only after `fdatasync`. The default.
    Synced,
    /// UNSAFE: acknowledge after the write, without syncing. A power loss
    /// loses acknowledged records. Only for benchmarks and throwaway data.
    UnsafeNoSync,
}

/// How a writable log is opened.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Capacity of each segment file, in bytes.
    pub segment_bytes: u64,
    /// Appends are refused while less than this is free on the disk.
    pub disk_reserve_bytes: u64,
    pub flush: FlushMode,
    pub durability: Durability,
    /// Index of the first record of a brand-new log.
    pub first_index: u64,
    /// See [`IDLE_WATERMARK_DELAY_DEFAULT`].
    pub idle_watermark_delay: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            disk_reserve_bytes: DISK_RESERVE_BYTES_DEFAULT,
            flush: FlushMode::Background,
            durability: Durability::Synced,
            first_index: 1,
            idle_watermark_delay: IDLE_WATERMARK_DELAY_DEFAULT,
        }
    }
}

impl LogOptions {
    fn check(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes)
            || !self.segment_bytes.is_multiple_of(format::RECORDS_OFFSET)
        {
            return Err(Error::invalid(format!(
                "segment_bytes must be a multiple of 4096 between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}, got {}",
                self.segment_bytes
            )));
        }
        if self.first_index > format::INDEX_MAX {
            return Err(Error::invalid(format!(
                "first_index must be at most {}, got {}",
                format::INDEX_MAX,
                self.first_index
            )));
        }
        Ok(())
    }
}

/// One record to append.
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    pub term: u64,
    /// Raft group; 0 until many groups share a log.
    pub group: u32,
    /// Type tag (see `crate::kinds`).
    pub kind: u16,
    pub payload: &'a [u8],
}

/// A record read from the log. Its payload is borrowed in place from the
/// segment's map and is 8-byte aligned; the record keeps the map alive.
#[derive(Clone, Debug)]
pub struct Record {
    bytes: Arc<dyn ReadMap>,
    offset: usize,
    header: format::RecordHeader,
    segment: u64,
}

impl Record {
    pub fn index(&self) -> u64 {
        self.header.index
    }
    pub fn term(&self) -> u64 {
        self.header.term
    }
    pub fn group(&self) -> u32 {
        self.header.group
    }
    pub fn kind(&self) -> u16 {
        self.header.kind
    }
    pub fn crc(&self) -> u32 {
        self.header.crc
    }
    /// The segment holding the record, and the record's offset in it.
    pub fn location(&self) -> (u64, u64) {
        (self.segment, self.offset as u64)
    }
    /// Bytes on disk, header and padding included.
    pub fn framed_len(&self) -> u64 {
        self.header.framed_len()
    }
    /// The payload, in place, 8-byte aligned.
    pub fn payload(&self) -> &[u8] {
        let start = self.offset + RECORD_HEADER_BYTES;
        &self.bytes.bytes()[start..start + self.header.length as usize]
    }
}

/// Counters and sizes, for `stat` and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub segments: usize,
    pub compressed_segments: usize,
    pub first_index: u64,
    pub next_index: u64,
    /// Bytes of segment files on disk (compressed ones at their size).
    pub file_bytes: u64,
    /// `fdatasync` calls made by group commits since open.
    pub commit_syncs: u64,
    /// Records acknowledged durable since open.
    pub records_acknowledged: u64,
    /// How long those syncs took: counts per bucket of
    /// [`SYNC_LATENCY_BOUNDS_MICROS`], plus one last bucket for longer.
    pub sync_latency_counts: Vec<u64>,
    /// The syncs' total time, in microseconds.
    pub sync_micros_total: u64,
}

/// Upper bounds, in microseconds, of the buckets that count how long a
/// commit's `fdatasync` took: powers of two from 16 µs to about a second.
pub const SYNC_LATENCY_BOUNDS_MICROS: [u64; 17] = [
    16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16_384, 32_768, 65_536, 131_072, 262_144, 524_288, 1_048_576,
];

/// Counts commit syncs by how long they took (see [`LogStats`]).
#[derive(Debug, Default)]
pub(crate) struct SyncLatency {
    counts: [AtomicU64; SYNC_LATENCY_BOUNDS_MICROS.len() + 1],
    micros_total: AtomicU64,
}

impl SyncLatency {
    pub(crate) fn record(&self, micros: u64) {
        let bucket = SYNC_LATENCY_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.micros_total.fetch_add(micros, Ordering::Relaxed);
    }

    fn counts(&self) -> Vec<u64> {
        self.counts.iter().map(|count| count.load(Ordering::Relaxed)).collect()
    }
}

/// What readers see: the segments and where the log starts and ends.
#[derive(Debug)]
struct View {
    first_index: u64,
    /// One past the last written (visible) record.
    next_index: u64,
    segments: Vec<Arc<Segment>>,
    /// Offsets of the records of the last segment while it is active.
    active_offsets: Vec<u32>,
}

/// The segmented log. Cheap to share behind an `Arc`; every method takes
/// `&self`.
pub struct Log {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    preallocator: Option<JoinHandle<()>>,
    /// False for the flusher thread's handle: only the owner closes.
    owner: bool,
}

struct Shared {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    options: LogOptions,
    view: RwLock<View>,
    /// `None` for a read-only log.
    writer: Option<commit::WriterCell>,
    report: RecoveryReport,
    decompressed: Mutex<Vec<(u64, Arc<dyn ReadMap>)>>,
    commit_syncs: AtomicU64,
    sync_latency: SyncLatency,
    records_acknowledged: AtomicU64,
    _lock: Option<Box<dyn LockGuard>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("read_only", &self.shared.writer.is_none())
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (creating if needed) a log directory for writing, on the real
    /// file system. Runs recovery (see `recovery.rs`).
    ///
    /// On disk when it returns `Ok`: the directory and its LOCK file exist;
    /// any torn tail has been zeroed and synced; leftover temporaries and
    /// segments wholly below the purge point are gone.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Self> {
        Self::open_with(Arc::new(OsStorage), dir.as_ref(), options)
    }

    /// [`Log::open`] on any [`Storage`] (a simulated one in tests).
    pub fn open_with(storage: Arc<dyn Storage>, dir: &Path, options: LogOptions) -> Result<Self> {
        options.check()?;
        storage
            .create_dir_all(dir)
            .map_err(|error| Error::io(format!("creating {}", dir.display()), error))?;
        let lock = storage.lock(&dir.join(LOCK_NAME)).map_err(|error| {
            if error.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked { dir: dir.to_owned() }
            } else {
                Error::io("taking the directory lock", error)
            }
        })?;
        let recovered = recovery::recover(storage.as_ref(), dir, options.first_index, recovery::Access::Writable)?;
        let writer = commit::WriterCell::new(&recovered, options.segment_bytes);
        let flush = options.flush;
        let log = Self::assemble(storage, dir, options, recovered, Some(writer), Some(lock));
        Ok(match flush {
            FlushMode::Background => log.with_flusher(),
            FlushMode::Manual => log,
        })
    }

    /// Opens a log directory read-only, on the real file system. It never
    /// writes, truncates, or takes the lock; it works beside a running
    /// writer and shows the log as it was when opened. A damaged tail is
    /// reported in [`Log::recovery_report`] instead of failing the open.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_read_only_with(Arc::new(OsStorage), dir.as_ref())
    }

    /// [`Log::open_read_only`] on any [`Storage`].
    pub fn open_read_only_with(storage: Arc<dyn Storage>, dir: &Path) -> Result<Self> {
        let recovered = recovery::recover(storage.as_ref(), dir, 1, recovery::Access::ReadOnly)?;
        Ok(Self::assemble(
            storage,
            dir,
            LogOptions::default(),
            recovered,
            None,
            None,
        ))
    }

    fn assemble(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: LogOptions,
        recovered: recovery::Recovered,
        writer: Option<commit::WriterCell>,
        lock: Option<Box<dyn LockGuard>>,
    ) -> Self {
        let view = View {
            first_index: recovered.first_index,
            next_index: recovered.next_index,
            segments: recovered.segments,
            active_offsets: recovered.active_offsets,
        };
        let shared = Shared {
            storage,
            dir: dir.to_owned(),
            options,
            view: RwLock::new(view),
            writer,
            report: recovered.report,
            decompressed: Mutex::new(Vec::new()),
            commit_syncs: AtomicU64::new(0),
            sync_latency: SyncLatency::default(),
            records_acknowledged: AtomicU64::new(0),
            _lock: lock,
        };
        Self {
            shared: Arc::new(shared),
            flusher: None,
            preallocator: None,
            owner: true,
        }
    }

    /// Starts the flusher and preallocator threads.
    fn with_flusher(mut self) -> Self {
        // Without the flusher, blocking appends still lead their own
        // commits; without the preallocator, rollovers create segments
        // inline. Both are speed, not correctness.
        self.flusher = self.spawn("farmlog-flusher", Self::run_flusher);
        self.preallocator = self.spawn("farmlog-prealloc", Self::run_preallocator);
        self
    }

    fn spawn(&self, name: &str, body: fn(&Self)) -> Option<JoinHandle<()>> {
        let handle = Self {
            shared: self.shared.clone(),
            flusher: None,
            preallocator: None,
            owner: false,
        };
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&handle));
        spawned
            .map_err(|error| tracing::error!(%error, name, "could not start a thread"))
            .ok()
    }

    /// What opening found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.report
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The most bytes one append may take: every record framed (header,
    /// payload, padding) plus one index entry
    /// ([`format::INDEX_ENTRY_BYTES`]) each. A larger append is refused:
    /// one append never spans two segments.
    pub fn append_bytes_max(&self) -> u64 {
        segment::records_limit(self.shared.options.segment_bytes, 0) - format::RECORDS_OFFSET
    }

    /// Who drives the group commit (see [`FlushMode`]).
    pub fn flush_mode(&self) -> FlushMode {
        self.shared.options.flush
    }

    pub fn is_read_only(&self) -> bool {
        self.shared.writer.is_none()
    }

    /// The index of the first record (or of the next one, if empty).
    pub fn first_index(&self) -> u64 {
        self.view().first_index
    }

    /// The index the next appended record will get.
    pub fn next_index(&self) -> u64 {
        self.view().next_index
    }

    /// The index of the last record, `None` if the log is empty.
    pub fn last_index(&self) -> Option<u64> {
        let view = self.view();
        (view.next_index > view.first_index).then(|| view.next_index - 1)
    }

    /// Reads one record, checking its crc.
    pub fn read(&self, index: u64) -> Result<Record> {
        let (segment, offset) = self.locate(index)?;
        let bytes = self.segment_bytes(&segment)?;
        let offset = match offset {
            Some(offset) => offset,
            None => segment.sealed_offset(bytes.bytes(), index)?,
        };
        decode_at(&segment, bytes, offset, index)
    }

    /// Iterates over the records in `range` (clamped to the log), in order.
    /// Each record's crc is checked; the first problem ends the iteration
    /// with an error.
    pub fn range(&self, range: impl RangeBounds<u64>) -> RecordIter<'_> {
        let (first, next) = {
            let view = self.view();
            (view.first_index, view.next_index)
        };
        let start = match range.start_bound() {
            Bound::Included(&start) => start.max(first),
            Bound::Excluded(&start) => start.saturating_add(1).max(first),
            Bound::Unbounded => first,
        };
        let end = match range.end_bound() {
            Bound::Included(&end) => end.saturating_add(1).min(next),
            Bound::Excluded(&end) => end.min(next),
            Bound::Unbounded => next,
        };
        RecordIter {
            log: self,
            next: start,
            end,
            cursor: None,
        }
    }

    /// Counters and sizes.
    /// Whether there is room for new client writes: free space at least
    /// [`CLIENT_RESERVE_FACTOR`] times the disk reserve. A service refuses
    /// client writes below it, so that the appends that must go through
    /// (a follower's replication, a leader's own entries) still find the
    /// reserve free. Reads the free space; writes nothing.
    pub fn check_room_for_clients(&self) -> Result<()> {
        self.check_free_space(CLIENT_RESERVE_FACTOR)
    }

    pub fn stats(&self) -> LogStats {
        let view = self.view();
        let file_bytes = view
            .segments
            .iter()
            .map(|segment| match &segment.body {
                Body::Compressed { path, .. } => self
                    .shared
                    .storage
                    .open(path, crate::io::OpenMode::Read)
                    .and_then(|file| file.len())
                    .unwrap_or(0),
                _ => segment.header.capacity,
            })
            .sum();
        LogStats {
            segments: view.segments.len(),
            compressed_segments: view.segments.iter().filter(|segment| segment.is_compressed()).count(),
            first_index: view.first_index,
            next_index: view.next_index,
            file_bytes,
            commit_syncs: self.shared.commit_syncs.load(Ordering::Relaxed),
            sync_latency_counts: self.shared.sync_latency.counts(),
            sync_micros_total: self.shared.sync_latency.micros_total.load(Ordering::Relaxed),
            records_acknowledged: self.shared.records_acknowledged.load(Ordering::Relaxed),
        }
    }

    /// The sequence number, first index, record count and compression of
    /// every segment, in order.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let view = self.view();
        let last = view.segments.len().saturating_sub(1);
        view.segments
            .iter()
            .enumerate()
            .map(|(position, segment)| SegmentInfo {
                sequence: segment.sequence(),
                first_index: segment.first_index(),
                records: segment.sealed_count().unwrap_or(if position == last {
                    view.active_offsets.len() as u64
                } else {
                    0
                }),
                capacity: segment.header.capacity,
                sealed: segment.sealed_count().is_some(),
                compressed: segment.is_compressed(),
            })
            .collect()
    }

    fn view(&self) -> RwLockReadGuard<'_, View> {
        self.shared.view.read().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Finds the segment holding `index`, and the record's offset when the
    /// segment is active (sealed ones are looked up in their index block).
    /// A binary search over segments: O(log n).
    fn locate(&self, index: u64) -> Result<(Arc<Segment>, Option<u64>)> {
        let view = self.view();
        if index < view.first_index || index >= view.next_index {
            return Err(Error::OutOfRange {
                index,
                first: view.first_index,
                next: view.next_index,
            });
        }
        let position = view
            .segments
            .partition_point(|segment| segment.first_index() <= index)
            .checked_sub(1)
            .expect("first_index <= index, so some segment starts at or before it");
        let segment = view.segments[position].clone();
        let offset = match segment.body {
            Body::Active { .. } => Some(view.active_offsets[(index - segment.first_index()) as usize] as u64),
            _ => None,
        };
        Ok((segment, offset))
    }

    /// Drops a cached decompressed image: the segment's compressed form
    /// changed (it was restored for truncation, or compressed anew).
    fn forget_decompressed(&self, sequence: u64) {
        let mut cache = self
            .shared
            .decompressed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        cache.retain(|(cached, _)| *cached != sequence);
    }

    /// The bytes of a segment: its map, or a (cached) decompressed image.
    fn segment_bytes(&self, segment: &Segment) -> Result<Arc<dyn ReadMap>> {
        if !segment.is_compressed() {
            return segment.bytes(self.shared.storage.as_ref());
        }
        let mut cache = self
            .shared
            .decompressed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some((_, image)) = cache.iter().find(|(sequence, _)| *sequence == segment.sequence()) {
            return Ok(image.clone());
        }
        let image = segment.bytes(self.shared.storage.as_ref())?;
        if cache.len() >= DECOMPRESSED_CACHED_MAX {
            cache.remove(0);
        }
        cache.push((segment.sequence(), image.clone()));
        Ok(image)
    }
}

/// One segment, as `stat` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub sequence: u64,
    pub first_index: u64,
    pub records: u64,
    pub capacity: u64,
    pub sealed: bool,
    pub compressed: bool,
}

fn decode_at(segment: &Segment, bytes: Arc<dyn ReadMap>, offset: u64, index: u64) -> Result<Record> {
    let limit = segment::records_limit(segment.header.capacity, 0);
    match segment::read_slot(bytes.bytes(), offset, limit) {
        Slot::Valid(header) if header.index == index => Ok(Record {
            bytes,
            offset: offset as usize,
            header,
            segment: segment.sequence(),
        }),
        Slot::Valid(header) => Err(Error::Corrupt(segment.corrupt(
            offset,
            Some(index),
            CorruptionKind::UnexpectedIndex {
                expected: index,
                found: header.index,
            },
        ))),
        Slot::Zero => Err(Error::Corrupt(segment.corrupt(
            offset,
            Some(index),
            CorruptionKind::Missing { durable_end: index + 1 },
        ))),
        Slot::Invalid(kind) => Err(Error::Corrupt(segment.corrupt(offset, Some(index), kind))),
    }
}

/// Iterator over a range of records; see [`Log::range`]. Walks each
/// segment sequentially from the first record's offset.
pub struct RecordIter<'a> {
    log: &'a Log,
    next: u64,
    end: u64,
    cursor: Option<Cursor>,
}

struct Cursor {
    segment: Arc<Segment>,
    bytes: Arc<dyn ReadMap>,
    offset: u64,
    /// One past the last index in this segment that the iterator may read.
    segment_end: u64,
}

impl RecordIter<'_> {
    fn step(&mut self) -> Result<Record> {
        let index = self.next;
        let cursor = match &mut self.cursor {
            Some(cursor) if index < cursor.segment_end => cursor,
            _ => self.cursor.insert(self.log.cursor_at(index)?),
        };
        let record = decode_at(&cursor.segment, cursor.bytes.clone(), cursor.offset, index)?;
        cursor.offset += record.framed_len();
        Ok(record)
    }
}

impl Iterator for RecordIter<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let result = self.step();
        self.next = if result.is_ok() { self.next + 1 } else { self.end };
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.end - self.next) as usize;
        (0, Some(left))
    }
}

impl Log {
    fn cursor_at(&self, index: u64) -> Result<Cursor> {
        let (segment, offset) = self.locate(index)?;
        let bytes = self.segment_bytes(&segment)?;
        let offset = match offset {
            Some(offset) => offset,
            None => segment.sealed_offset(bytes.bytes(), index)?,
        };
        let segment_end = match segment.sealed_count() {
            Some(count) => segment.first_index() + count,
            None => u64::MAX,
        };
        Ok(Cursor {
            segment,
            bytes,
            offset,
            segment_end,
        })
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        if let Some(writer) = &self.shared.writer {
            writer.shut_down();
        }
        for thread in [self.flusher.take(), self.preallocator.take()].into_iter().flatten() {
            let _ = thread.join();
        }
        if self.shared.writer.is_some() {
            // Bring the watermark up to date so that the next open can tell
            // every acknowledged record from a torn tail.
            if let Err(error) = self.commit_pending().and_then(|()| self.mark_clean_close()) {
                tracing::warn!(%error, "final commit on close failed");
            }
            self.discard_recycled();
        }
    }
}
