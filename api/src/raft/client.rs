//! The sending side of the Raft transport: [`GrpcTransport`], replica's
//! [`Transport`] over the `farmlog.v1.Raft` gRPC service.
//!
//! A node is reached at its `BasicNode::addr` (`host:port`), over one
//! HTTP/2 channel per address, kept in a bounded map and connected lazily
//! (the first call connects; a broken connection is re-established by the
//! next call).
//!
//! Invariants:
//! - every call ends within the timeout it is given: the timeout bounds
//!   the whole exchange here and travels as the gRPC deadline, so the
//!   receiver drops the work when the caller gives up;
//! - an answer that does not decode is an error, never a panic;
//! - no connection, or a node whose Raft has stopped, is
//!   [`RPCError::Unreachable`], so that openraft backs off (500 ms); a
//!   refusal, and an answer that did not come in time, are
//!   [`RPCError::Network`], which openraft retries at its next heartbeat
//!   without backing off. openraft 0.9 gives an AppendEntries only 3/4 of
//!   the heartbeat interval (37.5 ms by default), which a follower that
//!   writes and syncs a large entry on a loaded machine can overrun: that
//!   is a slow peer, not a gone one, and backing off from it stalled every
//!   commit behind it for half a second. Only a snapshot chunk that does not
//!   continue the receiver's stream is a [`RPCError::RemoteError`]
//!   (`SnapshotMismatch`), on which openraft sends the snapshot again from
//!   its start. This is the in-process transport's mapping
//!   (`farmlog_replica::sim::net`) but for a stopped Raft, which that one
//!   reports as a network error (here it is the same as a stopped
//!   process), and for no answer in time, which that one reports as
//!   unreachable (its delays are the simulation's own, not a slow disk).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use farmlog_replica::entry::MEMBERSHIP_NODES_MAX;
use farmlog_replica::history::HistoryChunk;
use farmlog_replica::transport::RpcError;
use farmlog_replica::{NodeId, PeerStatus, Transport, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, SnapshotMismatch,
    Unreachable,
};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, SnapshotSegmentId};
use prost::Message;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::wire::{self, WireError, RAFT_MESSAGE_BYTES_MAX};
use crate::pb;
use crate::pb::raft_client::RaftClient;

/// How long setting up a connection to a peer may take (TCP, and TLS when
/// configured); a call's own timeout bounds it too.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most channels kept, one per peer address: every node of the largest
/// membership twice over (members come and go, and a replaced node's
/// successor may run elsewhere). Past it the least recently used channel
/// is dropped; calls still using it finish on it.
pub const PEER_CHANNELS_MAX: usize = 2 * MEMBERSHIP_NODES_MAX;

/// How often an HTTP/2 ping checks a connection, idle or not, so that a
/// peer that vanished without closing it is noticed and the channel
/// reconnects.
pub const PEER_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a ping may go unanswered before its connection is dropped.
pub const PEER_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The channels to peers, by address, with when each was last used.
#[derive(Default)]
struct Channels {
    by_address: HashMap<String, (Channel, u64)>,
    /// Counts uses, to find the least recently used channel.
    clock: u64,
}

/// replica's [`Transport`] over gRPC.
pub struct GrpcTransport {
    tls: Option<ClientTlsConfig>,
    channels: Mutex<Channels>,
}

impl GrpcTransport {
    /// A transport that connects with `tls` (https), or in plaintext
    /// (http) without it. The TLS configuration carries the client's
    /// identity and the authority that signs its peers' certificates; the
    /// server name checked is the peer's host unless it sets one.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Self {
            tls,
            channels: Mutex::new(Channels::default()),
        }
    }

    fn channels(&self) -> MutexGuard<'_, Channels> {
        // The map is consistent at every step: a panic elsewhere while
        // holding the lock cannot have left it half-changed.
        self.channels.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The client for `address`, on its cached channel or a new one.
    fn client(&self, address: &str) -> Result<RaftClient<Channel>, Status> {
        let channel = {
            let mut channels = self.channels();
            channels.clock += 1;
            let now = channels.clock;
            match channels.by_address.get_mut(address) {
                Some((channel, used)) => {
                    *used = now;
                    channel.clone()
                }
                None => {
                    let channel = self.endpoint(address)?.connect_lazy();
                    if channels.by_address.len() >= PEER_CHANNELS_MAX {
                        let oldest = channels
                            .by_address
                            .iter()
                            .min_by_key(|(_, (_, used))| *used)
                            .map(|(address, _)| address.clone());
                        if let Some(oldest) = oldest {
                            channels.by_address.remove(&oldest);
                        }
                    }
                    channels.by_address.insert(address.to_string(), (channel.clone(), now));
                    channel
                }
            }
        };
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX))
    }

    /// How `address` is reached. A bad address is reported as
    /// `UNAVAILABLE`: no node can be reached there.
    fn endpoint(&self, address: &str) -> Result<Endpoint, Status> {
        let scheme = match self.tls {
            Some(_) => "https",
            None => "http",
        };
        let bad = |error: tonic::transport::Error| {
            Status::unavailable(format!("cannot reach a node at {address:?}: {error}"))
        };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(bad)?
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .http2_keep_alive_interval(PEER_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(PEER_KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).map_err(bad),
            None => Ok(endpoint),
        }
    }

    /// Sends `message` to the node at `node.addr` with `send`, and waits
    /// at most `timeout` for its answer.
    async fn call<M, R, F, Fut>(&self, node: &BasicNode, timeout: Duration, message: M, send: F) -> Result<R, Status>
    where
        F: FnOnce(RaftClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let client = self.client(&node.addr)?;
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, send(client, request)).await {
            Ok(answer) => answer.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer from {} within {timeout:?}",
                node.addr
            ))),
        }
    }
}

/// A node that answered with a message that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("node {node} answered with a malformed message: {error}")]
struct MalformedAnswer {
    node: NodeId,
    error: WireError,
}

/// A request that cannot be sent in one message.
#[derive(Debug, thiserror::Error)]
#[error("a request of {bytes} bytes cannot be sent in one message of at most {RAFT_MESSAGE_BYTES_MAX}")]
struct Oversized {
    bytes: usize,
}

/// A failed call as openraft's error: see the module's documentation.
fn failed<E: std::error::Error>(status: Status) -> RpcError<E> {
    match status.code() {
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

/// An answer that does not decode.
fn malformed<E: std::error::Error>(node: NodeId, error: WireError) -> RpcError<E> {
    RPCError::Network(NetworkError::new(&MalformedAnswer { node, error }))
}

/// What to answer openraft for an AppendEntries too large for one
/// message: how many of its first entries fit, so that openraft sends
/// fewer at once; or, if not even one does (the bounds checked in `wire`
/// make it impossible), a network error, which openraft does not retry at
/// once.
fn too_large(message: &pb::AppendEntriesRequest) -> RpcError {
    // Each entry is field 4 of the request: its key, length and body.
    let framed = |entry: &pb::RaftEntry| prost::encoding::message::encoded_len(4, entry);
    let bytes = message.encoded_len();
    let mut total = bytes - message.entries.iter().map(framed).sum::<usize>();
    let fitting = message
        .entries
        .iter()
        .take_while(|entry| {
            total += framed(entry);
            total <= RAFT_MESSAGE_BYTES_MAX
        })
        .count();
    match fitting {
        0 => RPCError::Network(NetworkError::new(&Oversized { bytes })),
        fitting => RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fitting as u64)),
    }
}

impl Transport for GrpcTransport {
    async fn append_entries(
        &self,
        target: NodeId,
        node: &BasicNode,
        request: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let message = wire::encode_append_entries(target, &request);
        if message.encoded_len() > RAFT_MESSAGE_BYTES_MAX {
            return Err(too_large(&message));
        }
        let answer = self
            .call(node, timeout, message, |mut client, request| async move {
                client.append_entries(request).await
            })
            .await
            .map_err(failed)?;
        wire::decode_append_response(answer).map_err(|error| malformed(target, error))
    }

    async fn vote(
        &self,
        target: NodeId,
        node: &BasicNode,
        request: VoteRequest<NodeId>,
        timeout: Duration,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let message = wire::encode_vote_request(target, &request);
        let answer = self
            .call(node, timeout, message, |mut client, request| async move {
                client.vote(request).await
            })
            .await
            .map_err(failed)?;
        wire::decode_vote_response(answer).map_err(|error| malformed(target, error))
    }

    async fn elect(&self, target: NodeId, node: &BasicNode, timeout: Duration) -> Result<(), RpcError> {
        let message = pb::ElectRequest { target };
        self.call(node, timeout, message, |mut client, request| async move {
            client.elect(request).await
        })
        .await
        .map(|pb::ElectResponse {}| ())
        .map_err(failed)
    }

    async fn status(&self, target: NodeId, node: &BasicNode, timeout: Duration) -> Result<PeerStatus, RpcError> {
        let answer = self
            .call(
                node,
                timeout,
                pb::PeerStatusRequest {},
                |mut client, request| async move { client.status(request).await },
            )
            .await
            .map_err(failed)?;
        wire::decode_status(answer).map_err(|error| malformed(target, error))
    }

    async fn read_history(
        &self,
        target: NodeId,
        node: &BasicNode,
        (from, to): (u64, u64),
        timeout: Duration,
    ) -> Result<HistoryChunk, RpcError> {
        let message = pb::ReadHistoryRequest { target, from, to };
        let answer = self
            .call(node, timeout, message, |mut client, request| async move {
                client.read_history(request).await
            })
            .await
            .map_err(failed)?;
        wire::decode_history(answer).map_err(|error| malformed(target, error))
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        node: &BasicNode,
        request: InstallSnapshotRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        // What the receiver refuses with ABORTED: a chunk past the start of
        // a stream it is not receiving.
        let mismatch = SnapshotMismatch {
            expect: SnapshotSegmentId {
                id: request.meta.snapshot_id.clone(),
                offset: 0,
            },
            got: SnapshotSegmentId {
                id: request.meta.snapshot_id.clone(),
                offset: request.offset,
            },
        };
        let message = wire::encode_install_snapshot(target, request);
        if message.encoded_len() > RAFT_MESSAGE_BYTES_MAX {
            let oversized = Oversized {
                bytes: message.encoded_len(),
            };
            return Err(RPCError::Network(NetworkError::new(&oversized)));
        }
        let answer = self
            .call(node, timeout, message, |mut client, request| async move {
                client.install_snapshot(request).await
            })
            .await
            .map_err(|status| match status.code() {
                Code::Aborted => RPCError::RemoteError(RemoteError::new_with_node(
                    target,
                    node.clone(),
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
                )),
                _ => failed(status),
            })?;
        wire::decode_install_response(answer).map_err(|error| malformed(target, error))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn append_of(payloads: &[Bytes]) -> pb::AppendEntriesRequest {
        pb::AppendEntriesRequest {
            target: 2,
            entries: (0..)
                .zip(payloads)
                .map(|(index, payload)| pb::RaftEntry {
                    term: 1,
                    index,
                    kind: 1,
                    payload: payload.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_append_too_large_for_one_message_is_split_by_openraft() {
        // Shared bytes: nothing is allocated past the one buffer.
        let twenty = Bytes::from(vec![0u8; 20 << 20]);
        let message = append_of(&[twenty.clone(), twenty.clone(), twenty.clone(), twenty]);
        assert!(message.encoded_len() > RAFT_MESSAGE_BYTES_MAX);
        let RPCError::PayloadTooLarge(hint) = too_large(&message) else {
            panic!("not PayloadTooLarge");
        };
        assert_eq!(hint.entries_hint(), 3);

        let huge = Bytes::from(vec![0u8; RAFT_MESSAGE_BYTES_MAX]);
        assert!(matches!(too_large(&append_of(&[huge])), RPCError::Network(_)));
    }

    #[test]
    fn no_connection_is_unreachable_and_a_late_answer_or_a_refusal_a_network_error() {
        assert!(matches!(
            failed::<InstallSnapshotError>(Status::unavailable("connection refused")),
            RPCError::Unreachable(_)
        ));
        for status in [
            Status::deadline_exceeded("no answer"),
            Status::cancelled("Timeout expired"),
            Status::failed_precondition("another node"),
            Status::invalid_argument("vote is missing"),
            Status::internal("cannot read its log"),
            Status::permission_denied("not a node"),
        ] {
            assert!(matches!(failed::<InstallSnapshotError>(status), RPCError::Network(_)));
        }
    }
}
