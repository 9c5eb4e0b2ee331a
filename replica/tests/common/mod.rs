//! What the replica's cluster tests share: simulated machines whose nodes
//! talk over a `SimNet`, and writes.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use farmlog_engine::io::{SimConfig, SimStorage};
use farmlog_engine::state::batch::{self, Batch};
use farmlog_engine::state::{testing, Place};
use farmlog_engine::{FlushMode, LogOptions};
use farmlog_replica::sim::net::SimNet;
use farmlog_replica::{Error, Node, RaftSettings, SchemaSupport, StoreOptions};

/// A simulated machine: its disk, and the directory a node keeps there.
pub struct Machine {
    pub storage: Arc<SimStorage>,
    pub dir: PathBuf,
}

impl Machine {
    pub fn new(id: u64) -> Self {
        Self {
            storage: Arc::new(SimStorage::new(SimConfig { seed: id })),
            dir: PathBuf::from(format!("/node-{id}")),
        }
    }

    /// Starts node `id` here, playing a build with `support`, and attaches
    /// it to the network.
    pub async fn start(&self, net: &Arc<SimNet>, id: u64, support: SchemaSupport) -> Result<Arc<Node>, Error> {
        let options = StoreOptions {
            schema_support: support,
            ..options()
        };
        self.start_with(net, id, options, &RaftSettings::default()).await
    }

    /// Starts node `id` here with these options and settings.
    pub async fn start_with(
        &self,
        net: &Arc<SimNet>,
        id: u64,
        options: StoreOptions,
        settings: &RaftSettings,
    ) -> Result<Arc<Node>, Error> {
        let config = settings.config("test").unwrap();
        let node = Node::start(id, self.storage.clone(), &self.dir, options, config, net.transport(id)).await?;
        net.attach(&node);
        Ok(Arc::new(node))
    }

    /// Power loss: what was synced stays, nothing more is written (the
    /// crash kills the node's file handles before it stops).
    pub async fn crash(&self, net: &Arc<SimNet>, node: Arc<Node>) {
        net.detach(node.id);
        self.storage.crash();
        node.shutdown().await;
        drop(node);
    }

    /// Stops the node as a process exit would: it closes its log cleanly.
    pub async fn stop(&self, net: &Arc<SimNet>, node: Arc<Node>) {
        net.detach(node.id);
        node.shutdown().await;
        drop(node);
        self.storage.crash();
    }
}

/// A deterministic runtime: current-thread, paused time, openraft's
/// election generator seeded with `seed`.
pub fn runtime(seed: u64) -> tokio::runtime::Runtime {
    farmlog_replica::runtime::seed_thread_rng(seed);
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// The stores' options of a test node: small segments, manual flush.
pub fn options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            first_index: 0,
            segment_bytes: 256 << 10,
            disk_reserve_bytes: 0,
            flush: FlushMode::Manual,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// Proposes `count` commands at `node` concurrently, stamped from
/// `first_stamp`; returns (stamp, place) of each.
pub async fn write(node: &Arc<Node>, first_stamp: u64, count: u64) -> Vec<(u64, Place)> {
    let templates = {
        let mut all = testing::farm();
        all.extend(testing::every_family());
        all
    };
    let mut tasks = tokio::task::JoinSet::new();
    for stamp in first_stamp..first_stamp + count {
        let mut command = templates[(stamp as usize) % templates.len()].clone();
        command.proposed_at_ms = stamp;
        let node = node.clone();
        tasks.spawn(async move {
            let (place, _) = node.propose(batch::encode(&command).unwrap()).await.unwrap();
            (stamp, place)
        });
    }
    let mut acked = Vec::new();
    while let Some(result) = tasks.join_next().await {
        acked.push(result.unwrap());
    }
    acked.sort_by_key(|(stamp, _)| *stamp);
    acked
}

/// Asserts that every acknowledged write is in `node`'s log at its place.
pub fn assert_holds(node: &Node, acked: &[(u64, Place)]) {
    let log = node.log();
    for (stamp, place) in acked {
        let record = log
            .read(place.index)
            .unwrap_or_else(|error| panic!("node {}: write {stamp} at {place:?} is gone: {error}", node.id));
        let batch = Batch::parse(record.payload()).unwrap();
        assert_eq!(
            batch.command(place.slot).unwrap().proposed_at_ms.to_native(),
            *stamp,
            "node {}: another write at {place:?}",
            node.id
        );
    }
}
