//! A graceful leader hand-off on a healthy three-node cluster: the drained
//! leader hands off, writes resume within a bounded (simulated) time at the
//! new leader, and nothing acknowledged is lost.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_holds, write, Machine};
use farmlog_engine::state::{batch, testing};
use farmlog_replica::sim::net::SimNet;
use farmlog_replica::{Node, SchemaSupport};
use openraft::BasicNode;
use tokio::time::Instant;

/// Writes must be accepted again this soon after the hand-off starts: the
/// longest election timeout (the followers' lease) plus one election.
const RESUME_BOUND: Duration = Duration::from_millis(2000);

#[test]
fn a_drained_leader_hands_off_and_writes_resume_in_bounded_time() {
    common::runtime(11).block_on(async {
        let net = SimNet::new(11);
        let machines: BTreeMap<u64, Machine> = (1..=3).map(|id| (id, Machine::new(id))).collect();
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            nodes.insert(id, machines[&id].start(&net, id, SchemaSupport::BUILD).await.unwrap());
            tokio::time::sleep(Duration::from_millis(13 * id)).await;
        }
        let members: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::new(format!("n{id}")))).collect();
        nodes[&1].raft.initialize(members).await.unwrap();
        let leader = nodes[&1]
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("a leader");
        let mut acked = write(&nodes[&leader], 1 << 40, 40).await;

        let target = if leader == 3 { 2 } else { 3 };
        let started = Instant::now();
        nodes[&leader]
            .hand_off(target, Duration::from_secs(5))
            .await
            .expect("the hand-off completes");
        assert_eq!(
            nodes[&target].wait_for_leader(Duration::from_secs(1)).await,
            Some(target)
        );
        // The old leader now refuses writes and names the new one.
        let refused = write_one_refused(&nodes[&leader]).await;
        assert_eq!(refused, Some(target));
        acked.extend(write(&nodes[&target], (1 << 40) + 1000, 20).await);
        let resumed = started.elapsed();
        assert!(
            resumed <= RESUME_BOUND,
            "writes resumed after {resumed:?}, over {RESUME_BOUND:?}"
        );
        println!("hand-off from {leader} to {target}: writes resumed after {resumed:?}");

        // Nothing acknowledged is lost: every write is at its place in the
        // new leader's log, and a linearizable read there sees all of them.
        let max_index = acked.iter().map(|(_, place)| place.index).max().unwrap();
        let applied = nodes[&target]
            .read(|applier| applier.applied.map(|id| id.index).unwrap_or(0))
            .await
            .unwrap();
        assert!(applied >= max_index);
        assert_holds(&nodes[&target], &acked);
        for node in nodes.values() {
            node.shutdown().await;
        }
    });
}

async fn write_one_refused(node: &Arc<Node>) -> Option<u64> {
    let mut command = testing::farm().remove(0);
    command.proposed_at_ms = 7;
    match node.propose(batch::encode(&command).unwrap()).await {
        Err(farmlog_replica::ProposeError::NotLeader { leader }) => leader,
        other => panic!("the old leader accepted a write: {other:?}"),
    }
}
