//! One farmlog node: the Raft instance over the engine-backed stores, its
//! proposer, and the applied state that reads are answered from.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use farmlog_engine::io::Storage;
use farmlog_engine::state::batch::EncodedCommand;
use farmlog_engine::state::outcome::Outcome;
use farmlog_engine::state::Place;
use farmlog_engine::Log;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fence::{self, Fence, FenceState};
use crate::inbox::Inbox;
use crate::scrub::{self, ScrubStatus};

use crate::history::{self, History, HistoryError, HistoryRecord, ReadHistory, HISTORY_READ_TIMEOUT};
use crate::proposer::{ProposeError, Proposer};
use crate::schema::{SchemaError, SchemaSupport};
use crate::state_machine::Applier;
use crate::transport::{Network, PeerStatus, RpcError, Transport};
use crate::{open_stores, Error, LogStore, NodeId, Proposal, Raft, StoreOptions};

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

/// Why a membership change or a hand-off did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("this node is not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("node {node} is not a voter")]
    NotVoter { node: NodeId },
    #[error("refused: {reason}")]
    Refused { reason: String },
    #[error("timed out: {stage}")]
    TimedOut { stage: &'static str },
}

/// How long after its last heartbeat a follower keeps refusing votes
/// (openraft's leader lease is the longest election timeout), plus this
/// margin, is how long a hand-off waits before the target may be elected.
pub const HAND_OFF_LEASE_MARGIN_MS: u64 = 50;

/// A call to one peer with an argument `A`, its transport's type erased.
pub(crate) type PeerCall<R, A = ()> = Arc<
    dyn Fn(NodeId, BasicNode, Duration, A) -> Pin<Box<dyn Future<Output = Result<R, String>> + Send>> + Send + Sync,
>;
type Elect = PeerCall<()>;

/// Erases the transport of one kind of call.
fn peer_call<T, R, A, F, Fut>(network: &Network<T>, call: F) -> PeerCall<R, A>
where
    T: Transport,
    F: Fn(Network<T>, NodeId, BasicNode, Duration, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
{
    let network = network.clone();
    Arc::new(move |target, node, timeout, argument| {
        let call = call(network.clone(), target, node, timeout, argument);
        Box::pin(async move { call.await.map_err(|error| error.to_string()) })
    })
}

/// A candidate that lost this many elections in a row, with no leader
/// seen, sits out a random pause before it may campaign again: openraft
/// 0.9 draws a node's election timeout once per start, so two nodes that
/// drew the same timeout and lost their leader at the same moment can
/// split every vote, term after term, on a network without jitter.
pub const SPLIT_VOTES_BEFORE_PAUSE: u64 = 3;

/// How often client writes look at the disk's free space.
pub const ROOM_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long a node may take to say which schema versions it supports.
pub const SCHEMA_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running node.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    proposer: Proposer,
    elect: Elect,
    probe: PeerCall<PeerStatus>,
    schema_support: SchemaSupport,
    inbox: Inbox,
    fence: Fence,
    history: Arc<History>,
    read_history: ReadHistory,
    applied: Arc<RwLock<Applier>>,
    log_store: LogStore,
    flusher: std::sync::Mutex<Option<JoinHandle<()>>>,
    scrubber: std::sync::Mutex<Option<JoinHandle<()>>>,
    split_vote_breaker: std::sync::Mutex<Option<JoinHandle<()>>>,
    fence_guard: std::sync::Mutex<Option<JoinHandle<()>>>,
    backfill: std::sync::Mutex<Option<JoinHandle<()>>>,
    scrub_status: watch::Receiver<ScrubStatus>,
    /// The last free-space check of client writes: when, and its answer.
    room: std::sync::Mutex<Option<(std::time::Instant, Result<(), ProposeError>)>>,
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
        if let Some(what) = scrub::damage_marked(storage.as_ref(), dir) {
            return Err(Error::Damaged { what });
        }
        let damaged = |what: String| {
            let _ = scrub::mark_damaged(storage.as_ref(), dir, &what);
            Error::Damaged { what }
        };
        let replaces = scrub::replaces(storage.as_ref(), dir);
        let scrub_rate = store_options.scrub_bytes_per_second;
        let schema_support = store_options.schema_support;
        let verify = store_options.verify_at_open;
        let log_options = store_options.log.clone();
        let (log_store, state_machine) = match open_stores(storage.clone(), dir, store_options) {
            Err(Error::Engine(error)) if error.corruption().is_some() => return Err(damaged(error.to_string())),
            other => other?,
        };
        let history = match History::open(storage.clone(), dir, &log_store, log_options) {
            Ok(history) => Arc::new(history),
            Err(HistoryError::Engine(error)) if error.corruption().is_some() => return Err(damaged(error.to_string())),
            Err(error) => return Err(Error::History(error)),
        };
        if verify {
            if let Err(error) = log_store.log().verify(&mut |_| {}) {
                return Err(damaged(error.to_string()));
            }
        }
        // The tail fence (see `fence.rs`), durable before Raft starts.
        let fence = match log_store.fence_at_open(id)? {
            Some(term) => {
                tracing::warn!(
                    node = id,
                    term,
                    "the log's tail was cut at open: fenced until it is safe to vote"
                );
                Fence::new(FenceState::Fenced { term })
            }
            None => Fence::default(),
        };
        let config = match fence.get().is_fenced() {
            true => Arc::new(Config {
                enable_elect: false,
                ..(*config).clone()
            }),
            false => config,
        };
        let applied = state_machine.shared();
        let flusher = log_store.flush_task().map(tokio::spawn);
        let network = Network::new(transport);
        let elect: Elect = peer_call(&network, |network, target, node, timeout, ()| async move {
            network.elect(target, &node, timeout).await
        });
        let probe: PeerCall<PeerStatus> = peer_call(&network, |network, target, node, timeout, ()| async move {
            network.status(target, &node, timeout).await
        });
        let read_history: ReadHistory = peer_call(&network, |network, target, node, timeout, range| async move {
            network.read_history(target, &node, range, timeout).await
        });
        let raft = Raft::new(id, config, network, log_store.clone(), state_machine)
            .await
            .map_err(|error| Error::Raft {
                reason: error.to_string(),
            })?;
        let proposer = Proposer::start(raft.clone(), applied.clone());
        let (status, scrub_status) = watch::channel(ScrubStatus::default());
        let scrubber = (scrub_rate > 0).then(|| {
            let (log, raft, dir) = (log_store.log().clone(), raft.clone(), dir.to_path_buf());
            tokio::spawn(async move {
                let damage = scrub::scrub(log, scrub_rate, status).await;
                tracing::error!(%damage, "the log is damaged; this node stops and must rejoin as a new member");
                let _ = scrub::mark_damaged(storage.as_ref(), &dir, &damage);
                let _ = raft.shutdown().await;
            })
        });
        let split_vote_breaker = tokio::spawn(break_split_votes(raft.clone(), log_store.clone(), fence.clone()));
        let fence_guard = fence.get().is_fenced().then(|| {
            tokio::spawn(fence::guard(
                id,
                raft.clone(),
                log_store.clone(),
                fence.clone(),
                probe.clone(),
            ))
        });
        let backfill = tokio::spawn(history::backfill(
            id,
            raft.clone(),
            log_store.backfill_wanted(),
            history.clone(),
            read_history.clone(),
        ));
        let inbox = Inbox {
            id,
            raft: raft.clone(),
            log_store: log_store.clone(),
            fence: fence.clone(),
            schema: schema_support,
            history: history.clone(),
            replaces,
        };
        Ok(Self {
            id,
            raft,
            proposer,
            elect,
            probe,
            schema_support,
            inbox,
            fence,
            history,
            read_history,
            applied,
            log_store,
            flusher: std::sync::Mutex::new(flusher),
            scrubber: std::sync::Mutex::new(scrubber),
            split_vote_breaker: std::sync::Mutex::new(Some(split_vote_breaker)),
            fence_guard: std::sync::Mutex::new(fence_guard),
            backfill: std::sync::Mutex::new(Some(backfill)),
            scrub_status,
            room: std::sync::Mutex::new(None),
        })
    }

    /// The engine log under this node (for inspection and checks).
    pub fn log(&self) -> &Arc<Log> {
        self.log_store.log()
    }

    pub fn log_store(&self) -> &LogStore {
        &self.log_store
    }

    /// Where the node's transport server delivers its peers' requests.
    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    /// The history held here (see [`crate::history`]).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The committed record at `index`: read here when this node holds
    /// it, otherwise from the leader or another voter that does (a node
    /// brought up by a snapshot holds the history behind it only once its
    /// backfill is complete).
    pub async fn read_history(&self, index: u64) -> Result<HistoryRecord, HistoryError> {
        let applied = self.raft.metrics().borrow().last_applied.map(|applied| applied.index);
        if applied.is_none_or(|applied| index > applied) {
            return Err(HistoryError::NotCommitted { index, applied });
        }
        // Not held here (or still being fetched): ask the peers.
        if let Ok(mut chunk) = self.history.chunk(index, index + 1) {
            if let Some(record) = chunk.records.pop().filter(|record| record.index == index) {
                return Ok(record);
            }
        }
        let mut reasons = Vec::new();
        for (source, node) in history::sources(self.id, &self.raft) {
            match (self.read_history)(source, node, HISTORY_READ_TIMEOUT, (index, index + 1)).await {
                Ok(mut chunk) => match chunk.records.pop().filter(|record| record.index == index) {
                    Some(record) => return Ok(record),
                    None => reasons.push(format!("node {source} holds history from {}", chunk.first_retained)),
                },
                Err(reason) => reasons.push(format!("node {source}: {reason}")),
            }
        }
        Err(HistoryError::Unavailable {
            index,
            reason: reasons.join("; "),
        })
    }

    /// Whether the node is fenced (see [`crate::fence`]).
    pub fn fence_state(&self) -> FenceState {
        self.fence.get()
    }

    /// What this node's proposer has packed since start.
    pub fn proposer_stats(&self) -> &crate::proposer::ProposerStats {
        self.proposer.stats()
    }

    /// Refuses client writes while the disk is nearly full (see
    /// `Log::check_room_for_clients`), checked at most every
    /// [`ROOM_CHECK_INTERVAL`].
    fn check_room(&self) -> Result<(), ProposeError> {
        let mut checked = self.room.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some((at, result)) = checked.as_ref() {
            if at.elapsed() < ROOM_CHECK_INTERVAL {
                return result.clone();
            }
        }
        let result = match self.log().check_room_for_clients() {
            Err(farmlog_engine::Error::DiskNearlyFull {
                available_bytes,
                reserve_bytes,
            }) => Err(ProposeError::DiskNearlyFull {
                available_bytes,
                needed_bytes: reserve_bytes,
            }),
            // An error reading free space is not a reason to refuse.
            _ => Ok(()),
        };
        *checked = Some((std::time::Instant::now(), result.clone()));
        result
    }

    /// Proposes one command (see [`Proposer::propose`]); refused while the
    /// disk is nearly full.
    pub async fn propose(&self, command: EncodedCommand) -> Result<(Place, Outcome), ProposeError> {
        self.check_room()?;
        self.proposer.propose(command).await
    }

    /// Proposes several commands together, one result each, in order (see
    /// [`Proposer::propose_many`]).
    pub async fn propose_many(&self, commands: Vec<EncodedCommand>) -> Vec<Result<(Place, Outcome), ProposeError>> {
        if let Err(full) = self.check_room() {
            return commands.iter().map(|_| Err(full.clone())).collect();
        }
        self.proposer.propose_many(commands).await
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
        for task in [
            &self.scrubber,
            &self.split_vote_breaker,
            &self.fence_guard,
            &self.backfill,
        ] {
            let task = task.lock().unwrap_or_else(|poison| poison.into_inner()).take();
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        }
        let _ = self.raft.shutdown().await;
        let flusher = self.flusher.lock().unwrap_or_else(|poison| poison.into_inner()).take();
        if let Some(flusher) = flusher {
            flusher.abort();
            let _ = flusher.await;
        }
    }

    fn write_error(error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> MembershipError {
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => MembershipError::NotLeader {
                leader: forward.leader_id,
            },
            other => MembershipError::Refused {
                reason: other.to_string(),
            },
        }
    }

    /// The command schema versions this node applies.
    pub fn schema_support(&self) -> SchemaSupport {
        self.schema_support
    }

    /// Which schema versions node `id` says it supports; an error if it
    /// cannot be asked, or another node answers at its address.
    async fn schema_of(&self, id: NodeId, node: BasicNode) -> Result<SchemaSupport, String> {
        let status = (self.probe)(id, node, SCHEMA_PROBE_TIMEOUT, ()).await?;
        match status.id == id {
            true => Ok(status.schema),
            false => Err(format!("node {} answered at its address", status.id)),
        }
    }

    /// The cluster's command schema version, as applied here.
    pub fn cluster_schema(&self) -> u16 {
        self.read_local(|applier| applier.cluster_schema)
    }

    /// Moves the cluster to command schema `version` (leader only), once
    /// every member, voter or learner, says it supports it: see
    /// [`crate::schema`]. Returns when the change is committed and applied
    /// here; commands of `version` are accepted from then on. Moving to
    /// the current version does nothing.
    pub async fn upgrade_schema(&self, version: u16) -> Result<(), SchemaError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            return Err(SchemaError::NotLeader {
                leader: metrics.current_leader,
            });
        }
        let current = self.cluster_schema();
        if version <= current {
            return match version == current {
                true => Ok(()),
                false => Err(SchemaError::Backwards {
                    current,
                    asked: version,
                }),
            };
        }
        for (&id, node) in metrics.membership_config.membership().nodes() {
            let support = match id == self.id {
                true => self.schema_support,
                false => self
                    .schema_of(id, node.clone())
                    .await
                    .map_err(|reason| SchemaError::Unreachable { node: id, reason })?,
            };
            if !support.contains(version) {
                return Err(SchemaError::Unsupported {
                    node: id,
                    support,
                    asked: version,
                });
            }
        }
        match self.raft.client_write(Proposal::Schema(version)).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => Err(SchemaError::NotLeader {
                leader: forward.leader_id,
            }),
            Err(error) => Err(SchemaError::NotCommitted {
                reason: error.to_string(),
            }),
        }
    }

    /// Adds a node as a learner and waits until it has caught up with the
    /// log (leader only). The node must be running and reachable, and
    /// support the cluster's command schema version.
    pub async fn add_learner(&self, id: NodeId, node: BasicNode) -> Result<(), MembershipError> {
        let cluster = self.cluster_schema();
        let support = self
            .schema_of(id, node.clone())
            .await
            .map_err(|reason| MembershipError::Refused {
                reason: format!("node {id} did not say which schema versions it supports: {reason}"),
            })?;
        if !support.contains(cluster) {
            return Err(MembershipError::Refused {
                reason: format!("node {id} supports schema versions {support}, not the cluster's {cluster}"),
            });
        }
        self.raft
            .add_learner(id, node, true)
            .await
            .map(|_| ())
            .map_err(Self::write_error)
    }

    /// Changes the voters (joint consensus; leader only): for example
    /// `ChangeMembers::AddVoterIds` promotes learners and
    /// `ChangeMembers::RemoveVoters` removes nodes from the cluster.
    /// Returns once the new configuration is committed.
    pub async fn change_voters(&self, change: ChangeMembers<NodeId, BasicNode>) -> Result<(), MembershipError> {
        self.raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(Self::write_error)
    }

    /// Hands leadership to `target`, a voter, so that this node can be
    /// drained: openraft 0.9 has no leader transfer, so it is built from
    /// what 0.9 offers.
    ///
    /// 1. New writes are refused (told to ask `target`); queued ones go.
    /// 2. Wait until `target` has every entry this leader has.
    /// 3. Stop heartbeats and wait out the followers' leader lease: a
    ///    follower refuses to vote while the lease of the leader it last
    ///    heard from holds, and starts its own election only a full
    ///    election timeout after the lease ends, so `target` gets the
    ///    first chance.
    /// 4. Ask `target` to start an election now ([`Transport::elect`]); it
    ///    has the longest log, so it wins; this node steps down when it
    ///    sees the higher term.
    ///
    /// Writes resume once `target` leads. Whatever happens, heartbeats and
    /// writes are re-enabled here before it returns. No acknowledged write
    /// is at risk at any step: it is Raft's ordinary election.
    pub async fn hand_off(&self, target: NodeId, timeout: Duration) -> Result<(), MembershipError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            return Err(MembershipError::NotLeader {
                leader: metrics.current_leader,
            });
        }
        if target == self.id {
            return Ok(());
        }
        let membership = metrics.membership_config.membership().clone();
        if !membership.voter_ids().any(|voter| voter == target) {
            return Err(MembershipError::NotVoter { node: target });
        }
        let node = membership.get_node(&target).cloned().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        self.proposer.pause(target);
        let result = async {
            let caught_up = |metrics: &openraft::RaftMetrics<NodeId, BasicNode>| {
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(&target).copied().flatten())
                    .map(|log_id| log_id.index);
                matched.is_some() && matched == metrics.last_log_index
            };
            self.raft
                .wait(Some(left()))
                .metrics(caught_up, "the target has every entry")
                .await
                .map_err(|_| MembershipError::TimedOut {
                    stage: "waiting for the target to catch up",
                })?;
            self.raft.runtime_config().heartbeat(false);
            let lease = Duration::from_millis(self.raft.config().election_timeout_max + HAND_OFF_LEASE_MARGIN_MS);
            tokio::time::sleep(lease.min(left())).await;
            (self.elect)(target, node, left(), ())
                .await
                .map_err(|reason| MembershipError::Refused { reason })?;
            self.raft
                .wait(Some(left()))
                .metrics(|metrics| metrics.current_leader == Some(target), "the target leads")
                .await
                .map_err(|_| MembershipError::TimedOut {
                    stage: "waiting for the target to lead",
                })
                .map(|_| ())
        }
        .await;
        self.raft.runtime_config().heartbeat(true);
        self.proposer.resume();
        result
    }

    /// What the background scrub has checked and found.
    pub fn scrub_status(&self) -> ScrubStatus {
        self.scrub_status.borrow().clone()
    }

    /// Replaces voter `old` (a node whose log was damaged, now down) by
    /// `new` (the same machine, wiped, started under a new id; leader
    /// only). `old` is removed first, by the healthy voters alone; `new`
    /// has never voted, so it cannot vote twice in a term, and it catches
    /// up as a learner before it is promoted. Safe while the damaged nodes
    /// are a minority: the removal needs only the others.
    pub async fn replace_voter(&self, old: NodeId, new: NodeId, node: BasicNode) -> Result<(), MembershipError> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        if membership.voter_ids().any(|voter| voter == old) {
            self.change_voters(ChangeMembers::RemoveVoters([old].into())).await?;
        }
        self.add_learner(new, node).await?;
        self.change_voters(ChangeMembers::AddVoterIds([new].into())).await
    }

    /// Starts a node whose log was found damaged as a new member: wipes
    /// `dir` and starts an empty node there under `new_id`, which then
    /// waits for the leader's [`Node::replace_voter`]. It answers status
    /// requests sent to `old_id` (at the same address) saying that it
    /// replaced it: a fenced node then knows `old_id`'s log is gone (see
    /// `fence.rs`).
    ///
    /// On disk when it returns `Ok`: `dir` holds only the new node's files
    /// and `REPLACES`.
    #[allow(clippy::too_many_arguments)]
    pub async fn rejoin<T: Transport>(
        old_id: NodeId,
        new_id: NodeId,
        storage: Arc<dyn Storage>,
        dir: &Path,
        store_options: StoreOptions,
        config: Arc<Config>,
        transport: Arc<T>,
    ) -> Result<Self, Error> {
        let io = |source| crate::meta::MetaError::Io {
            path: dir.to_path_buf(),
            source,
        };
        scrub::wipe(storage.as_ref(), dir).map_err(io)?;
        scrub::mark_replaces(storage.as_ref(), dir, old_id).map_err(io)?;
        Self::start(new_id, storage, dir, store_options, config, transport).await
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

/// Watches for split votes (see [`SPLIT_VOTES_BEFORE_PAUSE`]): after that
/// many terms in a row as a candidate with no leader seen, elections are
/// turned off here for a random part of the longest election timeout (the
/// run's seeded generator draws it), then on again. The other candidate
/// meanwhile times out alone and wins. Turning elections off never makes
/// a vote unsafe: it only delays this node's own campaign. Elections are
/// turned back on only if the node's fence allows it to campaign.
async fn break_split_votes(raft: Raft, log_store: LogStore, fence: Fence) {
    use rand::Rng;
    let mut metrics = raft.metrics();
    let (mut last_term, mut lost) = (0u64, 0u64);
    loop {
        let (state, term, leader) = {
            let metrics = metrics.borrow_and_update();
            (metrics.state, metrics.current_term, metrics.current_leader)
        };
        match (state, leader) {
            (ServerState::Candidate, None) if term > last_term => lost += 1,
            (_, Some(_)) => lost = 0,
            _ => {}
        }
        last_term = term;
        if lost >= SPLIT_VOTES_BEFORE_PAUSE {
            lost = 0;
            let longest = raft.config().election_timeout_max;
            let pause = Duration::from_millis(crate::runtime::ThreadRng.gen_range(1..=longest));
            raft.runtime_config().elect(false);
            tokio::time::sleep(pause).await;
            let own_last = log_store.last_log_id().ok().flatten();
            raft.runtime_config().elect(fence.may_campaign(own_last));
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
