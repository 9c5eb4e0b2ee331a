//! The in-process network of a simulated cluster: every request is a
//! direct call on the target node's [`Inbox`], after a delay, through faults
//! drawn from one seeded generator: loss, duplication, delay (and so
//! reordering), and partitions of any set of nodes, symmetric or one-way.
//! With no faults set it is also the benchmarks' in-process transport.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::history::HistoryChunk;
use crate::inbox::{ElectError, Inbox};
use crate::transport::{PeerStatus, RpcError, Transport};
use crate::{Node, NodeId, TypeConfig};

/// Per-mille probabilities and delays applied to every message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// A request or a response is lost.
    pub drop_per_mille: u32,
    /// A request is delivered a second time, later.
    pub duplicate_per_mille: u32,
    /// Each message waits a delay drawn from `0..=delay_ms_max`.
    pub delay_ms_max: u64,
}

/// Messages the network handled, by fate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounts {
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub refused: u64,
}

struct NetState {
    rng: SmallRng,
    nodes: BTreeMap<NodeId, Inbox>,
    /// Old id → the id of the node now at its address (a damaged node's
    /// successor, see `Node::rejoin`).
    aliases: BTreeMap<NodeId, NodeId>,
    /// (from, to): messages from `from` to `to` are refused.
    blocked: BTreeSet<(NodeId, NodeId)>,
    faults: LinkFaults,
    counts: NetCounts,
}

/// The network; shared by every node's transport.
pub struct SimNet {
    state: Mutex<NetState>,
}

/// What happens to one request.
struct Fate {
    request_delay: Duration,
    dropped: bool,
    duplicate_delay: Option<Duration>,
    response_delay: Duration,
    response_dropped: bool,
}

impl SimNet {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(NetState {
                rng: SmallRng::seed_from_u64(seed),
                nodes: BTreeMap::new(),
                aliases: BTreeMap::new(),
                blocked: BTreeSet::new(),
                faults: LinkFaults::default(),
                counts: NetCounts::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Makes a node reachable.
    pub fn attach(&self, node: &Node) {
        self.lock().nodes.insert(node.id, node.inbox());
    }

    /// Requests to `old` reach node `new` from now on, as when `new` runs
    /// where `old` did: only status requests are answered (by `new`, as
    /// itself); Raft's are refused.
    pub fn alias(&self, old: NodeId, new: NodeId) {
        self.lock().aliases.insert(old, new);
    }

    /// Makes a node unreachable (it crashed or stopped).
    pub fn detach(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts every link between the groups, both ways; links inside a group
    /// and to nodes in no group are untouched.
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        let mut state = self.lock();
        for (at, group) in groups.iter().enumerate() {
            for other in &groups[at + 1..] {
                for &a in group {
                    for &b in other {
                        state.blocked.insert((a, b));
                        state.blocked.insert((b, a));
                    }
                }
            }
        }
    }

    /// Cuts one direction of one link.
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    pub fn set_faults(&self, faults: LinkFaults) {
        self.lock().faults = faults;
    }

    pub fn counts(&self) -> NetCounts {
        self.lock().counts
    }

    /// The transport node `from` sends through.
    pub fn transport(self: &Arc<Self>, from: NodeId) -> Arc<SimTransport> {
        Arc::new(SimTransport {
            net: self.clone(),
            from,
        })
    }

    fn fate(&self, from: NodeId, to: NodeId, any_identity: bool) -> Result<(Fate, Inbox), ()> {
        let mut state = self.lock();
        let state = &mut *state;
        let reachable = !state.blocked.contains(&(from, to));
        let at = state.aliases.get(&to).copied().unwrap_or(to);
        let Some(raft) = state
            .nodes
            .get(&at)
            .filter(|inbox| reachable && (any_identity || inbox.id() == to))
            .cloned()
        else {
            state.counts.refused += 1;
            return Err(());
        };
        let faults = state.faults;
        let rng = &mut state.rng;
        let mut delay = || Duration::from_millis(rng.gen_range(0..=faults.delay_ms_max));
        let (request_delay, response_delay, second) = (delay(), delay(), delay());
        let mut chance = |per_mille: u32| per_mille > 0 && state.rng.gen_range(0..1000) < per_mille;
        let dropped = chance(faults.drop_per_mille);
        let duplicated = !dropped && chance(faults.duplicate_per_mille);
        // A response is lost on its own, or because the way back is cut.
        let response_dropped = chance(faults.drop_per_mille) || state.blocked.contains(&(to, from));
        match (dropped, duplicated) {
            (true, _) => state.counts.dropped += 1,
            (false, true) => {
                state.counts.delivered += 1;
                state.counts.duplicated += 1;
            }
            (false, false) => state.counts.delivered += 1,
        }
        Ok((
            Fate {
                request_delay,
                dropped,
                duplicate_delay: duplicated.then_some(request_delay + second),
                response_delay,
                response_dropped,
            },
            raft,
        ))
    }

    /// Sends one request: the shared path of the three calls.
    async fn call<Req, Resp, E, F, Fut>(
        &self,
        (from, to, any_identity): (NodeId, NodeId, bool),
        request: Req,
        timeout: Duration,
        deliver: F,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        E: std::error::Error + Send + 'static,
        F: Fn(Inbox, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RaftError<NodeId, E>>> + Send + 'static,
    {
        let unreachable = |why: &str| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why.to_string())));
        let Ok((fate, raft)) = self.fate(from, to, any_identity) else {
            return Err(unreachable("no route to the node"));
        };
        let deliver = Arc::new(deliver);
        if let Some(later) = fate.duplicate_delay {
            let (raft, request, deliver) = (raft.clone(), request.clone(), deliver.clone());
            tokio::spawn(async move {
                tokio::time::sleep(later).await;
                let _ = deliver(raft, request).await;
            });
        }
        let exchange = async {
            pause(fate.request_delay).await;
            if fate.dropped {
                std::future::pending::<()>().await;
            }
            let result = deliver(raft, request).await;
            pause(fate.response_delay).await;
            if fate.response_dropped {
                std::future::pending::<()>().await;
            }
            result
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(RaftError::Fatal(fatal))) => Err(RPCError::Network(NetworkError::new(&fatal))),
            Ok(Err(error)) => Err(RPCError::RemoteError(RemoteError::new(to, error))),
            Err(_) => Err(unreachable("no answer before the timeout")),
        }
    }
}

/// A request the target refused for a reason of its own (not Raft's).
fn refused(reason: String) -> RpcError {
    RPCError::Network(NetworkError::new(&std::io::Error::other(reason)))
}

/// Waits `delay`; a zero delay does not wait at all (tokio would round a
/// zero sleep up to its next 1 ms timer tick, which a network with no
/// faults must not add to every message).
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// One node's side of the network.
pub struct SimTransport {
    net: Arc<SimNet>,
    from: NodeId,
}

impl Transport for SimTransport {
    async fn append_entries(
        &self,
        target: NodeId,
        _node: &BasicNode,
        request: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        self.net
            .call(
                (self.from, target, false),
                request,
                timeout,
                |inbound, request| async move { inbound.append_entries(request).await },
            )
            .await
    }

    async fn vote(
        &self,
        target: NodeId,
        _node: &BasicNode,
        request: VoteRequest<NodeId>,
        timeout: Duration,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        self.net
            .call(
                (self.from, target, false),
                request,
                timeout,
                |inbound, request| async move { inbound.vote(request).await },
            )
            .await
    }

    async fn elect(&self, target: NodeId, _node: &BasicNode, timeout: Duration) -> Result<(), RpcError> {
        self.net
            .call((self.from, target, false), (), timeout, |inbound, ()| async move {
                match inbound.elect().await {
                    Err(ElectError::Fatal(fatal)) => Err(RaftError::Fatal(fatal)),
                    refused => Ok(refused.map_err(|error| error.to_string())),
                }
            })
            .await?
            .map_err(refused)
    }

    async fn status(&self, target: NodeId, _node: &BasicNode, timeout: Duration) -> Result<PeerStatus, RpcError> {
        self.net
            .call((self.from, target, true), (), timeout, |inbound, ()| async move {
                Ok(inbound.status().map_err(|error| error.to_string()))
            })
            .await?
            .map_err(refused)
    }

    async fn read_history(
        &self,
        target: NodeId,
        _node: &BasicNode,
        range: (u64, u64),
        timeout: Duration,
    ) -> Result<HistoryChunk, RpcError> {
        self.net
            .call(
                (self.from, target, false),
                range,
                timeout,
                |inbound, range| async move { Ok(inbound.read_history(range).map_err(|error| error.to_string())) },
            )
            .await?
            .map_err(refused)
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        _node: &BasicNode,
        request: InstallSnapshotRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.net
            .call(
                (self.from, target, false),
                request,
                timeout,
                |inbound, request| async move { inbound.install_snapshot(request).await },
            )
            .await
    }
}
