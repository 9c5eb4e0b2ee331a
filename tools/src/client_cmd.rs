//! The client subcommands: each makes gRPC calls through
//! `farmlog_api::client::Client` and prints the answer, for people by
//! default and as JSON with `--json`.
//!
//! This module holds the streams and cluster subcommands and what every
//! client subcommand shares (the `cmd_*` modules hold the others): the
//! [`Connect`] flags, the [`rpc!`](crate::client_cmd::rpc) call helper,
//! component references on the command line (`hosted:<id>` names one of
//! the provider's hosted components), enum names and output.
//!
//! Invariants: a write carries a session from [`Client::session`], so
//! retrying it is safe; a refused call becomes a [`Failure`] whose message
//! starts with the status code's canonical name (`PERMISSION_DENIED: ...`),
//! exit code 2; nothing here panics on user input or on what a node
//! answers; every wait (a subscription followed for a while, a hand-off)
//! is bounded.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use farmlog_api::client::{Client, ClientOptions, NodeChannel, Retry};
use farmlog_api::pb::{self, admin_client::AdminClient, streams_client::StreamsClient};
use farmlog_api::tls::TlsFiles;
use serde_json::{json, Value};
use tokio_stream::StreamExt;
use tonic::{Code, Response, Status};

use crate::{output_failed, Failure};

/// How to reach the cluster and as whom.
#[derive(Debug, Args, Clone)]
pub struct Connect {
    /// host:port of one or more nodes, comma-separated.
    #[arg(long, env = "FARMLOG_ENDPOINTS", value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// The CA certificate (PEM).
    #[arg(long, env = "FARMLOG_CA")]
    pub ca: Option<PathBuf>,
    /// The client certificate (PEM); it names the principal.
    #[arg(long, env = "FARMLOG_CERT")]
    pub cert: Option<PathBuf>,
    /// The client key (PEM).
    #[arg(long, env = "FARMLOG_KEY")]
    pub key: Option<PathBuf>,
    /// Plaintext to an --insecure cluster, claiming this principal.
    #[arg(long, env = "FARMLOG_PRINCIPAL")]
    pub insecure_principal: Option<String>,
    /// A landlord principal acting in this customer's namespace.
    #[arg(long, env = "FARMLOG_TENANT")]
    pub tenant: Option<String>,
    /// Let any node answer reads from what it has applied.
    #[arg(long)]
    pub follower_reads: bool,
    /// Each attempt's timeout, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

impl Connect {
    /// These settings with each attempt's timeout raised to `wait`, for a
    /// call the node answers only after waiting itself (a hand-off, a
    /// snapshot).
    pub fn at_least(&self, wait: Duration) -> Connect {
        let mut connect = self.clone();
        connect.timeout_ms = connect
            .timeout_ms
            .max(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        connect
    }

    /// A client of the cluster with these settings.
    pub fn client(&self) -> Result<Client, Failure> {
        let tls = match (&self.ca, &self.cert, &self.key, &self.insecure_principal) {
            (Some(ca), Some(cert), Some(key), None) => Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None, None, Some(_)) => None,
            _ => {
                return Err(Failure::usage(
                    "give --ca, --cert and --key (TLS), or --insecure-principal for an --insecure cluster",
                ))
            }
        };
        Client::new(ClientOptions {
            endpoints: self.endpoints.clone(),
            tls,
            principal: self.insecure_principal.clone(),
            tenant: self.tenant.clone(),
            follower_reads: self.follower_reads,
            timeout: Duration::from_millis(self.timeout_ms),
        })
        .map_err(|error| Failure::usage(error.to_string()))
    }
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    pub stream: String,
    /// The event body (text).
    pub body: String,
    /// any, no-stream, or the version the stream's last event must have.
    #[arg(long, default_value = "any")]
    pub expected: String,
    #[arg(long = "type", default_value = "event")]
    pub event_type: String,
    /// A duplicate of this key within a day is not appended again.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    pub stream: String,
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[arg(long)]
    pub backward: bool,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    pub stream: String,
    /// Follow new events (otherwise print what is there and stop).
    #[arg(short, long)]
    pub follow: bool,
    #[arg(long, default_value_t = 0)]
    pub from: u64,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The answering node's view of the cluster.
    Status {
        #[command(flatten)]
        connect: Connect,
    },
    /// Adds a node as a learner: it catches up, then may be promoted.
    Add {
        #[command(flatten)]
        connect: Connect,
        /// The new node's id.
        id: u64,
        /// The new node's host:port, as the other nodes reach it.
        address: String,
    },
    /// Makes learners voters.
    Promote {
        #[command(flatten)]
        connect: Connect,
        /// The learners' ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Removes voters or learners.
    Remove {
        #[command(flatten)]
        connect: Connect,
        /// The nodes' ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Hands leadership to another voter.
    Handoff {
        #[command(flatten)]
        connect: Connect,
        /// The voter to lead next.
        target: u64,
        /// How long the hand-off may take, in milliseconds (at most
        /// 120000; 0: 10 seconds).
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
    },
    /// Builds a snapshot on the node that answers.
    Snapshot {
        #[command(flatten)]
        connect: Connect,
    },
    /// The background scrub's progress and findings on the node that
    /// answers.
    Scrub {
        #[command(flatten)]
        connect: Connect,
    },
}

// ------------------------------------------------------------ shared helpers

/// The canonical name of a status code, as gRPC and `docs/auth.md` spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A refused or failed call: `CODE: message`, exit code 2.
pub fn status_failure(status: Status) -> Failure {
    Failure::usage(format!("{}: {}", code_name(status.code()), status.message()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::usage(format!("starting the runtime: {error}")))
}

/// Runs one subcommand's calls to completion on a fresh runtime.
pub fn block_on(work: impl Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    runtime()?.block_on(work)
}

/// Makes `call` through `client` with [`Retry::Safe`] and hands back the
/// answer's message. Safe because every read may be repeated and every
/// write made through it carries a session (see [`session`]).
pub async fn call_safe<T, F, Fut>(client: &Client, call: F) -> Result<T, Failure>
where
    F: FnMut(NodeChannel) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    client
        .call(Retry::Safe, call)
        .await
        .map(Response::into_inner)
        .map_err(status_failure)
}

/// One RPC, retried safely: `rpc!(client, TopologyClient::get_component,
/// request)` evaluates to `Result<answer, Failure>`. The request is cloned
/// for each attempt.
macro_rules! rpc {
    ($client:expr, $service:ident :: $method:ident, $request:expr) => {{
        let request = $request;
        $crate::client_cmd::call_safe($client, |channel| {
            let request = request.clone();
            async move { $service::new(channel).$method(request).await }
        })
        .await
    }};
}
pub(crate) use rpc;

/// The next place in the client's session, for one write.
pub async fn session(client: &Client) -> Result<Option<pb::Session>, Failure> {
    client.session().await.map(Some).map_err(status_failure)
}

/// The prefix that names a hosted component (the provider's, in the
/// landlord's namespace) on the command line: `hosted:applications-mlm`.
pub const HOSTED_PREFIX: &str = "hosted:";

/// A component reference from the command line: `<id>` in the caller's
/// tenant, `hosted:<id>` for one of the provider's hosted components.
pub fn parse_component_ref(text: &str) -> Result<pb::ComponentRef, String> {
    let (id, hosted) = match text.strip_prefix(HOSTED_PREFIX) {
        Some(id) => (id, true),
        None => (text, false),
    };
    if id.is_empty() {
        return Err("a component id, or hosted:<id>".into());
    }
    Ok(pb::ComponentRef { id: id.into(), hosted })
}

/// A component reference as the command line writes it.
pub fn ref_text(reference: &pb::ComponentRef) -> String {
    match reference.hosted {
        true => format!("{HOSTED_PREFIX}{}", reference.id),
        false => reference.id.clone(),
    }
}

/// An optional reference (absent in a malformed answer) as text.
pub fn opt_ref_text(reference: Option<&pb::ComponentRef>) -> String {
    reference.map_or_else(|| "-".into(), ref_text)
}

/// References as text, comma-separated.
pub fn refs_text(references: &[pb::ComponentRef]) -> String {
    match references.is_empty() {
        true => "-".into(),
        false => references.iter().map(ref_text).collect::<Vec<_>>().join(", "),
    }
}

/// A component reference as JSON: `{"id", "hosted"}`.
pub fn ref_json(reference: Option<&pb::ComponentRef>) -> Value {
    reference.map_or(
        Value::Null,
        |reference| json!({"id": reference.id, "hosted": reference.hosted}),
    )
}

/// References as a JSON array.
pub fn refs_json(references: &[pb::ComponentRef]) -> Value {
    Value::Array(references.iter().map(|reference| ref_json(Some(reference))).collect())
}

/// Bytes as JSON: `{"text": ...}` when they are UTF-8, `{"hex": ...}`
/// otherwise.
pub fn bytes_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({ "hex": hex(bytes) }),
    }
}

/// Bytes for people: the text when they are UTF-8, hex otherwise.
pub fn bytes_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("0x{}", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Where a write landed, as JSON (null when the node wrote nothing).
pub fn written_json(written: Option<&pb::Written>) -> Value {
    written.map_or(
        Value::Null,
        |written| json!({"log_index": written.log_index, "slot": written.slot, "retried": written.retried}),
    )
}

/// A protobuf enum of the contract, named on the command line and in the
/// output by its value's name without the enum's prefix, lowercase, with
/// `-` for `_` (`COMPONENT_KIND_CUSTOMER_MLM` → `customer-mlm`).
pub trait WireEnum: TryFrom<i32> + Copy {
    /// The prefix every value name of the enum starts with.
    const PREFIX: &'static str;
    /// The value's full name in the .proto file.
    fn proto_name(self) -> &'static str;
}

macro_rules! wire_enums {
    ($($enum:ty => $prefix:literal),* $(,)?) => {$(
        impl WireEnum for $enum {
            const PREFIX: &'static str = $prefix;
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
        }
    )*};
}

wire_enums! {
    pb::ComponentKind => "COMPONENT_KIND_",
    pb::CommunicationMode => "COMMUNICATION_MODE_",
    pb::GroupKind => "GROUP_KIND_",
    pb::Liveness => "LIVENESS_",
    pb::Severity => "SEVERITY_",
    pb::AlarmState => "ALARM_STATE_",
    pb::AlarmChange => "ALARM_CHANGE_",
    pb::ResponseStatus => "RESPONSE_STATUS_",
    pb::NackReason => "NACK_REASON_",
    pb::DeliveryState => "DELIVERY_STATE_",
    pb::TransferPhase => "TRANSFER_PHASE_",
}

/// The command-line name of an enum value as a node sent it; a value this
/// build does not know is `unknown-<n>`.
pub fn enum_name<E: WireEnum>(value: i32) -> String {
    match E::try_from(value) {
        Ok(known) => {
            let name = known.proto_name();
            name.strip_prefix(E::PREFIX)
                .unwrap_or(name)
                .to_ascii_lowercase()
                .replace('_', "-")
        }
        Err(_) => format!("unknown-{value}"),
    }
}

/// Prints one line (or several) to stdout.
pub fn say(text: impl std::fmt::Display) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").map_err(output_failed)
}

/// Prints `value` as one line of JSON with `--json`, else `human()`.
pub fn emit(json: bool, value: impl FnOnce() -> Value, human: impl FnOnce() -> String) -> Result<(), Failure> {
    match json {
        true => say(value()),
        false => say(human()),
    }
}

/// The milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    farmlog_api::context::now_ms()
}

/// A message id for a message the caller named none for: the prefix,
/// the time and a random suffix, unique in practice.
pub fn new_message_id(prefix: &str) -> String {
    format!("{prefix}-{}-{:08x}", now_ms(), rand::random::<u32>())
}

/// When a bounded follow (`--follow-ms`) ends; `None` follows until the
/// count is reached or the user stops it.
pub fn follow_deadline(follow_ms: Option<u64>) -> Option<tokio::time::Instant> {
    follow_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms))
}

/// `work`'s output, or `None` once `deadline` passed first.
pub async fn before<T>(deadline: Option<tokio::time::Instant>, work: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, work).await.ok(),
        None => Some(work.await),
    }
}

/// How long a followed stream goes on: until `count` items (if given)
/// or `deadline` (if given), whichever comes first; neither follows until
/// the user stops it.
#[derive(Clone, Copy, Debug)]
pub struct FollowLimits {
    pub count: Option<u64>,
    pub deadline: Option<tokio::time::Instant>,
}

impl FollowLimits {
    /// The limits of `--count` and `--follow-ms`.
    pub fn new(count: Option<u64>, follow_ms: Option<u64>) -> Self {
        Self {
            count,
            deadline: follow_deadline(follow_ms),
        }
    }
}

/// Follows a server stream: `open` subscribes (from where `each` left
/// off: the two share that through the caller's state), `each` prints an
/// item. A stream that breaks with its node (UNAVAILABLE, CANCELLED,
/// UNKNOWN, or its end) is opened again at the next node; any other
/// status ends the command with it.
pub async fn follow<T, S, Open, OpenFuture>(
    client: &Client,
    limits: FollowLimits,
    mut open: Open,
    mut each: impl FnMut(T) -> Result<(), Failure>,
) -> Result<(), Failure>
where
    S: tokio_stream::Stream<Item = Result<T, Status>> + Unpin,
    Open: FnMut() -> OpenFuture,
    OpenFuture: Future<Output = Result<S, Failure>>,
{
    let mut seen = 0u64;
    loop {
        if limits.count.is_some_and(|count| seen >= count) {
            return Ok(());
        }
        let Some(opened) = before(limits.deadline, open()).await else {
            return Ok(());
        };
        let mut stream = opened?;
        loop {
            if limits.count.is_some_and(|count| seen >= count) {
                return Ok(());
            }
            match before(limits.deadline, stream.next()).await {
                None => return Ok(()),
                Some(Some(Ok(item))) => {
                    seen += 1;
                    each(item)?;
                }
                Some(Some(Err(status))) if !stream_broke(&status) => return Err(status_failure(status)),
                Some(Some(Err(_)) | None) => {
                    client.next_endpoint();
                    break;
                }
            }
        }
        if before(
            limits.deadline,
            tokio::time::sleep(farmlog_api::client::RETRY_BACKOFF_FIRST),
        )
        .await
        .is_none()
        {
            return Ok(());
        }
    }
}

/// Whether a broken subscription should be picked up at another node.
fn stream_broke(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
}

fn print_event(event: &pb::StreamEvent, json: bool) {
    match json {
        true => println!(
            "{}",
            json!({
                "stream": event.stream, "version": event.version, "position": event.position,
                "type": event.event_type, "body": String::from_utf8_lossy(&event.body),
                "proposed_at_ms": event.proposed_at_ms, "principal": event.principal,
            })
        ),
        false => println!(
            "{}@{} (position {}, {}): {}",
            event.stream,
            event.version,
            event.position,
            event.event_type,
            String::from_utf8_lossy(&event.body)
        ),
    }
}

pub fn append(connect: &Connect, args: &AppendArgs) -> Result<(), Failure> {
    let expected = match args.expected.as_str() {
        "any" => pb::expected_version::Expected::Any(true),
        "no-stream" => pb::expected_version::Expected::NoStream(true),
        version => pb::expected_version::Expected::Exact(
            version
                .parse()
                .map_err(|_| Failure::usage("--expected is any, no-stream or a version number"))?,
        ),
    };
    runtime()?.block_on(async {
        let client = connect.client()?;
        let session = client.session().await.map_err(status_failure)?;
        let request = pb::AppendRequest {
            stream: args.stream.clone(),
            expected: Some(pb::ExpectedVersion {
                expected: Some(expected),
            }),
            event_type: args.event_type.clone(),
            body: args.body.clone().into_bytes().into(),
            idempotency_key: args.idempotency_key.clone(),
            idempotency_window_ms: 0,
            session: Some(session),
        };
        let answer = client
            .call(Retry::Safe, |channel| {
                let request = request.clone();
                async move { StreamsClient::new(channel).append(request).await }
            })
            .await
            .map_err(status_failure)?
            .into_inner();
        match connect.json {
            true => println!(
                "{}",
                json!({"stream": args.stream, "version": answer.version, "position": answer.position, "duplicate": answer.duplicate})
            ),
            false => println!(
                "appended {}@{} at position {}{}",
                args.stream,
                answer.version,
                answer.position,
                if answer.duplicate { " (duplicate: not appended again)" } else { "" }
            ),
        }
        Ok(())
    })
}

pub fn read(connect: &Connect, args: &ReadArgs) -> Result<(), Failure> {
    let request = pb::ReadStreamRequest {
        stream: args.stream.clone(),
        from_version: args.from,
        direction: match args.backward {
            true => pb::Direction::Backward as i32,
            false => pb::Direction::Forward as i32,
        },
        limit: args.limit,
    };
    runtime()?.block_on(async {
        let client = connect.client()?;
        let answer = client
            .call(Retry::Safe, |channel| {
                let request = request.clone();
                async move { StreamsClient::new(channel).read(request).await }
            })
            .await
            .map_err(status_failure)?
            .into_inner();
        for event in &answer.events {
            print_event(event, connect.json);
        }
        Ok(())
    })
}

pub fn tail(connect: &Connect, args: &TailArgs) -> Result<(), Failure> {
    if !args.follow {
        return read(
            connect,
            &ReadArgs {
                stream: args.stream.clone(),
                from: args.from,
                limit: farmlog_api::services::streams::READ_LIMIT_MAX,
                backward: false,
            },
        );
    }
    runtime()?.block_on(async {
        let client = connect.client()?;
        // A subscription follows one node; when that node goes away, the
        // next one picks up after the last event printed.
        let mut next = args.from;
        loop {
            let request = pb::SubscribeStreamRequest {
                stream: args.stream.clone(),
                from_version: next,
            };
            let mut events = client
                .call(Retry::Safe, |channel| {
                    let request = request.clone();
                    async move { StreamsClient::new(channel).subscribe(request).await }
                })
                .await
                .map_err(status_failure)?
                .into_inner();
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        next = event.version + 1;
                        print_event(&event, connect.json);
                    }
                    Some(Err(status))
                        if matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled) =>
                    {
                        client.next_endpoint();
                        break;
                    }
                    Some(Err(status)) => return Err(status_failure(status)),
                    None => {
                        client.next_endpoint();
                        break;
                    }
                }
            }
            tokio::time::sleep(farmlog_api::client::RETRY_BACKOFF_FIRST).await;
        }
    })
}

/// Runs a `cluster` subcommand (landlord admins only).
pub fn cluster(command: &ClusterCommand) -> Result<(), Failure> {
    match command {
        ClusterCommand::Status { connect } => cluster_status(connect),
        ClusterCommand::Add { connect, id, address } => {
            let request = pb::AddLearnerRequest {
                id: *id,
                address: address.clone(),
            };
            // Adding the same learner again changes nothing: safe to retry.
            membership(connect, &format!("node {id} added as a learner"), async |client| {
                rpc!(client, AdminClient::add_learner, request)
            })
        }
        ClusterCommand::Promote { connect, ids } => {
            let request = pb::PromoteRequest { ids: ids.clone() };
            // Promoting voters again changes nothing: safe to retry.
            membership(connect, &format!("promoted {ids:?}"), async |client| {
                rpc!(client, AdminClient::promote, request)
            })
        }
        ClusterCommand::Remove { connect, ids } => {
            let request = pb::RemoveRequest { ids: ids.clone() };
            membership(connect, &format!("removed {ids:?}"), async |client| {
                rpc!(client, AdminClient::remove, request)
            })
        }
        ClusterCommand::Handoff {
            connect,
            target,
            wait_ms,
        } => hand_off(connect, *target, *wait_ms),
        ClusterCommand::Snapshot { connect } => {
            // Building the snapshot may take a while: the node waits up to
            // a minute for it.
            let connect = connect.at_least(farmlog_api::services::admin::SNAPSHOT_WAIT + CALL_SLACK);
            block_on(async {
                let client = connect.client()?;
                let built = rpc!(&client, AdminClient::snapshot, pb::SnapshotRequest {})?;
                emit(
                    connect.json,
                    || json!({"snapshot_index": built.snapshot_index}),
                    || match built.snapshot_index {
                        Some(index) => format!("snapshot built up to log index {index}"),
                        None => "no snapshot: nothing applied yet".into(),
                    },
                )
            })
        }
        ClusterCommand::Scrub { connect } => block_on(async {
            let client = connect.client()?;
            let report = rpc!(&client, AdminClient::scrub_report, pb::ScrubReportRequest {})?;
            emit(
                connect.json,
                || {
                    json!({
                        "passes": report.passes, "bytes_checked": report.bytes_checked,
                        "records_checked": report.records_checked,
                        "damage": (!report.damage.is_empty()).then_some(&report.damage),
                    })
                },
                || {
                    format!(
                        "scrub: {} passes, {} records and {} bytes checked; {}",
                        report.passes,
                        report.records_checked,
                        report.bytes_checked,
                        match report.damage.is_empty() {
                            true => "no damage".to_string(),
                            false => format!("DAMAGE: {}", report.damage),
                        }
                    )
                },
            )
        }),
    }
}

/// What a call that waits on the node's side may take beyond that wait.
const CALL_SLACK: Duration = Duration::from_secs(5);

/// A membership change, then the members it left.
fn membership(
    connect: &Connect,
    done: &str,
    change: impl AsyncFnOnce(&Client) -> Result<pb::MembershipResponse, Failure>,
) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let answer = change(&client).await?;
        emit(
            connect.json,
            || json!({"nodes": nodes_json(&answer.nodes)}),
            || {
                let mut text = done.to_string();
                for node in &answer.nodes {
                    text.push_str(&format!("\n  {}", node_text(node)));
                }
                text
            },
        )
    })
}

fn node_text(node: &pb::NodeInfo) -> String {
    let role = if node.voter { "voter" } else { "learner" };
    format!("node {} at {} ({role})", node.id, node.address)
}

fn nodes_json(nodes: &[pb::NodeInfo]) -> Value {
    nodes
        .iter()
        .map(|node| json!({"id": node.id, "address": node.address, "voter": node.voter}))
        .collect()
}

fn hand_off(connect: &Connect, target: u64, wait_ms: u64) -> Result<(), Failure> {
    let wait = match wait_ms {
        0 => farmlog_api::services::admin::HAND_OFF_TIMEOUT_DEFAULT,
        ms => Duration::from_millis(ms),
    };
    let connect = connect.at_least(wait + CALL_SLACK);
    block_on(async {
        let client = connect.client()?;
        let request = pb::HandOffRequest {
            target,
            timeout_ms: wait_ms,
        };
        // Not retried once sent: a retry could reach the new leader and
        // ask it to hand off to itself.
        client
            .call(Retry::OnlyIfNotWritten, |channel| async move {
                AdminClient::new(channel).hand_off(request).await
            })
            .await
            .map_err(status_failure)?;
        emit(
            connect.json,
            || json!({"leader": target}),
            || format!("node {target} leads"),
        )
    })
}

fn cluster_status(connect: &Connect) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let status = rpc!(&client, AdminClient::status, pb::ClusterStatusRequest {})?;
        emit(
            connect.json,
            || {
                json!({
                    "node_id": status.node_id, "role": status.role, "term": status.term,
                    "leader_id": status.leader_id, "leader_address": status.leader_address,
                    "nodes": nodes_json(&status.nodes),
                    "last_log_index": status.last_log_index, "applied_index": status.applied_index,
                    "snapshot_index": status.snapshot_index, "cluster_schema": status.cluster_schema,
                    "fenced": status.fenced, "log_time_ms": status.log_time_ms, "state_hash": status.state_hash,
                })
            },
            || {
                let mut lines = vec![format!(
                    "node {} is {} in term {}",
                    status.node_id, status.role, status.term
                )];
                lines.push(match status.leader_id {
                    Some(leader) => format!("leader: node {leader} at {}", status.leader_address),
                    None => "leader: none known".into(),
                });
                lines.extend(status.nodes.iter().map(|node| format!("  {}", node_text(node))));
                lines.push(format!(
                    "log: last {:?}, applied {:?}, snapshot {:?}; schema {}; fenced {}",
                    status.last_log_index,
                    status.applied_index,
                    status.snapshot_index,
                    status.cluster_schema,
                    status.fenced
                ));
                lines.push(format!("state hash: {}", status.state_hash));
                lines.join("\n")
            },
        )
    })
}
