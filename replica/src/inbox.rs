//! The receiving side of a node: what every transport hands its peers'
//! requests to. Each [`Transport`](crate::Transport) call on one node ends
//! in the matching [`Inbox`] method on the target node, which applies the
//! node's own rules (the tail fence) before openraft sees the request.

use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use std::sync::Arc;

use crate::fence::{self, Fence};
use crate::history::{History, HistoryChunk, HistoryError};
use crate::log_store::LogStore;
use crate::transport::PeerStatus;
use crate::{NodeId, Raft, SchemaSupport, TypeConfig};

/// Why a node refused to start an election when asked.
#[derive(Debug, thiserror::Error)]
pub enum ElectError {
    #[error("node {node} is fenced: its log may have lost acknowledged entries, so it may not campaign")]
    Fenced { node: NodeId },
    #[error(transparent)]
    Fatal(#[from] Fatal<NodeId>),
}

/// A node's inbox; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) log_store: LogStore,
    pub(crate) fence: Fence,
    pub(crate) schema: SchemaSupport,
    pub(crate) history: Arc<History>,
    /// The damaged node this one replaced, if any (see `Node::rejoin`).
    pub(crate) replaces: Option<NodeId>,
}

impl Inbox {
    /// This node's id. A transport that reaches nodes by address must
    /// refuse a Raft request meant for another id (the damaged node this
    /// one replaced, say): only [`Inbox::status`] answers any.
    pub fn id(&self) -> NodeId {
        self.id
    }

    pub async fn append_entries(
        &self,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.raft.append_entries(request).await
    }

    /// A fenced node refuses a candidate its fence does not admit, without
    /// asking Raft; otherwise Raft decides.
    pub async fn vote(&self, request: VoteRequest<NodeId>) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        if !self.fence.get().admits(request.last_log_id) {
            let vote = self.raft.metrics().borrow().vote;
            return Ok(VoteResponse {
                vote,
                vote_granted: false,
                last_log_id: self.log_store.last_log_id().ok().flatten(),
            });
        }
        self.raft.vote(request).await
    }

    /// Starts an election now (the last step of a hand-off), unless the
    /// node is fenced.
    pub async fn elect(&self) -> Result<(), ElectError> {
        let own_last = self.log_store.last_log_id().ok().flatten();
        if !self.fence.may_campaign(own_last) {
            return Err(ElectError::Fenced { node: self.id });
        }
        Ok(self.raft.trigger().elect().await?)
    }

    pub async fn install_snapshot(
        &self,
        request: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.raft.install_snapshot(request).await
    }

    /// Committed history from `from` up to `to` (exclusive), as far as
    /// this node holds it (see [`History::chunk`]); never past what it
    /// has applied.
    pub fn read_history(&self, (from, to): (u64, u64)) -> Result<HistoryChunk, HistoryError> {
        let applied_end = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |applied| applied.index + 1);
        self.history.chunk(from, to.min(applied_end))
    }

    /// What the node says of itself; an error if its log cannot be read
    /// (a fenced peer must not take a guess for an answer).
    pub fn status(&self) -> Result<PeerStatus, farmlog_engine::Error> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        Ok(PeerStatus {
            id: self.id,
            replaces: self.replaces,
            schema: self.schema,
            last_log_id: self.log_store.last_log_id()?,
            voters: fence::voters(membership.membership()),
            fenced: self.fence.get().is_fenced(),
        })
    }
}
