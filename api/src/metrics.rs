//! Prometheus metrics at `/metrics` on a node's metrics address (plain
//! HTTP; keep it on a private interface).
//!
//! What a write costs is observed where it happens ([`Metrics::write`]);
//! everything else is read from the node when it is scraped
//! ([`NodeCollector`]): Raft's term, leader and indexes, the log's appends
//! and fsyncs (with their latency), the proposer's entries and commands,
//! spool depths and parked deliveries, snapshot and scrub status.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use farmlog_engine::log::SYNC_LATENCY_BOUNDS_MICROS;
use farmlog_replica::Node;
use openraft::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Most parked deliveries counted per tenant at one scrape.
pub const PARKED_COUNTED_MAX: usize = 100_000;
/// Buckets of the commit latency histogram: from 100 µs, doubling, 18 of
/// them (to about 13 s).
pub const COMMIT_LATENCY_BUCKETS: u16 = 18;

/// The result label of a write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `applied`, `rejected` (it stays in the log with no effect),
    /// `failed` (no outcome: not the leader, or unknown), `invalid` or
    /// `over_quota` (refused before the log).
    pub result: &'static str,
}

/// The metrics a node keeps.
pub struct Metrics {
    registry: Registry,
    writes: Family<WriteLabels, Counter>,
    commit_latency: Histogram,
}

impl Metrics {
    pub fn new(node: Arc<Node>) -> Self {
        let mut registry = Registry::with_prefix("farmlog");
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "writes",
            "Client writes answered by this node, by result",
            writes.clone(),
        );
        let commit_latency = Histogram::new(exponential_buckets(0.0001, 2.0, COMMIT_LATENCY_BUCKETS));
        registry.register(
            "commit_latency_seconds",
            "From proposing a write to its outcome: committed on a quorum and applied here",
            commit_latency.clone(),
        );
        registry.register_collector(Box::new(NodeCollector { node }));
        Self {
            registry,
            writes,
            commit_latency,
        }
    }

    /// Records one write's result and, when it reached the log, how long
    /// it took.
    pub fn write(&self, result: &'static str, elapsed: Option<Duration>) {
        self.writes.get_or_create(&WriteLabels { result }).inc();
        if let Some(elapsed) = elapsed {
            self.commit_latency.observe(elapsed.as_secs_f64());
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            Ok(()) => text,
            Err(error) => format!("# encoding the metrics failed: {error}\n"),
        }
    }
}

/// Reads a node's state at each scrape.
struct NodeCollector {
    node: Arc<Node>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "NodeCollector(node {})", self.node.id)
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let node = &self.node;
        let metrics = node.raft.metrics().borrow().clone();
        let index = |log_id: Option<openraft::LogId<u64>>| log_id.map_or(-1, |log_id| log_id.index as i64);
        gauge(&mut encoder, "node_id", "This node's id", node.id as i64)?;
        gauge(
            &mut encoder,
            "term",
            "The current Raft term",
            metrics.current_term as i64,
        )?;
        gauge(
            &mut encoder,
            "leader_id",
            "The leader this node knows of (-1: none)",
            metrics.current_leader.map_or(-1, |leader| leader as i64),
        )?;
        gauge(
            &mut encoder,
            "is_leader",
            "1 when this node leads",
            i64::from(metrics.state == ServerState::Leader),
        )?;
        gauge(
            &mut encoder,
            "last_log_index",
            "The last entry in this node's log (-1: none)",
            metrics.last_log_index.map_or(-1, |last| last as i64),
        )?;
        gauge(
            &mut encoder,
            "applied_index",
            "The last entry applied here (-1: none)",
            index(metrics.last_applied),
        )?;
        gauge(
            &mut encoder,
            "snapshot_index",
            "The last entry the newest snapshot covers (-1: none)",
            index(metrics.snapshot),
        )?;
        gauge(
            &mut encoder,
            "fenced",
            "1 while this node is fenced (its log's tail was cut; it does not vote)",
            i64::from(node.fence_state().is_fenced()),
        )?;
        let stats = node.log().stats();
        counter(
            &mut encoder,
            "log_records_acknowledged",
            "Records (Raft entries) made durable in this node's log since start",
            stats.records_acknowledged,
        )?;
        counter(
            &mut encoder,
            "log_fsyncs",
            "Group-commit fdatasync calls since start",
            stats.commit_syncs,
        )?;
        gauge(
            &mut encoder,
            "log_file_bytes",
            "Bytes of this node's log segments on disk",
            stats.file_bytes as i64,
        )?;
        let mut cumulative = 0;
        let buckets: Vec<(f64, u64)> = SYNC_LATENCY_BOUNDS_MICROS
            .iter()
            .zip(&stats.sync_latency_counts)
            .map(|(bound, count)| {
                cumulative += count;
                (*bound as f64 / 1e6, cumulative)
            })
            .collect();
        let count: u64 = stats.sync_latency_counts.iter().sum();
        encoder
            .encode_descriptor(
                "fsync_latency_seconds",
                "How long each group commit's fdatasync took",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(stats.sync_micros_total as f64 / 1e6, count, &buckets, None)?;
        let proposer = node.proposer_stats();
        let entries = proposer.entries.load(std::sync::atomic::Ordering::Relaxed);
        let commands = proposer.commands.load(std::sync::atomic::Ordering::Relaxed);
        counter(
            &mut encoder,
            "raft_entries_proposed",
            "Raft entries this node proposed as leader",
            entries,
        )?;
        counter(
            &mut encoder,
            "raft_commands_proposed",
            "Client commands packed into those entries (divide by the entries for commands per entry)",
            commands,
        )?;
        let (depth, parked, log_time) = node.read_local(|applier| {
            let state = &applier.state;
            let mut depth = 0u64;
            let mut parked = 0usize;
            for (tenant, _) in state.tenants() {
                if let Some(view) = state.view(tenant) {
                    depth += view.spool_depth_total();
                    parked += view.parked(PARKED_COUNTED_MAX).len();
                }
            }
            (depth, parked, state.log_time_ms())
        });
        gauge(
            &mut encoder,
            "spool_depth",
            "Live back-channel deliveries in every spool",
            depth as i64,
        )?;
        gauge(
            &mut encoder,
            "spool_parked",
            "Parked back-channel deliveries (counted up to a bound per tenant)",
            parked as i64,
        )?;
        gauge(
            &mut encoder,
            "log_time_ms",
            "The applied state's log time",
            log_time as i64,
        )?;
        let scrub = node.scrub_status();
        counter(
            &mut encoder,
            "scrub_passes",
            "Complete scrub passes over the log",
            scrub.passes,
        )?;
        counter(&mut encoder, "scrub_bytes", "Bytes the scrub has checked", scrub.bytes)?;
        gauge(
            &mut encoder,
            "scrub_damaged",
            "1 when the scrub found damage",
            i64::from(scrub.damage.is_some()),
        )?;
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
                    .into_response()
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
