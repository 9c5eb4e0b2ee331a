//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) as ordinary tests,
//! through the same harness the cargo-fuzz targets run
//! (`fuzz/src/harness.rs` and `fuzz/src/apply.rs`, included here as
//! modules), so that every seed
//! and every input a fuzzer ever crashed on is checked by `cargo test`.
//!
//! Every file of every corpus goes through every harness: each harness
//! accepts any bytes. A failure names every input that panicked.
//!
//! To rewrite the seed inputs after a format change:
//! `cargo test -p farmlog-engine --test fuzz_corpus -- --ignored write_seed_corpus`.

#[path = "../../fuzz/src/apply.rs"]
mod apply;
#[path = "../../fuzz/src/harness.rs"]
mod harness;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Corpus files per target, at least: the committed seeds.
const CORPUS_FILES_MIN: usize = 5;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The files of a target's corpus, sorted.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `harness` over every file of every corpus; fails naming each input
/// that panicked.
fn replay(harness_name: &str, harness: fn(&[u8])) {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for target in [harness::OPEN_DIR, harness::DECODE_RECORD, apply::APPLY_BATCH] {
        let files = corpus_files(target);
        assert!(
            files.len() >= CORPUS_FILES_MIN,
            "{} holds {} files; the seeds are missing",
            corpus_dir(target).display(),
            files.len()
        );
        for path in files {
            let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            if panic::catch_unwind(AssertUnwindSafe(|| harness(&bytes))).is_err() {
                failures.push(path.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{harness_name} panicked on {} of {replayed} inputs (reproduce one with `cargo fuzz run <target> <file>` in fuzz/):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn open_dir_survives_every_corpus_input() {
    replay(harness::OPEN_DIR, harness::open_arbitrary_dir);
}

#[test]
fn decode_record_survives_every_corpus_input() {
    replay(harness::DECODE_RECORD, harness::decode_arbitrary_record);
}

#[test]
fn apply_batch_survives_every_corpus_input() {
    replay(apply::APPLY_BATCH, apply::apply_arbitrary_batch);
}

/// The seeds are built by the engine, so they drift when the format
/// changes; this test rebuilds them (it never removes other inputs).
#[test]
fn the_every_family_seed_applies() {
    if let Err(problem) = apply::every_family_applies() {
        panic!("a seed command is rejected: {problem}");
    }
}

#[test]
#[ignore = "writes files: run on purpose to refresh the seed corpora"]
fn write_seed_corpus() {
    for seed in harness::seed_inputs() {
        let dir = corpus_dir(seed.target);
        std::fs::create_dir_all(&dir).expect("creating the corpus directory");
        let path = dir.join(seed.name);
        std::fs::write(&path, &seed.bytes).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    }
    let dir = corpus_dir(apply::APPLY_BATCH);
    std::fs::create_dir_all(&dir).expect("creating the corpus directory");
    for (name, bytes) in apply::apply_seeds() {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    }
}
