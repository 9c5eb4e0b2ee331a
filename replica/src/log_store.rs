//! openraft's log storage, on the engine's log: one write path. Each Raft
//! entry is one engine record, written once and synced once, by the
//! engine's group commit. The vote and the purge point live beside it in
//! the `RAFT` file (`meta.rs`).
//!
//! ## Purge and retention
//!
//! When openraft purges up to a log id (after a snapshot), that id is made
//! durable in `RAFT` and the entries stop being visible to openraft. The
//! engine keeps them: the committed history is the product, and it is
//! dropped only when the [`Retention`] policy (records, bytes or age in
//! log time) allows, whole segments at a time, and never past what
//! openraft purged. History fetched from a peer behind a snapshot
//! (`history.rs`) is the same history to the policy. The one exception is a log
//! that does not reach the purge point at all (a follower that installed a
//! snapshot ahead of its log): it is emptied so that it continues after
//! the snapshot.
//!
//! ## Flushing
//!
//! `append` submits the entries to the engine with a completion that tells
//! openraft they are durable; the engine's commit round (its one
//! completion function) calls it after `fdatasync`, never before. In
//! production the engine's flusher thread runs the rounds. A log opened in
//! [`FlushMode::Manual`] (the simulation) is flushed by
//! [`LogStore::flush_task`] instead, which runs the same round.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use farmlog_engine::log::recovery::TailCase;
use farmlog_engine::log::BATCH_BYTES_MAX;
use farmlog_engine::{FlushMode, Log, NewRecord};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::sync::Notify;

use crate::entry;
use crate::meta::{MetaFile, RaftMeta};
use crate::{Entry, NodeId, TypeConfig};

/// Most bytes of entries one replication read returns
/// (`limited_get_log_entries`): a lagging follower is sent its entries in
/// pieces no larger than this (plus one entry). Other reads return the
/// whole range asked for: openraft 0.9 applies committed entries with
/// `get_log_entries`, which fails (and stops Raft) on a shorter answer.
pub const READ_BYTES_MAX: u64 = 16 << 20;

/// How much committed history the engine keeps behind openraft's purge
/// point. History is dropped whole segments at a time, so a little more
/// than asked is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Keep every record (the default: histories are the product).
    #[default]
    Forever,
    /// Keep at least the newest `n` records.
    Records(u64),
    /// Keep at least the newest `n` bytes of segments (at their capacity).
    Bytes(u64),
    /// Keep at least the records whose log time is within `ms`
    /// milliseconds of the newest command's. Log time (the proposers'
    /// timestamps, never going back) is the same on every replica, so
    /// every replica keeps the same history, and a clock gone wrong on
    /// one machine drops nothing early.
    AgeMs(u64),
}

/// How far back from a segment's last record the age policy looks for a
/// command batch that dates it; a segment with none there is kept.
pub const AGE_SCAN_RECORDS_MAX: u64 = 64;

/// The log store; cheap to clone (its readers are clones).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<Log>,
    meta_file: MetaFile,
    meta: Mutex<RaftMeta>,
    retention: Retention,
    /// Set for a log in manual flush mode: wakes [`LogStore::flush_task`].
    flush_wanted: Option<Arc<Notify>>,
    manual_flush: ManualFlush,
    /// Signalled when a backfill of history is owed (see `history.rs`).
    backfill_wanted: Arc<Notify>,
    /// History fetched from a peer, older than the log (see `history.rs`).
    fetched: crate::history::FetchedLog,
}

/// How [`LogStore::flush_task`] behaves for a log in manual flush mode:
/// the simulation's model of a disk's sync latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManualFlush {
    /// Each round waits a delay drawn from `0..=latency_ms_max` first.
    pub latency_ms_max: u64,
    /// Seeds the delays.
    pub seed: u64,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("log", &self.inner.log)
            .finish_non_exhaustive()
    }
}

fn read_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&error).into()
}

fn write_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&error).into()
}

impl LogStore {
    /// A store over an open, writable log and the directory of its `RAFT`
    /// file (through the same storage as the log).
    pub fn new(
        log: Arc<Log>,
        meta_file: MetaFile,
        retention: Retention,
        manual_flush: ManualFlush,
    ) -> Result<Self, crate::Error> {
        let meta = meta_file.load()?;
        let flush_wanted = (log.flush_mode() == FlushMode::Manual).then(|| Arc::new(Notify::new()));
        let store = Self {
            inner: Arc::new(Inner {
                log,
                meta_file,
                meta: Mutex::new(meta),
                retention,
                flush_wanted,
                manual_flush,
                backfill_wanted: Arc::new(Notify::new()),
                fetched: Default::default(),
            }),
        };
        // A purge past the end of the log (after installing a snapshot ahead
        // of it) marks the backfill owed and stores the purge point first,
        // then empties the log: a crash between them leaves a log that ends
        // before the purge point. Finish that purge, so that the log
        // continues after it.
        if let Some(purged) = meta.last_purged {
            let log = &store.inner.log;
            if log.next_index() <= purged.index {
                store
                    .owe_backfill(purged)
                    .map_err(|source| crate::meta::MetaError::Io {
                        path: store.inner.meta_file.dir().to_path_buf(),
                        source,
                    })?;
                log.purge_before(purged.index + 1)?;
            }
        }
        Ok(store)
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.inner.log
    }

    fn meta(&self) -> MutexGuard<'_, RaftMeta> {
        self.inner.meta.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The durable vote and purge point, as last stored.
    pub fn raft_meta(&self) -> RaftMeta {
        *self.meta()
    }

    /// For a log in manual flush mode, the task that runs the engine's
    /// commit round whenever an append is waiting; `None` for a log whose
    /// own flusher does it. Ends when the round fails (the log is then
    /// poisoned and every waiting append has been failed).
    pub fn flush_task(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let wanted = self.inner.flush_wanted.clone()?;
        let log = self.inner.log.clone();
        let ManualFlush { latency_ms_max, seed } = self.inner.manual_flush;
        let mut rng = SmallRng::seed_from_u64(seed);
        Some(async move {
            loop {
                wanted.notified().await;
                if latency_ms_max > 0 {
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=latency_ms_max))).await;
                }
                if let Err(error) = log.commit_pending() {
                    tracing::error!(%error, "the log cannot be flushed; this node stops writing");
                    return;
                }
            }
        })
    }

    /// The id of the entry at `index`, if the log holds it.
    /// The log id of the last entry, or of the purge point when no entry
    /// follows it (what openraft's log state reports).
    pub fn last_log_id(&self) -> farmlog_engine::Result<Option<LogId<NodeId>>> {
        let last_purged = self.meta().last_purged;
        let purged_end = last_purged.map_or(0, |purged| purged.index + 1);
        match self.inner.log.last_index() {
            Some(last) if last >= purged_end => self.log_id_at(last).map(Some),
            _ => Ok(last_purged),
        }
    }

    /// The term of the last durable entry, or of the purge point when it is
    /// later (a snapshot installed past the log).
    pub fn durable_last_term(&self) -> Option<u64> {
        let purged = self.meta().last_purged.map(|purged| purged.leader_id.term);
        let log = &self.inner.log;
        let durable = (log.durable_end() > log.first_index())
            .then(|| log.read(log.durable_end() - 1).ok())
            .flatten()
            .map(|record| record.term());
        durable.max(purged)
    }

    /// Applies the fence's rules at open (see `fence::at_open`): a cut tail
    /// fences the node; a vote committed for itself is uncommitted.
    ///
    /// On disk when it returns `Ok`: the changed vote and fence, durable.
    pub(crate) fn fence_at_open(&self, id: NodeId) -> Result<Option<u64>, crate::meta::MetaError> {
        let cut = matches!(self.inner.log.recovery_report().tail, TailCase::TornTail { .. });
        self.store_meta(|meta| *meta = crate::fence::at_open(*meta, id, cut))?;
        Ok(self.meta().fence)
    }

    /// Records that the history up to `log_id` must be fetched from a peer
    /// (the log is about to be emptied past it), and wakes the backfill.
    ///
    /// On disk when it returns `Ok`: the `BACKFILL` marker, durable.
    fn owe_backfill(&self, log_id: LogId<NodeId>) -> std::io::Result<()> {
        let file = &self.inner.meta_file;
        let target = crate::history::BackfillTarget {
            end: log_id.index + 1,
            anchor_term: log_id.leader_id.term,
        };
        crate::history::mark_backfill(file.storage().as_ref(), file.dir(), target)?;
        self.inner.backfill_wanted.notify_one();
        Ok(())
    }

    fn fetched(&self) -> Option<Arc<Log>> {
        self.inner
            .fetched
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// The slot of the fetched history's log, shared with `History`.
    pub(crate) fn fetched_slot(&self) -> crate::history::FetchedLog {
        self.inner.fetched.clone()
    }

    /// Signalled when a backfill is owed.
    pub(crate) fn backfill_wanted(&self) -> Arc<Notify> {
        self.inner.backfill_wanted.clone()
    }

    /// Lifts the fence.
    ///
    /// On disk when it returns `Ok`: `RAFT` without a fence.
    pub(crate) fn lift_fence(&self) -> Result<(), crate::meta::MetaError> {
        self.store_meta(|meta| meta.fence = None)
    }

    fn log_id_at(&self, index: u64) -> farmlog_engine::Result<LogId<NodeId>> {
        let record = self.inner.log.read(index)?;
        Ok(entry::log_id(record.term(), index))
    }

    fn store_meta(&self, change: impl FnOnce(&mut RaftMeta)) -> Result<(), crate::meta::MetaError> {
        let mut meta = self.meta();
        let mut next = *meta;
        change(&mut next);
        if next != *meta {
            self.inner.meta_file.store(&next)?;
            *meta = next;
        }
        Ok(())
    }

    /// The index below which the policy allows dropping history, judged
    /// over the fetched history and the log as one, never past the records
    /// openraft has purged (`purged_end` is one past the last of them).
    fn retention_floor(&self, purged_end: u64) -> u64 {
        let fetched = self.fetched();
        let logs: Vec<&Log> = fetched
            .as_deref()
            .into_iter()
            .chain([self.inner.log.as_ref()])
            .collect();
        retention_floor(self.inner.retention, &logs).min(purged_end)
    }
}

/// The index below which `retention` allows dropping history, over
/// `logs`: one history, oldest log first, whole segments at a time.
fn retention_floor(retention: Retention, logs: &[&Log]) -> u64 {
    let Some(newest) = logs.last() else { return 0 };
    let oldest_first = logs.first().map_or(0, |log| log.first_index());
    // Every segment, newest first, with the log it is in.
    let segments = || {
        logs.iter()
            .rev()
            .flat_map(|log| log.segments().into_iter().rev().map(move |segment| (*log, segment)))
    };
    match retention {
        Retention::Forever => oldest_first,
        Retention::Records(keep) => newest.next_index().saturating_sub(keep),
        Retention::Bytes(keep) => {
            let mut kept = 0u64;
            let mut floor = newest.next_index();
            for (_, segment) in segments() {
                if kept >= keep {
                    break;
                }
                kept += segment.capacity;
                floor = segment.first_index;
            }
            floor
        }
        Retention::AgeMs(keep) => {
            let mut dated = segments().filter_map(|(log, segment)| {
                let end = segment.first_index + segment.records;
                (segment.records > 0).then(|| (end, log_time_before(log, segment.first_index, end)))
            });
            let Some((_, Some(newest_time))) = dated.next() else {
                return oldest_first;
            };
            let cutoff = newest_time.saturating_sub(keep);
            for (end, time) in dated {
                match time {
                    // Everything up to this segment's end is older.
                    Some(time) if time < cutoff => return end,
                    _ => {}
                }
            }
            oldest_first
        }
    }
}

/// The log time at the end of `first..end` in `log`: the greatest
/// proposer timestamp of the last command batch among its last
/// [`AGE_SCAN_RECORDS_MAX`] records; `None` if there is none.
fn log_time_before(log: &Log, first: u64, end: u64) -> Option<u64> {
    let scan_from = end.saturating_sub(AGE_SCAN_RECORDS_MAX).max(first);
    (scan_from..end).rev().find_map(|index| {
        let record = log.read(index).ok()?;
        if record.kind() != farmlog_engine::kinds::COMMAND_BATCH {
            return None;
        }
        let batch = farmlog_engine::state::batch::Batch::parse(record.payload()).ok()?;
        (0..batch.len())
            .filter_map(|slot| batch.command(slot).ok())
            .map(|command| command.proposed_at_ms.to_native())
            .max()
    })
}

impl LogStore {
    /// The visible entries of `range` (above the purge point), in order,
    /// until `bytes_max` bytes of records have been read (the entry that
    /// crosses it included). The error is openraft's own type, as its
    /// reader methods return it.
    #[allow(clippy::result_large_err)]
    fn read_entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let visible = self.meta().last_purged.map_or(0, |purged| purged.index + 1);
        let start = match range.start_bound() {
            Bound::Included(&start) => start,
            Bound::Excluded(&start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(visible);
        let end = match range.end_bound() {
            Bound::Included(&end) => end.saturating_add(1),
            Bound::Excluded(&end) => end,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        for record in self.inner.log.range(start..end) {
            let record = record.map_err(read_error)?;
            bytes += record.framed_len();
            entries.push(entry::from_record(record).map_err(read_error)?);
            if bytes >= bytes_max {
                break;
            }
        }
        Ok(entries)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    /// Every visible entry of `range`: openraft 0.9 reads the entries it
    /// applies through this, and refuses a shorter answer.
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.read_entries(range, u64::MAX)
    }

    /// Replication's read: at most [`READ_BYTES_MAX`] bytes (plus the entry
    /// that crosses it), never empty for a range with a visible entry.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.read_entries(start..end, READ_BYTES_MAX)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged = self.meta().last_purged;
        let last_log_id = self.last_log_id().map_err(read_error)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// On disk when it returns `Ok`: `vote`, durable.
    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.store_meta(|meta| meta.vote = Some(vote))
            .map_err(|error| StorageIOError::write_vote(&error).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.meta().vote)
    }

    /// On disk when it returns `Ok`: the entries written (readable) but
    /// maybe not durable; `callback` is called once the engine's commit
    /// round has synced them, or with the error that failed them.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log = &self.inner.log;
        // An entry at or below the purge point is applied and covered by a
        // snapshot already; if the log has moved past it, it is not written
        // again.
        let purged = self.meta().last_purged.map(|purged| purged.index);
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|entry| {
                let index = entry.log_id.index;
                !(purged.is_some_and(|purged| index <= purged) && index < log.next_index())
            })
            .collect();
        let Some(first) = entries.first() else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        if first.log_id.index != log.next_index() {
            if log.first_index() == log.next_index() && first.log_id.index > log.next_index() {
                // An empty log continues wherever its first entry says.
                log.purge_before(first.log_id.index).map_err(write_error)?;
            } else {
                return Err(write_error(crate::Error::Gap {
                    expected: log.next_index(),
                    found: first.log_id.index,
                }));
            }
        }
        let encoded: Vec<(u16, bytes::Bytes)> = entries.iter().map(entry::to_record).collect();
        let records: Vec<NewRecord<'_>> = entries
            .iter()
            .zip(&encoded)
            .map(|(entry, (kind, payload))| entry::new_record(entry, *kind, payload))
            .collect();
        let chunks = crate::chunks(&records, log.append_bytes_max().min(BATCH_BYTES_MAX));
        let last = chunks.len() - 1;
        let mut callback = Some(callback);
        for (number, chunk) in chunks.into_iter().enumerate() {
            let done: farmlog_engine::log::OnDurable = match number == last {
                true => {
                    let callback = callback.take().expect("one completion for the last chunk");
                    Box::new(move |result| callback.log_io_completed(result.map(|_| ()).map_err(std::io::Error::other)))
                }
                // An earlier chunk's failure poisons the log, which fails
                // the last chunk's completion too.
                false => Box::new(|_| {}),
            };
            log.submit(chunk, done).map_err(write_error)?;
        }
        if let Some(wanted) = &self.inner.flush_wanted {
            wanted.notify_one();
        }
        Ok(())
    }

    /// On disk when it returns `Ok`: the entry at `log_id` and every later
    /// one removed, durably (see `Log::truncate_from`).
    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.inner.log.truncate_from(log_id.index).map_err(write_error)
    }

    /// On disk when it returns `Ok`: `log_id` durable as the purge point in
    /// `RAFT`; history below the retention floor dropped (see the module
    /// documentation).
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        if self.inner.log.next_index() <= log_id.index {
            self.owe_backfill(log_id)
                .map_err(|error| StorageIOError::write(&error))?;
        }
        self.store_meta(|meta| {
            if meta.last_purged.is_none_or(|purged| purged.index < log_id.index) {
                meta.last_purged = Some(log_id);
            }
        })
        .map_err(|error| StorageIOError::write(&error))?;
        let log = &self.inner.log;
        let purged_end = log_id.index + 1;
        let history_floor = self.retention_floor(purged_end);
        let floor = match log.next_index() <= log_id.index {
            // The log does not reach the purge point: it continues after it.
            true => purged_end,
            false => history_floor,
        };
        if floor > log.first_index() {
            log.purge_before(floor).map_err(write_error)?;
        }
        // Fetched history is below the log; the policy alone decides.
        if let Some(fetched) = self.fetched() {
            let floor = history_floor.min(fetched.next_index());
            if floor > fetched.first_index() {
                fetched.purge_before(floor).map_err(write_error)?;
            }
        }
        Ok(())
    }
}
