//! The write path: appends, group commit, and the maintenance operations
//! that change the set of segments (truncate, purge, seal, compress).
//!
//! ## Group commit
//!
//! An append encodes its records, then, under the writer lock, assigns
//! their indexes, writes them with one positioned write into the active
//! segment and publishes them to readers. It is then *written* but not
//! acknowledged. A *commit round* ([`Log::commit_pending`], the one
//! completion function) takes every written append, writes the lagging
//! watermark into the segment's header page, calls `fdatasync` once, and
//! only then acknowledges them all: blocking appenders return, callbacks
//! run. Appends written while a round is syncing wait for the next round,
//! so many appenders share one sync.
//!
//! One round runs at a time: whoever runs it holds the writer's *claim*,
//! taken under the writer lock. An appender that finds the claim free
//! takes it and leads a round (no thread hop on the latency path); one
//! that finds it taken follows: it waits on a condition variable, and all
//! followers are released together when the round ends, so the next
//! leader syncs for every append written meanwhile. Maintenance
//! (truncate, purge, seal) holds the claim too.
//!
//! Who runs rounds is the [`FlushMode`]: blocking appenders as above; in
//! `Background` mode a flusher thread also runs rounds for callback
//! appends and brings the watermark up to date when the log is idle; in
//! `Manual` mode a simulation calls `commit_pending` when it chooses.
//!
//! ## Failure
//!
//! A failed write or sync poisons the log: every waiting append gets an
//! error, and every later write returns `Error::Poisoned` until the log is
//! reopened. A full disk refuses appends *before* writing anything, and
//! does not poison.
//!
//! Bounds: at most [`UNSYNCED_BYTES_MAX`] written-but-unsynced bytes in the
//! active segment and [`PENDING_APPENDS_MAX`] waiting callbacks; appenders
//! past either wait (or lead a round).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::format::{self, Footer, RecordHeader, SegmentHeader, Watermark, RECORDS_OFFSET, RECORD_HEADER_BYTES};
use super::recovery::{self, Recovered, META_NAME};
use super::segment::{self, Body, Segment};
use super::{
    Durability, Log, NewRecord, View, BATCH_BYTES_MAX, BATCH_RECORDS_MAX, PAYLOAD_BYTES_MAX, PENDING_APPENDS_MAX,
    RECYCLED_SEGMENTS_MAX, UNSYNCED_BYTES_MAX,
};
use crate::error::{Error, Result};
use crate::io::{OpenMode, StorageFile};

/// Called once an append is durable (with its last index) or has failed.
pub type OnDurable = Box<dyn FnOnce(Result<u64>) + Send + 'static>;

/// The writer's state and the locks that order its work.
pub(super) struct WriterCell {
    state: Mutex<WriterState>,
    /// Signalled when a round ends, when an append is waiting for the
    /// flusher, and at shutdown.
    changed: Condvar,
    /// Wakes the flusher thread (callback appends, shutdown).
    flusher_wake: Condvar,
    /// Held by truncate, purge, seal and compress: one at a time.
    maintenance: Mutex<()>,
    /// A zero-filled file ready to become the next segment, made by the
    /// preallocator thread so that a rollover never writes a segment's
    /// worth of zeros on the append path.
    spare: Mutex<SpareSlot>,
    /// Wakes the preallocator when the spare is taken, and at shutdown.
    spare_wanted: Condvar,
}

/// The spare and whether the log is closing. Lock order: the writer state
/// may be held when taking this lock, never the other way round.
#[derive(Default)]
struct SpareSlot {
    spare: Option<Spare>,
    /// Purged segment files, renamed to temporaries, ready for reuse.
    recycled: Vec<Spare>,
    /// Set by the first append: a log that is only opened and read never
    /// writes a spare's worth of zeros.
    wanted: bool,
    closed: bool,
}

struct Spare {
    path: std::path::PathBuf,
    file: Arc<dyn StorageFile>,
    capacity: u64,
}

struct WriterState {
    active: Option<Active>,
    segment_bytes: u64,
    next_index: u64,
    next_sequence: u64,
    /// Every append gets a ticket; all tickets below `acked_ticket` are
    /// acknowledged.
    next_ticket: u64,
    acked_ticket: u64,
    /// Every index below this was acknowledged durable.
    durable_end: u64,
    /// Callback appends awaiting a round, oldest first.
    pending: VecDeque<Pending>,
    poisoned: Option<String>,
    /// A commit round or a maintenance operation holds the writer's
    /// claim: one at a time. Claimed and released under this lock, so
    /// that appenders waiting for a round wait on `changed` and are all
    /// released together when it ends.
    claimed: bool,
    /// Rounds completed; the flusher uses it to notice idleness.
    rounds: u64,
    shutting_down: bool,
}

struct Active {
    file: Arc<dyn StorageFile>,
    header: SegmentHeader,
    /// Where the next record goes.
    write_offset: u64,
    /// Every byte below this offset is durable.
    synced_offset: u64,
    /// Record offsets, for the index block at sealing.
    offsets: Vec<u32>,
    /// The newest watermark known durable in the header page.
    watermark: Watermark,
}

struct Pending {
    ticket: u64,
    last_index: u64,
    on_durable: OnDurable,
}

/// What a round will do, captured under the lock.
struct RoundPlan {
    target_ticket: u64,
    target_end: u64,
    target: Option<(Arc<dyn StorageFile>, u64, u64)>,
    watermark: Option<Watermark>,
}

impl WriterCell {
    pub(super) fn new(recovered: &Recovered, segment_bytes: u64) -> Self {
        let active = match (&recovered.active_file, recovered.segments.last()) {
            (Some(file), Some(segment)) => {
                let offsets = recovered.active_offsets.clone();
                let write_offset = match offsets.last() {
                    Some(&last) => last as u64 + record_len_at(segment, last as u64),
                    None => RECORDS_OFFSET,
                };
                Some(Active {
                    file: file.clone(),
                    header: segment.header,
                    write_offset,
                    synced_offset: write_offset,
                    offsets,
                    watermark: recovered.active_watermark.unwrap_or(Watermark {
                        generation: 0,
                        durable_end: segment.first_index(),
                        clean_end: 0,
                    }),
                })
            }
            _ => None,
        };
        let state = WriterState {
            active,
            segment_bytes,
            next_index: recovered.next_index,
            next_sequence: recovered.next_sequence,
            next_ticket: 0,
            acked_ticket: 0,
            // Everything that survived recovery is on disk now.
            durable_end: recovered.next_index,
            pending: VecDeque::new(),
            poisoned: None,
            claimed: false,
            rounds: 0,
            shutting_down: false,
        };
        Self {
            state: Mutex::new(state),
            changed: Condvar::new(),
            flusher_wake: Condvar::new(),
            maintenance: Mutex::new(()),
            spare: Mutex::new(SpareSlot::default()),
            spare_wanted: Condvar::new(),
        }
    }

    fn spare(&self) -> MutexGuard<'_, SpareSlot> {
        self.spare.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn wait<'a>(&self, state: MutexGuard<'a, WriterState>) -> MutexGuard<'a, WriterState> {
        self.changed.wait(state).unwrap_or_else(|poison| poison.into_inner())
    }

    /// Waits until nobody holds the claim, then takes it.
    fn claim(&self) -> Claim<'_> {
        let mut state = self.lock();
        while state.claimed {
            state = self.wait(state);
        }
        self.claim_locked(&mut state)
    }

    /// Takes the claim; the caller saw it free under this lock.
    fn claim_locked(&self, state: &mut WriterState) -> Claim<'_> {
        debug_assert!(!state.claimed);
        state.claimed = true;
        Claim { writer: self }
    }

    pub(super) fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.changed.notify_all();
        self.flusher_wake.notify_all();
        self.spare().closed = true;
        self.spare_wanted.notify_all();
    }
}

/// The writer's claim, released (and every waiter woken) on drop.
struct Claim<'a> {
    writer: &'a WriterCell,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.writer.lock().claimed = false;
        self.writer.changed.notify_all();
    }
}

/// The framed length of the (valid) record at `offset` of a segment.
fn record_len_at(segment: &Segment, offset: u64) -> u64 {
    let Body::Active { map } = &segment.body else {
        unreachable!("only the active segment is scanned for its end");
    };
    let bytes = &map.bytes()[offset as usize..offset as usize + RECORD_HEADER_BYTES];
    let bytes: &[u8; RECORD_HEADER_BYTES] = bytes.try_into().expect("slice has the header's length");
    RecordHeader::parse(bytes).map_or(0, |header| header.framed_len())
}

/// A batch encoded outside the lock: headers without index or crc yet.
struct Encoded {
    bytes: Vec<u8>,
    /// (offset in `bytes`, payload length, crc of the payload)
    records: Vec<(usize, usize, crc32fast::Hasher)>,
    /// Bytes the batch needs in a segment: records plus index entries.
    footprint: u64,
}

fn encode(batch: &[NewRecord<'_>]) -> Result<Encoded> {
    if batch.is_empty() {
        return Err(Error::invalid("an append needs at least one record"));
    }
    if batch.len() > BATCH_RECORDS_MAX {
        return Err(Error::invalid(format!(
            "{} records in one append; at most {BATCH_RECORDS_MAX}",
            batch.len()
        )));
    }
    let mut total = 0usize;
    for (position, record) in batch.iter().enumerate() {
        if record.payload.len() > PAYLOAD_BYTES_MAX {
            return Err(Error::invalid(format!(
                "record {position} of the batch has a {}-byte payload; at most {PAYLOAD_BYTES_MAX}",
                record.payload.len()
            )));
        }
        total += format::framed_len(record.payload.len());
    }
    if total as u64 > BATCH_BYTES_MAX {
        return Err(Error::invalid(format!(
            "an append of {total} bytes; at most {BATCH_BYTES_MAX}"
        )));
    }
    let mut bytes = vec![0u8; total];
    let mut records = Vec::with_capacity(batch.len());
    let mut at = 0;
    for record in batch {
        let header = RecordHeader {
            length: record.payload.len() as u32,
            crc: 0,
            index: 0,
            term: record.term,
            group: record.group,
            kind: record.kind,
        };
        bytes[at..at + RECORD_HEADER_BYTES].copy_from_slice(&header.encode_without_crc());
        let payload_at = at + RECORD_HEADER_BYTES;
        bytes[payload_at..payload_at + record.payload.len()].copy_from_slice(record.payload);
        let mut payload_crc = crc32fast::Hasher::new();
        payload_crc.update(record.payload);
        records.push((at, record.payload.len(), payload_crc));
        at += format::framed_len(record.payload.len());
    }
    let footprint = total as u64 + (batch.len() * format::INDEX_ENTRY_BYTES) as u64;
    Ok(Encoded {
        bytes,
        records,
        footprint,
    })
}

/// Fills in the indexes and crcs of an encoded batch.
fn stamp(encoded: &mut Encoded, first_index: u64) {
    for (position, (at, _, payload_crc)) in encoded.records.iter().enumerate() {
        let header = &mut encoded.bytes[*at..*at + RECORD_HEADER_BYTES];
        header[8..16].copy_from_slice(&(first_index + position as u64).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[0..4]);
        crc.update(&header[8..RECORD_HEADER_BYTES]);
        crc.combine(payload_crc);
        header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    }
}

impl Log {
    fn writer(&self) -> Result<&WriterCell> {
        self.shared.writer.as_ref().ok_or(Error::ReadOnly)
    }

    /// Appends a batch and returns once it is durable, with the index of
    /// its last record. The records get consecutive indexes from
    /// [`Log::next_index`].
    ///
    /// On disk when it returns `Ok`: every record of the batch (and of
    /// every earlier append), synced with `fdatasync` (unless the log was
    /// opened with [`Durability::UnsafeNoSync`]).
    pub fn append(&self, batch: &[NewRecord<'_>]) -> Result<u64> {
        let writer = self.writer()?;
        let (ticket, last_index) = self.write_batch(writer, batch, None)?;
        loop {
            let state = writer.lock();
            if state.acked_ticket > ticket {
                return Ok(last_index);
            }
            if let Some(cause) = &state.poisoned {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            self.follow_or_lead(writer, state)?;
        }
    }

    /// One step of waiting for a round: follow the round under way (wait
    /// for it to end), or, if none is, lead one that syncs for everyone
    /// written so far. The caller re-checks its condition afterwards.
    fn follow_or_lead(&self, writer: &WriterCell, mut state: MutexGuard<'_, WriterState>) -> Result<()> {
        if state.claimed {
            drop(writer.wait(state));
            return Ok(());
        }
        let _claim = writer.claim_locked(&mut state);
        drop(state);
        self.commit_round(writer)
    }

    /// Appends a batch without waiting for durability: returns the index of
    /// its last record once the records are written (and readable), and
    /// calls `on_durable` exactly once, from whichever thread runs the
    /// commit round, when they are durable or have failed.
    ///
    /// On disk when it returns `Ok`: the records are written but maybe not
    /// durable. In `Manual` flush mode nothing syncs them until
    /// [`Log::commit_pending`] is called.
    pub fn submit(&self, batch: &[NewRecord<'_>], on_durable: OnDurable) -> Result<u64> {
        let writer = self.writer()?;
        let (_, last_index) = self.write_batch(writer, batch, Some(on_durable))?;
        writer.flusher_wake.notify_one();
        Ok(last_index)
    }

    /// Runs one commit round: syncs every written append and acknowledges
    /// it, and brings the on-disk watermark up to date. The one function
    /// that completes appends, whoever drives it.
    ///
    /// On disk when it returns `Ok`: every record written before the call,
    /// and a watermark covering every record acknowledged before the call.
    pub fn commit_pending(&self) -> Result<()> {
        let writer = self.writer()?;
        let _claim = writer.claim();
        self.commit_round(writer)
    }

    /// Every index below this is vouched for by the watermark on disk:
    /// opening the log finds a damaged record below it damaged, not torn.
    /// The newest commit round's records lie past it until the next round
    /// (or the flusher's idle update) writes a watermark that covers them.
    pub fn watermark_end(&self) -> u64 {
        match &self.shared.writer {
            Some(writer) => {
                let state = writer.lock();
                state
                    .active
                    .as_ref()
                    .map_or(state.durable_end, |active| active.watermark.durable_end)
            }
            None => self.next_index(),
        }
    }

    /// Every index below this is acknowledged durable.
    pub fn durable_end(&self) -> u64 {
        match &self.shared.writer {
            Some(writer) => writer.lock().durable_end,
            None => self.next_index(),
        }
    }

    /// A round; the caller holds the claim.
    fn commit_round(&self, writer: &WriterCell) -> Result<()> {
        let plan = {
            let mut state = writer.lock();
            if let Some(cause) = state.poisoned.clone() {
                let failed: Vec<Pending> = state.pending.drain(..).collect();
                drop(state);
                fail_all(failed, &cause);
                return Err(Error::Poisoned { cause });
            }
            match plan_round(&state, self.shared.options.durability) {
                Some(plan) => plan,
                None => return Ok(()),
            }
        };
        let result = self.execute(&plan);
        let mut state = writer.lock();
        state.rounds += 1;
        let completed = match &result {
            Ok(()) => self.finish_round(&mut state, &plan),
            Err(error) => {
                let cause = error.to_string();
                tracing::error!(%cause, "commit failed; the log is poisoned until reopened");
                state.poisoned = Some(cause);
                state.pending.drain(..).collect()
            }
        };
        drop(state);
        writer.changed.notify_all();
        match result {
            Ok(()) => {
                for pending in completed {
                    (pending.on_durable)(Ok(pending.last_index));
                }
                Ok(())
            }
            Err(error) => {
                fail_all(completed, &error.to_string());
                Err(error)
            }
        }
    }

    /// Writes the watermark and syncs, outside the writer lock.
    fn execute(&self, plan: &RoundPlan) -> Result<()> {
        let Some((file, _, _)) = &plan.target else {
            return Ok(());
        };
        if let Some(watermark) = plan.watermark {
            file.write_all_at(&watermark.encode(), watermark.slot_offset())
                .map_err(|error| Error::io("writing the durable watermark", error))?;
        }
        if self.shared.options.durability == Durability::Synced {
            let started = std::time::Instant::now();
            file.sync_data()
                .map_err(|error| Error::io("syncing the active segment", error))?;
            self.shared.commit_syncs.fetch_add(1, Ordering::Relaxed);
            self.shared
                .sync_latency
                .record(started.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
        }
        Ok(())
    }

    /// Records a successful round; returns the appends it acknowledged.
    fn finish_round(&self, state: &mut WriterState, plan: &RoundPlan) -> Vec<Pending> {
        state.acked_ticket = state.acked_ticket.max(plan.target_ticket);
        if plan.target_end > state.durable_end {
            let newly = plan.target_end - state.durable_end;
            self.shared.records_acknowledged.fetch_add(newly, Ordering::Relaxed);
            state.durable_end = plan.target_end;
        }
        if let (Some(active), Some((_, sequence, synced_to))) = (&mut state.active, &plan.target) {
            if active.header.sequence == *sequence {
                active.synced_offset = active.synced_offset.max(*synced_to);
                if let Some(watermark) = plan.watermark {
                    active.watermark = watermark;
                }
            }
        }
        let mut completed = Vec::new();
        while state
            .pending
            .front()
            .is_some_and(|pending| pending.ticket < plan.target_ticket)
        {
            completed.extend(state.pending.pop_front());
        }
        completed
    }

    /// Encodes, writes and publishes a batch; returns its ticket and last
    /// index. Nothing is written if it fails before the write.
    fn write_batch(
        &self,
        writer: &WriterCell,
        batch: &[NewRecord<'_>],
        on_durable: Option<OnDurable>,
    ) -> Result<(u64, u64)> {
        let mut encoded = encode(batch)?;
        self.check_disk_reserve()?;
        let mut state = self.wait_for_room(writer)?;
        let fits_empty = segment::records_limit(state.segment_bytes, 0) - RECORDS_OFFSET;
        if encoded.footprint > fits_empty {
            return Err(Error::invalid(format!(
                "an append of {} bytes does not fit in a {}-byte segment",
                encoded.footprint, state.segment_bytes
            )));
        }
        if !self.fits_active(&state, &encoded) {
            self.roll_over(&mut state)?;
        }
        self.clear_clean_mark(&mut state)?;
        let first_index = state.next_index;
        if first_index + batch.len() as u64 > format::INDEX_MAX {
            return Err(Error::invalid(format!(
                "the log is full: index {} is the last",
                format::INDEX_MAX
            )));
        }
        stamp(&mut encoded, first_index);
        let active = state.active.as_mut().expect("roll_over leaves an active segment");
        let base = active.write_offset;
        if let Err(error) = active.file.write_all_at(&encoded.bytes, base) {
            let cause = format!("writing records at offset {base}: {error}");
            state.poisoned = Some(cause.clone());
            return Err(Error::Poisoned { cause });
        }
        let new_offsets: Vec<u32> = encoded
            .records
            .iter()
            .map(|(at, _, _)| (base + *at as u64) as u32)
            .collect();
        active.offsets.extend_from_slice(&new_offsets);
        active.write_offset += encoded.bytes.len() as u64;
        let last_index = first_index + batch.len() as u64 - 1;
        state.next_index = last_index + 1;
        {
            let mut view = self.view_mut();
            view.active_offsets.extend_from_slice(&new_offsets);
            view.next_index = last_index + 1;
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        if ticket == 0 {
            // The first append since open: from now on keep a spare ready.
            writer.spare().wanted = true;
            writer.spare_wanted.notify_one();
        }
        if let Some(on_durable) = on_durable {
            state.pending.push_back(Pending {
                ticket,
                last_index,
                on_durable,
            });
        }
        if self.shared.options.durability == Durability::UnsafeNoSync {
            // Nothing to wait for: an unsafe log acknowledges on write.
            drop(state);
            self.commit_pending()?;
        }
        Ok((ticket, last_index))
    }

    /// Before the first write into a segment that was closed cleanly,
    /// replaces its clean-close watermark by an ordinary one (synced), so
    /// that a crash from now on is never mistaken for a clean end.
    ///
    /// On disk when it returns `Ok`: no clean-close mark in the active
    /// segment.
    fn clear_clean_mark(&self, state: &mut WriterState) -> Result<()> {
        let Some(active) = state.active.as_mut().filter(|active| active.watermark.clean_end != 0) else {
            return Ok(());
        };
        let cleared = Watermark {
            generation: active.watermark.generation + 1,
            durable_end: active.watermark.durable_end,
            clean_end: 0,
        };
        let write = || -> std::io::Result<()> {
            active.file.write_all_at(&cleared.encode(), cleared.slot_offset())?;
            active.file.sync_data()
        };
        if let Err(error) = write() {
            let cause = format!("clearing the clean-close mark: {error}");
            state.poisoned = Some(cause.clone());
            return Err(Error::Poisoned { cause });
        }
        active.watermark = cleared;
        Ok(())
    }

    /// At a clean close: marks in the active segment's watermark where its
    /// records end, so that the next open need not zero what follows.
    /// Skipped (harmlessly: the next open then zeroes the bounded extent)
    /// when anything is unacknowledged, poisoned or unsynced by design.
    ///
    /// On disk when it returns `Ok`: a watermark covering every record,
    /// with the clean end, durable.
    pub(super) fn mark_clean_close(&self) -> Result<()> {
        let writer = self.writer()?;
        if self.shared.options.durability != Durability::Synced {
            return Ok(());
        }
        let _claim = writer.claim();
        let mut state = writer.lock();
        let settled = state.poisoned.is_none() && state.acked_ticket == state.next_ticket;
        let durable_end = state.durable_end;
        let Some(active) = state.active.as_mut().filter(|_| settled) else {
            return Ok(());
        };
        let mark = Watermark {
            generation: active.watermark.generation + 1,
            durable_end,
            clean_end: active.write_offset,
        };
        let write = || -> std::io::Result<()> {
            active.file.write_all_at(&mark.encode(), mark.slot_offset())?;
            active.file.sync_data()
        };
        write().map_err(|error| Error::io("marking a clean close", error))?;
        active.watermark = mark;
        Ok(())
    }

    fn check_disk_reserve(&self) -> Result<()> {
        self.check_free_space(1)
    }

    /// Refuses (with [`Error::DiskNearlyFull`]) when free space is below
    /// `factor` times the disk reserve; nothing is written either way.
    pub(crate) fn check_free_space(&self, factor: u64) -> Result<()> {
        let reserve = self.shared.options.disk_reserve_bytes.saturating_mul(factor);
        if reserve == 0 {
            return Ok(());
        }
        let available = self
            .shared
            .storage
            .available_bytes(&self.shared.dir)
            .map_err(|error| Error::io("reading free disk space", error))?;
        if available < reserve {
            return Err(Error::DiskNearlyFull {
                available_bytes: available,
                reserve_bytes: reserve,
            });
        }
        Ok(())
    }

    /// Takes the writer lock once the unsynced bytes and waiting callbacks
    /// are under their bounds, leading rounds as needed.
    fn wait_for_room<'a>(&self, writer: &'a WriterCell) -> Result<MutexGuard<'a, WriterState>> {
        loop {
            let state = writer.lock();
            if let Some(cause) = &state.poisoned {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            let unsynced = state
                .active
                .as_ref()
                .map_or(0, |active| active.write_offset - active.synced_offset);
            if unsynced <= UNSYNCED_BYTES_MAX && state.pending.len() < PENDING_APPENDS_MAX {
                return Ok(state);
            }
            self.follow_or_lead(writer, state)?;
        }
    }

    fn fits_active(&self, state: &WriterState, encoded: &Encoded) -> bool {
        state.active.as_ref().is_some_and(|active| {
            let records_after = active.offsets.len() as u64 + encoded.records.len() as u64;
            let end = active.write_offset + encoded.bytes.len() as u64;
            end <= segment::records_limit(active.header.capacity, records_after)
        })
    }

    /// Seals the active segment (if any) and creates the next one.
    ///
    /// On disk when it returns `Ok`: the old segment sealed and synced, the
    /// new one created and synced, both directory entries durable.
    fn roll_over(&self, state: &mut WriterState) -> Result<()> {
        self.seal_active(state)?;
        let header = SegmentHeader {
            sequence: state.next_sequence,
            first_index: state.next_index,
            capacity: state.segment_bytes,
        };
        let file = self.new_segment_file(header).map_err(disk_full)?;
        let map = file
            .map(header.capacity)
            .map_err(|error| Error::io("mapping a new segment", error))?;
        state.next_sequence += 1;
        state.active = Some(Active {
            file,
            header,
            write_offset: RECORDS_OFFSET,
            synced_offset: RECORDS_OFFSET,
            offsets: Vec::new(),
            watermark: Watermark {
                generation: 0,
                durable_end: header.first_index,
                clean_end: 0,
            },
        });
        let mut view = self.view_mut();
        view.segments.push(Arc::new(Segment {
            header,
            body: Body::Active { map },
        }));
        view.active_offsets.clear();
        Ok(())
    }

    /// The file for a new segment: the preallocated spare when one of the
    /// right size is ready, else one created here and now.
    fn new_segment_file(&self, header: SegmentHeader) -> Result<Arc<dyn StorageFile>> {
        let storage = self.shared.storage.as_ref();
        let dir = &self.shared.dir;
        let writer = self.writer()?;
        // A recycled file first: it costs no zeros at all.
        let spare = {
            let mut slot = writer.spare();
            slot.recycled.pop().or_else(|| slot.spare.take())
        };
        let file = match spare {
            Some(spare) if spare.capacity == header.capacity => {
                segment::install_spare(storage, dir, &spare.path, spare.file, header)
            }
            _ => segment::create(storage, dir, header),
        };
        writer.spare_wanted.notify_one();
        file
    }

    /// The preallocator thread: keeps one spare segment ready. Ends at
    /// shutdown, removing an unused spare.
    pub(super) fn run_preallocator(&self) {
        let Some(writer) = &self.shared.writer else {
            return;
        };
        let storage = self.shared.storage.as_ref();
        let capacity = self.shared.options.segment_bytes;
        for made in 0u64.. {
            // A fresh name each time: the last spare may still be on its
            // way to becoming a segment under its old name.
            let path = self.shared.dir.join(format!("spare-{made}{}", segment::TEMP_SUFFIX));
            {
                let slot = writer
                    .spare_wanted
                    .wait_while(writer.spare(), |slot| {
                        (slot.spare.is_some() || !slot.wanted) && !slot.closed
                    })
                    .unwrap_or_else(|poison| poison.into_inner());
                if slot.closed {
                    if let Some(unused) = &slot.spare {
                        let _ = storage.remove(&unused.path);
                    }
                    return;
                }
            }
            match segment::create_spare(storage, &path, capacity) {
                Ok(file) => {
                    let mut slot = writer.spare();
                    if slot.closed {
                        let _ = storage.remove(&path);
                        return;
                    }
                    slot.spare = Some(Spare {
                        path: path.clone(),
                        file,
                        capacity,
                    });
                }
                Err(error) => {
                    // No spare: rollovers create segments inline and report
                    // a full disk themselves. Try again after the next one.
                    tracing::debug!(%error, "could not preallocate a spare segment");
                    let slot = writer.spare();
                    if !slot.closed {
                        let _unused = writer
                            .spare_wanted
                            .wait(slot)
                            .unwrap_or_else(|poison| poison.into_inner());
                    }
                }
            }
        }
    }

    /// Seals the active segment, if there is one with records; an empty
    /// one is removed instead.
    ///
    /// On disk when it returns `Ok`: the segment's records, index block and
    /// footer, durable. A failure poisons the log.
    fn seal_active(&self, state: &mut WriterState) -> Result<()> {
        let Some(active) = state.active.take() else {
            return Ok(());
        };
        if active.offsets.is_empty() {
            return self.discard_empty_active(state, active);
        }
        if let Err(error) = segment::seal(
            active.file.as_ref(),
            &active.header,
            &active.offsets,
            active.write_offset,
        ) {
            let cause = error.to_string();
            state.poisoned = Some(cause.clone());
            return Err(Error::Poisoned { cause });
        }
        let footer = Footer {
            sequence: active.header.sequence,
            first_index: active.header.first_index,
            record_count: active.offsets.len() as u64,
            records_end: active.write_offset,
            index_crc: crc32fast::hash(&format::encode_index(&active.offsets)),
        };
        // Sealing synced every record of the segment.
        state.durable_end = state
            .durable_end
            .max(active.header.first_index + active.offsets.len() as u64);
        let mut view = self.view_mut();
        let last = view.segments.last_mut().expect("the active segment is in the view");
        let Body::Active { map } = &last.body else {
            unreachable!("the view's last segment is the active one");
        };
        *last = Arc::new(Segment {
            header: active.header,
            body: Body::Sealed {
                map: segment::LazyMap::ready(active.file.clone(), active.header.capacity, map.clone()),
                footer,
                index_checked: std::sync::OnceLock::new(),
            },
        });
        view.active_offsets.clear();
        Ok(())
    }

    fn discard_empty_active(&self, state: &mut WriterState, active: Active) -> Result<()> {
        recovery::remove_segment_files(self.shared.storage.as_ref(), &self.shared.dir, active.header.sequence)?;
        self.sync_dir()?;
        let mut view = self.view_mut();
        view.segments.pop();
        view.active_offsets.clear();
        state.next_sequence = state.next_sequence.max(active.header.sequence + 1);
        Ok(())
    }

    fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.shared.view.write().unwrap_or_else(|poison| poison.into_inner())
    }

    fn sync_dir(&self) -> Result<()> {
        self.shared
            .storage
            .sync_dir(&self.shared.dir)
            .map_err(|error| Error::io("syncing the log directory", error))
    }

    /// Seals the active segment, so that the next append starts a new one.
    ///
    /// On disk when it returns `Ok`: every written record durable, and the
    /// segment's index block and footer.
    pub fn seal(&self) -> Result<()> {
        let writer = self.writer()?;
        let _maintenance = writer.maintenance.lock().unwrap_or_else(|poison| poison.into_inner());
        let _claim = writer.claim();
        self.commit_round(writer)?;
        let mut state = writer.lock();
        self.seal_active(&mut state)
    }

    /// Removes every record after `index` (Raft conflict resolution). Only
    /// a suffix is ever removed; appends continue at `index + 1`. A no-op
    /// if the log ends at or before `index`.
    ///
    /// On disk when it returns `Ok`: the watermark lowered to `index + 1`,
    /// then every later record removed (whole segments deleted, the rest
    /// zeroed), all durable. A crash part-way leaves a valid log that ends
    /// somewhere between `index` and the old end.
    pub fn truncate_after(&self, index: u64) -> Result<()> {
        self.truncate_from(index.saturating_add(1))
    }

    /// Removes the record at `index` and every later one: the same as
    /// [`Log::truncate_after`]`(index - 1)`, and also able to empty a log
    /// whose first index is 0. A no-op if the log ends before `index`.
    ///
    /// On disk when it returns `Ok`: as for [`Log::truncate_after`].
    pub fn truncate_from(&self, index: u64) -> Result<()> {
        let writer = self.writer()?;
        let _maintenance = writer.maintenance.lock().unwrap_or_else(|poison| poison.into_inner());
        let _claim = writer.claim();
        self.commit_round(writer)?;
        let mut state = writer.lock();
        let new_next = index;
        if new_next >= state.next_index {
            return Ok(());
        }
        let first = self.first_index();
        if new_next < first {
            return Err(Error::invalid(format!(
                "cannot truncate from {index}: records below {first} are purged"
            )));
        }
        let result = self.truncate_locked(&mut state, new_next);
        if let Err(error) = &result {
            state.poisoned = Some(error.to_string());
        }
        result
    }

    fn truncate_locked(&self, state: &mut WriterState, new_next: u64) -> Result<()> {
        // Readers stop seeing the removed records before any byte changes.
        let doomed: Vec<Arc<Segment>> = {
            let mut view = self.view_mut();
            view.next_index = new_next;
            let keep = view
                .segments
                .partition_point(|segment| segment.first_index() < new_next);
            view.segments.split_off(keep)
        };
        state.next_index = new_next;
        state.durable_end = state.durable_end.min(new_next);
        if !doomed.is_empty() {
            if state.active.as_ref().is_some_and(|active| {
                doomed
                    .iter()
                    .any(|segment| segment.sequence() == active.header.sequence)
            }) {
                state.active = None;
            }
            for segment in doomed.iter().rev() {
                recovery::remove_segment_files(self.shared.storage.as_ref(), &self.shared.dir, segment.sequence())?;
            }
            self.sync_dir()?;
        }
        let Some(last) = self.view().segments.last().cloned() else {
            self.view_mut().active_offsets.clear();
            return Ok(());
        };
        if state.active.is_none() {
            let sealed_end = last.first_index() + last.sealed_count().unwrap_or(0);
            if new_next >= sealed_end {
                // The cut falls on the sealed segment's end: it stays sealed
                // and the next append starts a new segment.
                self.view_mut().active_offsets.clear();
                return Ok(());
            }
            state.active = Some(self.reopen_for_truncation(&last)?);
        }
        self.cut_active(state, new_next)
    }

    /// Turns the (sealed or compressed) last segment back into the active
    /// one: restores a compressed image, reads the record offsets, lowers
    /// the watermark and erases the footer.
    ///
    /// On disk when it returns `Ok`: the segment uncompressed, with no
    /// footer and a watermark of at most its record count, durable.
    fn reopen_for_truncation(&self, segment: &Arc<Segment>) -> Result<Active> {
        let storage = self.shared.storage.as_ref();
        let dir = &self.shared.dir;
        let bytes = self.segment_bytes(segment)?;
        let count = segment.sealed_count().expect("a non-active segment is sealed");
        let mut offsets = Vec::with_capacity(count as usize);
        for index in segment.first_index()..segment.first_index() + count {
            offsets.push(segment.sealed_offset(bytes.bytes(), index)? as u32);
        }
        let path = dir.join(segment::segment_name(segment.sequence()));
        if segment.is_compressed() {
            restore_uncompressed(self, segment, bytes.bytes())?;
            self.forget_decompressed(segment.sequence());
        }
        let (file, reloaded) = segment::load_mapped(storage, &path, segment.sequence(), OpenMode::ReadWrite)?;
        let map = reloaded.bytes(storage)?;
        let watermark = Watermark::newest(&map.bytes()[..RECORDS_OFFSET as usize]).unwrap_or(Watermark {
            generation: 0,
            durable_end: segment.first_index(),
            clean_end: 0,
        });
        let end = offsets.last().map_or(RECORDS_OFFSET, |&last| {
            last as u64 + record_len_in(bytes.bytes(), last as u64)
        });
        let lowered = Watermark {
            generation: watermark.generation + 1,
            durable_end: watermark.durable_end.min(segment.first_index() + count),
            clean_end: 0,
        };
        let capacity = segment.header.capacity;
        let index_start = segment::records_limit(capacity, count);
        let erase = || -> std::io::Result<()> {
            file.write_all_at(&lowered.encode(), lowered.slot_offset())?;
            recovery::zero_range(file.as_ref(), index_start, capacity)?;
            file.sync_data()
        };
        erase().map_err(|error| Error::io("unsealing a segment for truncation", error))?;
        let mut view = self.view_mut();
        *view.segments.last_mut().expect("the segment is in the view") = Arc::new(Segment {
            header: segment.header,
            body: Body::Active { map },
        });
        view.active_offsets = offsets.clone();
        Ok(Active {
            file,
            header: segment.header,
            write_offset: end,
            synced_offset: end,
            offsets,
            watermark: lowered,
        })
    }

    /// Cuts the active segment back so that its last record is
    /// `new_next - 1`: lowers the watermark (synced), then zeros the rest
    /// (synced).
    fn cut_active(&self, state: &mut WriterState, new_next: u64) -> Result<()> {
        let active = state.active.as_mut().expect("truncation made the last segment active");
        let keep = (new_next - active.header.first_index) as usize;
        if keep >= active.offsets.len() {
            self.view_mut().active_offsets = active.offsets.clone();
            return Ok(());
        }
        let cut_at = active.offsets[keep] as u64;
        let old_end = active.write_offset;
        let lowered = Watermark {
            generation: active.watermark.generation + 1,
            durable_end: active.watermark.durable_end.min(new_next),
            clean_end: 0,
        };
        let file = active.file.clone();
        let lower = || -> std::io::Result<()> {
            file.write_all_at(&lowered.encode(), lowered.slot_offset())?;
            file.sync_data()?;
            recovery::zero_range(file.as_ref(), cut_at, old_end)?;
            file.sync_data()
        };
        lower().map_err(|error| Error::io("truncating the active segment", error))?;
        active.offsets.truncate(keep);
        active.write_offset = cut_at;
        active.synced_offset = cut_at;
        active.watermark = lowered;
        self.view_mut().active_offsets = active.offsets.clone();
        Ok(())
    }

    /// Removes every record below `index` (retention): whole segments below
    /// it are deleted (or kept for reuse); records of a segment that
    /// straddles it stay on disk but are no longer readable. If `index` is
    /// past the end, the log becomes empty and the next append gets `index`.
    ///
    /// A purge inside the log touches only its front, so it runs beside
    /// appends: it holds neither the writer's claim nor its lock, only the
    /// readers' view for a moment. A purge past the end stops appends
    /// while it empties the log.
    ///
    /// On disk when it returns `Ok`: the purge point, durable in META
    /// *before* any segment was deleted; the deletions, durable.
    pub fn purge_before(&self, index: u64) -> Result<()> {
        let writer = self.writer()?;
        if index > format::INDEX_MAX {
            return Err(Error::invalid(format!(
                "cannot purge before {index}: indexes end at {}",
                format::INDEX_MAX
            )));
        }
        let _maintenance = writer.maintenance.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(cause) = &writer.lock().poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        if index <= self.first_index() {
            return Ok(());
        }
        // Only truncation lowers the next index, and it is excluded by the
        // maintenance lock: a purge point inside the log stays inside it.
        let result = if index < writer.lock().next_index {
            self.purge_front(index)
        } else {
            let _claim = writer.claim();
            self.commit_round(writer)?;
            let mut state = writer.lock();
            self.purge_everything(&mut state, index)
        };
        if let Err(error) = &result {
            writer.lock().poisoned = Some(error.to_string());
        }
        result
    }

    /// Purges whole segments below `index < next_index`.
    fn purge_front(&self, index: u64) -> Result<()> {
        self.write_meta(index)?;
        let doomed: Vec<Arc<Segment>> = {
            let mut view = self.view_mut();
            view.first_index = index;
            // A segment goes when the next one starts at or before `index`;
            // the last (active) segment never does.
            let keep_from = view
                .segments
                .windows(2)
                .take_while(|pair| pair[1].first_index() <= index)
                .count();
            view.segments.drain(..keep_from).collect()
        };
        let removed_any = !doomed.is_empty();
        for segment in doomed {
            self.recycle_or_remove(segment)?;
        }
        if removed_any {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Purges every record: the log restarts empty at `index`. The caller
    /// holds the claim and the writer lock.
    fn purge_everything(&self, state: &mut WriterState, index: u64) -> Result<()> {
        self.write_meta(index)?;
        let doomed: Vec<Arc<Segment>> = {
            let mut view = self.view_mut();
            view.first_index = index;
            view.next_index = index;
            view.active_offsets.clear();
            view.segments.drain(..).collect()
        };
        state.active = None;
        state.next_index = index;
        state.durable_end = index;
        for segment in doomed {
            self.recycle_or_remove(segment)?;
        }
        self.sync_dir()
    }

    /// Keeps a purged segment's file for reuse when the pool has room and
    /// nobody can still read it (no record, cursor or view holds its map:
    /// a reused file's bytes change, a removed file's never do); removes
    /// it otherwise. Not durable until the directory is synced.
    fn recycle_or_remove(&self, segment: Arc<Segment>) -> Result<()> {
        let storage = self.shared.storage.as_ref();
        let dir = &self.shared.dir;
        let writer = self.writer()?;
        let unshared = match &segment.body {
            Body::Active { map } => Arc::strong_count(map) == 1,
            Body::Sealed { map, .. } => map.is_unshared(),
            Body::Compressed { .. } => false,
        };
        let reusable = unshared
            && Arc::strong_count(&segment) == 1
            && segment.header.capacity == self.shared.options.segment_bytes
            && writer.spare().recycled.len() < RECYCLED_SEGMENTS_MAX;
        if !reusable {
            return recovery::remove_segment_files(storage, dir, segment.sequence());
        }
        let from = dir.join(segment::segment_name(segment.sequence()));
        let to = dir.join(format!("recycled-{:020}{}", segment.sequence(), segment::TEMP_SUFFIX));
        drop(segment);
        let recycle = || -> std::io::Result<Arc<dyn StorageFile>> {
            storage.rename(&from, &to)?;
            storage.open(&to, OpenMode::ReadWrite)
        };
        let file = recycle().map_err(|error| Error::io("recycling a purged segment", error))?;
        writer.spare().recycled.push(Spare {
            path: to,
            file,
            capacity: self.shared.options.segment_bytes,
        });
        Ok(())
    }

    /// Removes the files kept for reuse (at close). Best effort: an open
    /// removes leftover temporaries anyway.
    pub(super) fn discard_recycled(&self) {
        if let Some(writer) = &self.shared.writer {
            for spare in writer.spare().recycled.drain(..) {
                let _ = self.shared.storage.remove(&spare.path);
            }
        }
    }

    /// Replaces META with a new purge point.
    ///
    /// On disk when it returns `Ok`: META holds `first_index`, durable.
    fn write_meta(&self, first_index: u64) -> Result<()> {
        let storage = self.shared.storage.as_ref();
        let dir = &self.shared.dir;
        let temp = dir.join(format!("{META_NAME}{}", segment::TEMP_SUFFIX));
        let write = || -> std::io::Result<()> {
            let _ = storage.remove(&temp);
            let file = storage.open(&temp, OpenMode::CreateNew)?;
            file.write_all_at(&format::encode_meta(first_index), 0)?;
            file.sync_data()?;
            storage.rename(&temp, &dir.join(META_NAME))?;
            storage.sync_dir(dir)
        };
        write().map_err(|error| Error::io("writing META", error))
    }

    /// Compresses every sealed segment except the newest `keep_uncompressed`
    /// sealed ones, and returns how many it compressed. Compressed segments
    /// stay readable by index.
    ///
    /// On disk when it returns `Ok`: each compressed segment as a durable
    /// `.seg.zst` file, its `.seg` file gone (durably).
    pub fn compress_cold(&self, keep_uncompressed: usize) -> Result<usize> {
        let writer = self.writer()?;
        let _maintenance = writer.maintenance.lock().unwrap_or_else(|poison| poison.into_inner());
        let sealed: Vec<Arc<Segment>> = self
            .view()
            .segments
            .iter()
            .filter(|segment| matches!(segment.body, Body::Sealed { .. }))
            .cloned()
            .collect();
        let cold = sealed.len().saturating_sub(keep_uncompressed);
        for segment in &sealed[..cold] {
            self.compress_one(segment)?;
        }
        Ok(cold)
    }

    fn compress_one(&self, segment: &Arc<Segment>) -> Result<()> {
        let storage = self.shared.storage.as_ref();
        let dir = &self.shared.dir;
        // Check every record before the only uncompressed copy goes away.
        self.verify_segment(segment)?;
        let image = segment.bytes(storage)?;
        segment::compress(storage, dir, segment, image.bytes())?;
        let path = dir.join(segment::compressed_name(segment.sequence()));
        let compressed = Arc::new(segment::load_compressed(storage, &path, segment.sequence())?);
        self.forget_decompressed(segment.sequence());
        let mut view = self.view_mut();
        if let Some(slot) = view
            .segments
            .iter_mut()
            .find(|slot| slot.sequence() == segment.sequence())
        {
            *slot = compressed;
        }
        Ok(())
    }

    /// Reads and checks every record of a segment.
    fn verify_segment(&self, segment: &Segment) -> Result<()> {
        let count = segment.sealed_count().unwrap_or(0);
        let first = segment.first_index().max(self.first_index());
        let end = segment.first_index() + count;
        for record in self.range(first..end) {
            record?;
        }
        Ok(())
    }
}

fn record_len_in(bytes: &[u8], offset: u64) -> u64 {
    let at = offset as usize;
    bytes
        .get(at..at + RECORD_HEADER_BYTES)
        .and_then(|slice| <&[u8; RECORD_HEADER_BYTES]>::try_from(slice).ok())
        .and_then(|header| RecordHeader::parse(header).ok())
        .map_or(0, |header| header.framed_len())
}

/// Writes a compressed segment's image back as a plain segment file.
///
/// On disk when it returns `Ok`: `NNN.seg` durable, `NNN.seg.zst` gone.
fn restore_uncompressed(log: &Log, segment: &Segment, image: &[u8]) -> Result<()> {
    let storage = log.shared.storage.as_ref();
    let dir = &log.shared.dir;
    let name = segment::segment_name(segment.sequence());
    let temp = dir.join(format!("{name}{}", segment::TEMP_SUFFIX));
    let write = || -> std::io::Result<()> {
        let file = storage.open(&temp, OpenMode::CreateNew)?;
        file.write_all_at(image, 0)?;
        file.sync_data()?;
        storage.rename(&temp, &dir.join(&name))?;
        storage.sync_dir(dir)?;
        storage.remove(&dir.join(segment::compressed_name(segment.sequence())))?;
        storage.sync_dir(dir)
    };
    write().map_err(|error| Error::io("restoring a compressed segment", error))
}

/// What the next round must do, if anything.
fn plan_round(state: &WriterState, durability: Durability) -> Option<RoundPlan> {
    let unsynced = state.acked_ticket < state.next_ticket;
    let stale_watermark = durability == Durability::Synced
        && state
            .active
            .as_ref()
            .is_some_and(|active| active.watermark.durable_end < state.durable_end);
    if !unsynced && !stale_watermark {
        return None;
    }
    let target = state
        .active
        .as_ref()
        .map(|active| (active.file.clone(), active.header.sequence, active.write_offset));
    // The watermark may claim only what is already acknowledged durable,
    // and an unsynced log has nothing durable to claim.
    let watermark = state
        .active
        .as_ref()
        .filter(|_| durability == Durability::Synced)
        .filter(|active| active.watermark.durable_end < state.durable_end)
        .map(|active| Watermark {
            generation: active.watermark.generation + 1,
            durable_end: state.durable_end,
            clean_end: 0,
        });
    Some(RoundPlan {
        target_ticket: state.next_ticket,
        target_end: state.next_index,
        target,
        watermark,
    })
}

fn fail_all(failed: Vec<Pending>, cause: &str) {
    for pending in failed {
        (pending.on_durable)(Err(Error::Poisoned {
            cause: cause.to_owned(),
        }));
    }
}

/// A full disk while creating a segment is a refusal, not a failure.
fn disk_full(error: Error) -> Error {
    match &error {
        Error::Io { source, .. } if source.raw_os_error() == Some(28) => Error::DiskNearlyFull {
            available_bytes: 0,
            reserve_bytes: 0,
        },
        _ => error,
    }
}

impl Log {
    /// The flusher thread: runs a round whenever callback appends wait, and
    /// one more when the log has been idle for the idle delay with a stale
    /// watermark. Ends at shutdown.
    pub(super) fn run_flusher(&self) {
        let Some(writer) = &self.shared.writer else {
            return;
        };
        let delay = self.shared.options.idle_watermark_delay;
        loop {
            let mut state = writer.lock();
            if state.shutting_down {
                // Checked under the lock before waiting: a shutdown that
                // came before the wait is never a lost wake-up.
                return;
            }
            let rounds_before = state.rounds;
            if !wants_round(&state) {
                let (woken, timeout) = writer
                    .flusher_wake
                    .wait_timeout(state, delay)
                    .unwrap_or_else(|poison| poison.into_inner());
                state = woken;
                let idle = timeout.timed_out() && state.rounds == rounds_before;
                let idle_work = idle && watermark_stale(&state, self.shared.options.durability);
                if !(wants_round(&state) || idle_work || state.shutting_down) {
                    continue;
                }
            }
            if state.shutting_down {
                return;
            }
            drop(state);
            if let Err(error) = self.commit_pending() {
                tracing::debug!(%error, "flusher round failed");
                let state = writer.lock();
                // A poisoned log has nothing left to flush: wait for shutdown.
                let _unused = writer
                    .flusher_wake
                    .wait_while(state, |state| !state.shutting_down)
                    .unwrap_or_else(|poison| poison.into_inner());
                return;
            }
        }
    }
}

fn wants_round(state: &WriterState) -> bool {
    !state.pending.is_empty() && !state.claimed && state.poisoned.is_none()
}

fn watermark_stale(state: &WriterState, durability: Durability) -> bool {
    durability == Durability::Synced
        && state.poisoned.is_none()
        && state
            .active
            .as_ref()
            .is_some_and(|active| active.watermark.durable_end < state.durable_end)
}
