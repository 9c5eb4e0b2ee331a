//! The history behind a snapshot (`replica/src/history.rs`): a node
//! brought up by a snapshot fetches the retained history behind it from a
//! peer and ends up holding every committed record, byte for byte; a node
//! that does not hold a record forwards the read to a peer that does.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{options, write, Machine};
use farmlog_replica::history::HistoryError;
use farmlog_replica::sim::net::SimNet;
use farmlog_replica::{Node, RaftSettings, Retention, StoreOptions};
use openraft::BasicNode;
use tokio::time::Instant;

const BOUND: Duration = Duration::from_secs(20);

/// Snapshots often, few entries kept behind them: a new node is brought
/// up by a snapshot.
fn settings() -> RaftSettings {
    RaftSettings {
        snapshot_every_entries: 8,
        keep_behind_snapshot: 2,
        ..RaftSettings::default()
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !done() {
        assert!(Instant::now() < deadline, "not within {BOUND:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_node_brought_up_by_a_snapshot_fetches_the_history_behind_it() {
    common::runtime(31).block_on(async {
        let net = SimNet::new(31);
        let machines: BTreeMap<u64, Machine> = (1..=4).map(|id| (id, Machine::new(id))).collect();
        let mut nodes: BTreeMap<u64, Arc<Node>> = BTreeMap::new();
        for id in 1..=3 {
            // Node 3 keeps little history of its own.
            let retention = match id {
                3 => Retention::Records(4),
                _ => Retention::Forever,
            };
            let options = StoreOptions {
                retention,
                log: farmlog_engine::LogOptions {
                    segment_bytes: 64 << 10,
                    ..options().log
                },
                ..options()
            };
            nodes.insert(
                id,
                machines[&id].start_with(&net, id, options, &settings()).await.unwrap(),
            );
            tokio::time::sleep(Duration::from_millis(13 * id)).await;
        }
        let members: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::new(format!("n{id}")))).collect();
        nodes[&1].raft.initialize(members).await.unwrap();
        let leader = nodes[&nodes[&1].wait_for_leader(BOUND).await.expect("a leader")].clone();
        for round in 0..300 {
            write(&leader, (1 << 40) + round * 10, 3).await;
        }
        let applied = leader.raft.metrics().borrow().last_applied.unwrap().index;

        // A new node joins: the leader's log no longer starts at 0 in
        // openraft's view, so it is brought up by a snapshot.
        let newcomer = machines[&4].start_with(&net, 4, options(), &settings()).await.unwrap();
        leader.add_learner(4, BasicNode::new("n4")).await.unwrap();
        wait_until("the newcomer's backfill completes", || {
            newcomer.log().first_index() > 0 && matches!(newcomer.history().owed(), Ok(None))
        })
        .await;
        assert_eq!(newcomer.history().first_retained(), 0);
        println!(
            "applied {applied}; the newcomer's own log starts at {}; node 3 holds history from {}",
            newcomer.log().first_index(),
            nodes[&3].history().first_retained()
        );
        for index in 0..=applied {
            let here = newcomer.read_history(index).await.unwrap();
            let there = leader.read_history(index).await.unwrap();
            assert_eq!(here, there, "record {index}");
        }

        // Node 3 dropped its early history: it forwards the read.
        wait_until("node 3's retention drops history", || {
            nodes[&3].history().first_retained() > 0
        })
        .await;
        assert_eq!(
            nodes[&3].read_history(0).await.unwrap(),
            leader.read_history(0).await.unwrap()
        );
        // Nothing past what is applied is served.
        assert!(matches!(
            leader.read_history(applied + 1000).await,
            Err(HistoryError::NotCommitted { .. })
        ));
        newcomer.shutdown().await;
        for node in nodes.values() {
            node.shutdown().await;
        }
    });
}
