//! The disk's own limits, measured with the engine's write pattern.
//!
//! The engine preallocates each segment by writing zeros and syncing, then
//! overwrites those zeros sequentially with positioned writes, each group
//! commit ending in one `fdatasync`. Overwriting already-written blocks
//! changes no file-system metadata, so `fdatasync` flushes data only. The
//! baselines here do exactly that on a [`SyncedFile`], without the engine,
//! to give the ceiling the engine's figures are compared with:
//!
//! - the sync rate: one small write + `fdatasync`, repeated (and the same
//!   with a second small write into the header page, as each engine
//!   commit also writes its durable watermark there);
//! - durable sequential bandwidth: large writes, one `fdatasync` each;
//! - the cost of preallocating one segment (what a rollover adds).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{BenchResult, Measured, RunLimit, MIB};

/// Size of the preallocated file the baselines overwrite: one default
/// segment.
pub const RAW_FILE_BYTES: u64 = 64 << 20;
/// Zeros are written in chunks of this size when preallocating (as the
/// engine does).
const ZERO_CHUNK_BYTES: usize = MIB;

/// Bytes at the start of a [`SyncedFile`] kept for a header page (where the
/// engine keeps its durable watermark); writes of records start after it.
pub const HEADER_PAGE_BYTES: u64 = 4096;
/// Where in the header page a [`SyncPattern::watermark`] goes (the
/// engine's first watermark slot).
const WATERMARK_OFFSET: u64 = 512;
/// Bytes of the engine's durable watermark.
pub const WATERMARK_BYTES: usize = 32;

/// What each commit of a raw baseline writes before its one `fdatasync`.
#[derive(Clone, Copy, Debug)]
pub struct SyncPattern<'a> {
    /// Written `writes_per_sync` times, at the next offsets.
    pub chunk: &'a [u8],
    pub writes_per_sync: usize,
    /// Also written at the start of the header page in every commit, as
    /// the engine writes its durable watermark there.
    pub watermark: Option<&'a [u8]>,
}

impl<'a> SyncPattern<'a> {
    /// `writes_per_sync` writes of `chunk`, then `fdatasync`.
    pub fn writes(chunk: &'a [u8], writes_per_sync: usize) -> Self {
        Self {
            chunk,
            writes_per_sync,
            watermark: None,
        }
    }

    /// The same, plus a write of `watermark` into the header page.
    pub fn with_watermark(self, watermark: &'a [u8]) -> Self {
        Self {
            watermark: Some(watermark),
            ..self
        }
    }
}

/// A preallocated file overwritten sequentially after its header page,
/// wrapping back when full, each group of writes made durable with
/// `fdatasync`.
#[derive(Debug)]
pub struct SyncedFile {
    file: File,
    capacity: u64,
    /// Where the next write goes.
    offset: u64,
}

impl SyncedFile {
    /// Creates `path` holding `capacity` zero bytes, written and synced.
    ///
    /// On disk when it returns `Ok`: the whole file, allocated and durable.
    pub fn preallocate(path: &Path, capacity: u64) -> BenchResult<Self> {
        assert!(capacity > HEADER_PAGE_BYTES);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|error| format!("creating {}: {error}", path.display()))?;
        write_zeros(&file, capacity)?;
        file.sync_data()?;
        Ok(Self {
            file,
            capacity,
            offset: HEADER_PAGE_BYTES,
        })
    }

    /// Writes what `pattern` says, then calls `fdatasync` once.
    ///
    /// On disk when it returns `Ok`: every write of this call, durable.
    pub fn write_and_sync(&mut self, pattern: SyncPattern<'_>) -> io::Result<()> {
        let chunk = pattern.chunk;
        assert!(!chunk.is_empty() && chunk.len() as u64 <= self.capacity - HEADER_PAGE_BYTES);
        assert!(pattern.writes_per_sync > 0);
        assert!(pattern
            .watermark
            .is_none_or(|watermark| WATERMARK_OFFSET + watermark.len() as u64 <= HEADER_PAGE_BYTES));
        for _ in 0..pattern.writes_per_sync {
            if self.offset + chunk.len() as u64 > self.capacity {
                self.offset = HEADER_PAGE_BYTES;
            }
            self.file.write_all_at(chunk, self.offset)?;
            self.offset += chunk.len() as u64;
        }
        if let Some(watermark) = pattern.watermark {
            self.file.write_all_at(watermark, WATERMARK_OFFSET)?;
        }
        self.file.sync_data()
    }
}

/// Repeats [`SyncedFile::write_and_sync`] within `limit`. One operation is
/// one `fdatasync`; each write of the chunk counts as a record.
pub fn run_synced_writes(file: &mut SyncedFile, pattern: SyncPattern<'_>, limit: RunLimit) -> BenchResult<Measured> {
    let start = Instant::now();
    let mut syncs = 0;
    while syncs < limit.operations_max && start.elapsed() < limit.time_max {
        file.write_and_sync(pattern)?;
        syncs += 1;
    }
    let writes = syncs * pattern.writes_per_sync as u64;
    Ok(Measured {
        operations: syncs,
        records: writes,
        bytes: writes * pattern.chunk.len() as u64,
        elapsed: start.elapsed(),
    })
}

/// Times what the engine does to start a segment: write `capacity` zeros
/// to a new temporary file, `fdatasync` it, rename it into place and sync
/// the directory. The file is removed afterwards (untimed).
pub fn time_preallocation(dir: &Path, capacity: u64) -> BenchResult<Duration> {
    let temp = dir.join("preallocated.tmp");
    let path = dir.join("preallocated");
    let start = Instant::now();
    let file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
    write_zeros(&file, capacity)?;
    file.sync_data()?;
    std::fs::rename(&temp, &path)?;
    File::open(dir)?.sync_all()?;
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(elapsed)
}

fn write_zeros(file: &File, capacity: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut offset = 0u64;
    while offset < capacity {
        let chunk = (capacity - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..chunk], offset)?;
        offset += chunk as u64;
    }
    Ok(())
}
