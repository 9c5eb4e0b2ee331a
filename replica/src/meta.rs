//! The small durable state beside the log: the vote, the last log id
//! openraft purged, and the tail fence (see `fence.rs`). One 64-byte file, `RAFT`, replaced atomically (written
//! to a temporary, synced, renamed over, directory synced).
//!
//! Layout (little-endian):
//!
//! ```text
//!  0  u32  magic "FLRM"
//!  4  u16  format version (2; version 1, without the fence, still reads)
//!  6  u16  flags: 1 vote present, 2 vote committed, 4 voted_for present,
//!               8 last_purged present, 16 fenced
//!  8  u64  vote term
//! 16  u64  voted_for
//! 24  u64  last_purged term
//! 32  u64  last_purged index
//! 40  u64  fence term (version 2)
//! 48  [u8; 12] reserved, zero
//! 60  u32  crc32 of bytes 0..60
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use farmlog_engine::io::{OpenMode, Storage};
use openraft::{CommittedLeaderId, LeaderId, LogId, Vote};

use crate::NodeId;

pub const META_NAME: &str = "RAFT";
const META_MAGIC: u32 = u32::from_le_bytes(*b"FLRM");
const META_VERSION: u16 = 2;
/// The oldest format version this build reads.
const META_VERSION_MIN: u16 = 1;
const META_BYTES: usize = 64;

const FLAG_VOTE: u16 = 1;
const FLAG_COMMITTED: u16 = 2;
const FLAG_VOTED_FOR: u16 = 4;
const FLAG_PURGED: u16 = 8;
const FLAG_FENCED: u16 = 16;

/// What the file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaftMeta {
    pub vote: Option<Vote<NodeId>>,
    pub last_purged: Option<LogId<NodeId>>,
    /// Set while the node is fenced: its log may have lost entries it had
    /// acknowledged, all of a term at most this one (see `fence.rs`).
    pub fence: Option<u64>,
}

/// Why the file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged ({reason}): this node's vote is unknown and it must not vote until repaired")]
    Damaged { path: PathBuf, reason: String },
}

impl RaftMeta {
    fn encode(&self) -> [u8; META_BYTES] {
        let mut bytes = [0u8; META_BYTES];
        let mut flags = 0u16;
        if let Some(vote) = &self.vote {
            flags |= FLAG_VOTE;
            if vote.committed {
                flags |= FLAG_COMMITTED;
            }
            bytes[8..16].copy_from_slice(&vote.leader_id.term.to_le_bytes());
            if let Some(node) = vote.leader_id.voted_for {
                flags |= FLAG_VOTED_FOR;
                bytes[16..24].copy_from_slice(&node.to_le_bytes());
            }
        }
        if let Some(purged) = &self.last_purged {
            flags |= FLAG_PURGED;
            bytes[24..32].copy_from_slice(&purged.leader_id.term.to_le_bytes());
            bytes[32..40].copy_from_slice(&purged.index.to_le_bytes());
        }
        if let Some(term) = self.fence {
            flags |= FLAG_FENCED;
            bytes[40..48].copy_from_slice(&term.to_le_bytes());
        }
        bytes[0..4].copy_from_slice(&META_MAGIC.to_le_bytes());
        bytes[4..6].copy_from_slice(&META_VERSION.to_le_bytes());
        bytes[6..8].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8; META_BYTES]) -> Result<Self, String> {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        if u32::from_le_bytes(bytes[0..4].try_into().expect("four bytes")) != META_MAGIC {
            return Err("bad magic".into());
        }
        let crc = u32::from_le_bytes(bytes[60..64].try_into().expect("four bytes"));
        if crc != crc32fast::hash(&bytes[..60]) {
            return Err("crc mismatch".into());
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if !(META_VERSION_MIN..=META_VERSION).contains(&version) {
            return Err(format!(
                "format version {version}, this build reads {META_VERSION_MIN} to {META_VERSION}"
            ));
        }
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        let known = match version {
            1 => FLAG_VOTE | FLAG_COMMITTED | FLAG_VOTED_FOR | FLAG_PURGED,
            _ => FLAG_VOTE | FLAG_COMMITTED | FLAG_VOTED_FOR | FLAG_PURGED | FLAG_FENCED,
        };
        if flags & !known != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let vote = (flags & FLAG_VOTE != 0).then(|| Vote {
            leader_id: LeaderId {
                term: u64_at(8),
                voted_for: (flags & FLAG_VOTED_FOR != 0).then(|| u64_at(16)),
            },
            committed: flags & FLAG_COMMITTED != 0,
        });
        let last_purged =
            (flags & FLAG_PURGED != 0).then(|| LogId::new(CommittedLeaderId::new(u64_at(24), 0), u64_at(32)));
        let fence = (flags & FLAG_FENCED != 0).then(|| u64_at(40));
        Ok(Self {
            vote,
            last_purged,
            fence,
        })
    }
}

/// The file, through the engine's storage (so simulated faults reach it).
#[derive(Debug)]
pub struct MetaFile {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
}

impl MetaFile {
    pub fn new(storage: Arc<dyn Storage>, dir: &Path) -> Self {
        Self {
            storage,
            dir: dir.to_path_buf(),
        }
    }

    /// Reads the file; a missing file is the empty state of a new node.
    pub fn load(&self) -> Result<RaftMeta, MetaError> {
        let path = self.dir.join(META_NAME);
        let io = |source| MetaError::Io {
            path: path.clone(),
            source,
        };
        let file = match self.storage.open(&path, OpenMode::Read) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(RaftMeta::default()),
            Err(error) => return Err(io(error)),
        };
        let mut bytes = [0u8; META_BYTES];
        file.read_exact_at(&mut bytes, 0).map_err(|error| match error.kind() {
            std::io::ErrorKind::UnexpectedEof => MetaError::Damaged {
                path: path.clone(),
                reason: "shorter than 64 bytes".into(),
            },
            _ => io(error),
        })?;
        RaftMeta::decode(&bytes).map_err(|reason| MetaError::Damaged {
            path: path.clone(),
            reason,
        })
    }

    /// Replaces the file.
    ///
    /// On disk when it returns `Ok`: `meta`, durable (data synced, rename
    /// and directory synced). After an error the file holds either the old
    /// or the new state.
    pub fn store(&self, meta: &RaftMeta) -> Result<(), MetaError> {
        replace_file(self.storage.as_ref(), &self.dir, META_NAME, &meta.encode()).map_err(|source| MetaError::Io {
            path: self.dir.join(META_NAME),
            source,
        })
    }

    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Replaces `dir/name` by `bytes` atomically: written to a temporary,
/// synced, renamed over, directory synced.
///
/// On disk when it returns `Ok`: `bytes` at `dir/name`, durable. After an
/// error the file holds either the old or the new bytes.
pub(crate) fn replace_file(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!("{name}.tmp"));
    let _ = storage.remove(&temp);
    let file = storage.open(&temp, OpenMode::CreateNew)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    storage.rename(&temp, &dir.join(name))?;
    storage.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use farmlog_engine::io::SimStorage;

    use super::*;

    #[test]
    fn the_state_round_trips_and_damage_is_reported() {
        let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(Default::default()));
        let dir = Path::new("/node");
        storage.create_dir_all(dir).unwrap();
        let file = MetaFile::new(storage.clone(), dir);
        assert_eq!(file.load().unwrap(), RaftMeta::default());
        let meta = RaftMeta {
            vote: Some(Vote::new_committed(7, 3)),
            last_purged: Some(LogId::new(CommittedLeaderId::new(5, 0), 1200)),
            fence: Some(6),
        };
        file.store(&meta).unwrap();
        assert_eq!(file.load().unwrap(), meta);
        let unvoted = RaftMeta {
            vote: Some(Vote {
                leader_id: LeaderId {
                    term: 9,
                    voted_for: None,
                },
                committed: false,
            }),
            last_purged: None,
            fence: None,
        };
        file.store(&unvoted).unwrap();
        assert_eq!(file.load().unwrap(), unvoted);

        let raw = storage.open(&dir.join(META_NAME), OpenMode::ReadWrite).unwrap();
        raw.write_all_at(&[0xff], 9).unwrap();
        assert!(matches!(file.load(), Err(MetaError::Damaged { .. })));
    }

    #[test]
    fn a_version_one_file_reads_unfenced_and_a_fence_flag_in_it_is_refused() {
        let meta = RaftMeta {
            vote: Some(Vote::new_committed(4, 2)),
            last_purged: None,
            fence: None,
        };
        let mut bytes = meta.encode();
        bytes[4..6].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(RaftMeta::decode(&bytes), Ok(meta));
        bytes[6] |= FLAG_FENCED as u8;
        let crc = crc32fast::hash(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        assert!(RaftMeta::decode(&bytes).unwrap_err().contains("unknown flags"));
    }
}
