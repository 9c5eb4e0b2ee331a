//! Segment recycling: a purged segment's file is reused for a later
//! segment instead of writing a new segment's worth of zeros. Its earlier
//! records stay in the file; they must never reappear: not after a clean
//! reopen, not after a crash at any point, and not to a reader that still
//! holds a record of the purged segment (such a file is not reused).

use farmlog_engine::io::Storage;
use farmlog_engine::{Log, TailCase};
use farmlog_tests::{batch, check, open_sim, sim_dir, sim_storage, Model};

fn names(storage: &farmlog_engine::io::SimStorage) -> Vec<String> {
    storage.list(&sim_dir()).expect("list")
}

/// Appends until the log spans `segments` segments.
fn fill(log: &Log, model: &mut Model, term: u64, segments: usize) {
    while log.segments().len() < segments {
        let payloads = model.stage(term, &[3000, 1000]);
        log.append(&batch(term, &payloads)).expect("append");
        model.ack_all();
    }
}

#[test]
fn purged_segments_are_reused_and_their_old_records_never_reappear() {
    for seed in 0..16 {
        let storage = sim_storage(seed);
        let log = open_sim(&storage);
        let mut model = Model::new(log.first_index());
        fill(&log, &mut model, 1, 5);
        let purge_to = log.segments()[2].first_index;
        log.purge_before(purge_to).expect("purge");
        model.purge_before(purge_to);
        assert_eq!(
            names(&storage)
                .iter()
                .filter(|name| name.starts_with("recycled-"))
                .count(),
            2,
            "seed {seed}"
        );

        // The next two rollovers reuse the recycled files.
        let before = log.segments().last().map(|segment| segment.sequence).unwrap_or(0);
        fill(&log, &mut model, 2, 5);
        assert!(log.segments().last().map(|segment| segment.sequence).unwrap_or(0) >= before + 2);
        assert_eq!(
            names(&storage)
                .iter()
                .filter(|name| name.starts_with("recycled-"))
                .count(),
            0,
            "seed {seed}"
        );
        check(&log, &model);

        // A clean reopen ends exactly at the last record, not in the old
        // life's records that follow it in the reused file.
        drop(log);
        let log = open_sim(&storage);
        assert_eq!(log.recovery_report().tail, TailCase::CleanEnd);
        check(&log, &model);

        // Unsynced appends into a reused file, then power loss.
        let payloads = model.stage(3, &[500; 6]);
        log.submit(&batch(3, &payloads), Box::new(|_| {})).expect("submit");
        storage.crash();
        drop(log);
        let log = open_sim(&storage);
        model.adopt_after_crash(&log);
        check(&log, &model);
        log.verify(&mut |_| {}).expect("verify");
    }
}

#[test]
fn a_segment_still_being_read_is_not_reused() {
    let storage = sim_storage(99);
    let log = open_sim(&storage);
    let mut model = Model::new(log.first_index());
    fill(&log, &mut model, 1, 4);
    let held = log.read(model.first).expect("read the first record");
    let held_payload = held.payload().to_vec();
    let purge_to = log.segments()[2].first_index;
    log.purge_before(purge_to).expect("purge");
    model.purge_before(purge_to);
    fill(&log, &mut model, 2, 6);
    // The held record's segment was removed, not reused: its bytes did not
    // change under the reader.
    assert_eq!(held.payload(), &held_payload[..]);
    check(&log, &model);
}
