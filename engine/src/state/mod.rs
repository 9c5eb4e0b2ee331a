//! The event-sourced state machine: projections folded from the log.
//!
//! A log record of type [`crate::kinds::COMMAND_BATCH`] holds a batch of
//! commands ([`batch`]); [`State::apply`] folds one record and returns one
//! [`Outcome`] per command. Nothing else changes the state.
//!
//! Invariants:
//! - **Deterministic.** The same records give byte-identical state,
//!   snapshots and [`State::hash`] on every node and every run: apply reads
//!   no clock and no randomness, and iterates only ordered containers
//!   (`Vec`, `BTreeMap`). The hash maps inside [`table::Table`] are used for
//!   lookups only and are never iterated.
//! - **Log time only.** Log time is the maximum of the previous log time and
//!   each command's proposer timestamp; time-driven transitions fire from
//!   [`timers`] as it advances, a bounded number per command.
//! - **Positions, not payloads.** Every accepted event gets the next dense
//!   global position; the state maps it to its (log index, slot) and the
//!   projections hold positions. Bodies are read from the log, zero-copy
//!   ([`read`]). State memory grows with the number of objects.
//! - **Namespaces.** Every name is looked up in the command's tenant (or,
//!   when a reference says so, among the landlord's hosted components); an
//!   object of another tenant is "not found", exactly like a missing one.
//! - **Two-phase validation.** Stateless checks ([`validate`]) run before
//!   the log and again here; checks that need state run here and turn into
//!   a [`Rejection`]: the command stays in the log, with no effect.

pub mod batch;
pub mod command;
pub mod messages;
pub mod outcome;
pub mod read;
pub mod sessions;
pub mod snapshot;
pub mod spools;
pub mod streams;
pub mod table;
pub mod testing;
pub mod throttle;
pub mod timers;
pub mod topology;
pub mod transfers;
pub mod validate;
pub mod view;

#[cfg(test)]
mod spool_tests;
#[cfg(test)]
mod tests;

use rkyv::{Archive, Deserialize, Serialize};

pub use batch::{encode, Batch, BatchBuilder, BatchError, EncodedCommand};
pub use command::{Command, CommandBody, LANDLORD, SCHEMA_VERSION};
pub use outcome::{AlarmChange, Effect, Fired, Object, Outcome, Rejection, Verdict};
pub use snapshot::SnapshotError;
pub use validate::CommandError;
pub use view::TenantView;

use command::{ArchivedCommand, ArchivedCommandBody};
use sessions::{Admission, IdleCheck, Sessions};
use table::{Name, Slot, Table};
use timers::{Timer, Timers, TIMERS_FIRED_PER_COMMAND_MAX};

/// The tenant slot of the landlord; it exists from the start.
pub const LANDLORD_SLOT: Slot = 0;

/// Where an event lives: the log record and the command's slot in its batch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub index: u64,
    pub slot: u32,
}

/// Why the state machine stopped applying. The state is unchanged by the
/// record that caused it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error("record {index}: {source}")]
    Batch {
        index: u64,
        #[source]
        source: BatchError,
    },
    #[error("record {index} applied out of order: the state has applied through {last_applied}")]
    OutOfOrder { index: u64, last_applied: u64 },
    #[error("record {index} has type {kind}, not a command batch")]
    NotCommands { index: u64, kind: u16 },
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct Tenant {
    pub display_name: String,
    /// Position of the registration (0 for the landlord, who always exists).
    pub registered_at: u64,
}

/// The whole derived state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct State {
    last_applied: u64,
    log_time_ms: u64,
    /// Position p is at `places[p - 1]`.
    places: Vec<Place>,
    tenants: Table<Name, Tenant>,
    sessions: Sessions,
    timers: Timers,
    topology: topology::Topology,
    messages: messages::Messages,
    streams: streams::Streams,
    spools: spools::Spools,
    transfers: transfers::Transfers,
    throttle: throttle::Throttle,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

/// What a projection's apply needs besides its own tables.
pub struct Context<'a> {
    pub tenant: Slot,
    pub now_ms: u64,
    place: Place,
    places: &'a mut Vec<Place>,
    pub timers: &'a mut Timers,
}

impl Context<'_> {
    /// Gives the command's event the next global position.
    pub fn assign_position(&mut self) -> u64 {
        self.places.push(self.place);
        self.places.len() as u64
    }
}

impl State {
    pub fn new() -> Self {
        let mut tenants = Table::default();
        let landlord = tenants.insert(
            Name::from(LANDLORD),
            Tenant {
                display_name: "landlord".into(),
                registered_at: 0,
            },
        );
        debug_assert_eq!(landlord, LANDLORD_SLOT);
        Self {
            last_applied: 0,
            log_time_ms: 0,
            places: Vec::new(),
            tenants,
            sessions: Sessions::default(),
            timers: Timers::default(),
            topology: Default::default(),
            messages: Default::default(),
            streams: Default::default(),
            spools: Default::default(),
            transfers: Default::default(),
            throttle: Default::default(),
        }
    }

    /// The index of the last record applied (0: none).
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    pub fn log_time_ms(&self) -> u64 {
        self.log_time_ms
    }

    /// The number of positions given out: the last event's position.
    pub fn last_position(&self) -> u64 {
        self.places.len() as u64
    }

    /// Where the event at `position` lives.
    pub fn place(&self, position: u64) -> Option<Place> {
        let at = usize::try_from(position.checked_sub(1)?).ok()?;
        self.places.get(at).copied()
    }

    pub fn tenant_slot(&self, tenant: &str) -> Option<Slot> {
        self.tenants.slot(tenant)
    }

    pub fn tenant_name(&self, slot: Slot) -> &str {
        self.tenants.key(slot)
    }

    pub fn tenants(&self) -> impl Iterator<Item = (&str, &Tenant)> {
        self.tenants.iter().map(|(_, name, tenant)| (name.as_str(), tenant))
    }

    pub fn topology(&self) -> &topology::Topology {
        &self.topology
    }

    pub fn messages(&self) -> &messages::Messages {
        &self.messages
    }

    pub fn streams(&self) -> &streams::Streams {
        &self.streams
    }

    pub fn spools(&self) -> &spools::Spools {
        &self.spools
    }

    pub fn transfers(&self) -> &transfers::Transfers {
        &self.transfers
    }

    pub fn throttle(&self) -> &throttle::Throttle {
        &self.throttle
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Records that a record which carries no commands (a Raft membership
    /// change, say) was applied at `index`. A Raft log starts at index 0
    /// with a membership record; skipping it leaves a fresh state as it is.
    pub fn skip(&mut self, index: u64) -> Result<(), ApplyError> {
        if index == 0 && self.last_applied == 0 {
            return Ok(());
        }
        self.check_order(index)?;
        self.last_applied = index;
        Ok(())
    }

    /// Folds one command-batch record. Returns one outcome per command, in
    /// slot order. An error means the record cannot be read by this build;
    /// the state is then unchanged and the node must stop applying.
    pub fn apply(&mut self, index: u64, kind: u16, payload: &[u8]) -> Result<Vec<Outcome>, ApplyError> {
        self.check_order(index)?;
        if kind != crate::kinds::COMMAND_BATCH {
            return Err(ApplyError::NotCommands { index, kind });
        }
        let batch = Batch::parse(payload).map_err(|source| ApplyError::Batch { index, source })?;
        // Check every command before applying any, so a bad record leaves
        // the state as it was.
        let commands = (0..batch.len())
            .map(|slot| batch.command(slot))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ApplyError::Batch { index, source })?;
        let outcomes = commands
            .into_iter()
            .zip(0u32..)
            .map(|(command, slot)| self.apply_command(Place { index, slot }, command));
        let outcomes = outcomes.collect();
        self.last_applied = index;
        Ok(outcomes)
    }

    fn check_order(&self, index: u64) -> Result<(), ApplyError> {
        match index > self.last_applied {
            true => Ok(()),
            false => Err(ApplyError::OutOfOrder {
                index,
                last_applied: self.last_applied,
            }),
        }
    }

    fn apply_command(&mut self, place: Place, command: &ArchivedCommand) -> Outcome {
        self.log_time_ms = self.log_time_ms.max(command.proposed_at_ms.to_native());
        let fired = self.fire_due();
        let session = command
            .session
            .as_ref()
            .map(|session| (session.client_id.to_native(), session.sequence.to_native()));
        if let Some((client_id, sequence)) = session {
            let owner = self
                .tenants
                .slot(command.tenant.as_str())
                .map(|tenant| (tenant, command.principal.as_str()));
            match self.sessions.admit(client_id, sequence, owner) {
                Admission::Apply => {}
                Admission::Retried(verdict) => {
                    return Outcome {
                        verdict,
                        retried: true,
                        fired,
                    }
                }
                Admission::Refused(rejection) => {
                    return Outcome {
                        verdict: Verdict::Rejected(rejection),
                        retried: false,
                        fired,
                    }
                }
            }
        }
        let verdict = self.dispatch(place, command);
        if let Some((client_id, sequence)) = session {
            self.touch_session(client_id, sequence, verdict.clone());
        }
        Outcome {
            verdict,
            retried: false,
            fired,
        }
    }

    fn dispatch(&mut self, place: Place, command: &ArchivedCommand) -> Verdict {
        let now_ms = self.log_time_ms;
        if let ArchivedCommandBody::Tick = &command.body {
            return Verdict::Applied(Effect::Ticked);
        }
        let Some(tenant) = self.tenants.slot(command.tenant.as_str()) else {
            return Verdict::Rejected(Rejection::TenantUnknown);
        };
        if let ArchivedCommandBody::OpenSession = &command.body {
            return self.open_session(tenant, command.principal.as_str());
        }
        let mut context = Context {
            tenant,
            now_ms,
            place,
            places: &mut self.places,
            timers: &mut self.timers,
        };
        match &command.body {
            ArchivedCommandBody::Tick | ArchivedCommandBody::OpenSession => unreachable!("handled above"),
            ArchivedCommandBody::RegisterCustomer(body) => {
                if self.tenants.slot(body.name.as_str()).is_some() {
                    return Verdict::Rejected(Rejection::AlreadyExists { object: Object::Tenant });
                }
                let position = context.assign_position();
                let tenant = Tenant {
                    display_name: body.display_name.to_string(),
                    registered_at: position,
                };
                self.tenants.insert(Name::from(body.name.as_str()), tenant);
                Verdict::Applied(Effect::Recorded { position })
            }
            ArchivedCommandBody::RegisterComponent(body) => self.topology.register(&mut context, body),
            ArchivedCommandBody::SetEnabled(body) => self.topology.set_enabled(&mut context, body),
            ArchivedCommandBody::Deregister(body) => self.topology.deregister(&mut context, body),
            ArchivedCommandBody::MapManagementId(body) => self.topology.map_management_id(&mut context, body),
            ArchivedCommandBody::DefineGroup(body) => self.topology.define_group(&mut context, body),
            ArchivedCommandBody::ChangeGroupMember(body) => self.topology.change_group_member(&mut context, body),
            ArchivedCommandBody::Upstream(message) => store_upstream(
                &mut self.messages,
                &mut self.topology,
                &mut self.transfers,
                &mut context,
                message,
            ),
            ArchivedCommandBody::StreamAppend(body) => self.streams.append(&mut context, body),
            ArchivedCommandBody::Publish(body) => self.spools.publish(&mut context, &self.topology, body),
            ArchivedCommandBody::Poll(body) => {
                // The message's verdict decides: a rejected message hands
                // out nothing.
                let stored = match body.message.as_ref() {
                    None => None,
                    Some(message) => match store_upstream(
                        &mut self.messages,
                        &mut self.topology,
                        &mut self.transfers,
                        &mut context,
                        message,
                    ) {
                        Verdict::Applied(Effect::MessageStored { position, alarm }) => Some(outcome::StoredUpstream {
                            position,
                            duplicate: false,
                            alarm,
                        }),
                        Verdict::Applied(Effect::MessageDuplicate { position }) => Some(outcome::StoredUpstream {
                            position,
                            duplicate: true,
                            alarm: None,
                        }),
                        Verdict::Applied(_) => unreachable!("a message is stored or found a duplicate"),
                        Verdict::Rejected(rejection) => return Verdict::Rejected(rejection),
                    },
                };
                let names = Names {
                    tenants: &self.tenants,
                    topology: &self.topology,
                };
                self.spools.poll(&mut context, &names, body, stored)
            }
            ArchivedCommandBody::Settle(body) => self.spools.settle(&mut context, &self.topology, body),
            ArchivedCommandBody::Redrive(body) => self.spools.redrive(&mut context, &self.topology, body),
            ArchivedCommandBody::ConfigureSpool(body) => self.spools.configure(&mut context, body),
            ArchivedCommandBody::Transfer(body) => self.transfers.step(&mut context, &self.topology, body),
            ArchivedCommandBody::SetThrottle(body) => self.throttle.set(&mut context, &self.topology, body),
            ArchivedCommandBody::ReportUsage(body) => self.throttle.report(&mut context, &self.topology, body),
        }
    }

    fn open_session(&mut self, tenant: Slot, principal: &str) -> Verdict {
        let (client_id, _evicted) = self.sessions.open(self.log_time_ms, tenant, principal);
        self.timers.schedule(
            self.log_time_ms.saturating_add(sessions::SESSION_IDLE_MS),
            Timer::SessionIdle { client_id },
        );
        Verdict::Applied(Effect::SessionOpened { client_id })
    }

    fn touch_session(&mut self, client_id: u64, sequence: u64, verdict: Verdict) {
        self.sessions.record(client_id, sequence, verdict, self.log_time_ms);
    }

    /// Fires the timers due at the current log time, at most
    /// [`TIMERS_FIRED_PER_COMMAND_MAX`] of them.
    fn fire_due(&mut self) -> Vec<Fired> {
        let mut fired = Vec::new();
        let now_ms = self.log_time_ms;
        for _ in 0..TIMERS_FIRED_PER_COMMAND_MAX {
            let Some((due_ms, timer)) = self.timers.pop_due(now_ms) else {
                break;
            };
            match timer {
                Timer::Liveness { component } => {
                    if let Some(transition) = self.topology.check_liveness(component, now_ms, &mut self.timers) {
                        fired.push(transition.into_fired(&self.tenants, &self.topology));
                    }
                }
                Timer::SessionIdle { client_id } => match self.sessions.check_idle(client_id, now_ms) {
                    IdleCheck::Gone => {}
                    IdleCheck::Later(due_ms) => self.timers.schedule(due_ms, Timer::SessionIdle { client_id }),
                    IdleCheck::Expired => fired.push(Fired::SessionExpired { client_id }),
                },
                Timer::Idempotency { tenant, key } => self.streams.expire_key(tenant, key, now_ms),
                Timer::Delivery { delivery, attempt } => {
                    let names = Names {
                        tenants: &self.tenants,
                        topology: &self.topology,
                    };
                    let transition = self.spools.delivery_due(delivery, attempt, due_ms);
                    fired.extend(transition.map(|transition| transition.into_fired(&names, &self.spools)));
                }
                Timer::Expiry { message } => {
                    let names = Names {
                        tenants: &self.tenants,
                        topology: &self.topology,
                    };
                    fired.extend(
                        self.spools
                            .expire(message, now_ms, &mut self.timers)
                            .into_iter()
                            .map(|transition| transition.into_fired(&names, &self.spools)),
                    );
                }
                Timer::TransferRetry { tenant, request } => {
                    if let Some(retried) = self.transfers.retry_due(tenant, &request, now_ms) {
                        fired.push(Fired::TransferRetry {
                            tenant: self.tenants.key(tenant).to_string(),
                            request: retried.to_string(),
                        });
                    }
                }
            }
        }
        fired
    }

    /// Rebuilds the lookup maps a snapshot does not carry.
    fn rebuild_lookups(&mut self) {
        self.tenants.rebuild();
        self.topology.rebuild();
        self.messages.rebuild();
        self.streams.rebuild();
        self.spools.rebuild();
        self.transfers.rebuild();
        self.throttle.rebuild();
    }
}

/// What turns slots back into names, for outcomes and queries.
pub struct Names<'a> {
    pub tenants: &'a Table<Name, Tenant>,
    pub topology: &'a topology::Topology,
}

impl Names<'_> {
    pub fn tenant(&self, slot: Slot) -> &str {
        self.tenants.key(slot)
    }

    pub fn component(&self, slot: Slot) -> &str {
        self.topology.component(slot).id.as_str()
    }
}

/// Stores an upstream message; a bulk request among them starts a transfer.
fn store_upstream(
    messages: &mut messages::Messages,
    topology: &mut topology::Topology,
    transfers: &mut transfers::Transfers,
    context: &mut Context<'_>,
    message: &command::ArchivedUpstreamMessage,
) -> Verdict {
    let verdict = messages.store(context, topology, message);
    if let Verdict::Applied(Effect::MessageStored { position, .. }) = verdict {
        transfers.observe(context, topology, message, position);
    }
    verdict
}

/// The element of a per-slot vector, grown on demand.
fn per_slot<T: Default>(items: &mut Vec<T>, slot: Slot) -> &mut T {
    let at = slot as usize;
    if items.len() <= at {
        items.resize_with(at + 1, T::default);
    }
    &mut items[at]
}

/// Positions from `from` on, at most `limit` of them, out of an ascending
/// list; or, backwards, positions at or below `from`, newest first.
fn page(positions: &[u64], from: u64, limit: usize, direction: Direction) -> Vec<u64> {
    match direction {
        Direction::Forward => {
            let start = positions.partition_point(|&position| position < from);
            positions[start..].iter().take(limit).copied().collect()
        }
        Direction::Backward => {
            let end = positions.partition_point(|&position| position <= from);
            positions[..end].iter().rev().take(limit).copied().collect()
        }
    }
}

/// Which way a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}
