//! Raft's messages on the wire: the conversions between the protobuf
//! types of `farmlog.v1` ([`crate::pb`]) and openraft's and replica's.
//! This is the only place that knows both.
//!
//! Entries travel exactly as the engine stores them: a record type and the
//! payload bytes ([`entry::to_record`] out, [`entry::from_parts`] in), so a
//! command batch is neither re-encoded nor copied. A membership travels as
//! its log record ([`MembershipRecord`]). With openraft's
//! `single-term-leader` a committed leader id is its term alone, so a log id
//! is (term, index) and a vote is (term, voted for, committed).
//!
//! Invariants:
//! - encoding never fails, and decoding never panics: whatever a peer
//!   sends, decoding returns the value or a [`WireError`] naming the field
//!   that is wrong (a required message absent, a number over the range of
//!   the type it stands for, an entry or membership that does not decode,
//!   a string or list over its bound);
//! - every message fits in [`RAFT_MESSAGE_BYTES_MAX`]: the relations
//!   between that bound and the replica's own are checked at compile time
//!   below.

use std::collections::BTreeMap;

use farmlog_replica::entry::{self, MembershipRecord, MEMBERSHIP_NODES_MAX, NODE_ADDRESS_BYTES_MAX};
use farmlog_replica::history::{HistoryChunk, HistoryRecord, HISTORY_CHUNK_BYTES_MAX, HISTORY_CHUNK_RECORDS_MAX};
use farmlog_replica::node::SNAPSHOT_CHUNK_BYTES;
use farmlog_replica::{Entry, NodeId, PeerStatus, SchemaSupport, TypeConfig};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, LeaderId, LogId, SnapshotMeta, StoredMembership, Vote};

use crate::pb;

/// Most bytes in one Raft message, request or response, either way: the
/// gRPC server's and client's decoding and encoding limit. Room for a
/// snapshot chunk, a chunk of history, or any single entry the engine can
/// store, with [`MESSAGE_FRAMING_BYTES_MAX`] to spare; an AppendEntries of
/// many entries that would not fit is split by openraft (the client
/// answers it `PayloadTooLarge` with the number of entries that fit).
pub const RAFT_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Room kept in every message for what is not payload bytes: the fields
/// around one entry, snapshot chunk or history record, and the message's
/// own header fields.
pub const MESSAGE_FRAMING_BYTES_MAX: usize = 64 << 10;

/// Most bytes of protobuf framing around one record of history (index,
/// term, group, kind, crc, and the tags and lengths).
pub const HISTORY_RECORD_FRAMING_BYTES_MAX: usize = 64;

/// Longest snapshot id accepted, in bytes (replica names a snapshot by the
/// log id it ends at, a few dozen bytes).
pub const SNAPSHOT_ID_BYTES_MAX: usize = 256;

// A snapshot chunk fits in one message.
const _: () = assert!(SNAPSHOT_CHUNK_BYTES as usize + MESSAGE_FRAMING_BYTES_MAX <= RAFT_MESSAGE_BYTES_MAX);
// Any one entry the engine can store fits in one AppendEntries, so an
// AppendEntries split down to a single entry always goes through.
const _: () = assert!(farmlog_engine::log::PAYLOAD_BYTES_MAX + MESSAGE_FRAMING_BYTES_MAX <= RAFT_MESSAGE_BYTES_MAX);
// A chunk of history stops at the first record that reaches its byte
// bound, so it holds at most that bound plus one more record.
const _: () = assert!(
    HISTORY_CHUNK_BYTES_MAX as usize
        + farmlog_engine::log::PAYLOAD_BYTES_MAX
        + HISTORY_CHUNK_RECORDS_MAX * HISTORY_RECORD_FRAMING_BYTES_MAX
        + MESSAGE_FRAMING_BYTES_MAX
        <= RAFT_MESSAGE_BYTES_MAX
);
// A status names every voter of the largest membership.
const _: () = assert!(
    MEMBERSHIP_NODES_MAX * (NODE_ADDRESS_BYTES_MAX + HISTORY_RECORD_FRAMING_BYTES_MAX) + MESSAGE_FRAMING_BYTES_MAX
        <= RAFT_MESSAGE_BYTES_MAX
);

/// Why a message from the wire cannot be decoded. Each names the field,
/// with its path in the message (`entries[3].kind`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A message the request or response must carry is absent.
    #[error("{field} is missing")]
    Missing { field: String },
    /// A number over the range of the type it stands for.
    #[error("{field} is {value}, over {max}")]
    OutOfRange { field: String, value: u64, max: u64 },
    /// A string or list over its bound.
    #[error("{field} holds {len}, over {max}")]
    TooLong { field: String, len: usize, max: usize },
    /// An entry whose record type and payload are not a Raft entry
    /// (see [`entry::from_parts`]).
    #[error("{field} is not a Raft entry: {reason}")]
    Entry { field: String, reason: String },
    /// A membership record that does not decode or does not check (see
    /// [`MembershipRecord::decode`]).
    #[error("{field} is not a valid membership: {reason}")]
    Membership { field: String, reason: String },
    /// The same node named twice.
    #[error("{field} names node {node} twice")]
    Duplicate { field: String, node: NodeId },
}

impl WireError {
    fn missing(field: &str) -> Self {
        Self::Missing { field: field.into() }
    }
}

/// `field.inner`, for the path of a nested field in an error.
fn path(field: &str, inner: &str) -> String {
    format!("{field}.{inner}")
}

/// `value` as a u16, or an error naming `field`.
fn to_u16(field: &str, value: u32) -> Result<u16, WireError> {
    u16::try_from(value).map_err(|_| WireError::OutOfRange {
        field: field.into(),
        value: value.into(),
        max: u16::MAX.into(),
    })
}

/// Checks that a string or list of `len` is within `max`.
fn within(field: &str, len: usize, max: usize) -> Result<(), WireError> {
    match len <= max {
        true => Ok(()),
        false => Err(WireError::TooLong {
            field: field.into(),
            len,
            max,
        }),
    }
}

/// A log id on the wire.
pub fn encode_log_id(log_id: &LogId<NodeId>) -> pb::RaftLogId {
    pb::RaftLogId {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

/// A log id from the wire; every (term, index) is one.
pub fn decode_log_id(log_id: pb::RaftLogId) -> LogId<NodeId> {
    entry::log_id(log_id.term, log_id.index)
}

/// A vote on the wire.
pub fn encode_vote(vote: &Vote<NodeId>) -> pb::RaftVote {
    pb::RaftVote {
        term: vote.leader_id.term,
        voted_for: vote.leader_id.voted_for,
        committed: vote.committed,
    }
}

/// The vote in `field`, which must be present.
pub fn decode_vote(field: &str, vote: Option<pb::RaftVote>) -> Result<Vote<NodeId>, WireError> {
    let vote = vote.ok_or_else(|| WireError::missing(field))?;
    Ok(Vote {
        leader_id: LeaderId {
            term: vote.term,
            voted_for: vote.voted_for,
        },
        committed: vote.committed,
    })
}

/// An entry on the wire, as the engine stores it.
pub fn encode_entry(entry: &Entry) -> pb::RaftEntry {
    let (kind, payload) = entry::to_record(entry);
    pb::RaftEntry {
        term: entry.log_id.leader_id.term,
        index: entry.log_id.index,
        kind: kind.into(),
        payload,
    }
}

/// The entry in `field`; a command batch keeps the received bytes.
pub fn decode_entry(field: &str, entry: pb::RaftEntry) -> Result<Entry, WireError> {
    let kind = to_u16(&path(field, "kind"), entry.kind)?;
    entry::from_parts(entry.term, entry.index, kind, entry.payload).map_err(|error| WireError::Entry {
        field: field.into(),
        reason: error.to_string(),
    })
}

/// An AppendEntries request for node `target`, on the wire.
pub fn encode_append_entries(target: NodeId, request: &AppendEntriesRequest<TypeConfig>) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        target,
        vote: Some(encode_vote(&request.vote)),
        prev_log_id: request.prev_log_id.as_ref().map(encode_log_id),
        entries: request.entries.iter().map(encode_entry).collect(),
        leader_commit: request.leader_commit.as_ref().map(encode_log_id),
    }
}

/// An AppendEntries request from the wire (its `target` is the caller's
/// to check). Whether its entries continue `prev_log_id` is not checked
/// here: see `farmlog_replica::transport::check_append_entries`.
pub fn decode_append_entries(request: pb::AppendEntriesRequest) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    let entries = request
        .entries
        .into_iter()
        .enumerate()
        .map(|(at, entry)| decode_entry(&format!("entries[{at}]"), entry))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppendEntriesRequest {
        vote: decode_vote("vote", request.vote)?,
        prev_log_id: request.prev_log_id.map(decode_log_id),
        entries,
        leader_commit: request.leader_commit.map(decode_log_id),
    })
}

/// An AppendEntries response on the wire.
pub fn encode_append_response(response: &AppendEntriesResponse<NodeId>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as Wire;
    let result = match response {
        AppendEntriesResponse::Success => Wire::Success(pb::AppendSuccess {}),
        AppendEntriesResponse::PartialSuccess(matching) => Wire::PartialSuccess(pb::AppendPartialSuccess {
            matching: matching.as_ref().map(encode_log_id),
        }),
        AppendEntriesResponse::Conflict => Wire::Conflict(pb::AppendConflict {}),
        AppendEntriesResponse::HigherVote(vote) => Wire::HigherVote(encode_vote(vote)),
    };
    pb::AppendEntriesResponse { result: Some(result) }
}

/// An AppendEntries response from the wire.
pub fn decode_append_response(response: pb::AppendEntriesResponse) -> Result<AppendEntriesResponse<NodeId>, WireError> {
    use pb::append_entries_response::Result as Wire;
    Ok(match response.result.ok_or_else(|| WireError::missing("result"))? {
        Wire::Success(pb::AppendSuccess {}) => AppendEntriesResponse::Success,
        Wire::PartialSuccess(partial) => AppendEntriesResponse::PartialSuccess(partial.matching.map(decode_log_id)),
        Wire::Conflict(pb::AppendConflict {}) => AppendEntriesResponse::Conflict,
        Wire::HigherVote(vote) => AppendEntriesResponse::HigherVote(decode_vote("result.higher_vote", Some(vote))?),
    })
}

/// A vote request for node `target`, on the wire.
pub fn encode_vote_request(target: NodeId, request: &VoteRequest<NodeId>) -> pb::VoteRequest {
    pb::VoteRequest {
        target,
        vote: Some(encode_vote(&request.vote)),
        last_log_id: request.last_log_id.as_ref().map(encode_log_id),
    }
}

/// A vote request from the wire (its `target` is the caller's to check).
pub fn decode_vote_request(request: pb::VoteRequest) -> Result<VoteRequest<NodeId>, WireError> {
    Ok(VoteRequest {
        vote: decode_vote("vote", request.vote)?,
        last_log_id: request.last_log_id.map(decode_log_id),
    })
}

/// A vote response on the wire.
pub fn encode_vote_response(response: &VoteResponse<NodeId>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(encode_vote(&response.vote)),
        vote_granted: response.vote_granted,
        last_log_id: response.last_log_id.as_ref().map(encode_log_id),
    }
}

/// A vote response from the wire.
pub fn decode_vote_response(response: pb::VoteResponse) -> Result<VoteResponse<NodeId>, WireError> {
    Ok(VoteResponse {
        vote: decode_vote("vote", response.vote)?,
        vote_granted: response.vote_granted,
        last_log_id: response.last_log_id.map(decode_log_id),
    })
}

/// A membership and the log id of its entry, on the wire.
pub fn encode_membership(membership: &StoredMembership<NodeId, BasicNode>) -> pb::RaftMembership {
    pb::RaftMembership {
        log_id: membership.log_id().as_ref().map(encode_log_id),
        record: MembershipRecord::of(membership.membership()).encode().into(),
    }
}

/// The membership in `field`, which must be present and check.
pub fn decode_membership(
    field: &str,
    membership: Option<pb::RaftMembership>,
) -> Result<StoredMembership<NodeId, BasicNode>, WireError> {
    let membership = membership.ok_or_else(|| WireError::missing(field))?;
    let decoded = MembershipRecord::decode(&membership.record).map_err(|reason| WireError::Membership {
        field: path(field, "record"),
        reason,
    })?;
    Ok(StoredMembership::new(membership.log_id.map(decode_log_id), decoded))
}

/// A snapshot's metadata on the wire.
pub fn encode_snapshot_meta(meta: &SnapshotMeta<NodeId, BasicNode>) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(encode_log_id),
        last_membership: Some(encode_membership(&meta.last_membership)),
        snapshot_id: meta.snapshot_id.clone(),
    }
}

/// The snapshot metadata in `field`, which must be present.
pub fn decode_snapshot_meta(
    field: &str,
    meta: Option<pb::SnapshotMeta>,
) -> Result<SnapshotMeta<NodeId, BasicNode>, WireError> {
    let meta = meta.ok_or_else(|| WireError::missing(field))?;
    within(
        &path(field, "snapshot_id"),
        meta.snapshot_id.len(),
        SNAPSHOT_ID_BYTES_MAX,
    )?;
    Ok(SnapshotMeta {
        last_log_id: meta.last_log_id.map(decode_log_id),
        last_membership: decode_membership(&path(field, "last_membership"), meta.last_membership)?,
        snapshot_id: meta.snapshot_id,
    })
}

/// One snapshot chunk for node `target`, on the wire; the chunk's bytes
/// move into the message uncopied.
pub fn encode_install_snapshot(
    target: NodeId,
    request: InstallSnapshotRequest<TypeConfig>,
) -> pb::InstallSnapshotRequest {
    pb::InstallSnapshotRequest {
        target,
        vote: Some(encode_vote(&request.vote)),
        meta: Some(encode_snapshot_meta(&request.meta)),
        offset: request.offset,
        data: request.data.into(),
        done: request.done,
    }
}

/// One snapshot chunk from the wire (its `target` is the caller's to
/// check).
pub fn decode_install_snapshot(
    request: pb::InstallSnapshotRequest,
) -> Result<InstallSnapshotRequest<TypeConfig>, WireError> {
    Ok(InstallSnapshotRequest {
        vote: decode_vote("vote", request.vote)?,
        meta: decode_snapshot_meta("meta", request.meta)?,
        offset: request.offset,
        // openraft takes the chunk as a Vec: the one copy of it.
        data: request.data.to_vec(),
        done: request.done,
    })
}

/// A snapshot chunk's response on the wire.
pub fn encode_install_response(response: &InstallSnapshotResponse<NodeId>) -> pb::InstallSnapshotResponse {
    pb::InstallSnapshotResponse {
        vote: Some(encode_vote(&response.vote)),
    }
}

/// A snapshot chunk's response from the wire.
pub fn decode_install_response(
    response: pb::InstallSnapshotResponse,
) -> Result<InstallSnapshotResponse<NodeId>, WireError> {
    Ok(InstallSnapshotResponse {
        vote: decode_vote("vote", response.vote)?,
    })
}

/// What a node says of itself, on the wire.
pub fn encode_status(status: &PeerStatus) -> pb::PeerStatusResponse {
    pb::PeerStatusResponse {
        id: status.id,
        replaces: status.replaces,
        schema_min: status.schema.min.into(),
        schema_max: status.schema.max.into(),
        last_log_id: status.last_log_id.as_ref().map(encode_log_id),
        voters: status
            .voters
            .iter()
            .map(|(&id, node)| pb::PeerNode {
                id,
                address: node.addr.clone(),
            })
            .collect(),
        fenced: status.fenced,
    }
}

/// What a node says of itself, from the wire: at most
/// [`MEMBERSHIP_NODES_MAX`] voters, each named once, with addresses of at
/// most [`NODE_ADDRESS_BYTES_MAX`] bytes (the bounds of a membership).
pub fn decode_status(status: pb::PeerStatusResponse) -> Result<PeerStatus, WireError> {
    within("voters", status.voters.len(), MEMBERSHIP_NODES_MAX)?;
    let mut voters = BTreeMap::new();
    for (at, voter) in status.voters.into_iter().enumerate() {
        within(
            &format!("voters[{at}].address"),
            voter.address.len(),
            NODE_ADDRESS_BYTES_MAX,
        )?;
        if voters.insert(voter.id, BasicNode { addr: voter.address }).is_some() {
            return Err(WireError::Duplicate {
                field: "voters".into(),
                node: voter.id,
            });
        }
    }
    Ok(PeerStatus {
        id: status.id,
        replaces: status.replaces,
        schema: SchemaSupport {
            min: to_u16("schema_min", status.schema_min)?,
            max: to_u16("schema_max", status.schema_max)?,
        },
        last_log_id: status.last_log_id.map(decode_log_id),
        voters,
        fenced: status.fenced,
    })
}

/// A chunk of history on the wire.
pub fn encode_history(chunk: HistoryChunk) -> pb::ReadHistoryResponse {
    pb::ReadHistoryResponse {
        first_retained: chunk.first_retained,
        records: chunk
            .records
            .into_iter()
            .map(|record| pb::HistoryRecord {
                index: record.index,
                term: record.term,
                group: record.group,
                kind: record.kind.into(),
                crc: record.crc,
                payload: record.payload,
            })
            .collect(),
    }
}

/// A chunk of history from the wire. Only the record types are checked
/// here; the receiver verifies the records themselves (continuity, crc,
/// anchor: see `farmlog_replica::history`).
pub fn decode_history(response: pb::ReadHistoryResponse) -> Result<HistoryChunk, WireError> {
    let records = response
        .records
        .into_iter()
        .enumerate()
        .map(|(at, record)| {
            Ok(HistoryRecord {
                index: record.index,
                term: record.term,
                group: record.group,
                kind: to_u16(&format!("records[{at}].kind"), record.kind)?,
                crc: record.crc,
                payload: record.payload,
            })
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    Ok(HistoryChunk {
        first_retained: response.first_retained,
        records,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use farmlog_engine::kinds;
    use farmlog_replica::Proposal;
    use openraft::{EntryPayload, Membership};

    use super::*;

    fn membership() -> Membership<NodeId, BasicNode> {
        let nodes = (1..=3).map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))));
        Membership::new(vec![[1, 2, 3].into()], nodes.collect::<BTreeMap<_, _>>())
    }

    fn entries() -> Vec<Entry> {
        let payloads = [
            EntryPayload::Blank,
            EntryPayload::Membership(membership()),
            EntryPayload::Normal(Proposal::Commands(Bytes::from_static(b"a batch"))),
            EntryPayload::Normal(Proposal::Schema(2)),
        ];
        (5..)
            .zip(payloads)
            .map(|(index, payload)| Entry {
                log_id: entry::log_id(3, index),
                payload,
            })
            .collect()
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(entry::log_id(2, 4)),
            entries: entries(),
            leader_commit: Some(entry::log_id(3, 6)),
        };
        let wire = encode_append_entries(9, &append);
        assert_eq!(wire.target, 9);
        let back = decode_append_entries(wire).unwrap();
        assert_eq!(
            (back.vote, back.prev_log_id, back.entries, back.leader_commit),
            (append.vote, append.prev_log_id, append.entries, append.leader_commit)
        );
        for response in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::PartialSuccess(Some(entry::log_id(1, 2))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(4, 2)),
        ] {
            assert_eq!(
                decode_append_response(encode_append_response(&response)).unwrap(),
                response
            );
        }
        let vote = VoteRequest::new(Vote::new(4, 2), Some(entry::log_id(3, 8)));
        assert_eq!(decode_vote_request(encode_vote_request(1, &vote)).unwrap(), vote);
        let granted = VoteResponse::new(Vote::new(4, 2), None, true);
        assert_eq!(decode_vote_response(encode_vote_response(&granted)).unwrap(), granted);

        let meta = SnapshotMeta {
            last_log_id: Some(entry::log_id(3, 40)),
            last_membership: StoredMembership::new(Some(entry::log_id(1, 0)), membership()),
            snapshot_id: "3-40".into(),
        };
        let chunk = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: meta.clone(),
            offset: 4096,
            data: b"snapshot bytes".to_vec(),
            done: true,
        };
        let back = decode_install_snapshot(encode_install_snapshot(2, chunk)).unwrap();
        assert_eq!(
            (back.vote, back.meta, back.offset, back.data.as_slice(), back.done),
            (Vote::new_committed(3, 1), meta, 4096, &b"snapshot bytes"[..], true)
        );
    }

    #[test]
    fn status_and_history_round_trip() {
        let status = PeerStatus {
            id: 4,
            replaces: Some(2),
            schema: SchemaSupport { min: 1, max: 3 },
            last_log_id: Some(entry::log_id(5, 77)),
            voters: membership().nodes().map(|(&id, node)| (id, node.clone())).collect(),
            fenced: true,
        };
        assert_eq!(decode_status(encode_status(&status)).unwrap(), status);
        let chunk = HistoryChunk {
            first_retained: 3,
            records: vec![HistoryRecord {
                index: 3,
                term: 1,
                group: 0,
                kind: kinds::BLANK,
                crc: 0xdead_beef,
                payload: Bytes::new(),
            }],
        };
        assert_eq!(decode_history(encode_history(chunk.clone())).unwrap(), chunk);
    }

    #[test]
    fn bad_input_is_an_error_naming_the_field() {
        let mut request = encode_append_entries(
            1,
            &AppendEntriesRequest {
                vote: Vote::new_committed(3, 1),
                prev_log_id: Some(entry::log_id(2, 4)),
                entries: entries(),
                leader_commit: None,
            },
        );
        request.entries[1].kind = 70_000;
        let error = decode_append_entries(request.clone()).unwrap_err();
        assert_eq!(error.to_string(), "entries[1].kind is 70000, over 65535");
        request.entries[1].kind = 9999;
        let error = decode_append_entries(request.clone()).unwrap_err();
        assert!(
            error.to_string().starts_with("entries[1] is not a Raft entry"),
            "{error}"
        );
        request.entries[1].kind = kinds::MEMBERSHIP.into();
        request.entries[1].payload = Bytes::from_static(b"garbage");
        assert!(matches!(
            decode_append_entries(request.clone()),
            Err(WireError::Entry { .. })
        ));
        request.entries.clear();
        request.vote = None;
        assert_eq!(
            decode_append_entries(request).unwrap_err().to_string(),
            "vote is missing"
        );

        let missing_membership = pb::InstallSnapshotRequest {
            vote: Some(encode_vote(&Vote::new(1, 1))),
            meta: Some(pb::SnapshotMeta::default()),
            ..Default::default()
        };
        assert_eq!(
            decode_install_snapshot(missing_membership).unwrap_err().to_string(),
            "meta.last_membership is missing"
        );
        let bad_membership = pb::InstallSnapshotRequest {
            vote: Some(encode_vote(&Vote::new(1, 1))),
            meta: Some(pb::SnapshotMeta {
                last_membership: Some(pb::RaftMembership {
                    log_id: None,
                    record: Bytes::from_static(b"not a membership"),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            decode_install_snapshot(bad_membership),
            Err(WireError::Membership { field, .. }) if field == "meta.last_membership.record"
        ));
        assert!(matches!(
            decode_append_response(pb::AppendEntriesResponse { result: None }),
            Err(WireError::Missing { field }) if field == "result"
        ));
        let twice = pb::PeerStatusResponse {
            voters: vec![pb::PeerNode::default(), pb::PeerNode::default()],
            ..Default::default()
        };
        assert!(matches!(
            decode_status(twice),
            Err(WireError::Duplicate { node: 0, .. })
        ));
        let schema = pb::PeerStatusResponse {
            schema_max: 1 << 16,
            ..Default::default()
        };
        assert_eq!(
            decode_status(schema).unwrap_err().to_string(),
            "schema_max is 65536, over 65535"
        );
    }
}
