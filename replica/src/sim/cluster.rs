//! Seeded schedules against an in-process cluster, and the checker.
//!
//! One run ([`run`]) is one seed. Everything in it is deterministic: a
//! current-thread tokio runtime with paused time (simulated seconds take
//! microseconds), openraft's election timeouts drawn from a generator
//! seeded by the run's seed (`runtime::seed_thread_rng`), the network's
//! faults from another ([`SimNet`]), each node's disk a [`SimStorage`]
//! seeded from it too, and the engine log in manual flush mode, flushed by
//! a task on the same runtime through the engine's one completion
//! function. The same seed gives the same trace; [`SimReport::trace`] is
//! the BLAKE3 of every event in order, and a test runs each seed twice.
//!
//! ## The schedule
//!
//! Each step draws one action: a burst of client writes (commands of every
//! family, each with a unique proposer timestamp that identifies it), a
//! linearizable read, a crash with power loss of a minority (unsynced pages
//! kept, dropped or torn) or, rarely, of every node at once, a restart, a
//! partition into two groups, a one-way cut, healing, new link faults
//! (loss, duplication, delay and so reordering), a membership change, a
//! leader hand-off, a schema move, or a power loss with a bit flipped in
//! one voter's log: in a record the on-disk watermark vouches for (the
//! node finds it and rejoins as a new member) or in the newest
//! acknowledged round (the node cuts it as torn and starts fenced, see
//! `fence.rs`), or with a segment file of it cut short inside a record
//! (found at open: it rejoins); then simulated time advances. At the end the faults stop: every link heals, every node
//! restarts, and the cluster must accept a write within
//! [`RECOVERY_BOUND`] and converge.
//!
//! ## The checks
//!
//! - Every acknowledged write was durable on a quorum when it was
//!   acknowledged (checked at the moment of the ack, on each node's log).
//! - No two nodes lead in one term (from every node's metrics, as they
//!   change).
//! - A linearizable read sees every write acknowledged before it started,
//!   and never less than a read that finished before it started.
//! - Once faults stop, a write is accepted within [`RECOVERY_BOUND`].
//! - At the end, every node holds the whole retained history (its own log
//!   and what it fetched behind a snapshot), the same records (index, term
//!   and crc) up to the applied index; every acknowledged write is there
//!   exactly once, at the index and slot it was acknowledged with; and
//!   every node's state hash is the same; no node is still fenced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use farmlog_engine::io::{SimConfig, SimStorage, Storage};
use farmlog_engine::state::batch::{self, Batch};
use farmlog_engine::state::command::Command;
use farmlog_engine::state::{testing, Place};
use farmlog_engine::{kinds, FlushMode, Log, LogOptions};
use openraft::{BasicNode, Config, ServerState};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::net::{LinkFaults, NetCounts, SimNet};
use crate::entry::MembershipRecord;
use crate::node::{Node, RaftSettings};
use crate::{runtime, LogStore, ManualFlush, NodeId, ProposeError, SchemaSupport, StoreOptions};
use openraft::ChangeMembers;

/// Once faults stop, a write must be accepted within this simulated time.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(30);
/// A client gives up on a write or read after this long (its outcome is
/// then unknown).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Each node start waits a delay drawn from `1..=TICK_JITTER_MS_MAX`.
const TICK_JITTER_MS_MAX: u64 = 97;
/// Snapshots are built often, and few entries are kept behind them, so
/// that lagging and restarted nodes are brought up by snapshot + log.
const SIM_SNAPSHOT_EVERY_ENTRIES: u64 = 16;
const SIM_KEEP_BEHIND_SNAPSHOT: u64 = 4;
/// A hand-off gives up after this long.
pub const HAND_OFF_TIMEOUT: Duration = Duration::from_secs(5);
/// A simulated disk sync takes up to this long.
pub const SYNC_LATENCY_MS_MAX: u64 = 8;
/// Segment size of the simulated logs: small, so runs cross segments.
pub const SIM_SEGMENT_BYTES: u64 = 256 << 10;
/// Every simulated node plays a build that applies these command schema
/// versions, so that the schedules can move the cluster's version.
pub const SIM_SCHEMA: SchemaSupport = SchemaSupport { min: 1, max: 4 };
/// Proposer timestamps start here; each write gets the next one, which
/// identifies it in the log.
const STAMP_BASE: u64 = 1 << 40;

/// What one run does.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Voters: 1, 3 or 5.
    pub nodes: usize,
    /// Fault steps before the faults stop.
    pub steps: usize,
    /// Most writes in one burst.
    pub burst_max: usize,
    /// Nodes started outside the cluster, for membership changes to add.
    pub spares: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            steps: 40,
            burst_max: 12,
            spares: 1,
        }
    }
}

/// What a run did, and the hash of its trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    pub trace: [u8; 32],
    pub writes: u64,
    pub acked: u64,
    pub not_leader: u64,
    pub unknown: u64,
    pub reads: u64,
    pub crashes: u64,
    pub partitions: u64,
    /// Membership changes tried, and completed.
    pub membership_changes: u64,
    pub membership_changes_done: u64,
    /// Leader hand-offs tried, and completed (the target leads).
    pub hand_offs: u64,
    pub hand_offs_done: u64,
    /// Moves of the cluster's command schema version tried, and
    /// committed; the version every node ended at.
    pub schema_upgrades: u64,
    pub schema_upgrades_done: u64,
    pub cluster_schema: u16,
    /// Bits flipped in a stopped voter's log (of them, in the newest
    /// acknowledged round, past the on-disk watermark), nodes that found
    /// their log damaged and rejoined as a new member, and nodes that
    /// started fenced (their engine cut a torn or damaged tail).
    pub damages: u64,
    pub tail_damages: u64,
    /// Of the damages, files cut short rather than bits flipped.
    pub truncations: u64,
    pub rejoins: u64,
    pub fenced_starts: u64,
    /// At the end: nodes holding a snapshot, and nodes whose own log
    /// starts after index 0 (brought up by a snapshot; the history behind
    /// it was fetched from a peer).
    pub with_snapshot: u64,
    pub backfilled: u64,
    pub leaders: u64,
    pub final_index: u64,
    pub simulated_ms: u64,
    pub recovery_ms: u64,
    pub net: NetCounts,
}

/// A broken guarantee, with the seed that shows it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed}: {what}")]
pub struct Violation {
    pub seed: u64,
    pub what: String,
}

/// Runs one seed on a fresh deterministic runtime.
pub fn run(seed: u64, options: &SimOptions) -> Result<SimReport, Violation> {
    runtime::seed_thread_rng(seed);
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    // tokio's own generator (which `select!` uses) is seedable only under
    // `--cfg tokio_unstable`, which `.cargo/config.toml` sets.
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let runtime = builder.build().expect("a current-thread runtime");
    let result = runtime.block_on(async {
        let mut sim = Sim::new(seed, options.clone());
        let result = sim.simulate().await;
        sim.stop_all().await;
        result
    });
    drop(runtime);
    result.map_err(|what| Violation { seed, what })
}

/// One acknowledged write.
#[derive(Clone, Copy, Debug)]
struct Ack {
    stamp: u64,
    place: Place,
}

struct Recorder {
    /// Prints every event (`FARMLOG_SIM_VERBOSE=1`), for replaying a seed.
    verbose: bool,
    clock: Instant,
    trace: blake3::Hasher,
    violations: Vec<String>,
    /// The leader seen in each term.
    leaders: BTreeMap<u64, NodeId>,
    acks: Vec<Ack>,
    max_acked_index: u64,
    max_read_applied: u64,
    /// The newest log of every node (a crashed node's stays, frozen as it
    /// was when power was lost).
    logs: BTreeMap<NodeId, LogStore>,
    /// What each damaged node held durably (index → term) when the
    /// simulation damaged its log: it held them when it acknowledged
    /// them, even if its log no longer does by the time a client hears.
    damaged_held: BTreeMap<NodeId, BTreeMap<u64, u64>>,
    writes: u64,
    /// Membership changes under way: no damage meanwhile.
    changes_in_flight: u64,
    hand_offs_done: u64,
    schema_upgrades_done: u64,
    membership_changes_done: u64,
    acked: u64,
    not_leader: u64,
    unknown: u64,
    reads: u64,
}

impl Recorder {
    fn event(&mut self, words: &[u64], text: &str) {
        if self.verbose {
            eprintln!("{:>8} ms  {words:?} {text}", self.clock.elapsed().as_millis());
        }
        for word in words {
            self.trace.update(&word.to_le_bytes());
        }
        self.trace.update(text.as_bytes());
    }

    fn violation(&mut self, what: String) {
        self.event(&[u64::MAX], &what);
        self.violations.push(what);
    }

    fn leader(&mut self, term: u64, id: NodeId) {
        match self.leaders.get(&term) {
            Some(&other) if other != id => {
                self.violation(format!("two leaders in term {term}: nodes {other} and {id}"))
            }
            Some(_) => {}
            None => {
                self.leaders.insert(term, id);
                self.event(&[1, term, id], "leader");
            }
        }
    }

    /// A write was acknowledged by `leader_log`'s node: it must be durable
    /// on a quorum now. The quorum is that of a configuration the entry
    /// may have been committed under: the last membership at or before it,
    /// or any later one in the leader's log.
    fn ack(
        &mut self,
        stamp: u64,
        place: Place,
        term: u64,
        verdict: &str,
        leader_log: &Log,
        fallback: Vec<BTreeSet<NodeId>>,
    ) {
        // Durable on a node: in its log, or below its purge point, which
        // openraft moves only after a durable snapshot covers it.
        let durable: BTreeSet<NodeId> = self
            .logs
            .iter()
            .filter(|(_, store)| {
                let log = store.log();
                let in_log =
                    log.durable_end() > place.index && log.read(place.index).is_ok_and(|record| record.term() == term);
                let in_snapshot = store
                    .raft_meta()
                    .last_purged
                    .is_some_and(|purged| purged.index >= place.index);
                in_log || in_snapshot
            })
            .map(|(&id, _)| id)
            .chain(
                self.damaged_held
                    .iter()
                    .filter(|(_, held)| held.get(&place.index) == Some(&term))
                    .map(|(&id, _)| id),
            )
            .collect();
        // A leader brought up by a snapshot may have no membership record
        // at or before the entry: the snapshot's membership stands for it.
        let mut configs = memberships(leader_log, place.index);
        if !has_membership_at_or_before(leader_log, place.index) {
            configs.insert(0, fallback);
        }
        let quorum = |voters: &BTreeSet<NodeId>| voters.intersection(&durable).count() > voters.len() / 2;
        let committed = configs.iter().any(|joint| joint.iter().all(quorum));
        if !committed {
            self.violation(format!(
                "write {stamp} acknowledged at index {} (term {term}) while durable only on {durable:?}, \
                 not a quorum of any of {configs:?}",
                place.index
            ));
        }
        self.acked += 1;
        self.max_acked_index = self.max_acked_index.max(place.index);
        self.acks.push(Ack { stamp, place });
        self.event(&[2, stamp, place.index, place.slot as u64, term], verdict);
    }
}

/// The voter configurations (each a list of joint sets) an entry at
/// `index` may have been committed under, from `log`: the last membership
/// at or before `index`, and every later one.
fn memberships(log: &Log, index: u64) -> Vec<Vec<BTreeSet<NodeId>>> {
    let mut configs = Vec::new();
    for record in log.range(log.first_index()..).flatten() {
        if record.kind() != kinds::MEMBERSHIP {
            continue;
        }
        let Ok(membership) = MembershipRecord::decode(record.payload()) else {
            continue;
        };
        if record.index() <= index {
            configs.clear();
        }
        configs.push(membership.get_joint_config().clone());
    }
    configs
}

/// Whether `log` holds a membership record at or before `index`.
fn has_membership_at_or_before(log: &Log, index: u64) -> bool {
    log.range(log.first_index()..=index)
        .flatten()
        .any(|record| record.kind() == kinds::MEMBERSHIP)
}

/// The voter sets of the membership `node` has applied.
fn applied_membership(node: &Node) -> Vec<BTreeSet<NodeId>> {
    node.read_local(|applier| applier.membership.membership().get_joint_config().clone())
}

type Shared = Arc<Mutex<Recorder>>;

fn lock(recorder: &Shared) -> MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|poison| poison.into_inner())
}

struct Sim {
    seed: u64,
    options: SimOptions,
    rng: SmallRng,
    net: Arc<SimNet>,
    config: Arc<Config>,
    members: BTreeMap<NodeId, BasicNode>,
    /// One disk per machine, by the id its first node had.
    machines: BTreeMap<NodeId, SimStorage>,
    /// The machine each node id runs on.
    machine_of: BTreeMap<NodeId, NodeId>,
    /// (damaged voter, the id it rejoined as), until the leader replaced it.
    replacements: Vec<(NodeId, NodeId)>,
    next_id: NodeId,
    damages: u64,
    tail_damages: u64,
    truncations: u64,
    rejoins: u64,
    fenced_starts: u64,
    nodes: BTreeMap<NodeId, Arc<Node>>,
    recorder: Shared,
    clients: JoinSet<()>,
    templates: Vec<Command>,
    next_write: u64,
    crashes: u64,
    partitions: u64,
    membership_changes: u64,
    hand_offs: u64,
    schema_upgrades: u64,
    started: Instant,
}

impl Sim {
    fn new(seed: u64, options: SimOptions) -> Self {
        let ids: Vec<NodeId> = (1..=(options.nodes + options.spares) as NodeId).collect();
        let members = ids
            .iter()
            .map(|&id| {
                (
                    id,
                    BasicNode {
                        addr: format!("sim-{id}"),
                    },
                )
            })
            .collect();
        let machines = ids
            .iter()
            .map(|&id| {
                let config = SimConfig {
                    seed: seed.wrapping_mul(31).wrapping_add(id),
                };
                (id, SimStorage::new(config))
            })
            .collect();
        let machine_of = ids.iter().map(|&id| (id, id)).collect();
        let next_id = ids.len() as NodeId + 1;
        let mut templates = testing::farm();
        templates.extend(testing::every_family());
        let recorder = Recorder {
            verbose: std::env::var_os("FARMLOG_SIM_VERBOSE").is_some(),
            clock: Instant::now(),
            trace: blake3::Hasher::new(),
            violations: Vec::new(),
            leaders: BTreeMap::new(),
            acks: Vec::new(),
            max_acked_index: 0,
            max_read_applied: 0,
            logs: BTreeMap::new(),
            damaged_held: BTreeMap::new(),
            writes: 0,
            changes_in_flight: 0,
            hand_offs_done: 0,
            schema_upgrades_done: 0,
            membership_changes_done: 0,
            acked: 0,
            not_leader: 0,
            unknown: 0,
            reads: 0,
        };
        Self {
            seed,
            rng: SmallRng::seed_from_u64(seed ^ 0x5eed_5eed),
            net: SimNet::new(seed.wrapping_add(1)),
            config: RaftSettings {
                snapshot_every_entries: SIM_SNAPSHOT_EVERY_ENTRIES,
                keep_behind_snapshot: SIM_KEEP_BEHIND_SNAPSHOT,
                ..RaftSettings::default()
            }
            .config("sim")
            .expect("the simulation's settings are valid"),
            members,
            machines,
            machine_of,
            replacements: Vec::new(),
            next_id,
            damages: 0,
            tail_damages: 0,
            truncations: 0,
            rejoins: 0,
            fenced_starts: 0,
            nodes: BTreeMap::new(),
            recorder: Arc::new(Mutex::new(recorder)),
            clients: JoinSet::new(),
            templates,
            next_write: 0,
            crashes: 0,
            partitions: 0,
            membership_changes: 0,
            hand_offs: 0,
            schema_upgrades: 0,
            started: Instant::now(),
            options,
        }
    }

    fn event(&self, words: &[u64], text: &str) {
        lock(&self.recorder).event(words, text);
    }

    fn dir(id: NodeId) -> PathBuf {
        PathBuf::from(format!("/node-{id}"))
    }

    async fn start(&mut self, id: NodeId) -> Result<(), String> {
        // Processes start at different moments. (openraft 0.9 draws a
        // node's election timeout once per start and checks it on a tick;
        // nodes started at the very same instant could tie at every
        // election, which no real cluster does.)
        let jitter = self.rng.gen_range(1..=TICK_JITTER_MS_MAX);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        let machine = self.machine_of[&id];
        let storage: Arc<dyn Storage> = Arc::new(self.machines[&machine].clone());
        let options = StoreOptions {
            log: LogOptions {
                first_index: 0,
                segment_bytes: SIM_SEGMENT_BYTES,
                disk_reserve_bytes: 0,
                flush: FlushMode::Manual,
                ..LogOptions::default()
            },
            manual_flush: ManualFlush {
                latency_ms_max: SYNC_LATENCY_MS_MAX,
                seed: self.seed.wrapping_add(id).wrapping_add(self.crashes << 8),
            },
            verify_at_open: true,
            schema_support: SIM_SCHEMA,
            ..StoreOptions::default()
        };
        let dir = Self::dir(machine);
        let (id, node) = match Node::start(
            id,
            storage.clone(),
            &dir,
            options.clone(),
            self.config.clone(),
            self.net.transport(id),
        )
        .await
        {
            Ok(node) => (id, node),
            Err(crate::Error::Damaged { what }) => {
                // The node found its log damaged: it rejoins as a new member.
                let new = self.next_id;
                self.next_id += 1;
                self.event(&[16, id, new], &what);
                let node = Node::rejoin(
                    id,
                    new,
                    storage,
                    &dir,
                    options,
                    self.config.clone(),
                    self.net.transport(new),
                )
                .await
                .map_err(|error| format!("node {id} cannot rejoin as {new}: {error}"))?;
                // The new node runs where the old one did: requests to
                // the old id reach it (and it answers only status ones).
                self.net.alias(id, new);
                let address = self.members.remove(&id).expect("a member");
                self.members.insert(new, address);
                self.machine_of.insert(new, machine);
                self.replacements.push((id, new));
                self.rejoins += 1;
                (new, node)
            }
            Err(error) => return Err(format!("node {id} cannot restart: {error}")),
        };
        let node = Arc::new(node);
        if node.fence_state().is_fenced() {
            self.fenced_starts += 1;
            self.event(&[19, id], "fenced");
        }
        self.net.attach(&node);
        lock(&self.recorder).logs.insert(id, node.log_store().clone());
        let mut metrics = node.raft.metrics();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            loop {
                let leading = {
                    let metrics = metrics.borrow_and_update();
                    (metrics.state == ServerState::Leader).then_some(metrics.current_term)
                };
                if let Some(term) = leading {
                    lock(&recorder).leader(term, id);
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        self.nodes.insert(id, node);
        self.event(&[10, id], "start");
        Ok(())
    }

    /// Power loss on one node: unsynced pages are kept, dropped or torn.
    async fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.remove(&id) else { return };
        self.net.detach(id);
        self.machines[&self.machine_of[&id]].crash();
        node.shutdown().await;
        self.crashes += 1;
        self.event(&[11, id], "crash");
    }

    /// Nodes that stopped themselves (their scrub found damage, or a
    /// storage error stopped Raft) go down, to be restarted.
    async fn stop_stopped(&mut self) {
        let stopped: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.raft.metrics().borrow().state == ServerState::Shutdown)
            .map(|(&id, _)| id)
            .collect();
        for id in stopped {
            // Its process exits: modelled as a power loss, which also
            // releases the directory lock its log still holds.
            self.event(&[18, id], "stopped itself");
            self.crash(id).await;
        }
    }

    async fn stop_all(&mut self) {
        self.clients.abort_all();
        while self.clients.join_next().await.is_some() {}
        for (id, node) in std::mem::take(&mut self.nodes) {
            self.net.detach(id);
            node.shutdown().await;
        }
    }

    fn up(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn down(&self) -> Vec<NodeId> {
        self.members
            .keys()
            .copied()
            .filter(|id| !self.nodes.contains_key(id))
            .collect()
    }

    /// The node a client would send to: the leader some live node knows
    /// of, if it is up; otherwise any live node.
    fn target(&mut self) -> Option<Arc<Node>> {
        let up = self.up();
        let asked = *up.choose(&mut self.rng)?;
        let leader = self.nodes[&asked].raft.metrics().borrow().current_leader;
        let id = leader.filter(|leader| self.nodes.contains_key(leader)).unwrap_or(asked);
        Some(self.nodes[&id].clone())
    }

    /// The current voters and all members: as the leader of the highest
    /// term sees them, else the newest membership any live node knows (a
    /// removed node may hold an older one, a node cut off from the cluster
    /// an uncommitted one).
    fn membership(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let views: Vec<_> = self
            .nodes
            .values()
            .map(|node| node.raft.metrics().borrow().clone())
            .collect();
        let leader = views
            .iter()
            .filter(|metrics| metrics.state == ServerState::Leader)
            .max_by_key(|metrics| metrics.current_term);
        let newest = match leader {
            Some(leader) => Some(leader.membership_config.clone()),
            None => views
                .iter()
                .map(|metrics| metrics.membership_config.clone())
                .max_by_key(|membership| *membership.log_id()),
        };
        let Some(stored) = newest else {
            return Default::default();
        };
        let membership = stored.membership();
        (
            membership.voter_ids().collect(),
            membership.nodes().map(|(&id, _)| id).collect(),
        )
    }

    /// Each live node's view, for a failure message.
    fn describe(&self) -> String {
        let views: Vec<String> = self
            .nodes
            .values()
            .map(|node| {
                let metrics = node.raft.metrics().borrow().clone();
                format!(
                    "node {}: {:?} ({:?}) term {} vote {} leader {:?} last log {:?} applied {:?} membership {:?}",
                    node.id,
                    metrics.state,
                    metrics.running_state,
                    metrics.current_term,
                    metrics.vote,
                    metrics.current_leader,
                    metrics.last_log_index,
                    metrics.last_applied.map(|id| id.index),
                    metrics.membership_config.membership().get_joint_config()
                )
            })
            .collect();
        views.join("; ")
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        self.membership().0
    }

    fn leader(&self) -> Option<Arc<Node>> {
        self.nodes.values().find_map(|node| {
            let metrics = node.raft.metrics().borrow().clone();
            (metrics.current_leader == Some(node.id)).then(|| node.clone())
        })
    }

    /// Adds a node outside the cluster (as a learner, then a voter), or
    /// removes a voter while at least three would remain.
    fn spawn_membership_change(&mut self) {
        let Some(leader) = self.leader() else { return };
        let (voters, members) = self.membership();
        // As a careful operator would: never change the voters while one is
        // down or being replaced (a joint configuration needs a majority of
        // both sets).
        if voters.iter().any(|id| !self.nodes.contains_key(id)) || !self.replacements.is_empty() {
            return;
        }
        let outside: Vec<NodeId> = self
            .members
            .keys()
            .copied()
            .filter(|id| !members.contains(id))
            .collect();
        let add = match (outside.choose(&mut self.rng), voters.len() > 3) {
            (Some(&id), false) => Some(id),
            (Some(&id), true) if self.rng.gen_bool(0.5) => Some(id),
            (_, true) => None,
            (None, false) => return,
        };
        let change = match add {
            Some(id) => (id, true),
            None => {
                let removable: Vec<NodeId> = voters.iter().copied().filter(|&id| id != leader.id).collect();
                let Some(&id) = removable.choose(&mut self.rng) else {
                    return;
                };
                (id, false)
            }
        };
        self.membership_changes += 1;
        let node = self.members.get(&change.0).cloned().unwrap_or_default();
        let recorder = self.recorder.clone();
        lock(&recorder).changes_in_flight += 1;
        self.clients.spawn(async move {
            let (id, adding) = change;
            let result = tokio::time::timeout(CLIENT_TIMEOUT, async {
                if adding {
                    leader.add_learner(id, node).await?;
                    leader.change_voters(ChangeMembers::AddVoterIds([id].into())).await
                } else {
                    leader.change_voters(ChangeMembers::RemoveVoters([id].into())).await
                }
            })
            .await;
            let text = match result {
                Ok(Ok(())) => {
                    lock(&recorder).membership_changes_done += 1;
                    "done".to_string()
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => "timed out".to_string(),
            };
            let mut recorder = lock(&recorder);
            recorder.changes_in_flight -= 1;
            recorder.event(&[30, id, adding as u64], &text);
        });
    }

    /// Power loss on a voter, then a bit flipped in one of its durable
    /// records (a bad sector): while it is the only voter down.
    async fn damage(&mut self) {
        let voters = self.voters();
        let down_voters = voters.iter().filter(|id| !self.nodes.contains_key(id)).count();
        let changing = lock(&self.recorder).changes_in_flight > 0;
        // One damaged node at a time: a fenced node may be one still.
        let fenced = self.nodes.values().any(|node| node.fence_state().is_fenced());
        if voters.len() < 3 || down_voters > 0 || !self.replacements.is_empty() || changing || fenced {
            return;
        }
        let up: Vec<NodeId> = voters.into_iter().filter(|id| self.nodes.contains_key(id)).collect();
        let Some(&id) = up.choose(&mut self.rng) else { return };
        // A durable record of its log, chosen before the power loss. Half
        // the time one the on-disk watermark vouches for: the node finds it
        // at open and rejoins as a new member. Otherwise one of the newest
        // round, which the watermark does not cover yet: the node cuts it
        // like a torn write, and is fenced (see `fence.rs`). For the first,
        // one round acknowledges what was pending and a second writes the
        // watermark that covers it, as the engine's flusher does when the
        // log idles.
        let log = lock(&self.recorder).logs[&id].log().clone();
        let in_tail = self.rng.gen_bool(0.5);
        if !in_tail && (log.commit_pending().is_err() || log.commit_pending().is_err()) {
            return;
        }
        let durable = match in_tail {
            true => log.watermark_end()..log.durable_end(),
            false => log.first_index()..log.durable_end(),
        };
        let target = (!durable.is_empty())
            .then(|| self.rng.gen_range(durable))
            .and_then(|index| log.read(index).ok());
        let Some(record) = target else {
            self.crash(id).await;
            return;
        };
        let held: BTreeMap<u64, u64> = (log.first_index()..log.durable_end())
            .filter_map(|index| log.read(index).ok().map(|record| (index, record.term())))
            .collect();
        lock(&self.recorder).damaged_held.entry(id).or_default().extend(held);
        self.crash(id).await;
        let machine = &self.machines[&self.machine_of[&id]];
        let log_dir = Self::dir(self.machine_of[&id]).join(crate::LOG_DIR);
        let (sequence, at) = record.location();
        let path = log_dir.join(farmlog_engine::log::segment::segment_name(sequence));
        let offset = at + self.rng.gen_range(0..record.framed_len());
        // A quarter of the time the file is cut short there instead: the
        // node finds its segment shorter than its capacity at open.
        if self.rng.gen_ratio(1, 4) {
            if truncate_file(machine, &path, offset).is_ok() {
                self.damages += 1;
                self.truncations += 1;
                self.event(&[17, id, offset, 8, in_tail as u64], "file truncated");
            }
            return;
        }
        let bit = self.rng.gen_range(0..8);
        if machine.flip_bit(&path, offset, bit).is_ok() {
            self.damages += 1;
            self.tail_damages += in_tail as u64;
            self.event(&[17, id, offset, bit as u64, in_tail as u64], "bit flipped");
        }
    }

    /// Asks the leader to replace each damaged voter by the id it rejoined
    /// as, once.
    fn spawn_replacements(&mut self) {
        let Some(leader) = self.leader() else { return };
        for &(old, new) in &self.replacements {
            let (leader, recorder, node) = (leader.clone(), self.recorder.clone(), self.members[&new].clone());
            self.clients.spawn(async move {
                let result = tokio::time::timeout(CLIENT_TIMEOUT, leader.replace_voter(old, new, node)).await;
                let text = match result {
                    Ok(Ok(())) => "replaced".to_string(),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "timed out".to_string(),
                };
                lock(&recorder).event(&[32, old, new], &text);
            });
        }
    }

    /// Hands leadership from the leader to another voter.
    fn spawn_hand_off(&mut self) {
        let Some(leader) = self.leader() else { return };
        let others: Vec<NodeId> = self.voters().into_iter().filter(|&id| id != leader.id).collect();
        let Some(&target) = others.choose(&mut self.rng) else {
            return;
        };
        self.hand_offs += 1;
        let recorder = self.recorder.clone();
        self.clients.spawn(async move {
            let result = leader.hand_off(target, HAND_OFF_TIMEOUT).await;
            let text = match result {
                Ok(()) => {
                    lock(&recorder).hand_offs_done += 1;
                    "handed off".to_string()
                }
                Err(error) => error.to_string(),
            };
            lock(&recorder).event(&[31, leader.id, target], &text);
        });
    }

    /// Moves the cluster's command schema one version up (every node
    /// plays a build that supports up to [`SIM_SCHEMA`]`.max`).
    fn spawn_schema_upgrade(&mut self) {
        let Some(leader) = self.leader() else { return };
        let version = (leader.cluster_schema() + 1).min(SIM_SCHEMA.max);
        self.schema_upgrades += 1;
        let recorder = self.recorder.clone();
        self.clients.spawn(async move {
            let text = match leader.upgrade_schema(version).await {
                Ok(()) => {
                    lock(&recorder).schema_upgrades_done += 1;
                    "schema moved".to_string()
                }
                Err(error) => error.to_string(),
            };
            lock(&recorder).event(&[32, leader.id, version as u64], &text);
        });
    }

    fn next_command(&mut self) -> (u64, Command) {
        let number = self.next_write;
        self.next_write += 1;
        let at = number as usize;
        let template = match at < testing::farm().len() {
            true => at,
            false => testing::farm().len() + self.rng.gen_range(0..self.templates.len() - testing::farm().len()),
        };
        let mut command = self.templates[template].clone();
        let stamp = STAMP_BASE + number;
        command.proposed_at_ms = stamp;
        (stamp, command)
    }

    fn spawn_write(&mut self) {
        let Some(node) = self.target() else { return };
        let (stamp, command) = self.next_command();
        let encoded = batch::encode(&command).expect("fixture commands encode");
        let recorder = self.recorder.clone();
        let peers = self.nodes.clone();
        lock(&recorder).writes += 1;
        self.clients.spawn(async move {
            let mut node = node;
            let mut result = tokio::time::timeout(CLIENT_TIMEOUT, node.propose(encoded.clone())).await;
            // A client told who leads tries there once.
            if let Ok(Err(ProposeError::NotLeader { leader: Some(leader) })) = &result {
                if let Some(peer) = peers.get(leader) {
                    node = peer.clone();
                    result = tokio::time::timeout(CLIENT_TIMEOUT, node.propose(encoded)).await;
                }
            }
            let mut recorder = lock(&recorder);
            match result {
                Ok(Ok((place, outcome))) => {
                    let term = node.log().read(place.index).map(|record| record.term()).unwrap_or(0);
                    let fallback = applied_membership(&node);
                    recorder.ack(
                        stamp,
                        place,
                        term,
                        &format!("{:?}", outcome.verdict),
                        node.log(),
                        fallback,
                    );
                }
                Ok(Err(ProposeError::NotLeader { .. })) => {
                    recorder.not_leader += 1;
                    recorder.event(&[3, stamp], "not leader");
                }
                Ok(Err(error)) => {
                    recorder.unknown += 1;
                    recorder.event(&[4, stamp], &error.to_string());
                }
                Err(_) => {
                    recorder.unknown += 1;
                    recorder.event(&[5, stamp], "timed out");
                }
            }
        });
    }

    fn spawn_read(&mut self) {
        let up = self.up();
        let Some(&id) = up.choose(&mut self.rng) else { return };
        let node = self.nodes[&id].clone();
        let recorder = self.recorder.clone();
        let (acked_before, read_before) = {
            let recorder = lock(&recorder);
            (recorder.max_acked_index, recorder.max_read_applied)
        };
        self.clients.spawn(async move {
            let result = tokio::time::timeout(
                CLIENT_TIMEOUT,
                node.read(|applier| applier.applied.map_or(0, |applied| applied.index)),
            )
            .await;
            let mut recorder = lock(&recorder);
            recorder.reads += 1;
            let Ok(Ok(applied)) = result else {
                recorder.event(&[6, id], "read failed");
                return;
            };
            if applied < acked_before || applied < read_before {
                recorder.violation(format!(
                    "a linearizable read on node {id} saw index {applied}, but before it started index \
                     {acked_before} was acknowledged and a read had seen {read_before}"
                ));
            }
            recorder.max_read_applied = recorder.max_read_applied.max(applied);
            recorder.event(&[7, id, applied], "read");
        });
    }

    async fn simulate(&mut self) -> Result<SimReport, String> {
        for id in self.members.keys().copied().collect::<Vec<_>>() {
            self.start(id).await?;
        }
        let voters: BTreeMap<NodeId, BasicNode> = self
            .members
            .iter()
            .take(self.options.nodes)
            .map(|(&id, node)| (id, node.clone()))
            .collect();
        self.nodes[&1]
            .raft
            .initialize(voters)
            .await
            .map_err(|error| format!("initialize: {error}"))?;
        // Bootstrapping ends when the first membership is committed; only
        // then do the faults begin.
        self.nodes[&1]
            .raft
            .wait(Some(RECOVERY_BOUND))
            .metrics(|metrics| metrics.last_applied.is_some(), "the first membership applied")
            .await
            .map_err(|error| format!("bootstrap: {error}"))?;
        for _ in 0..self.options.steps {
            let roll = self.rng.gen_range(0..100);
            match roll {
                0..=39 => {
                    for _ in 0..self.rng.gen_range(1..=self.options.burst_max) {
                        self.spawn_write();
                    }
                }
                40..=49 => self.spawn_read(),
                50..=58 => {
                    let up = self.up();
                    let voters = self.voters();
                    let minority = voters.len().saturating_sub(1) / 2;
                    let down_voters = voters.iter().filter(|id| !self.nodes.contains_key(id)).count();
                    if self.rng.gen_range(0..10) == 0 {
                        for id in up {
                            self.crash(id).await;
                        }
                    } else if down_voters < minority {
                        if let Some(&id) = up.choose(&mut self.rng) {
                            self.crash(id).await;
                        }
                    }
                }
                59..=66 => {
                    self.stop_stopped().await;
                    self.spawn_replacements();
                    let down = self.down();
                    if let Some(&id) = down.choose(&mut self.rng) {
                        self.start(id).await?;
                    }
                }
                67..=73 => {
                    let mut ids: Vec<NodeId> = self.members.keys().copied().collect();
                    ids.shuffle(&mut self.rng);
                    let cut = self.rng.gen_range(1..ids.len().max(2));
                    let (left, right) = ids.split_at(cut.min(ids.len()));
                    self.net.partition(&[left.to_vec(), right.to_vec()]);
                    self.partitions += 1;
                    self.event(&[12, cut as u64], "partition");
                }
                74..=77 => {
                    let ids: Vec<NodeId> = self.members.keys().copied().collect();
                    let from = *ids.choose(&mut self.rng).expect("a member");
                    let to = *ids.choose(&mut self.rng).expect("a member");
                    if from != to {
                        self.net.block(from, to);
                        self.partitions += 1;
                        self.event(&[13, from, to], "one-way cut");
                    }
                }
                78..=83 => {
                    self.net.heal();
                    self.event(&[14], "heal");
                }
                90..=95 => self.spawn_membership_change(),
                96..=98 => self.spawn_hand_off(),
                99 => self.spawn_schema_upgrade(),
                88..=89 => self.damage().await,
                _ => {
                    let faults = match self.rng.gen_range(0..3) {
                        0 => LinkFaults::default(),
                        _ => LinkFaults {
                            drop_per_mille: self.rng.gen_range(0..=200),
                            duplicate_per_mille: self.rng.gen_range(0..=100),
                            delay_ms_max: self.rng.gen_range(0..=60),
                        },
                    };
                    self.net.set_faults(faults);
                    self.event(
                        &[
                            15,
                            faults.drop_per_mille as u64,
                            faults.duplicate_per_mille as u64,
                            faults.delay_ms_max,
                        ],
                        "link faults",
                    );
                }
            }
            let pause = match self.rng.gen_range(0..4) {
                0 => self.rng.gen_range(0..=5),
                _ => self.rng.gen_range(10..=800),
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.settle().await
    }

    /// Stops the faults, waits for recovery and convergence, and checks.
    async fn settle(&mut self) -> Result<SimReport, String> {
        self.net.heal();
        self.net.set_faults(LinkFaults::default());
        self.stop_stopped().await;
        for id in self.down() {
            self.start(id).await?;
        }
        let healed = Instant::now();
        let recovery_ms = loop {
            if healed.elapsed() > RECOVERY_BOUND {
                return Err(format!(
                    "no write was accepted within {RECOVERY_BOUND:?} after the faults stopped; {}",
                    self.describe()
                ));
            }
            if let Some(node) = self.target() {
                let (stamp, command) = self.next_command();
                let encoded = batch::encode(&command).expect("fixture commands encode");
                lock(&self.recorder).writes += 1;
                if let Ok(Ok((place, outcome))) =
                    tokio::time::timeout(Duration::from_secs(1), node.propose(encoded)).await
                {
                    let term = node.log().read(place.index).map(|record| record.term()).unwrap_or(0);
                    let fallback = applied_membership(&node);
                    lock(&self.recorder).ack(
                        stamp,
                        place,
                        term,
                        &format!("{:?}", outcome.verdict),
                        node.log(),
                        fallback,
                    );
                    break healed.elapsed().as_millis() as u64;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        while self.clients.join_next().await.is_some() {}
        self.finish_replacements().await?;
        let (applied, cluster_schema) = self.converge().await?;
        let recorder = lock(&self.recorder);
        if let Some(violation) = recorder.violations.first() {
            return Err(violation.clone());
        }
        Ok(SimReport {
            seed: self.seed,
            trace: *recorder.trace.clone().finalize().as_bytes(),
            writes: recorder.writes,
            acked: recorder.acked,
            not_leader: recorder.not_leader,
            unknown: recorder.unknown,
            reads: recorder.reads,
            crashes: self.crashes,
            partitions: self.partitions,
            membership_changes: self.membership_changes,
            membership_changes_done: recorder.membership_changes_done,
            hand_offs: self.hand_offs,
            hand_offs_done: recorder.hand_offs_done,
            schema_upgrades: self.schema_upgrades,
            schema_upgrades_done: recorder.schema_upgrades_done,
            cluster_schema,
            damages: self.damages,
            tail_damages: self.tail_damages,
            truncations: self.truncations,
            rejoins: self.rejoins,
            fenced_starts: self.fenced_starts,
            with_snapshot: self
                .nodes
                .values()
                .filter(|node| node.raft.metrics().borrow().snapshot.is_some())
                .count() as u64,
            backfilled: self.nodes.values().filter(|node| node.log().first_index() > 0).count() as u64,
            leaders: recorder.leaders.len() as u64,
            final_index: applied,
            simulated_ms: self.started.elapsed().as_millis() as u64,
            recovery_ms,
            net: self.net.counts(),
        })
    }

    /// Makes sure every damaged voter has been replaced by its new id.
    async fn finish_replacements(&mut self) -> Result<(), String> {
        let since = Instant::now();
        for (old, new) in std::mem::take(&mut self.replacements) {
            loop {
                let voters = self.voters();
                if !voters.contains(&old) && voters.contains(&new) {
                    break;
                }
                if since.elapsed() > RECOVERY_BOUND {
                    return Err(format!(
                        "damaged node {old} was not replaced by {new} within {RECOVERY_BOUND:?}; {}",
                        self.describe()
                    ));
                }
                if let Some(leader) = self.leader() {
                    let node = self.members[&new].clone();
                    let _ = tokio::time::timeout(CLIENT_TIMEOUT, leader.replace_voter(old, new, node)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.event(&[33, old, new], "replaced");
        }
        Ok(())
    }

    /// Waits until every node has applied the same index, and checks that
    /// their states hash the same there; returns the index.
    async fn converge(&mut self) -> Result<(u64, u16), String> {
        let since = Instant::now();
        loop {
            let members = self.membership().1;
            let nodes: BTreeMap<NodeId, Arc<Node>> = self
                .nodes
                .iter()
                .filter(|(id, _)| members.contains(id))
                .map(|(&id, node)| (id, node.clone()))
                .collect();
            let applied: Vec<(NodeId, u64)> = nodes
                .iter()
                .map(|(&id, node)| {
                    (
                        id,
                        node.read_local(|applier| applier.applied.map_or(0, |log_id| log_id.index)),
                    )
                })
                .collect();
            let last = nodes
                .values()
                .map(|node| node.log().last_index().unwrap_or(0))
                .max()
                .unwrap_or(0);
            let fenced: Vec<NodeId> = nodes
                .iter()
                .filter(|(_, node)| node.fence_state().is_fenced())
                .map(|(&id, _)| id)
                .collect();
            let owing: Vec<NodeId> = nodes
                .iter()
                .filter(|(_, node)| !matches!(node.history().owed(), Ok(None)))
                .map(|(&id, _)| id)
                .collect();
            if fenced.is_empty() && owing.is_empty() && applied.iter().all(|&(_, index)| index == last) {
                // The logs first: a state that differs is explained by them.
                self.check_logs(last)?;
                let hashes: Vec<(NodeId, [u8; 32])> = nodes
                    .iter()
                    .map(|(&id, node)| (id, node.read_local(|applier| applier.state.hash())))
                    .collect();
                if let Some((id, _)) = hashes.iter().find(|(_, hash)| *hash != hashes[0].1) {
                    let summary = |id: &NodeId| {
                        nodes[id].read_local(|applier| {
                            format!(
                                "applied {:?}, state applied {} position {} log time {} timers {}, log from {}",
                                applier.applied.map(|log_id| log_id.index),
                                applier.state.last_applied(),
                                applier.state.last_position(),
                                applier.state.log_time_ms(),
                                applier.state.pending_timers(),
                                nodes[id].log().first_index()
                            )
                        })
                    };
                    return Err(format!(
                        "at applied index {last}, node {id}'s state hash differs from node {}'s: {} / {}",
                        hashes[0].0,
                        summary(id),
                        summary(&hashes[0].0)
                    ));
                }
                let schemas: Vec<(NodeId, u16)> = nodes.iter().map(|(&id, node)| (id, node.cluster_schema())).collect();
                if let Some((id, schema)) = schemas.iter().find(|(_, schema)| *schema != schemas[0].1) {
                    return Err(format!(
                        "at applied index {last}, node {id} is at schema version {schema}, node {} at {}",
                        schemas[0].0, schemas[0].1
                    ));
                }
                self.event(&[20, last, schemas[0].1 as u64], "converged");
                let mut recorder = self.recorder.lock().expect("recorder");
                recorder.trace.update(&hashes[0].1);
                recorder.trace.update(&schemas[0].1.to_le_bytes());
                return Ok((last, schemas[0].1));
            }
            if since.elapsed() > RECOVERY_BOUND {
                return Err(format!(
                    "nodes did not converge within {RECOVERY_BOUND:?}: applied {applied:?}, last index {last}, fenced {fenced:?}, owing history {owing:?}; {}",
                    self.describe()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's log holds the same entries up to `applied`; every
    /// acknowledged write is there exactly once, where it was acknowledged.
    fn check_logs(&self, applied: u64) -> Result<(), String> {
        let members = self.membership().1;
        let nodes: Vec<(NodeId, Arc<Node>)> = self
            .nodes
            .iter()
            .filter(|(id, _)| members.contains(id))
            .map(|(&id, node)| (id, node.clone()))
            .collect();
        // Every node holds the whole retained history: its own log and,
        // for a node brought up by a snapshot, the history it fetched.
        let (first_id, reference) = nodes
            .iter()
            .min_by_key(|(id, node)| (node.history().first_retained(), *id))
            .expect("a member");
        let start = reference.history().first_retained();
        if let Some((id, node)) = nodes.iter().find(|(_, node)| node.history().first_retained() != start) {
            return Err(format!(
                "node {id} holds history from {}, node {first_id} from {start}",
                node.history().first_retained()
            ));
        }
        let read = |id: NodeId, node: &Node, index: u64| {
            node.history()
                .chunk(index, index + 1)
                .map_err(|error| error.to_string())
                .and_then(|mut chunk| chunk.records.pop().ok_or_else(|| "not held".to_string()))
                .map_err(|error| format!("node {id} cannot read committed index {index}: {error}"))
        };
        let mut stamps: HashMap<u64, Place> = HashMap::new();
        for index in start..=applied {
            let record = read(*first_id, reference, index)?;
            for (id, node) in nodes.iter().filter(|(id, _)| id != first_id) {
                let other = read(*id, node, index)?;
                if (other.term, other.crc) != (record.term, record.crc) {
                    return Err(format!(
                        "committed index {index} differs: node {first_id} has term {} crc {:#x}, node {id} term {} crc {:#x}",
                        record.term, record.crc, other.term, other.crc
                    ));
                }
            }
            if record.kind != kinds::COMMAND_BATCH {
                continue;
            }
            let batch = Batch::parse(&record.payload).map_err(|error| format!("index {index}: {error}"))?;
            for slot in 0..batch.len() {
                let command = batch.command(slot).map_err(|error| format!("index {index}: {error}"))?;
                let stamp = command.proposed_at_ms.to_native();
                if let Some(earlier) = stamps.insert(stamp, Place { index, slot }) {
                    return Err(format!(
                        "write {stamp} is in the log twice: at {}/{} and at {index}/{slot}",
                        earlier.index, earlier.slot
                    ));
                }
            }
        }
        let recorder = lock(&self.recorder);
        for ack in &recorder.acks {
            if ack.place.index < start {
                return Err(format!(
                    "node {first_id}'s history starts at {start}, after acknowledged write {} at {}",
                    ack.stamp, ack.place.index
                ));
            }
            match stamps.get(&ack.stamp) {
                Some(place) if *place == ack.place => {}
                Some(place) => {
                    return Err(format!(
                        "write {} was acknowledged at {}/{} but is at {}/{}",
                        ack.stamp, ack.place.index, ack.place.slot, place.index, place.slot
                    ))
                }
                None => return Err(format!("acknowledged write {} is not in the committed log", ack.stamp)),
            }
        }
        Ok(())
    }
}

/// Cuts the file at `path` to its first `length` bytes, durably (the
/// storage has no truncate: the file is replaced by a shorter copy).
fn truncate_file(storage: &SimStorage, path: &Path, length: u64) -> std::io::Result<()> {
    use farmlog_engine::io::{OpenMode, Storage};
    let mut head = vec![0u8; length as usize];
    storage.open(path, OpenMode::Read)?.read_exact_at(&mut head, 0)?;
    storage.remove(path)?;
    let file = storage.open(path, OpenMode::CreateNew)?;
    file.write_all_at(&head, 0)?;
    file.sync_data()?;
    storage.sync_dir(path.parent().unwrap_or(Path::new("/")))
}
