//! The tail fence (`replica/src/fence.rs`): a node whose engine cut
//! acknowledged entries at open, as a torn tail, refuses votes until a
//! leader of a later term has reached it, loses nothing, and a cluster
//! where every node is fenced still recovers. A leader never resumes
//! leadership in its old term after a restart.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_holds, options, runtime, write, Machine};
use farmlog_engine::log::segment::segment_name;
use farmlog_engine::state::Place;
use farmlog_engine::Log;
use farmlog_replica::schema::SchemaSupport;
use farmlog_replica::sim::net::SimNet;
use farmlog_replica::{FenceState, Node, RaftSettings, LOG_DIR};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, ServerState, Vote};
use tokio::time::Instant;

/// A fenced node must be reached by a new leader, and lift, this soon.
const LIFT_BOUND: Duration = Duration::from_secs(10);

async fn cluster(net: &Arc<SimNet>, machines: &BTreeMap<u64, Machine>) -> BTreeMap<u64, Arc<Node>> {
    let mut nodes = BTreeMap::new();
    for (&id, machine) in machines {
        nodes.insert(id, machine.start(net, id, SchemaSupport::BUILD).await.unwrap());
        tokio::time::sleep(Duration::from_millis(13 * id)).await;
    }
    let members: BTreeMap<u64, BasicNode> = machines
        .keys()
        .map(|&id| (id, BasicNode::new(format!("n{id}"))))
        .collect();
    nodes.values().next().unwrap().raft.initialize(members).await.unwrap();
    nodes
}

async fn leader(nodes: &BTreeMap<u64, Arc<Node>>) -> Arc<Node> {
    let any = nodes.values().next().unwrap();
    let id = any.wait_for_leader(Duration::from_secs(10)).await.expect("a leader");
    nodes[&id].clone()
}

/// Flips a bit in a record of the newest acknowledged round of `log`,
/// which its on-disk watermark does not vouch for yet; false if there is
/// no such record. Call before the node stops, flip after (`apply`).
fn newest_round_record(log: &Log) -> Option<(String, u64)> {
    let (start, end) = (log.watermark_end(), log.durable_end());
    (start < end).then(|| {
        let (sequence, offset) = log.read(end - 1).unwrap().location();
        (segment_name(sequence), offset + 40)
    })
}

fn flip(machine: &Machine, target: &(String, u64)) {
    let path = machine.dir.join(LOG_DIR).join(&target.0);
    machine.storage.flip_bit(&path, target.1, 3).unwrap();
}

/// Waits until every node has applied every write in `acked`, and checks
/// that each holds all of them where they were acknowledged.
async fn all_hold(nodes: &BTreeMap<u64, Arc<Node>>, acked: &[(u64, Place)]) {
    let last = acked.iter().map(|(_, place)| place.index).max().unwrap();
    for node in nodes.values() {
        node.raft
            .wait(Some(LIFT_BOUND))
            .applied_index_at_least(Some(last), "every write applied")
            .await
            .unwrap();
        assert_holds(node, acked);
    }
}

/// Power loss on every node of `nodes` with a bit flipped in the newest
/// round of each log: they restart, each fenced.
async fn power_loss_with_cut_tails(
    net: &Arc<SimNet>,
    machines: &BTreeMap<u64, Machine>,
    nodes: &mut BTreeMap<u64, Arc<Node>>,
) {
    let targets: BTreeMap<u64, (String, u64)> = nodes
        .iter()
        .map(|(&id, node)| (id, newest_round_record(node.log()).expect("a round past the watermark")))
        .collect();
    for (id, node) in std::mem::take(nodes) {
        machines[&id].crash(net, node).await;
    }
    for (id, target) in &targets {
        flip(&machines[id], target);
    }
    for &id in targets.keys() {
        let node = machines[&id].start(net, id, SchemaSupport::BUILD).await.unwrap();
        assert!(node.fence_state().is_fenced(), "node {id} is not fenced");
        nodes.insert(id, node);
    }
}

async fn wait_open(node: &Node) {
    let deadline = Instant::now() + LIFT_BOUND;
    while node.fence_state().is_fenced() {
        assert!(
            Instant::now() < deadline,
            "node {} still fenced after {LIFT_BOUND:?}: {:?}",
            node.id,
            node.fence_state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_follower_that_cut_acknowledged_entries_refuses_votes_until_a_new_leader_reaches_it() {
    runtime(21).block_on(async {
        let net = SimNet::new(21);
        let machines: BTreeMap<u64, Machine> = (1..=3).map(|id| (id, Machine::new(id))).collect();
        let mut nodes = cluster(&net, &machines).await;
        let first_leader = leader(&nodes).await;
        let term = first_leader.raft.metrics().borrow().current_term;
        let mut acked = write(&first_leader, 1 << 40, 30).await;
        let follower = *nodes.keys().find(|&&id| id != first_leader.id).unwrap();

        // Wait for the follower to hold every acknowledged write; what its
        // newest round holds was acknowledged to the leader.
        let last = acked.iter().map(|(_, place)| place.index).max().unwrap();
        while nodes[&follower].log().durable_end() <= last {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let target = newest_round_record(nodes[&follower].log()).expect("a round past the watermark");
        let node = nodes.remove(&follower).unwrap();
        machines[&follower].crash(&net, node).await;
        flip(&machines[&follower], &target);
        let node = machines[&follower]
            .start(&net, follower, SchemaSupport::BUILD)
            .await
            .unwrap();
        let fenced = node.fence_state();
        assert!(
            matches!(fenced, FenceState::Fenced { term: at } if at >= term),
            "{fenced:?}"
        );
        let cut_last = node.log_store().last_log_id().unwrap();
        assert!(cut_last.is_none_or(|id| id.index < last), "the flipped entry was cut");

        // A candidate exactly as up to date as the cut log, of a later term,
        // would get a plain Raft vote here; the fence refuses it.
        let other = *machines
            .keys()
            .find(|&&id| id != follower && id != first_leader.id)
            .unwrap();
        let request = VoteRequest::new(Vote::new(term + 10, other), cut_last);
        let response = node.inbox().vote(request).await.unwrap();
        assert!(!response.vote_granted, "a fenced node granted a vote: {response:?}");
        // Nor does it campaign when asked to.
        assert!(node.inbox().elect().await.is_err());
        nodes.insert(follower, node);

        // The old leader steps down when it meets the fenced node's higher
        // vote; the new leader's entries lift the fence.
        wait_open(&nodes[&follower]).await;
        let new_leader = leader(&nodes).await;
        assert!(new_leader.raft.metrics().borrow().current_term > term);
        acked.extend(write(&new_leader, (1 << 40) + 1000, 10).await);
        all_hold(&nodes, &acked).await;
        for node in nodes.values() {
            node.shutdown().await;
        }
    });
}

#[test]
fn a_cluster_where_every_node_is_fenced_elects_a_leader_once_all_have_answered() {
    runtime(22).block_on(async {
        let net = SimNet::new(22);
        let machines: BTreeMap<u64, Machine> = (1..=3).map(|id| (id, Machine::new(id))).collect();
        let mut nodes = cluster(&net, &machines).await;
        let first = leader(&nodes).await;
        let acked = write(&first, 1 << 40, 30).await;
        let last = acked.iter().map(|(_, place)| place.index).max().unwrap();
        for node in nodes.values() {
            while node.log().durable_end() <= last {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Power loss everywhere, and the newest round of every log damaged:
        // every node cuts its tail and starts fenced. (Damage on a majority
        // is past what any replication survives, so only liveness and
        // agreement are checked here.)
        power_loss_with_cut_tails(&net, &machines, &mut nodes).await;
        let leader = leader(&nodes).await;
        let more = write(&leader, (1 << 40) + 1000, 5).await;
        for node in nodes.values() {
            wait_open(node).await;
        }
        all_hold(&nodes, &more).await;
        let hashes: Vec<[u8; 32]> = nodes
            .values()
            .map(|node| node.read_local(|applier| applier.state.hash()))
            .collect();
        assert!(hashes.windows(2).all(|pair| pair[0] == pair[1]), "states differ");
        for node in nodes.values() {
            node.shutdown().await;
        }
    });
}

#[test]
fn a_leader_restarts_as_a_follower_and_leads_again_only_in_a_later_term() {
    runtime(23).block_on(async {
        let net = SimNet::new(23);
        let machine = Machine::new(1);
        let machines = BTreeMap::from([(1, machine)]);
        let mut nodes = cluster(&net, &machines).await;
        let node = leader(&nodes).await;
        let acked = write(&node, 1 << 40, 10).await;
        let term = node.raft.metrics().borrow().current_term;
        drop(node);
        machines[&1].crash(&net, nodes.remove(&1).unwrap()).await;

        let node = machines[&1].start(&net, 1, SchemaSupport::BUILD).await.unwrap();
        let metrics = node.raft.metrics().borrow().clone();
        assert_ne!(metrics.state, ServerState::Leader, "resumed leadership in term {term}");
        assert!(!metrics.vote.committed);
        node.wait_for_leader(Duration::from_secs(10)).await.expect("a leader");
        assert!(node.raft.metrics().borrow().current_term > term);
        assert_holds(&node, &acked);
        node.shutdown().await;
    });
}

#[test]
fn fenced_nodes_do_not_wait_for_a_voter_whose_successor_says_its_log_is_gone() {
    runtime(24).block_on(async {
        let net = SimNet::new(24);
        let machines: BTreeMap<u64, Machine> = (1..=3).map(|id| (id, Machine::new(id))).collect();
        let mut nodes = cluster(&net, &machines).await;
        let first = leader(&nodes).await;
        write(&first, 1 << 40, 10).await;
        // A follower's log is found damaged: it is wiped and starts again
        // as node 4, where node 3 ran (so requests to 3 reach it).
        let victim = *nodes.keys().find(|&&id| id != first.id).unwrap();
        let node = nodes.remove(&victim).unwrap();
        machines[&victim].crash(&net, node).await;
        let config = RaftSettings::default().config("test").unwrap();
        let successor = Node::rejoin(
            victim,
            4,
            machines[&victim].storage.clone(),
            &machines[&victim].dir,
            options(),
            config,
            net.transport(4),
        )
        .await
        .unwrap();
        net.attach(&successor);
        net.alias(victim, 4);

        // The two others keep the cluster going, then lose power with a
        // cut tail each: both start fenced. Node `victim` can never answer
        // for itself; its successor answers that its log is gone.
        let leader_now = leader(&nodes).await;
        write(&leader_now, (1 << 40) + 100, 10).await;
        power_loss_with_cut_tails(&net, &machines, &mut nodes).await;
        // (Damage on every voter is past what replication survives: only
        // that the cluster comes back is checked.)
        let leader = leader(&nodes).await;
        write(&leader, (1 << 40) + 200, 3).await;
        for node in nodes.values() {
            wait_open(node).await;
        }
        for node in nodes.values() {
            node.shutdown().await;
        }
        successor.shutdown().await;
    });
}
