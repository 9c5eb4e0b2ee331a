//! A frozen log directory in today's format (version 1), committed under
//! `tests/fixtures/format-v1/`. Later versions of farmlog must still read
//! it: this test opens the committed bytes, read-only and writable (on a
//! copy), and checks every record against what the generator wrote.
//!
//! The fixture holds a compressed segment, sealed segments, an active
//! segment with a watermark, a purge point (META) and records of two
//! kinds (raw, and rkyv-archived bench payloads). To regenerate it (only
//! when the format version changes, into a new directory):
//! `FARMLOG_WRITE_FIXTURE=1 cargo test -p farmlog-tests --test engine_format_fixture -- --ignored`

use std::path::{Path, PathBuf};

use farmlog_engine::kinds::{self, BenchPayload};
use farmlog_engine::{Log, LogOptions, NewRecord};

const FIRST_KEPT: u64 = 11;
const LAST: u64 = 300;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/format-v1")
}

/// What record `index` holds: term, kind and payload.
fn expected(index: u64) -> (u64, u16, Vec<u8>) {
    let term = 1 + index / 100;
    if index.is_multiple_of(3) {
        let payload = BenchPayload {
            appender: (index % 7) as u32,
            sequence: index,
            body: vec![(index % 251) as u8; (index % 90) as usize],
        };
        (term, kinds::BENCH, kinds::encode_bench(&payload))
    } else {
        let text = format!("farmlog format v1 record {index} ").repeat(1 + (index % 40) as usize);
        (term, kinds::RAW, text.into_bytes())
    }
}

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        disk_reserve_bytes: 0,
        ..LogOptions::default()
    }
}

fn check_contents(log: &Log) {
    assert_eq!(log.first_index(), FIRST_KEPT);
    assert_eq!(log.last_index(), Some(LAST));
    let mut index = FIRST_KEPT;
    for record in log.range(..) {
        let record = record.unwrap_or_else(|error| panic!("reading fixture record {index}: {error}"));
        let (term, kind, payload) = expected(index);
        assert_eq!((record.index(), record.term(), record.kind()), (index, term, kind));
        assert_eq!(record.payload(), &payload[..], "payload of {index}");
        if kind == kinds::BENCH {
            let view = kinds::access_bench(record.payload()).expect("bench payload validates in place");
            assert_eq!(view.sequence, index);
        }
        index += 1;
    }
    assert_eq!(index, LAST + 1);
}

#[test]
fn format_v1_fixture_still_reads() {
    let dir = fixture_dir();
    let log = Log::open_read_only(&dir).expect("read-only open of the fixture");
    check_contents(&log);
    log.verify(&mut |_| {}).expect("the fixture verifies clean");
    let segments = log.segments();
    assert!(
        segments.iter().any(|segment| segment.compressed),
        "fixture has a compressed segment"
    );
    assert!(
        segments.iter().any(|segment| segment.sealed && !segment.compressed),
        "and a sealed one"
    );
    assert!(
        segments.last().is_some_and(|segment| !segment.sealed),
        "and an active one"
    );

    // A writable open (on a copy: opening writes nothing unless it must
    // repair, but the committed fixture stays untouched) appends after it.
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
    }
    let log = Log::open(copy.path(), options()).expect("writable open of the fixture");
    check_contents(&log);
    let next = log
        .append(&[NewRecord {
            term: 9,
            group: 0,
            kind: kinds::RAW,
            payload: b"v1 continues",
        }])
        .expect("append");
    assert_eq!(next, LAST + 1);
}

#[test]
#[ignore = "writes the fixture; run only to create a new format's fixture"]
fn write_fixture() {
    if std::env::var_os("FARMLOG_WRITE_FIXTURE").is_none() {
        return;
    }
    let dir = fixture_dir();
    assert!(
        !dir.exists(),
        "{} exists: a fixture is frozen once committed",
        dir.display()
    );
    let log = Log::open(&dir, options()).expect("create");
    for index in 1..=LAST + 20 {
        let (term, kind, payload) = expected(index);
        log.append(&[NewRecord {
            term,
            group: 0,
            kind,
            payload: &payload,
        }])
        .expect("append");
        if index == 120 {
            log.seal().expect("seal");
        }
    }
    log.truncate_after(LAST).expect("truncate");
    log.compress_cold(1).expect("compress");
    log.purge_before(FIRST_KEPT).expect("purge");
    drop(log);
    std::fs::remove_file(dir.join("LOCK")).expect("remove LOCK");
}
