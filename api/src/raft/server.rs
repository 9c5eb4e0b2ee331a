//! The receiving side of the Raft transport: the `farmlog.v1.Raft` gRPC
//! service over a node's [`Inbox`]. Each call is decoded ([`super::wire`]),
//! checked, handed to the matching `Inbox` method, and its answer or error
//! encoded back.
//!
//! Invariants:
//! - a request meant for another node id (every request but `Status`
//!   names its `target`) is refused before it is decoded: a node that
//!   replaced a damaged one at the same address never takes the old id's
//!   Raft traffic;
//! - nothing reaches openraft that did not decode, and an AppendEntries
//!   whose entries do not continue its `prev_log_id` is refused
//!   ([`check_append_entries`]);
//! - who may call is not decided here: the layer that serves this service
//!   wraps it with authorization.
//!
//! Errors, and what the calling [`GrpcTransport`](super::GrpcTransport)
//! makes of them:
//!
//! | failure                                                | code                  | at the caller                      |
//! |--------------------------------------------------------|-----------------------|------------------------------------|
//! | request meant for another node id                      | `FAILED_PRECONDITION` | network error                      |
//! | request that does not decode, or entries with a gap    | `INVALID_ARGUMENT`    | network error                      |
//! | Raft stopped, or its storage failed (`Fatal`)          | `UNAVAILABLE`         | unreachable: openraft backs off    |
//! | no answer within the caller's deadline                 | `DEADLINE_EXCEEDED`   | network error: retried, no backoff |
//! | snapshot chunk of another stream (`SnapshotMismatch`)  | `ABORTED`             | remote error: resend from offset 0 |
//! | `Elect` on a fenced node                               | `FAILED_PRECONDITION` | network error                      |
//! | `Status` when the node cannot read its own log         | `INTERNAL`            | network error                      |
//! | history not committed here yet, or still being fetched | `FAILED_PRECONDITION` | network error                      |
//! | history no longer retained here                        | `OUT_OF_RANGE`        | network error                      |
//! | history that cannot be read (I/O, marker)              | `INTERNAL`            | network error                      |
//!
//! (Serving history never meets `HistoryError::Unavailable` or `BadChunk`,
//! which are a reader's errors; were it to, they would be `UNAVAILABLE` and
//! `INTERNAL`.)
//!
//! `FAILED_PRECONDITION` means "not from this node, not now": another node
//! or a later call may succeed; `OUT_OF_RANGE` that this node will never
//! hold what was asked.

use farmlog_replica::history::HistoryError;
use farmlog_replica::inbox::ElectError;
use farmlog_replica::transport::check_append_entries;
use farmlog_replica::{Inbox, NodeId};
use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use tonic::{Request, Response, Status};

use super::wire::{self, WireError, RAFT_MESSAGE_BYTES_MAX};
use crate::pb;
use crate::pb::raft_server::{Raft, RaftServer};

/// The `farmlog.v1.Raft` service of one node.
#[derive(Clone)]
pub struct RaftService {
    inbox: Inbox,
}

impl RaftService {
    /// The service that hands peers' requests to `inbox` (see
    /// `farmlog_replica::Node::inbox`).
    pub fn new(inbox: Inbox) -> Self {
        Self { inbox }
    }

    /// The tonic server of this service, taking and sending messages of up
    /// to [`RAFT_MESSAGE_BYTES_MAX`] bytes.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX)
    }

    /// Refuses a request meant for another node id.
    fn check_target(&self, target: NodeId) -> Result<(), Status> {
        let here = self.inbox.id();
        match target == here {
            true => Ok(()),
            false => Err(Status::failed_precondition(format!(
                "node {here} answers at this address, not node {target}: \
                 it takes no Raft requests meant for another node"
            ))),
        }
    }
}

/// A request that does not decode.
fn invalid(error: WireError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Raft cannot take requests here any more.
fn fatal(node: NodeId, fatal: Fatal<NodeId>) -> Status {
    Status::unavailable(format!("node {node} cannot take Raft requests: {fatal}"))
}

/// The error of AppendEntries or Vote: only ever fatal.
fn raft_error(node: NodeId, error: RaftError<NodeId>) -> Status {
    match error {
        RaftError::Fatal(error) => fatal(node, error),
        RaftError::APIError(never) => match never {},
    }
}

/// The error of a snapshot chunk: fatal, or a chunk that does not continue
/// the stream being received (the sender starts again from offset 0).
fn install_error(node: NodeId, error: RaftError<NodeId, InstallSnapshotError>) -> Status {
    match error {
        RaftError::Fatal(error) => fatal(node, error),
        RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)) => {
            Status::aborted(format!("node {node}: {mismatch}"))
        }
    }
}

/// Why history could not be served (see the module's table).
fn history_error(node: NodeId, error: HistoryError) -> Status {
    let message = format!("node {node}: {error}");
    match error {
        HistoryError::NotCommitted { .. } | HistoryError::Incomplete { .. } => Status::failed_precondition(message),
        HistoryError::NotRetained { .. } => Status::out_of_range(message),
        HistoryError::Unavailable { .. } => Status::unavailable(message),
        HistoryError::BadChunk { .. } | HistoryError::Engine(_) | HistoryError::Marker(_) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let request = request.into_inner();
        self.check_target(request.target)?;
        let request = wire::decode_append_entries(request).map_err(invalid)?;
        check_append_entries(&request).map_err(|malformed| Status::invalid_argument(malformed.to_string()))?;
        let response = self
            .inbox
            .append_entries(request)
            .await
            .map_err(|error| raft_error(self.inbox.id(), error))?;
        Ok(Response::new(wire::encode_append_response(&response)))
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        let request = request.into_inner();
        self.check_target(request.target)?;
        let request = wire::decode_vote_request(request).map_err(invalid)?;
        let response = self
            .inbox
            .vote(request)
            .await
            .map_err(|error| raft_error(self.inbox.id(), error))?;
        Ok(Response::new(wire::encode_vote_response(&response)))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let request = request.into_inner();
        self.check_target(request.target)?;
        let request = wire::decode_install_snapshot(request).map_err(invalid)?;
        let response = self
            .inbox
            .install_snapshot(request)
            .await
            .map_err(|error| install_error(self.inbox.id(), error))?;
        Ok(Response::new(wire::encode_install_response(&response)))
    }

    async fn elect(&self, request: Request<pb::ElectRequest>) -> Result<Response<pb::ElectResponse>, Status> {
        self.check_target(request.into_inner().target)?;
        match self.inbox.elect().await {
            Ok(()) => Ok(Response::new(pb::ElectResponse {})),
            Err(error @ ElectError::Fenced { .. }) => Err(Status::failed_precondition(error.to_string())),
            Err(ElectError::Fatal(error)) => Err(fatal(self.inbox.id(), error)),
        }
    }

    /// Answers whatever the id asked for: the answer names this node.
    async fn status(
        &self,
        _request: Request<pb::PeerStatusRequest>,
    ) -> Result<Response<pb::PeerStatusResponse>, Status> {
        let status = self
            .inbox
            .status()
            .map_err(|error| Status::internal(format!("node {} cannot read its log: {error}", self.inbox.id())))?;
        Ok(Response::new(wire::encode_status(&status)))
    }

    async fn read_history(
        &self,
        request: Request<pb::ReadHistoryRequest>,
    ) -> Result<Response<pb::ReadHistoryResponse>, Status> {
        let request = request.into_inner();
        self.check_target(request.target)?;
        // Reading a chunk reads (and may decompress) segments: off the
        // runtime's threads.
        let inbox = self.inbox.clone();
        let chunk = tokio::task::spawn_blocking(move || inbox.read_history((request.from, request.to)))
            .await
            .map_err(|error| Status::internal(format!("node {}: reading history failed: {error}", self.inbox.id())))?
            .map_err(|error| history_error(self.inbox.id(), error))?;
        Ok(Response::new(wire::encode_history(chunk)))
    }
}
