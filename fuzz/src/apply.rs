//! Fuzz harness of the state machine's input: arbitrary bytes as the
//! payload of a command-batch record, applied to a small populated state.
//!
//! What it checks, for any input: no panic; a payload apply refuses leaves
//! the state byte-for-byte unchanged (equal hash); a payload it accepts
//! yields one outcome per command, and the state then survives a snapshot
//! round trip with an equal hash.
//!
//! Two modes, chosen by the first byte: the rest of the input is the
//! payload itself, or a list of byte patches applied to a valid batch that
//! holds a command of every family (so the fuzzer starts deep).
//!
//! This file depends on `farmlog_engine` and `std` only: it is compiled
//! both in the fuzz crate and as a module of an engine test.

use farmlog_engine::kinds::COMMAND_BATCH;
use farmlog_engine::state::testing::{self, Harness};
use farmlog_engine::state::{encode, Batch, BatchBuilder, Command, State};

/// The corpus directory (under `fuzz/corpus/`) and target name.
pub const APPLY_BATCH: &str = "apply_batch";
/// First-byte bit that selects the patch mode.
const CONTROL_PATCH: u8 = 1;
/// Patches applied in patch mode, at most.
const PATCHES_MAX: usize = 64;

/// The commands that set up the state every input is applied to.
fn farm() -> Vec<Command> {
    testing::farm()
}

/// One command of every family and content type, valid against [`farm`]:
/// `testing::every_family`, then the back-channel families.
fn every_family() -> Vec<Command> {
    let mut commands = testing::every_family();
    commands.extend(back_channel(&commands));
    commands
}

/// A bulk request, a publish to a support instance and the proxy group, a
/// poll, a settle, a redrive, a spool setting, a transfer grant, a farm
/// throttle and a usage report, valid after [`farm`] and `earlier`.
fn back_channel(earlier: &[Command]) -> Vec<Command> {
    use farmlog_engine::state::command::*;
    use farmlog_engine::state::{Effect, Verdict};
    use testing::{command, hosted, own};
    let at = 14;
    let request = Content::BulkRequest(BulkRequest {
        size: 1 << 20,
        description: "core".into(),
    });
    let publish = command("acme", at, testing::publish("bc1", vec![own("si")], &["proxies"]));
    let mut commands = vec![
        command(
            "acme",
            at,
            testing::message("acme", "b1", "proxy", ComponentKind::Proxy, ("bulk", "core"), request),
        ),
        publish.clone(),
    ];
    // The publish's position, from a dry run of everything before it.
    let mut dry = Harness::new();
    dry.apply_batch(&farm());
    let mut before = earlier.to_vec();
    before.extend(commands.iter().cloned());
    let outcomes = dry.apply_batch(&before);
    let position = match &outcomes.last().expect("the publish").verdict {
        Verdict::Applied(Effect::Published { position, .. }) => *position,
        other => panic!("the seed publish applies: {other:?}"),
    };
    commands.extend([
        command("acme", at, testing::poll(own("proxy"), 4)),
        command(
            "acme",
            at,
            testing::settle(own("proxy"), position, vec![own("si")], Settlement::Ack),
        ),
        command(
            "acme",
            at,
            CommandBody::Redrive(Redrive {
                message: None,
                destination: None,
            }),
        ),
        command(
            "acme",
            at,
            CommandBody::ConfigureSpool(ConfigureSpool { capacity: 100 }),
        ),
        command(
            "acme",
            at,
            CommandBody::Transfer(TransferStep {
                request: "b1".into(),
                hop: hosted("apps"),
                action: TransferAction::Grant {
                    url: "https://apps.example/b1".into(),
                },
            }),
        ),
        command("acme", at, testing::define_group("mlms", GroupKind::Mlm)),
        command("acme", at, testing::group_member("mlms", hosted("agg"), true)),
        command(
            "acme",
            at,
            CommandBody::SetThrottle(SetThrottle {
                farm: "mlms".into(),
                rules: vec![ThrottleRule::Limit {
                    window_ms: 60_000,
                    max_bytes: Some(1 << 20),
                    max_messages: None,
                }],
            }),
        ),
        command(
            "acme",
            at,
            CommandBody::ReportUsage(ReportUsage {
                farm: "mlms".into(),
                member: hosted("agg"),
                increments: vec![Usage {
                    bytes: 4096,
                    messages: 1,
                }],
            }),
        ),
    ]);
    commands
}

fn batch_payload(commands: &[Command]) -> Vec<u8> {
    let mut batch = BatchBuilder::new();
    for command in commands {
        batch
            .push(encode(command).expect("seed commands are valid"))
            .expect("seed batch fits");
    }
    batch.finish()
}

/// Applies the input as a command-batch payload; see the module docs.
pub fn apply_arbitrary_batch(data: &[u8]) {
    let mut harness = Harness::new();
    harness.apply_batch(&farm());
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let payload = match control & CONTROL_PATCH {
        0 => rest.to_vec(),
        _ => patched(batch_payload(&every_family()), rest),
    };
    let payload = testing::aligned(&payload);
    let before = harness.state.hash();
    let index = harness.state.last_applied() + 1;
    match harness.state.apply(index, COMMAND_BATCH, &payload) {
        Err(_) => assert_eq!(before, harness.state.hash(), "a refused record changed the state"),
        Ok(outcomes) => {
            let count = Batch::parse(&payload).expect("apply parsed it").len();
            assert_eq!(outcomes.len(), count as usize);
            let restored = State::restore(&harness.state.snapshot()).expect("a fresh snapshot restores");
            assert_eq!(restored.hash(), harness.state.hash());
        }
    }
}

/// Applies (offset: u16 LE, byte) patches from `patches` to `payload`.
fn patched(mut payload: Vec<u8>, patches: &[u8]) -> Vec<u8> {
    for patch in patches.chunks_exact(3).take(PATCHES_MAX) {
        let offset = u16::from_le_bytes([patch[0], patch[1]]) as usize;
        if let Some(len) = payload.len().checked_sub(1) {
            let at = offset % (len + 1);
            payload[at] ^= patch[2];
        }
    }
    payload
}

/// Seed inputs: the valid batch (raw mode), the same unpatched (patch
/// mode), a few single-byte patches, and a one-command batch per family.
/// Checks that every command of the every-family seed applies against
/// [`farm`]: a rejected seed would start the fuzzer shallow.
pub fn every_family_applies() -> Result<(), String> {
    let mut harness = Harness::new();
    harness.apply_batch(&farm());
    let commands = every_family();
    let outcomes = harness.apply_batch(&commands);
    for (command, outcome) in commands.iter().zip(outcomes) {
        if !outcome.is_applied() {
            return Err(format!("{command:?}: {outcome:?}"));
        }
    }
    Ok(())
}

pub fn apply_seeds() -> Vec<(String, Vec<u8>)> {
    let valid = batch_payload(&every_family());
    let mut seeds = vec![
        ("seed-every-family".to_string(), [&[0u8][..], &valid].concat()),
        ("seed-patch-none".to_string(), vec![CONTROL_PATCH]),
        ("seed-patch-magic".to_string(), vec![CONTROL_PATCH, 0, 0, 0xff]),
        ("seed-patch-count".to_string(), vec![CONTROL_PATCH, 8, 0, 0x40]),
        ("seed-patch-body".to_string(), vec![CONTROL_PATCH, 200, 0, 0x01]),
    ];
    for (at, command) in every_family().iter().enumerate() {
        seeds.push((
            format!("seed-family-{at:02}"),
            [&[0u8][..], &batch_payload(std::slice::from_ref(command))].concat(),
        ));
    }
    seeds
}
