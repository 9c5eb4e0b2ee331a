//! Deterministic simulation of a farmlog cluster in one process: the
//! in-process network with faults ([`net`]), and the seeded schedules and
//! their checker ([`cluster`]).

pub mod cluster;
pub mod net;

pub use cluster::{run, SimOptions, SimReport, Violation};
