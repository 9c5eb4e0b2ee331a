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

/// The body variants [`every_family`] covers, by the name dump gives it:
/// all but the back-channel ones, which [`spool_script`] covers.
const BODY_FAMILIES: &[&str] = CommandBody::FAMILIES.split_at(BACK_CHANNEL_FAMILIES_FROM).0;
/// Where the back-channel families (Publish … ReportUsage) begin.
const BACK_CHANNEL_FAMILIES_FROM: usize = 11;
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

fn families(names: &[&str]) -> BTreeSet<String> {
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
        (families(BODY_FAMILIES), families(&CONTENT_FAMILIES)),
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
        (families(BODY_FAMILIES), families(&CONTENT_FAMILIES))
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

// ------------------------------------------------------------ back-channel

/// Commands written record by record and applied in-process as they are
/// written, so that a settle can name the position its publish got.
struct Script {
    harness: testing::Harness,
    records: Vec<Vec<Command>>,
}

impl Script {
    fn new() -> Self {
        Self {
            harness: testing::Harness::new(),
            records: vec![Vec::new()],
        }
    }

    /// Appends `body` to the current record and applies it; the command
    /// must apply. Returns its position, if it got one.
    fn run(&mut self, tenant: &str, at_ms: u64, body: CommandBody) -> Option<u64> {
        let command = command(tenant, at_ms, body);
        let outcome = self.harness.apply(command.clone());
        assert!(outcome.is_applied(), "{command:?} gave {outcome:?}");
        self.records.last_mut().expect("a record").push(command);
        outcome.position()
    }

    fn next_record(&mut self) {
        self.records.push(Vec::new());
    }

    fn write(&self, dir: &Path) {
        let records: Vec<(u16, Vec<u8>)> = self
            .records
            .iter()
            .map(|commands| (COMMAND_BATCH, payload(commands)))
            .collect();
        append_records(dir, &records);
    }
}

/// The positions [`spool_script`]'s back-channel messages got.
struct SpoolPositions {
    /// `b1`: acme, to the proxy group `proxies`; one delivery times out.
    multicast: u64,
    /// `b2`: acme, to `si2`, one attempt allowed: parked, then re-driven.
    one_attempt: u64,
    /// `b4`: acme, to `proxy2`, nacked by the aggregation MLM.
    nacked: u64,
    /// `b3`: globex, bulk, expiring at 5000 ms: expires unpolled.
    expiring_bulk: u64,
}

/// Records 1–5 over [`testing::spool_farm`]: (1) the farm, a customer MLM
/// farm `farm` in acme and a spool capacity of 1 for globex; (2) at 10 ms,
/// publishes (a group multicast, a single destination with one attempt
/// allowed, a nacked one, and in globex two pruned ones and an expiring
/// bulk one), polls by `proxy` (carrying an upstream data message) and by
/// the hosted aggregation MLM, an ack, a nack, an upstream bulk request and
/// a denial of its transfer; (3) at 2000 ms, when the visibility timeouts
/// and the retries have passed: a tick, a redrive, the transfer granted
/// and transferred, a poll by `proxy2` and two acks; (4) at 6000 ms, past
/// the bulk message's expiry: a tick; (5) at 7000 ms, a throttle of the
/// farm and a usage report of its member.
fn spool_script() -> (Script, SpoolPositions) {
    use ComponentKind::*;
    let mut script = Script::new();
    for command in testing::spool_farm() {
        script.run(&command.tenant, command.proposed_at_ms, command.body);
    }
    script.run(
        "acme",
        3,
        testing::component("cmlm", CustomerMlm, vec![testing::hosted("agg")]),
    );
    script.run("acme", 3, testing::define_group("farm", GroupKind::Mlm));
    script.run("acme", 3, testing::group_member("farm", testing::own("cmlm"), true));
    script.run("globex", 3, CommandBody::ConfigureSpool(ConfigureSpool { capacity: 1 }));

    script.next_record();
    let multicast = script.run("acme", 10, testing::publish("b1", vec![], &["proxies"]));
    let mut one_attempt = testing::publish("b2", vec![testing::own("si2")], &[]);
    if let CommandBody::Publish(publish) = &mut one_attempt {
        publish.max_attempts = 1;
    }
    let one_attempt = script.run("acme", 10, one_attempt);
    let nacked = script.run("acme", 10, testing::publish("b4", vec![testing::own("proxy2")], &[]));
    let CommandBody::Upstream(carried) = testing::message(
        "acme",
        "u1",
        "im",
        IntegrationModule,
        ("inventory", "patch"),
        testing::data(&testing::EVERY_FAMILY_DATA_BODY),
    ) else {
        unreachable!("testing::message builds an upstream message")
    };
    script.run(
        "acme",
        10,
        CommandBody::Poll(Poll {
            caller: testing::own("proxy"),
            max_deliveries: 16,
            max_bytes: 1 << 20,
            visibility_ms: 1000,
            message: Some(carried),
        }),
    );
    let (multicast, one_attempt, nacked) = (
        multicast.expect("a position"),
        one_attempt.expect("a position"),
        nacked.expect("a position"),
    );
    let ack = |caller: ComponentRef, message: u64, destination: &str| {
        testing::settle(caller, message, vec![testing::own(destination)], Settlement::Ack)
    };
    script.run("acme", 10, ack(testing::own("proxy"), multicast, "proxy"));
    let mut by_aggregation = testing::poll(testing::own("agg"), 16);
    if let CommandBody::Poll(poll) = &mut by_aggregation {
        poll.visibility_ms = 1000;
    }
    script.run(LANDLORD, 10, by_aggregation);
    script.run(
        "acme",
        10,
        testing::settle(
            testing::hosted("agg"),
            nacked,
            vec![testing::own("proxy2")],
            Settlement::Nack(NackReason::Rejected),
        ),
    );
    script.run("globex", 10, testing::publish("g1", vec![testing::own("gproxy")], &[]));
    script.run("globex", 10, testing::publish("g2", vec![testing::own("gproxy")], &[]));
    let mut bulk = testing::publish_qos(
        "b3",
        vec![testing::own("gproxy")],
        Qos {
            precedence: 1,
            expiry_ms: Some(5000),
            persistence: true,
        },
    );
    if let CommandBody::Publish(publish) = &mut bulk {
        publish.payload = Payload::Bulk {
            url: "https://apps.example/b3".into(),
            size: 1 << 30,
        };
    }
    let expiring_bulk = script.run("globex", 10, bulk).expect("a position");
    let request = Content::BulkRequest(BulkRequest {
        size: 1 << 30,
        description: "core file".into(),
    });
    script.run(
        "acme",
        10,
        testing::message("acme", "r1", "im", IntegrationModule, ("bulk", "core"), request),
    );
    let step = |hop: ComponentRef, action: TransferAction| {
        CommandBody::Transfer(TransferStep {
            request: "r1".into(),
            hop,
            action,
        })
    };
    let deny = TransferAction::Deny {
        reason: "link busy".into(),
        retry_after_ms: 1000,
    };
    script.run("acme", 10, step(testing::hosted("agg"), deny));

    script.next_record();
    script.run("acme", 2000, CommandBody::Tick);
    script.run(
        "acme",
        2000,
        CommandBody::Redrive(Redrive {
            message: Some(one_attempt),
            destination: None,
        }),
    );
    let grant = TransferAction::Grant {
        url: "https://apps.example/r1".into(),
    };
    script.run("acme", 2000, step(testing::hosted("apps"), grant));
    script.run("acme", 2000, step(testing::own("proxy"), TransferAction::Transferred));
    script.run("acme", 2000, testing::poll(testing::own("proxy2"), 16));
    script.run("acme", 2000, ack(testing::own("proxy2"), multicast, "proxy2"));
    script.run("acme", 2000, ack(testing::own("proxy2"), nacked, "proxy2"));

    script.next_record();
    script.run("globex", 6000, CommandBody::Tick);

    script.next_record();
    let rules = vec![
        ThrottleRule::Quiet {
            from_minute: 60,
            to_minute: 120,
        },
        ThrottleRule::Limit {
            window_ms: 60_000,
            max_bytes: Some(1 << 20),
            max_messages: None,
        },
    ];
    script.run(
        "acme",
        7000,
        CommandBody::SetThrottle(SetThrottle {
            farm: "farm".into(),
            rules,
        }),
    );
    script.run(
        "acme",
        7000,
        CommandBody::ReportUsage(ReportUsage {
            farm: "farm".into(),
            member: testing::own("cmlm"),
            increments: vec![Usage {
                bytes: 4096,
                messages: 3,
            }],
        }),
    );
    let positions = SpoolPositions {
        multicast,
        one_attempt,
        nacked,
        expiring_bulk,
    };
    (script, positions)
}

/// The body family of a command, as dump names it.
fn family_of(command: &Command) -> String {
    match serde_json::to_value(&command.body).expect("a body serializes") {
        Value::String(unit) => unit,
        Value::Object(fields) => fields.keys().next().expect("one variant").clone(),
        other => panic!("unexpected body {other}"),
    }
}

#[test]
fn dump_shows_every_back_channel_command_in_text_and_json() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let (script, positions) = spool_script();
    script.write(temp.path());

    let text = farmlog(&["dump", path(temp.path())]);
    text.assert_code(0);
    let (bodies, contents) = text_families(&text.stdout);
    let back_channel = families(CommandBody::FAMILIES.split_at(BACK_CHANNEL_FAMILIES_FROM).1);
    assert!(back_channel.is_subset(&bodies), "{bodies:?}");
    assert!(
        contents.contains("Data") && contents.contains("BulkRequest"),
        "{contents:?}"
    );
    // With every_family, every family is covered by some dump test.
    let mut covered = bodies.clone();
    covered.extend(every_family().iter().map(family_of));
    assert_eq!(covered, families(&CommandBody::FAMILIES));

    let line = |needle: &str| {
        let found = text.stdout.lines().find(|line| line.contains(needle));
        found.unwrap_or_else(|| panic!("no line with {needle:?}: {text:#?}"))
    };
    let multicast = line("Publish message_id=\"b1\"");
    assert!(
        multicast.contains(
            "source=hosted:\"apps\" class=\"configuration\" subclass=\"change\" created_at_ms=0 precedence=0 expiry_ms=- persistence=false routing=[] payload=Inline mime_type=\"text/plain\" body=[10 bytes text=\"body of b1\"] destinations=[] groups=[\"proxies\"] max_attempts=0"
        ),
        "{multicast}"
    );
    assert!(line("Publish message_id=\"b2\"").ends_with("destinations=[own:\"si2\"] groups=[] max_attempts=1"));
    let bulk = line("Publish message_id=\"b3\"");
    assert!(
        bulk.contains("precedence=1 expiry_ms=5000 persistence=true")
            && bulk
                .contains("payload=Bulk url=\"https://apps.example/b3\" size=1073741824 destinations=[own:\"gproxy\"]"),
        "{bulk}"
    );
    let poll = line("Poll caller=own:\"proxy\"");
    assert!(
        poll.contains("max_deliveries=16 max_bytes=1048576 visibility_ms=1000 message=Upstream message_id=\"u1\""),
        "{poll}"
    );
    let prefix = "ab".repeat(32);
    assert!(poll.contains(&format!("content=Data mime_type=\"application/octet-stream\" size=300 encoding=\"binary\" body=[300 bytes hex={prefix}...]")), "{poll}");
    assert!(line("Poll caller=own:\"agg\"").ends_with("visibility_ms=1000 message=-"));
    assert!(line("Settle caller=own:\"proxy\"").ends_with(&format!(
        "message={} destinations=[own:\"proxy\"] settlement=Ack",
        positions.multicast
    )));
    assert!(line("Settle caller=hosted:\"agg\"").ends_with(&format!(
        "message={} destinations=[own:\"proxy2\"] settlement=Nack(Rejected)",
        positions.nacked
    )));
    assert!(line("Redrive ").ends_with(&format!("Redrive message={} destination=-", positions.one_attempt)));
    assert!(line("ConfigureSpool").ends_with("ConfigureSpool capacity=1"));
    assert!(line("action=Deny")
        .ends_with("Transfer request=\"r1\" hop=hosted:\"agg\" action=Deny reason=\"link busy\" retry_after_ms=1000"));
    assert!(line("action=Grant").ends_with("hop=hosted:\"apps\" action=Grant url=\"https://apps.example/r1\""));
    assert!(line("action=Transferred").ends_with("hop=own:\"proxy\" action=Transferred"));
    assert!(line("SetThrottle").ends_with(
        "SetThrottle farm=\"farm\" rules=[Quiet(from_minute=60,to_minute=120),Limit(window_ms=60000,max_bytes=1048576,max_messages=-)]"
    ));
    assert!(line("ReportUsage")
        .ends_with("ReportUsage farm=\"farm\" member=own:\"cmlm\" increments=[(bytes=4096,messages=3)]"));

    let json = farmlog(&["dump", path(temp.path()), "--json"]);
    json.assert_code(0);
    let records = json_lines(&json.stdout);
    assert_eq!(records.len(), 5);
    let (json_bodies, _) = json_families(&records);
    assert_eq!(json_bodies, bodies, "text and JSON show the same commands");
    let bodies: Vec<&Value> = records
        .iter()
        .flat_map(|record| record["payload"]["commands"].as_array().expect("commands").iter())
        .map(|command| &command["body"])
        .collect();
    let find = |family: &str, pick: &dyn Fn(&Value) -> bool| -> Value {
        let found = bodies.iter().find(|body| body.get(family).is_some_and(pick));
        found
            .unwrap_or_else(|| panic!("no {family} body"))
            .get(family)
            .expect("picked")
            .clone()
    };
    let multicast = find("Publish", &|body| body["header"]["message_id"] == "b1");
    assert_eq!(
        multicast["payload"]["Inline"]["body"],
        serde_json::json!({ "length": 10, "text": "body of b1", "truncated": false }),
        "an inline body is its length and a bounded preview"
    );
    assert_eq!(multicast["payload"]["Inline"]["mime_type"], "text/plain");
    assert_eq!(multicast["groups"], serde_json::json!(["proxies"]));
    assert_eq!(
        multicast["header"]["source"],
        serde_json::json!({ "hosted": true, "id": "apps" })
    );
    let bulk = find("Publish", &|body| body["header"]["message_id"] == "b3");
    assert_eq!(
        bulk["payload"],
        serde_json::json!({ "Bulk": { "url": "https://apps.example/b3", "size": 1u64 << 30 } })
    );
    assert_eq!(bulk["qos"]["expiry_ms"], 5000);
    let poll = find("Poll", &|body| body["message"].is_object());
    assert_eq!(
        poll["message"]["content"]["Data"]["body"],
        serde_json::json!({ "length": 300, "hex": prefix, "truncated": true }),
        "the carried message's body is previewed too"
    );
    assert_eq!(poll["visibility_ms"], 1000);
    let nack = find("Settle", &|body| body["settlement"].is_object());
    assert_eq!(nack["settlement"], serde_json::json!({ "Nack": "Rejected" }));
    assert_eq!(nack["message"], positions.nacked);
    assert_eq!(find("Redrive", &|_| true)["message"], positions.one_attempt);
    assert_eq!(find("ConfigureSpool", &|_| true)["capacity"], 1);
    let deny = find("Transfer", &|body| body["action"].get("Deny").is_some());
    assert_eq!(deny["action"]["Deny"]["retry_after_ms"], 1000);
    assert_eq!(
        find("Transfer", &|body| body["action"] == "Transferred")["hop"]["id"],
        "proxy"
    );
    let throttle = find("SetThrottle", &|_| true);
    assert_eq!(throttle["rules"][0]["Quiet"]["to_minute"], 120);
    assert!(throttle["rules"][1]["Limit"]["max_messages"].is_null());
    assert_eq!(find("ReportUsage", &|_| true)["increments"][0]["bytes"], 4096);
}

#[test]
fn replay_lists_the_back_channel_transitions_and_spool_counts() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let (script, positions) = spool_script();
    script.write(temp.path());
    let text = farmlog(&["replay", path(temp.path()), "--transitions"]);
    text.assert_code(0);
    let SpoolPositions {
        multicast,
        one_attempt,
        expiring_bulk,
        ..
    } = positions;
    for expected in [
        format!("index=3 slot=0 DeliveryTimedOut tenant=acme message={multicast} destination=proxy2"),
        format!("index=3 slot=0 DeliveryParked tenant=acme message={one_attempt} destination=si2"),
        "index=3 slot=0 TransferRetry tenant=acme request=r1".to_owned(),
        format!("index=4 slot=0 DeliveriesExpired tenant=globex message={expiring_bulk} count=1"),
        format!("index=4 slot=0 BulkUnpublished tenant=globex message={expiring_bulk}"),
    ] {
        assert!(text.stdout.contains(&expected), "{expected:?} in {text:#?}");
    }
    assert!(text.stdout.contains("fired transitions: 5"), "{text:#?}");
    assert!(text.stdout.contains("back-channel:      6 messages"), "{text:#?}");
    assert!(
        text.stdout.contains("deliveries:        7 (1 live, 0 parked)"),
        "{text:#?}"
    );
    assert!(text.stdout.contains("bulk transfers:    1"), "{text:#?}");

    let json = replay_json(temp.path(), &["--transitions"]);
    let expected = fold_in_process(temp.path(), u64::MAX);
    assert_eq!(json["state_hash"], hex(&expected.hash()));
    let outcomes = &json["outcomes"];
    assert_eq!(outcomes["rejected"], 0, "{json}");
    assert_eq!(outcomes["batches"], 5);
    assert_eq!(outcomes["fired_transitions"], 5);
    let transitions = outcomes["transitions"].as_array().expect("a list");
    let kinds: Vec<&str> = transitions
        .iter()
        .filter_map(|entry| entry["transition"].as_object())
        .map(|transition| transition.keys().next().expect("one variant").as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "DeliveryParked",
            "DeliveryTimedOut",
            "TransferRetry",
            "DeliveriesExpired",
            "BulkUnpublished"
        ],
        "{json}"
    );
    let expired = &transitions[3];
    assert_eq!(expired["index"], 4);
    assert_eq!(
        expired["transition"]["DeliveriesExpired"],
        serde_json::json!({ "tenant": "globex", "message": expiring_bulk, "count": 1 })
    );
    let counts = &json["counts"];
    let spools = expected.spools();
    assert_eq!(counts["back_messages"], spools.message_count());
    assert_eq!(counts["deliveries"], spools.delivery_count());
    assert_eq!(counts["back_messages"], 6);
    assert_eq!(
        counts["deliveries"], 7,
        "two for the multicast, one for each other message"
    );
    assert_eq!(
        counts["deliveries_live"], 1,
        "b2 is handed out to proxy2 again, unsettled"
    );
    assert_eq!(counts["deliveries_parked"], 0, "b2 was parked, then re-driven");
    assert_eq!(counts["transfers"], 1);
    let acme = expected.view("acme").expect("acme is registered");
    assert_eq!(counts["deliveries_live"], acme.spool_depth_total());
    let objects = counts["objects"].as_u64().expect("a count");
    let without_spools = replay_json(temp.path(), &["--to", "1"])["counts"]["objects"]
        .as_u64()
        .expect("a count");
    let back_channel_objects = 6 + 7 + 1;
    assert!(
        objects >= without_spools + back_channel_objects,
        "the 6 messages, 7 deliveries and 1 transfer count: {objects} vs {without_spools}"
    );

    // Part-way, before log time passed the timeouts.
    let before = replay_json(temp.path(), &["--to", "2"]);
    assert_eq!(
        before["counts"]["deliveries_live"], 4,
        "b1 to proxy2 and b2 handed out, b4 waiting, b3 pending; b1 to proxy acked, g1 and g2 pruned: {before}"
    );
    assert_eq!(before["outcomes"]["fired_transitions"], 0);
}

#[test]
fn bench_state_mixes_in_the_back_channel_and_reports_it_by_family() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().join("log");
    // Customer 12 has a fleet of 1000 proxies, customers 1 and 11 small
    // spools, customers 2 and 7 fleets of 100–300.
    let run = bench_state(&dir, &["--events", "30000", "--customers", "13"]);
    run.assert_code(0);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().expect("output")).expect("a JSON last line");
    let mix = &summary["mix"];
    let outcomes = &summary["outcomes"];
    let families = mix["families"].as_object().expect("families");
    let sum = |field: &str| -> u64 {
        families
            .values()
            .map(|family| family[field].as_u64().expect("a count"))
            .sum()
    };
    assert_eq!(sum("commands"), 30000);
    assert_eq!(sum("applied"), outcomes["applied"], "the model saw the fold's verdicts");
    assert_eq!(sum("rejected"), outcomes["rejected"]);
    assert_eq!(mix["fired_transitions"], outcomes["fired_transitions"]);
    for family in ["Publish", "Poll", "Settle", "ConfigureSpool", "Transfer"] {
        let count = &families[family];
        assert!(count["applied"].as_u64() > Some(0), "{family}: {mix}");
    }
    assert!(mix["rejection_rate"].as_f64().is_some_and(|rate| rate < 0.02), "{mix}");
    let back = &mix["back_channel"];
    let count = |field: &str| back[field].as_u64().expect("a count");
    assert!(
        count("deliveries_published") > 0 && count("deliveries_handed_out") > 0,
        "{back}"
    );
    assert!(count("acked") > 0 && count("respooled") > 0, "{back}");
    assert!(count("pruned") > 0, "the small spools prune: {back}");
    assert!(
        count("transfers_granted") > 0 && count("transfers_transferred") > 0,
        "{back}"
    );
    let fired = &outcomes["fired_by_kind"];
    assert!(fired["DeliveryTimedOut"].as_u64() > Some(0), "{outcomes}");
    let counts = &summary["counts"];
    assert_eq!(counts["back_messages"], families["Publish"]["applied"]);
    assert_eq!(counts["deliveries"], back["deliveries_published"]);
    assert!(run.stdout.contains("\n  Publish "), "{run:#?}");
    assert!(run.stdout.contains("\nback-channel: "), "{run:#?}");

    let (bodies, _) = json_families(&json_lines(&farmlog(&["dump", path(&dir), "--json"]).stdout));
    for family in ["Publish", "Poll", "Settle", "Transfer"] {
        assert!(bodies.contains(family), "{family} in {bodies:?}");
    }
    let replayed = replay_json(&dir, &["--transitions"]);
    assert_eq!(replayed["state_hash"], summary["state_hash"]);
    assert_eq!(replayed["counts"], summary["counts"]);
    let transitions = replayed["outcomes"]["transitions"].as_array().expect("a list");
    assert!(
        transitions
            .iter()
            .any(|entry| entry["transition"].get("DeliveryTimedOut").is_some()),
        "{replayed}"
    );

    // Without the back-channel, the mix is the upstream one alone.
    let upstream = bench_state(
        &temp.path().join("upstream"),
        &["--events", "3000", "--customers", "2", "--no-back-channel"],
    );
    upstream.assert_code(0);
    let summary: Value = serde_json::from_str(upstream.stdout.lines().last().expect("output")).expect("JSON");
    let families = summary["mix"]["families"].as_object().expect("families");
    for family in ["Publish", "Poll", "Settle", "Redrive", "ConfigureSpool", "Transfer"] {
        assert!(families.get(family).is_none(), "{family} in {summary}");
    }
    assert_eq!(summary["counts"]["back_messages"], 0);
}
