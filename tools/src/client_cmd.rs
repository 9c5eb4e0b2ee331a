//! The client subcommands: each makes gRPC calls through
//! `farmlog_api::client::Client` and prints the answer, for people by
//! default and as JSON with `--json`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use farmlog_api::client::{Client, ClientOptions, Retry};
use farmlog_api::pb::{self, admin_client::AdminClient, streams_client::StreamsClient};
use farmlog_api::tls::TlsFiles;
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::Failure;

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
}

fn status_failure(status: tonic::Status) -> Failure {
    Failure::usage(format!("{:?}: {}", status.code(), status.message()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::usage(format!("starting the runtime: {error}")))
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

pub fn cluster(command: &ClusterCommand) -> Result<(), Failure> {
    match command {
        ClusterCommand::Status { connect } => runtime()?.block_on(async {
            let client = connect.client()?;
            let status = client
                .call(Retry::Safe, |channel| async move {
                    AdminClient::new(channel).status(pb::ClusterStatusRequest {}).await
                })
                .await
                .map_err(status_failure)?
                .into_inner();
            match connect.json {
                true => println!(
                    "{}",
                    json!({
                        "node_id": status.node_id, "role": status.role, "term": status.term,
                        "leader_id": status.leader_id, "leader_address": status.leader_address,
                        "nodes": status.nodes.iter().map(|node| json!({"id": node.id, "address": node.address, "voter": node.voter})).collect::<Vec<_>>(),
                        "last_log_index": status.last_log_index, "applied_index": status.applied_index,
                        "snapshot_index": status.snapshot_index, "cluster_schema": status.cluster_schema,
                        "fenced": status.fenced, "log_time_ms": status.log_time_ms, "state_hash": status.state_hash,
                    })
                ),
                false => {
                    println!("node {} is {} in term {}", status.node_id, status.role, status.term);
                    match status.leader_id {
                        Some(leader) => println!("leader: node {leader} at {}", status.leader_address),
                        None => println!("leader: none known"),
                    }
                    for node in &status.nodes {
                        println!("  node {} at {} ({})", node.id, node.address, if node.voter { "voter" } else { "learner" });
                    }
                    println!(
                        "log: last {:?}, applied {:?}, snapshot {:?}; schema {}; fenced {}",
                        status.last_log_index, status.applied_index, status.snapshot_index, status.cluster_schema, status.fenced
                    );
                    println!("state hash: {}", status.state_hash);
                }
            }
            Ok(())
        }),
    }
}
