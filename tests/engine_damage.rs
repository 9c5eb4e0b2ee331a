//! Damage on disk: a flipped bit or a truncation inside a record that was
//! acknowledged durable is reported with its location (segment, offset,
//! index) and never silently dropped; inside an unsynced tail it is
//! repaired.

use std::sync::Arc;

use farmlog_engine::io::{OpenMode, SimStorage, Storage};
use farmlog_engine::{CorruptionKind, Error, Log, TailCase};
use farmlog_tests::{batch, check, open_sim, sim_dir, sim_options, sim_storage, Model};

fn segment_path(sequence: u64) -> std::path::PathBuf {
    sim_dir().join(format!("{sequence:020}.seg"))
}

/// A log of several segments, closed cleanly (so its watermark covers
/// every record).
fn durable_log(storage: &SimStorage) -> Model {
    let log = open_sim(storage);
    let mut model = Model::new(log.first_index());
    for round in 0..100 {
        let payloads = model.stage(1, &[1000 + round * 37, 300]);
        log.append(&batch(1, &payloads)).expect("append");
    }
    model.ack_all();
    assert!(
        log.segments().len() >= 3,
        "the test needs sealed segments and an active one"
    );
    model
}

fn try_open(storage: &SimStorage) -> farmlog_engine::Result<Log> {
    Log::open_with(Arc::new(storage.clone()), &sim_dir(), sim_options())
}

/// (segment, offset) of a record.
fn location(storage: &SimStorage, index: u64) -> (u64, u64) {
    let log = open_sim(storage);
    log.read(index)
        .expect("the record is readable before the damage")
        .location()
}

#[test]
fn bit_flip_in_a_sealed_segment_is_reported_at_read_with_its_location() {
    let storage = sim_storage(1);
    let model = durable_log(&storage);
    let index = model.first + 3;
    let (segment, offset) = location(&storage, index);
    storage.flip_bit(&segment_path(segment), offset + 40, 2).expect("flip");

    // Opening reads only headers, footers and the tail: it succeeds.
    let log = try_open(&storage).expect("open does not scan sealed segments");
    let error = log.read(index).expect_err("a damaged record must not read back");
    let corruption = error.corruption().expect("a corruption error");
    assert_eq!(
        (corruption.segment, corruption.offset, corruption.index),
        (segment, offset, Some(index))
    );
    assert_eq!(corruption.kind, CorruptionKind::RecordChecksum);
    // Iteration stops at it with the same error; verify finds it too.
    let stopped = log
        .range(..)
        .find_map(|record| record.err())
        .expect("iteration reports the damage");
    assert_eq!(stopped.corruption(), Some(corruption));
    let verified = log.verify(&mut |_| {}).expect_err("verify reports the damage");
    assert_eq!(verified.corruption(), Some(corruption));
    // Nothing was dropped: the records around it still read.
    assert!(log.read(index - 1).is_ok() && log.read(index + 1).is_ok());
}

#[test]
fn bit_flip_in_an_acknowledged_tail_record_fails_the_open_with_its_location() {
    let storage = sim_storage(2);
    let model = durable_log(&storage);
    let index = model.next() - 1;
    let (segment, offset) = location(&storage, index);
    storage.flip_bit(&segment_path(segment), offset + 33, 0).expect("flip");

    let error = try_open(&storage).expect_err("an acknowledged record is damaged");
    let Error::DurableRecordLost(corruption) = &error else {
        panic!("expected DurableRecordLost, got {error}");
    };
    assert_eq!(
        (corruption.segment, corruption.offset, corruption.index),
        (segment, offset, Some(index))
    );
    // The message an operator sees names all three.
    let message = error.to_string();
    assert!(
        message.contains(&format!("{segment:020}"))
            && message.contains(&offset.to_string())
            && message.contains(&index.to_string()),
        "{message}"
    );
    // The failed open changed nothing: a read-only open still sees it all,
    // and reports the damage instead of hiding it.
    let read_only = Log::open_read_only_with(Arc::new(storage.clone()), &sim_dir()).expect("read-only open");
    assert!(matches!(read_only.recovery_report().tail, TailCase::DurableDamaged(_)));
    assert_eq!(
        read_only.next_index(),
        index,
        "read-only view ends before the damaged record"
    );
}

#[test]
fn zeroed_acknowledged_record_is_reported_missing_not_truncated() {
    let storage = sim_storage(3);
    let model = durable_log(&storage);
    let index = model.next() - 2;
    let (segment, offset) = location(&storage, index);
    let file = storage
        .open(&segment_path(segment), OpenMode::ReadWrite)
        .expect("open segment");
    file.write_all_at(&vec![0u8; 4096], offset).expect("zero");
    file.sync_data().expect("sync");
    drop(file);

    let error = try_open(&storage).expect_err("acknowledged records are missing");
    let corruption = error.corruption().expect("located");
    assert!(matches!(error, Error::DurableRecordLost(_)));
    assert_eq!(
        (corruption.segment, corruption.offset, corruption.index),
        (segment, offset, Some(index))
    );
    assert!(matches!(corruption.kind, CorruptionKind::Missing { .. }));
}

#[test]
fn truncated_segment_file_is_reported_with_its_segment() {
    let storage = sim_storage(4);
    durable_log(&storage);
    // Replace the first segment by a shorter copy of itself.
    let path = segment_path(1);
    let file = storage.open(&path, OpenMode::Read).expect("open");
    let mut head = vec![0u8; 8192];
    file.read_exact_at(&mut head, 0).expect("read");
    drop(file);
    storage.remove(&path).expect("remove");
    let short = storage.open(&path, OpenMode::CreateNew).expect("create");
    short.write_all_at(&head, 0).expect("write");
    drop(short);

    let error = try_open(&storage).expect_err("a truncated segment");
    let corruption = error.corruption().expect("located");
    assert_eq!(corruption.segment, 1);
    assert!(matches!(error, Error::Corrupt(_)), "{error}");
}

#[test]
fn damage_in_an_unsynced_tail_is_repaired() {
    let mut repaired = 0;
    for seed in 0..16 {
        let storage = sim_storage(100 + seed);
        let mut model = durable_log(&storage);
        let acked_end = model.next();
        let log = open_sim(&storage);
        // Written, never synced, never acknowledged.
        let payloads = model.stage(1, &[200, 200, 200]);
        log.submit(&batch(1, &payloads), Box::new(|_| {})).expect("submit");
        let (segment, offset) = log.read(acked_end).expect("written records are readable").location();
        storage.flip_bit(&segment_path(segment), offset + 36, 5).expect("flip");
        storage.crash();
        drop(log);

        let log = try_open(&storage).expect("a torn unsynced tail is repaired, not fatal");
        match log.recovery_report().tail.clone() {
            // The damaged record's page survived the crash: cut there.
            TailCase::TornTail { index, .. } => {
                assert_eq!(index, acked_end, "seed {seed}: the cut is at the damaged record");
                repaired += 1;
            }
            // Its page was lost: the log ends cleanly before it.
            TailCase::CleanEnd => assert_eq!(log.next_index(), acked_end, "seed {seed}"),
            other => panic!("seed {seed}: unexpected tail {other:?}"),
        }
        model.truncate_after(acked_end - 1);
        check(&log, &model);
        log.verify(&mut |_| {}).expect("the repaired log verifies clean");
        // The repair is durable: a crash right after it changes nothing.
        storage.crash();
        drop(log);
        let log = try_open(&storage).expect("reopen after repair");
        assert_eq!(log.recovery_report().tail, TailCase::CleanEnd);
        check(&log, &model);
    }
    assert!(repaired >= 4, "only {repaired} of 16 seeds exercised the repair");
}

/// The on-disk watermark covers every commit round but the newest, until
/// another round (or the flusher's idle update) covers that one too. A
/// damaged record of the newest round is therefore cut as torn at open:
/// the one case the engine cannot tell apart, which replication handles
/// with its tail fence (`replica/src/fence.rs`).
#[test]
fn the_watermark_vouches_for_every_round_but_the_newest() {
    let storage = sim_storage(7);
    let log = open_sim(&storage);
    let mut model = Model::new(log.first_index());
    let payloads = model.stage(1, &[300, 300]);
    log.append(&batch(1, &payloads)).expect("append");
    let first_round_end = log.durable_end();
    let payloads = model.stage(1, &[300, 300]);
    log.append(&batch(1, &payloads)).expect("append");
    model.ack_all();
    assert_eq!(
        log.watermark_end(),
        first_round_end,
        "the newest round is not vouched for yet"
    );
    assert_eq!(log.durable_end(), model.next());
    log.commit_pending().expect("an idle round");
    assert_eq!(
        log.watermark_end(),
        model.next(),
        "an idle round brings the watermark up to date"
    );

    // One more round, then damage to it: cut at open, as a torn tail.
    let newest = log.durable_end();
    let payloads = model.stage(1, &[300]);
    log.append(&batch(1, &payloads)).expect("append");
    let (segment, offset) = log.read(newest).expect("readable").location();
    storage.flip_bit(&segment_path(segment), offset + 40, 2).expect("flip");
    storage.crash();
    drop(log);
    let log = try_open(&storage).expect("open");
    assert!(
        matches!(log.recovery_report().tail, TailCase::TornTail { index, .. } if index == newest),
        "{:?}",
        log.recovery_report().tail
    );
    assert_eq!(log.next_index(), newest);
}
