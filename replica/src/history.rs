//! The history behind a snapshot. Projections hold log positions, so
//! every replica must hold the whole retained history, not only the
//! state. A node brought up by a snapshot ahead of its log empties its log
//! (it continues after the snapshot), so it fetches the history behind
//! the snapshot from a peer, in the background.
//!
//! ## On disk
//!
//! - `BACKFILL` (beside `RAFT`): the backfill still owed. It holds the
//!   index the history must reach (one past the snapshot's last entry)
//!   and that entry's term, the *anchor*. It is written, durably, before
//!   the log is emptied, and removed once the history is complete.
//! - `history/`: an engine log of the fetched records. They keep their
//!   index, term, group, kind and payload, so each record's crc is the
//!   source's.
//!
//! ## Verification
//!
//! Each chunk must continue the records held (consecutive indexes, terms
//! never decreasing). Each record is appended, read back, and its crc
//! (over header and payload) compared with the source's. The last record
//! must carry the anchor's term: by Raft's log matching, a log that agrees
//! with the snapshot at its last entry agrees on everything before it, so
//! the history is the committed one. A chunk that fails any check is
//! dropped, with everything fetched since the last good one if the anchor
//! fails, and another peer is tried.
//!
//! ## Reads
//!
//! [`History::chunk`] serves what this node holds: the fetched records,
//! then its own log. `Node::read_history` answers a read of one record
//! here when it can, and otherwise forwards it to a peer that has it.
//!
//! The retention policy drops fetched history as it drops the node's own
//! (see `log_store.rs`): the two are one history to it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use farmlog_engine::io::Storage;
use farmlog_engine::{FlushMode, Log, LogOptions, NewRecord, Record};
use openraft::{BasicNode, ServerState};

use tokio::sync::Notify;

use crate::log_store::LogStore;
use crate::meta::replace_file;
use crate::node::PeerCall;
use crate::{NodeId, Raft};

/// Where the fetched history lives, under the node's directory.
pub const HISTORY_DIR: &str = "history";
/// The backfill still owed.
pub const BACKFILL_NAME: &str = "BACKFILL";
/// Most bytes of payload in one chunk of history.
pub const HISTORY_CHUNK_BYTES_MAX: u64 = 4 << 20;
/// Most records in one chunk of history.
pub const HISTORY_CHUNK_RECORDS_MAX: usize = 4096;
/// How long a peer may take to answer a history read.
pub const HISTORY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before the backfill tries again after a failed chunk.
pub const BACKFILL_RETRY: Duration = Duration::from_millis(500);

const BACKFILL_MAGIC: [u8; 4] = *b"FLBF";
const BACKFILL_VERSION: u16 = 1;
const BACKFILL_BYTES: usize = 32;

/// One record of history, as it is on the disk of the node that sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    pub index: u64,
    pub term: u64,
    pub group: u32,
    pub kind: u16,
    /// The record's crc on the sending node (header and payload).
    pub crc: u32,
    pub payload: Bytes,
}

impl HistoryRecord {
    fn of(record: &Record) -> Self {
        Self {
            index: record.index(),
            term: record.term(),
            group: record.group(),
            kind: record.kind(),
            crc: record.crc(),
            payload: Bytes::copy_from_slice(record.payload()),
        }
    }
}

/// Consecutive records from `records[0].index`, and where the sender's
/// retained history starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryChunk {
    pub first_retained: u64,
    pub records: Vec<HistoryRecord>,
}

/// Why history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("index {index} is not committed here yet (applied up to {applied:?})")]
    NotCommitted { index: u64, applied: Option<u64> },
    #[error("index {index} is not retained here (history from {first_retained})")]
    NotRetained { index: u64, first_retained: u64 },
    #[error("history before {first_retained} is still being fetched here")]
    Incomplete { first_retained: u64 },
    #[error("no peer could serve index {index}: {reason}")]
    Unavailable { index: u64, reason: String },
    #[error("a bad chunk of history from node {source_node}: {reason}")]
    BadChunk { source_node: NodeId, reason: String },
    #[error(transparent)]
    Engine(#[from] farmlog_engine::Error),
    #[error("the backfill marker: {0}")]
    Marker(#[from] std::io::Error),
}

/// The backfill still owed: history up to `end` (exclusive), whose last
/// entry has term `anchor_term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackfillTarget {
    pub end: u64,
    pub anchor_term: u64,
}

impl BackfillTarget {
    fn encode(&self) -> [u8; BACKFILL_BYTES] {
        let mut bytes = [0u8; BACKFILL_BYTES];
        bytes[0..4].copy_from_slice(&BACKFILL_MAGIC);
        bytes[4..6].copy_from_slice(&BACKFILL_VERSION.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.end.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.anchor_term.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let bytes: &[u8; BACKFILL_BYTES] = bytes.try_into().map_err(|_| "not 32 bytes".to_string())?;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        if bytes[0..4] != BACKFILL_MAGIC {
            return Err("bad magic".into());
        }
        if u32::from_le_bytes(bytes[28..32].try_into().expect("four bytes")) != crc32fast::hash(&bytes[..28]) {
            return Err("crc mismatch".into());
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != BACKFILL_VERSION {
            return Err(format!("format version {version}, this build reads {BACKFILL_VERSION}"));
        }
        Ok(Self {
            end: u64_at(8),
            anchor_term: u64_at(16),
        })
    }
}

/// Records that a backfill up to `target` is owed.
///
/// On disk when it returns `Ok`: `dir/BACKFILL` holding `target`, durable.
pub(crate) fn mark_backfill(storage: &dyn Storage, dir: &Path, target: BackfillTarget) -> std::io::Result<()> {
    replace_file(storage, dir, BACKFILL_NAME, &target.encode())
}

/// The backfill owed, if any. A damaged marker is an error: the node
/// cannot tell how much history it lacks.
pub fn backfill_owed(storage: &dyn Storage, dir: &Path) -> std::io::Result<Option<BackfillTarget>> {
    let path = dir.join(BACKFILL_NAME);
    let file = match storage.open(&path, farmlog_engine::io::OpenMode::Read) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut bytes = [0u8; BACKFILL_BYTES];
    file.read_exact_at(&mut bytes, 0)?;
    BackfillTarget::decode(&bytes)
        .map(Some)
        .map_err(|reason| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {reason}", path.display())))
}

/// A node's history: the fetched records, then its own log.
pub struct History {
    storage: Arc<dyn Storage>,
    dir: std::path::PathBuf,
    main: Arc<Log>,
    options: LogOptions,
    /// Shared with the log store, whose retention policy drops from it.
    fetched: FetchedLog,
}

/// The log of fetched history, once there is one.
pub(crate) type FetchedLog = Arc<Mutex<Option<Arc<Log>>>>;

impl History {
    /// Opens the fetched history under `dir/history`, if there is one.
    ///
    /// On disk when it returns `Ok`: the fetched log recovered (see
    /// `Log::open_with`).
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        log_store: &LogStore,
        options: LogOptions,
    ) -> Result<Self, HistoryError> {
        let options = LogOptions {
            flush: FlushMode::Manual,
            ..options
        };
        let path = dir.join(HISTORY_DIR);
        let fetched = match storage.list(&path) {
            Ok(_) => Some(Arc::new(Log::open_with(storage.clone(), &path, options.clone())?)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(HistoryError::Marker(error)),
        };
        let slot = log_store.fetched_slot();
        *slot.lock().unwrap_or_else(|poison| poison.into_inner()) = fetched;
        Ok(Self {
            storage,
            dir: dir.to_path_buf(),
            main: log_store.log().clone(),
            options,
            fetched: slot,
        })
    }

    fn fetched(&self) -> Option<Arc<Log>> {
        self.fetched.lock().unwrap_or_else(|poison| poison.into_inner()).clone()
    }

    /// Where the history held here starts.
    pub fn first_retained(&self) -> u64 {
        match self.fetched() {
            Some(log) if log.next_index() > log.first_index() => log.first_index(),
            _ => self.main.first_index(),
        }
    }

    /// The backfill still owed, if any.
    pub fn owed(&self) -> std::io::Result<Option<BackfillTarget>> {
        backfill_owed(self.storage.as_ref(), &self.dir)
    }

    /// The record at `index`, if held here.
    fn read(&self, index: u64) -> Option<farmlog_engine::Result<Record>> {
        if index >= self.main.first_index() && index < self.main.next_index() {
            return Some(self.main.read(index));
        }
        let fetched = self.fetched()?;
        (index >= fetched.first_index() && index < fetched.next_index()).then(|| fetched.read(index))
    }

    /// Records from `from` (or from where the history held here starts,
    /// if later) up to `to` (exclusive), as far as held without a gap, at
    /// most [`HISTORY_CHUNK_RECORDS_MAX`] records and about
    /// [`HISTORY_CHUNK_BYTES_MAX`] bytes. The caller bounds `to` by what is
    /// committed. A node still owed history behind a snapshot does not
    /// answer for what lies before its own: it cannot say what is retained
    /// there.
    pub fn chunk(&self, from: u64, to: u64) -> Result<HistoryChunk, HistoryError> {
        let first_retained = self.first_retained();
        if from < first_retained && self.owed()?.is_some() {
            return Err(HistoryError::Incomplete { first_retained });
        }
        let mut chunk = HistoryChunk {
            first_retained,
            records: Vec::new(),
        };
        let mut bytes = 0u64;
        for index in from.max(first_retained)..to {
            let Some(record) = self.read(index) else { break };
            let record = HistoryRecord::of(&record?);
            bytes += record.payload.len() as u64;
            chunk.records.push(record);
            if bytes >= HISTORY_CHUNK_BYTES_MAX || chunk.records.len() >= HISTORY_CHUNK_RECORDS_MAX {
                break;
            }
        }
        Ok(chunk)
    }

    /// Appends a chunk that continues the fetched history, verified (see
    /// the module documentation); returns how many records it took.
    ///
    /// On disk when it returns `Ok`: the records, durable.
    fn take(&self, source: NodeId, chunk: HistoryChunk, target: BackfillTarget) -> Result<usize, HistoryError> {
        let bad = |reason: String| HistoryError::BadChunk {
            source_node: source,
            reason,
        };
        let fetched = match self.fetched() {
            Some(log) => log,
            None => {
                let first = chunk
                    .records
                    .first()
                    .map_or(chunk.first_retained, |record| record.index);
                let log = Arc::new(Log::open_with(
                    self.storage.clone(),
                    &self.dir.join(HISTORY_DIR),
                    LogOptions {
                        first_index: first,
                        ..self.options.clone()
                    },
                )?);
                *self.fetched.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(log.clone());
                log
            }
        };
        let mut expected = fetched.next_index();
        let mut last_term = match fetched.last_index() {
            Some(last) => fetched.read(last)?.term(),
            None => 0,
        };
        for record in &chunk.records {
            if record.index != expected || record.index >= target.end {
                return Err(bad(format!("record {} where {expected} was expected", record.index)));
            }
            if record.term < last_term {
                return Err(bad(format!(
                    "term {} after term {last_term} at {}",
                    record.term, record.index
                )));
            }
            expected += 1;
            last_term = record.term;
        }
        if expected == target.end && last_term != target.anchor_term {
            // The history disagrees with the snapshot: drop it all.
            if fetched.next_index() > fetched.first_index() {
                fetched.truncate_from(fetched.first_index())?;
            }
            return Err(bad(format!(
                "the last record before the snapshot has term {last_term}, the snapshot's {}",
                target.anchor_term
            )));
        }
        let start = fetched.next_index();
        let records: Vec<NewRecord<'_>> = chunk
            .records
            .iter()
            .map(|record| NewRecord {
                term: record.term,
                group: record.group,
                kind: record.kind,
                payload: &record.payload,
            })
            .collect();
        for run in crate::chunks(&records, fetched.append_bytes_max()) {
            fetched.append(run)?;
        }
        for record in &chunk.records {
            let stored = fetched.read(record.index)?;
            if stored.crc() != record.crc {
                fetched.truncate_from(start)?;
                return Err(bad(format!(
                    "record {} has crc {:#x} here, {:#x} at the source",
                    record.index,
                    stored.crc(),
                    record.crc
                )));
            }
        }
        Ok(chunk.records.len())
    }

    /// Whether the fetched history reaches `target`, or the source holds
    /// nothing before it.
    fn complete(&self, target: BackfillTarget) -> bool {
        self.fetched().is_some_and(|log| log.next_index() >= target.end)
    }

    /// Removes the marker once the history is complete.
    ///
    /// On disk when it returns `Ok`: no `BACKFILL`.
    fn finish(&self) -> std::io::Result<()> {
        self.storage.remove(&self.dir.join(BACKFILL_NAME))?;
        self.storage.sync_dir(&self.dir)
    }
}

/// A read of history from a peer, its transport's type erased.
pub(crate) type ReadHistory = PeerCall<HistoryChunk, (u64, u64)>;

/// Fetches the history owed, chunk by chunk, from the leader or another
/// voter, whenever a backfill is owed (`wanted` is signalled when one is
/// marked); ends when Raft stops.
pub(crate) async fn backfill(id: NodeId, raft: Raft, wanted: Arc<Notify>, history: Arc<History>, read: ReadHistory) {
    let mut attempt = 0usize;
    loop {
        if raft.metrics().borrow().state == ServerState::Shutdown {
            return;
        }
        let target = match history.owed() {
            Ok(Some(target)) => target,
            Ok(None) => {
                wanted.notified().await;
                continue;
            }
            Err(error) => {
                tracing::error!(node = id, %error, "cannot read the backfill marker");
                tokio::time::sleep(BACKFILL_RETRY).await;
                continue;
            }
        };
        if history.complete(target) {
            match history.finish() {
                Ok(()) => {
                    tracing::info!(node = id, end = target.end, "history backfill complete");
                    continue;
                }
                Err(error) => tracing::error!(node = id, %error, "cannot remove the backfill marker"),
            }
            tokio::time::sleep(BACKFILL_RETRY).await;
            continue;
        }
        let sources = sources(id, &raft);
        let Some((source, node)) = sources.get(attempt % sources.len().max(1)).cloned() else {
            tokio::time::sleep(BACKFILL_RETRY).await;
            continue;
        };
        let from = history.fetched().map_or(0, |log| log.next_index());
        let outcome = match read(source, node, HISTORY_READ_TIMEOUT, (from, target.end)).await {
            Ok(chunk)
                if chunk.records.is_empty() && history.fetched().is_none() && chunk.first_retained >= target.end =>
            {
                // The source retains nothing before the snapshot: there is
                // no history to fetch.
                history.finish().map(|()| 0).map_err(HistoryError::Marker)
            }
            Ok(chunk) if chunk.records.is_empty() => Err(HistoryError::BadChunk {
                source_node: source,
                reason: format!("nothing from index {from}"),
            }),
            Ok(chunk) => history.take(source, chunk, target),
            Err(reason) => Err(HistoryError::Unavailable { index: from, reason }),
        };
        if let Err(error) = outcome {
            tracing::debug!(node = id, %error, "history backfill: trying another peer");
            attempt += 1;
            tokio::time::sleep(BACKFILL_RETRY).await;
        }
    }
}

/// Whom to ask for history: the leader first, then the other voters.
pub(crate) fn sources(id: NodeId, raft: &Raft) -> Vec<(NodeId, BasicNode)> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let mut sources: Vec<(NodeId, BasicNode)> = crate::fence::voters(membership)
        .into_iter()
        .filter(|(voter, _)| *voter != id)
        .collect();
    if let Some(leader) = metrics.current_leader.filter(|&leader| leader != id) {
        sources.sort_by_key(|(voter, _)| *voter != leader);
    }
    sources
}

#[cfg(test)]
mod tests {
    use farmlog_engine::io::SimStorage;

    use super::*;

    fn options() -> LogOptions {
        LogOptions {
            first_index: 0,
            segment_bytes: 64 << 10,
            disk_reserve_bytes: 0,
            flush: FlushMode::Manual,
            ..LogOptions::default()
        }
    }

    /// A node's history over a log of records of these terms.
    fn history(storage: &Arc<SimStorage>, name: &str, terms: &[u64]) -> History {
        with_retention(storage, name, terms, crate::Retention::Forever).0
    }

    fn with_retention(
        storage: &Arc<SimStorage>,
        name: &str,
        terms: &[u64],
        retention: crate::Retention,
    ) -> (History, LogStore) {
        let storage: Arc<dyn Storage> = storage.clone();
        let dir = Path::new("/").join(name);
        storage.create_dir_all(&dir).unwrap();
        let main = Arc::new(Log::open_with(storage.clone(), &dir.join("log"), options()).unwrap());
        let payloads: Vec<Vec<u8>> = (0..terms.len()).map(|at| vec![at as u8; 40 + at]).collect();
        let records: Vec<NewRecord<'_>> = terms
            .iter()
            .zip(&payloads)
            .map(|(&term, payload)| NewRecord {
                term,
                group: 0,
                kind: 2,
                payload,
            })
            .collect();
        if !records.is_empty() {
            main.append(&records).unwrap();
        }
        let meta = crate::meta::MetaFile::new(storage.clone(), &dir);
        let store = LogStore::new(main, meta, retention, Default::default()).unwrap();
        (History::open(storage, &dir, &store, options()).unwrap(), store)
    }

    const TARGET: BackfillTarget = BackfillTarget { end: 5, anchor_term: 3 };

    #[test]
    fn a_chunk_that_continues_and_matches_the_anchor_is_taken() {
        let storage = Arc::new(SimStorage::new(Default::default()));
        let source = history(&storage, "source", &[1, 1, 2, 2, 3, 3]);
        let taker = history(&storage, "taker", &[]);
        let chunk = source.chunk(0, 3).unwrap();
        assert_eq!(taker.take(1, chunk, TARGET).unwrap(), 3);
        assert!(!taker.complete(TARGET));
        let chunk = source.chunk(3, TARGET.end).unwrap();
        assert_eq!(taker.take(1, chunk, TARGET).unwrap(), 2);
        assert!(taker.complete(TARGET));
        assert_eq!(taker.chunk(0, 5).unwrap().records, source.chunk(0, 5).unwrap().records);
    }

    #[test]
    fn a_chunk_with_a_bad_crc_a_gap_or_the_wrong_anchor_is_refused() {
        let storage = Arc::new(SimStorage::new(Default::default()));
        let source = history(&storage, "source", &[1, 1, 2, 2, 3, 3]);
        let taker = history(&storage, "taker", &[]);

        let mut damaged = source.chunk(0, 3).unwrap();
        damaged.records[1].crc ^= 1;
        assert!(matches!(
            taker.take(1, damaged, TARGET),
            Err(HistoryError::BadChunk { .. })
        ));
        assert_eq!(taker.chunk(0, 5).unwrap().records, vec![], "nothing of it is kept");

        let mut gap = source.chunk(0, 3).unwrap();
        gap.records.remove(1);
        assert!(matches!(taker.take(1, gap, TARGET), Err(HistoryError::BadChunk { .. })));

        let mut going_back = source.chunk(0, 3).unwrap();
        going_back.records[2].term = 0;
        assert!(matches!(
            taker.take(1, going_back, TARGET),
            Err(HistoryError::BadChunk { .. })
        ));

        // A history that disagrees with the snapshot at its last entry is
        // dropped whole.
        assert_eq!(taker.take(1, source.chunk(0, 3).unwrap(), TARGET).unwrap(), 3);
        let wrong_anchor = BackfillTarget { end: 5, anchor_term: 4 };
        let rest = source.chunk(3, 5).unwrap();
        assert!(matches!(
            taker.take(1, rest, wrong_anchor),
            Err(HistoryError::BadChunk { .. })
        ));
        assert_eq!(taker.chunk(0, 5).unwrap().records, vec![]);
    }

    #[test]
    fn the_retention_policy_drops_fetched_history_too() {
        use openraft::storage::RaftLogStorage;
        let storage = Arc::new(SimStorage::new(Default::default()));
        let source = history(&storage, "source", &[1, 1, 2, 2, 3, 3, 3, 3]);
        let (taker, mut store) = with_retention(&storage, "taker", &[], crate::Retention::Records(2));
        taker.take(1, source.chunk(0, 5).unwrap(), TARGET).unwrap();
        // The taker's own log continues after the snapshot at 4.
        let main = store.log().clone();
        main.purge_before(5).unwrap();
        let records: Vec<NewRecord<'_>> = (5..8)
            .map(|_| NewRecord {
                term: 3,
                group: 0,
                kind: 2,
                payload: b"later",
            })
            .collect();
        main.append(&records).unwrap();
        assert_eq!(taker.first_retained(), 0);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(store.purge(crate::entry::log_id(3, 7))).unwrap();
        // Keep the newest 2 of 0..8: the fetched records (0..5) all go,
        // and the log's own from 5 (the engine moves a log's start inside
        // its one segment).
        assert_eq!(taker.first_retained(), 6);
        assert_eq!(taker.chunk(0, 8).unwrap().records.len(), 2);
    }

    #[test]
    fn a_node_still_owed_history_does_not_answer_for_what_is_before_its_own() {
        let storage = Arc::new(SimStorage::new(Default::default()));
        let (node, store) = with_retention(&storage, "node", &[], crate::Retention::Forever);
        store.log().purge_before(17).unwrap();
        let target = BackfillTarget {
            end: 17,
            anchor_term: 2,
        };
        mark_backfill(storage.as_ref(), Path::new("/node"), target).unwrap();
        // Asked from 0 (seed 5384 of the simulation): not "nothing here",
        // which a peer would take for "nothing retained".
        assert!(matches!(
            node.chunk(0, 17),
            Err(HistoryError::Incomplete { first_retained: 17 })
        ));
        assert_eq!(node.chunk(17, 18).unwrap().records, vec![]);
        node.finish().unwrap();
        assert_eq!(node.chunk(0, 17).unwrap().first_retained, 17);
    }

    #[test]
    fn the_marker_round_trips_and_damage_is_refused() {
        let target = BackfillTarget {
            end: 1201,
            anchor_term: 7,
        };
        let mut bytes = target.encode();
        assert_eq!(BackfillTarget::decode(&bytes), Ok(target));
        bytes[9] ^= 1;
        assert_eq!(BackfillTarget::decode(&bytes), Err("crc mismatch".to_string()));
    }
}
