//! Command schema versions across a cluster: rolling upgrades.
//!
//! Every command carries the schema version it was written in
//! (`Command::schema_version`), and a build applies the versions of its
//! [`SchemaSupport`]. The cluster's version is replicated state: it starts
//! at [`CLUSTER_SCHEMA_INITIAL`] and moves only forward, by a `SCHEMA`
//! entry in the log, so every node moves at the same index.
//!
//! The rules that make a rolling upgrade safe:
//!
//! - The leader proposes a higher version only when every member (voters
//!   and learners) reports that it supports it ([`crate::Node::upgrade_schema`]
//!   asks each one over the transport). So no follower ever meets an entry
//!   it cannot apply, and none stops mid-upgrade.
//! - A command of a version above the cluster's is refused before it
//!   enters the log ([`crate::ProposeError::SchemaNotEnabled`]). Since the
//!   cluster's version only grows, it is still enabled when the command is
//!   applied.
//! - A node joins only if it supports the cluster's current version.
//! - A node that is downgraded below the cluster's version meets an entry
//!   it cannot apply and stops with an error that says so; it never
//!   guesses a layout.
//!
//! The order of an upgrade is therefore: upgrade every node's binary (one
//! at a time, with a hand-off for the leader), then move the cluster's
//! version, then let clients write the new version.

use farmlog_engine::state::command::SCHEMA_VERSION;

/// The version a new cluster starts at.
pub const CLUSTER_SCHEMA_INITIAL: u16 = 1;

/// The command schema versions a node applies: `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaSupport {
    pub min: u16,
    pub max: u16,
}

impl SchemaSupport {
    /// What this build applies.
    pub const BUILD: Self = Self {
        min: CLUSTER_SCHEMA_INITIAL,
        max: SCHEMA_VERSION,
    };

    pub fn contains(&self, version: u16) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

impl Default for SchemaSupport {
    fn default() -> Self {
        Self::BUILD
    }
}

impl std::fmt::Display for SchemaSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// Why the cluster's schema version did not move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("this node is not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<crate::NodeId> },
    #[error("the cluster is at schema version {current}; it never moves back to {asked}")]
    Backwards { current: u16, asked: u16 },
    #[error("node {node} supports schema versions {support}, not {asked}: upgrade it first")]
    Unsupported {
        node: crate::NodeId,
        support: SchemaSupport,
        asked: u16,
    },
    #[error("node {node} did not say which schema versions it supports: {reason}")]
    Unreachable { node: crate::NodeId, reason: String },
    #[error("the change was not committed: {reason}")]
    NotCommitted { reason: String },
}

/// Why an entry moving the schema version cannot be applied here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the cluster moved to command schema version {version}, which this node does not support ({support}): upgrade it"
)]
pub struct SchemaUnsupported {
    pub version: u16,
    pub support: SchemaSupport,
}

/// Bytes of a `SCHEMA` entry's payload.
pub const SCHEMA_ENTRY_BYTES: usize = 8;

pub fn encode_entry(version: u16) -> [u8; SCHEMA_ENTRY_BYTES] {
    let mut bytes = [0u8; SCHEMA_ENTRY_BYTES];
    bytes[..2].copy_from_slice(&version.to_le_bytes());
    bytes
}

/// Reads a `SCHEMA` entry's payload; anything but a nonzero version and
/// zero padding is damage.
pub fn decode_entry(bytes: &[u8]) -> Result<u16, String> {
    if bytes.len() != SCHEMA_ENTRY_BYTES {
        return Err(format!("{} bytes, not {SCHEMA_ENTRY_BYTES}", bytes.len()));
    }
    if bytes[2..].iter().any(|&byte| byte != 0) {
        return Err("nonzero padding".into());
    }
    match u16::from_le_bytes([bytes[0], bytes[1]]) {
        0 => Err("version 0".into()),
        version => Ok(version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_damage_is_refused() {
        assert_eq!(decode_entry(&encode_entry(7)), Ok(7));
        assert!(decode_entry(&encode_entry(0)).is_err());
        let mut padded = encode_entry(2);
        padded[5] = 1;
        assert!(decode_entry(&padded).is_err());
        assert!(decode_entry(&[2, 0]).is_err());
    }

    #[test]
    fn this_build_supports_the_version_it_writes() {
        assert!(SchemaSupport::BUILD.contains(SCHEMA_VERSION));
        assert!(SchemaSupport::BUILD.contains(CLUSTER_SCHEMA_INITIAL));
        assert!(!SchemaSupport::BUILD.contains(SCHEMA_VERSION + 1));
    }
}
