//! How nodes reach each other: the [`Transport`] trait. The gRPC transport
//! (with mutual TLS) lives in `api`; the simulation's in-process transport,
//! with faults, in `sim`. [`Network`] adapts any transport to openraft.
//!
//! A transport delivers one request to one node and returns that node's
//! answer. It must bound every call by the timeout it is given, and report
//! a node it cannot reach as [`RPCError::Unreachable`] so that openraft
//! backs off.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, LogId};

use crate::history::HistoryChunk;
use crate::{NodeId, SchemaSupport, TypeConfig};

/// The error of one call.
pub type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// Delivers Raft's three requests from this node to `target`.
pub trait Transport: Send + Sync + 'static {
    fn append_entries(
        &self,
        target: NodeId,
        node: &BasicNode,
        request: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> impl Future<Output = Result<AppendEntriesResponse<NodeId>, RpcError>> + Send;

    fn vote(
        &self,
        target: NodeId,
        node: &BasicNode,
        request: VoteRequest<NodeId>,
        timeout: Duration,
    ) -> impl Future<Output = Result<VoteResponse<NodeId>, RpcError>> + Send;

    /// Asks `target` to start an election now (Raft's TimeoutNow): the
    /// last step of a leader hand-off.
    fn elect(
        &self,
        target: NodeId,
        node: &BasicNode,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;

    /// Asks a node for its [`PeerStatus`]: which command schema versions
    /// it applies, where its log ends, and which voters it knows.
    fn status(
        &self,
        target: NodeId,
        node: &BasicNode,
        timeout: Duration,
    ) -> impl Future<Output = Result<PeerStatus, RpcError>> + Send;

    /// Asks a node for committed history: records from `from` up to `to`
    /// (exclusive), as far as it holds them (see `History::chunk`).
    fn read_history(
        &self,
        target: NodeId,
        node: &BasicNode,
        range: (u64, u64),
        timeout: Duration,
    ) -> impl Future<Output = Result<HistoryChunk, RpcError>> + Send;

    /// One chunk of a snapshot (openraft sends a snapshot in chunks of at
    /// most `Config::snapshot_max_chunk_size` bytes).
    fn install_snapshot(
        &self,
        target: NodeId,
        node: &BasicNode,
        request: InstallSnapshotRequest<TypeConfig>,
        timeout: Duration,
    ) -> impl Future<Output = Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>>> + Send;
}

/// openraft's network over a [`Transport`].
pub struct Network<T> {
    transport: Arc<T>,
}

impl<T> Network<T> {
    pub fn new(transport: Arc<T>) -> Self {
        Self { transport }
    }
}

impl<T> Clone for Network<T> {
    fn clone(&self) -> Self {
        Self {
            transport: self.transport.clone(),
        }
    }
}

impl<T: Transport> Network<T> {
    /// See [`Transport::elect`].
    pub async fn elect(&self, target: NodeId, node: &BasicNode, timeout: Duration) -> Result<(), RpcError> {
        self.transport.elect(target, node, timeout).await
    }

    /// See [`Transport::read_history`].
    pub async fn read_history(
        &self,
        target: NodeId,
        node: &BasicNode,
        range: (u64, u64),
        timeout: Duration,
    ) -> Result<HistoryChunk, RpcError> {
        self.transport.read_history(target, node, range, timeout).await
    }

    /// See [`Transport::status`].
    pub async fn status(&self, target: NodeId, node: &BasicNode, timeout: Duration) -> Result<PeerStatus, RpcError> {
        self.transport.status(target, node, timeout).await
    }
}

/// What a node says of itself to a peer that asks (see [`Transport::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The node that answered. A node asked at the address of another is
    /// that node's successor when `replaces` names it.
    pub id: NodeId,
    /// The node whose damaged log this one replaced (`Node::rejoin`): that
    /// node's log is gone.
    pub replaces: Option<NodeId>,
    /// The command schema versions it applies.
    pub schema: SchemaSupport,
    /// Where its log ends (see `LogStore::last_log_id`).
    pub last_log_id: Option<LogId<NodeId>>,
    /// The voters of its effective membership, with their addresses.
    pub voters: BTreeMap<NodeId, BasicNode>,
    /// Whether it is fenced (see `fence.rs`).
    pub fenced: bool,
}

/// One peer, as openraft sees it.
pub struct Peer<T> {
    transport: Arc<T>,
    target: NodeId,
    node: BasicNode,
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = Peer<T>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Peer {
            transport: self.transport.clone(),
            target,
            node: node.clone(),
        }
    }
}

impl<T: Transport> RaftNetwork<TypeConfig> for Peer<T> {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        check_append_entries(&request).map_err(|malformed| RPCError::Network(NetworkError::new(&malformed)))?;
        self.transport
            .append_entries(self.target, &self.node, request, option.soft_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.transport
            .install_snapshot(self.target, &self.node, request, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        self.transport
            .vote(self.target, &self.node, request, option.soft_ttl())
            .await
    }
}

/// An AppendEntries request whose entries do not continue its
/// `prev_log_id` one by one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed AppendEntries: entry {found} where {expected} should follow the previous log id")]
pub struct MalformedAppend {
    pub expected: u64,
    pub found: u64,
}

/// Checks that a request's entries are consecutive and continue its
/// `prev_log_id`. Every request is checked before it is sent, and a
/// receiver may check again before handing it to openraft.
///
/// openraft 0.9 can build a request that breaks this: a replication
/// stream that outlives its leadership reads a range whose start was
/// purged meanwhile, and the reader (as openraft's storage contract
/// requires) returns only the entries after the purge point. A follower
/// that accepted such a request would believe it holds the missing
/// entries. Refused as a network error, the request is retried by
/// openraft from its current state, or dropped with the stale stream.
pub fn check_append_entries(request: &AppendEntriesRequest<TypeConfig>) -> Result<(), MalformedAppend> {
    let first = request.prev_log_id.map_or(0, |prev| prev.index + 1);
    for (expected, entry) in (first..).zip(&request.entries) {
        if entry.log_id.index != expected {
            return Err(MalformedAppend {
                expected,
                found: entry.log_id.index,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::{EntryPayload, Vote};

    use super::*;
    use crate::entry::log_id;
    use crate::Entry;

    fn request(prev: Option<u64>, indexes: &[u64]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: prev.map(|index| log_id(1, index)),
            leader_commit: None,
            entries: indexes
                .iter()
                .map(|&index| Entry {
                    log_id: log_id(2, index),
                    payload: EntryPayload::Blank,
                })
                .collect(),
        }
    }

    #[test]
    fn entries_must_continue_the_previous_log_id() {
        assert_eq!(check_append_entries(&request(None, &[0, 1, 2])), Ok(()));
        assert_eq!(check_append_entries(&request(Some(11), &[12, 13])), Ok(()));
        assert_eq!(check_append_entries(&request(Some(11), &[])), Ok(()));
        // What a stale stream sent after a purge (seed 3285).
        assert_eq!(
            check_append_entries(&request(None, &[12, 13])),
            Err(MalformedAppend { expected: 0, found: 12 })
        );
        assert_eq!(
            check_append_entries(&request(Some(4), &[5, 7])),
            Err(MalformedAppend { expected: 6, found: 7 })
        );
    }
}
