//! The engine's projections as openraft's state machine.
//!
//! Applying an entry folds its command batch into [`State`] and returns one
//! outcome per command ([`Applied`]); blank and membership entries carry no
//! commands and are skipped by the state.
//!
//! ## Snapshots
//!
//! A snapshot is the state's own snapshot (rkyv + zstd, with its BLAKE3
//! hash, see `engine::state::snapshot`) inside a small envelope that adds
//! what openraft needs: the last log id and the last membership. Building
//! one clones the state on the apply task (memory copies only) and does
//! the archiving, compressing and writing on the builder's own task, so
//! apply waits only for the clone; appends to the log never wait at all.
//! The newest [`SNAPSHOTS_KEPT`] snapshots are kept in `snapshots/` and are
//! durable before openraft learns of them: it may purge the entries they
//! cover right after. openraft sends one to a follower in chunks of at
//! most `Config::snapshot_max_chunk_size` bytes.
//!
//! Envelope layout (little-endian):
//!
//! ```text
//!  0  u32  magic "FLRS"
//!  4  u16  format version (2; version 1 had no schema version and
//!           its crc did not cover bytes 48..64)
//!  6  u16  flags: 1 last log id present, 2 membership log id present
//!  8  u64  last log id term
//! 16  u64  last log id index
//! 24  u64  membership log id term
//! 32  u64  membership log id index
//! 40  u32  membership record length (M)
//! 44  u32  crc32 of bytes 0..44, of bytes 48..64 and of the membership
//!           record
//! 48  u16  the cluster's command schema version (`crate::schema`)
//! 50  [u8; 14] reserved, zero
//! 64  M bytes   membership record (entry::MembershipRecord)
//! 64+M …        the state's snapshot
//! ```

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use farmlog_engine::io::{OpenMode, Storage};
use farmlog_engine::state::outcome::Outcome;
use farmlog_engine::state::snapshot::SnapshotError;
use farmlog_engine::state::State;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};

use crate::entry::{self, MembershipRecord, Proposal};
use crate::schema::{SchemaSupport, SchemaUnsupported, CLUSTER_SCHEMA_INITIAL};
use crate::{Entry, NodeId, TypeConfig};

/// Snapshot files kept on disk, newest first.
pub const SNAPSHOTS_KEPT: usize = 2;
/// Largest snapshot a node accepts from a leader: 64 GiB.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 << 30;

const ENVELOPE_MAGIC: u32 = u32::from_le_bytes(*b"FLRS");
const ENVELOPE_VERSION: u16 = 2;
/// Envelopes without the schema version, still read.
const ENVELOPE_VERSION_1: u16 = 1;
const ENVELOPE_BYTES: usize = 64;
const FLAG_LAST: u16 = 1;
const FLAG_MEMBERSHIP: u16 = 2;
const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";

/// What applying one entry did: its index and, for a command batch, one
/// outcome per command in slot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub outcomes: Vec<Outcome>,
}

/// The applied state, shared with readers.
#[derive(Debug, Clone)]
pub struct Applier {
    pub state: State,
    pub applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// The cluster's command schema version (see [`crate::schema`]).
    pub cluster_schema: u16,
}

impl Applier {
    fn empty() -> Self {
        Self {
            state: State::new(),
            applied: None,
            membership: StoredMembership::default(),
            cluster_schema: CLUSTER_SCHEMA_INITIAL,
        }
    }
}

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {name} is damaged: {reason}")]
    Damaged { name: String, reason: String },
    #[error("snapshot {name}: {source}")]
    State {
        name: String,
        #[source]
        source: SnapshotError,
    },
}

/// The state machine given to openraft.
pub struct StateMachine {
    shared: Arc<RwLock<Applier>>,
    files: Arc<SnapshotFiles>,
    support: SchemaSupport,
}

impl StateMachine {
    /// Opens the state machine: the newest snapshot in `dir` if there is
    /// one (openraft then re-applies the committed entries after it),
    /// else an empty state.
    ///
    /// `support` is what this node applies: an entry or a snapshot that
    /// moves the cluster past it stops the node with
    /// [`SchemaUnsupported`].
    pub fn open(storage: Arc<dyn Storage>, dir: &Path, support: SchemaSupport) -> Result<Self, crate::Error> {
        let files = Arc::new(SnapshotFiles::open(storage, dir)?);
        let applier = match files.newest()? {
            Some((name, bytes)) => decode(&name, &bytes)?.0,
            None => Applier::empty(),
        };
        if !support.contains(applier.cluster_schema) {
            return Err(crate::Error::Schema(SchemaUnsupported {
                version: applier.cluster_schema,
                support,
            }));
        }
        Ok(Self {
            shared: Arc::new(RwLock::new(applier)),
            files,
            support,
        })
    }

    /// The applied state, shared: readers take [`StateMachine::read`].
    pub fn shared(&self) -> Arc<RwLock<Applier>> {
        self.shared.clone()
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Applier> {
        self.shared.read().unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applier> {
        self.shared.write().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Builds a snapshot from a copy of the applied state.
pub struct SnapshotBuilder {
    copy: Applier,
    files: Arc<SnapshotFiles>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// On disk when it returns `Ok`: the snapshot, durable in `snapshots/`.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let bytes = encode(&self.copy);
        let meta = meta_of(&self.copy);
        self.files
            .store(&meta, &bytes)
            .map_err(|error| StorageIOError::write_snapshot(Some(meta.signature()), &error))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let applier = self.read();
        Ok((applier.applied, applier.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applier = self.write();
        let mut results = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let fail = |error: farmlog_engine::state::ApplyError| StorageIOError::apply(entry.log_id, &error);
            let outcomes = match &entry.payload {
                EntryPayload::Normal(Proposal::Commands(batch)) => applier
                    .state
                    .apply(index, farmlog_engine::kinds::COMMAND_BATCH, batch)
                    .map_err(fail)?,
                EntryPayload::Normal(Proposal::Schema(version)) => {
                    if !self.support.contains(*version) {
                        let error = SchemaUnsupported {
                            version: *version,
                            support: self.support,
                        };
                        tracing::error!(%error, index, "this node cannot follow the cluster");
                        return Err(StorageIOError::apply(entry.log_id, &error).into());
                    }
                    applier.state.skip(index).map_err(fail)?;
                    // Only forward: a stale proposal to an older version
                    // changes nothing.
                    applier.cluster_schema = applier.cluster_schema.max(*version);
                    Vec::new()
                }
                EntryPayload::Blank => {
                    applier.state.skip(index).map_err(fail)?;
                    Vec::new()
                }
                EntryPayload::Membership(membership) => {
                    applier.state.skip(index).map_err(fail)?;
                    applier.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    Vec::new()
                }
            };
            applier.applied = Some(entry.log_id);
            results.push(Applied { index, outcomes });
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            copy: self.read().clone(),
            files: self.files.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// On disk when it returns `Ok`: the snapshot, durable in `snapshots/`.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let signature = Some(meta.signature());
        let (applier, _) = decode(&meta.snapshot_id, &bytes)
            .map_err(|error| StorageIOError::read_snapshot(signature.clone(), &error))?;
        if !self.support.contains(applier.cluster_schema) {
            let error = SchemaUnsupported {
                version: applier.cluster_schema,
                support: self.support,
            };
            return Err(StorageIOError::read_snapshot(signature, &error).into());
        }
        if applier.applied != meta.last_log_id || applier.membership != meta.last_membership {
            let error = SnapshotFileError::Damaged {
                name: meta.snapshot_id.clone(),
                reason: "its envelope does not match the metadata it was sent with".into(),
            };
            return Err(StorageIOError::read_snapshot(signature, &error).into());
        }
        self.files
            .store(meta, &bytes)
            .map_err(|error| StorageIOError::write_snapshot(signature, &error))?;
        *self.write() = applier;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let newest = self
            .files
            .newest()
            .map_err(|error| StorageIOError::read_snapshot(None, &error))?;
        let Some((name, bytes)) = newest else {
            return Ok(None);
        };
        let (applier, id) = decode(&name, &bytes).map_err(|error| StorageIOError::read_snapshot(None, &error))?;
        let mut meta = meta_of(&applier);
        meta.snapshot_id = id;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

fn meta_of(applier: &Applier) -> SnapshotMeta<NodeId, BasicNode> {
    SnapshotMeta {
        last_log_id: applier.applied,
        last_membership: applier.membership.clone(),
        snapshot_id: snapshot_name(applier.applied),
    }
}

/// A snapshot's name: its last log id, zero-padded so names sort by it.
fn snapshot_name(last: Option<LogId<NodeId>>) -> String {
    match last {
        Some(last) => format!("{:020}-{:020}", last.index, last.leader_id.term),
        None => "empty".into(),
    }
}

/// The envelope and the state's snapshot.
pub fn encode(applier: &Applier) -> Vec<u8> {
    let membership = MembershipRecord::of(applier.membership.membership()).encode();
    let mut bytes = vec![0u8; ENVELOPE_BYTES];
    let mut flags = 0u16;
    let mut put = |at: usize, value: u64| bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    if let Some(last) = applier.applied {
        flags |= FLAG_LAST;
        put(8, last.leader_id.term);
        put(16, last.index);
    }
    if let Some(at) = applier.membership.log_id() {
        flags |= FLAG_MEMBERSHIP;
        put(24, at.leader_id.term);
        put(32, at.index);
    }
    bytes[0..4].copy_from_slice(&ENVELOPE_MAGIC.to_le_bytes());
    bytes[4..6].copy_from_slice(&ENVELOPE_VERSION.to_le_bytes());
    bytes[6..8].copy_from_slice(&flags.to_le_bytes());
    bytes[40..44].copy_from_slice(&(membership.len() as u32).to_le_bytes());
    bytes[48..50].copy_from_slice(&applier.cluster_schema.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..44]);
    crc.update(&bytes[48..ENVELOPE_BYTES]);
    crc.update(&membership);
    bytes[44..48].copy_from_slice(&crc.finalize().to_le_bytes());
    bytes.extend_from_slice(&membership);
    bytes.extend_from_slice(&applier.state.snapshot());
    bytes
}

/// Reads an envelope and restores the state in it; returns it with the
/// snapshot's name.
pub fn decode(name: &str, bytes: &[u8]) -> Result<(Applier, String), SnapshotFileError> {
    let damaged = |reason: String| SnapshotFileError::Damaged {
        name: name.to_string(),
        reason,
    };
    if bytes.len() < ENVELOPE_BYTES {
        return Err(damaged(format!("{} bytes, shorter than its envelope", bytes.len())));
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
    if u32_at(0) != ENVELOPE_MAGIC {
        return Err(damaged("bad magic".into()));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != ENVELOPE_VERSION && version != ENVELOPE_VERSION_1 {
        return Err(damaged(format!(
            "envelope version {version}, this build reads {ENVELOPE_VERSION_1} and {ENVELOPE_VERSION}"
        )));
    }
    let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
    let membership_len = u32_at(40) as usize;
    let state_at = ENVELOPE_BYTES
        .checked_add(membership_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| damaged(format!("membership of {membership_len} bytes runs past the end")))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..44]);
    if version != ENVELOPE_VERSION_1 {
        crc.update(&bytes[48..ENVELOPE_BYTES]);
    }
    crc.update(&bytes[ENVELOPE_BYTES..state_at]);
    if crc.finalize() != u32_at(44) {
        return Err(damaged("envelope crc mismatch".into()));
    }
    let membership = MembershipRecord::decode(&bytes[ENVELOPE_BYTES..state_at]).map_err(damaged)?;
    let applied = (flags & FLAG_LAST != 0).then(|| entry::log_id(u64_at(8), u64_at(16)));
    let membership_at = (flags & FLAG_MEMBERSHIP != 0).then(|| entry::log_id(u64_at(24), u64_at(32)));
    let state = State::restore(&bytes[state_at..]).map_err(|source| SnapshotFileError::State {
        name: name.to_string(),
        source,
    })?;
    if state.last_applied() > applied.map_or(0, |applied| applied.index) {
        return Err(damaged(format!(
            "its state has applied through {}, past its last log id",
            state.last_applied()
        )));
    }
    let cluster_schema = match version {
        ENVELOPE_VERSION_1 => CLUSTER_SCHEMA_INITIAL,
        _ => u16::from_le_bytes([bytes[48], bytes[49]]),
    };
    if cluster_schema == 0 {
        return Err(damaged("cluster schema version 0".into()));
    }
    let applier = Applier {
        state,
        applied,
        membership: StoredMembership::new(membership_at, membership),
        cluster_schema,
    };
    Ok((applier, snapshot_name(applied)))
}

/// The snapshot files of one node, through the engine's storage.
#[derive(Debug)]
struct SnapshotFiles {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
}

impl SnapshotFiles {
    fn open(storage: Arc<dyn Storage>, dir: &Path) -> Result<Self, SnapshotFileError> {
        storage.create_dir_all(dir).map_err(|source| SnapshotFileError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            storage,
            dir: dir.to_path_buf(),
        })
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotFileError {
        let path = path.to_path_buf();
        move |source| SnapshotFileError::Io { path, source }
    }

    /// Snapshot names, oldest first.
    fn names(&self) -> Result<Vec<String>, SnapshotFileError> {
        let mut names: Vec<String> = self
            .storage
            .list(&self.dir)
            .map_err(self.io(&self.dir))?
            .into_iter()
            .filter_map(|name| name.strip_suffix(SNAPSHOT_SUFFIX).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The newest snapshot's name and bytes.
    fn newest(&self) -> Result<Option<(String, Vec<u8>)>, SnapshotFileError> {
        let Some(name) = self.names()?.pop() else {
            return Ok(None);
        };
        let path = self.dir.join(format!("{name}{SNAPSHOT_SUFFIX}"));
        let file = self.storage.open(&path, OpenMode::Read).map_err(self.io(&path))?;
        let len = file.len().map_err(self.io(&path))?;
        if len > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotFileError::Damaged {
                name,
                reason: format!("{len} bytes, over {SNAPSHOT_BYTES_MAX}"),
            });
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0).map_err(self.io(&path))?;
        Ok(Some((name, bytes)))
    }

    /// Stores a snapshot and drops all but the newest [`SNAPSHOTS_KEPT`].
    ///
    /// On disk when it returns `Ok`: the snapshot, durable under its name
    /// (written to a temporary, synced, renamed, directory synced); older
    /// snapshots beyond the kept ones removed.
    fn store(&self, meta: &SnapshotMeta<NodeId, BasicNode>, bytes: &[u8]) -> Result<(), SnapshotFileError> {
        let name = snapshot_name(meta.last_log_id);
        let path = self.dir.join(format!("{name}{SNAPSHOT_SUFFIX}"));
        let temp = self.dir.join(format!("{name}{SNAPSHOT_SUFFIX}{TEMP_SUFFIX}"));
        let write = || -> std::io::Result<()> {
            let _ = self.storage.remove(&temp);
            let file = self.storage.open(&temp, OpenMode::CreateNew)?;
            file.write_all_at(bytes, 0)?;
            file.sync_data()?;
            self.storage.rename(&temp, &path)?;
            self.storage.sync_dir(&self.dir)
        };
        write().map_err(self.io(&path))?;
        let names = self.names()?;
        let stale = names.len().saturating_sub(SNAPSHOTS_KEPT);
        for old in &names[..stale] {
            let old = self.dir.join(format!("{old}{SNAPSHOT_SUFFIX}"));
            self.storage.remove(&old).map_err(self.io(&old))?;
        }
        if stale > 0 {
            self.storage.sync_dir(&self.dir).map_err(self.io(&self.dir))?;
        }
        Ok(())
    }
}
