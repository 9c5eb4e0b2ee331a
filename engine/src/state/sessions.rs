//! Client sessions, as Raft client sessions: a retried command returns its
//! first outcome and is never applied twice.
//!
//! A client opens a session ([`super::command::CommandBody::OpenSession`])
//! and numbers its commands. Each session keeps the verdicts of its last
//! [`SESSION_OUTCOMES_MAX`] sequence numbers. A command whose number is
//! kept gets that verdict back; one older than every kept number that may
//! have been applied is refused, never re-applied. Sessions expire after
//! [`SESSION_IDLE_MS`] of log time without a command, and the least
//! recently used one is evicted when [`SESSIONS_MAX`] are open; a command
//! in an unknown session is refused, so it cannot apply twice either.
//!
//! A session belongs to the tenant and principal that opened it: a command
//! of anyone else that names its client id is refused as if the session did
//! not exist (client ids are dense, so they are easy to guess).

use std::collections::{BTreeMap, BTreeSet};

use rkyv::{Archive, Deserialize, Serialize};

use super::outcome::{Rejection, Verdict};
use super::table::{Name, Slot};

/// Most open sessions.
pub const SESSIONS_MAX: usize = 16_384;
/// Verdicts kept per session.
pub const SESSION_OUTCOMES_MAX: usize = 64;
/// Log time without a command after which a session expires: one hour.
pub const SESSION_IDLE_MS: u64 = 3600 * 1000;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Sessions {
    open: BTreeMap<u64, Session>,
    /// (last active log time, client id), to find the least recently used.
    by_activity: BTreeSet<(u64, u64)>,
    opened: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
struct Session {
    tenant: Slot,
    principal: Name,
    last_active_ms: u64,
    /// Kept verdicts, by sequence number.
    kept: BTreeMap<u64, Verdict>,
    /// The highest sequence number whose verdict was dropped (0: none).
    dropped_through: u64,
}

/// What to do with a command that carries a session.
pub enum Admission {
    /// Apply it, then [`Sessions::record`] its verdict.
    Apply,
    /// A retry: this was its verdict.
    Retried(Verdict),
    Refused(Rejection),
}

impl Sessions {
    /// Opens a session and returns its client id (dense, from 1). When
    /// full, the least recently active session is evicted first; its id is
    /// returned too, as expired.
    pub fn open(&mut self, now_ms: u64, tenant: Slot, principal: &str) -> (u64, Option<u64>) {
        let evicted = match self.open.len() >= SESSIONS_MAX {
            true => self.by_activity.first().map(|&(_, client)| client),
            false => None,
        };
        if let Some(client) = evicted {
            self.close(client);
        }
        self.opened += 1;
        let client_id = self.opened;
        self.open.insert(
            client_id,
            Session {
                tenant,
                principal: Name::from(principal),
                last_active_ms: now_ms,
                kept: BTreeMap::new(),
                dropped_through: 0,
            },
        );
        self.by_activity.insert((now_ms, client_id));
        (client_id, evicted)
    }

    /// Decides what to do with a command of `owner` (its tenant, if
    /// registered, and principal) in session `client_id`.
    pub fn admit(&self, client_id: u64, sequence: u64, owner: Option<(Slot, &str)>) -> Admission {
        let session = self.open.get(&client_id);
        let owned = |session: &&Session| owner == Some((session.tenant, session.principal.as_str()));
        let Some(session) = session.filter(owned) else {
            return Admission::Refused(Rejection::SessionUnknown);
        };
        if let Some(verdict) = session.kept.get(&sequence) {
            return Admission::Retried(verdict.clone());
        }
        if sequence <= session.dropped_through {
            let oldest_kept = session
                .kept
                .keys()
                .next()
                .copied()
                .unwrap_or(session.dropped_through + 1);
            return Admission::Refused(Rejection::SequenceTooOld { oldest_kept });
        }
        Admission::Apply
    }

    /// Keeps the verdict of an applied command and marks the session active.
    pub fn record(&mut self, client_id: u64, sequence: u64, verdict: Verdict, now_ms: u64) {
        let session = self.open.get_mut(&client_id).expect("admit found the session");
        session.kept.insert(sequence, verdict);
        if session.kept.len() > SESSION_OUTCOMES_MAX {
            let (oldest, _) = session.kept.pop_first().expect("more than the maximum kept");
            session.dropped_through = session.dropped_through.max(oldest);
        }
        self.by_activity.remove(&(session.last_active_ms, client_id));
        session.last_active_ms = now_ms;
        self.by_activity.insert((now_ms, client_id));
    }

    /// When the session's idle timer fires at `now_ms`: expires the session
    /// if it has been idle long enough, or says when to check again.
    pub fn check_idle(&mut self, client_id: u64, now_ms: u64) -> IdleCheck {
        let Some(session) = self.open.get(&client_id) else {
            return IdleCheck::Gone;
        };
        let due_ms = session.last_active_ms.saturating_add(SESSION_IDLE_MS);
        if due_ms > now_ms {
            return IdleCheck::Later(due_ms);
        }
        self.close(client_id);
        IdleCheck::Expired
    }

    fn close(&mut self, client_id: u64) {
        if let Some(session) = self.open.remove(&client_id) {
            self.by_activity.remove(&(session.last_active_ms, client_id));
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

pub enum IdleCheck {
    Gone,
    Later(u64),
    Expired,
}
