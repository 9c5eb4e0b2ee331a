//! End-to-end tests of the state-machine side of `farmlog`: `dump` of
//! command-batch records, `replay`, and `bench state`. Logs are written
//! with the engine API (commands built with the engine's own test
//! builders) or by `farmlog bench state`, and the binary is judged by its
//! exit code and output, and against the same fold computed in-process.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::{farmlog, json_lines, path, Run};
use farmlog_engine::kinds::{self, COMMAND_BATCH};
use farmlog_engine::state::command::*;
use farmlog_engine::state::testing::{self, command, in_session};
use farmlog_engine::state::{encode, BatchBuilder, Command, CommandBody, State};
use farmlog_engine::{Log, LogOptions, NewRecord};
use serde_json::Value;

mod common;

/// Every body variant, by the name dump gives it.
const BODY_FAMILIES: [&str; 11] = CommandBody::FAMILIES;
/// Every content variant of an upstream message.
const CONTENT_FAMILIES: [&str; 7] = [
    "Alarm",
    "Event",
    "Data",
    "Response",
    "BulkRequest",
    "BulkResponse",
    "Heartbeat",
];
const ALARM_DATA: &str = testing::EVERY_FAMILY_ALARM_DATA;

fn payload(commands: &[Command]) -> Vec<u8> {
    let mut batch = BatchBuilder::new();
    for command in commands {
        let encoded = encode(command).unwrap_or_else(|error| panic!("{command:?} is invalid: {error}"));
        batch.push(encoded).expect("test batches fit");
    }
    batch.finish()
}

fn append_records(dir: &Path, records: &[(u16, Vec<u8>)]) {
    let log = Log::open(dir, LogOptions::default()).expect("the log opens for writing");
    let records: Vec<NewRecord<'_>> = records
        .iter()
        .map(|(kind, payload)| NewRecord {
            term: 1,
            group: 0,
            kind: *kind,
            payload,
        })
        .collect();
    log.append(&records).expect("the records append");
}

/// The landlord's hosted chain and one customer's tree.
fn farm() -> Vec<Command> {
    testing::farm()
}

/// One command of every body family and every content family, valid
/// against [`farm`].
fn every_family() -> Vec<Command> {
    testing::every_family()
}

/// Appends in a client session (client 1, opened by [`every_family`]),
/// one retried, and one with an expected version that is wrong.
fn appends() -> Vec<Command> {
    let first = in_session(
        command(
            "acme",
            14,
            testing::append("orders", ExpectedVersion::NoStream, Some("k1"), b"first order"),
        ),
        1,
        1,
    );
    vec![
        first.clone(),
        first,
        command(
            "acme",
            15,
            testing::append("orders", ExpectedVersion::Exact(0), None, b"second"),
        ),
        command(
            "acme",
            15,
            testing::append("orders", ExpectedVersion::Exact(9), None, b"stale"),
        ),
    ]
}

/// Records: the farm, a RAW record (not commands), every family, appends.
fn make_state_log(dir: &Path) {
    append_records(
        dir,
        &[
            (COMMAND_BATCH, payload(&farm())),
            (kinds::RAW, b"not commands".to_vec()),
            (COMMAND_BATCH, payload(&every_family())),
            (COMMAND_BATCH, payload(&appends())),
        ],
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The fold `replay` does, computed here with the engine: the state after
/// records `..=to`.
fn fold_in_process(dir: &Path, to: u64) -> State {
    let log = Log::open_read_only(dir).expect("the log opens");
    let mut state = State::new();
    for record in log.range(..=to) {
        let record = record.expect("the record reads");
        if record.kind() == COMMAND_BATCH {
            state
                .apply(record.index(), record.kind(), record.payload())
                .expect("the batch applies");
        } else {
            state.skip(record.index()).expect("the record is skipped");
        }
    }
    state
}

fn replay_json(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["replay", path(dir), "--json"];
    args.extend(extra);
    let run = farmlog(&args);
    run.assert_code(0);
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|error| panic!("not one JSON object ({error}): {run:#?}"))
}

/// The body family of each command in a JSON dump, and the content family
/// of each upstream message.
fn json_families(records: &[Value]) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut bodies, mut contents) = (BTreeSet::new(), BTreeSet::new());
    let commands = records
        .iter()
        .filter(|record| record["type"] == COMMAND_BATCH)
        .flat_map(|record| record["payload"]["commands"].as_array().expect("a command list").iter());
    for command in commands {
        let body = &command["body"];
        let family = match body {
            Value::String(unit) => unit.clone(),
            Value::Object(fields) => fields.keys().next().expect("one variant").clone(),
            other => panic!("unexpected body {other}"),
        };
        if let Some(content) = body["Upstream"]["content"].as_object() {
            contents.insert(content.keys().next().expect("one variant").clone());
        }
        bodies.insert(family);
    }
    (bodies, contents)
}

/// The same from a text dump: the word after the envelope, and the word
/// after `content=`.
fn text_families(stdout: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut bodies, mut contents) = (BTreeSet::new(), BTreeSet::new());
    for line in stdout.lines().filter(|line| line.starts_with("  slot=")) {
        let (_, body) = line.split_once(" schema_version=1 ").expect("an envelope");
        bodies.insert(body.split(' ').next().expect("a body").to_owned());
        if let Some((_, content)) = body.split_once(" content=") {
            contents.insert(content.split(' ').next().expect("a content").to_owned());
        }
    }
    (bodies, contents)
}

fn families<const N: usize>(names: [&str; N]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn dump_shows_every_command_family_in_text_and_json() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    make_state_log(temp.path());

    let text = farmlog(&["dump", path(temp.path())]);
    text.assert_code(0);
    assert_eq!(
        text_families(&text.stdout),
        (families(BODY_FAMILIES), families(CONTENT_FAMILIES)),
        "{text:#?}"
    );
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(
        lines[0].contains("type=2:commands") && lines[0].ends_with("commands=7"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(
            "  slot=0 tenant=\"landlord\" principal=\"test\" proposed_at_ms=1 session=- schema_version=1 RegisterComponent id=\"server\""
        ),
        "{}",
        lines[1]
    );
    let session = lines
        .iter()
        .find(|line| line.contains("session=1:1"))
        .expect("an append in a session");
    assert!(
        session.contains("idempotency=\"k1\"/86400000ms") && session.contains("expected=NoStream"),
        "{session}"
    );
    assert!(session.contains("body=[11 bytes text=\"first order\"]"), "{session}");
    let data = lines
        .iter()
        .find(|line| line.contains("content=Data"))
        .expect("the data message");
    let prefix = "ab".repeat(32);
    assert!(data.contains(&format!("body=[300 bytes hex={prefix}...]")), "{data}");
    assert!(text.stdout.contains(&format!("data=[16 bytes text={ALARM_DATA:?}]")));
    assert!(text.stdout.contains("data=[4 bytes hex=000102ff]"));

    let json = farmlog(&["dump", path(temp.path()), "--json"]);
    json.assert_code(0);
    let records = json_lines(&json.stdout);
    assert_eq!(records.len(), 4);
    assert_eq!(
        json_families(&records),
        (families(BODY_FAMILIES), families(CONTENT_FAMILIES))
    );
    assert_eq!(
        records[1]["payload"]["text"], "not commands",
        "a RAW record is shown as before"
    );
    let batch = &records[3]["payload"];
    assert_eq!(batch["count"], 4);
    assert_eq!(batch["schema_version"], SCHEMA_VERSION);
    assert!(batch.get("error").is_none());
    let first = &batch["commands"][0];
    assert_eq!(first["slot"], 0);
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["principal"], testing::TEST_PRINCIPAL);
    assert_eq!(first["proposed_at_ms"], 14);
    assert_eq!(first["schema_version"], SCHEMA_VERSION);
    assert_eq!(first["session"]["client_id"], 1);
    assert_eq!(first["session"]["sequence"], 1);
    let body = &first["body"]["StreamAppend"];
    assert_eq!(body["stream"], "orders");
    assert_eq!(body["expected"], "NoStream");
    assert_eq!(body["idempotency"]["key"], "k1");
    assert_eq!(
        body["body"],
        serde_json::json!({ "length": 11, "text": "first order", "truncated": false })
    );
    assert_eq!(batch["commands"][2]["body"]["StreamAppend"]["expected"]["Exact"], 0);
    let contents: Vec<&Value> = records[2]["payload"]["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|command| command["body"]["Upstream"]["content"].as_object())
        .flat_map(|content| content.values())
        .collect();
    let data = contents
        .iter()
        .find(|content| content.get("mime_type").is_some())
        .expect("the data message");
    assert_eq!(
        data["body"],
        serde_json::json!({ "length": 300, "hex": prefix, "truncated": true }),
        "a long binary body is its length and a bounded hex prefix"
    );
    assert_eq!(data["size"], 300);
}

#[test]
fn replay_prints_the_same_hash_every_run_and_as_the_engine_computes_it() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("log");
    make_state_log(&dir);
    let expected = fold_in_process(&dir, u64::MAX);

    let first = replay_json(&dir, &[]);
    let second = replay_json(&dir, &[]);
    assert_eq!(first["state_hash"], second["state_hash"]);
    assert_eq!(first["state_hash"], hex(&expected.hash()));
    assert_eq!(first, second, "everything replay prints is deterministic");

    let counts = &first["counts"];
    assert_eq!(counts["tenants"], 3, "the landlord, acme and globex");
    assert_eq!(counts["components_total"], 7);
    assert_eq!(counts["components_registered"], 6, "si2 was deregistered");
    assert_eq!(counts["groups"], 1);
    assert_eq!(counts["messages_stored"], 7);
    assert_eq!(counts["open_alarms"], 1);
    assert_eq!(
        counts["streams"], 2,
        "every_family appends to `audit`, the rest to `orders`"
    );
    assert_eq!(counts["stream_events"], 3);
    assert_eq!(counts["sessions"], 1);
    assert_eq!(counts["last_applied"], 4);
    assert_eq!(counts["last_position"], expected.last_position());
    assert_eq!(counts["log_time_ms"], 15);
    let outcomes = &first["outcomes"];
    assert_eq!(outcomes["batches"], 3);
    assert_eq!(outcomes["skipped_records"], 1, "the RAW record");
    assert_eq!(outcomes["commands"], 28);
    assert_eq!(outcomes["rejected"], 1);
    assert_eq!(outcomes["applied"], 27);
    assert_eq!(outcomes["retried"], 1);
    assert_eq!(outcomes["rejections"]["WrongExpectedVersion"], 1);

    let text = farmlog(&["replay", path(&dir)]);
    text.assert_code(0);
    let hash = format!("state hash:        {}", hex(&expected.hash()));
    assert!(text.stdout.contains(&hash), "{text:#?}");
    assert!(
        text.stdout.contains("components:        6 registered / 7 total"),
        "{text:#?}"
    );

    // The snapshot file restores to the same state.
    let file = temp.path().join("state.snapshot");
    let with_snapshot = replay_json(&dir, &["--snapshot", path(&file)]);
    let bytes = fs::read(&file).expect("the snapshot was written");
    assert_eq!(with_snapshot["snapshot"]["bytes"], bytes.len());
    let restored = State::restore(&bytes).expect("the snapshot restores");
    assert_eq!(restored.hash(), expected.hash());
}

#[test]
fn replay_to_stops_at_the_index() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    make_state_log(temp.path());

    let full = replay_json(temp.path(), &[]);
    for to in 1..=4u64 {
        let partial = replay_json(temp.path(), &["--to", &to.to_string()]);
        assert_eq!(partial["to"], to);
        assert_eq!(partial["counts"]["last_applied"], to);
        assert_eq!(partial["state_hash"], hex(&fold_in_process(temp.path(), to).hash()));
    }
    let second = replay_json(temp.path(), &["--to", "2"]);
    assert_eq!(second["counts"]["tenants"], 2, "globex registers in record 3");
    assert_eq!(second["outcomes"]["skipped_records"], 1);
    assert_ne!(second["state_hash"], full["state_hash"]);
    assert_eq!(replay_json(temp.path(), &["--to", "4"]), full);

    let past = farmlog(&["replay", path(temp.path()), "--to", "5"]);
    past.assert_code(2);
    assert!(
        past.stderr.contains("--to 5 is past the log's last index 4"),
        "{past:#?}"
    );
}

/// Replaces the first occurrence of `from` in `bytes` by `to`.
fn replace_first(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|window| window == from)
        .expect("the bytes to replace are there");
    bytes[at..at + to.len()].copy_from_slice(to);
}

#[test]
fn a_damaged_batch_payload_is_shown_in_place_and_fails_with_exit_1() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    // Record 2: slot 0's tenant no longer passes validation (uppercase),
    // its bytes still pass bytecheck. Record 3: not a batch at all.
    let mut bad_slot = payload(&[
        command("acme", 5, CommandBody::Tick),
        command(LANDLORD, 5, CommandBody::Tick),
    ]);
    replace_first(&mut bad_slot, b"acme", b"ACME");
    let mut bad_magic = payload(&[command(LANDLORD, 6, CommandBody::Tick)]);
    bad_magic[0] ^= 0xff;
    append_records(
        temp.path(),
        &[
            (
                COMMAND_BATCH,
                payload(&[command(LANDLORD, 1, testing::customer("acme"))]),
            ),
            (COMMAND_BATCH, bad_slot),
            (COMMAND_BATCH, bad_magic),
            (COMMAND_BATCH, payload(&[command("acme", 7, CommandBody::Tick)])),
        ],
    );

    let text = farmlog(&["dump", path(temp.path())]);
    text.assert_code(1);
    assert!(
        text.stderr.starts_with("farmlog: record 2 (segment 1, offset "),
        "the first unsound record is named: {text:#?}"
    );
    assert!(
        text.stderr.contains("slot 0") && text.stderr.contains("`tenant`"),
        "{text:#?}"
    );
    assert!(text.stderr.contains("2 unsound command batch(es)"), "{text:#?}");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("  slot=0 error=") && line.contains("`tenant`")),
        "{text:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("  slot=1 tenant=\"landlord\"")),
        "{text:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("index=3 ") && line.contains("payload_error=") && line.contains("magic")),
        "{text:#?}"
    );
    assert!(
        lines.iter().any(|line| line.starts_with("index=4 ")),
        "the dump goes on past unsound records: {text:#?}"
    );

    let json = farmlog(&["dump", path(temp.path()), "--json"]);
    json.assert_code(1);
    let records = json_lines(&json.stdout);
    assert_eq!(records.len(), 4);
    assert!(
        records.iter().all(|record| record["crc"] == "ok"),
        "the bytes are intact"
    );
    let second = &records[1]["payload"];
    assert!(
        second["error"].as_str().is_some_and(|error| error.contains("slot 0")),
        "{second}"
    );
    assert!(second["commands"][0]["error"].is_string());
    assert_eq!(second["commands"][1]["body"], "Tick");
    assert!(records[2]["payload"]["error"]
        .as_str()
        .is_some_and(|error| error.contains("magic")));
    assert!(records[2]["payload"].get("commands").is_none());
    assert!(records[3]["payload"].get("error").is_none());

    let replay = farmlog(&["replay", path(temp.path())]);
    replay.assert_code(1);
    assert!(
        replay.stderr.starts_with("farmlog: replay stopped: record 2: "),
        "{replay:#?}"
    );
    assert!(
        replay.stdout.is_empty(),
        "no state is printed as if it were complete: {replay:#?}"
    );
    replay_json(temp.path(), &["--to", "1"]);
}

fn bench_state(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["bench", "state", "--dir", path(dir)];
    args.extend(extra);
    farmlog(&args)
}

#[test]
fn bench_state_leaves_a_log_that_verify_dump_and_replay_accept() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("log");
    let run = bench_state(
        &dir,
        &[
            "--events",
            "3000",
            "--customers",
            "2",
            "--batch",
            "64",
            "--segment-bytes",
            "262144",
        ],
    );
    run.assert_code(0);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().expect("output")).expect("a JSON last line");
    assert_eq!(summary["events"], 3000);
    assert_eq!(summary["records"], 47, "3000 commands, 64 a record");
    assert_eq!(summary["outcomes"]["commands"], 3000);
    let rejected = summary["outcomes"]["rejected"].as_u64().expect("a count");
    assert!(rejected < 100, "the workload is built to apply: {summary}");
    assert!(summary["objects"].as_u64().expect("a count") > 2000, "{summary}");
    assert!(summary["apply_events_per_sec"].as_f64().is_some_and(|rate| rate > 0.0));

    let verify = farmlog(&["verify", path(&dir)]);
    verify.assert_code(0);
    assert!(verify.stdout.contains("47 records"), "{verify:#?}");
    let stat: Value = serde_json::from_str(farmlog(&["stat", path(&dir), "--json"]).stdout.trim()).expect("stat");
    assert!(
        stat["segment_count"].as_u64().is_some_and(|segments| segments > 1),
        "{stat}"
    );

    let dump = farmlog(&["dump", path(&dir), "--json"]);
    dump.assert_code(0);
    let records = json_lines(&dump.stdout);
    assert_eq!(records.len(), 47);
    assert!(records.iter().all(|record| record["payload"].get("error").is_none()));
    let commands: u64 = records
        .iter()
        .map(|record| record["payload"]["count"].as_u64().expect("a count"))
        .sum();
    assert_eq!(commands, 3000);
    let (bodies, contents) = json_families(&records);
    for family in [
        "OpenSession",
        "RegisterCustomer",
        "RegisterComponent",
        "Upstream",
        "StreamAppend",
    ] {
        assert!(bodies.contains(family), "{family} in {bodies:?}");
    }
    for family in ["Alarm", "Data", "Heartbeat"] {
        assert!(contents.contains(family), "{family} in {contents:?}");
    }
    farmlog(&["dump", path(&dir), "--from", "40", "--to", "41"]).assert_code(0);

    let replayed = replay_json(&dir, &[]);
    assert_eq!(
        replayed["state_hash"], summary["state_hash"],
        "bench and replay fold the same state"
    );
    assert_eq!(replayed["counts"], summary["counts"]);
    assert_eq!(replayed["outcomes"], summary["outcomes"]);
    assert_eq!(replayed["state_hash"], hex(&fold_in_process(&dir, u64::MAX).hash()));

    let again = bench_state(&dir, &["--events", "10"]);
    again.assert_code(2);
    assert!(again.stderr.contains("is not empty"), "{again:#?}");
}

#[test]
fn bench_state_rejects_bad_input_without_writing() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("never-created");
    let cases: [(&[&str], &str); 5] = [
        (&["--events", "0"], "--events"),
        (&["--events", "10", "--batch", "0"], "--batch"),
        (&["--events", "10", "--batch", "4097"], "--batch"),
        (&["--events", "10", "--customers", "0"], "--customers"),
        (&["--events", "-3"], "--events"),
    ];
    for (args, expected) in cases {
        let run = bench_state(&dir, args);
        run.assert_code(2);
        assert!(
            run.stderr.contains(expected),
            "{args:?}: expected {expected:?} in {run:#?}"
        );
        assert!(!dir.exists(), "{args:?}: a rejected request writes nothing");
    }
}

#[test]
fn replay_lists_the_transitions_log_time_set_off() {
    use farmlog_engine::state::topology::LIVENESS_LATE_AFTER_MS;
    let temp = tempfile::tempdir().expect("a temporary directory");
    let late = 2 + LIVENESS_LATE_AFTER_MS;
    append_records(
        temp.path(),
        &[
            (COMMAND_BATCH, payload(&farm())),
            (COMMAND_BATCH, payload(&[command("acme", late, CommandBody::Tick)])),
        ],
    );
    let text = farmlog(&["replay", path(temp.path()), "--transitions"]);
    text.assert_code(0);
    assert!(text.stdout.contains("fired transitions: 6"), "{text:#?}");
    assert!(
        text.stdout
            .contains("index=2 slot=0 ComponentLate tenant=acme component=si"),
        "{text:#?}"
    );
    let json = replay_json(temp.path(), &["--transitions"]);
    let transitions = json["outcomes"]["transitions"].as_array().expect("a list");
    assert_eq!(transitions.len(), 6, "{json}");
    assert_eq!(transitions[0]["index"], 2);
    assert!(replay_json(temp.path(), &[])["outcomes"]["transitions"].is_null());
}
