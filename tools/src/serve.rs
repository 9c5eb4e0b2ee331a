//! `farmlog serve`: one node of a cluster, from a TOML file, flags and
//! `FARMLOG_*` environment variables (flags and variables override the
//! file). The format is documented in `docs/config.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use farmlog_api::quota::QuotaSettings;
use farmlog_api::raft::GrpcTransport;
use farmlog_api::server::{serve, ServeOptions};
use farmlog_api::tls::TlsFiles;
use farmlog_engine::io::OsStorage;
use farmlog_replica::{Node, NodeId, RaftSettings, StoreOptions};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::Failure;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The node's configuration file (TOML, see docs/config.md).
    #[arg(long, env = "FARMLOG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (unique in the cluster, never reused).
    #[arg(long, env = "FARMLOG_ID")]
    pub id: Option<u64>,
    /// The address to listen on, host:port.
    #[arg(long, env = "FARMLOG_LISTEN")]
    pub listen: Option<String>,
    /// The address peers and clients reach this node at (default: listen).
    #[arg(long, env = "FARMLOG_ADVERTISE")]
    pub advertise: Option<String>,
    /// Where the node keeps its log, snapshots and Raft state.
    #[arg(long, env = "FARMLOG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The initial members, as id=host:port, comma-separated. The member
    /// with the lowest id initializes a new cluster.
    #[arg(long, env = "FARMLOG_MEMBERS", value_delimiter = ',')]
    pub members: Vec<String>,
    #[arg(long, env = "FARMLOG_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "FARMLOG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "FARMLOG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Plaintext, and callers name their principal in a header. For local
    /// development only.
    #[arg(long, env = "FARMLOG_INSECURE")]
    pub insecure: bool,
    /// Serve Prometheus metrics (GET /metrics, plain HTTP) on host:port.
    #[arg(long, env = "FARMLOG_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// The configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: Option<u64>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Must be the same on every node.
    pub cluster_name: Option<String>,
    /// Initial members: node id (as a string key) → host:port.
    #[serde(default)]
    pub members: BTreeMap<String, String>,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub insecure: bool,
    pub quotas: Option<QuotaConfig>,
    /// host:port for Prometheus metrics (plain HTTP).
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub writes_per_second: u64,
    pub write_bytes_per_second: u64,
}

/// The cluster name when none is configured.
pub const CLUSTER_NAME_DEFAULT: &str = "farmlog";
/// Largest configuration file read.
pub const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// Everything a node needs, settled.
#[derive(Debug, Clone)]
pub struct Settled {
    pub id: NodeId,
    pub listen: SocketAddr,
    pub advertise: String,
    pub data_dir: PathBuf,
    pub cluster_name: String,
    pub members: BTreeMap<NodeId, String>,
    pub tls: Option<TlsFiles>,
    pub quotas: QuotaSettings,
    pub metrics: Option<SocketAddr>,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::usage(message)
}

/// Reads and checks a configuration file.
pub fn read_config(path: &std::path::Path) -> Result<NodeConfig, Failure> {
    let length = std::fs::metadata(path)
        .map_err(|error| usage(format!("{}: {error}", path.display())))?
        .len();
    if length > CONFIG_BYTES_MAX {
        return Err(usage(format!("{}: over {CONFIG_BYTES_MAX} bytes", path.display())));
    }
    let text = std::fs::read_to_string(path).map_err(|error| usage(format!("{}: {error}", path.display())))?;
    toml::from_str(&text).map_err(|error| usage(format!("{}: {error}", path.display())))
}

/// The file, overridden by flags and environment variables.
pub fn settle(args: &ServeArgs) -> Result<Settled, Failure> {
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => NodeConfig::default(),
    };
    let id = args
        .id
        .or(file.id)
        .ok_or_else(|| usage("the node id is required (--id or `id` in the file)"))?;
    let listen_text = args
        .listen
        .clone()
        .or(file.listen)
        .ok_or_else(|| usage("the listen address is required (--listen or `listen`)"))?;
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|error| usage(format!("listen address {listen_text:?}: {error}")))?;
    let advertise = args.advertise.clone().or(file.advertise).unwrap_or(listen_text);
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .ok_or_else(|| usage("the data directory is required (--data-dir or `data_dir`)"))?;
    let mut members = BTreeMap::new();
    for (key, address) in &file.members {
        let member: NodeId = key
            .parse()
            .map_err(|_| usage(format!("members: {key:?} is not a node id")))?;
        members.insert(member, address.clone());
    }
    if !args.members.is_empty() {
        members.clear();
        for member in &args.members {
            let (key, address) = member
                .split_once('=')
                .ok_or_else(|| usage(format!("--members: {member:?} is not id=host:port")))?;
            let member: NodeId = key
                .parse()
                .map_err(|_| usage(format!("--members: {key:?} is not a node id")))?;
            members.insert(member, address.to_string());
        }
    }
    let insecure = args.insecure || file.insecure;
    let tls = match (
        args.tls_ca.clone(),
        args.tls_cert.clone(),
        args.tls_key.clone(),
        file.tls,
    ) {
        (Some(ca), Some(cert), Some(key), _) => Some(TlsFiles { ca, cert, key }),
        (None, None, None, Some(tls)) => Some(TlsFiles {
            ca: tls.ca,
            cert: tls.cert,
            key: tls.key,
        }),
        (None, None, None, None) => None,
        _ => return Err(usage("--tls-ca, --tls-cert and --tls-key go together")),
    };
    let tls = match (tls, insecure) {
        (Some(_), true) => return Err(usage("--insecure and TLS settings exclude each other")),
        (None, false) => {
            return Err(usage(
                "TLS is required: give [tls] ca/cert/key (or --tls-*), or --insecure for local development",
            ))
        }
        (tls, _) => tls,
    };
    let quotas = file.quotas.map_or_else(QuotaSettings::default, |quotas| QuotaSettings {
        writes_per_second: quotas.writes_per_second,
        write_bytes_per_second: quotas.write_bytes_per_second,
    });
    let metrics = match args.metrics_listen.clone().or(file.metrics_listen) {
        Some(text) => Some(
            text.parse::<SocketAddr>()
                .map_err(|error| usage(format!("metrics address {text:?}: {error}")))?,
        ),
        None => None,
    };
    Ok(Settled {
        metrics,
        id,
        listen,
        advertise,
        data_dir,
        cluster_name: file.cluster_name.unwrap_or_else(|| CLUSTER_NAME_DEFAULT.to_string()),
        members,
        tls,
        quotas,
    })
}

/// Runs the node until SIGINT or SIGTERM, then stops it cleanly.
pub fn run(args: &ServeArgs) -> Result<(), Failure> {
    let settled = settle(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| usage(format!("starting the runtime: {error}")))?;
    runtime.block_on(run_node(settled))
}

async fn run_node(settled: Settled) -> Result<(), Failure> {
    let operational = |what: &str, error: &dyn std::fmt::Display| usage(format!("{what}: {error}"));
    let config = RaftSettings::default()
        .config(&settled.cluster_name)
        .map_err(|error| operational("raft settings", &error))?;
    let client_tls = settled
        .tls
        .as_ref()
        .map(|tls| tls.client())
        .transpose()
        .map_err(|error| operational("TLS", &error))?;
    let listener = tokio::net::TcpListener::bind(settled.listen)
        .await
        .map_err(|error| operational(&format!("listening on {}", settled.listen), &error))?;
    let node = Node::start(
        settled.id,
        Arc::new(OsStorage),
        &settled.data_dir,
        StoreOptions::default(),
        config,
        Arc::new(GrpcTransport::new(client_tls)),
    )
    .await
    .map_err(|error| operational(&format!("starting node {}", settled.id), &error))?;
    let node = Arc::new(node);
    let initialized = node
        .raft
        .is_initialized()
        .await
        .map_err(|error| operational("raft", &error))?;
    let first = settled.members.keys().next().copied();
    if !initialized && first == Some(settled.id) {
        let members = settled
            .members
            .iter()
            .map(|(id, address)| (*id, BasicNode { addr: address.clone() }))
            .collect::<BTreeMap<_, _>>();
        node.raft
            .initialize(members)
            .await
            .map_err(|error| operational("initializing the cluster", &error))?;
        tracing::info!(node = settled.id, "initialized a new cluster");
    }
    tracing::info!(node = settled.id, listen = %settled.listen, advertise = %settled.advertise, "serving");
    eprintln!(
        "farmlog: node {} serving on {} (data in {}{})",
        settled.id,
        settled.listen,
        settled.data_dir.display(),
        settled
            .metrics
            .map(|address| format!("; metrics at http://{address}/metrics"))
            .unwrap_or_default()
    );
    let options = ServeOptions {
        tls: settled.tls.clone(),
        quotas: settled.quotas,
        metrics: settled.metrics,
    };
    let served = serve(node.clone(), listener, options, stop_signal()).await;
    node.shutdown().await;
    served.map_err(|error| operational("serving", &error))?;
    eprintln!("farmlog: node {} stopped", settled.id);
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
