//! The engine's errors: one enum at the boundary, each variant documented.
//!
//! Errors an operator can meet (I/O, corruption, a full disk, bad input)
//! are values of [`Error`]; programmer errors panic.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Every error the log returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed. `context` says what the log was doing.
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// Another process (or another `Log` in this one) holds the directory's
    /// write lock.
    #[error("the log directory {dir} is already open for writing by another process (lock file {dir}/LOCK); stop that process, or open read-only")]
    Locked { dir: PathBuf },

    /// An earlier write or fsync failed, so the state of the file on disk is
    /// unknown. Every write is refused until the log is reopened, which runs
    /// recovery.
    #[error("the log is failed after an earlier I/O error ({cause}); reopen it to recover")]
    Poisoned { cause: String },

    /// Free space fell below the configured reserve. Nothing was written;
    /// appends work again once space returns.
    #[error("disk nearly full: {available_bytes} bytes available, reserve is {reserve_bytes} bytes; append refused")]
    DiskNearlyFull { available_bytes: u64, reserve_bytes: u64 },

    /// Bytes on disk are not what the log wrote: see [`Corruption`].
    #[error("{0}")]
    Corrupt(Corruption),

    /// A record that was acknowledged durable is damaged or missing. The
    /// log refuses to open rather than lose it: in a cluster, repair it
    /// from a healthy replica before this node votes or leads.
    #[error("acknowledged record lost: {0}")]
    DurableRecordLost(Corruption),

    /// The caller asked for something the log cannot do; `reason` says what.
    #[error("invalid request: {reason}")]
    InvalidInput { reason: String },

    /// The requested index is outside the log.
    #[error("index {index} is not in the log (first {first}, next {next})")]
    OutOfRange { index: u64, first: u64, next: u64 },

    /// The log was opened read-only.
    #[error("the log is open read-only")]
    ReadOnly,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::InvalidInput { reason: reason.into() }
    }

    /// The corruption this error reports, if it is one.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            Self::Corrupt(corruption) | Self::DurableRecordLost(corruption) => Some(corruption),
            _ => None,
        }
    }
}

/// Where bytes on disk are wrong, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The segment's sequence number (its file name).
    pub segment: u64,
    /// Byte offset inside the segment file.
    pub offset: u64,
    /// The log index expected there, when known.
    pub index: Option<u64>,
    pub kind: CorruptionKind,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in segment {:020} at offset {}",
            self.kind, self.segment, self.offset
        )?;
        if let Some(index) = self.index {
            write!(f, " (index {index})")?;
        }
        Ok(())
    }
}

/// What is wrong with the bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptionKind {
    #[error("segment file too short")]
    SegmentTooShort,
    #[error("bad segment magic")]
    BadSegmentMagic,
    #[error("unknown format version {0}")]
    UnknownFormatVersion(u32),
    #[error("unknown record version {0}")]
    UnknownRecordVersion(u8),
    #[error("segment header checksum mismatch")]
    SegmentHeaderChecksum,
    #[error("segment header does not match its file name or its neighbours")]
    SegmentHeaderInconsistent,
    #[error("record runs past the end of the record area")]
    RecordPastEnd,
    #[error("record checksum mismatch")]
    RecordChecksum,
    #[error("record has index {found}, expected {expected}")]
    UnexpectedIndex { expected: u64, found: u64 },
    #[error("no record where one was acknowledged durable (durable end {durable_end})")]
    Missing { durable_end: u64 },
    #[error("both watermark slots are damaged")]
    WatermarkDamaged,
    #[error("bad footer magic")]
    BadFooterMagic,
    #[error("footer checksum mismatch")]
    FooterChecksum,
    #[error("footer fields are inconsistent")]
    FooterInconsistent,
    #[error("sealed segment's index block checksum mismatch")]
    IndexChecksum,
    #[error("index block entry points outside the records")]
    IndexEntry,
    #[error("a segment before the last one is not sealed")]
    UnsealedSegment,
    #[error("gap between segments: next segment starts at {found}, expected {expected}")]
    SegmentGap { expected: u64, found: u64 },
    #[error("compressed segment damaged: {0}")]
    Compressed(String),
    #[error("META file damaged")]
    MetaDamaged,
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
