//! Model-based test of the engine log: random sequences of append,
//! submit, commit, truncate_after, purge_before, seal, compress, reopen
//! and crash (power loss, immediately or at a random sync point inside an
//! append), on simulated storage, checked after every step against a
//! simple in-memory model.
//!
//! After every crash the recovered log must hold every acknowledged record
//! intact, nothing that was never written, and no duplicates: exactly the
//! acknowledged records followed by a prefix of the in-flight ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use farmlog_engine::io::SimStorage;
use farmlog_engine::{Error, Log};
use farmlog_tests::{batch, check, open_sim, sim_storage, Model};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Blocking append of a batch with these payload lengths.
    Append(Vec<usize>),
    /// Append without waiting (callback), left in flight.
    Submit(Vec<usize>),
    /// Run a commit round.
    Commit,
    /// Truncate after `next - 1 - back` (clamped to the log).
    Truncate(u64),
    /// Purge before `first + forward` (may pass the end).
    Purge(u64),
    Seal,
    Compress(usize),
    /// Clean close and reopen.
    Reopen,
    /// Power loss now.
    Crash,
    /// An append during which power fails at the n-th sync from now.
    AppendCrashing(Vec<usize>, u64),
}

fn lengths() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![4 => 0usize..200, 1 => 200usize..6000], 1..8)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => lengths().prop_map(Op::Append),
        4 => lengths().prop_map(Op::Submit),
        2 => Just(Op::Commit),
        2 => (0u64..40).prop_map(Op::Truncate),
        1 => (0u64..60).prop_map(Op::Purge),
        1 => Just(Op::Seal),
        1 => (0usize..3).prop_map(Op::Compress),
        1 => Just(Op::Reopen),
        2 => Just(Op::Crash),
        2 => (lengths(), 1u64..4).prop_map(|(lengths, at)| Op::AppendCrashing(lengths, at)),
    ]
}

struct Harness {
    storage: SimStorage,
    log: Option<Log>,
    model: Model,
    term: u64,
    /// One past the highest index a submit callback acknowledged durable.
    callback_acked_end: Arc<AtomicU64>,
}

impl Harness {
    fn new(seed: u64) -> Self {
        let storage = sim_storage(seed);
        let log = open_sim(&storage);
        let model = Model::new(log.first_index());
        Self {
            storage,
            log: Some(log),
            model,
            term: 1,
            callback_acked_end: Arc::new(AtomicU64::new(0)),
        }
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("the log is open between steps")
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(lengths) => {
                let payloads = self.model.stage(self.term, lengths);
                let last = self.log().append(&batch(self.term, &payloads)).expect("append");
                assert_eq!(last, self.model.next() - 1);
                self.model.ack_all();
            }
            Op::Submit(lengths) => {
                let payloads = self.model.stage(self.term, lengths);
                let acked_end = self.callback_acked_end.clone();
                let on_durable = Box::new(move |result: farmlog_engine::Result<u64>| {
                    // An error is legitimate (a crash); Ok is a promise.
                    if let Ok(last) = result {
                        acked_end.fetch_max(last + 1, Ordering::SeqCst);
                    }
                });
                let last = self
                    .log()
                    .submit(&batch(self.term, &payloads), on_durable)
                    .expect("submit");
                assert_eq!(last, self.model.next() - 1);
            }
            Op::Commit => {
                self.log().commit_pending().expect("commit");
                self.model.ack_all();
            }
            Op::Truncate(back) => {
                let target = self
                    .model
                    .next()
                    .saturating_sub(1 + back)
                    .max(self.model.first.saturating_sub(1));
                self.log().truncate_after(target).expect("truncate_after");
                self.model.ack_all();
                self.model.truncate_after(target);
                self.callback_acked_end.fetch_min(target + 1, Ordering::SeqCst);
                // A new term after a conflict, as Raft would have.
                self.term += 1;
            }
            Op::Purge(forward) => {
                let target = self.model.first + forward;
                self.log().purge_before(target).expect("purge_before");
                self.model.ack_all();
                self.model.purge_before(target);
                if target > self.model.next() {
                    self.model.first = target;
                }
            }
            Op::Seal => {
                self.log().seal().expect("seal");
                self.model.ack_all();
            }
            Op::Compress(keep) => {
                self.log().compress_cold(*keep).expect("compress_cold");
            }
            Op::Reopen => {
                self.log = None;
                self.log = Some(open_sim(&self.storage));
                self.model.ack_all();
            }
            Op::Crash => {
                self.storage.crash();
                self.log = None;
                self.recover();
            }
            Op::AppendCrashing(lengths, at) => {
                self.storage.crash_at_sync(self.storage.sync_count() + at);
                let payloads = self.model.stage(self.term, lengths);
                match self.log().append(&batch(self.term, &payloads)) {
                    Ok(_) => self.model.ack_all(),
                    Err(error) => assert!(self.storage.is_dead(), "append failed without a crash: {error}"),
                }
                self.storage.crash_at_sync(u64::MAX); // disarm
                if self.storage.is_dead() {
                    self.storage.reboot();
                    self.log = None;
                    self.recover();
                }
            }
        }
    }

    fn recover(&mut self) {
        // Whatever a callback acknowledged must survive the crash.
        let promised = self
            .callback_acked_end
            .load(Ordering::SeqCst)
            .saturating_sub(self.model.first) as usize;
        self.model.acked = self.model.acked.max(promised.min(self.model.records.len()));
        let log = open_sim(&self.storage);
        self.model.adopt_after_crash(&log);
        self.log = Some(log);
    }
}

fn run(seed: u64, ops: &[Op]) {
    let mut harness = Harness::new(seed);
    for (step, op) in ops.iter().enumerate() {
        harness.apply(op);
        let log = harness.log();
        // Uncommitted records are readable but not acknowledged; the
        // model's view of the log includes them.
        check(log, &harness.model);
        let _ = step;
    }
    // A clean close at the end leaves every record durable and readable.
    harness.log = None;
    let log = open_sim(&harness.storage);
    harness.model.ack_all();
    check(&log, &harness.model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_through_crashes(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..60)) {
        run(seed, &ops);
    }
}

/// A fixed scenario that exercises every op, so a regression shows even
/// if proptest's random cases happen to miss one.
#[test]
fn every_op_in_one_scenario() {
    let ops = vec![
        Op::Append(vec![10, 5000, 3000]),
        Op::Submit(vec![100; 5]),
        Op::Commit,
        Op::Append(vec![4000; 12]),
        Op::Seal,
        Op::Append(vec![6000; 8]),
        Op::Compress(0),
        Op::Truncate(30),
        Op::Append(vec![1; 3]),
        Op::Purge(5),
        Op::Submit(vec![50; 3]),
        Op::Crash,
        Op::AppendCrashing(vec![3000; 7], 1),
        Op::Reopen,
        Op::Purge(1000),
        Op::Append(vec![8]),
    ];
    for seed in 0..32 {
        run(seed, &ops);
    }
}

/// The log refuses writes when read-only.
#[test]
fn read_only_log_refuses_writes() {
    let storage = sim_storage(1);
    drop(open_sim(&storage));
    let log =
        Log::open_read_only_with(std::sync::Arc::new(storage), &farmlog_tests::sim_dir()).expect("read-only open");
    assert!(matches!(log.append(&batch(1, &[b"x".to_vec()])), Err(Error::ReadOnly)));
}
