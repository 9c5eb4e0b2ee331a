//! One farmlog node: the Raft instance over the engine-backed stores, its
//! proposer, and the applied state that reads are answered from.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use farmlog_engine::io::Storage;
use farmlog_engine::state::batch::EncodedCommand;
use farmlog_engine::state::outcome::Outcome;
use farmlog_engine::state::Place;
use farmlog_engine::Log;
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{Config, SnapshotPolicy};
use tokio::task::JoinHandle;

use crate::proposer::{ProposeError, Proposer};
use crate::state_machine::Applier;
use crate::transport::{Network, Transport};
use crate::{open_stores, Error, LogStore, NodeId, Raft, StoreOptions};

/// Heartbeat interval.
pub const HEARTBEAT_MS_DEFAULT: u64 = 50;
/// Election timeouts are drawn from this range.
pub const ELECTION_MS_MIN_DEFAULT: u64 = 300;
pub const ELECTION_MS_MAX_DEFAULT: u64 = 600;
/// A snapshot is built after this many entries since the last.
pub const SNAPSHOT_EVERY_ENTRIES_DEFAULT: u64 = 10_000;
/// Entries kept in openraft's view behind a snapshot, so that a follower
/// a little behind catches up from the log rather than a new snapshot
/// (see openraft#1706).
pub const KEEP_BEHIND_SNAPSHOT_DEFAULT: u64 = 10_000;
/// Snapshot chunks sent to a follower, at most this many bytes each.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;
/// Entries sent to a follower in one append, at most.
pub const APPEND_ENTRIES_MAX: u64 = 1024;

/// Raft timing and snapshot settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_ms_min: u64,
    pub election_ms_max: u64,
    pub snapshot_every_entries: u64,
    pub keep_behind_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: HEARTBEAT_MS_DEFAULT,
            election_ms_min: ELECTION_MS_MIN_DEFAULT,
            election_ms_max: ELECTION_MS_MAX_DEFAULT,
            snapshot_every_entries: SNAPSHOT_EVERY_ENTRIES_DEFAULT,
            keep_behind_snapshot: KEEP_BEHIND_SNAPSHOT_DEFAULT,
        }
    }
}

impl RaftSettings {
    /// openraft's configuration; errors name the setting that is wrong.
    pub fn config(&self, cluster_name: &str) -> Result<Arc<Config>, Error> {
        let config = Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_ms_min,
            election_timeout_max: self.election_ms_max,
            max_payload_entries: APPEND_ENTRIES_MAX,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            ..Config::default()
        };
        Ok(Arc::new(config.validate().map_err(|error| Error::Config {
            reason: error.to_string(),
        })?))
    }
}

/// Why a read could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("this node is not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("the read could not be confirmed: {reason}")]
    Unavailable { reason: String },
}

/// A running node.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    proposer: Proposer,
    applied: Arc<RwLock<Applier>>,
    log_store: LogStore,
    flusher: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Node {
    /// Opens the node's stores under `dir` and starts Raft on the current
    /// runtime. A new node waits to be initialized or added by a leader.
    pub async fn start<T: Transport>(
        id: NodeId,
        storage: Arc<dyn Storage>,
        dir: &Path,
        store_options: StoreOptions,
        config: Arc<Config>,
        transport: Arc<T>,
    ) -> Result<Self, Error> {
        let (log_store, state_machine) = open_stores(storage, dir, store_options)?;
        let applied = state_machine.shared();
        let flusher = log_store.flush_task().map(tokio::spawn);
        let raft = Raft::new(id, config, Network::new(transport), log_store.clone(), state_machine)
            .await
            .map_err(|error| Error::Raft {
                reason: error.to_string(),
            })?;
        let proposer = Proposer::start(raft.clone());
        Ok(Self {
            id,
            raft,
            proposer,
            applied,
            log_store,
            flusher: std::sync::Mutex::new(flusher),
        })
    }

    /// The engine log under this node (for inspection and checks).
    pub fn log(&self) -> &Arc<Log> {
        self.log_store.log()
    }

    pub fn log_store(&self) -> &LogStore {
        &self.log_store
    }

    /// Proposes one command (see [`Proposer::propose`]).
    pub async fn propose(&self, command: EncodedCommand) -> Result<(Place, Outcome), ProposeError> {
        self.proposer.propose(command).await
    }

    /// A linearizable read: confirms leadership with a quorum, waits until
    /// everything committed before the read is applied here, then reads.
    pub async fn read<R>(&self, read: impl FnOnce(&Applier) -> R) -> Result<R, ReadError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(self.read_local(read)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => Err(ReadError::NotLeader {
                leader: forward.leader_id,
            }),
            Err(error) => Err(ReadError::Unavailable {
                reason: error.to_string(),
            }),
        }
    }

    /// A read of this node's applied state as it is, leader or not. The
    /// caller states its staleness with `Applier::applied`.
    pub fn read_local<R>(&self, read: impl FnOnce(&Applier) -> R) -> R {
        read(&self.applied.read().unwrap_or_else(|poison| poison.into_inner()))
    }

    /// Stops Raft and the flusher. Appends not yet durable stay unacknowledged.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        let flusher = self.flusher.lock().unwrap_or_else(|poison| poison.into_inner()).take();
        if let Some(flusher) = flusher {
            flusher.abort();
            let _ = flusher.await;
        }
    }

    /// Waits at most `timeout` for the node to see a leader; returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        self.raft
            .wait(Some(timeout))
            .metrics(|metrics| metrics.current_leader.is_some(), "a leader")
            .await
            .ok()
            .and_then(|metrics| metrics.current_leader)
    }
}
