//! Failures the log must survive without lying: a second writer, a nearly
//! full disk, a failed fsync, a torn write.

use std::sync::Arc;

use farmlog_engine::{Error, Log, LogOptions};
use farmlog_tests::{batch, check, open_sim, sim_dir, sim_options, sim_storage, Model};

#[test]
fn second_writer_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions {
        segment_bytes: 64 << 10,
        disk_reserve_bytes: 0,
        ..LogOptions::default()
    };
    let first = Log::open(dir.path(), options.clone()).expect("first writer");
    let error = Log::open(dir.path(), options.clone()).expect_err("second writer");
    assert!(matches!(error, Error::Locked { .. }), "{error}");
    assert!(error.to_string().contains("already open for writing"), "{error}");
    // A reader is welcome beside the writer.
    first.append(&batch(1, &[b"visible".to_vec()])).expect("append");
    let reader = Log::open_read_only(dir.path()).expect("read-only beside a writer");
    assert_eq!(reader.read(1).expect("read").payload(), b"visible");
    drop(first);
    Log::open(dir.path(), options).expect("the lock is released on close");
}

#[test]
fn nearly_full_disk_refuses_appends_until_space_returns() {
    let storage = sim_storage(7);
    let options = farmlog_engine::LogOptions {
        disk_reserve_bytes: 1 << 20,
        ..sim_options()
    };
    let log = Log::open_with(Arc::new(storage.clone()), &sim_dir(), options).expect("open");
    let mut model = Model::new(log.first_index());
    let payloads = model.stage(1, &[100]);
    log.append(&batch(1, &payloads)).expect("append with room");
    model.ack_all();

    storage.set_available_bytes(Some(512 << 10));
    let refused = model.clone().stage(1, &[100]);
    let error = log.append(&batch(1, &refused)).expect_err("below the reserve");
    assert!(
        matches!(
            error,
            Error::DiskNearlyFull {
                available_bytes: 524288,
                reserve_bytes: 1048576
            }
        ),
        "{error}"
    );
    check(&log, &model);

    storage.set_available_bytes(None);
    let payloads = model.stage(1, &[100]);
    log.append(&batch(1, &payloads)).expect("appends work again, no reopen");
    model.ack_all();
    check(&log, &model);
}

#[test]
fn running_out_of_space_while_creating_a_segment_refuses_without_poisoning() {
    let storage = sim_storage(8);
    let log = open_sim(&storage); // reserve 0: only the real ENOSPC stops it
    let mut model = Model::new(log.first_index());
    let payloads = model.stage(1, &[100]);
    log.append(&batch(1, &payloads)).expect("append");
    model.ack_all();
    storage.set_available_bytes(Some(4096));
    let mut refused = None;
    for _ in 0..100 {
        let mut attempt = model.clone();
        let payloads = attempt.stage(1, &[6000]);
        match log.append(&batch(1, &payloads)) {
            Ok(_) => {
                model = attempt;
                model.ack_all();
            }
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let error = refused.expect("the disk filled up when a new segment was needed");
    assert!(matches!(error, Error::DiskNearlyFull { .. }), "{error}");
    check(&log, &model);
    storage.set_available_bytes(None);
    let payloads = model.stage(1, &[6000]);
    log.append(&batch(1, &payloads)).expect("not poisoned: appends resume");
    model.ack_all();
    check(&log, &model);
}

#[test]
fn failed_fsync_poisons_until_reopen() {
    let storage = sim_storage(9);
    let log = open_sim(&storage);
    let mut model = Model::new(log.first_index());
    let payloads = model.stage(1, &[10, 20]);
    log.append(&batch(1, &payloads)).expect("append");
    model.ack_all();

    storage.fail_sync_at(storage.sync_count() + 1);
    // Staged in the model as in flight: written, never acknowledged.
    let lost = model.stage(1, &[30]);
    let error = log.append(&batch(1, &lost)).expect_err("the sync failed");
    assert!(matches!(error, Error::Io { .. } | Error::Poisoned { .. }), "{error}");
    let again = log.append(&batch(1, &lost)).expect_err("poisoned");
    assert!(matches!(again, Error::Poisoned { .. }), "{again}");
    assert!(matches!(log.commit_pending(), Err(Error::Poisoned { .. })));
    drop(log);

    let log = open_sim(&storage);
    // The failed record was never acknowledged: it may or may not be there.
    model.adopt_after_crash(&log);
    check(&log, &model);
    let payloads = model.stage(1, &[40]);
    log.append(&batch(1, &payloads)).expect("reopened log appends");
}

#[test]
fn torn_write_poisons_and_recovery_cuts_it() {
    let storage = sim_storage(10);
    let log = open_sim(&storage);
    let mut model = Model::new(log.first_index());
    let payloads = model.stage(1, &[500; 4]);
    log.append(&batch(1, &payloads)).expect("append");
    model.ack_all();
    storage.tear_next_write();
    let torn = model.clone().stage(1, &[3000]);
    assert!(matches!(log.append(&batch(1, &torn)), Err(Error::Poisoned { .. })));
    assert!(matches!(log.append(&batch(1, &torn)), Err(Error::Poisoned { .. })));
    storage.crash();
    drop(log);
    let log = open_sim(&storage);
    check(&log, &model);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let storage = sim_storage(11);
    let log = open_sim(&storage);
    assert!(matches!(log.append(&[]), Err(Error::InvalidInput { .. })));
    let huge = vec![0u8; farmlog_engine::log::PAYLOAD_BYTES_MAX + 1];
    let error = log.append(&batch(1, &[huge])).expect_err("too large");
    assert!(error.to_string().contains("payload"), "{error}");
    let too_big_for_segment = vec![0u8; 70_000];
    assert!(matches!(
        log.append(&batch(1, &[too_big_for_segment])),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(log.read(99), Err(Error::OutOfRange { index: 99, .. })));
    let bad = LogOptions {
        segment_bytes: 1000,
        ..sim_options()
    };
    assert!(matches!(
        Log::open_with(Arc::new(storage.clone()), &sim_dir().join("other"), bad),
        Err(Error::InvalidInput { .. })
    ));
}

#[test]
fn unsafe_no_sync_loses_records_on_power_loss_but_still_opens() {
    let storage = sim_storage(12);
    let options = LogOptions {
        durability: farmlog_engine::Durability::UnsafeNoSync,
        ..sim_options()
    };
    let log = Log::open_with(Arc::new(storage.clone()), &sim_dir(), options.clone()).expect("open");
    for round in 0..50 {
        log.append(&batch(1, &[vec![round as u8; 700]])).expect("unsafe append");
    }
    storage.crash();
    drop(log);
    // No watermark ever claimed those records: the open cuts whatever was
    // lost instead of failing with DurableRecordLost.
    let log = Log::open_with(Arc::new(storage.clone()), &sim_dir(), options).expect("open after power loss");
    assert!(log.next_index() <= 51);
    for record in log.range(..) {
        let record = record.expect("what survived is intact");
        assert_eq!(record.payload(), &vec![(record.index() - 1) as u8; 700][..]);
    }
}
