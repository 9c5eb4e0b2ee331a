//! farmlog's storage engine.
//!
//! - [`log`]: the durable, segmented, memory-mapped log that is both the
//!   Raft log and the event log (one write path).
//! - [`io`]: all file I/O behind one trait, real or simulated with faults.
//! - [`kinds`]: the registry of record type tags and their payload types.
//! - [`state`]: the deterministic state machine folded from command-batch
//!   records: topology, upstream messages, streams; snapshots.
//!
//! Architecture invariant: the engine knows nothing of Raft, tokio or
//! gRPC. It is plain synchronous Rust over files.

pub mod error;
pub mod io;
pub mod kinds;
pub mod log;
pub mod state;

pub use error::{Corruption, CorruptionKind, Error, Result};
pub use log::{
    Durability, FlushMode, Log, LogOptions, LogStats, NewRecord, Record, RecoveryReport, SegmentInfo, TailCase,
    VerifySummary,
};
