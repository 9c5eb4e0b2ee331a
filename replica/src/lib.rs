//! farmlog's replication: openraft 0.9 over the engine.
//!
//! - [`log_store`]: openraft's log storage on the engine's log (one write
//!   path: an entry is one record, written and synced once), with the
//!   vote and purge point in a small file beside it ([`meta`]).
//! - [`state_machine`]: the engine's projections as openraft's state
//!   machine, with zstd snapshots kept on disk.
//! - [`runtime`]: tokio with a seedable election generator, so that the
//!   simulation repeats exactly.
//! - [`node`]: a running node; [`inbox`]: what its peers' requests reach;
//!   [`fence`]: why a node whose log may have lost acknowledged entries
//!   does not vote until that is safe; [`history`]: the history behind a
//!   snapshot, fetched from peers.
//!
//! Architecture invariant: replica knows engine and openraft; it knows
//! nothing of gRPC. Its transport is a trait.

pub mod entry;
pub mod fence;
pub mod history;
pub mod inbox;
pub mod log_store;
pub mod meta;
pub mod node;
pub mod proposer;
pub mod runtime;
pub mod schema;
pub mod scrub;
pub mod sim;
pub mod state_machine;
pub mod transport;

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use farmlog_engine::io::Storage;
use farmlog_engine::{Log, LogOptions};
use meta::MetaFile;

use farmlog_engine::log::format::{framed_len, INDEX_ENTRY_BYTES};
use farmlog_engine::log::BATCH_RECORDS_MAX;
use farmlog_engine::NewRecord;
pub use log_store::{LogStore, ManualFlush, Retention};
pub use state_machine::{Applied, StateMachine};

pub use entry::Proposal;
pub use fence::FenceState;
pub use inbox::Inbox;
pub use node::{MembershipError, Node, RaftSettings, ReadError};
pub use proposer::{ProposeError, Proposer};
pub use schema::{SchemaError, SchemaSupport};
pub use transport::{Network, PeerStatus, Transport};

/// A node's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's types for farmlog.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = runtime::FarmRuntime,
);

/// A Raft entry of farmlog.
pub type Entry = openraft::Entry<TypeConfig>;
/// A running Raft node of farmlog.
pub type Raft = openraft::Raft<TypeConfig>;

/// Errors of the replication layer's own making.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error(transparent)]
    Engine(#[from] farmlog_engine::Error),
    #[error("an append must continue the log at index {expected}, not {found}")]
    Gap { expected: u64, found: u64 },
    #[error(transparent)]
    Snapshot(#[from] state_machine::SnapshotFileError),
    #[error(transparent)]
    Schema(#[from] schema::SchemaUnsupported),
    #[error("bad Raft configuration: {reason}")]
    Config { reason: String },
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error("Raft could not start: {reason}")]
    Raft { reason: String },
    #[error("this node's log is damaged ({what}); it must rejoin as a new member (see Node::rejoin)")]
    Damaged { what: String },
}

/// Where a node keeps its files, under its data directory.
pub const LOG_DIR: &str = "log";
pub const SNAPSHOT_DIR: &str = "snapshots";

/// How a node's stores are opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The engine log's options. A new log starts at index 0, where
    /// openraft writes the first membership.
    pub log: LogOptions,
    pub retention: Retention,
    /// Only for a log in manual flush mode (the simulation).
    pub manual_flush: ManualFlush,
    /// Check every record at start (`Log::verify`), not only the tail.
    pub verify_at_open: bool,
    /// The background scrub's rate in bytes per second; 0 turns it off.
    pub scrub_bytes_per_second: u64,
    /// The command schema versions this node applies and reports (this
    /// build's, unless a test plays an older or newer build).
    pub schema_support: schema::SchemaSupport,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            log: LogOptions {
                first_index: 0,
                ..LogOptions::default()
            },
            retention: Retention::default(),
            manual_flush: ManualFlush::default(),
            verify_at_open: false,
            scrub_bytes_per_second: scrub::SCRUB_BYTES_PER_SECOND_DEFAULT,
            schema_support: schema::SchemaSupport::BUILD,
        }
    }
}

/// Opens (creating if needed) a node's log store and state machine under
/// `dir`: the engine log in `log/`, the vote and purge point in `RAFT`,
/// snapshots in `snapshots/`. Everything goes through `storage`.
///
/// On disk when it returns `Ok`: the directories exist; the log has been
/// recovered (see `Log::open_with`).
pub fn open_stores(
    storage: Arc<dyn Storage>,
    dir: &Path,
    options: StoreOptions,
) -> Result<(LogStore, StateMachine), Error> {
    storage.create_dir_all(dir).map_err(|source| meta::MetaError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let log = Arc::new(Log::open_with(storage.clone(), &dir.join(LOG_DIR), options.log)?);
    let log_store = LogStore::new(
        log,
        MetaFile::new(storage.clone(), dir),
        options.retention,
        options.manual_flush,
    )?;
    let state_machine = StateMachine::open(storage, &dir.join(SNAPSHOT_DIR), options.schema_support)?;
    Ok((log_store, state_machine))
}

/// Splits records into runs the engine takes in one append: at most
/// [`BATCH_RECORDS_MAX`] records and `bytes_max` bytes of footprint
/// (framed records and their index entries) each. A record too large for
/// any append still gets a run of its own, and the engine refuses it.
pub(crate) fn chunks<'a, 'b>(records: &'b [NewRecord<'a>], bytes_max: u64) -> Vec<&'b [NewRecord<'a>]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (at, record) in records.iter().enumerate() {
        let footprint = (framed_len(record.payload.len()) + INDEX_ENTRY_BYTES) as u64;
        if at > start && (at - start == BATCH_RECORDS_MAX || bytes + footprint > bytes_max) {
            chunks.push(&records[start..at]);
            start = at;
            bytes = 0;
        }
        bytes += footprint;
    }
    chunks.push(&records[start..]);
    chunks
}
