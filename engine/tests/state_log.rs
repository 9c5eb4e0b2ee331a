//! The state machine over a real log: commands written as command-batch
//! records, folded back by `State::apply`, and events read back by
//! position, zero-copy, through a tenant's view.

use farmlog_engine::kinds::COMMAND_BATCH;
use farmlog_engine::state::command::{ArchivedCommandBody, ComponentKind, ExpectedVersion, LANDLORD};
use farmlog_engine::state::read::ReadError;
use farmlog_engine::state::testing::{append, command, component, customer, own};
use farmlog_engine::state::{encode, BatchBuilder, Command, State};
use farmlog_engine::{Log, LogOptions, NewRecord};

fn payload(commands: &[Command]) -> Vec<u8> {
    let mut batch = BatchBuilder::new();
    for command in commands {
        batch.push(encode(command).unwrap()).unwrap();
    }
    batch.finish()
}

fn record(payload: &[u8]) -> NewRecord<'_> {
    NewRecord {
        term: 1,
        group: 0,
        kind: COMMAND_BATCH,
        payload,
    }
}

#[test]
fn events_are_read_back_by_position_in_their_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let first = payload(&[
        command(LANDLORD, 1, customer("acme")),
        command(LANDLORD, 1, customer("globex")),
    ]);
    let second = payload(&[
        command(
            "acme",
            2,
            append("orders", ExpectedVersion::NoStream, None, b"first order"),
        ),
        command(
            "globex",
            2,
            append("orders", ExpectedVersion::NoStream, None, b"theirs"),
        ),
        command(
            "acme",
            2,
            component("im", ComponentKind::IntegrationModule, vec![own("missing")]),
        ),
    ]);
    log.append(&[record(&first), record(&second)]).expect("append");

    let mut state = State::new();
    for record in log.range(..) {
        let record = record.unwrap();
        state.apply(record.index(), record.kind(), record.payload()).unwrap();
    }
    let acme = state.view("acme").unwrap();
    let position = acme
        .read_stream("orders", 0, farmlog_engine::state::Direction::Forward, 1)
        .unwrap()[0]
        .position;
    let event = acme.event(&log, position).unwrap();
    let ArchivedCommandBody::StreamAppend(body) = &event.command().body else {
        panic!("not an append")
    };
    assert_eq!(body.body.as_slice(), b"first order");
    assert_eq!(event.place().index, 2);

    let globex = state.view("globex").unwrap();
    let theirs = globex
        .read_stream("orders", 0, farmlog_engine::state::Direction::Forward, 1)
        .unwrap()[0]
        .position;
    assert!(matches!(
        acme.event(&log, theirs),
        Err(ReadError::NoSuchPosition { .. })
    ));
    assert!(matches!(acme.event(&log, 999), Err(ReadError::NoSuchPosition { .. })));
}
