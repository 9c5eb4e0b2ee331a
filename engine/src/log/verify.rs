//! A full check of a log, for `farmlog verify`: every segment header and
//! footer, every index block, every record's crc, and index continuity.
//! It reads everything, so it is never part of opening.

use super::segment::Body;
use super::{Log, TailCase};
use crate::error::{CorruptionKind, Error, Result};

/// What a clean verification saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifySummary {
    pub segments: usize,
    pub records: u64,
    /// Framed record bytes checked.
    pub bytes: u64,
}

impl Log {
    /// Checks the whole log and returns the first problem as an error with
    /// its location (segment, offset, index). `progress` is called with
    /// the framed bytes checked so far, after each segment and every
    /// 4096 records. Reads only; never writes.
    pub fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifySummary> {
        if let TailCase::DurableDamaged(corruption) = &self.recovery_report().tail {
            return Err(Error::DurableRecordLost(corruption.clone()));
        }
        let segments = self.view().segments.clone();
        let (first, next) = (self.first_index(), self.next_index());
        let mut summary = VerifySummary::default();
        for segment in &segments {
            let bytes = self.segment_bytes(segment)?;
            let count = match segment.sealed_count() {
                Some(count) => count,
                None => next - segment.first_index(),
            };
            // Records below the purge point are not readable; start there.
            let from = segment.first_index().max(first);
            let to = segment.first_index() + count;
            for (position, record) in (from..).zip(self.range(from..to)) {
                let record = record?;
                if !matches!(segment.body, Body::Active { .. }) {
                    let listed = segment.sealed_offset(bytes.bytes(), position)?;
                    let (_, offset) = record.location();
                    if listed != offset {
                        return Err(Error::Corrupt(segment.corrupt(
                            listed,
                            Some(position),
                            CorruptionKind::IndexEntry,
                        )));
                    }
                }
                summary.records += 1;
                summary.bytes += record.framed_len();
                if summary.records.is_multiple_of(4096) {
                    progress(summary.bytes);
                }
            }
            summary.segments += 1;
            progress(summary.bytes);
        }
        Ok(summary)
    }
}
