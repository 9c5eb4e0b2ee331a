//! The back-channel spool targets, measured in one process:
//!
//! 1. apply rate of single-destination publish + ack, on one core;
//! 2. the memory one 1000-destination multicast costs per destination
//!    (heap bytes, counted by a wrapping allocator, and the body stored
//!    once, in the log);
//! 3. a poll by an MLM with 10,000 reachable components, with 1 M pending
//!    deliveries against with 10,000: time per poll of the same batch size;
//! 4. the empty poll of one of 10,000 proxies, a read: polls/s.
//!
//! Apply times are of `State::apply` on encoded batches in memory (the log
//! is measured by `report`); every figure is the median of
//! `FARMLOG_SPOOL_ROUNDS` (default 5) rounds. Sizes shrink with
//! `FARMLOG_SPOOL_SCALE` (default 1; 10 runs a tenth) for quick checks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use farmlog_benches::env_u64;
use farmlog_engine::kinds::COMMAND_BATCH;
use farmlog_engine::state::command::*;
use farmlog_engine::state::testing::{command, component, customer, define_group, group_member, hosted, own, publish};
use farmlog_engine::state::{encode, BatchBuilder, Effect, State, Verdict, LANDLORD};

/// Counts live heap bytes, to measure what state costs.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Commands per batch (one log record each).
const BATCH: usize = 256;
/// Proxies below the aggregation MLM.
const PROXIES: usize = 10_000;
/// Deliveries one measured poll hands out.
const POLL_BATCH: u32 = 256;

/// A state and the next log index, fed encoded batches.
struct Feeder {
    state: State,
    index: u64,
}

impl Feeder {
    fn new() -> Self {
        Self {
            state: State::new(),
            index: 1,
        }
    }

    fn batches(commands: &[Command]) -> Vec<rkyv::util::AlignedVec<8>> {
        commands
            .chunks(BATCH)
            .map(|chunk| {
                let mut batch = BatchBuilder::new();
                for command in chunk {
                    batch.push(encode(command).expect("valid")).expect("fits");
                }
                let bytes = batch.finish();
                let mut aligned = rkyv::util::AlignedVec::<8>::with_capacity(bytes.len());
                aligned.extend_from_slice(&bytes);
                aligned
            })
            .collect()
    }

    fn apply_all(&mut self, batches: &[rkyv::util::AlignedVec<8>]) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        for batch in batches {
            let outcomes = self.state.apply(self.index, COMMAND_BATCH, batch).expect("applies");
            self.index += 1;
            verdicts.extend(outcomes.into_iter().map(|outcome| outcome.verdict));
        }
        verdicts
    }

    fn run(&mut self, commands: &[Command]) -> Vec<Verdict> {
        let batches = Self::batches(commands);
        self.apply_all(&batches)
    }
}

/// The landlord's chain (server → apps → agg) and customer `acme` with
/// `proxies` proxies below `agg`, in the proxy groups `g0`, `g1`, … of
/// 1000 members each.
fn setup(proxies: usize) -> Feeder {
    use ComponentKind::*;
    let mut commands = vec![
        command(LANDLORD, 1, component("server", ApplicationServer, vec![])),
        command(LANDLORD, 1, component("apps", ApplicationsMlm, vec![own("server")])),
        command(LANDLORD, 1, component("agg", AggregationMlm, vec![own("apps")])),
        command(LANDLORD, 1, customer("acme")),
        command(
            "acme",
            1,
            CommandBody::ConfigureSpool(ConfigureSpool {
                capacity: SPOOL_CAPACITY_MAX,
            }),
        ),
    ];
    for at in 0..proxies {
        commands.push(command(
            "acme",
            1,
            component(&format!("p{at}"), Proxy, vec![hosted("agg")]),
        ));
        if at % 1000 == 0 {
            commands.push(command(
                "acme",
                1,
                define_group(&format!("g{}", at / 1000), GroupKind::Proxy),
            ));
        }
        let group = format!("g{}", at / 1000);
        commands.push(command("acme", 1, group_member(&group, own(&format!("p{at}")), true)));
    }
    let mut feeder = Feeder::new();
    let rejected = feeder
        .run(&commands)
        .iter()
        .filter(|verdict| matches!(verdict, Verdict::Rejected(_)))
        .count();
    assert_eq!(rejected, 0, "the setup applies");
    feeder
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let setting = |name, default| match env_u64(name, default) {
        Ok(value) => value.max(1) as usize,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2)
        }
    };
    let rounds = setting("FARMLOG_SPOOL_ROUNDS", 5);
    let scale = setting("FARMLOG_SPOOL_SCALE", 1);
    println!("# back-channel spool targets ({rounds} rounds, scale 1/{scale})\n");
    println!("| Measure | Figure | Target | Verdict |");
    println!("|---|---|---|---|");
    publish_and_ack(rounds, 1_000_000 / scale);
    multicast_bytes(rounds, 100 / scale.min(100));
    poll_cost(rounds, 1_000_000 / scale);
    empty_polls(rounds);
}

/// Target 1: ≥ 1 M events/s of single-destination publish + ack.
fn publish_and_ack(rounds: usize, events: usize) {
    let mut rates = Vec::new();
    for round in 0..rounds {
        let mut feeder = setup(1000);
        let first = feeder.state.last_position() + 1;
        let mut commands = Vec::with_capacity(events);
        // Publish a batch, then ack it: the ack names the position the
        // publish will get (positions are dense, one per publish here).
        let mut next_position = first;
        for start in (0..events / 2).step_by(BATCH / 2) {
            let count = (BATCH / 2).min(events / 2 - start);
            let positions: Vec<u64> = (0..count as u64).map(|at| next_position + at).collect();
            for at in 0..count {
                let proxy = format!("p{}", (start + at) % 1000);
                let id = format!("r{round}m{}", start + at);
                commands.push(command("acme", 2, publish(&id, vec![own(&proxy)], &[])));
            }
            for (at, position) in positions.iter().enumerate() {
                let proxy = own(&format!("p{}", (start + at) % 1000));
                let body = CommandBody::Settle(Settle {
                    caller: proxy.clone(),
                    message: *position,
                    destinations: vec![proxy],
                    settlement: Settlement::Ack,
                });
                commands.push(command("acme", 2, body));
            }
            next_position += 2 * count as u64;
        }
        let batches = Feeder::batches(&commands);
        let started = Instant::now();
        let verdicts = feeder.apply_all(&batches);
        let elapsed = started.elapsed();
        let acked = verdicts
            .iter()
            .filter(|verdict| matches!(verdict, Verdict::Applied(Effect::Settled { acked: 1, .. })))
            .count();
        assert_eq!(acked, events / 2, "every ack found its publish");
        rates.push(commands.len() as f64 / elapsed.as_secs_f64());
    }
    let rate = median(rates);
    let verdict = if rate >= 1e6 { "met" } else { "**missed**" };
    println!(
        "| Apply, single-destination publish + ack ({events} events, batches of {BATCH}) | {:.2} M events/s | ≥ 1 M events/s | {verdict} |",
        rate / 1e6
    );
}

/// Target 2: a 1000-destination multicast costs one body plus O(1000)
/// small states. Measured twice: to destinations with no spool yet (the
/// first message pays for each destination's queue and spool), and to
/// destinations that already have one (what each further message costs).
fn multicast_bytes(rounds: usize, multicasts: usize) {
    let mut first = Vec::new();
    let mut further = Vec::new();
    let mut body_bytes = 0;
    for round in 0..rounds {
        let mut feeder = setup(PROXIES);
        let groups = PROXIES / 1000;
        let publishes = |tag: &str, count: usize| -> Vec<Command> {
            let publish_one = |at: usize| {
                let group = format!("g{}", at % groups);
                command("acme", 2, publish(&format!("r{round}{tag}{at}"), vec![], &[&group]))
            };
            (0..count).map(publish_one).collect()
        };
        let (bytes, _) = measure(&mut feeder, &publishes("first", groups));
        first.push(bytes);
        let commands = publishes("mc", multicasts);
        let (bytes, log_bytes) = measure(&mut feeder, &commands);
        further.push(bytes);
        body_bytes = log_bytes / multicasts;
        black_box(&feeder);
    }
    println!(
        "| 1000-destination multicast, state per destination: first message to {PROXIES} fresh destinations | {:.0} B | O(destinations) small states | measured |",
        median(first)
    );
    println!(
        "| 1000-destination multicast, state per destination: {multicasts} further multicasts | {:.0} B | O(destinations) small states | measured |",
        median(further)
    );
    println!("| 1000-destination multicast: its command (body included) in the log, once | {body_bytes} B | one body | measured |");
}

/// Heap bytes the state grew by per destination published to, and the
/// encoded size of the commands.
fn measure(feeder: &mut Feeder, commands: &[Command]) -> (f64, usize) {
    let batches = Feeder::batches(commands);
    let log_bytes = batches.iter().map(|batch| batch.len()).sum::<usize>();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let verdicts = feeder.apply_all(&batches);
    let destinations: u64 = verdicts
        .iter()
        .map(|verdict| match verdict {
            Verdict::Applied(Effect::Published { destinations, .. }) => u64::from(*destinations),
            other => panic!("publish failed: {other:?}"),
        })
        .sum();
    let verdict_bytes = verdicts.capacity() * std::mem::size_of::<Verdict>();
    let after = LIVE_BYTES.load(Ordering::Relaxed) - verdict_bytes;
    (after.saturating_sub(before) as f64 / destinations as f64, log_bytes)
}

/// Target 3: a poll by an MLM with 10,000 reachable components costs time in
/// proportion to the batch, not to the spool.
fn poll_cost(rounds: usize, big: usize) {
    let small = 10_000;
    let mut ratios = Vec::new();
    let mut big_times = Vec::new();
    let mut small_times = Vec::new();
    for _ in 0..rounds {
        let big_time = time_polls(big);
        let small_time = time_polls(small);
        ratios.push(big_time.as_secs_f64() / small_time.as_secs_f64());
        big_times.push(big_time.as_secs_f64());
        small_times.push(small_time.as_secs_f64());
    }
    println!(
        "| Poll by an MLM ({PROXIES} reachable), {POLL_BATCH} deliveries: {big} pending vs {small} pending | {:.1} µs vs {:.1} µs per poll | ratio {:.2} (time ∝ batch, not spool) | {} |",
        median(big_times) * 1e6,
        median(small_times) * 1e6,
        median(ratios.clone()),
        if median(ratios) < 2.0 { "met" } else { "**missed**" }
    );
}

/// Median time of one poll handing out [`POLL_BATCH`] deliveries, with
/// `pending` deliveries spooled below the MLM.
fn time_polls(pending: usize) -> Duration {
    let mut feeder = setup(PROXIES);
    let multicasts = pending / 1000;
    let commands: Vec<Command> = (0..multicasts)
        .map(|at| {
            let group = format!("g{}", at % (PROXIES / 1000));
            command("acme", 2, publish(&format!("mc{at}"), vec![], &[&group]))
        })
        .collect();
    feeder.run(&commands);
    let poll = |at: u64| {
        let body = CommandBody::Poll(Poll {
            caller: own("agg"),
            max_deliveries: POLL_BATCH,
            max_bytes: POLL_BYTES_MAX,
            visibility_ms: VISIBILITY_MS_MAX,
            message: None,
        });
        command(LANDLORD, 3 + at, body)
    };
    let polls = 20;
    let batches: Vec<_> = (0..polls).map(|at| Feeder::batches(&[poll(at)])).collect();
    let mut times = Vec::new();
    for batch in &batches {
        let started = Instant::now();
        let verdicts = feeder.apply_all(batch);
        times.push(started.elapsed().as_secs_f64());
        let handed: usize = match &verdicts[0] {
            Verdict::Applied(Effect::Polled { handed, .. }) => {
                handed.iter().map(|handout| handout.destinations.len()).sum()
            }
            other => panic!("poll failed: {other:?}"),
        };
        assert_eq!(handed, POLL_BATCH as usize);
    }
    Duration::from_secs_f64(median(times))
}

/// Target 4: the empty poll of one of 10,000 proxies is a read.
fn empty_polls(rounds: usize) {
    let mut feeder = setup(PROXIES);
    // Something pending for others, nothing for the polling proxies.
    let commands: Vec<Command> = (0..10)
        .map(|at| command("acme", 2, publish(&format!("busy{at}"), vec![own("p0")], &[])))
        .collect();
    feeder.run(&commands);
    let view = feeder.state.view("acme").expect("acme");
    let callers: Vec<ComponentRef> = (1..PROXIES).map(|at| own(&format!("p{at}"))).collect();
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let mut found = 0;
        for _ in 0..10 {
            for caller in &callers {
                found += usize::from(view.has_ready(black_box(caller)) == Some(true));
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(found, 0);
        rates.push(10.0 * callers.len() as f64 / elapsed.as_secs_f64());
    }
    println!(
        "| Empty poll by one of {PROXIES} proxies (a read: no command, no write) | {:.2} M polls/s | a read | measured |",
        median(rates) / 1e6
    );
}
