//! `farmlog.v1.Admin` (landlord admins only) and `farmlog.v1.Sessions`.

use std::collections::BTreeSet;
use std::time::Duration;

use farmlog_engine::state::command::CommandBody;
use farmlog_engine::state::outcome::{Effect, Verdict};
use farmlog_replica::{MembershipError, NodeId};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tonic::{Request, Response, Status};

use crate::auth::Op;
use crate::context::Context;
use crate::pb::{self, admin_server::Admin, sessions_server::Sessions};
use crate::status::invalid;

/// A hand-off that names no timeout gets this long.
pub const HAND_OFF_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// The longest hand-off timeout a request may ask for.
pub const HAND_OFF_TIMEOUT_MAX: Duration = Duration::from_secs(120);
/// How long a snapshot request waits for the snapshot to be built.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);
/// Most nodes one membership request may name.
pub const MEMBERSHIP_IDS_MAX: usize = farmlog_replica::entry::MEMBERSHIP_NODES_MAX;

pub struct AdminService {
    context: Context,
}

impl AdminService {
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    fn nodes(&self) -> Vec<pb::NodeInfo> {
        let metrics = self.context.node().raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| pb::NodeInfo {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    fn ids(ids: &[u64]) -> Result<BTreeSet<NodeId>, Status> {
        if ids.is_empty() {
            return Err(invalid("ids", "name at least one node"));
        }
        if ids.len() > MEMBERSHIP_IDS_MAX {
            return Err(invalid("ids", format!("at most {MEMBERSHIP_IDS_MAX}")));
        }
        Ok(ids.iter().copied().collect())
    }

    fn membership_error(&self, error: MembershipError) -> Status {
        match error {
            MembershipError::NotLeader { leader } => {
                let address = leader.and_then(|leader| self.context.address_of(leader));
                let mut status = Status::unavailable(format!("{error}"));
                if let Some(value) = address.and_then(|address| address.parse().ok()) {
                    status.metadata_mut().insert(crate::context::LEADER_HEADER, value);
                }
                status
            }
            MembershipError::NotVoter { .. } | MembershipError::Refused { .. } => {
                Status::failed_precondition(error.to_string())
            }
            MembershipError::TimedOut { .. } => Status::deadline_exceeded(error.to_string()),
        }
    }
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, request: Request<pb::ClusterStatusRequest>) -> Result<Response<pb::ClusterStatus>, Status> {
        self.context.caller(&request, Op::Admin)?;
        let node = self.context.node();
        let metrics = node.raft.metrics().borrow().clone();
        let (log_time_ms, state_hash) = node.read_local(|applier| {
            let hash = applier.state.hash();
            let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
            (applier.state.log_time_ms(), hex)
        });
        Ok(Response::new(pb::ClusterStatus {
            node_id: node.id,
            role: role(metrics.state).to_string(),
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            leader_address: metrics
                .current_leader
                .and_then(|leader| self.context.address_of(leader))
                .unwrap_or_default(),
            nodes: self.nodes(),
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|applied| applied.index),
            snapshot_index: metrics.snapshot.map(|snapshot| snapshot.index),
            cluster_schema: u32::from(node.cluster_schema()),
            fenced: node.fence_state().is_fenced(),
            log_time_ms,
            state_hash,
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.context.caller(&request, Op::Admin)?;
        let pb::AddLearnerRequest { id, address } = request.into_inner();
        if address.is_empty() || address.len() > farmlog_replica::entry::NODE_ADDRESS_BYTES_MAX {
            return Err(invalid(
                "address",
                format!(
                    "host:port of 1..={} bytes",
                    farmlog_replica::entry::NODE_ADDRESS_BYTES_MAX
                ),
            ));
        }
        self.context
            .node()
            .add_learner(id, BasicNode { addr: address })
            .await
            .map_err(|error| self.membership_error(error))?;
        Ok(Response::new(pb::MembershipResponse { nodes: self.nodes() }))
    }

    async fn promote(&self, request: Request<pb::PromoteRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        self.context.caller(&request, Op::Admin)?;
        let ids = Self::ids(&request.get_ref().ids)?;
        self.context
            .node()
            .change_voters(ChangeMembers::AddVoterIds(ids))
            .await
            .map_err(|error| self.membership_error(error))?;
        Ok(Response::new(pb::MembershipResponse { nodes: self.nodes() }))
    }

    async fn remove(&self, request: Request<pb::RemoveRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        self.context.caller(&request, Op::Admin)?;
        let ids = Self::ids(&request.get_ref().ids)?;
        let voters: BTreeSet<NodeId> = {
            let metrics = self.context.node().raft.metrics().borrow().clone();
            metrics.membership_config.membership().voter_ids().collect()
        };
        let (remove_voters, remove_learners): (BTreeSet<_>, BTreeSet<_>) =
            ids.into_iter().partition(|id| voters.contains(id));
        let node = self.context.node();
        if !remove_voters.is_empty() {
            node.change_voters(ChangeMembers::RemoveVoters(remove_voters))
                .await
                .map_err(|error| self.membership_error(error))?;
        }
        if !remove_learners.is_empty() {
            node.change_voters(ChangeMembers::RemoveNodes(remove_learners))
                .await
                .map_err(|error| self.membership_error(error))?;
        }
        Ok(Response::new(pb::MembershipResponse { nodes: self.nodes() }))
    }

    async fn hand_off(&self, request: Request<pb::HandOffRequest>) -> Result<Response<pb::HandOffResponse>, Status> {
        self.context.caller(&request, Op::Admin)?;
        let pb::HandOffRequest { target, timeout_ms } = request.into_inner();
        let timeout = match timeout_ms {
            0 => HAND_OFF_TIMEOUT_DEFAULT,
            ms => Duration::from_millis(ms),
        };
        if timeout > HAND_OFF_TIMEOUT_MAX {
            return Err(invalid(
                "timeout_ms",
                format!("at most {} ms", HAND_OFF_TIMEOUT_MAX.as_millis()),
            ));
        }
        self.context
            .node()
            .hand_off(target, timeout)
            .await
            .map_err(|error| self.membership_error(error))?;
        Ok(Response::new(pb::HandOffResponse {}))
    }

    async fn snapshot(&self, request: Request<pb::SnapshotRequest>) -> Result<Response<pb::SnapshotResponse>, Status> {
        self.context.caller(&request, Op::Admin)?;
        let raft = &self.context.node().raft;
        let applied = raft.metrics().borrow().last_applied;
        raft.trigger()
            .snapshot()
            .await
            .map_err(|error| Status::unavailable(format!("the snapshot could not be started: {error}")))?;
        let built = raft
            .wait(Some(SNAPSHOT_WAIT))
            .snapshot(applied.unwrap_or_default(), "snapshot requested by the Admin service")
            .await;
        match built {
            Ok(metrics) => Ok(Response::new(pb::SnapshotResponse {
                snapshot_index: metrics.snapshot.map(|snapshot| snapshot.index),
            })),
            Err(error) => Err(Status::deadline_exceeded(format!(
                "the snapshot is not built yet: {error}"
            ))),
        }
    }

    async fn scrub_report(
        &self,
        request: Request<pb::ScrubReportRequest>,
    ) -> Result<Response<pb::ScrubReportResponse>, Status> {
        self.context.caller(&request, Op::Admin)?;
        let status = self.context.node().scrub_status();
        Ok(Response::new(pb::ScrubReportResponse {
            passes: status.passes,
            bytes_checked: status.bytes,
            records_checked: status.records,
            damage: status.damage.unwrap_or_default(),
        }))
    }
}

pub struct SessionsService {
    context: Context,
}

impl SessionsService {
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

#[tonic::async_trait]
impl Sessions for SessionsService {
    async fn open(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let caller = self.context.caller(&request, Op::OpenSession)?;
        let (_, outcome) = self.context.applied(&caller, None, CommandBody::OpenSession).await?;
        match outcome.verdict {
            Verdict::Applied(Effect::SessionOpened { client_id }) => {
                Ok(Response::new(pb::OpenSessionResponse { client_id }))
            }
            other => Err(Status::internal(format!("opening a session applied as {other:?}"))),
        }
    }
}
