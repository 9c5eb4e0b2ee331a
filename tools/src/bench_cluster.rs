//! `farmlog bench cluster`: a load generator against a running cluster,
//! through the real gRPC API (mutual TLS, the Rust client), as
//! applications would drive it.
//!
//! C clients, each its own [`Client`] (its own connections, so its own
//! TLS sessions; the client follows the leader hint, so its requests go to
//! the leader), each keeping K requests in flight on its HTTP/2
//! connection. A request appends one event of B body bytes
//! (`Streams.Append`) or, with `--batch R`, R events in one
//! `Streams.AppendBatch`. Client `c` appends to its own stream
//! `<prefix>-<c>`, any version, without a session (like a put to etcd or
//! a publish to NATS: nothing is deduplicated).
//!
//! The clock: each client first makes one request (connecting, the TLS
//! handshake, finding the leader); then every client runs for the warm-up
//! and the measured window. Requests that complete inside the window are
//! counted, and their latency (from sending the request to its answer) is
//! recorded in a per-slot hdrhistogram, merged at the end. Requests still
//! in flight when the window ends are awaited but not counted.
//!
//! Invariants: every input is checked against a named bound before
//! anything is sent; every loop ends with the window, and every call is
//! bounded by the client's timeout and retry budget, so the whole run is
//! bounded ([`DRAIN_MAX`] past the window at most); the last line printed
//! is one JSON object with every reported figure.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use farmlog_api::client::{Client, Retry, CALL_RETRY_BUDGET};
use farmlog_api::pb::{self, streams_client::StreamsClient};
use farmlog_api::server::{CONCURRENCY_PER_CONNECTION, REQUEST_BYTES_MAX};
use farmlog_api::services::streams::APPEND_BATCH_MAX;
use farmlog_engine::state::command::{BODY_BYTES_MAX, NAME_BYTES_MAX};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::Instant;

use crate::client_cmd::{code_name, Connect};
use crate::{output_failed, Failure};

/// Most clients one run may start.
pub const CLIENTS_MAX: usize = 1024;
/// Most requests one client keeps in flight: what a node serves at once
/// on one connection.
pub const INFLIGHT_MAX: usize = CONCURRENCY_PER_CONNECTION;
/// Longest measured window, in seconds.
pub const DURATION_SECONDS_MAX: f64 = 3600.0;
/// Longest warm-up, in seconds.
pub const WARMUP_SECONDS_MAX: f64 = 600.0;
/// How long the requests in flight at the end of the window may take to
/// finish, past it, before the run gives up on them.
pub const DRAIN_MAX: Duration = Duration::from_secs(30);
/// A slot whose request failed waits this long before its next one, so
/// that a refusing cluster is not flooded.
pub const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Significant decimal digits the latency histograms keep.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// The byte the bodies are filled with.
const BODY_FILLER: u8 = 0x5a;
/// The event type of every appended event.
const EVENT_TYPE: &str = "bench";
/// Room a request needs beyond its bodies (stream name, type, framing),
/// counted generously, per event.
const EVENT_OVERHEAD_BYTES: usize = 512;

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Clients, each with its own connections (at most 1024).
    #[arg(long, value_name = "C", default_value_t = 16)]
    pub clients: usize,
    /// Requests each client keeps in flight (at most 256).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub inflight: usize,
    /// Body bytes of each event.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub size: usize,
    /// The measured window, in seconds (at most 3600).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the window opens, not counted (at most 600).
    #[arg(long, value_name = "W", default_value_t = 1.0)]
    pub warmup: f64,
    /// Events per request, through Streams.AppendBatch (at most 1000);
    /// without it, one event per Streams.Append.
    #[arg(long, value_name = "R")]
    pub batch: Option<usize>,
    /// Client c appends to the stream `<prefix>-<c>`.
    #[arg(long, default_value = "bench")]
    pub stream_prefix: String,
}

/// A checked request.
#[derive(Debug, Clone)]
struct Plan {
    clients: usize,
    inflight: usize,
    size: usize,
    batch: Option<usize>,
    warmup: Duration,
    duration: Duration,
    stream_prefix: String,
}

impl Plan {
    fn check(args: &ClusterArgs) -> Result<Self, Failure> {
        let usage = |message: String| Err(Failure::usage(message));
        if !(1..=CLIENTS_MAX).contains(&args.clients) {
            return usage(format!("--clients must be 1..={CLIENTS_MAX}, got {}", args.clients));
        }
        if !(1..=INFLIGHT_MAX).contains(&args.inflight) {
            return usage(format!("--inflight must be 1..={INFLIGHT_MAX}, got {}", args.inflight));
        }
        if args.size > BODY_BYTES_MAX {
            return usage(format!("--size must be at most {BODY_BYTES_MAX}, got {}", args.size));
        }
        if !(args.duration > 0.0 && args.duration <= DURATION_SECONDS_MAX) {
            return usage(format!(
                "--duration must be more than 0 and at most {DURATION_SECONDS_MAX} seconds"
            ));
        }
        if !(0.0..=WARMUP_SECONDS_MAX).contains(&args.warmup) {
            return usage(format!("--warmup must be 0..={WARMUP_SECONDS_MAX} seconds"));
        }
        if let Some(batch) = args.batch {
            if !(1..=APPEND_BATCH_MAX).contains(&batch) {
                return usage(format!("--batch must be 1..={APPEND_BATCH_MAX}, got {batch}"));
            }
        }
        let events = args.batch.unwrap_or(1);
        if events * (args.size + EVENT_OVERHEAD_BYTES) > REQUEST_BYTES_MAX {
            return usage(format!(
                "{events} events of {} bytes do not fit in one request ({REQUEST_BYTES_MAX} bytes); lower --batch or --size",
                args.size
            ));
        }
        // The longest stream name: the prefix, '-' and the client number.
        if args.stream_prefix.is_empty()
            || args.stream_prefix.len() + 1 + CLIENTS_MAX.to_string().len() > NAME_BYTES_MAX
        {
            return usage(format!("--stream-prefix must be 1..={} bytes", NAME_BYTES_MAX - 5));
        }
        Ok(Self {
            clients: args.clients,
            inflight: args.inflight,
            size: args.size,
            batch: args.batch,
            warmup: Duration::from_secs_f64(args.warmup),
            duration: Duration::from_secs_f64(args.duration),
            stream_prefix: args.stream_prefix.clone(),
        })
    }

    fn events_per_request(&self) -> usize {
        self.batch.unwrap_or(1)
    }
}

/// The request one client sends again and again.
#[derive(Clone)]
enum Work {
    One(pb::AppendRequest),
    Batch(pb::AppendBatchRequest),
}

impl Work {
    fn new(plan: &Plan, client: usize) -> Self {
        let append = pb::AppendRequest {
            stream: format!("{}-{client}", plan.stream_prefix),
            expected: Some(pb::ExpectedVersion {
                expected: Some(pb::expected_version::Expected::Any(true)),
            }),
            event_type: EVENT_TYPE.to_string(),
            body: vec![BODY_FILLER; plan.size].into(),
            ..Default::default()
        };
        match plan.batch {
            None => Self::One(append),
            Some(events) => Self::Batch(pb::AppendBatchRequest {
                appends: vec![append; events],
            }),
        }
    }

    /// Sends it once (following the leader); returns the events appended
    /// and those refused one by one inside a batch (with the first
    /// refusal's text).
    async fn send(&self, client: &Client) -> Result<Sent, tonic::Status> {
        match self {
            Self::One(request) => {
                client
                    .call(Retry::OnlyIfNotWritten, |channel| {
                        let request = request.clone();
                        async move { StreamsClient::new(channel).append(request).await }
                    })
                    .await?;
                Ok(Sent {
                    appended: 1,
                    refused: 0,
                    first_refusal: None,
                })
            }
            Self::Batch(request) => {
                let answer = client
                    .call(Retry::OnlyIfNotWritten, |channel| {
                        let request = request.clone();
                        async move { StreamsClient::new(channel).append_batch(request).await }
                    })
                    .await?
                    .into_inner();
                Ok(Sent::of_batch(&answer))
            }
        }
    }
}

/// What one request appended.
struct Sent {
    appended: u64,
    refused: u64,
    first_refusal: Option<String>,
}

impl Sent {
    fn of_batch(answer: &pb::AppendBatchResponse) -> Self {
        let mut sent = Self {
            appended: 0,
            refused: 0,
            first_refusal: None,
        };
        for outcome in &answer.outcomes {
            match &outcome.outcome {
                Some(pb::append_outcome::Outcome::Appended(_)) => sent.appended += 1,
                Some(pb::append_outcome::Outcome::Failed(failed)) => {
                    sent.refused += 1;
                    let code = tonic::Code::from_i32(failed.code);
                    sent.first_refusal
                        .get_or_insert_with(|| format!("{}: {}", code_name(code), failed.message));
                }
                None => {
                    sent.refused += 1;
                    sent.first_refusal
                        .get_or_insert_with(|| "an outcome without a result".to_string());
                }
            }
        }
        sent
    }
}

/// What one slot (one request in flight of one client) counted inside
/// the window.
struct Tally {
    requests: u64,
    records: u64,
    errors: u64,
    first_error: Option<String>,
    latency_ns: Histogram<u64>,
}

impl Tally {
    fn new() -> Result<Self, Failure> {
        Ok(Self {
            requests: 0,
            records: 0,
            errors: 0,
            first_error: None,
            latency_ns: new_histogram()?,
        })
    }

    fn merge(&mut self, other: Tally) -> Result<(), Failure> {
        self.requests += other.requests;
        self.records += other.records;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency_ns
            .add(other.latency_ns)
            .map_err(|error| Failure::usage(format!("merging latency histograms: {error}")))
    }
}

/// When the measured window opens and closes.
#[derive(Clone, Copy)]
struct Window {
    opens: Instant,
    closes: Instant,
}

/// `farmlog bench cluster`.
pub fn cluster(args: &ClusterArgs) -> Result<(), Failure> {
    let plan = Plan::check(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::usage(format!("starting the runtime: {error}")))?;
    let endpoints = args.connect.endpoints.len();
    let tally = runtime.block_on(run(&args.connect, &plan))?;
    report(&plan, endpoints, &tally)
}

/// Connects every client, then runs the load and merges the tallies.
async fn run(connect: &Connect, plan: &Plan) -> Result<Tally, Failure> {
    let clients = connected(connect, plan).await?;
    let started = Instant::now();
    let opens = started + plan.warmup;
    let window = Window {
        opens,
        closes: opens + plan.duration,
    };
    let mut slots = tokio::task::JoinSet::new();
    for (client, work) in clients {
        for _ in 0..plan.inflight {
            let (client, work) = (client.clone(), work.clone());
            slots.spawn(async move { slot(&client, &work, window).await });
        }
    }
    let mut total = Tally::new()?;
    let deadline = window.closes + DRAIN_MAX;
    loop {
        let joined = tokio::time::timeout_at(deadline, slots.join_next()).await;
        match joined {
            Ok(None) => break,
            Ok(Some(Ok(tally))) => total.merge(tally?)?,
            Ok(Some(Err(error))) => return Err(Failure::usage(format!("a client task failed: {error}"))),
            Err(_) => {
                slots.abort_all();
                return Err(Failure::usage(format!(
                    "requests still in flight {DRAIN_MAX:?} after the window closed"
                )));
            }
        }
    }
    if total.requests == 0 {
        let why = total
            .first_error
            .as_deref()
            .unwrap_or("no request completed in the window");
        return Err(Failure::usage(format!("nothing was appended: {why}")));
    }
    Ok(total)
}

/// Every client, each after its first request went through (connected,
/// TLS handshake done, leader found). Clients connect concurrently.
async fn connected(connect: &Connect, plan: &Plan) -> Result<Vec<(Arc<Client>, Arc<Work>)>, Failure> {
    let mut connecting = tokio::task::JoinSet::new();
    for index in 0..plan.clients {
        let client = Arc::new(connect.client()?);
        let work = Arc::new(Work::new(plan, index));
        connecting.spawn(async move {
            let first = work.send(&client).await;
            (index, client, work, first)
        });
    }
    let mut clients = Vec::with_capacity(plan.clients);
    // Each first request is bounded by the client's retry budget; the
    // clients connect concurrently.
    let deadline = Instant::now() + CALL_RETRY_BUDGET + DRAIN_MAX;
    while let Some(joined) = tokio::time::timeout_at(deadline, connecting.join_next())
        .await
        .map_err(|_| Failure::usage("the clients did not connect in time"))?
    {
        let (index, client, work, first) =
            joined.map_err(|error| Failure::usage(format!("a client task failed: {error}")))?;
        first.map_err(|status| {
            Failure::usage(format!(
                "client {index}: the first append failed: {}: {}",
                code_name(status.code()),
                status.message()
            ))
        })?;
        clients.push((client, work));
    }
    Ok(clients)
}

/// One request in flight of one client, again and again until the window
/// closes; counts what completes inside it.
async fn slot(client: &Client, work: &Work, window: Window) -> Result<Tally, Failure> {
    let mut tally = Tally::new()?;
    while Instant::now() < window.closes {
        let sent_at = Instant::now();
        let result = work.send(client).await;
        let done_at = Instant::now();
        let counted = done_at >= window.opens && done_at < window.closes;
        match result {
            Ok(sent) => {
                if counted {
                    tally.requests += 1;
                    tally.records += sent.appended;
                    tally.errors += sent.refused;
                    if tally.first_error.is_none() {
                        tally.first_error = sent.first_refusal;
                    }
                    let nanos = u64::try_from((done_at - sent_at).as_nanos()).unwrap_or(u64::MAX);
                    // `record`, not `saturating_record`: only `record` grows
                    // an auto-resizing histogram.
                    tally
                        .latency_ns
                        .record(nanos.max(1))
                        .map_err(|error| Failure::usage(format!("recording a latency of {nanos} ns: {error}")))?;
                }
            }
            Err(status) => {
                if counted {
                    tally.errors += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("{}: {}", code_name(status.code()), status.message()));
                }
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    Ok(tally)
}

/// An auto-resizing histogram: it holds only the range actually seen.
fn new_histogram() -> Result<Histogram<u64>, Failure> {
    Histogram::new(LATENCY_SIGNIFICANT_DIGITS)
        .map_err(|error| Failure::usage(format!("creating a latency histogram: {error}")))
}

fn report(plan: &Plan, endpoints: usize, tally: &Tally) -> Result<(), Failure> {
    let seconds = plan.duration.as_secs_f64();
    let requests_per_sec = tally.requests as f64 / seconds;
    let records_per_sec = tally.records as f64 / seconds;
    let mb_per_sec = tally.records as f64 * plan.size as f64 / seconds / 1e6;
    let quantile_us = |quantile: f64| tally.latency_ns.value_at_quantile(quantile) as f64 / 1e3;
    let (p50_us, p99_us, p999_us) = (quantile_us(0.5), quantile_us(0.99), quantile_us(0.999));
    let max_us = tally.latency_ns.max() as f64 / 1e3;
    let summary = json!({
        "system": "farmlog",
        "clients": plan.clients,
        "inflight": plan.inflight,
        "batch": plan.events_per_request(),
        "size": plan.size,
        "warmup_seconds": plan.warmup.as_secs_f64(),
        "seconds": seconds,
        "requests": tally.requests,
        "records": tally.records,
        "requests_per_sec": requests_per_sec,
        "records_per_sec": records_per_sec,
        "mb_per_sec": mb_per_sec,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "p50_us": p50_us,
        "p99_us": p99_us,
        "p999_us": p999_us,
        "max_us": max_us,
    });
    let rpc = match plan.batch {
        Some(_) => "Streams.AppendBatch",
        None => "Streams.Append",
    };
    let first_error = tally
        .first_error
        .as_ref()
        .map_or_else(String::new, |error| format!(" (first: {error})"));
    let text = format!(
        "appended through {endpoints} endpoint(s) with {rpc}: {} clients × {} in flight × {} event(s) of {} bytes per request, {seconds:.3} s measured after {:.3} s of warm-up\n\
         requests/s:        {requests_per_sec:.1}\n\
         records/s:         {records_per_sec:.1}\n\
         MB/s:              {mb_per_sec:.3} (bodies)\n\
         errors:            {}{first_error}\n\
         request latency:   p50 {p50_us:.1} us, p99 {p99_us:.1} us, p999 {p999_us:.1} us, max {max_us:.1} us\n\
         {summary}",
        plan.clients,
        plan.inflight,
        plan.events_per_request(),
        plan.size,
        plan.warmup.as_secs_f64(),
        tally.errors,
    );
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{text}\n").as_bytes()).map_err(output_failed)
}
