//! What apply returns for each command: an effect, or a typed rejection,
//! plus the time-driven transitions that log time's advance set off.
//!
//! Outcomes are deterministic values (they are cached in the session table
//! and so are part of the state and its snapshots).

use std::fmt;

use rkyv::{Archive, Deserialize, Serialize};

use super::command::{ComponentKind, ComponentRef};

/// The outcome of one command.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// True when the command was a retry in a client session: `verdict` is
    /// the first attempt's, and nothing was applied again.
    pub retried: bool,
    /// Transitions that log time's advance to this command's time set off.
    /// They may concern any tenant: the service shows a client only its own.
    pub fired: Vec<Fired>,
}

impl Outcome {
    pub fn is_applied(&self) -> bool {
        matches!(self.verdict, Verdict::Applied(_))
    }

    /// The global position the command's event got, if it got one.
    pub fn position(&self) -> Option<u64> {
        match &self.verdict {
            Verdict::Applied(effect) => effect.position(),
            Verdict::Rejected(_) => None,
        }
    }
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Applied(Effect),
    /// The command stays in the log and had no effect.
    Rejected(Rejection),
}

/// What an applied command did.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Log time advanced; nothing else.
    Ticked,
    SessionOpened {
        client_id: u64,
    },
    /// A topology change, recorded at `position`.
    Recorded {
        position: u64,
    },
    MessageStored {
        position: u64,
        alarm: Option<AlarmChange>,
    },
    /// The same message id from the same source, inside the dedupe window:
    /// not stored again; `position` is the first copy's.
    MessageDuplicate {
        position: u64,
    },
    StreamAppended {
        position: u64,
        version: u64,
    },
    /// The idempotency key was seen inside its window: not appended again.
    StreamDuplicate {
        position: u64,
        version: u64,
    },
    /// A back-channel message was spooled for `destinations` final
    /// destinations; `pruned` deliveries (its own or older ones) fell over
    /// their spool's capacity, and their publishers got a "rejected"
    /// response.
    Published {
        position: u64,
        destinations: u32,
        pruned: u32,
    },
    /// What a poll handed out, each body once with the destinations it is
    /// for; and what became of the upstream message it carried. `position`
    /// is None when the poll changed nothing (it handed out nothing and its
    /// message, if any, was a duplicate).
    Polled {
        position: Option<u64>,
        handed: Vec<Handout>,
        message: Option<StoredUpstream>,
    },
    /// What a settle did to the deliveries it named. `unchanged` counts
    /// deliveries already acked (by the other of two redundant paths, say),
    /// expired, pruned or parked, and nacks of deliveries not handed out.
    /// `unpublished` is true when this settle finished the last delivery of
    /// a bulk message: its URL may be unpublished.
    Settled {
        position: u64,
        acked: u32,
        respooled: u32,
        parked: u32,
        unchanged: u32,
        unpublished: bool,
    },
    /// Parked deliveries put back in their spools; `more` when others match
    /// and need another redrive.
    Redriven {
        position: u64,
        count: u32,
        more: bool,
    },
}

/// One back-channel body a poll handed out, and the final destinations
/// (reachable through the caller) it is for. The body is read from the log
/// at `message`, the publish's position.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Handout {
    pub message: u64,
    pub tenant: String,
    pub message_id: String,
    /// References in `tenant`'s namespace.
    pub destinations: Vec<ComponentRef>,
}

/// What a poll did with the upstream message it carried.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredUpstream {
    /// The message's position; the first copy's when `duplicate`.
    pub position: u64,
    pub duplicate: bool,
    pub alarm: Option<AlarmChange>,
}

impl Effect {
    pub fn position(&self) -> Option<u64> {
        match *self {
            Effect::Ticked | Effect::SessionOpened { .. } => None,
            Effect::Polled { position, .. } => position,
            Effect::Recorded { position }
            | Effect::MessageStored { position, .. }
            | Effect::MessageDuplicate { position }
            | Effect::StreamAppended { position, .. }
            | Effect::StreamDuplicate { position, .. }
            | Effect::Published { position, .. }
            | Effect::Settled { position, .. }
            | Effect::Redriven { position, .. } => Some(position),
        }
    }
}

/// What an alarm message did to its alarm's state.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmChange {
    Raised,
    /// Raised again while open: the open alarm now points at this message.
    Updated,
    Cleared,
    /// A clear for an alarm that is not open; stored, no state change.
    ClearedUnknown,
}

/// The kinds of object a rejection can name.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Tenant,
    Component,
    Parent,
    Group,
    Member,
    Proxy,
    SupportInstance,
    Source,
    Message,
    Stream,
    Destination,
    Caller,
    Transfer,
    Farm,
}

impl fmt::Display for Object {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Object::Tenant => "tenant",
            Object::Component => "component",
            Object::Parent => "parent",
            Object::Group => "group",
            Object::Member => "member",
            Object::Proxy => "proxy",
            Object::SupportInstance => "support instance",
            Object::Source => "source component",
            Object::Message => "message",
            Object::Stream => "stream",
            Object::Destination => "destination",
            Object::Caller => "caller",
            Object::Transfer => "transfer",
            Object::Farm => "farm",
        };
        formatter.write_str(name)
    }
}

/// Why apply refused a command that passed the stateless checks. Never
/// reveals another tenant's objects: those are [`Rejection::NotFound`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The command's tenant is not a registered customer.
    TenantUnknown,
    NotFound {
        object: Object,
    },
    AlreadyExists {
        object: Object,
    },
    /// The named component exists but is the wrong kind for this command.
    WrongKind {
        object: Object,
        kind: ComponentKind,
    },
    /// A component of this kind cannot hang below the named parent.
    ParentNotAllowed {
        parent_kind: ComponentKind,
    },
    /// The component is not reachable through the named one (a proxy, or
    /// the caller of a settle or a transfer step).
    NotReachable,
    /// The component still has components registered below it.
    HasChildren,
    AlreadyMember,
    NotMember,
    /// The stream's version is not the expected one; `current` is None when
    /// the stream does not exist.
    WrongExpectedVersion {
        current: Option<u64>,
    },
    /// Another source used this message id inside the dedupe window.
    MessageIdInUse,
    /// The message's source kind differs from the registered component's.
    SourceKindMismatch {
        registered: ComponentKind,
    },
    /// The session expired or never existed: open a new one.
    SessionUnknown,
    /// The sequence number is older than the outcomes the session keeps.
    SequenceTooOld {
        oldest_kept: u64,
    },
    /// A destination talks by message (email), or only through components
    /// that do: it has no back-channel (seed 001 L551).
    NoBackChannel {
        component: String,
    },
    /// The destinations, with the group expanded, number more than
    /// [`super::command::PUBLISH_DESTINATIONS_MAX`].
    TooManyDestinations {
        count: u64,
    },
    /// A security group is not a back-channel destination: only MLM and
    /// proxy groups are.
    GroupNotDestination,
    /// The transfer is not in a phase that allows this step.
    TransferPhase {
        phase: TransferPhase,
    },
}

/// Where an upstream bulk transfer stands.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum TransferPhase {
    /// Waiting for a grant or a denial.
    Requested,
    /// Denied; spooled for retry at a log time.
    Denied,
    /// Granted, with a URL to POST to.
    Granted,
    /// The proxy sent the data.
    Transferred,
}

impl TransferPhase {
    pub fn name(self) -> &'static str {
        match self {
            TransferPhase::Requested => "requested",
            TransferPhase::Denied => "denied",
            TransferPhase::Granted => "granted",
            TransferPhase::Transferred => "transferred",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::TenantUnknown => write!(formatter, "tenant is not registered"),
            Rejection::NotFound { object } => write!(formatter, "{object} not found"),
            Rejection::AlreadyExists { object } => write!(formatter, "{object} already exists"),
            Rejection::WrongKind { object, kind } => write!(formatter, "{object} is a {}", kind.name()),
            Rejection::ParentNotAllowed { parent_kind } => {
                write!(
                    formatter,
                    "a component of this kind cannot hang below a {}",
                    parent_kind.name()
                )
            }
            Rejection::NotReachable => write!(formatter, "component is not reachable through the named one"),
            Rejection::HasChildren => write!(formatter, "component still has components registered below it"),
            Rejection::AlreadyMember => write!(formatter, "already a member of the group"),
            Rejection::NotMember => write!(formatter, "not a member of the group"),
            Rejection::WrongExpectedVersion { current: Some(version) } => {
                write!(formatter, "wrong expected version: the stream is at version {version}")
            }
            Rejection::WrongExpectedVersion { current: None } => {
                write!(formatter, "wrong expected version: the stream does not exist")
            }
            Rejection::MessageIdInUse => write!(formatter, "another source used this message id recently"),
            Rejection::SourceKindMismatch { registered } => {
                write!(
                    formatter,
                    "source kind differs from the registered {}",
                    registered.name()
                )
            }
            Rejection::SessionUnknown => write!(formatter, "session unknown or expired: open a new one"),
            Rejection::SequenceTooOld { oldest_kept } => {
                write!(
                    formatter,
                    "sequence number too old: the session keeps outcomes from {oldest_kept}"
                )
            }
            Rejection::NoBackChannel { component } => {
                write!(
                    formatter,
                    "component `{component}` has no back-channel: it, or every path to it, talks by message"
                )
            }
            Rejection::TooManyDestinations { count } => {
                write!(
                    formatter,
                    "{count} final destinations, more than {}",
                    super::command::PUBLISH_DESTINATIONS_MAX
                )
            }
            Rejection::GroupNotDestination => {
                write!(formatter, "a security group is not a back-channel destination")
            }
            Rejection::TransferPhase { phase } => write!(formatter, "the transfer is {}", phase.name()),
        }
    }
}

/// A transition derived from log time.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    ComponentLate {
        tenant: String,
        component: String,
    },
    ComponentFailed {
        tenant: String,
        component: String,
    },
    SessionExpired {
        client_id: u64,
    },
    /// A handed-out delivery was not settled within its visibility timeout:
    /// it is back in its spool.
    DeliveryTimedOut {
        tenant: String,
        message: u64,
        destination: String,
    },
    /// A delivery used its attempts and was parked.
    DeliveryParked {
        tenant: String,
        message: u64,
        destination: String,
    },
    /// A message's expiry passed: `count` of its deliveries expired.
    DeliveriesExpired {
        tenant: String,
        message: u64,
        count: u32,
    },
    /// Every delivery of a bulk message is done: its URL may be unpublished.
    BulkUnpublished {
        tenant: String,
        message: u64,
    },
    /// A denied bulk transfer's retry time came: it is requested again.
    TransferRetry {
        tenant: String,
        request: String,
    },
}
