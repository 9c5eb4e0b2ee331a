//! End-to-end tests of the `farmlog` binary: it is run as a user would,
//! against logs in temporary directories, and judged by its exit code and
//! output. Logs are made either by `farmlog bench append` or directly with
//! the engine API, which also finds record locations for damage tests.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{farmlog, json_lines, path, Run};
use farmlog_engine::{kinds, Log, LogOptions, NewRecord};
use serde_json::Value;

mod common;

/// Small segments, so that a few hundred records span several of them.
const SEGMENT_BYTES_SMALL: u64 = 65536;
/// Where records start in a segment file (the header page comes first).
const RECORDS_OFFSET: u64 = 4096;
const RECORD_HEADER_BYTES: u64 = 32;
const FIRST_SEGMENT_FILE: &str = "00000000000000000001.seg";

/// `farmlog bench append` with small segments; returns its final JSON line.
fn bench(dir: &Path, records: u64, size: usize, concurrency: usize, batch: usize) -> Value {
    let (records, size, concurrency, batch) = (
        records.to_string(),
        size.to_string(),
        concurrency.to_string(),
        batch.to_string(),
    );
    let segment_bytes = SEGMENT_BYTES_SMALL.to_string();
    let run = farmlog(&[
        "bench",
        "append",
        "--dir",
        path(dir),
        "--records",
        &records,
        "--size",
        &size,
        "--concurrency",
        &concurrency,
        "--batch",
        &batch,
        "--segment-bytes",
        &segment_bytes,
    ]);
    run.assert_code(0);
    let last = run.stdout.lines().last().expect("bench prints something");
    serde_json::from_str(last).unwrap_or_else(|error| panic!("last line {last:?} is not JSON: {error}"))
}

/// Every file under `dir`, by relative name, with its length and a hash of
/// its content.
fn hash_dir(dir: &Path) -> BTreeMap<String, (u64, u64)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).expect("the log directory is listable") {
            let entry = entry.expect("a directory entry");
            let entry_path = entry.path();
            if entry.file_type().expect("a file type").is_dir() {
                pending.push(entry_path);
                continue;
            }
            let content = fs::read(&entry_path).expect("a log file is readable");
            let mut hasher = DefaultHasher::new();
            content.hash(&mut hasher);
            let name = entry_path.strip_prefix(dir).expect("under dir").display().to_string();
            files.insert(name, (content.len() as u64, hasher.finish()));
        }
    }
    files
}

fn flip_byte(file: &Path, offset: u64) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .expect("the segment opens for writing");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("the byte is readable");
    byte[0] ^= 0xff;
    file.write_all_at(&byte, offset).expect("the byte is writable");
    file.sync_all().expect("the flip is synced");
}

#[test]
fn bench_leaves_a_log_that_verifies_dumps_and_stats() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("log");
    let (records, size, concurrency, batch) = (600u64, 256usize, 3usize, 4usize);

    let summary = bench(&dir, records, size, concurrency, batch);
    assert_eq!(summary["records"], records);
    assert_eq!(summary["size"], size);
    assert_eq!(summary["concurrency"], concurrency);
    assert_eq!(summary["batch"], batch);
    let fsyncs = summary["fsyncs"].as_u64().expect("fsyncs is a count");
    assert!(fsyncs >= 1, "a synced log syncs: {summary}");
    let per_fsync = summary["records_per_fsync"]
        .as_f64()
        .expect("records_per_fsync is a number");
    assert!((per_fsync - records as f64 / fsyncs as f64).abs() < 1e-6, "{summary}");
    for key in ["seconds", "records_per_sec", "mb_per_sec"] {
        assert!(summary[key].as_f64().expect("a number") > 0.0, "{key} in {summary}");
    }
    let latency = |key: &str| summary[key].as_f64().expect("a latency");
    // A synced append takes far longer than a microsecond.
    assert!(latency("p50_us") >= 1.0, "{summary}");
    assert!(
        latency("p50_us") <= latency("p99_us") && latency("p99_us") <= latency("p999_us"),
        "{summary}"
    );

    let verify = farmlog(&["verify", path(&dir)]);
    verify.assert_code(0);
    assert!(verify.stdout.contains(&format!("{records} records")), "{verify:#?}");
    assert_eq!(
        verify.stderr, "",
        "no warning and no progress bar garbage when stderr is not a terminal"
    );

    let dump = farmlog(&["dump", path(&dir), "--json"]);
    dump.assert_code(0);
    let lines = json_lines(&dump.stdout);
    assert_eq!(lines.len() as u64, records);
    let mut sequences: HashMap<u64, Vec<u64>> = HashMap::new();
    for (position, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], position as u64 + 1, "{line}");
        assert_eq!(line["type"], kinds::BENCH, "{line}");
        assert_eq!(line["type_name"], "bench", "{line}");
        assert_eq!(line["length"], size, "{line}");
        assert_eq!(line["crc"], "ok", "{line}");
        assert_eq!(line["term"], 1, "{line}");
        assert_eq!(line["payload"]["body_length"], size - kinds::bench_overhead(), "{line}");
        let appender = line["payload"]["appender"].as_u64().expect("an appender");
        let sequence = line["payload"]["sequence"].as_u64().expect("a sequence");
        sequences.entry(appender).or_default().push(sequence);
    }
    assert_eq!(sequences.len(), concurrency);
    for (appender, seen) in &sequences {
        let expected: Vec<u64> = (0..records / concurrency as u64).collect();
        assert_eq!(
            seen, &expected,
            "appender {appender} wrote each sequence once, in order"
        );
    }

    let part = farmlog(&["dump", path(&dir), "--from", "10", "--to", "12"]);
    part.assert_code(0);
    let indexes: Vec<&str> = part
        .stdout
        .lines()
        .map(|line| line.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(indexes, ["index=10", "index=11", "index=12"]);

    let stat = farmlog(&["stat", path(&dir), "--json"]);
    stat.assert_code(0);
    let stat: Value = serde_json::from_str(stat.stdout.trim()).expect("stat --json is one JSON object");
    assert_eq!(stat["records"], records);
    assert_eq!(stat["first_index"], 1);
    assert_eq!(stat["last_index"], records);
    assert_eq!(stat["compressed_segments"], 0);
    let segments = stat["segments"].as_array().expect("a segment list");
    assert!(segments.len() >= 2, "small segments: several of them: {stat}");
    assert_eq!(stat["segment_count"], segments.len());
    let counted: u64 = segments
        .iter()
        .map(|segment| segment["records"].as_u64().expect("a count"))
        .sum();
    assert_eq!(counted, records);
    assert_eq!(stat["file_bytes"], segments.len() as u64 * SEGMENT_BYTES_SMALL);

    let text = farmlog(&["stat", path(&dir)]);
    text.assert_code(0);
    assert!(
        text.stdout.contains(&format!("records:             {records}")),
        "{text:#?}"
    );
}

#[test]
fn verify_and_dump_report_damage_with_its_location() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("log");
    bench(&dir, 800, 256, 2, 1);

    // The tenth record of the first (sealed) segment: well past 4096.
    let (index, offset, length) = {
        let log = Log::open_read_only(&dir).expect("the bench log opens");
        assert!(log.segments().len() >= 3, "several segments");
        assert!(log.segments()[0].sealed);
        let record = log.read(10).expect("record 10 reads");
        let (segment, offset) = record.location();
        assert_eq!(segment, 1);
        (record.index(), offset, record.payload().len() as u64)
    };
    assert!(offset > RECORDS_OFFSET);
    flip_byte(&dir.join(FIRST_SEGMENT_FILE), offset + RECORD_HEADER_BYTES + length / 2);

    let verify = farmlog(&["verify", path(&dir)]);
    verify.assert_code(1);
    assert!(verify.stderr.starts_with("farmlog: "), "{verify:#?}");
    assert!(verify.stderr.contains("checksum"), "{verify:#?}");
    let location = format!("location: segment 1, offset {offset}, index {index}");
    assert!(verify.stderr.contains(&location), "expected {location:?}: {verify:#?}");

    let dump = farmlog(&["dump", path(&dir), "--json"]);
    dump.assert_code(1);
    let lines = json_lines(&dump.stdout);
    assert_eq!(
        lines.len() as u64,
        index,
        "every record before the damage, then the damaged one"
    );
    assert!(lines[..lines.len() - 1].iter().all(|line| line["crc"] == "ok"));
    let damaged = &lines[lines.len() - 1];
    assert_eq!(damaged["index"], index);
    assert_eq!(damaged["offset"], offset);
    assert_eq!(damaged["segment"], 1);
    assert_ne!(damaged["crc"], "ok");
    assert!(dump.stderr.contains(&location), "expected {location:?}: {dump:#?}");

    // Records past the damage are still readable from a later start.
    let after = farmlog(&[
        "dump",
        path(&dir),
        "--from",
        &(index + 1).to_string(),
        "--to",
        &(index + 2).to_string(),
    ]);
    after.assert_code(0);
    assert_eq!(after.stdout.lines().count(), 2);
}

/// A log made with the engine API: text, binary and bench records over a
/// few segments, closed cleanly.
fn make_mixed_log(dir: &Path) {
    let options = LogOptions {
        segment_bytes: SEGMENT_BYTES_SMALL,
        ..LogOptions::default()
    };
    let log = Log::open(dir, options).expect("a new log opens");
    let long_text = "farmlog ".repeat(40);
    let bench = kinds::encode_bench(&kinds::BenchPayload {
        appender: 7,
        sequence: 42,
        body: vec![1; 100],
    });
    let binary = [0u8, 1, 2, 0xff, 0xfe];
    let first: Vec<NewRecord<'_>> = [kinds::RAW, kinds::RAW, kinds::RAW, kinds::BENCH, 999]
        .into_iter()
        .zip([&b"hello farmlog"[..], long_text.as_bytes(), &binary, &bench, b"mystery"])
        .map(|(kind, payload)| NewRecord {
            term: 2,
            group: 0,
            kind,
            payload,
        })
        .collect();
    log.append(&first).expect("the first batch appends");
    let filler = vec![0xab; 1000];
    for _ in 0..150 {
        let record = NewRecord {
            term: 3,
            group: 0,
            kind: kinds::RAW,
            payload: &filler,
        };
        log.append(&[record]).expect("a filler record appends");
    }
}

/// Writes garbage right after the last record of the active segment: a
/// torn, never-acknowledged tail as a crash during a write leaves it.
fn tear_tail(dir: &Path) {
    let (segment, end) = {
        let log = Log::open_read_only(dir).expect("the log opens");
        let last = log
            .read(log.last_index().expect("not empty"))
            .expect("the last record reads");
        let (segment, offset) = last.location();
        (segment, offset + last.framed_len())
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .open(dir.join(format!("{segment:020}.seg")))
        .expect("the active segment opens");
    file.write_all_at(&[0xee; 48], end).expect("garbage is written");
    file.sync_all().expect("garbage is synced");
}

fn run_every_inspector(dir: &Path) -> Vec<Run> {
    [
        vec!["dump", path(dir)],
        vec!["dump", path(dir), "--json"],
        vec!["dump", path(dir), "--from", "2", "--to", "4"],
        vec!["verify", path(dir)],
        vec!["stat", path(dir)],
        vec!["stat", path(dir), "--json"],
        vec!["replay", path(dir)],
        vec!["replay", path(dir), "--json", "--to", "3"],
    ]
    .iter()
    .map(|args| farmlog(args))
    .collect()
}

#[test]
fn inspectors_never_modify_the_directory() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("log");
    make_mixed_log(&dir);

    let before = hash_dir(&dir);
    assert!(
        before.keys().filter(|name| name.ends_with(".seg")).count() >= 2,
        "{before:?}"
    );
    for run in run_every_inspector(&dir) {
        run.assert_code(0);
    }
    assert_eq!(hash_dir(&dir), before, "a clean log is left byte for byte as it was");

    // A torn tail is what a writable open would repair: the read-only
    // inspectors must leave it, and only warn.
    tear_tail(&dir);
    let torn = hash_dir(&dir);
    assert_ne!(torn, before);
    for run in run_every_inspector(&dir) {
        run.assert_code(0);
        assert!(run.stderr.contains("warning: torn tail"), "{run:#?}");
    }
    assert_eq!(hash_dir(&dir), torn, "a torn tail is left byte for byte as it was");
}

#[test]
fn dump_decodes_each_kind() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("log");
    make_mixed_log(&dir);

    let text = farmlog(&["dump", path(&dir), "--to", "5"]);
    text.assert_code(0);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{text:#?}");
    assert!(
        lines[0].contains("type=0:raw length=13 crc=ok") && lines[0].ends_with("text=\"hello farmlog\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with("...") && lines[1].contains("length=320"),
        "{}",
        lines[1]
    );
    assert!(lines[2].ends_with("hex=000102fffe"), "{}", lines[2]);
    assert!(
        lines[3].contains("type=1:bench") && lines[3].ends_with("appender=7 sequence=42 body_length=100"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].contains("type=999:unknown") && lines[4].ends_with("text=\"mystery\""),
        "{}",
        lines[4]
    );

    let json = farmlog(&["dump", path(&dir), "--json", "--to", "5"]);
    json.assert_code(0);
    let objects = json_lines(&json.stdout);
    assert_eq!(objects[0]["payload"]["text"], "hello farmlog");
    assert_eq!(objects[1]["payload"]["truncated"], true);
    assert_eq!(objects[1]["payload"]["text"].as_str().map(str::len), Some(64));
    assert_eq!(objects[2]["payload"]["hex"], "000102fffe");
    assert_eq!(objects[3]["payload"]["appender"], 7);
    assert_eq!(objects[3]["payload"]["sequence"], 42);
    assert_eq!(objects[4]["type_name"], Value::Null);
    assert!(objects.iter().all(|object| object["term"] == 2 && object["group"] == 0));
}

#[test]
fn bench_rejects_bad_input_without_writing() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("never-created");
    let cases: [(&[&str], &str); 10] = [
        (&["--records", "0"], "--records"),
        (&["--concurrency", "0"], "--concurrency"),
        (&["--concurrency", "1025"], "--concurrency"),
        (&["--batch", "0"], "--batch"),
        (&["--batch", "16385"], "--batch"),
        (&["--size", "10"], "--size 10"),
        (&["--size", "250"], "use 248 or 256"),
        (&["--size", "16777217"], "--size"),
        (&["--size", "8388608", "--batch", "16"], "--batch"),
        (&["--records", "-5"], "--records"),
    ];
    for (overrides, expected) in cases {
        let mut args: Vec<&str> = vec!["bench", "append", "--dir", path(&dir)];
        for default in [["--records", "10"], ["--size", "64"], ["--concurrency", "2"]] {
            if !overrides.contains(&default[0]) {
                args.extend(default);
            }
        }
        args.extend(overrides);
        let run = farmlog(&args);
        run.assert_code(2);
        assert!(
            run.stderr.contains(expected),
            "{overrides:?}: expected {expected:?} in {run:#?}"
        );
        assert!(!dir.exists(), "{overrides:?}: a rejected request writes nothing");
    }
    let bad_segment = farmlog(&[
        "bench",
        "append",
        "--dir",
        path(&dir),
        "--records",
        "1",
        "--size",
        "64",
        "--concurrency",
        "1",
        "--segment-bytes",
        "1000",
    ]);
    bad_segment.assert_code(2);
    assert!(
        bad_segment.stderr.starts_with("farmlog: ") && bad_segment.stderr.contains("segment_bytes"),
        "{bad_segment:#?}"
    );
}

#[test]
fn operational_errors_exit_2() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let missing = temp.path().join("missing");
    for command in ["dump", "verify", "stat", "replay"] {
        let run = farmlog(&[command, path(&missing)]);
        run.assert_code(2);
        assert!(run.stderr.starts_with("farmlog: "), "{run:#?}");
    }
    let reversed = farmlog(&["dump", path(temp.path()), "--from", "9", "--to", "3"]);
    reversed.assert_code(2);
    farmlog(&["frobnicate"]).assert_code(2);
    let help = farmlog(&["verify", "--help"]);
    help.assert_code(0);
    assert!(help.stdout.contains("Exit codes:"), "{help:#?}");
}

#[test]
fn compressed_segments_are_counted_read_and_verified() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("log");
    make_mixed_log(&dir);
    let compressed = {
        let options = LogOptions {
            segment_bytes: SEGMENT_BYTES_SMALL,
            ..LogOptions::default()
        };
        let log = Log::open(&dir, options).expect("the log reopens for writing");
        log.compress_cold(0).expect("cold segments compress")
    };
    assert!(compressed >= 1, "the mixed log has sealed segments");

    let stat = farmlog(&["stat", path(&dir), "--json"]);
    stat.assert_code(0);
    let stat: Value = serde_json::from_str(stat.stdout.trim()).expect("stat --json is one JSON object");
    assert_eq!(stat["compressed_segments"], compressed);
    let flagged = stat["segments"]
        .as_array()
        .expect("a segment list")
        .iter()
        .filter(|segment| segment["compressed"] == true)
        .count();
    assert_eq!(flagged, compressed);

    farmlog(&["verify", path(&dir)]).assert_code(0);
    let dump = farmlog(&["dump", path(&dir), "--json"]);
    dump.assert_code(0);
    let lines = json_lines(&dump.stdout);
    assert_eq!(lines.len(), 155, "5 mixed records and 150 fillers");
    assert_eq!(lines[0]["payload"]["text"], "hello farmlog");
    assert!(lines.iter().all(|line| line["crc"] == "ok"));
}

#[test]
fn bench_with_retention_purges_while_appending_and_leaves_a_valid_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = farmlog(&[
        "bench",
        "append",
        "--dir",
        path(dir.path()),
        "--records",
        "3000",
        "--size",
        "256",
        "--concurrency",
        "4",
        "--batch",
        "4",
        "--segment-bytes",
        &SEGMENT_BYTES_SMALL.to_string(),
        "--retain-segments",
        "2",
    ]);
    run.assert_code(0);
    let stat = farmlog(&["stat", path(dir.path()), "--json"]);
    stat.assert_code(0);
    let stat: Value = serde_json::from_str(stat.stdout.trim()).expect("stat --json is JSON");
    let first = stat["first_index"].as_u64().expect("first_index");
    assert!(first > 1, "retention purged the front: first index {first}");
    assert_eq!(stat["last_index"].as_u64(), Some(3000));
    farmlog(&["verify", path(dir.path())]).assert_code(0);
    let zero = farmlog(&[
        "bench",
        "append",
        "--dir",
        path(dir.path()),
        "--records",
        "1",
        "--size",
        "256",
        "--concurrency",
        "1",
        "--retain-segments",
        "0",
    ]);
    zero.assert_code(2);
}

/// A replica's entries are decoded by `dump`: a new leader's blank entry,
/// a membership (voters and addresses), and a schema move.
#[test]
fn dump_decodes_replication_entries() {
    use farmlog_replica::entry::{new_record, to_record};
    use farmlog_replica::{Entry, Proposal};
    use openraft::{BasicNode, EntryPayload, Membership};

    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogOptions {
            first_index: 0,
            segment_bytes: SEGMENT_BYTES_SMALL,
            disk_reserve_bytes: 0,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let nodes: BTreeMap<u64, BasicNode> = [
        (1, BasicNode::new("10.0.0.1:7100")),
        (2, BasicNode::new("10.0.0.2:7100")),
    ]
    .into_iter()
    .collect();
    let membership = Membership::new(vec![[1, 2].into_iter().collect()], nodes);
    let entries = [
        EntryPayload::Membership(membership),
        EntryPayload::Blank,
        EntryPayload::Normal(Proposal::Schema(2)),
    ];
    let entries: Vec<Entry> = entries
        .into_iter()
        .enumerate()
        .map(|(index, payload)| Entry {
            log_id: farmlog_replica::entry::log_id(1, index as u64),
            payload,
        })
        .collect();
    let encoded: Vec<(u16, _)> = entries.iter().map(to_record).collect();
    let records: Vec<NewRecord<'_>> = entries
        .iter()
        .zip(&encoded)
        .map(|(entry, (kind, payload))| new_record(entry, *kind, payload))
        .collect();
    log.append(&records).unwrap();
    drop(log);

    let dump = farmlog(&["dump", path(dir.path())]);
    dump.assert_code(0);
    assert!(
        dump.stdout
            .contains("voters=[[1, 2]] nodes=[1@10.0.0.1:7100,2@10.0.0.2:7100]"),
        "{}",
        dump.stdout
    );
    assert!(dump.stdout.contains("blank"), "{}", dump.stdout);
    assert!(dump.stdout.contains("schema_version=2"), "{}", dump.stdout);
    let json = farmlog(&["dump", path(dir.path()), "--json"]);
    json.assert_code(0);
    let lines = json_lines(&json.stdout);
    assert!(
        lines
            .iter()
            .any(|line| line.to_string().contains("\"schema_version\":2")),
        "{}",
        json.stdout
    );
    assert!(
        lines.iter().any(|line| line.to_string().contains("10.0.0.2:7100")),
        "{}",
        json.stdout
    );
}
