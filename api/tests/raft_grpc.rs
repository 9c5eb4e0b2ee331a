//! Raft over gRPC (`api/src/raft/`): real nodes on real disks (temporary
//! directories), each serving `farmlog.v1.Raft` on a loopback port of its
//! own and reaching its peers with a plaintext `GrpcTransport`. A cluster
//! replicates and applies writes, elects a new leader when the old one
//! stops, refuses requests meant for another node and malformed ones
//! without harm, and brings a late learner up by InstallSnapshot, after
//! which the learner fetches the history behind the snapshot (ReadHistory).
//!
//! Every wait is bounded; every port is chosen by the system.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use farmlog_api::pb;
use farmlog_api::pb::raft_client::RaftClient;
use farmlog_api::raft::{GrpcTransport, RaftService};
use farmlog_engine::io::OsStorage;
use farmlog_engine::kinds;
use farmlog_engine::state::batch::{self, Batch};
use farmlog_engine::state::{testing, Place};
use farmlog_engine::LogOptions;
use farmlog_replica::{Node, NodeId, RaftSettings, StoreOptions};
use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::Code;

/// How long any one wait may take.
const BOUND: Duration = Duration::from_secs(30);
/// How long a whole test may take.
const TEST_BOUND: Duration = Duration::from_secs(180);
/// How long a stopped server may take to close its connections.
const SERVER_STOP_BOUND: Duration = Duration::from_secs(5);

/// One node and the gRPC server in front of it.
struct Member {
    node: Arc<Node>,
    address: String,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    _dir: tempfile::TempDir,
}

impl Member {
    /// Starts node `id` in a new directory, serving on a free port.
    async fn start(id: NodeId, settings: &RaftSettings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            log: LogOptions {
                first_index: 0,
                segment_bytes: 256 << 10,
                disk_reserve_bytes: 0,
                ..LogOptions::default()
            },
            scrub_bytes_per_second: 0,
            ..StoreOptions::default()
        };
        let config = settings.config("raft-grpc-test").unwrap();
        let transport = Arc::new(GrpcTransport::new(None));
        let node = Node::start(id, Arc::new(OsStorage), dir.path(), options, config, transport)
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            Server::builder()
                .add_service(RaftService::new(node.inbox()).into_server())
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Self {
            node: Arc::new(node),
            address,
            stop: Some(stop),
            server,
            _dir: dir,
        }
    }

    fn basic_node(&self) -> BasicNode {
        BasicNode::new(&self.address)
    }

    /// A raw client of this node's Raft service.
    async fn client(&self) -> RaftClient<Channel> {
        timeout(BOUND, RaftClient::connect(format!("http://{}", self.address)))
            .await
            .expect("connects in time")
            .unwrap()
    }

    /// Stops the node, then its server.
    async fn stop(mut self) {
        self.node.shutdown().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if timeout(SERVER_STOP_BOUND, &mut self.server).await.is_err() {
            self.server.abort();
        }
    }
}

/// Starts nodes `ids`, initializes them as one cluster and returns them
/// with the id of the leader.
async fn cluster(ids: &[NodeId], settings: &RaftSettings) -> (BTreeMap<NodeId, Member>, NodeId) {
    let mut members = BTreeMap::new();
    for &id in ids {
        members.insert(id, Member::start(id, settings).await);
    }
    let voters: BTreeMap<NodeId, BasicNode> = members.iter().map(|(&id, member)| (id, member.basic_node())).collect();
    let first = &members[&ids[0]].node;
    first.raft.initialize(voters).await.unwrap();
    let leader = first.wait_for_leader(BOUND).await.expect("a leader is elected");
    (members, leader)
}

/// Waits until `done`, at most [`BOUND`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !done() {
        assert!(Instant::now() < deadline, "not within {BOUND:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Proposes `count` commands at `node` concurrently, stamped from
/// `first_stamp`; returns (stamp, place) of each.
async fn write(node: &Arc<Node>, first_stamp: u64, count: u64) -> Vec<(u64, Place)> {
    let templates = {
        let mut all = testing::farm();
        all.extend(testing::every_family());
        all
    };
    let mut tasks = tokio::task::JoinSet::new();
    for stamp in first_stamp..first_stamp + count {
        let mut command = templates[(stamp as usize) % templates.len()].clone();
        command.proposed_at_ms = stamp;
        let node = node.clone();
        tasks.spawn(async move {
            let proposed = timeout(BOUND, node.propose(batch::encode(&command).unwrap())).await;
            let (place, _) = proposed.expect("the write is answered in time").unwrap();
            (stamp, place)
        });
    }
    let mut acked = Vec::new();
    while let Some(result) = tasks.join_next().await {
        acked.push(result.unwrap());
    }
    acked.sort_by_key(|(stamp, _)| *stamp);
    acked
}

/// Waits until `node` has applied every write in `acked`, then checks
/// that each is in its log at its place.
async fn assert_applied(node: &Node, acked: &[(u64, Place)]) {
    let last = acked.iter().map(|(_, place)| place.index).max().unwrap_or(0);
    let applied = |node: &Node| node.raft.metrics().borrow().last_applied.map(|log_id| log_id.index);
    wait_until(&format!("node {} applies up to {last}", node.id), || {
        applied(node).is_some_and(|index| index >= last)
    })
    .await;
    for (stamp, place) in acked {
        let record = node
            .log()
            .read(place.index)
            .unwrap_or_else(|error| panic!("node {}: write {stamp} at {place:?} is gone: {error}", node.id));
        let batch = Batch::parse(record.payload()).unwrap();
        assert_eq!(
            batch.command(place.slot).unwrap().proposed_at_ms.to_native(),
            *stamp,
            "node {}: another write at {place:?}",
            node.id
        );
    }
}

/// A vote that Raft would take seriously, were the request delivered.
fn some_vote() -> Option<pb::RaftVote> {
    Some(pb::RaftVote {
        term: 1,
        voted_for: Some(1),
        committed: false,
    })
}

/// Asserts that `result` is the error `code`, with `words` in its message.
fn assert_refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>, code: Code, words: &str) {
    let status = result.expect_err("the request is refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "{words:?} is not in {:?}",
        status.message()
    );
}

/// Requests meant for another node id are refused, whatever they hold;
/// Status answers whatever the id.
async fn check_wrong_target(member: &Member, id: NodeId) {
    let mut client = member.client().await;
    let wrong = 99;
    let expected = format!("node {id} answers at this address, not node {wrong}");
    let vote = pb::VoteRequest {
        target: wrong,
        vote: some_vote(),
        last_log_id: None,
    };
    assert_refused(client.vote(vote).await, Code::FailedPrecondition, &expected);
    let append = pb::AppendEntriesRequest {
        target: wrong,
        vote: some_vote(),
        ..Default::default()
    };
    assert_refused(client.append_entries(append).await, Code::FailedPrecondition, &expected);
    let snapshot = pb::InstallSnapshotRequest {
        target: wrong,
        ..Default::default()
    };
    assert_refused(
        client.install_snapshot(snapshot).await,
        Code::FailedPrecondition,
        &expected,
    );
    let elect = pb::ElectRequest { target: wrong };
    assert_refused(client.elect(elect).await, Code::FailedPrecondition, &expected);
    let history = pb::ReadHistoryRequest {
        target: wrong,
        from: 0,
        to: 10,
    };
    assert_refused(client.read_history(history).await, Code::FailedPrecondition, &expected);
    let status = client.status(pb::PeerStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.id, id);
    assert_eq!(status.voters.len(), 3);
}

/// Malformed requests are refused as INVALID_ARGUMENT, naming what is
/// wrong, before Raft sees them.
async fn check_malformed(member: &Member, id: NodeId) {
    let mut client = member.client().await;
    let entry = |index: u64, kind: u32| pb::RaftEntry {
        term: 1,
        index,
        kind,
        payload: Bytes::new(),
    };
    let kind_out_of_range = pb::AppendEntriesRequest {
        target: id,
        vote: some_vote(),
        entries: vec![entry(0, kinds::BLANK.into()), entry(1, 70_000)],
        ..Default::default()
    };
    assert_refused(
        client.append_entries(kind_out_of_range).await,
        Code::InvalidArgument,
        "entries[1].kind is 70000",
    );
    let no_vote = pb::AppendEntriesRequest {
        target: id,
        vote: None,
        ..Default::default()
    };
    assert_refused(
        client.append_entries(no_vote).await,
        Code::InvalidArgument,
        "vote is missing",
    );
    let gap = pb::AppendEntriesRequest {
        target: id,
        vote: some_vote(),
        prev_log_id: Some(pb::RaftLogId { term: 1, index: 3 }),
        entries: vec![entry(7, kinds::BLANK.into())],
        ..Default::default()
    };
    assert_refused(
        client.append_entries(gap).await,
        Code::InvalidArgument,
        "malformed AppendEntries",
    );
    let no_vote = pb::VoteRequest {
        target: id,
        vote: None,
        last_log_id: None,
    };
    assert_refused(client.vote(no_vote).await, Code::InvalidArgument, "vote is missing");
    let no_meta = pb::InstallSnapshotRequest {
        target: id,
        vote: some_vote(),
        ..Default::default()
    };
    assert_refused(
        client.install_snapshot(no_meta).await,
        Code::InvalidArgument,
        "meta is missing",
    );
    let bad_membership = pb::InstallSnapshotRequest {
        target: id,
        vote: some_vote(),
        meta: Some(pb::SnapshotMeta {
            last_membership: Some(pb::RaftMembership {
                log_id: None,
                record: Bytes::from_static(b"not a membership"),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_refused(
        client.install_snapshot(bad_membership).await,
        Code::InvalidArgument,
        "meta.last_membership.record is not a valid membership",
    );
    // Still healthy, and still itself.
    let status = client.status(pb::PeerStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((status.id, status.fenced), (id, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_replicates_fails_over_and_refuses_bad_requests() {
    timeout(TEST_BOUND, async {
        let settings = RaftSettings::default();
        let (mut members, leader) = cluster(&[1, 2, 3], &settings).await;
        let acked = write(&members[&leader].node, 1 << 40, 24).await;
        for member in members.values() {
            assert_applied(&member.node, &acked).await;
        }

        let follower = *members.keys().find(|&&id| id != leader).unwrap();
        check_wrong_target(&members[&follower], follower).await;
        check_malformed(&members[&follower], follower).await;
        // The cluster is unharmed: the follower still applies new writes.
        let acked = write(&members[&leader].node, 2 << 40, 8).await;
        assert_applied(&members[&follower].node, &acked).await;

        // The leader stops; the other two elect one of themselves.
        members.remove(&leader).unwrap().stop().await;
        let survivor = members[&follower].node.clone();
        let new_leader = survivor
            .raft
            .wait(Some(BOUND))
            .metrics(
                |metrics| metrics.current_leader.is_some_and(|id| id != leader),
                "a new leader",
            )
            .await
            .expect("a new leader is elected")
            .current_leader
            .unwrap();
        let acked = write(&members[&new_leader].node, 3 << 40, 16).await;
        for member in members.values() {
            assert_applied(&member.node, &acked).await;
        }
        for (_, member) in members {
            member.stop().await;
        }
    })
    .await
    .expect("the test ends in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_learner_is_brought_up_by_a_snapshot_and_fetches_the_history() {
    timeout(TEST_BOUND, async {
        // Snapshots often, few entries kept behind them.
        let settings = RaftSettings {
            snapshot_every_entries: 8,
            keep_behind_snapshot: 2,
            ..RaftSettings::default()
        };
        let (mut members, leader) = cluster(&[1, 2, 3], &settings).await;
        let leader_node = members[&leader].node.clone();
        for round in 0..40 {
            write(&leader_node, (1 << 40) + round * 10, 3).await;
        }
        wait_until("the leader purges its log behind a snapshot", || {
            let metrics = leader_node.raft.metrics().borrow().clone();
            metrics.snapshot.is_some() && metrics.purged.is_some()
        })
        .await;

        let newcomer = Member::start(4, &settings).await;
        timeout(BOUND, leader_node.add_learner(4, newcomer.basic_node()))
            .await
            .expect("the learner catches up in time")
            .unwrap();
        let newcomer_node = newcomer.node.clone();
        members.insert(4, newcomer);
        wait_until(
            "the learner's log starts after a snapshot and its backfill completes",
            || newcomer_node.log().first_index() > 0 && matches!(newcomer_node.history().owed(), Ok(None)),
        )
        .await;
        assert!(newcomer_node.raft.metrics().borrow().snapshot.is_some());
        assert_eq!(newcomer_node.history().first_retained(), 0);
        let applied = leader_node.raft.metrics().borrow().last_applied.unwrap().index;
        for index in 0..=applied {
            let here = newcomer_node.read_history(index).await.unwrap();
            let there = leader_node.read_history(index).await.unwrap();
            assert_eq!(here, there, "record {index}");
        }

        // It keeps up from its log afterwards.
        let later = write(&leader_node, 2 << 40, 8).await;
        assert_applied(&newcomer_node, &later).await;
        for (_, member) in members {
            member.stop().await;
        }
    })
    .await
    .expect("the test ends in time");
}
