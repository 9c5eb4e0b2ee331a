//! How nodes reach each other: the [`Transport`] trait. The gRPC transport
//! (with mutual TLS) lives in `api`; the simulation's in-process transport,
//! with faults, in `sim`. [`Network`] adapts any transport to openraft.
//!
//! A transport delivers one request to one node and returns that node's
//! answer. It must bound every call by the timeout it is given, and report
//! a node it cannot reach as [`RPCError::Unreachable`] so that openraft
//! backs off.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;

use crate::{NodeId, TypeConfig};

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
