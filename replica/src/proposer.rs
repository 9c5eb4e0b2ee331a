//! Packing many clients' commands into one Raft entry.
//!
//! openraft 0.9 keeps one log append in flight per node, so group commit
//! inside the store cannot merge separate writes: throughput comes from
//! packing. Clients hand their commands to the [`Proposer`] through a
//! bounded queue; its task takes whatever is waiting (at most
//! [`ENTRY_COMMANDS_MAX`] commands and the batch byte bound), frames it as
//! one command batch, proposes it as one entry, and gives each client the
//! outcome of its own command once the entry is committed and applied. At
//! most [`ENTRIES_IN_FLIGHT_MAX`] entries are proposed and not yet applied
//! at once; commands arriving meanwhile wait and go together in the next.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use farmlog_engine::state::batch::{BatchBuilder, EncodedCommand};
use farmlog_engine::state::outcome::Outcome;
use farmlog_engine::state::Place;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::state_machine::Applier;
use crate::{NodeId, Proposal, Raft};

/// Commands waiting for the proposer, at most; further clients wait.
pub const QUEUE_COMMANDS_MAX: usize = 16 << 10;
/// Most commands packed into one entry.
pub const ENTRY_COMMANDS_MAX: usize = 4096;
/// Entries proposed and not yet applied, at most.
pub const ENTRIES_IN_FLIGHT_MAX: usize = 4;
/// Once this node stops leading, an entry's outcome is awaited at most
/// this much longer before its clients are told it is unknown: openraft
/// 0.9 never answers a write whose entry a snapshot installed here
/// covered, and such a write must not hold its slot (or its clients)
/// forever.
pub const OUTCOME_WAIT_AFTER_STEP_DOWN: Duration = Duration::from_secs(10);

/// Why a command has no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; nothing was written. `leader` is the
    /// leader this node knows of, if any.
    #[error("this node is not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The node stopped before the outcome was known: the command may or
    /// may not be in the log. Retrying with a client session applies it
    /// at most once.
    #[error("the outcome is unknown: {reason}")]
    Unknown { reason: String },
    /// The node is shutting down; nothing was written.
    #[error("the node is shutting down")]
    Stopped,
    /// The command does not fit in an entry on its own.
    #[error("the command is too large for one entry")]
    TooLarge,
    /// The disk is nearly full: client writes are refused until space
    /// returns; nothing was written.
    #[error("the disk is nearly full ({available_bytes} bytes free; client writes need {needed_bytes}); nothing was written")]
    DiskNearlyFull { available_bytes: u64, needed_bytes: u64 },
    /// The command is written in a schema version the cluster has not
    /// moved to yet (see `crate::schema`); nothing was written.
    #[error("the command is in schema version {command}, but the cluster is still at {cluster}")]
    SchemaNotEnabled { command: u16, cluster: u16 },
}

/// Refuses a command of a schema version above the cluster's.
pub fn check_schema(command: u16, cluster: u16) -> Result<(), ProposeError> {
    match command <= cluster {
        true => Ok(()),
        false => Err(ProposeError::SchemaNotEnabled { command, cluster }),
    }
}

struct Pending {
    command: EncodedCommand,
    reply: oneshot::Sender<Result<(Place, Outcome), ProposeError>>,
}

/// The handle clients propose through; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
    /// The applied state: its cluster schema version gates commands.
    applied: Arc<RwLock<Applier>>,
    /// 0, or 1 + the node leadership is being handed to: while set, new
    /// commands are refused with that node as the leader to ask.
    handing_to: Arc<AtomicU64>,
    stats: Arc<ProposerStats>,
}

/// What the proposer has packed since start (for metrics).
#[derive(Debug, Default)]
pub struct ProposerStats {
    /// Entries proposed.
    pub entries: AtomicU64,
    /// Commands packed into them.
    pub commands: AtomicU64,
}

impl Proposer {
    /// Starts the proposer's task on the current runtime.
    pub fn start(raft: Raft, applied: Arc<RwLock<Applier>>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_COMMANDS_MAX);
        let stats = Arc::new(ProposerStats::default());
        tokio::spawn(run(raft, receiver, stats.clone()));
        Self {
            queue,
            applied,
            handing_to: Arc::new(AtomicU64::new(0)),
            stats,
        }
    }

    /// What the proposer has packed since start.
    pub fn stats(&self) -> &ProposerStats {
        &self.stats
    }

    /// Refuses new commands (they are told to ask `target`) until
    /// [`Proposer::resume`]; commands already queued still go.
    pub fn pause(&self, target: NodeId) {
        self.handing_to.store(target.saturating_add(1), Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.handing_to.store(0, Ordering::SeqCst);
    }

    /// Proposes one command; returns where it is in the log (the entry's
    /// index and its slot in the batch) and its outcome, once that entry
    /// is committed and applied here.
    pub async fn propose(&self, command: EncodedCommand) -> Result<(Place, Outcome), ProposeError> {
        self.admit(&command)?;
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending { command, reply })
            .await
            .map_err(|_| ProposeError::Stopped)?;
        outcome.await.map_err(|_| proposer_stopped())?
    }

    /// Proposes several commands together: all are queued (in order, one
    /// after the other) before any outcome is awaited, so they go into as
    /// few entries as the entry bounds allow, and apply in this order
    /// (other clients' commands may land between them). Returns one result
    /// per command, in order; one failing does not stop the others.
    ///
    /// At most [`QUEUE_COMMANDS_MAX`] commands (more would wait for their
    /// own outcomes' queue room; the caller bounds its batches below that).
    pub async fn propose_many(&self, commands: Vec<EncodedCommand>) -> Vec<Result<(Place, Outcome), ProposeError>> {
        assert!(commands.len() <= QUEUE_COMMANDS_MAX);
        let mut waiting = Vec::with_capacity(commands.len());
        for command in commands {
            if let Err(error) = self.admit(&command) {
                waiting.push(Err(error));
                continue;
            }
            let (reply, outcome) = oneshot::channel();
            match self.queue.send(Pending { command, reply }).await {
                Ok(()) => waiting.push(Ok(outcome)),
                Err(_) => waiting.push(Err(ProposeError::Stopped)),
            }
        }
        let mut results = Vec::with_capacity(waiting.len());
        for waited in waiting {
            results.push(match waited {
                Ok(outcome) => outcome.await.unwrap_or_else(|_| Err(proposer_stopped())),
                Err(error) => Err(error),
            });
        }
        results
    }

    /// Whether a command may be queued now: not while handing leadership
    /// over, and not above the cluster's schema version.
    fn admit(&self, command: &EncodedCommand) -> Result<(), ProposeError> {
        let handing_to = self.handing_to.load(Ordering::SeqCst);
        if handing_to != 0 {
            return Err(ProposeError::NotLeader {
                leader: Some(handing_to - 1),
            });
        }
        let cluster = self
            .applied
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .cluster_schema;
        check_schema(command.view().schema_version.to_native(), cluster)
    }
}

/// A command was queued but its reply was dropped: the proposer stopped
/// and the command may or may not be in the log.
fn proposer_stopped() -> ProposeError {
    ProposeError::Unknown {
        reason: "the proposer stopped".into(),
    }
}

async fn run(raft: Raft, mut receiver: mpsc::Receiver<Pending>, stats: Arc<ProposerStats>) {
    let in_flight = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT_MAX));
    let mut carried: Option<Pending> = None;
    loop {
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let first = match carried.take() {
            Some(pending) => pending,
            None => match receiver.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let mut batch = BatchBuilder::new();
        let mut replies = Vec::new();
        if let Err(command) = batch.push(first.command) {
            drop(command);
            let _ = first.reply.send(Err(ProposeError::TooLarge));
            continue;
        }
        replies.push(first.reply);
        while replies.len() < ENTRY_COMMANDS_MAX {
            let Ok(next) = receiver.try_recv() else { break };
            if !batch.fits(&next.command) {
                carried = Some(next);
                break;
            }
            batch
                .push(next.command)
                .unwrap_or_else(|_| unreachable!("checked by fits"));
            replies.push(next.reply);
        }
        stats.entries.fetch_add(1, Ordering::Relaxed);
        stats.commands.fetch_add(replies.len() as u64, Ordering::Relaxed);
        let raft = raft.clone();
        tokio::spawn(async move {
            let mut metrics = raft.metrics();
            let write = raft.client_write(Proposal::from(batch.finish()));
            tokio::pin!(write);
            let stepped_down = async {
                while metrics.borrow_and_update().state == ServerState::Leader {
                    if metrics.changed().await.is_err() {
                        return;
                    }
                }
            };
            let early = tokio::select! {
                result = &mut write => Some(result),
                () = stepped_down => None,
            };
            drop(permit);
            let result = match early {
                Some(result) => result,
                None => match tokio::time::timeout(OUTCOME_WAIT_AFTER_STEP_DOWN, write).await {
                    Ok(result) => result,
                    Err(_) => {
                        let unknown = ProposeError::Unknown {
                            reason: "this node stopped leading and the entry's outcome did not arrive".into(),
                        };
                        for reply in replies {
                            let _ = reply.send(Err(unknown.clone()));
                        }
                        return;
                    }
                },
            };
            answer(result, replies);
        });
    }
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<crate::TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
>;

fn answer(result: WriteResult, replies: Vec<oneshot::Sender<Result<(Place, Outcome), ProposeError>>>) {
    match result {
        Ok(response) => {
            let index = response.data.index;
            for ((reply, outcome), slot) in replies.into_iter().zip(response.data.outcomes).zip(0u32..) {
                let _ = reply.send(Ok((Place { index, slot }, outcome)));
            }
        }
        Err(error) => {
            // openraft answers ForwardToLeader before appending, or after
            // the entry was truncated: either way it is not in the log.
            let error = match error {
                RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => ProposeError::NotLeader {
                    leader: forward.leader_id,
                },
                other => ProposeError::Unknown {
                    reason: other.to_string(),
                },
            };
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_above_the_cluster_schema_is_refused() {
        assert_eq!(check_schema(1, 1), Ok(()));
        assert_eq!(check_schema(1, 2), Ok(()));
        assert_eq!(
            check_schema(2, 1),
            Err(ProposeError::SchemaNotEnabled { command: 2, cluster: 1 })
        );
    }
}
