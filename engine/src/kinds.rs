//! The registry of record type tags (the `type` field of every record
//! header) and the payload types behind them.
//!
//! Payloads are rkyv archives, read in place: a record's payload is 8-byte
//! aligned inside the segment map, so [`access_bench`] validates it and
//! returns a zero-copy view without copying or deserializing.
//!
//! Tags are never reused. A reader that meets a tag it does not know shows
//! the raw bytes; it never guesses.

use rkyv::{Archive, Deserialize, Serialize};

/// Opaque bytes: the engine and its tools attach no meaning.
pub const RAW: u16 = 0;
/// A record written by `farmlog bench append`: [`BenchPayload`].
pub const BENCH: u16 = 1;
/// A batch of client commands for the state machine: see
/// [`crate::state::batch`].
pub const COMMAND_BATCH: u16 = 2;
/// An entry with no payload, written by the replication layer (a new
/// leader's first entry). The state machine skips it.
pub const BLANK: u16 = 3;
/// A cluster membership change, written by the replication layer; its
/// payload format belongs to `farmlog-replica`. The state machine skips it.
pub const MEMBERSHIP: u16 = 4;
/// A Raft entry moving the cluster's command schema version (replica):
/// a little-endian u16, then six zero bytes.
pub const SCHEMA: u16 = 5;

/// The name of a known tag, for tools.
pub fn name(kind: u16) -> Option<&'static str> {
    match kind {
        RAW => Some("raw"),
        BENCH => Some("bench"),
        COMMAND_BATCH => Some("commands"),
        BLANK => Some("blank"),
        MEMBERSHIP => Some("membership"),
        SCHEMA => Some("schema"),
        _ => None,
    }
}

/// The payload of a [`BENCH`] record.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BenchPayload {
    /// Which concurrent appender wrote it.
    pub appender: u32,
    /// That appender's sequence number, from 0.
    pub sequence: u64,
    /// Filler up to the requested record size.
    pub body: Vec<u8>,
}

/// Archives a bench payload.
pub fn encode_bench(payload: &BenchPayload) -> Vec<u8> {
    rkyv::to_bytes::<rkyv::rancor::Error>(payload)
        .expect("serializing an in-memory struct into a Vec cannot fail")
        .into_vec()
}

/// A validated, zero-copy view of a bench payload, or why it is invalid.
pub fn access_bench(bytes: &[u8]) -> Result<&ArchivedBenchPayload, String> {
    rkyv::access::<ArchivedBenchPayload, rkyv::rancor::Error>(bytes).map_err(|error| error.to_string())
}

/// The archived size of a bench payload whose body is `body_len` bytes.
pub fn bench_overhead() -> usize {
    encode_bench(&BenchPayload {
        appender: 0,
        sequence: 0,
        body: Vec::new(),
    })
    .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_payload_round_trips_in_place() {
        let payload = BenchPayload {
            appender: 3,
            sequence: 99,
            body: vec![7; 40],
        };
        let bytes = encode_bench(&payload);
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        let view = access_bench(&aligned).expect("fresh archive is valid");
        assert_eq!(view.appender, 3);
        assert_eq!(view.sequence, 99);
        assert_eq!(view.body.as_slice(), &[7; 40][..]);
    }

    #[test]
    fn garbage_is_rejected_not_misread() {
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&[0xff; 24]);
        assert!(access_bench(&aligned).is_err());
    }
}
