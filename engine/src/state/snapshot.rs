//! Snapshots: the whole state, archived with rkyv and compressed with zstd.
//!
//! The archive is canonical: every container in the state iterates in an
//! order fixed by the log, and lookup maps are left out and rebuilt on
//! restore. So two nodes that applied the same records produce the same
//! archive bytes, and [`State::hash`] (BLAKE3 of them) compares replicas.
//!
//! Layout (little-endian):
//!
//! ```text
//!  0  u32       magic "FLSS"
//!  4  u16       snapshot format version (1)
//!  6  u16       command schema version of the state
//!  8  u64       last applied log index
//! 16  u64       archive length in bytes, uncompressed
//! 24  [u8; 32]  BLAKE3 of the uncompressed archive
//! 56  u64       reserved, zero
//! 64  …         zstd frame of the archive
//! ```

use rkyv::util::AlignedVec;

use super::command::SCHEMA_VERSION;
use super::State;

pub const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"FLSS");
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;
pub const SNAPSHOT_HEADER_BYTES: usize = 64;
/// Largest uncompressed archive a restore accepts: 64 GiB.
pub const SNAPSHOT_ARCHIVE_BYTES_MAX: u64 = 64 << 30;
/// zstd level: snapshots are built often and restored rarely.
const SNAPSHOT_ZSTD_LEVEL: i32 = 1;

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("not a farmlog snapshot ({reason})")]
    NotASnapshot { reason: String },
    #[error("snapshot format {found} (schema {schema}) is not one this build reads (format {SNAPSHOT_FORMAT_VERSION}, schema {SCHEMA_VERSION})")]
    Version { found: u16, schema: u16 },
    #[error("snapshot is damaged: {reason}")]
    Damaged { reason: String },
}

/// What a snapshot's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub last_applied: u64,
    pub archive_bytes: u64,
    pub hash: [u8; 32],
}

impl State {
    /// The canonical archive of the state.
    pub fn archive(&self) -> AlignedVec {
        rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("archiving an in-memory state cannot fail")
    }

    /// BLAKE3 of the canonical archive: equal on every replica that applied
    /// the same records.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.archive()).as_bytes()
    }

    /// A complete snapshot: header and compressed archive.
    pub fn snapshot(&self) -> Vec<u8> {
        let archive = self.archive();
        let hash = blake3::hash(&archive);
        let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + archive.len() / 4);
        bytes.extend_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.last_applied.to_le_bytes());
        bytes.extend_from_slice(&(archive.len() as u64).to_le_bytes());
        bytes.extend_from_slice(hash.as_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        debug_assert_eq!(bytes.len(), SNAPSHOT_HEADER_BYTES);
        let mut encoder = zstd::Encoder::new(bytes, SNAPSHOT_ZSTD_LEVEL).expect("zstd encoder into a Vec");
        std::io::Write::write_all(&mut encoder, &archive).expect("writing into a Vec cannot fail");
        encoder.finish().expect("finishing a zstd frame into a Vec cannot fail")
    }

    /// Reads a snapshot's header.
    pub fn snapshot_info(bytes: &[u8]) -> Result<SnapshotInfo, SnapshotError> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err(SnapshotError::NotASnapshot {
                reason: format!("{} bytes, shorter than a header", bytes.len()),
            });
        }
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        if u32::from_le_bytes(bytes[0..4].try_into().expect("four bytes")) != SNAPSHOT_MAGIC {
            return Err(SnapshotError::NotASnapshot {
                reason: "bad magic".into(),
            });
        }
        let (found, schema) = (u16_at(4), u16_at(6));
        if found != SNAPSHOT_FORMAT_VERSION || schema != SCHEMA_VERSION {
            return Err(SnapshotError::Version { found, schema });
        }
        let archive_bytes = u64_at(16);
        if archive_bytes > SNAPSHOT_ARCHIVE_BYTES_MAX {
            return Err(SnapshotError::Damaged {
                reason: format!("archive of {archive_bytes} bytes is over the limit"),
            });
        }
        let hash = bytes[24..56].try_into().expect("32 bytes");
        Ok(SnapshotInfo {
            last_applied: u64_at(8),
            archive_bytes,
            hash,
        })
    }

    /// Restores a state from a snapshot: checks the header, the hash and
    /// the archive, then rebuilds the lookup maps.
    pub fn restore(bytes: &[u8]) -> Result<State, SnapshotError> {
        let info = Self::snapshot_info(bytes)?;
        let damaged = |reason: String| SnapshotError::Damaged { reason };
        let mut archive = AlignedVec::<16>::with_capacity(info.archive_bytes as usize);
        let mut decoder =
            zstd::Decoder::new(&bytes[SNAPSHOT_HEADER_BYTES..]).map_err(|error| damaged(error.to_string()))?;
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let read = std::io::Read::read(&mut decoder, &mut chunk).map_err(|error| damaged(error.to_string()))?;
            if read == 0 {
                break;
            }
            if archive.len() + read > info.archive_bytes as usize {
                return Err(damaged("archive is longer than the header says".into()));
            }
            archive.extend_from_slice(&chunk[..read]);
        }
        if archive.len() as u64 != info.archive_bytes {
            return Err(damaged(format!(
                "archive is {} bytes, header says {}",
                archive.len(),
                info.archive_bytes
            )));
        }
        if *blake3::hash(&archive).as_bytes() != info.hash {
            return Err(damaged("hash mismatch".into()));
        }
        let mut state =
            rkyv::from_bytes::<State, rkyv::rancor::Error>(&archive).map_err(|error| damaged(error.to_string()))?;
        if state.last_applied != info.last_applied {
            return Err(damaged("header and archive disagree on the last applied index".into()));
        }
        state.rebuild_lookups();
        Ok(state)
    }
}
