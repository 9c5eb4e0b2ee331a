//! `farmlog`: the operator's tool for a log directory. It parses the
//! command line, sets up logging, dispatches to [`inspect`] (dump, verify,
//! stat), [`replay`] (fold the log into state), [`bench`] (append
//! benchmark), [`bench_state`] (state machine benchmark), [`serve`] and
//! [`dev`] (run nodes), or the client subcommands ([`client_cmd`]:
//! streams and cluster; [`cmd_topology`], [`cmd_messages`],
//! [`cmd_spools`], [`cmd_bulk`]: the other services), and turns every
//! failure into a `farmlog: <message>` line on stderr and a documented exit
//! code.
//!
//! Invariants: the inspecting commands open the log read-only and never
//! modify the directory; nothing here panics on user input or I/O; the
//! exit code alone tells damaged data (1) from usage or I/O errors (2).

mod bench;
mod bench_cluster;
mod bench_state;
mod client_cmd;
mod cmd_bulk;
mod cmd_messages;
mod cmd_spools;
mod cmd_topology;
mod dev;
mod inspect;
mod preview;
mod replay;
mod serve;
mod state_view;
mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use farmlog_engine::{Corruption, Error};
use tracing_subscriber::EnvFilter;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (a torn, never-acknowledged tail is only a warning)
  1  the log is damaged: corruption, acknowledged records lost, or a command
     batch that apply refuses (dump shows it in place; replay stops at it)
  2  usage error, or an I/O or other operational error

Logging: set RUST_LOG (e.g. RUST_LOG=info) for engine diagnostics on stderr; default level warn.";

#[derive(Debug, Parser)]
#[command(name = "farmlog", version, about = "Run a farmlog node or a local cluster; inspect, verify, replay and benchmark a log directory", after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every record in a range: index, term, group, type, length, crc
    /// status and the decoded payload; for a command batch, every command's
    /// slot, envelope and body. Read-only.
    #[command(after_help = EXIT_CODES_HELP)]
    Dump(DumpArgs),
    /// Check every segment header, footer, index block and record crc.
    /// Read-only.
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(VerifyArgs),
    /// Show the segments, record counts, sizes and indexes. Read-only.
    #[command(after_help = EXIT_CODES_HELP)]
    Stat(StatArgs),
    /// Apply every command batch (up to --to) to a fresh state and print
    /// the projections' counts, the outcomes and the state hash. Read-only
    /// (except the --snapshot file).
    #[command(after_help = EXIT_CODES_HELP)]
    Replay(replay::ReplayArgs),
    /// Run one node of a cluster (TLS; see docs/config.md).
    Serve(serve::ServeArgs),
    /// Run a local TLS cluster with throwaway certificates; Ctrl-C stops
    /// it, and running it again reuses its data.
    Dev(dev::DevArgs),
    /// Append an event to a stream.
    Append {
        #[command(flatten)]
        connect: client_cmd::Connect,
        #[command(flatten)]
        args: client_cmd::AppendArgs,
    },
    /// Read a stream's events.
    Read {
        #[command(flatten)]
        connect: client_cmd::Connect,
        #[command(flatten)]
        args: client_cmd::ReadArgs,
    },
    /// Print a stream's events; with -f, follow new ones.
    Tail {
        #[command(flatten)]
        connect: client_cmd::Connect,
        #[command(flatten)]
        args: client_cmd::TailArgs,
    },
    /// The cluster: status, membership, hand-off, snapshot, scrub.
    Cluster {
        #[command(subcommand)]
        command: client_cmd::ClusterCommand,
    },
    /// The topology: customers, components, groups, liveness.
    Topology {
        #[command(subcommand)]
        command: cmd_topology::TopologyCommand,
    },
    /// Upstream messages: send, get, list, subscribe.
    Message {
        #[command(subcommand)]
        command: cmd_messages::MessageCommand,
    },
    /// Open alarms.
    Alarm {
        #[command(subcommand)]
        command: cmd_messages::AlarmCommand,
    },
    /// The back-channel: publish, poll, ack, nack and the spools.
    Spool {
        #[command(subcommand)]
        command: cmd_spools::SpoolCommand,
    },
    /// Upstream bulk transfers: request, grant, deny, transferred, status.
    Bulk {
        #[command(subcommand)]
        command: cmd_bulk::BulkCommand,
    },
    /// A farm's throttle: show, set, report usage, may-send.
    Throttle {
        #[command(subcommand)]
        command: cmd_bulk::ThrottleCommand,
    },
    /// Benchmarks (these write to the directory they are given).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// First index to print (default: the log's first).
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// Last index to print, inclusive (default: the log's last).
    #[arg(long, value_name = "M")]
    pub to: Option<u64>,
    /// One JSON object per line instead of text. A command's byte fields
    /// are {"length", "text" or "hex" (the first 32 bytes), "truncated"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log directory.
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Append records from concurrent threads, synced, and report
    /// throughput, fsyncs and append latency. Ends with one JSON line.
    #[command(after_help = EXIT_CODES_HELP)]
    Append(bench::AppendArgs),
    /// Generate a seeded farm workload of N commands, append it as command
    /// batches, then time applying it to a fresh state (one thread),
    /// snapshotting and restoring. Ends with one JSON line.
    #[command(after_help = EXIT_CODES_HELP)]
    State(bench_state::StateArgs),
    /// Append to a running cluster through the gRPC API (TLS): C clients,
    /// each keeping K requests of one event (or a batch of R) in flight,
    /// for a fixed time; report throughput and latency. Ends with one
    /// JSON line.
    Cluster(bench_cluster::ClusterArgs),
}

/// Why a command failed, and so which exit code it ends with.
#[derive(Debug)]
pub enum Failure {
    /// Bytes on disk are damaged or acknowledged records are lost: exit 1.
    Damaged {
        message: String,
        location: Option<Corruption>,
    },
    /// Bad input, or an I/O or other operational error: exit 2.
    Operational { message: String },
    /// Whoever reads stdout closed it (`farmlog dump | head`): stop
    /// quietly with exit 0, as `cat` would.
    OutputClosed,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Operational {
            message: message.into(),
        }
    }

    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Damaged { .. } => ExitCode::from(1),
            Self::Operational { .. } => ExitCode::from(2),
            Self::OutputClosed => ExitCode::SUCCESS,
        }
    }

    fn report(&self) {
        let mut stderr = std::io::stderr().lock();
        // Nothing sensible is left to do if stderr itself fails.
        let _ = match self {
            Self::Damaged { message, location } => {
                writeln!(stderr, "farmlog: {message}").and_then(|()| match location {
                    Some(corruption) => writeln!(stderr, "farmlog: {}", describe_location(corruption)),
                    None => Ok(()),
                })
            }
            Self::Operational { message } => writeln!(stderr, "farmlog: {message}"),
            Self::OutputClosed => Ok(()),
        };
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        match error.corruption() {
            Some(corruption) => Self::Damaged {
                location: Some(corruption.clone()),
                message: error.to_string(),
            },
            None => Self::Operational {
                message: error.to_string(),
            },
        }
    }
}

/// Where a corruption is, field by field, for people and scripts alike.
pub fn describe_location(corruption: &Corruption) -> String {
    let index = corruption
        .index
        .map_or_else(|| "unknown".to_owned(), |index| index.to_string());
    format!(
        "location: segment {}, offset {}, index {}",
        corruption.segment, corruption.offset, index
    )
}

/// Writing to stdout failed. A closed pipe is not an error worth
/// reporting; anything else is operational.
pub fn output_failed(error: std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::OutputClosed
    } else {
        Failure::usage(format!("writing to stdout: {error}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Dump(args) => inspect::dump(&args),
        Command::Verify(args) => inspect::verify(&args),
        Command::Stat(args) => inspect::stat(&args),
        Command::Replay(args) => replay::replay(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Append { connect, args } => client_cmd::append(&connect, &args),
        Command::Read { connect, args } => client_cmd::read(&connect, &args),
        Command::Tail { connect, args } => client_cmd::tail(&connect, &args),
        Command::Cluster { command } => client_cmd::cluster(&command),
        Command::Topology { command } => cmd_topology::run(&command),
        Command::Message { command } => cmd_messages::run(&command),
        Command::Alarm { command } => cmd_messages::run_alarm(&command),
        Command::Spool { command } => cmd_spools::run(&command),
        Command::Bulk { command } => cmd_bulk::run_bulk(&command),
        Command::Throttle { command } => cmd_bulk::run_throttle(&command),
        Command::Dev(args) => dev::run(&args),
        Command::Bench(BenchCommand::Append(args)) => bench::append(&args),
        Command::Bench(BenchCommand::State(args)) => bench_state::state(&args),
        Command::Bench(BenchCommand::Cluster(args)) => bench_cluster::cluster(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            failure.exit_code()
        }
    }
}
