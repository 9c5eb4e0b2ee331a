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

/// One command of every family and content type, valid against [`farm`].
fn every_family() -> Vec<Command> {
    testing::every_family()
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
