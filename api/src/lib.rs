//! farmlog's gRPC service.
//!
//! - [`pb`]: the `farmlog.v1` protobuf contract (`proto/farmlog/v1/`),
//!   compiled at build time without a system `protoc`.
//! - [`auth`]: principals from client certificates and the authorization
//!   table; [`context`]: the steps every call goes through (authenticate,
//!   authorize, propose or read); [`status`]: outcomes as gRPC statuses;
//!   [`quota`]: per-tenant limits.
//! - [`services`]: one tonic service per family, plus Admin and Sessions.
//!
//! Architecture invariant: only this crate (and the tools above it) knows
//! protobuf, gRPC and TLS; engine and replica types are converted at the
//! service boundary, in one place per family.

pub mod auth;
pub mod certs;
pub mod client;
pub mod context;
pub mod metrics;
pub mod quota;
pub mod raft;
pub mod server;
pub mod services;
pub mod status;
pub mod ticker;
pub mod tls;

/// The generated `farmlog.v1` messages, clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("farmlog.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("farmlog_descriptor");
}
