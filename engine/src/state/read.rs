//! Reading events back from the log by position, zero-copy.
//!
//! Projections hold positions; the state maps a position to its (log
//! index, slot); the log holds the bytes. An [`EventRecord`] keeps the
//! record's map alive and hands out the archived command in place.

use super::batch::{Batch, BatchError};
use super::command::ArchivedCommand;
use super::{Place, State};
use crate::log::{Log, Record};

/// Why an event cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("no event at position {position}")]
    NoSuchPosition { position: u64 },
    #[error("reading record {index}: {source}")]
    Log {
        index: u64,
        #[source]
        source: crate::Error,
    },
    #[error("record {index}: {source}")]
    Batch {
        index: u64,
        #[source]
        source: BatchError,
    },
    #[error("record {index} has {count} commands, no slot {slot}")]
    NoSuchSlot { index: u64, slot: u32, count: u32 },
}

/// One event, read in place from its log record.
pub struct EventRecord {
    record: Record,
    place: Place,
    position: u64,
}

impl EventRecord {
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn place(&self) -> Place {
        self.place
    }

    pub fn term(&self) -> u64 {
        self.record.term()
    }

    /// The archived command, in place. Checked when the event was read.
    pub fn command(&self) -> &ArchivedCommand {
        let batch = Batch::parse(self.record.payload()).expect("checked when the event was read");
        batch.command(self.place.slot).expect("checked when the event was read")
    }
}

/// Reads the event at `position` from `log`.
pub fn event(log: &Log, state: &State, position: u64) -> Result<EventRecord, ReadError> {
    let place = state.place(position).ok_or(ReadError::NoSuchPosition { position })?;
    let index = place.index;
    let record = log.read(index).map_err(|source| ReadError::Log { index, source })?;
    let batch = Batch::parse(record.payload()).map_err(|source| ReadError::Batch { index, source })?;
    if place.slot >= batch.len() {
        return Err(ReadError::NoSuchSlot {
            index,
            slot: place.slot,
            count: batch.len(),
        });
    }
    batch
        .command(place.slot)
        .map_err(|source| ReadError::Batch { index, source })?;
    Ok(EventRecord {
        record,
        place,
        position,
    })
}
