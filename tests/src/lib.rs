//! Shared helpers for farmlog's cross-cutting tests: one way to build a
//! log on simulated storage, one in-memory model of what the log must
//! hold, and one check that compares them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use farmlog_engine::io::{SimConfig, SimStorage};
use farmlog_engine::{FlushMode, Log, LogOptions, NewRecord};

/// Smallest segments, so that tests cross segment boundaries often.
pub const TEST_SEGMENT_BYTES: u64 = 64 << 10;

/// The directory every simulated log lives in.
pub fn sim_dir() -> PathBuf {
    PathBuf::from("/farm/log")
}

/// Options for a deterministic, single-threaded log on simulated storage.
pub fn sim_options() -> LogOptions {
    LogOptions {
        segment_bytes: TEST_SEGMENT_BYTES,
        disk_reserve_bytes: 0,
        flush: FlushMode::Manual,
        ..LogOptions::default()
    }
}

pub fn sim_storage(seed: u64) -> SimStorage {
    SimStorage::new(SimConfig { seed })
}

/// Opens (writable) the simulated log; panics with the error otherwise.
pub fn open_sim(storage: &SimStorage) -> Log {
    match Log::open_with(Arc::new(storage.clone()), &sim_dir(), sim_options()) {
        Ok(log) => log,
        Err(error) => panic!("open failed: {error}"),
    }
}

/// A payload that names its index and term, of a chosen length.
pub fn payload(index: u64, term: u64, len: usize) -> Vec<u8> {
    let stamp = format!("{index}:{term}:");
    stamp
        .bytes()
        .chain(std::iter::repeat(b'a' + (index % 26) as u8))
        .take(len)
        .collect()
}

/// One record as the model keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRecord {
    pub term: u64,
    pub payload: Vec<u8>,
}

/// What the log must hold: records `[first, first + records.len())`, of
/// which the first `acked` (counted from `first`) were acknowledged
/// durable. The rest were written but not acknowledged ("in flight").
#[derive(Clone, Debug)]
pub struct Model {
    pub first: u64,
    pub records: Vec<ModelRecord>,
    pub acked: usize,
}

impl Model {
    pub fn new(first: u64) -> Self {
        Self {
            first,
            records: Vec::new(),
            acked: 0,
        }
    }

    pub fn next(&self) -> u64 {
        self.first + self.records.len() as u64
    }

    pub fn get(&self, index: u64) -> &ModelRecord {
        &self.records[(index - self.first) as usize]
    }

    /// Adds in-flight records with the given payload lengths and returns
    /// their payloads, for the caller to append.
    pub fn stage(&mut self, term: u64, lengths: &[usize]) -> Vec<Vec<u8>> {
        let start = self.next();
        let payloads: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(offset, &len)| payload(start + offset as u64, term, len))
            .collect();
        for payload in &payloads {
            self.records.push(ModelRecord {
                term,
                payload: payload.clone(),
            });
        }
        payloads
    }

    pub fn ack_all(&mut self) {
        self.acked = self.records.len();
    }

    pub fn truncate_after(&mut self, index: u64) {
        let keep = (index + 1).saturating_sub(self.first) as usize;
        self.records.truncate(keep);
        self.acked = self.acked.min(keep);
    }

    pub fn purge_before(&mut self, index: u64) {
        if index <= self.first {
            return;
        }
        let drop = ((index - self.first) as usize).min(self.records.len());
        self.records.drain(..drop);
        self.acked -= drop.min(self.acked);
        self.first = index;
    }

    /// After a crash: the log must hold every acknowledged record and may
    /// hold a prefix of the in-flight ones; adopt what survived.
    pub fn adopt_after_crash(&mut self, log: &Log) {
        let acked_end = self.first + self.acked as u64;
        let next = log.next_index();
        assert!(
            next >= acked_end,
            "acknowledged records lost: log ends at {next}, {acked_end} acknowledged"
        );
        assert!(
            next <= self.next(),
            "records appeared that were never written: log ends at {next}, model at {}",
            self.next()
        );
        self.records.truncate((next - self.first) as usize);
        self.ack_all();
    }
}

/// Checks that the log holds exactly the model's records: first and next
/// index, and every record's index, term and payload, by iteration and by
/// point reads.
pub fn check(log: &Log, model: &Model) {
    assert_eq!(log.first_index(), model.first, "first index");
    assert_eq!(log.next_index(), model.next(), "next index");
    let mut expected = model.first;
    for record in log.range(..) {
        let record = record.unwrap_or_else(|error| panic!("reading index {expected}: {error}"));
        assert_eq!(record.index(), expected);
        let want = model.get(expected);
        assert_eq!(record.term(), want.term, "term of {expected}");
        assert_eq!(record.payload(), &want.payload[..], "payload of {expected}");
        assert_eq!(
            record.payload().as_ptr() as usize % 8,
            0,
            "payload of {expected} is 8-byte aligned"
        );
        expected += 1;
    }
    assert_eq!(expected, model.next(), "iteration stopped early");
    for index in [
        model.first,
        model.first + model.records.len() as u64 / 2,
        model.next().saturating_sub(1),
    ] {
        if index >= model.first && index < model.next() {
            let record = log.read(index).unwrap_or_else(|error| panic!("read({index}): {error}"));
            assert_eq!(record.payload(), &model.get(index).payload[..]);
        }
    }
}

pub fn batch<'a>(term: u64, payloads: &'a [Vec<u8>]) -> Vec<NewRecord<'a>> {
    payloads
        .iter()
        .map(|payload| NewRecord {
            term,
            group: 0,
            kind: 0,
            payload,
        })
        .collect()
}

/// Every file of a directory on the real file system, with its bytes.
pub fn snapshot_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("listing the directory")
        .map(|entry| {
            let entry = entry.expect("directory entry");
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).expect("reading a file"),
            )
        })
        .collect();
    files.sort();
    files
}

/// A proptest configuration of `default_cases` cases, unless
/// `PROPTEST_CASES` says otherwise (for longer local soaks).
pub fn proptest_config(default_cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default_cases);
    proptest::test_runner::Config {
        cases,
        ..proptest::test_runner::Config::default()
    }
}
