//! The tail fence: a node whose log may have lost entries it had
//! acknowledged neither votes nor campaigns until that is safe again.
//!
//! ## Why
//!
//! The engine acknowledges a commit round after its `fdatasync`, but the
//! watermark that proves the round durable is written by the next round
//! (engine `log/recovery.rs`). So a record of the newest round, damaged
//! after it was acknowledged, looks at open exactly like a torn write, and
//! the engine cuts it (`TailCase::TornTail`). If those entries had been
//! acknowledged to a leader and committed, this node's log has gone
//! backwards. A vote from it could then elect a leader that lacks a
//! committed entry: in a three-node cluster, the one node that never had
//! the entry and this one are a majority. (openraft also treats a reverted
//! follower log as undefined behaviour.)
//!
//! This is the one case that local checks cannot decide, so the node asks
//! the cluster, as FAST'18's protocol-aware recovery does.
//!
//! ## What a node does when its engine cut a torn tail at open
//!
//! 1. It records the *fence term* F, its vote's term, durably in `RAFT`.
//!    Every entry it ever acknowledged has a term of at most F. A second
//!    crash before the fence lifts keeps it fenced.
//! 2. It moves its vote to F + 1 (for itself, not committed). A leader of
//!    a term up to F, whose idea of what this node holds may be too high,
//!    is refused and steps down; its successor probes this node's log
//!    from scratch.
//! 3. It does not campaign, refuses every vote request, and refuses to be
//!    elected by a hand-off.
//!
//! **Lifted** once its log durably holds an entry (or a snapshot) of a
//! term above F. That entry came from a leader elected after the cut.
//! That leader held every committed entry, and this node's log now
//! matches the leader's up to that entry, so it holds them too.
//!
//! **Resolved** when no leader can be elected without fenced nodes (after a
//! power loss on every node under load, for instance). The node asks
//! every voter for its last log id: the voters of its own membership, and
//! of every membership they report. Once all have answered, let M be the
//! greatest. The node then votes only for candidates whose last log id is
//! at least M, and campaigns only if its own is.
//!
//! Why that is safe: a committed entry was acknowledged by a majority, and
//! damaged nodes are a minority, so an undamaged node holding the entry
//! answered, and M is at least the entry's log id. By Raft's log matching,
//! a candidate at least as up to date as M holds the entry.
//!
//! Why every voter: a partition is not a fault. Any voter not heard from
//! may be the one undamaged holder of a committed entry. One exception: a
//! voter whose log was found damaged and wiped (its successor, rejoining
//! at its address, says so: `Node::rejoin`) has nothing to say, and is
//! one of the damaged minority. With it counted, the argument above
//! still holds as long as the damaged nodes, known or not, are a
//! minority.
//!
//! ## Never resume leadership
//!
//! openraft 0.9 restores a node whose vote was committed for itself as
//! leader at once, in the same term. But a leader's own entries may have
//! been lost unsynced in the crash after its followers had stored and
//! committed them. Resumed in that term, it would write different entries
//! under the same log ids, and followers would take them for the ones
//! they hold. So at open such a vote is kept but marked uncommitted: the
//! node restarts as a follower.
//!
//! ## Cost
//!
//! A node restarted after a torn tail makes the current leader step down
//! (one election), and cannot vote until a new leader has reached it. A
//! cluster where a majority of the voters are fenced needs every voter up
//! to resolve.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{BasicNode, LogId, ServerState, Vote};
use tokio::task::JoinSet;

use crate::log_store::LogStore;
use crate::meta::RaftMeta;
use crate::node::PeerCall;
use crate::transport::PeerStatus;
use crate::{NodeId, Raft};

/// How often a fenced node checks whether its fence can lift, and asks
/// the voters again.
pub const FENCE_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// How long a voter may take to report its last log id.
pub const FENCE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most voters a fenced node asks, over every membership it hears of.
pub const FENCE_VOTERS_MAX: usize = 64;

/// Whether a node may vote and campaign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FenceState {
    /// Not fenced.
    #[default]
    Open,
    /// Fenced at `term`: no votes, no campaign.
    Fenced { term: u64 },
    /// Fenced at `term`, and every voter has reported its last log id:
    /// votes and a campaign only for a last log id of at least `least`.
    Resolved { term: u64, least: Option<LogId<NodeId>> },
}

impl FenceState {
    pub fn is_fenced(&self) -> bool {
        *self != FenceState::Open
    }

    /// Whether a vote request from a candidate whose log ends at
    /// `candidate_last` may be handed to Raft (which then decides as usual).
    pub fn admits(&self, candidate_last: Option<LogId<NodeId>>) -> bool {
        match *self {
            FenceState::Open => true,
            FenceState::Fenced { .. } => false,
            FenceState::Resolved { least, .. } => candidate_last >= least,
        }
    }

    fn term(&self) -> Option<u64> {
        match *self {
            FenceState::Open => None,
            FenceState::Fenced { term } | FenceState::Resolved { term, .. } => Some(term),
        }
    }
}

/// What to store in `RAFT` at open, before Raft starts, given whether the
/// engine cut a torn tail (see the module documentation).
pub fn at_open(mut meta: RaftMeta, id: NodeId, tail_cut: bool) -> RaftMeta {
    let vote = meta.vote.unwrap_or_default();
    if tail_cut {
        let term = vote.leader_id.term;
        meta.fence = Some(meta.fence.map_or(term, |fenced| fenced.max(term)));
        meta.vote = Some(Vote::new(term + 1, id));
    } else if vote.committed && vote.leader_id.voted_for == Some(id) {
        meta.vote = Some(Vote::new(vote.leader_id.term, id));
    }
    meta
}

/// The node's fence, shared by its inbox and its guard task.
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<Mutex<FenceState>>);

impl Fence {
    pub fn new(state: FenceState) -> Self {
        Self(Arc::new(Mutex::new(state)))
    }

    pub fn get(&self) -> FenceState {
        *self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn set(&self, state: FenceState) {
        *self.0.lock().unwrap_or_else(|poison| poison.into_inner()) = state;
    }

    /// Whether the node may start an election now, its log ending at
    /// `own_last`.
    pub fn may_campaign(&self, own_last: Option<LogId<NodeId>>) -> bool {
        self.get().admits(own_last)
    }
}

/// Runs while the node is fenced: lifts the fence when the log allows
/// it, and otherwise asks the voters, resolving the fence when all have
/// answered. Ends when the fence lifts or Raft stops.
pub(crate) async fn guard(id: NodeId, raft: Raft, log_store: LogStore, fence: Fence, probe: PeerCall<PeerStatus>) {
    loop {
        if raft.metrics().borrow().state == ServerState::Shutdown {
            return;
        }
        let Some(term) = fence.get().term() else { return };
        if log_store.durable_last_term().is_some_and(|last| last > term) {
            match log_store.lift_fence() {
                Ok(()) => {
                    fence.set(FenceState::Open);
                    raft.runtime_config().elect(true);
                    tracing::info!(node = id, term, "fence lifted: the log holds an entry of a later term");
                    return;
                }
                Err(error) => tracing::error!(node = id, %error, "cannot store the lifted fence"),
            }
        } else if let Some(least) = survey(id, &raft, &log_store, &probe).await {
            let resolved = FenceState::Resolved { term, least };
            if fence.get() != resolved {
                tracing::info!(node = id, term, least = ?least, "fence resolved: every voter answered");
            }
            fence.set(resolved);
            raft.runtime_config()
                .elect(resolved.admits(log_store.last_log_id().ok().flatten()));
        }
        tokio::time::sleep(FENCE_CHECK_INTERVAL).await;
    }
}

/// Asks every voter (of this node's membership and of every membership
/// they report) for its last log id; the greatest, if all answered.
async fn survey(
    id: NodeId,
    raft: &Raft,
    log_store: &LogStore,
    probe: &PeerCall<PeerStatus>,
) -> Option<Option<LogId<NodeId>>> {
    let membership = raft.metrics().borrow().membership_config.clone();
    let mut to_ask: BTreeMap<NodeId, BasicNode> = voters(membership.membership());
    let mut asked = BTreeSet::from([id]);
    let mut greatest = log_store.last_log_id().ok()?;
    loop {
        let round: Vec<(NodeId, BasicNode)> = std::mem::take(&mut to_ask)
            .into_iter()
            .filter(|(voter, _)| !asked.contains(voter))
            .collect();
        if round.is_empty() {
            return Some(greatest);
        }
        if asked.len() + round.len() > FENCE_VOTERS_MAX {
            tracing::warn!(
                node = id,
                "fence: more than {FENCE_VOTERS_MAX} voters reported; not resolved"
            );
            return None;
        }
        let mut calls = JoinSet::new();
        for (voter, node) in round {
            asked.insert(voter);
            let call = probe(voter, node, FENCE_PROBE_TIMEOUT, ());
            calls.spawn(async move { (voter, call.await) });
        }
        while let Some(joined) = calls.join_next().await {
            let (voter, answer) = joined.ok()?;
            match answer {
                Ok(status) if status.id == voter => {
                    greatest = greatest.max(status.last_log_id);
                    to_ask.extend(status.voters);
                }
                // The voter's log is gone: its successor (wiped, rejoining)
                // answers at its address. It counts among the faulty
                // minority; there is nothing of it to wait for.
                Ok(status) if status.replaces == Some(voter) => {
                    tracing::info!(
                        node = id,
                        voter,
                        successor = status.id,
                        "fence: a voter's log is known lost"
                    );
                }
                Ok(status) => {
                    tracing::debug!(node = id, voter, answered = status.id, "fence: another node answered");
                    return None;
                }
                Err(error) => {
                    tracing::debug!(node = id, voter, %error, "fence: a voter did not answer");
                    return None;
                }
            }
        }
    }
}

/// The voters of a membership (both configurations of a joint one), with
/// their addresses.
pub(crate) fn voters(membership: &openraft::Membership<NodeId, BasicNode>) -> BTreeMap<NodeId, BasicNode> {
    membership
        .voter_ids()
        .filter_map(|voter| membership.get_node(&voter).map(|node| (voter, node.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::log_id;

    #[test]
    fn a_cut_fences_at_the_vote_term_and_moves_the_vote_past_it() {
        let meta = RaftMeta {
            vote: Some(Vote::new_committed(7, 2)),
            ..RaftMeta::default()
        };
        let fenced = at_open(meta, 3, true);
        assert_eq!(fenced.fence, Some(7));
        assert_eq!(fenced.vote, Some(Vote::new(8, 3)));
        assert!(!fenced.vote.unwrap().committed);
        // A second cut before the fence lifted keeps the later term.
        let again = at_open(fenced, 3, true);
        assert_eq!(again.fence, Some(8));
        assert_eq!(again.vote, Some(Vote::new(9, 3)));
        // A node that never voted.
        assert_eq!(at_open(RaftMeta::default(), 4, true).fence, Some(0));
    }

    #[test]
    fn a_leader_restarts_as_a_follower_and_others_keep_their_vote() {
        let leader = RaftMeta {
            vote: Some(Vote::new_committed(5, 1)),
            ..RaftMeta::default()
        };
        let restarted = at_open(leader, 1, false);
        assert_eq!(restarted.vote, Some(Vote::new(5, 1)));
        assert_eq!(restarted.fence, None);
        // A follower of that leader keeps its committed vote.
        assert_eq!(at_open(leader, 2, false), leader);
        // A fence stays until it is lifted.
        let fenced = RaftMeta {
            fence: Some(4),
            ..leader
        };
        assert_eq!(at_open(fenced, 2, false).fence, Some(4));
    }

    #[test]
    fn a_fenced_node_admits_only_candidates_at_least_as_up_to_date_as_every_voter() {
        assert!(FenceState::Open.admits(None));
        assert!(!FenceState::Fenced { term: 3 }.admits(Some(log_id(9, 100))));
        let resolved = FenceState::Resolved {
            term: 3,
            least: Some(log_id(3, 40)),
        };
        assert!(resolved.admits(Some(log_id(3, 40))));
        assert!(resolved.admits(Some(log_id(4, 12))));
        assert!(!resolved.admits(Some(log_id(3, 39))));
        assert!(!resolved.admits(Some(log_id(2, 90))));
        assert!(!resolved.admits(None));
        let empty = FenceState::Resolved { term: 0, least: None };
        assert!(empty.admits(None));
    }
}
