//! A crash at every sync point of a scripted workload.
//!
//! The workload is run once to count its sync points (each `fdatasync`
//! and each directory sync). Then, for every sync point `n`, it is run
//! again on fresh simulated storage with power lost at `n`: the sync never
//! completes, unsynced pages are kept, dropped or torn at random. The log
//! is reopened and must hold every record whose append was acknowledged,
//! intact, followed at most by a prefix of what was in flight; maintenance
//! operations interrupted part-way must leave the log at their old or new
//! state, or (truncation) anywhere in between.

use farmlog_engine::io::SimStorage;
use farmlog_engine::Log;
use farmlog_tests::{batch, check, open_sim, sim_storage, Model};

/// What the workload knows was done when the machine died.
struct Outcome {
    model: Model,
    /// Truncation in progress: records after this index may or may not remain.
    truncating_after: Option<u64>,
    /// Purge in progress: the log may start at the old first index or this.
    purging_before: Option<u64>,
}

/// The scripted workload. Stops at the first error (the machine died).
fn workload(storage: &SimStorage) -> Outcome {
    let log = open_sim(storage);
    let mut outcome = Outcome {
        model: Model::new(log.first_index()),
        truncating_after: None,
        purging_before: None,
    };
    let result = steps(&log, &mut outcome);
    if result.is_err() {
        assert!(storage.is_dead(), "workload failed without a crash: {result:?}");
    }
    drop(log);
    outcome
}

fn steps(log: &Log, outcome: &mut Outcome) -> farmlog_engine::Result<()> {
    let model = &mut outcome.model;
    for round in 0..12u64 {
        let lengths: Vec<usize> = (0..(round as usize % 4 + 1))
            .map(|i| (round as usize * 997 + i * 131) % 7000)
            .collect();
        let payloads = model.stage(1, &lengths);
        log.append(&batch(1, &payloads))?;
        model.ack_all();
    }
    log.seal()?;
    log.compress_cold(1)?;
    let target = model.next() - 9;
    outcome.truncating_after = Some(target);
    log.truncate_after(target)?;
    outcome.truncating_after = None;
    model.truncate_after(target);
    for round in 0..6u64 {
        let payloads = model.stage(2, &[500 + round as usize * 1000, 64]);
        log.append(&batch(2, &payloads))?;
        model.ack_all();
    }
    let target = model.first + 5;
    outcome.purging_before = Some(target);
    log.purge_before(target)?;
    outcome.purging_before = None;
    model.purge_before(target);
    let payloads = model.stage(2, &[3000, 3000, 3000]);
    log.append(&batch(2, &payloads))?;
    model.ack_all();
    // Purge past the end: the log becomes empty and restarts there.
    let target = model.next() + 3;
    outcome.purging_before = Some(target);
    log.purge_before(target)?;
    outcome.purging_before = None;
    *model = Model::new(target);
    let payloads = model.stage(3, &[700, 800]);
    log.append(&batch(3, &payloads))?;
    model.ack_all();
    Ok(())
}

/// Checks a recovered log against what the workload knew.
fn check_recovered(log: &Log, outcome: &Outcome) {
    let model = &outcome.model;
    let first = log.first_index();
    if outcome.purging_before == Some(first) && first >= model.next() {
        // The purge past the end completed: nothing is left before it.
        assert_eq!(log.next_index(), first, "a purge past the end leaves an empty log");
        return;
    }
    let allowed_first = first == model.first || outcome.purging_before == Some(first);
    assert!(
        allowed_first,
        "log starts at {first}, model at {} (purging {:?})",
        model.first, outcome.purging_before
    );
    let acked_end = model.first + model.acked as u64;
    let must_reach = match outcome.truncating_after {
        Some(target) => acked_end.min(target + 1),
        None => acked_end,
    };
    assert!(
        log.next_index() >= must_reach,
        "acknowledged records lost: log ends at {}, must reach {must_reach}",
        log.next_index()
    );
    assert!(log.next_index() <= model.next(), "records that were never written");
    for record in log.range(..) {
        let record = record.unwrap_or_else(|error| panic!("reading a recovered record: {error}"));
        let want = model.get(record.index());
        assert_eq!(
            (record.term(), record.payload()),
            (want.term, &want.payload[..]),
            "record {}",
            record.index()
        );
    }
}

#[test]
fn crash_at_every_sync_point() {
    let counting = sim_storage(0);
    let full = workload(&counting);
    let sync_points = counting.sync_count();
    assert!(sync_points > 30, "the workload should sync often, got {sync_points}");
    // The uninterrupted run reopens to exactly the model.
    let mut model = full.model.clone();
    model.ack_all();
    check(&open_sim(&counting), &model);

    for crash_at in 1..=sync_points {
        for seed in 0..16 {
            let storage = sim_storage(crash_at * 1000 + seed);
            storage.crash_at_sync(crash_at);
            let outcome = workload(&storage);
            assert!(storage.is_dead(), "sync point {crash_at} was not reached");
            storage.reboot();
            let log = open_sim(&storage);
            check_recovered(&log, &outcome);
            // The recovered log takes appends and survives a clean reopen.
            let next = log.next_index();
            log.append(&batch(9, &[b"after recovery".to_vec()]))
                .expect("append after recovery");
            drop(log);
            let log = open_sim(&storage);
            assert_eq!(
                log.read(next).expect("record written after recovery").payload(),
                b"after recovery"
            );
        }
    }
}
