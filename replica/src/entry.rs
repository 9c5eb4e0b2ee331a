//! Raft entries as engine records: one entry is one record, written and
//! synced once.
//!
//! | entry payload       | record type            | record payload                 |
//! |---------------------|------------------------|--------------------------------|
//! | `Normal` (commands) | `kinds::COMMAND_BATCH` | the command batch, as proposed |
//! | `Normal` (schema)   | `kinds::SCHEMA`        | u16 version, six zero bytes    |
//! | `Blank`             | `kinds::BLANK`         | empty                          |
//! | `Membership`        | `kinds::MEMBERSHIP`    | [`MembershipRecord`], rkyv     |
//!
//! The record header carries the entry's index and term. With openraft's
//! `single-term-leader` a log id is exactly (term, index), so nothing of
//! the entry lives outside the header and payload.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use farmlog_engine::{kinds, NewRecord, Record};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership};
use rkyv::{Archive, Deserialize, Serialize};

use crate::{Entry, NodeId};

/// Most voter sets in one membership (a joint configuration has two).
pub const MEMBERSHIP_CONFIGS_MAX: usize = 2;
/// Most nodes named in one membership.
pub const MEMBERSHIP_NODES_MAX: usize = 64;
/// Longest node address, in bytes.
pub const NODE_ADDRESS_BYTES_MAX: usize = 256;

/// The payload of a normal entry. A command batch read from the log
/// borrows the record's bytes in place (no copy).
#[derive(Clone, PartialEq, Eq)]
pub enum Proposal {
    /// A command batch (`engine::state::batch`): clients' commands.
    Commands(Bytes),
    /// Moves the cluster's command schema version (see [`crate::schema`]).
    Schema(u16),
}

impl std::fmt::Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Commands(bytes) => write!(f, "Commands({} bytes)", bytes.len()),
            Self::Schema(version) => write!(f, "Schema({version})"),
        }
    }
}

impl From<Vec<u8>> for Proposal {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Commands(Bytes::from(bytes))
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MembershipRecord {
    /// One voter set, or two during a joint change; each sorted.
    pub configs: Vec<Vec<NodeId>>,
    /// Every node (voters and learners) and its address, sorted by id.
    pub nodes: Vec<(NodeId, String)>,
}

/// Why a record cannot be read as an entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("record {index} has type {kind}, which is not a Raft entry")]
    Kind { index: u64, kind: u16 },
    #[error("record {index}: membership is damaged: {reason}")]
    Membership { index: u64, reason: String },
    #[error("record {index}: schema version entry is damaged: {reason}")]
    Schema { index: u64, reason: String },
}

impl MembershipRecord {
    pub fn of(membership: &Membership<NodeId, BasicNode>) -> Self {
        Self {
            configs: membership
                .get_joint_config()
                .iter()
                .map(|config| config.iter().copied().collect())
                .collect(),
            nodes: membership.nodes().map(|(id, node)| (*id, node.addr.clone())).collect(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("archiving a membership into memory cannot fail")
            .into_vec()
    }

    /// Decodes and checks a stored membership (bounds, sorted, every voter
    /// named among the nodes).
    pub fn decode(bytes: &[u8]) -> Result<Membership<NodeId, BasicNode>, String> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let record: MembershipRecord =
            rkyv::from_bytes::<MembershipRecord, rkyv::rancor::Error>(&aligned).map_err(|error| error.to_string())?;
        // No voter set at all is the empty membership of a node that has
        // not joined a cluster yet.
        if record.configs.len() > MEMBERSHIP_CONFIGS_MAX {
            return Err(format!("{} voter sets", record.configs.len()));
        }
        if record.nodes.len() > MEMBERSHIP_NODES_MAX {
            return Err(format!("{} nodes, over {MEMBERSHIP_NODES_MAX}", record.nodes.len()));
        }
        let nodes: BTreeMap<NodeId, BasicNode> = record
            .nodes
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        if nodes.len() != record.nodes.len() {
            return Err("a node is named twice".into());
        }
        if let Some((id, _)) = record
            .nodes
            .iter()
            .find(|(_, addr)| addr.len() > NODE_ADDRESS_BYTES_MAX)
        {
            return Err(format!("node {id}'s address is over {NODE_ADDRESS_BYTES_MAX} bytes"));
        }
        let configs: Vec<BTreeSet<NodeId>> = record
            .configs
            .iter()
            .map(|config| config.iter().copied().collect())
            .collect();
        if let Some(voter) = configs.iter().flatten().find(|voter| !nodes.contains_key(voter)) {
            return Err(format!("voter {voter} is not among the nodes"));
        }
        Ok(Membership::new(configs, nodes))
    }
}

/// The record an entry is stored as: its type and payload bytes.
pub fn to_record(entry: &Entry) -> (u16, Bytes) {
    match &entry.payload {
        EntryPayload::Normal(Proposal::Commands(batch)) => (kinds::COMMAND_BATCH, batch.clone()),
        EntryPayload::Normal(Proposal::Schema(version)) => (
            kinds::SCHEMA,
            Bytes::copy_from_slice(&crate::schema::encode_entry(*version)),
        ),
        EntryPayload::Blank => (kinds::BLANK, Bytes::new()),
        EntryPayload::Membership(membership) => (
            kinds::MEMBERSHIP,
            Bytes::from(MembershipRecord::of(membership).encode()),
        ),
    }
}

/// The record to append for `entry`, whose payload bytes (from
/// [`to_record`]) are `payload`.
pub fn new_record<'a>(entry: &Entry, kind: u16, payload: &'a [u8]) -> NewRecord<'a> {
    NewRecord {
        term: entry.log_id.leader_id.term,
        group: 0,
        kind,
        payload,
    }
}

struct RecordBytes(Record);

impl AsRef<[u8]> for RecordBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.payload()
    }
}

/// The entry a record holds. A command batch is not copied: the entry's
/// proposal borrows the record's mapped bytes.
pub fn from_record(record: Record) -> Result<Entry, EntryError> {
    let (term, index, kind) = (record.term(), record.index(), record.kind());
    from_parts(term, index, kind, Bytes::from_owner(RecordBytes(record)))
}

/// The entry with `term` at `index` whose record has type `kind` and
/// these payload bytes (the inverse of [`to_record`]): how an entry read
/// from the log, or received from a peer, is rebuilt. A command batch
/// keeps `payload` as it is (no copy); a schema move or a membership is
/// decoded and checked.
pub fn from_parts(term: u64, index: u64, kind: u16, payload: Bytes) -> Result<Entry, EntryError> {
    let payload = match kind {
        kinds::COMMAND_BATCH => EntryPayload::Normal(Proposal::Commands(payload)),
        kinds::SCHEMA => EntryPayload::Normal(Proposal::Schema(
            crate::schema::decode_entry(&payload).map_err(|reason| EntryError::Schema { index, reason })?,
        )),
        kinds::BLANK => EntryPayload::Blank,
        kinds::MEMBERSHIP => EntryPayload::Membership(
            MembershipRecord::decode(&payload).map_err(|reason| EntryError::Membership { index, reason })?,
        ),
        kind => return Err(EntryError::Kind { index, kind }),
    };
    Ok(Entry {
        log_id: log_id(term, index),
        payload,
    })
}

/// The log id of the entry with `term` at `index` (with
/// `single-term-leader`, a committed leader id is its term alone).
pub fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_round_trips_and_damage_is_refused() {
        let nodes: BTreeMap<NodeId, BasicNode> = (1..=3)
            .map(|id| {
                (
                    id,
                    BasicNode {
                        addr: format!("127.0.0.1:{}", 7000 + id),
                    },
                )
            })
            .collect();
        let membership = Membership::new(vec![[1, 2].into(), [1, 2, 3].into()], nodes);
        let bytes = MembershipRecord::of(&membership).encode();
        assert_eq!(MembershipRecord::decode(&bytes).unwrap(), membership);

        let orphan = MembershipRecord {
            configs: vec![vec![9]],
            nodes: vec![(1, "a".into())],
        };
        assert!(MembershipRecord::decode(&orphan.encode())
            .unwrap_err()
            .contains("voter 9"));
        assert!(MembershipRecord::decode(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn from_parts_inverts_to_record_and_refuses_what_is_not_an_entry() {
        let membership = Membership::new(vec![[1].into()], BTreeMap::from([(1, BasicNode { addr: "n1".into() })]));
        for payload in [
            EntryPayload::Normal(Proposal::Commands(Bytes::from_static(b"batch"))),
            EntryPayload::Normal(Proposal::Schema(2)),
            EntryPayload::Blank,
            EntryPayload::Membership(membership),
        ] {
            let entry = Entry {
                log_id: log_id(3, 17),
                payload,
            };
            let (kind, bytes) = to_record(&entry);
            assert_eq!(from_parts(3, 17, kind, bytes).unwrap(), entry);
        }
        assert!(matches!(
            from_parts(3, 17, u16::MAX, Bytes::new()),
            Err(EntryError::Kind {
                index: 17,
                kind: u16::MAX
            })
        ));
        assert!(matches!(
            from_parts(3, 17, kinds::SCHEMA, Bytes::from_static(b"short")),
            Err(EntryError::Schema { index: 17, .. })
        ));
        assert!(matches!(
            from_parts(3, 17, kinds::MEMBERSHIP, Bytes::from_static(b"not rkyv")),
            Err(EntryError::Membership { index: 17, .. })
        ));
    }
}
