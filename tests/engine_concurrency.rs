//! Many appenders, blocking and with callbacks, across many segment
//! rollovers, with readers beside them, on the real file system and the
//! background flusher and preallocator threads. Every acknowledged record
//! must be readable exactly once, in a dense index sequence, and a
//! read-only open beside the writer must see a consistent prefix.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use farmlog_engine::{Log, LogOptions, NewRecord};

const APPENDERS: u64 = 8;
const APPENDS_EACH: u64 = 400;

fn payload(appender: u64, sequence: u64) -> Vec<u8> {
    let stamp = format!("{appender}/{sequence}/");
    let len = 100 + ((appender * 7919 + sequence * 104_729) % 3000) as usize;
    stamp
        .bytes()
        .chain(std::iter::repeat(b'x'))
        .take(len.max(stamp.len()))
        .collect()
}

fn parse(payload: &[u8]) -> (u64, u64) {
    let text = std::str::from_utf8(payload).expect("utf-8 payload");
    let mut parts = text.split('/');
    let appender = parts.next().and_then(|part| part.parse().ok()).expect("appender");
    let sequence = parts.next().and_then(|part| part.parse().ok()).expect("sequence");
    (appender, sequence)
}

#[test]
fn concurrent_appenders_readers_and_rollovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions {
        segment_bytes: 256 << 10,
        disk_reserve_bytes: 0,
        ..LogOptions::default()
    };
    let log = Arc::new(Log::open(dir.path(), options).expect("open"));
    let callback_acks = Arc::new(AtomicU64::new(0));
    let callback_errors = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let log = log.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut passes = 0u64;
            while !done.load(Ordering::SeqCst) || passes == 0 {
                let end = log.next_index();
                for (expected, record) in (log.first_index()..).zip(log.range(..end)) {
                    let record = record.expect("a published record reads back intact");
                    assert_eq!(record.index(), expected);
                    parse(record.payload());
                }
                let read_only = Log::open_read_only(log.dir()).expect("read-only open beside the writer");
                for record in read_only.range(..) {
                    record.expect("the read-only view is consistent");
                }
                passes += 1;
            }
            passes
        })
    };

    let appenders: Vec<_> = (0..APPENDERS)
        .map(|appender| {
            let log = log.clone();
            let callback_acks = callback_acks.clone();
            let callback_errors = callback_errors.clone();
            std::thread::spawn(move || {
                for sequence in 0..APPENDS_EACH {
                    let bytes = payload(appender, sequence);
                    let record = [NewRecord {
                        term: 1,
                        group: 0,
                        kind: 0,
                        payload: &bytes,
                    }];
                    if appender % 2 == 0 {
                        let last = log.append(&record).expect("append");
                        assert!(log.durable_end() > last, "acknowledged means durable");
                    } else {
                        let acks = callback_acks.clone();
                        let errors = callback_errors.clone();
                        log.submit(
                            &record,
                            Box::new(move |result| match result {
                                Ok(_) => {
                                    acks.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(error) => errors.lock().expect("errors").push(error.to_string()),
                            }),
                        )
                        .expect("submit");
                    }
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.join().expect("appender thread");
    }
    // The flusher completes callback appends without anyone calling
    // commit_pending.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while callback_acks.load(Ordering::SeqCst) < APPENDERS / 2 * APPENDS_EACH {
        assert!(std::time::Instant::now() < deadline, "callbacks never completed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    done.store(true, Ordering::SeqCst);
    assert!(reader.join().expect("reader thread") > 0);
    assert!(callback_errors.lock().expect("errors").is_empty());

    let total = APPENDERS * APPENDS_EACH;
    assert_eq!(log.next_index() - log.first_index(), total);
    assert!(log.segments().len() > 10, "the test should cross many rollovers");
    let stats = log.stats();
    assert!(
        stats.commit_syncs < total,
        "appends shared syncs: {} syncs for {total} records",
        stats.commit_syncs
    );

    let check = |log: &Log| {
        let mut seen = BTreeSet::new();
        for record in log.range(..) {
            let record = record.expect("read");
            let (appender, sequence) = parse(record.payload());
            assert_eq!(record.payload(), &payload(appender, sequence)[..]);
            assert!(
                seen.insert((appender, sequence)),
                "duplicate record {appender}/{sequence}"
            );
        }
        assert_eq!(seen.len() as u64, total);
    };
    check(&log);
    let log = Arc::try_unwrap(log).expect("every thread is done");
    drop(log);
    // Closing removed the unused spare segment.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let reopened = Log::open(
        dir.path(),
        LogOptions {
            segment_bytes: 256 << 10,
            disk_reserve_bytes: 0,
            ..LogOptions::default()
        },
    )
    .expect("reopen");
    check(&reopened);
    reopened.verify(&mut |_| {}).expect("verify");
}

/// Retention beside appenders: purges run concurrently with appends (they
/// take neither the writer's claim nor its lock), segments are reused, and
/// what remains is dense, intact and survives a reopen.
#[test]
fn purges_beside_appenders_and_readers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions {
        segment_bytes: 128 << 10,
        disk_reserve_bytes: 0,
        ..LogOptions::default()
    };
    let log = Arc::new(Log::open(dir.path(), options.clone()).expect("open"));
    let done = Arc::new(AtomicBool::new(false));
    let retention = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut purges = 0u64;
            while !done.load(Ordering::SeqCst) {
                let segments = log.segments();
                if segments.len() > 3 {
                    log.purge_before(segments[segments.len() - 3].first_index)
                        .expect("purge beside appends");
                    purges += 1;
                }
                // Readers beside the purge see a dense, intact range.
                for (expected, record) in (log.first_index()..).zip(log.range(..)) {
                    match record {
                        Ok(record) => assert_eq!(record.index(), expected),
                        // The front may be purged under the iterator.
                        Err(farmlog_engine::Error::OutOfRange { .. }) => break,
                        Err(error) => panic!("read beside a purge: {error}"),
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            purges
        })
    };
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|appender| {
            let log = log.clone();
            std::thread::spawn(move || {
                for sequence in 0..APPENDS_EACH {
                    let bytes = payload(appender, sequence);
                    log.append(&[NewRecord {
                        term: 1,
                        group: 0,
                        kind: 0,
                        payload: &bytes,
                    }])
                    .expect("append");
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.join().expect("appender thread");
    }
    done.store(true, Ordering::SeqCst);
    assert!(
        retention.join().expect("retention thread") > 3,
        "retention should have purged repeatedly"
    );
    assert_eq!(log.next_index(), APPENDERS * APPENDS_EACH + 1);
    let check = |log: &Log| {
        for (expected, record) in (log.first_index()..).zip(log.range(..)) {
            let record = record.expect("read");
            assert_eq!(record.index(), expected);
            let (appender, sequence) = parse(record.payload());
            assert_eq!(record.payload(), &payload(appender, sequence)[..]);
        }
    };
    check(&log);
    let first = log.first_index();
    drop(Arc::try_unwrap(log).expect("every thread is done"));
    let reopened = Log::open(dir.path(), options).expect("reopen");
    assert_eq!(
        (reopened.first_index(), reopened.next_index()),
        (first, APPENDERS * APPENDS_EACH + 1)
    );
    check(&reopened);
}
