//! The command catalog: every command a client can put into the log, in
//! its envelope.
//!
//! A command is archived with rkyv on its own and framed into a batch (see
//! [`super::batch`]); apply reads it in place, zero-copy. The owned types
//! here are what proposers build; apply and the inspectors see the
//! `Archived*` twins that rkyv derives.
//!
//! Families grow by adding variants to [`CommandBody`] at the end and new
//! structs; an existing variant's layout never changes within a schema
//! version.
//!
//! Every size and count is bounded by a named constant below. The bounds
//! are checked before a command enters the log ([`super::validate`]) and
//! again, from the same code, when it is applied.

use rkyv::{Archive, Deserialize, Serialize};

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u16 = 1;

/// The reserved tenant name of the landlord (the farm operator). Components
/// hosted by the provider live in its namespace.
pub const LANDLORD: &str = "landlord";

/// Longest name of anything: tenant, principal, component id, group, stream,
/// message id, alarm id, class, subclass, MIME type, idempotency key.
pub const NAME_BYTES_MAX: usize = 128;
/// Longest free text: an alarm's text, an error message, a description.
pub const TEXT_BYTES_MAX: usize = 4096;
/// Longest URL (bulk-transfer locations).
pub const URL_BYTES_MAX: usize = 2048;
/// Largest body of one message or stream event. Larger data goes out of
/// band through a bulk transfer.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Most hops in a message's routing trail.
pub const ROUTE_HOPS_MAX: usize = 32;
/// Most components one heartbeat may report on.
pub const HEARTBEAT_COMPONENTS_MAX: usize = 256;
/// Most parents of one component: two for a support instance behind
/// redundant proxies, one for everything else.
pub const PARENTS_MAX: usize = 2;
/// Longest idempotency window a stream append may ask for: one week.
pub const IDEMPOTENCY_WINDOW_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// The idempotency window a proposer uses when the client names none.
pub const IDEMPOTENCY_WINDOW_MS_DEFAULT: u64 = 24 * 3600 * 1000;

/// One command in its envelope.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Command {
    /// The schema version the proposer wrote ([`SCHEMA_VERSION`]).
    pub schema_version: u16,
    /// The tenant whose namespace the command acts in ([`LANDLORD`] or a
    /// customer's name).
    pub tenant: String,
    /// Who wrote it (from the client certificate).
    pub principal: String,
    /// The proposer's clock when it accepted the command, in milliseconds
    /// since the Unix epoch. Log time never goes backwards: apply takes the
    /// maximum of this and the previous log time.
    pub proposed_at_ms: u64,
    /// Present when the client retries safely: a retried command returns
    /// its first outcome and is never applied twice.
    pub session: Option<SessionRef>,
    /// Reserved for per-tenant encryption of the body; must be `None` in
    /// schema version 1.
    pub encryption: Option<EncryptionSlot>,
    pub body: CommandBody,
}

/// A client session: an id from [`CommandBody::OpenSession`], and the
/// client's sequence number for this command.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SessionRef {
    pub client_id: u64,
    pub sequence: u64,
}

/// Which tenant key encrypted the body, and with which nonce (reserved).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct EncryptionSlot {
    pub key_id: u64,
    pub nonce: [u8; 24],
}

/// What a command does. New variants are added at the end.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum CommandBody {
    /// Advances log time when nothing else happens.
    Tick,
    /// Opens a client session; the outcome carries its client id.
    OpenSession,
    /// The landlord registers a customer (a tenant).
    RegisterCustomer(RegisterCustomer),
    RegisterComponent(RegisterComponent),
    SetEnabled(SetEnabled),
    Deregister(Deregister),
    MapManagementId(MapManagementId),
    DefineGroup(DefineGroup),
    ChangeGroupMember(ChangeGroupMember),
    Upstream(UpstreamMessage),
    StreamAppend(StreamAppend),
}

impl CommandBody {
    /// The name of every family, in declaration order.
    pub const FAMILIES: [&'static str; 11] = [
        "Tick",
        "OpenSession",
        "RegisterCustomer",
        "RegisterComponent",
        "SetEnabled",
        "Deregister",
        "MapManagementId",
        "DefineGroup",
        "ChangeGroupMember",
        "Upstream",
        "StreamAppend",
    ];
}

impl ArchivedCommandBody {
    /// This command's family, one of [`CommandBody::FAMILIES`].
    pub fn family(&self) -> &'static str {
        let at = match self {
            Self::Tick => 0,
            Self::OpenSession => 1,
            Self::RegisterCustomer(_) => 2,
            Self::RegisterComponent(_) => 3,
            Self::SetEnabled(_) => 4,
            Self::Deregister(_) => 5,
            Self::MapManagementId(_) => 6,
            Self::DefineGroup(_) => 7,
            Self::ChangeGroupMember(_) => 8,
            Self::Upstream(_) => 9,
            Self::StreamAppend(_) => 10,
        };
        CommandBody::FAMILIES[at]
    }
}

// ---------------------------------------------------------------- topology

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RegisterCustomer {
    /// The tenant name certificates and commands will carry.
    pub name: String,
    pub display_name: String,
}

/// The kinds of component in the remote services system (seed 000 Fig 2).
#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[rkyv(derive(Debug))]
pub enum ComponentKind {
    Proxy,
    IntegrationModule,
    SupportInstance,
    CustomerMlm,
    AggregationMlm,
    ApplicationsMlm,
    ApplicationServer,
}

impl ComponentKind {
    /// Every kind, in declaration order.
    pub const ALL: [ComponentKind; 7] = [
        Self::Proxy,
        Self::IntegrationModule,
        Self::SupportInstance,
        Self::CustomerMlm,
        Self::AggregationMlm,
        Self::ApplicationsMlm,
        Self::ApplicationServer,
    ];

    /// Hosted by the provider: these belong to the landlord and serve
    /// several customers (seed 000 L146–147).
    pub fn is_hosted(self) -> bool {
        matches!(
            self,
            Self::AggregationMlm | Self::ApplicationsMlm | Self::ApplicationServer
        )
    }

    pub fn is_mlm(self) -> bool {
        matches!(self, Self::CustomerMlm | Self::AggregationMlm | Self::ApplicationsMlm)
    }

    /// The kinds a component of this kind may hang below.
    pub fn allowed_parents(self) -> &'static [ComponentKind] {
        use ComponentKind::*;
        match self {
            SupportInstance => &[IntegrationModule],
            IntegrationModule => &[Proxy],
            Proxy => &[CustomerMlm, AggregationMlm, ApplicationsMlm],
            CustomerMlm => &[AggregationMlm, ApplicationsMlm],
            AggregationMlm => &[ApplicationsMlm],
            ApplicationsMlm => &[ApplicationServer],
            ApplicationServer => &[],
        }
    }

    pub fn name(self) -> &'static str {
        use ComponentKind::*;
        match self {
            Proxy => "proxy",
            IntegrationModule => "integration module",
            SupportInstance => "support instance",
            CustomerMlm => "customer MLM",
            AggregationMlm => "aggregation MLM",
            ApplicationsMlm => "applications MLM",
            ApplicationServer => "application server",
        }
    }
}

/// How a component talks upstream: a session (HTTP) has a back-channel; a
/// message link (email) has none.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum CommunicationMode {
    Session,
    Message,
}

/// A reference to a component: in the command's own tenant, or hosted by
/// the provider (in the landlord's namespace).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ComponentRef {
    pub hosted: bool,
    pub id: String,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RegisterComponent {
    pub id: String,
    pub kind: ComponentKind,
    pub version: String,
    pub mode: CommunicationMode,
    /// None for an application server; one otherwise; two only for a
    /// support instance reachable through redundant proxies.
    pub parents: Vec<ComponentRef>,
}

/// What an enable / disable switches.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Switch {
    /// A support instance is monitored or not.
    SupportInstance,
    /// A proxy forwards data or not.
    ProxyForwarding,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SetEnabled {
    pub component: String,
    pub switch: Switch,
    pub enabled: bool,
}

/// Removes a component that has nothing below it (an integration module
/// that is moved or removed, typically). It may register again later.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Deregister {
    pub component: ComponentRef,
}

/// Maps a proxy's management id (an IP address, say) to a component
/// reachable through it, or removes the mapping when `component` is None.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MapManagementId {
    pub proxy: String,
    pub management_id: String,
    pub component: Option<String>,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum GroupKind {
    /// MLMs, a back-channel destination.
    Mlm,
    /// Proxies, a back-channel destination.
    Proxy,
    /// Any of one customer's components; certificates are scoped to it.
    Security,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DefineGroup {
    pub name: String,
    pub kind: GroupKind,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ChangeGroupMember {
    pub group: String,
    pub member: ComponentRef,
    /// True adds the member, false removes it.
    pub add: bool,
}

// ------------------------------------------------------- upstream messages

/// An upstream message (seed 001 L454–518, seed 000 Fig 12).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct UpstreamMessage {
    pub header: MessageHeader,
    pub qos: Qos,
    /// One element per hop that routed the message, appended by each.
    pub routing: Vec<RouteHop>,
    pub content: Content,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MessageHeader {
    pub message_id: String,
    /// The component that sent it, in the command's tenant.
    pub source: String,
    pub source_version: String,
    pub source_kind: ComponentKind,
    /// Must equal the command's tenant.
    pub customer: String,
    pub class: String,
    pub subclass: String,
    pub created_at_ms: u64,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Qos {
    /// Higher goes first.
    pub precedence: u8,
    /// When the data expires, in milliseconds since the epoch.
    pub expiry_ms: Option<u64>,
    /// Held in a queue at the expense of others of equal precedence and
    /// expiry.
    pub persistence: bool,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RouteHop {
    pub component: ComponentRef,
    pub at_ms: u64,
}

/// The class and subclass of a heartbeat (seed 001 L515–518).
pub const HEARTBEAT_CLASS: &str = "infrastructure";
pub const HEARTBEAT_SUBCLASS: &str = "heartbeat";

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Content {
    Alarm(Alarm),
    Event(Event),
    Data(Data),
    Response(MessageResponse),
    BulkRequest(BulkRequest),
    BulkResponse(BulkResponse),
    Heartbeat(Heartbeat),
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Severity {
    Critical,
    Major,
    Minor,
    Warning,
    Info,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum AlarmState {
    Raised,
    Cleared,
}

/// An alarm has state: raised and cleared per (support instance, alarm id).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Alarm {
    pub alarm_id: String,
    pub support_instance: String,
    pub severity: Severity,
    pub state: AlarmState,
    pub text: String,
    /// Integration-module specific data.
    pub data: Vec<u8>,
}

/// A notification of a change; no state.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Event {
    pub support_instance: Option<String>,
    pub severity: Severity,
    pub text: String,
    pub data: Vec<u8>,
}

/// Generic data, typed by the header's class and subclass.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Data {
    pub mime_type: String,
    /// Must equal the body's length.
    pub size: u64,
    /// How a binary body is encoded (base64, say); None for text.
    pub encoding: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ResponseStatus {
    Ok,
    Rejected,
    Throttled,
    ReceptionFailed,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MessageResponse {
    pub in_reply_to: String,
    pub status: ResponseStatus,
    pub error: Option<String>,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BulkRequest {
    pub size: u64,
    pub description: String,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BulkResponse {
    pub request_message_id: String,
    pub granted: bool,
    /// Where to send the data, when granted.
    pub url: Option<String>,
    /// Why not, when denied.
    pub reason: Option<String>,
}

/// A component's status message; the components it lists (itself and what
/// it manages) are seen alive at the message's log time.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Heartbeat {
    pub components: Vec<String>,
}

// ----------------------------------------------------------------- streams

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ExpectedVersion {
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have this version (the first is 0).
    Exact(u64),
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Idempotency {
    pub key: String,
    /// How long a duplicate is recognized, in log time.
    pub window_ms: u64,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct StreamAppend {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub idempotency: Option<Idempotency>,
    pub event_type: String,
    pub body: Vec<u8>,
}

/// Converts the archived twin of a field-less enum back to the owned one.
macro_rules! native_enum {
    ($($name:ident { $($variant:ident),* $(,)? })*) => {$(
        paste_archived!($name, $($variant),*);
    )*};
}

macro_rules! paste_archived {
    ($name:ident, $($variant:ident),*) => {
        impl $name {
            /// The owned value of an archived one.
            pub fn from_archived(archived: &<$name as Archive>::Archived) -> Self {
                type A = <$name as Archive>::Archived;
                match archived {
                    $(A::$variant => $name::$variant,)*
                }
            }
        }
    };
}

native_enum! {
    ComponentKind { Proxy, IntegrationModule, SupportInstance, CustomerMlm, AggregationMlm, ApplicationsMlm, ApplicationServer }
    CommunicationMode { Session, Message }
    Switch { SupportInstance, ProxyForwarding }
    GroupKind { Mlm, Proxy, Security }
    Severity { Critical, Major, Minor, Warning, Info }
    AlarmState { Raised, Cleared }
    ResponseStatus { Ok, Rejected, Throttled, ReceptionFailed }
}
