//! The tonic services, one per family. Each converts between `farmlog.v1`
//! messages and engine commands and views, and goes through
//! [`crate::context::Context`] for everything else.

pub mod admin;
pub mod messages;
pub mod spools;
pub mod streams;
pub mod throttle;
pub mod topology;
pub mod transfers;
