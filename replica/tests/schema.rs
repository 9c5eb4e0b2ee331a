//! A rolling upgrade of the command schema on a three-node cluster: the
//! cluster's version moves only once every member supports it, it is the
//! same on every node, it survives restarts and snapshots, a node that
//! cannot apply it is refused at the door or stops with a clear error,
//! and writes go on throughout.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Machine;
use farmlog_engine::state::{batch, testing};
use farmlog_replica::schema::CLUSTER_SCHEMA_INITIAL;
use farmlog_replica::sim::net::SimNet;
use farmlog_replica::{Error, Node, SchemaError, SchemaSupport};
use openraft::BasicNode;

const OLD: SchemaSupport = SchemaSupport { min: 1, max: 1 };
const NEW: SchemaSupport = SchemaSupport { min: 1, max: 2 };

async fn write(node: &Node, stamp: u64) {
    let mut command = testing::farm().remove(0);
    command.proposed_at_ms = stamp;
    node.propose(batch::encode(&command).unwrap())
        .await
        .expect("a write is accepted");
}

async fn wait_for_schema(node: &Node, version: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while node.cluster_schema() != version {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} stays at schema {}",
            node.id,
            node.cluster_schema()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn the_cluster_schema_moves_only_when_every_member_supports_it() {
    common::runtime(5).block_on(async {
        let net = SimNet::new(5);
        let machines: BTreeMap<u64, Machine> = (1..=4).map(|id| (id, Machine::new(id))).collect();
        let mut nodes = BTreeMap::new();
        // Nodes 1 and 2 already run the new build; node 3 the old one.
        for (id, support) in [(1, NEW), (2, NEW), (3, OLD)] {
            nodes.insert(id, machines[&id].start(&net, id, support).await.unwrap());
            tokio::time::sleep(Duration::from_millis(17 * id)).await;
        }
        let members: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::new(format!("n{id}")))).collect();
        nodes[&1].raft.initialize(members).await.unwrap();
        let leader = nodes[&1].wait_for_leader(Duration::from_secs(5)).await.expect("a leader");
        assert_eq!(nodes[&leader].cluster_schema(), CLUSTER_SCHEMA_INITIAL);
        write(&nodes[&leader], 1).await;

        // Refused while node 3 runs the old build; nothing changes.
        let refused = nodes[&leader].upgrade_schema(2).await;
        assert_eq!(
            refused,
            Err(SchemaError::Unsupported {
                node: 3,
                support: OLD,
                asked: 2
            })
        );
        let follower = *nodes.keys().find(|&&id| id != leader).unwrap();
        assert!(matches!(
            nodes[&follower].upgrade_schema(2).await,
            Err(SchemaError::NotLeader { .. })
        ));
        assert_eq!(nodes[&leader].cluster_schema(), 1);

        // Upgrade node 3's binary (a follower restart; if it led, the
        // others elect a new leader meanwhile), then move the cluster.
        let old = nodes.remove(&3).unwrap();
        machines[&3].stop(&net, old).await;
        nodes.insert(3, machines[&3].start(&net, 3, NEW).await.unwrap());
        let leader = loop {
            if let Some(leader) = nodes[&1].wait_for_leader(Duration::from_secs(5)).await {
                if nodes[&leader].upgrade_schema(2).await.is_ok() {
                    break leader;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for node in nodes.values() {
            wait_for_schema(node, 2).await;
        }
        assert_eq!(nodes[&leader].upgrade_schema(2).await, Ok(()), "moving to the current version is a no-op");
        assert_eq!(
            nodes[&leader].upgrade_schema(1).await,
            Err(SchemaError::Backwards { current: 2, asked: 1 })
        );
        write(&nodes[&leader], 2).await;

        // A node of the old build cannot join the moved cluster.
        let late = machines[&4].start(&net, 4, OLD).await.unwrap();
        let joined = nodes[&leader].add_learner(4, BasicNode::new("n4")).await;
        assert!(
            matches!(&joined, Err(farmlog_replica::MembershipError::Refused { reason }) if reason.contains("not the cluster's 2")),
            "{joined:?}"
        );
        late.shutdown().await;

        // The version is in the snapshot: a restart from it keeps it, and
        // a downgrade below it is refused at start with a clear error.
        let follower = *nodes.keys().find(|&&id| id != leader).unwrap();
        nodes[&follower].raft.trigger().snapshot().await.unwrap();
        let snapshot_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while nodes[&follower].raft.metrics().borrow().snapshot.is_none() {
            assert!(tokio::time::Instant::now() < snapshot_deadline, "no snapshot was built");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let node = nodes.remove(&follower).unwrap();
        machines[&follower].stop(&net, node).await;
        match machines[&follower].start(&net, follower, OLD).await {
            Err(Error::Schema(error)) => assert_eq!(error.version, 2),
            Err(other) => panic!("a downgraded node fails for the wrong reason: {other}"),
            Ok(_) => panic!("a node that cannot apply schema 2 started"),
        }
        let node = machines[&follower].start(&net, follower, NEW).await.unwrap();
        assert_eq!(node.cluster_schema(), 2);
        nodes.insert(follower, node);
        write(&nodes[&leader], 3).await;
        for node in nodes.values() {
            node.shutdown().await;
        }
    });
}
