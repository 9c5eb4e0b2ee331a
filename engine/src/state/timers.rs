//! Time-driven work: an index of timers by due log time.
//!
//! apply never reads a clock. Log time advances with each command (the
//! maximum of the previous log time and the proposer's timestamp) and, as
//! it does, the timers that fell due fire, in (due time, creation) order.
//! At most [`TIMERS_FIRED_PER_COMMAND_MAX`] fire per command, so the work
//! one command does stays bounded; the rest fire with the next commands
//! (the proposer's Ticks keep them coming when nothing else does).
//!
//! Timers are lazy: the owner of a timer re-checks, when it fires, whether
//! it still applies, instead of cancelling it, so that a heartbeat costs no
//! index update.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use super::table::{Name, Slot};

/// Most timers that fire while one command is applied.
pub const TIMERS_FIRED_PER_COMMAND_MAX: usize = 256;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// Re-check a component's liveness.
    Liveness { component: Slot },
    /// Expire a client session that has been idle.
    SessionIdle { client_id: u64 },
    /// Forget an idempotency key whose window closed.
    Idempotency { tenant: Slot, key: Name },
    /// A delivery's visibility timeout or retry time: if it is still in
    /// the same attempt, it goes back to its spool (or is parked).
    Delivery { delivery: u32, attempt: u16 },
    /// A back-channel message's expiry: expire its open deliveries, a
    /// bounded number per firing.
    Expiry { message: u32 },
    /// A denied bulk transfer's retry time.
    TransferRetry { tenant: Slot, request: Name },
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Timers {
    /// (due log time in ms, creation number) → timer.
    due: BTreeMap<(u64, u64), Timer>,
    created: u64,
}

impl Timers {
    pub fn schedule(&mut self, due_ms: u64, timer: Timer) {
        self.created += 1;
        self.due.insert((due_ms, self.created), timer);
    }

    /// Takes the next timer due at or before `now_ms`, with its due time.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<(u64, Timer)> {
        let entry = self.due.first_entry()?;
        if entry.key().0 > now_ms {
            return None;
        }
        let ((due_ms, _), timer) = entry.remove_entry();
        Some((due_ms, timer))
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}
