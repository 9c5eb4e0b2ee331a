//! Raft between nodes over gRPC: the `farmlog.v1.Raft` service
//! (`proto/farmlog/v1/raft.proto`), both sides.
//!
//! What flows where: openraft on node A calls replica's `Network`, which
//! calls [`GrpcTransport`] (`client.rs`); it encodes the request
//! (`wire.rs`), naming node B's id as its `target`, and sends it to B's
//! address over a cached HTTP/2 channel. On B, [`RaftService`]
//! (`server.rs`) refuses it unless B is that id, decodes and checks it, and
//! hands it to B's `farmlog_replica::Inbox`, which applies B's own rules
//! (the tail fence) before openraft sees it. The answer, or the error as a
//! gRPC status, goes back the same way; `server.rs` tabulates which status
//! each failure is and what openraft makes of it at A.
//!
//! Beside openraft's three requests the service carries replica's own:
//! `Elect` (the last step of a leader hand-off), `Status` (schema support,
//! log end, voters, fence; answered whatever the id asked for, naming the
//! node that answers) and `ReadHistory` (the history behind a snapshot).
//!
//! Invariants:
//! - a node takes Raft requests meant for its own id only;
//! - nothing from the network reaches openraft undecoded or unchecked, and
//!   nothing from the network makes this code panic;
//! - every call is bounded by its timeout, and every message by
//!   [`RAFT_MESSAGE_BYTES_MAX`];
//! - entries travel as the engine stores them (record type and payload),
//!   so what a follower appends is byte for byte what the leader stored.
//!
//! Authentication (mutual TLS) and authorization (only the `node` role)
//! are not decided here: the layer that serves [`RaftService`] wraps it,
//! and [`GrpcTransport`] takes the client's TLS configuration.

mod client;
mod server;
pub mod wire;

pub use client::{
    GrpcTransport, PEER_CHANNELS_MAX, PEER_CONNECT_TIMEOUT, PEER_KEEP_ALIVE_INTERVAL, PEER_KEEP_ALIVE_TIMEOUT,
};
pub use server::RaftService;
pub use wire::RAFT_MESSAGE_BYTES_MAX;
