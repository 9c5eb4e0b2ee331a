//! The payload of a command-batch record: N independently archived
//! commands, framed so that apply reads each in place.
//!
//! A command is encoded and validated once, where it is proposed
//! ([`encode`]); a batch only frames the encoded bytes, so packing many
//! clients' commands into one log record copies them once and
//! re-serializes nothing.
//!
//! Layout (little-endian), in a record of type [`crate::kinds::COMMAND_BATCH`]:
//!
//! ```text
//!  0  u32  magic "FLCB"
//!  4  u16  schema version: how everything after the header is laid out
//!  6  u16  flags, zero
//!  8  u32  count of commands, 1..=BATCH_COMMANDS_MAX
//! 12  u32  reserved, zero
//! 16  count × { u32 offset, u32 length }  from the payload's start
//!  …  the commands' rkyv archives, in table order, each at the first
//!     8-aligned offset after the one before, zero padding between and
//!     after the last, which ends the payload
//! ```
//!
//! A reader that meets a schema version it does not know refuses the whole
//! record ([`BatchError::SchemaUnknown`]); it never guesses a layout.

use std::fmt;

use rkyv::util::AlignedVec;

use super::command::{ArchivedCommand, Command, BODY_BYTES_MAX, SCHEMA_VERSION};
use super::validate::{validate, CommandError};

/// "FLCB" read as a little-endian u32.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"FLCB");
/// Bytes before the offset table.
pub const BATCH_HEADER_BYTES: usize = 16;
/// Most commands in one record.
pub const BATCH_COMMANDS_MAX: usize = 4096;
/// Largest encoded command: a full body plus room for its envelope.
pub const COMMAND_BYTES_MAX: usize = BODY_BYTES_MAX + 64 * 1024;
/// Largest batch payload; the log's own record limit is larger.
pub const BATCH_BYTES_MAX: usize = 8 << 20;

const _: () = assert!(BATCH_BYTES_MAX <= crate::log::PAYLOAD_BYTES_MAX);
const _: () = assert!(COMMAND_BYTES_MAX + BATCH_HEADER_BYTES + 8 <= BATCH_BYTES_MAX);

/// A command that passed stateless validation, archived and ready to be
/// framed into a batch.
#[derive(Clone)]
pub struct EncodedCommand {
    bytes: AlignedVec<8>,
}

impl EncodedCommand {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The archived command, zero-copy.
    pub fn view(&self) -> &ArchivedCommand {
        rkyv::access::<ArchivedCommand, rkyv::rancor::Error>(&self.bytes)
            .expect("an encoded command was validated when it was built")
    }
}

impl fmt::Debug for EncodedCommand {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "EncodedCommand({} bytes)", self.bytes.len())
    }
}

/// Archives a command and runs the stateless checks on the archive, the
/// same code apply runs. Bad input gets an error naming the field.
pub fn encode(command: &Command) -> Result<EncodedCommand, CommandError> {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(command)
        .expect("serializing an in-memory command into a Vec cannot fail");
    if bytes.len() > COMMAND_BYTES_MAX {
        return Err(CommandError::new(
            "command",
            format!("{} bytes, more than {COMMAND_BYTES_MAX}", bytes.len()),
        ));
    }
    let mut aligned = AlignedVec::<8>::with_capacity(bytes.len());
    aligned.extend_from_slice(&bytes);
    let view = rkyv::access::<ArchivedCommand, rkyv::rancor::Error>(&aligned)
        .expect("a freshly serialized command is a valid archive");
    validate(view)?;
    Ok(EncodedCommand { bytes: aligned })
}

/// Builds a batch payload out of encoded commands.
#[derive(Default)]
pub struct BatchBuilder {
    commands: Vec<EncodedCommand>,
    bytes: usize,
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Whether `command` still fits under [`BATCH_COMMANDS_MAX`] and
    /// [`BATCH_BYTES_MAX`].
    pub fn fits(&self, command: &EncodedCommand) -> bool {
        self.commands.len() < BATCH_COMMANDS_MAX && self.payload_len_with(command.bytes.len()) <= BATCH_BYTES_MAX
    }

    /// Adds a command; gives it back when the batch is full.
    pub fn push(&mut self, command: EncodedCommand) -> Result<(), EncodedCommand> {
        if !self.fits(&command) {
            return Err(command);
        }
        self.bytes += align8(command.bytes.len());
        self.commands.push(command);
        Ok(())
    }

    fn payload_len_with(&self, extra: usize) -> usize {
        BATCH_HEADER_BYTES + 8 * (self.commands.len() + 1) + self.bytes + align8(extra)
    }

    /// The payload of one command-batch record.
    pub fn finish(self) -> Vec<u8> {
        assert!(!self.commands.is_empty(), "a batch holds at least one command");
        let count = self.commands.len();
        let table_end = BATCH_HEADER_BYTES + 8 * count;
        let mut payload = Vec::with_capacity(align8(table_end) + self.bytes);
        payload.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
        payload.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
        payload.extend_from_slice(&0u16.to_le_bytes());
        payload.extend_from_slice(&(count as u32).to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        let mut offset = align8(table_end);
        for command in &self.commands {
            payload.extend_from_slice(&(offset as u32).to_le_bytes());
            payload.extend_from_slice(&(command.bytes.len() as u32).to_le_bytes());
            offset += align8(command.bytes.len());
        }
        payload.resize(align8(table_end), 0);
        for command in &self.commands {
            payload.extend_from_slice(&command.bytes);
            payload.resize(align8(payload.len()), 0);
        }
        debug_assert_eq!(payload.len(), offset);
        debug_assert!(payload.len() <= BATCH_BYTES_MAX);
        payload
    }
}

fn align8(len: usize) -> usize {
    (len + 7) & !7
}

/// Why a batch payload cannot be read. Any of these stops apply: the
/// record is not something this build can interpret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error("command batch written with schema version {found}; this build knows only version {known}: upgrade the node before it applies this record")]
    SchemaUnknown { found: u16, known: u16 },
    #[error("malformed command batch: {reason}")]
    Malformed { reason: String },
    #[error("command in slot {slot} is malformed: {reason}")]
    BadCommand { slot: u32, reason: String },
}

/// A parsed batch: its offset table checked, its commands not yet.
pub struct Batch<'a> {
    payload: &'a [u8],
    count: u32,
}

impl<'a> Batch<'a> {
    /// Checks the header and the offset table.
    pub fn parse(payload: &'a [u8]) -> Result<Self, BatchError> {
        let malformed = |reason: String| Err(BatchError::Malformed { reason });
        if payload.len() < BATCH_HEADER_BYTES {
            return malformed(format!(
                "{} bytes, shorter than the {BATCH_HEADER_BYTES}-byte header",
                payload.len()
            ));
        }
        if !(payload.as_ptr() as usize).is_multiple_of(8) {
            return malformed("payload is not 8-byte aligned".into());
        }
        let magic = read_u32(payload, 0);
        if magic != BATCH_MAGIC {
            return malformed(format!("bad magic {magic:#010x}"));
        }
        let schema = u16::from_le_bytes([payload[4], payload[5]]);
        if schema != SCHEMA_VERSION {
            return Err(BatchError::SchemaUnknown {
                found: schema,
                known: SCHEMA_VERSION,
            });
        }
        let (flags, reserved) = (u16::from_le_bytes([payload[6], payload[7]]), read_u32(payload, 12));
        if flags != 0 || reserved != 0 {
            return malformed(format!("flags {flags:#06x} and reserved {reserved:#010x} must be zero"));
        }
        let count = read_u32(payload, 8);
        if count == 0 || count as usize > BATCH_COMMANDS_MAX {
            return malformed(format!("{count} commands, not within 1..={BATCH_COMMANDS_MAX}"));
        }
        let table_end = BATCH_HEADER_BYTES + 8 * count as usize;
        if table_end > payload.len() {
            return malformed(format!("offset table of {count} entries runs past the payload"));
        }
        // The layout is canonical: each command starts at the first 8-aligned
        // offset after the previous one, padding is zero, and the payload
        // ends with the last command's padding. Any other bytes are damage.
        let mut previous_end = table_end;
        for slot in 0..count {
            let (offset, length) = entry(payload, slot);
            if offset != align8(previous_end) || length == 0 || offset + length > payload.len() {
                return malformed(format!("slot {slot}: bytes {offset}..+{length} are misplaced"));
            }
            if payload[previous_end..offset].iter().any(|&byte| byte != 0) {
                return malformed(format!("nonzero padding before slot {slot}"));
            }
            previous_end = offset + length;
        }
        if align8(previous_end) != payload.len() || payload[previous_end..].iter().any(|&byte| byte != 0) {
            return malformed(format!("{} bytes after the last command", payload.len() - previous_end));
        }
        Ok(Batch { payload, count })
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The archived command in `slot`, checked by bytecheck and by the
    /// stateless validation, zero-copy.
    pub fn command(&self, slot: u32) -> Result<&'a ArchivedCommand, BatchError> {
        assert!(slot < self.count, "slot {slot} out of a batch of {}", self.count);
        let (offset, length) = entry(self.payload, slot);
        if length > COMMAND_BYTES_MAX {
            let reason = format!("{length} bytes, more than {COMMAND_BYTES_MAX}");
            return Err(BatchError::BadCommand { slot, reason });
        }
        let bytes = &self.payload[offset..offset + length];
        let view =
            rkyv::access::<ArchivedCommand, rkyv::rancor::Error>(bytes).map_err(|error| BatchError::BadCommand {
                slot,
                reason: error.to_string(),
            })?;
        validate(view).map_err(|error| BatchError::BadCommand {
            slot,
            reason: error.to_string(),
        })?;
        Ok(view)
    }
}

fn entry(payload: &[u8], slot: u32) -> (usize, usize) {
    let at = BATCH_HEADER_BYTES + 8 * slot as usize;
    (read_u32(payload, at) as usize, read_u32(payload, at + 4) as usize)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}
