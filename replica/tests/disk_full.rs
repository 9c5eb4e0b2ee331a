//! A nearly full disk refuses client writes with a clear error before the
//! engine's reserve is reached, so the leader's own appends (and its
//! followers' replication) still fit and Raft keeps running; writes are
//! taken again once space returns.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{options, runtime, Machine};
use farmlog_engine::state::batch;
use farmlog_engine::state::testing;
use farmlog_engine::LogOptions;
use farmlog_replica::node::ROOM_CHECK_INTERVAL;
use farmlog_replica::sim::net::SimNet;
use farmlog_replica::{ProposeError, RaftSettings, StoreOptions};
use openraft::BasicNode;

/// The reserve of this test's log.
const RESERVE: u64 = 1 << 20;

#[test]
fn client_writes_are_refused_while_the_disk_is_nearly_full() {
    runtime(7).block_on(async {
        let net = SimNet::new(7);
        let machine = Machine::new(1);
        let store = StoreOptions {
            log: LogOptions {
                disk_reserve_bytes: RESERVE,
                ..options().log
            },
            ..options()
        };
        let node = machine
            .start_with(&net, 1, store, &RaftSettings::default())
            .await
            .unwrap();
        node.raft
            .initialize(BTreeMap::from([(1, BasicNode { addr: "1".into() })]))
            .await
            .unwrap();
        assert_eq!(node.wait_for_leader(Duration::from_secs(10)).await, Some(1));
        let command = || batch::encode(&testing::every_family()[0]).unwrap();
        node.propose(command()).await.unwrap();

        // Between the reserve and twice it: clients are refused, nothing
        // is written, the node still leads.
        machine.storage.set_available_bytes(Some(RESERVE + RESERVE / 2));
        std::thread::sleep(ROOM_CHECK_INTERVAL + Duration::from_millis(20));
        let before = node.raft.metrics().borrow().last_log_index;
        match node.propose(command()).await {
            Err(ProposeError::DiskNearlyFull {
                available_bytes,
                needed_bytes,
            }) => {
                assert_eq!(available_bytes, RESERVE + RESERVE / 2);
                assert_eq!(needed_bytes, 2 * RESERVE);
            }
            other => panic!("a write on a nearly full disk got {other:?}"),
        }
        assert_eq!(node.raft.metrics().borrow().last_log_index, before);
        assert_eq!(node.wait_for_leader(Duration::from_secs(1)).await, Some(1));

        // Space returns: writes are taken again.
        machine.storage.set_available_bytes(None);
        std::thread::sleep(ROOM_CHECK_INTERVAL + Duration::from_millis(20));
        node.propose(command()).await.unwrap();
        machine.stop(&net, node).await;
    });
}
