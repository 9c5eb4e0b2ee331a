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
                // Only a purge past the end commits what is in flight; one
                // inside the log runs beside appends and leaves it alone.
                if target >= self.model.next() {
                    self.model.ack_all();
                }
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
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!(
                "step {step}: {op:?} -> first {} next {} durable {} segs {:?} report {:?}",
                log.first_index(),
                log.next_index(),
                log.durable_end(),
                log.segments()
                    .iter()
                    .map(|s| (s.sequence, s.first_index, s.records, s.sealed, s.compressed))
                    .collect::<Vec<_>>(),
                log.recovery_report().tail
            );
        }
    }
    // A clean close at the end leaves every record durable and readable.
    harness.log = None;
    let log = open_sim(&harness.storage);
    if std::env::var_os("MODEL_TRACE").is_some() {
        eprintln!(
            "final: next {} segs {:?} report {:?}",
            log.next_index(),
            log.segments()
                .iter()
                .map(|s| (s.sequence, s.first_index, s.records, s.sealed, s.compressed))
                .collect::<Vec<_>>(),
            log.recovery_report()
        );
    }
    harness.model.ack_all();
    check(&log, &harness.model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, max_shrink_iters: 2000, ..ProptestConfig::default() })]

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

/// Found by proptest in CI: power loss while sealing a segment kept the
/// footer and lost records under it; the footer must be written only once
/// the records it describes are durable.
#[test]
fn regression_footer_before_its_records() {
    let ops = vec![
        Op::Append(vec![1249, 105, 129]),
        Op::Crash,
        Op::Purge(0),
        Op::AppendCrashing(vec![65, 1, 2321], 1),
        Op::Append(vec![73, 193]),
        Op::Append(vec![81, 5481, 105, 2057, 137, 89, 89]),
        Op::Append(vec![73, 177, 113, 121]),
        Op::Submit(vec![17, 97, 1, 145, 17, 4801, 1]),
        Op::Crash,
        Op::AppendCrashing(vec![1025], 2),
        Op::Append(vec![121, 4697, 65, 185, 41, 49]),
        Op::Append(vec![1465, 97, 89, 49, 97, 57]),
        Op::Append(vec![65, 41, 3857, 169, 193, 17, 25]),
        Op::Append(vec![4521, 97, 57, 9, 49, 73]),
        Op::Append(vec![33, 105, 865, 129, 177, 73, 33]),
        Op::Append(vec![81, 185, 2641, 5177, 161, 313]),
        Op::Append(vec![33, 65, 145, 105, 153, 2825, 169]),
        Op::Submit(vec![97, 177, 185, 65, 137, 2793, 57]),
        Op::AppendCrashing(vec![89, 5369, 25, 49, 5225, 2401, 145], 1),
    ];
    run(11895624744278971259, &ops);
}

/// Found by proptest: truncation into a compressed segment, then appends
/// and another compression.
#[test]
fn regression_truncate_into_compressed_then_compress() {
    let ops = vec![
        Op::Append(vec![0, 161, 2017, 25, 2009, 3009]),
        Op::Append(vec![17, 113, 1433, 4729]),
        Op::Append(vec![1801, 385, 185]),
        Op::Append(vec![0, 3769, 97, 169, 5953, 2697]),
        Op::Append(vec![105, 49, 4297]),
        Op::Submit(vec![153, 113, 121, 33, 121, 65]),
        Op::Append(vec![153]),
        Op::Append(vec![25, 2593]),
        Op::Append(vec![137]),
        Op::Append(vec![0, 0, 289]),
        Op::Append(vec![81, 97, 5121, 81]),
        Op::Append(vec![137, 57, 97, 25, 105, 137, 161]),
        Op::Submit(vec![193, 1, 0]),
        Op::Purge(48),
        Op::Seal,
        Op::Compress(0),
        Op::Truncate(1),
        Op::Submit(vec![185, 129, 185, 49, 73]),
        Op::Append(vec![113, 5305, 5001, 129, 185, 4313, 49]),
        Op::Compress(0),
    ];
    run(0, &ops);
}

/// Found by proptest: power loss dropped the page of the first in-flight
/// record and kept the page of a later one; recovery must zero what
/// follows a clean end after a crash, or that record would follow the next
/// append of the same size.
#[test]
fn regression_crash_with_append_in_flight() {
    let ops = vec![
        Op::Append(vec![57, 1705, 273, 3609, 129, 3665, 113]),
        Op::Submit(vec![89, 25, 145, 153]),
        Op::Append(vec![153, 161, 65, 2017, 129, 17]),
        Op::Submit(vec![65, 1545]),
        Op::Crash,
        Op::Append(vec![3857, 137, 2017]),
        Op::Append(vec![129, 5241]),
        Op::Append(vec![97, 113, 2665, 81]),
        Op::Append(vec![177, 121, 161]),
        Op::Submit(vec![97]),
        Op::AppendCrashing(vec![0], 1),
        Op::Append(vec![97]),
        Op::Compress(0),
    ];
    run(9928529478434750695, &ops);
}
