//! Opening a log directory: what is found on disk, and what is done about
//! it. Opening never reads the whole log: it reads each segment's header
//! and footer (two small ranges) and scans only the unsealed tail segment,
//! whose size is bounded by the segment capacity.
//!
//! ## What was durable: the watermark
//!
//! Each group commit writes, in the same `fdatasync` as its records, a
//! watermark into the active segment's header page: `durable_end`, every
//! index below which was *already* acknowledged durable by an earlier
//! commit. It lags one commit behind, so it never claims a record whose
//! sync had not returned (a torn sync can persist the header page without
//! the records). When the log goes idle, the flusher brings it up to date
//! with one more sync, off the acknowledgement path. Sealed segments are
//! durable as a whole (sealing syncs them before the next segment exists).
//!
//! What this costs: one 32-byte write per commit, in the same sync, and
//! one sync per idle period. What it leaves: a record of the last commit
//! before a crash, damaged after it was acknowledged, is indistinguishable
//! from a torn tail until the watermark catches up (at most one commit,
//! and only if the crash came within the idle delay of it).
//!
//! We did not use FAST'18's rule ("a valid record after a damaged one
//! proves the damaged one was durable") alone: when power fails during a
//! sync, later pages of the same commit can persist while earlier ones do
//! not, so a valid record after a torn one proves nothing for records that
//! were never acknowledged.
//!
//! ## The table of tail cases
//!
//! Scanning the tail segment from its first record, at each expected index
//! `i` (with `durable = i < durable_end`):
//!
//! | case                 | what is at the position           | durable | action                               |
//! |----------------------|-----------------------------------|---------|--------------------------------------|
//! | `Valid`              | a record, crc ok, index `i`       | any     | accept it, go on                     |
//! | `CleanEnd`           | zeros, or a record of a recycled file's earlier life (index below the segment's first) | no | the log ends here; unless the watermark marks a clean close right here, zero the unsynced extent after it (a crash can keep a later record's page and drop an earlier one's), sync |
//! | `DurableMissing`     | zeros                             | yes     | error `DurableRecordLost`            |
//! | `TornTail`           | bad crc/length/version, or index ≠ `i` | no | truncate: zero the unsynced extent, sync, log a warning |
//! | `DurableDamaged`     | bad crc/length/version, or index ≠ `i` | yes | error `DurableRecordLost`          |
//! | `WatermarkDamaged`   | both watermark slots invalid      | —       | error `Corrupt`                      |
//!
//! Across segments: a segment other than the last that is not sealed, a
//! gap in indexes between segments, or a damaged header or footer is
//! corruption in the middle of the log: error `Corrupt` with its location.
//! Damage inside a sealed segment is found when it is read (every read
//! checks the crc) and by `farmlog verify`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::format::{self, Slot, Watermark, RECORDS_OFFSET};
use super::segment::{self, Body, Segment, TEMP_SUFFIX};
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::io::{OpenMode, Storage, StorageFile};

/// After a torn tail, the extent that may hold unsynced bytes of earlier
/// writes, and is zeroed so that a later append can never be followed by a
/// stale record. It bounds how far ahead of the last sync writes may run.
pub const UNSYNCED_EXTENT_BYTES_MAX: u64 = super::UNSYNCED_BYTES_MAX + super::BATCH_BYTES_MAX;

/// Name of the file holding the purge point.
pub const META_NAME: &str = "META";

/// What the tail scan found where the records stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TailCase {
    /// No unsealed tail segment: the log ends with a sealed one, or is empty.
    Sealed,
    /// The records end in zeros at or past the watermark.
    CleanEnd,
    /// A torn, never-acknowledged tail was cut off.
    TornTail {
        segment: u64,
        offset: u64,
        index: u64,
        kind: CorruptionKind,
    },
    /// An acknowledged record is damaged (read-only opens report it here;
    /// writable opens fail with `Error::DurableRecordLost`).
    DurableDamaged(Corruption),
}

/// What opening found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    pub tail: TailCase,
    /// Leftover temporary files removed (writable opens only).
    pub temporaries_removed: usize,
    /// Segments removed because they were wholly below the purge point.
    pub purged_segments_removed: usize,
}

/// Everything `Log` needs from opening.
pub struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    /// Record offsets of the active (last, unsealed) segment.
    pub active_offsets: Vec<u32>,
    /// The active segment's file, when there is one.
    pub active_file: Option<Arc<dyn StorageFile>>,
    pub active_watermark: Option<Watermark>,
    pub first_index: u64,
    pub next_index: u64,
    pub next_sequence: u64,
    pub report: RecoveryReport,
}

/// Whether opening may repair the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Writable,
    ReadOnly,
}

pub fn recover(storage: &dyn Storage, dir: &Path, default_first_index: u64, access: Access) -> Result<Recovered> {
    let mut report = RecoveryReport {
        tail: TailCase::Sealed,
        temporaries_removed: 0,
        purged_segments_removed: 0,
    };
    let names = storage
        .list(dir)
        .map_err(|error| Error::io(format!("listing {}", dir.display()), error))?;
    if access == Access::Writable {
        report.temporaries_removed = remove_temporaries(storage, dir, &names)?;
    }
    let purge_point = read_meta(storage, dir)?;
    let mut segments = load_segments(storage, dir, &names, access)?;
    report.purged_segments_removed = drop_purged(storage, dir, &mut segments, purge_point, access)?;
    check_continuity(&segments)?;

    let next_sequence = segments.last().map_or(1, |(segment, _)| segment.sequence() + 1);
    let floor = purge_point.unwrap_or(default_first_index);
    let Some((last, last_file)) = segments.last() else {
        return Ok(Recovered {
            segments: Vec::new(),
            active_offsets: Vec::new(),
            active_file: None,
            active_watermark: None,
            first_index: floor,
            next_index: floor,
            next_sequence,
            report,
        });
    };
    let mut active_offsets = Vec::new();
    let mut active_file = None;
    let mut active_watermark = None;
    let next_index = match (last.sealed_count(), last_file) {
        (Some(count), _) => last.first_index() + count,
        (None, Some(file)) => {
            let tail = scan_tail(last, access)?;
            report.tail = tail.case.clone();
            if let Some(repair) = &tail.repair {
                repair_torn_tail(file.as_ref(), last, repair, access)?;
            }
            if access == Access::Writable {
                resync_unacknowledged(file.as_ref(), last, &tail)?;
            }
            active_offsets = tail.offsets;
            active_file = Some(file.clone());
            active_watermark = Some(tail.watermark);
            last.first_index() + active_offsets.len() as u64
        }
        (None, None) => unreachable!("an unsealed segment is always mapped from a file"),
    };
    if let Some(purge_point) = purge_point.filter(|&point| point >= next_index) {
        // A purge past the end was interrupted after META became durable:
        // every record is below the purge point, so the log is empty there.
        if access == Access::Writable {
            for (segment, _) in &segments {
                remove_segment_files(storage, dir, segment.sequence())?;
            }
            storage
                .sync_dir(dir)
                .map_err(|error| Error::io("syncing the log directory", error))?;
        }
        report.purged_segments_removed += segments.len();
        report.tail = TailCase::Sealed;
        return Ok(Recovered {
            segments: Vec::new(),
            active_offsets: Vec::new(),
            active_file: None,
            active_watermark: None,
            first_index: purge_point,
            next_index: purge_point,
            next_sequence,
            report,
        });
    }
    let first_index = segments[0].0.first_index().max(purge_point.unwrap_or(0));
    Ok(Recovered {
        segments: segments.into_iter().map(|(segment, _)| Arc::new(segment)).collect(),
        active_offsets,
        active_file,
        active_watermark,
        first_index,
        next_index,
        next_sequence,
        report,
    })
}

fn remove_temporaries(storage: &dyn Storage, dir: &Path, names: &[String]) -> Result<usize> {
    let temporaries: Vec<&String> = names.iter().filter(|name| name.ends_with(TEMP_SUFFIX)).collect();
    for name in &temporaries {
        tracing::info!(file = %name, "removing a temporary file left by an interrupted operation");
        storage
            .remove(&dir.join(name))
            .map_err(|error| Error::io(format!("removing {name}"), error))?;
    }
    if !temporaries.is_empty() {
        storage
            .sync_dir(dir)
            .map_err(|error| Error::io("syncing the log directory", error))?;
    }
    Ok(temporaries.len())
}

fn read_meta(storage: &dyn Storage, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(META_NAME);
    let file = match storage.open(&path, OpenMode::Read) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("opening META", error)),
    };
    let mut bytes = [0u8; format::META_BYTES];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|error| Error::io("reading META", error))?;
    format::decode_meta(&bytes)
        .map(Some)
        .map_err(|kind| Error::Corrupt(format::corruption(0, 0, None, kind)))
}

type Loaded = (Segment, Option<Arc<dyn StorageFile>>);

fn load_segments(storage: &dyn Storage, dir: &Path, names: &[String], access: Access) -> Result<Vec<Loaded>> {
    // sequence -> (has .seg, has .seg.zst)
    let mut found: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
    for (sequence, compressed) in names.iter().filter_map(|name| segment::parse_name(name)) {
        let entry = found.entry(sequence).or_default();
        if compressed {
            entry.1 = true;
        } else {
            entry.0 = true;
        }
    }
    let mode = match access {
        Access::Writable => OpenMode::ReadWrite,
        Access::ReadOnly => OpenMode::Read,
    };
    let mut segments = Vec::with_capacity(found.len());
    for (&sequence, &(plain, compressed)) in &found {
        if plain && compressed && access == Access::Writable {
            // A compression was interrupted after its rename: the plain
            // file is complete, the compressed one may be removed.
            storage
                .remove(&dir.join(segment::compressed_name(sequence)))
                .map_err(|error| Error::io("removing an interrupted compression", error))?;
            storage
                .sync_dir(dir)
                .map_err(|error| Error::io("syncing the log directory", error))?;
        }
        match load_one(storage, dir, sequence, plain, mode) {
            // A read-only open beside a running writer can lose a race with
            // purge (the file is gone) or compression (it moved).
            Err(Error::Io { source, .. })
                if access == Access::ReadOnly && source.kind() == std::io::ErrorKind::NotFound =>
            {
                match load_one(storage, dir, sequence, !plain, mode) {
                    Ok(loaded) => segments.push(loaded),
                    Err(_) if segments.is_empty() => continue,
                    Err(error) => return Err(error),
                }
            }
            result => segments.push(result?),
        }
    }
    Ok(segments)
}

fn load_one(storage: &dyn Storage, dir: &Path, sequence: u64, plain: bool, mode: OpenMode) -> Result<Loaded> {
    if plain {
        let path = dir.join(segment::segment_name(sequence));
        let (file, segment) = segment::load_mapped(storage, &path, sequence, mode)?;
        Ok((segment, Some(file)))
    } else {
        let path = dir.join(segment::compressed_name(sequence));
        Ok((segment::load_compressed(storage, &path, sequence)?, None))
    }
}

/// Removes segments wholly below the purge point (a purge that was
/// interrupted after it durably recorded its point).
fn drop_purged(
    storage: &dyn Storage,
    dir: &Path,
    segments: &mut Vec<Loaded>,
    purge_point: Option<u64>,
    access: Access,
) -> Result<usize> {
    let Some(purge_point) = purge_point else {
        return Ok(0);
    };
    let mut removed = 0;
    while let Some((first, _)) = segments.first() {
        let end = segment_end(first);
        let next_first = segments.get(1).map(|(segment, _)| segment.first_index());
        let wholly_below = match end {
            Some(end) => end <= purge_point,
            None => next_first.is_some_and(|next| next <= purge_point),
        };
        if !wholly_below {
            break;
        }
        let (segment, _) = segments.remove(0);
        if access == Access::Writable {
            remove_segment_files(storage, dir, segment.sequence())?;
        }
        removed += 1;
    }
    if removed > 0 && access == Access::Writable {
        storage
            .sync_dir(dir)
            .map_err(|error| Error::io("syncing the log directory", error))?;
    }
    Ok(removed)
}

/// Removes a segment's file, plain or compressed. Not durable until the
/// directory is synced.
pub fn remove_segment_files(storage: &dyn Storage, dir: &Path, sequence: u64) -> Result<()> {
    for name in [segment::segment_name(sequence), segment::compressed_name(sequence)] {
        match storage.remove(&dir.join(&name)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::io(format!("removing {name}"), error)),
        }
    }
    Ok(())
}

/// One past the last index of a sealed segment; `None` while unsealed.
fn segment_end(segment: &Segment) -> Option<u64> {
    segment.sealed_count().map(|count| segment.first_index() + count)
}

fn check_continuity(segments: &[Loaded]) -> Result<()> {
    for pair in segments.windows(2) {
        let (earlier, later) = (&pair[0].0, &pair[1].0);
        let Some(end) = segment_end(earlier) else {
            let offset = earlier.header.capacity - format::FOOTER_BYTES as u64;
            return Err(Error::Corrupt(earlier.corrupt(
                offset,
                None,
                CorruptionKind::UnsealedSegment,
            )));
        };
        if later.first_index() != end {
            return Err(Error::Corrupt(later.corrupt(
                0,
                Some(end),
                CorruptionKind::SegmentGap {
                    expected: end,
                    found: later.first_index(),
                },
            )));
        }
    }
    Ok(())
}

struct TailScan {
    case: TailCase,
    offsets: Vec<u32>,
    watermark: Watermark,
    repair: Option<Repair>,
}

/// A torn tail to zero: from `offset` to `end`.
struct Repair {
    offset: u64,
    end: u64,
}

/// Scans the unsealed tail segment, applying the table of cases.
fn scan_tail(segment: &Segment, access: Access) -> Result<TailScan> {
    let Body::Active { map } = &segment.body else {
        unreachable!("only an unsealed segment has a tail to scan");
    };
    let bytes = map.bytes();
    let watermark = Watermark::newest(&bytes[..RECORDS_OFFSET as usize]).ok_or_else(|| {
        Error::Corrupt(segment.corrupt(
            format::WATERMARK_SLOT_OFFSETS[0],
            None,
            CorruptionKind::WatermarkDamaged,
        ))
    })?;
    let durable_end = watermark.durable_end.max(segment.first_index());
    let capacity = segment.header.capacity;
    let mut offsets = Vec::new();
    let mut offset = RECORDS_OFFSET;
    loop {
        let index = segment.first_index() + offsets.len() as u64;
        let limit = segment::records_limit(capacity, offsets.len() as u64 + 1);
        let durable = index < durable_end;
        let found = if offset >= limit {
            // The segment is full but was not sealed; nothing can follow.
            Slot::Zero
        } else {
            segment::read_slot(bytes, offset, limit)
        };
        if let Slot::Valid(header) = &found {
            if header.index == index {
                offsets.push(offset as u32);
                offset += header.framed_len();
                continue;
            }
        }
        // Zeros, or a record of a recycled segment's earlier life (all of
        // its indexes are below this segment's first): the records end here.
        let ends_here = match &found {
            Slot::Zero => true,
            Slot::Valid(header) => header.index < segment.first_index(),
            Slot::Invalid(_) => false,
        };
        if ends_here && !durable {
            let repair = unless_closed_cleanly(&watermark, offset, capacity);
            return Ok(TailScan {
                case: TailCase::CleanEnd,
                offsets,
                watermark,
                repair,
            });
        }
        let damage = match found {
            Slot::Valid(header) => CorruptionKind::UnexpectedIndex {
                expected: index,
                found: header.index,
            },
            Slot::Zero => CorruptionKind::Missing { durable_end },
            Slot::Invalid(kind) => kind,
        };
        if durable {
            let corruption = segment.corrupt(offset, Some(index), damage);
            if access == Access::Writable {
                return Err(Error::DurableRecordLost(corruption));
            }
            return Ok(TailScan {
                case: TailCase::DurableDamaged(corruption),
                offsets,
                watermark,
                repair: None,
            });
        }
        let end = unsynced_extent_end(offset, capacity);
        return Ok(TailScan {
            case: TailCase::TornTail {
                segment: segment.sequence(),
                offset,
                index,
                kind: damage,
            },
            offsets,
            watermark,
            repair: Some(Repair { offset, end }),
        });
    }
}

/// Where the extent that may hold unsynced writes ends, for records ending
/// at `offset`.
fn unsynced_extent_end(offset: u64, capacity: u64) -> u64 {
    (offset + UNSYNCED_EXTENT_BYTES_MAX).min(segment::records_limit(capacity, 0))
}

/// The extent to zero after records that end cleanly at `offset`: none if
/// the log was closed cleanly right there; otherwise (a crash) the
/// unsynced extent, because a power loss can drop the page of the first
/// unacknowledged record and keep the page of a later one. Left in place,
/// that record would follow the next append of the same size.
fn unless_closed_cleanly(watermark: &Watermark, offset: u64, capacity: u64) -> Option<Repair> {
    (watermark.clean_end != offset).then(|| Repair {
        offset,
        end: unsynced_extent_end(offset, capacity),
    })
}

/// Zeros the extent after the last good record (only as far as it holds
/// non-zero bytes) and syncs it. Read-only opens only log it.
///
/// On disk when it returns `Ok` (writable): zeros from the end of the
/// records to the end of the unsynced extent, durable.
fn repair_torn_tail(file: &dyn StorageFile, segment: &Segment, repair: &Repair, access: Access) -> Result<()> {
    let Body::Active { map } = &segment.body else {
        unreachable!("only an unsealed segment has a torn tail");
    };
    if access == Access::ReadOnly {
        tracing::debug!(
            segment = segment.sequence(),
            offset = repair.offset,
            "read-only open: tail left as found"
        );
        return Ok(());
    }
    let bytes = &map.bytes()[repair.offset as usize..repair.end as usize];
    let dirty_len = bytes.iter().rposition(|&byte| byte != 0).map_or(0, |last| last + 1);
    if dirty_len > 0 {
        tracing::warn!(
            segment = segment.sequence(),
            offset = repair.offset,
            bytes = dirty_len,
            "zeroing a tail that was never acknowledged durable (torn, or left by a crash)"
        );
    }
    if dirty_len > 0 {
        zero_range(file, repair.offset, repair.offset + dirty_len as u64)
            .map_err(|error| Error::io("zeroing a torn tail", error))?;
        file.sync_data()
            .map_err(|error| Error::io("syncing a repaired tail", error))?;
    }
    Ok(())
}

/// Rewrites and syncs the records past the watermark. They were written
/// but maybe never synced: after a failed `fdatasync` the kernel may have
/// marked their pages clean without persisting them, so reading them back
/// proves nothing. Rewriting makes the pages dirty again, so the sync
/// really persists them. The extent is bounded by the unsynced limit.
///
/// On disk when it returns `Ok`: every record the tail scan accepted.
fn resync_unacknowledged(file: &dyn StorageFile, segment: &Segment, tail: &TailScan) -> Result<()> {
    let Body::Active { map } = &segment.body else {
        unreachable!("only an unsealed segment has a tail");
    };
    let durable_count = tail.watermark.durable_end.saturating_sub(segment.first_index()) as usize;
    let Some(&start) = tail.offsets.get(durable_count) else {
        return Ok(());
    };
    let last = *tail.offsets.last().expect("offsets is non-empty past durable_count");
    let bytes = map.bytes();
    let header: &[u8; format::RECORD_HEADER_BYTES] = bytes[last as usize..last as usize + format::RECORD_HEADER_BYTES]
        .try_into()
        .expect("slice has the header's length");
    let end = last as u64 + format::RecordHeader::parse(header).map_or(0, |header| header.framed_len());
    let copy = bytes[start as usize..end as usize].to_vec();
    let rewrite = || -> std::io::Result<()> {
        file.write_all_at(&copy, start as u64)?;
        file.sync_data()
    };
    rewrite().map_err(|error| Error::io("re-syncing unacknowledged records", error))
}

/// Writes zeros over `[start, end)`. Not durable until synced.
pub fn zero_range(file: &dyn StorageFile, start: u64, end: u64) -> std::io::Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK_BYTES.min(end.saturating_sub(start)) as usize];
    let mut offset = start;
    while offset < end {
        let chunk = (end - offset).min(CHUNK_BYTES) as usize;
        file.write_all_at(&zeros[..chunk], offset)?;
        offset += chunk as u64;
    }
    Ok(())
}
