//! Replication throughput and commit latency, side by side with the engine
//! alone, in one process:
//!
//! 1. clusters of 1 and 3 `farmlog_replica::Node`s on the in-process
//!    network (`sim::net::SimNet` with no faults: no delay, no loss), each
//!    node's log on the real disk with the default options (background
//!    flusher, synced: an entry is acknowledged after its `fdatasync`);
//!    1, 16 and 64 concurrent clients (tokio tasks) each proposing one
//!    command of about 256 bytes at a time to the leader
//!    (`Node::propose`, which returns once the entry is committed and
//!    applied on the leader);
//! 2. the engine's `Log` alone (the benchmarks' log options), 1, 16 and 64
//!    threads each appending one 256-byte record per blocking
//!    `Log::append`.
//!
//! `SimNet` with no faults delivers each request as a direct call on the
//! target node's `Inbox`, with no sleep. A 1-node cluster sends nothing
//! over its network.
//!
//! Every cell is a fresh log (or cluster) under the benchmarks' scratch
//! root (a real disk, never tmpfs: see `farmlog_benches::scratch`), a
//! warm-up, then a measured window of fixed length. A command (or record)
//! counts if it completed inside the window; its latency is from the
//! propose (or append) call to its outcome. The clusters run on one tokio
//! runtime with 2 worker threads. Within a round the cells of one client
//! count run one after the other (engine, then the clusters, in an order
//! that reverses every round), so a ratio compares runs at most a few
//! seconds apart. Each cell also reports the CPU time this process, other
//! processes and the kernel used in its window (`/proc`): the machine is
//! shared, and others' load moves the figures.
//!
//! The command: a stream append by customer `acme` of the standard test
//! farm (`state::testing::farm`, proposed first) to the client's own
//! stream, any version, no idempotency key, with its body padded towards
//! [`COMMAND_BYTES_TARGET`] encoded bytes. The envelope and the append's
//! own fields already take 296 bytes, so the body stays empty and every
//! command is the smallest accepted one (the exact size is printed; an
//! upstream data message is at least 368 bytes,
//! also printed). Each one is accepted by the state machine; rejections
//! would be counted and printed.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use farmlog_benches::{payload, scratch, workload, BenchResult};
use farmlog_engine::io::OsStorage;
use farmlog_engine::kinds;
use farmlog_engine::state::command::{Command, ComponentKind, ExpectedVersion};
use farmlog_engine::state::outcome::{Outcome, Verdict};
use farmlog_engine::state::testing::{self, Harness};
use farmlog_engine::state::{encode, EncodedCommand};
use farmlog_engine::NewRecord;
use farmlog_replica::sim::net::SimNet;
use farmlog_replica::{Node, NodeId, RaftSettings, StoreOptions};
use hdrhistogram::Histogram;
use openraft::BasicNode;

/// The encoded size the benchmark's commands come as close to as they can.
const COMMAND_BYTES_TARGET: usize = 256;
/// The engine's records.
const RECORD_BYTES: usize = 256;
/// Log time of the benchmark commands (the farm is set up at 1 and 2).
const COMMAND_AT_MS: u64 = 3;
/// How long a new cluster may take to elect its first leader.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Tokio worker threads (the project's machine has 2 cores).
const WORKER_THREADS: usize = 2;
/// Latencies are recorded in microseconds, up to a minute.
const LATENCY_US_MAX: u64 = 60_000_000;

#[derive(Parser, Debug)]
#[command(about = "Replicated log vs engine: throughput and commit latency, side by side")]
struct Args {
    /// Rounds; each runs every cell once.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Measured window of each cell, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    run_ms: u64,
    /// Warm-up of each cell before its window, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    warm_up_ms: u64,
    /// Concurrent clients (and engine appender threads), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    clients: Vec<usize>,
    /// Print one JSON object per line (cells, then the summary) instead of
    /// the tables.
    #[arg(long)]
    json: bool,
}

/// What a cell runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    /// The engine's `Log` alone.
    Engine,
    /// A cluster of `nodes` nodes on `SimNet`, no faults.
    Cluster { nodes: usize },
}

impl System {
    const ONE: System = System::Cluster { nodes: 1 };
    const THREE: System = System::Cluster { nodes: 3 };

    fn name(self) -> String {
        match self {
            System::Engine => "engine".to_string(),
            System::Cluster { nodes } => format!("replica-{nodes}"),
        }
    }

    fn label(self) -> String {
        match self {
            System::Engine => "engine `Log::append` (1 record)".to_string(),
            System::Cluster { nodes } => format!("{nodes}-node cluster"),
        }
    }
}

/// The warm-up's end and the measured window's end.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn after_warm_up(warm_up: Duration, run: Duration) -> Self {
        let start = Instant::now() + warm_up;
        Self {
            start,
            end: start + run,
        }
    }

    fn contains(&self, at: Instant) -> bool {
        self.start <= at && at <= self.end
    }
}

/// What the clients (or appender threads) of one cell saw in the window.
struct Tally {
    latencies_us: Histogram<u64>,
    completed: u64,
    rejected: u64,
    /// Entries (log indexes) the completed commands were in.
    entries: BTreeSet<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latencies_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds"),
            completed: 0,
            rejected: 0,
            entries: BTreeSet::new(),
        }
    }

    fn record(&mut self, latency: Duration) {
        self.latencies_us
            .saturating_record((latency.as_micros() as u64).clamp(1, LATENCY_US_MAX));
        self.completed += 1;
    }

    fn merge(&mut self, other: Tally) -> BenchResult<()> {
        self.latencies_us
            .add(&other.latencies_us)
            .map_err(|error| format!("merging latencies: {error:?}"))?;
        self.completed += other.completed;
        self.rejected += other.rejected;
        self.entries.extend(other.entries);
        Ok(())
    }
}

/// The figures of one cell.
#[derive(Clone, Debug)]
struct Cell {
    round: usize,
    system: System,
    clients: usize,
    commands: u64,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
    /// Entries the window's commands were in (records for the engine).
    entries: u64,
    /// Log records the leader (or the engine) appended in the window.
    records_appended: u64,
    /// `fdatasync`s of group commits on the leader (or the engine) in the
    /// window.
    syncs: u64,
    /// The same, summed over every node.
    syncs_all: u64,
    rejected: u64,
    /// CPU use in the window, as fractions of all the machine's cores.
    cpu: Option<CpuShare>,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.commands as f64 / self.seconds
    }

    fn per_entry(&self) -> f64 {
        self.commands as f64 / self.entries.max(1) as f64
    }

    fn per_sync(&self) -> f64 {
        self.commands as f64 / self.syncs.max(1) as f64
    }

    fn json(&self, command_bytes: usize) -> String {
        format!(
            concat!(
                "{{\"round\":{},\"system\":\"{}\",\"clients\":{},\"command_bytes\":{},",
                "\"commands\":{},\"seconds\":{:.3},\"commands_per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{},",
                "\"entries\":{},\"commands_per_entry\":{:.2},\"records_appended\":{},",
                "\"fsyncs_leader\":{},\"fsyncs_all_nodes\":{},\"commands_per_fsync\":{:.2},\"rejected\":{},",
                "\"cpu_this_process\":{},\"cpu_other_processes\":{},\"cpu_kernel_rest\":{}}}"
            ),
            self.round,
            self.system.name(),
            self.clients,
            command_bytes,
            self.commands,
            self.seconds,
            self.rate(),
            self.p50_us,
            self.p99_us,
            self.entries,
            self.per_entry(),
            self.records_appended,
            self.syncs,
            self.syncs_all,
            self.per_sync(),
            self.rejected,
            self.cpu.map_or("null".to_string(), |cpu| format!("{:.3}", cpu.own)),
            self.cpu.map_or("null".to_string(), |cpu| format!("{:.3}", cpu.others)),
            self.cpu.map_or("null".to_string(), |cpu| format!("{:.3}", cpu.kernel)),
        )
    }
}

/// CPU time used in a window, as fractions of all the machine's cores
/// over the window. The machine is shared: `others` is what other
/// processes took from the cell, `kernel` the rest of the machine's busy
/// time (kernel threads, interrupts, hypervisor steal), which includes
/// the file system's and the disk driver's work for the cell itself.
#[derive(Clone, Copy, Debug)]
struct CpuShare {
    own: f64,
    others: f64,
    kernel: f64,
}

/// Cumulative CPU times from `/proc` (Linux), in clock ticks: the whole
/// machine's busy time (steal included), this process's, and every other
/// user process's (with the children it has reaped, so that short-lived
/// processes such as compiler runs count once their parent waits for
/// them).
#[derive(Clone, Debug)]
struct CpuSample {
    machine_busy: u64,
    own: u64,
    processes: BTreeMap<u32, u64>,
    at: Instant,
}

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// `PF_KTHREAD` in `/proc/<pid>/stat`'s flags: a kernel thread.
const KERNEL_THREAD_FLAG: u64 = 0x0020_0000;

impl CpuSample {
    /// `None` where `/proc` cannot be read or parsed.
    fn now() -> Option<Self> {
        let at = Instant::now();
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let machine: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal: all but idle and
        // iowait are busy (guest time is inside user).
        let machine_busy = [0, 1, 2, 5, 6, 7]
            .iter()
            .map(|&at| machine.get(at).copied())
            .sum::<Option<u64>>()?;
        let own = process_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?.0;
        let own_pid = std::process::id();
        let mut processes = BTreeMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            // A process may exit between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((_, with_children, kernel_thread)) = process_ticks(&stat) {
                if pid != own_pid && !kernel_thread {
                    processes.insert(pid, with_children);
                }
            }
        }
        Some(Self {
            machine_busy,
            own,
            processes,
            at,
        })
    }

    fn share_since(&self, before: &CpuSample) -> CpuShare {
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get()) as f64;
        let capacity = (self.at - before.at).as_secs_f64() * TICKS_PER_SECOND * cores;
        let own = self.own.saturating_sub(before.own) as f64;
        let machine = self.machine_busy.saturating_sub(before.machine_busy) as f64;
        // A process started in the window counts in full.
        let others: u64 = self
            .processes
            .iter()
            .map(|(pid, ticks)| ticks.saturating_sub(before.processes.get(pid).copied().unwrap_or(0)))
            .sum();
        let others = (others as f64).min((machine - own).max(0.0));
        CpuShare {
            own: own / capacity,
            others: others / capacity,
            kernel: (machine - own - others).max(0.0) / capacity,
        }
    }
}

/// From one `/proc/<pid>/stat` line: the process's own CPU ticks, the same
/// with its reaped children's, and whether it is a kernel thread.
fn process_ticks(stat: &str) -> Option<(u64, u64, bool)> {
    // After the command name (which may hold spaces), field 3 (state)
    // comes first: flags (9) is the 7th, utime, stime, cutime and cstime
    // (14 to 17) the 12th to 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |at: usize| fields.get(at)?.parse::<u64>().ok();
    let own = number(11)? + number(12)?;
    let children = number(13)? + number(14)?;
    Some((own, own + children, number(6)? & KERNEL_THREAD_FLAG != 0))
}

fn cpu_share(before: Option<CpuSample>, after: Option<CpuSample>) -> Option<CpuShare> {
    Some(after?.share_since(&before?))
}

/// Builds the benchmark's commands: see the module comment.
#[derive(Clone, Copy, Debug)]
struct Commands {
    body_bytes: usize,
}

impl Commands {
    /// The body length whose encoded command comes closest to
    /// [`COMMAND_BYTES_TARGET`] (the smaller one on a tie). The envelope
    /// and the append's fields alone take more than the target, so in
    /// practice this is the empty body, the smallest such command.
    fn sized() -> BenchResult<Self> {
        let mut best: Option<(usize, Self)> = None;
        for body_bytes in 0..COMMAND_BYTES_TARGET {
            let commands = Self { body_bytes };
            let distance = commands.bytes()?.abs_diff(COMMAND_BYTES_TARGET);
            if best.is_none_or(|(closest, _)| distance < closest) {
                best = Some((distance, commands));
            }
        }
        best.map(|(_, commands)| commands)
            .ok_or_else(|| "no command size to choose from".into())
    }

    /// Client `client`'s `sequence`-th command: an append to the client's
    /// own stream, any version, no idempotency key.
    fn command(&self, client: usize, sequence: u64) -> Command {
        let body = payload(self.body_bytes, ((client as u64) << 40) | sequence);
        let append = testing::append(&format!("s{client:03}"), ExpectedVersion::Any, None, &body);
        testing::command("acme", COMMAND_AT_MS, append)
    }

    fn encoded(&self, client: usize, sequence: u64) -> BenchResult<EncodedCommand> {
        Ok(encode(&self.command(client, sequence))?)
    }

    /// The encoded size, the same for every client and sequence.
    fn bytes(&self) -> BenchResult<usize> {
        Ok(self.encoded(0, 0)?.bytes().len())
    }

    /// Applies the farm and a few commands to a state in memory: they must
    /// be accepted, so that the cells measure accepted commands, and all of
    /// the same size.
    fn check(&self) -> BenchResult<()> {
        let mut harness = Harness::new();
        for outcome in harness.apply_batch(&testing::farm()) {
            accepted(&outcome, "the farm set-up")?;
        }
        let bytes = self.bytes()?;
        for (client, sequence) in [(0, 0), (0, 1), (63, 1 << 30)] {
            let command = self.command(client, sequence);
            if encode(&command)?.bytes().len() != bytes {
                return Err(format!("command {client}/{sequence} is not {bytes} bytes").into());
            }
            accepted(&harness.apply(command), "a benchmark command")?;
        }
        Ok(())
    }

    /// The smallest upstream data message (the integration module `im`
    /// reporting with an empty body), for the report: larger than the
    /// stream append the benchmark uses.
    fn smallest_message_bytes() -> BenchResult<usize> {
        let message = testing::message(
            "acme",
            "c000-000000000",
            "im",
            ComponentKind::IntegrationModule,
            ("inventory", "patch"),
            testing::data(&[]),
        );
        Ok(encode(&testing::command("acme", COMMAND_AT_MS, message))?.bytes().len())
    }
}

fn accepted(outcome: &Outcome, what: &str) -> BenchResult<()> {
    match &outcome.verdict {
        Verdict::Applied(_) => Ok(()),
        other => Err(format!("{what} was not accepted: {other:?}").into()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("replica bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> BenchResult<()> {
    if args.rounds == 0 || args.clients.is_empty() || args.clients.contains(&0) {
        return Err("--rounds and every --clients count must be at least 1".into());
    }
    if args.clients.iter().any(|&clients| clients > workload::APPENDERS_MAX) {
        return Err(format!("at most {} clients", workload::APPENDERS_MAX).into());
    }
    let commands = Commands::sized()?;
    commands.check()?;
    let command_bytes = commands.bytes()?;
    let message_bytes = Commands::smallest_message_bytes()?;
    let warm_up = Duration::from_millis(args.warm_up_ms);
    let window = Duration::from_millis(args.run_ms.max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut cells = Vec::new();
    for round in 1..=args.rounds {
        for &clients in &args.clients {
            let mut clusters = vec![System::ONE, System::THREE];
            if round % 2 == 0 {
                clusters.reverse();
            }
            for system in std::iter::once(System::Engine).chain(clusters) {
                eprintln!("round {round}: {} with {clients} clients ...", system.label());
                let cell = match system {
                    System::Engine => engine_cell(round, clients, warm_up, window)?,
                    System::Cluster { nodes } => {
                        runtime.block_on(cluster_cell(round, nodes, clients, commands, warm_up, window))?
                    }
                };
                eprintln!(
                    "  {:.0} commands/s, p50 {} µs, p99 {} µs, {:.1} commands per entry, other processes' CPU {}",
                    cell.rate(),
                    cell.p50_us,
                    cell.p99_us,
                    cell.per_entry(),
                    cell.cpu.map_or("—".to_string(), |cpu| percent(cpu.others))
                );
                cells.push(cell);
            }
        }
    }
    let elapsed = started.elapsed();
    if args.json {
        for cell in &cells {
            println!("{}", cell.json(command_bytes));
        }
        println!("{}", summary_json(&cells, &args.clients, args.rounds, message_bytes));
    } else {
        print_tables(&cells, args, command_bytes, elapsed);
        println!(
            "\nCommands: stream appends of {command_bytes} B encoded (empty body; the smallest accepted command). The smallest upstream data message encodes to {message_bytes} B."
        );
    }
    Ok(())
}

/// The cell of `system` with `clients` in `round`, if it ran.
fn find(cells: &[Cell], round: usize, system: System, clients: usize) -> Option<&Cell> {
    cells
        .iter()
        .find(|cell| cell.round == round && cell.system == system && cell.clients == clients)
}

/// `system`'s throughput over `base`'s, per round.
fn ratios(cells: &[Cell], rounds: usize, clients: usize, system: System, base: System) -> Vec<f64> {
    (1..=rounds)
        .filter_map(|round| {
            let base = find(cells, round, base, clients)?;
            let system = find(cells, round, system, clients)?;
            Some(system.rate() / base.rate())
        })
        .collect()
}

/// The lower median: with an even number of rounds, the lower middle one.
fn lower_median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

fn summary_json(cells: &[Cell], clients: &[usize], rounds: usize, message_bytes: usize) -> String {
    let ratio = |count: usize, system: System, base: System| {
        let per_round = ratios(cells, rounds, count, system, base);
        let listed: Vec<String> = per_round.iter().map(|ratio| format!("{ratio:.3}")).collect();
        let median = lower_median(per_round).map_or("null".to_string(), |ratio| format!("{ratio:.3}"));
        format!(
            "{{\"clients\":{count},\"system\":\"{}\",\"over\":\"{}\",\"per_round\":[{}],\"lower_median\":{median}}}",
            system.name(),
            base.name(),
            listed.join(",")
        )
    };
    let mut parts = Vec::new();
    for &count in clients {
        parts.push(ratio(count, System::THREE, System::ONE));
        parts.push(ratio(count, System::ONE, System::Engine));
    }
    format!(
        "{{\"ratios\":[{}],\"target_3_over_1_at_64_clients\":0.5,\"command_bytes_target\":{COMMAND_BYTES_TARGET},\"smallest_message_bytes\":{message_bytes}}}",
        parts.join(",")
    )
}

fn print_tables(cells: &[Cell], args: &Args, command_bytes: usize, elapsed: Duration) {
    println!(
        "# replication vs engine ({} rounds; per cell {} ms warm-up, {} ms measured; commands of {command_bytes} B encoded, engine records of {RECORD_BYTES} B; {:.0} s in all)\n",
        args.rounds,
        args.warm_up_ms,
        args.run_ms,
        elapsed.as_secs_f64()
    );
    println!(
        "| Round | System | Clients | Commands/s | p50 | p99 | Commands per entry | Records appended (leader) | fsyncs (leader / all nodes) | Commands per fsync (leader) | Rejected | CPU: this process / other processes / kernel and rest |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for cell in cells {
        let per_entry = match cell.system {
            System::Engine => "—".to_string(),
            System::Cluster { .. } => format!("{:.1}", cell.per_entry()),
        };
        let cpu = cell.cpu.map_or("—".to_string(), |cpu| {
            format!(
                "{} / {} / {}",
                percent(cpu.own),
                percent(cpu.others),
                percent(cpu.kernel)
            )
        });
        println!(
            "| {} | {} | {} | {} | {} | {} | {per_entry} | {} | {} / {} | {:.1} | {} | {cpu} |",
            cell.round,
            cell.system.label(),
            cell.clients,
            thousands(cell.rate()),
            micros(cell.p50_us),
            micros(cell.p99_us),
            cell.records_appended,
            cell.syncs,
            cell.syncs_all,
            cell.per_sync(),
            cell.rejected,
        );
    }
    println!("\n| Clients | 3-node / 1-node, per round | Lower median | 1-node / engine, per round |");
    println!("|---|---|---|---|");
    let listed = |per_round: &[f64]| -> String {
        let listed: Vec<String> = per_round.iter().map(|ratio| percent(*ratio)).collect();
        if listed.is_empty() {
            "—".to_string()
        } else {
            listed.join(", ")
        }
    };
    let median = |per_round: Vec<f64>| lower_median(per_round).map_or("—".to_string(), percent);
    for &clients in &args.clients {
        let three = ratios(cells, args.rounds, clients, System::THREE, System::ONE);
        let engine = ratios(cells, args.rounds, clients, System::ONE, System::Engine);
        println!(
            "| {clients} | {} | {} | {} |",
            listed(&three),
            median(three.clone()),
            listed(&engine),
        );
    }
    if let Some(ratio) = lower_median(ratios(cells, args.rounds, 64, System::THREE, System::ONE)) {
        let verdict = if ratio >= 0.5 { "met" } else { "**missed**" };
        println!(
            "\nTarget: 3-node throughput at 64 clients ≥ 50% of 1-node: {} (lower median of the rounds; {verdict}).",
            percent(ratio)
        );
    }
}

fn percent(ratio: f64) -> String {
    format!("{:.0}%", ratio * 100.0)
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// A rate with thousands separators.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (at, digit) in digits.chars().enumerate() {
        if at > 0 && (digits.len() - at) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The engine alone: `appenders` threads, each appending one
/// [`RECORD_BYTES`]-byte record per `Log::append`, on a fresh log.
fn engine_cell(round: usize, appenders: usize, warm_up: Duration, run: Duration) -> BenchResult<Cell> {
    let dir = scratch::dir("replica-engine")?;
    let log = workload::open_fresh(dir.path(), RECORD_BYTES)?;
    let window = Window::after_warm_up(warm_up, run);
    let log = &log;
    let (tally, before, after) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..appenders)
            .map(|seed| {
                std::thread::Builder::new()
                    .name(format!("appender-{seed}"))
                    .spawn_scoped(scope, move || -> BenchResult<Tally> {
                        let bytes = payload(RECORD_BYTES, seed as u64);
                        let record = [NewRecord {
                            term: 1,
                            group: 0,
                            kind: kinds::RAW,
                            payload: &bytes,
                        }];
                        let mut tally = Tally::new();
                        loop {
                            let started = Instant::now();
                            if started >= window.end {
                                return Ok(tally);
                            }
                            log.append(&record)?;
                            let done = Instant::now();
                            if window.contains(done) {
                                tally.record(done - started);
                            }
                        }
                    })
            })
            .collect();
        std::thread::sleep(window.start.saturating_duration_since(Instant::now()));
        let before = (log.stats(), CpuSample::now());
        std::thread::sleep(window.end.saturating_duration_since(Instant::now()));
        let after = (log.stats(), CpuSample::now());
        let mut tally = Tally::new();
        for handle in handles {
            let handle = handle.map_err(|error| format!("starting an appender: {error}"))?;
            let done = handle.join().map_err(|_| "an appender panicked")??;
            tally.merge(done)?;
        }
        Ok::<_, farmlog_benches::BenchError>((tally, before, after))
    })?;
    let ((before, cpu_before), (after, cpu_after)) = (before, after);
    let syncs = after.commit_syncs - before.commit_syncs;
    Ok(Cell {
        round,
        system: System::Engine,
        clients: appenders,
        commands: tally.completed,
        seconds: run.as_secs_f64(),
        p50_us: tally.latencies_us.value_at_quantile(0.5),
        p99_us: tally.latencies_us.value_at_quantile(0.99),
        entries: tally.completed,
        records_appended: after.next_index - before.next_index,
        syncs,
        syncs_all: syncs,
        rejected: 0,
        cpu: cpu_share(cpu_before, cpu_after),
    })
}

/// A running cluster and the directory its nodes keep their files in.
struct Cluster {
    nodes: Vec<Arc<Node>>,
    leader: Arc<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` nodes on a fault-free in-process network, initializes
    /// them as one cluster and waits for its leader.
    async fn start(size: usize, seed: u64) -> BenchResult<Self> {
        let dir = scratch::dir(&format!("replica-{size}"))?;
        let sim = SimNet::new(seed);
        let settings = RaftSettings::default();
        let mut nodes = Vec::with_capacity(size);
        for id in 1..=size as NodeId {
            let path = dir.path().join(format!("n{id}"));
            let (storage, options, config) = (Arc::new(OsStorage), StoreOptions::default(), settings.config("bench")?);
            let node = Node::start(id, storage, &path, options, config, sim.transport(id)).await?;
            sim.attach(&node);
            nodes.push(Arc::new(node));
        }
        let members: BTreeMap<NodeId, BasicNode> = nodes.iter().map(|node| (node.id, BasicNode::default())).collect();
        let mut cluster = Self {
            leader: nodes[0].clone(),
            nodes,
            _dir: dir,
        };
        if let Err(error) = cluster.elect(members).await {
            cluster.shutdown().await;
            return Err(error);
        }
        Ok(cluster)
    }

    /// Initializes the cluster through its first node and waits until the
    /// leader knows it leads.
    async fn elect(&mut self, members: BTreeMap<NodeId, BasicNode>) -> BenchResult<()> {
        let first = self.nodes[0].clone();
        first
            .raft
            .initialize(members)
            .await
            .map_err(|error| format!("initializing the cluster: {error}"))?;
        let leader_id = first
            .wait_for_leader(ELECTION_TIMEOUT)
            .await
            .ok_or_else(|| format!("no leader within {ELECTION_TIMEOUT:?}"))?;
        self.leader = self
            .nodes
            .iter()
            .find(|node| node.id == leader_id)
            .cloned()
            .ok_or_else(|| format!("the leader {leader_id} is not a member"))?;
        if self.leader.wait_for_leader(ELECTION_TIMEOUT).await != Some(leader_id) {
            return Err("the leader does not see itself lead".into());
        }
        Ok(())
    }

    async fn shutdown(self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
    }
}

/// A cluster of `size` nodes with `clients` concurrent proposers.
async fn cluster_cell(
    round: usize,
    size: usize,
    clients: usize,
    commands: Commands,
    warm_up: Duration,
    run: Duration,
) -> BenchResult<Cell> {
    let cluster = Cluster::start(size, round as u64).await?;
    let system = System::Cluster { nodes: size };
    let result = measure_cluster(&cluster, round, system, clients, commands, warm_up, run).await;
    cluster.shutdown().await;
    result
}

async fn measure_cluster(
    cluster: &Cluster,
    round: usize,
    system: System,
    clients: usize,
    commands: Commands,
    warm_up: Duration,
    run: Duration,
) -> BenchResult<Cell> {
    for command in testing::farm() {
        let (_, outcome) = cluster.leader.propose(encode(&command)?).await?;
        accepted(&outcome, "the farm set-up")?;
    }
    let window = Window::after_warm_up(warm_up, run);
    let tasks: Vec<_> = (0..clients)
        .map(|client| tokio::spawn(propose_loop(cluster.leader.clone(), client, commands, window)))
        .collect();
    let syncs = |nodes: &[Arc<Node>]| -> u64 { nodes.iter().map(|node| node.log().stats().commit_syncs).sum() };
    tokio::time::sleep_until(window.start.into()).await;
    // Read off a worker thread: /proc takes a millisecond or so to scan.
    let sample = || async { tokio::task::spawn_blocking(CpuSample::now).await.ok().flatten() };
    let (before, before_all, cpu_before) = (cluster.leader.log().stats(), syncs(&cluster.nodes), sample().await);
    tokio::time::sleep_until(window.end.into()).await;
    let (after, after_all, cpu_after) = (cluster.leader.log().stats(), syncs(&cluster.nodes), sample().await);
    let mut tally = Tally::new();
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(done)) => tally.merge(done)?,
            Ok(Err(error)) => {
                failure.get_or_insert(error);
            }
            Err(error) => {
                failure.get_or_insert(format!("a client task failed: {error}").into());
            }
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(Cell {
        round,
        system,
        clients,
        commands: tally.completed,
        seconds: run.as_secs_f64(),
        p50_us: tally.latencies_us.value_at_quantile(0.5),
        p99_us: tally.latencies_us.value_at_quantile(0.99),
        entries: tally.entries.len() as u64,
        records_appended: after.next_index - before.next_index,
        syncs: after.commit_syncs - before.commit_syncs,
        syncs_all: after_all - before_all,
        rejected: tally.rejected,
        cpu: cpu_share(cpu_before, cpu_after),
    })
}

/// One client: proposes its commands one at a time until the window ends.
async fn propose_loop(leader: Arc<Node>, client: usize, commands: Commands, window: Window) -> BenchResult<Tally> {
    let mut tally = Tally::new();
    for sequence in 0.. {
        let command = commands.encoded(client, sequence)?;
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let (place, outcome) = leader.propose(command).await?;
        let done = Instant::now();
        if window.contains(done) {
            tally.record(done - started);
            tally.entries.insert(place.index);
            if !matches!(outcome.verdict, Verdict::Applied(_)) {
                tally.rejected += 1;
            }
        }
    }
    Ok(tally)
}
