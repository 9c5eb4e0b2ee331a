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
    /// A back-channel message to components and at most one group.
    Publish(Publish),
    /// Hands out back-channel deliveries to a caller, optionally with an
    /// upstream message in the same command.
    Poll(Poll),
    /// Acks or nacks deliveries of one back-channel message.
    Settle(Settle),
    /// Puts parked deliveries back in their spools.
    Redrive(Redrive),
    /// A tenant's spool settings.
    ConfigureSpool(ConfigureSpool),
    /// A step of an upstream bulk transfer's authorization.
    Transfer(TransferStep),
    /// Replaces a customer MLM farm's throttle rules.
    SetThrottle(SetThrottle),
    /// Usage increments reported by a farm member.
    ReportUsage(ReportUsage),
}

impl CommandBody {
    /// The name of every family, in declaration order.
    pub const FAMILIES: [&'static str; 19] = [
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
        "Publish",
        "Poll",
        "Settle",
        "Redrive",
        "ConfigureSpool",
        "Transfer",
        "SetThrottle",
        "ReportUsage",
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
            Self::Publish(_) => 11,
            Self::Poll(_) => 12,
            Self::Settle(_) => 13,
            Self::Redrive(_) => 14,
            Self::ConfigureSpool(_) => 15,
            Self::Transfer(_) => 16,
            Self::SetThrottle(_) => 17,
            Self::ReportUsage(_) => 18,
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

// ---------------------------------------------------------- back-channel

/// Most final destinations of one back-channel message, after its group is
/// expanded.
pub const PUBLISH_DESTINATIONS_MAX: usize = 16_384;
/// Most groups one back-channel message may name: a backward message cannot
/// target more than one MLM group, so the path to each final destination is
/// unique (seed 001 L493).
pub const PUBLISH_GROUPS_MAX: usize = 1;
/// Most deliveries one poll hands out.
pub const POLL_DELIVERIES_MAX: u32 = 4096;
/// Most body bytes one poll hands out. A poll always hands out at least one
/// body when one is ready, whatever its size (at most [`BODY_BYTES_MAX`]).
pub const POLL_BYTES_MAX: u64 = 64 << 20;
/// The shortest and longest visibility timeout a poll may ask for, and the
/// one it gets when it names none (0).
pub const VISIBILITY_MS_MIN: u64 = 1000;
pub const VISIBILITY_MS_MAX: u64 = 12 * 3600 * 1000;
pub const VISIBILITY_MS_DEFAULT: u64 = 60 * 1000;
/// Most destinations one settle names.
pub const SETTLE_DESTINATIONS_MAX: usize = 4096;
/// Most delivery attempts a message may allow before a delivery is parked,
/// and the number it gets when it names none (0).
pub const DELIVERY_ATTEMPTS_MAX: u16 = 1000;
pub const DELIVERY_ATTEMPTS_DEFAULT: u16 = 10;
/// The largest spool capacity (live deliveries per destination) a tenant
/// may configure, and the capacity it has until it configures one.
pub const SPOOL_CAPACITY_MAX: u32 = 1 << 20;
pub const SPOOL_CAPACITY_DEFAULT: u32 = 10_000;
/// Most parked deliveries one redrive puts back.
pub const REDRIVE_DELIVERIES_MAX: u32 = 4096;
/// Longest retry delay a hop may ask for when it denies a bulk transfer,
/// and the delay the request gets when it names none (0).
pub const TRANSFER_RETRY_MS_MAX: u64 = 24 * 3600 * 1000;
pub const TRANSFER_RETRY_MS_DEFAULT: u64 = 5 * 60 * 1000;
/// Most rules of one farm's throttle.
pub const THROTTLE_RULES_MAX: usize = 64;
/// The longest window of a dynamic throttle rule.
pub const THROTTLE_WINDOW_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// Most usage increments in one report.
pub const USAGE_INCREMENTS_MAX: usize = 1024;
/// Minutes in a day: static throttle windows are minutes of the day (UTC
/// of log time), `0..MINUTES_PER_DAY`.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// A back-channel message (seed 001 L483–500): from an applications MLM or
/// an application server down to customer components. Its body is stored
/// once, in the log; each final destination gets a small delivery state.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Publish {
    pub header: BackHeader,
    pub qos: Qos,
    pub routing: Vec<RouteHop>,
    pub payload: Payload,
    /// Final destinations, in the command's tenant or hosted.
    pub destinations: Vec<ComponentRef>,
    /// MLM or proxy groups of the command's tenant, expanded into their
    /// members at publish. At most [`PUBLISH_GROUPS_MAX`]; a list, so that a
    /// second group gets a clear error rather than being unsayable.
    pub groups: Vec<String>,
    /// Attempts before a delivery is parked; 0 means
    /// [`DELIVERY_ATTEMPTS_DEFAULT`].
    pub max_attempts: u16,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BackHeader {
    /// Unique among the tenant's back-channel messages.
    pub message_id: String,
    /// The publisher: an applications MLM or an application server.
    pub source: ComponentRef,
    /// Software update, configuration change, …
    pub class: String,
    pub subclass: String,
    pub created_at_ms: u64,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Payload {
    Inline {
        mime_type: String,
        body: Vec<u8>,
    },
    /// Data published out of band for the destinations to fetch (seed 001
    /// Fig 22–23): the URL is unpublished when every destination is done.
    Bulk {
        url: String,
        size: u64,
    },
}

/// A caller collects the back-channel deliveries for itself and for every
/// component reachable through it (seed 001 L565–573).
///
/// In the landlord's namespace, a hosted MLM's poll serves every customer
/// below it, fairly; in a customer's, only that customer's deliveries.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Poll {
    pub caller: ComponentRef,
    /// 1..=[`POLL_DELIVERIES_MAX`].
    pub max_deliveries: u32,
    /// 1..=[`POLL_BYTES_MAX`].
    pub max_bytes: u64,
    /// How long a handed-out delivery stays with the caller before it is
    /// delivered again; 0 means [`VISIBILITY_MS_DEFAULT`].
    pub visibility_ms: u64,
    /// An upstream message stored by the same command, so that the
    /// back-channel rides on the reply to the request (seed 001 L567).
    pub message: Option<UpstreamMessage>,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum NackReason {
    Rejected,
    Throttled,
    ReceptionFailed,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Settlement {
    /// Delivered to the final destination (or taken over by the intermediate
    /// MLM on its behalf).
    Ack,
    /// Not taken: the delivery is respooled with a retry time, or parked
    /// once it has used its attempts.
    Nack(NackReason),
}

/// Acks or nacks one back-channel message for some of its destinations, by
/// the destination itself or by a component on its path (the principal is
/// recorded with the event).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Settle {
    pub caller: ComponentRef,
    /// The message's position, as the poll handed it out.
    pub message: u64,
    pub destinations: Vec<ComponentRef>,
    pub settlement: Settlement,
}

/// Puts the tenant's parked deliveries back in their spools with fresh
/// attempts: all of them, one message's, or one destination's; at most
/// [`REDRIVE_DELIVERIES_MAX`] per command.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Redrive {
    pub message: Option<u64>,
    pub destination: Option<ComponentRef>,
}

/// A tenant's spool capacity. It is enforced as spools grow: a spool over
/// a lowered capacity is pruned down to it by the next publish or redrive
/// that adds to it.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConfigureSpool {
    /// Live deliveries each destination may hold before the lowest ones
    /// are pruned: 1..=[`SPOOL_CAPACITY_MAX`].
    pub capacity: u32,
}

/// A step in the authorization of an upstream bulk transfer (seed 001
/// Fig 20–21), requested by a proxy's bulk-request message.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TransferStep {
    /// The message id of the bulk request.
    pub request: String,
    /// The component that takes the step: a hop on the request's path, or
    /// the requesting proxy for [`TransferAction::Transferred`].
    pub hop: ComponentRef,
    pub action: TransferAction,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum TransferAction {
    /// The applications MLM (or server) allocated a URL to POST to.
    Grant { url: String },
    /// Any hop refuses; the request is spooled for a retry after
    /// `retry_after_ms` of log time (0: [`TRANSFER_RETRY_MS_DEFAULT`]).
    Deny { reason: String, retry_after_ms: u64 },
    /// The proxy sent the data.
    Transferred,
}

/// A farm's throttle: replaces all its rules (none lifts the throttle).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SetThrottle {
    /// The MLM group that is the customer MLM farm.
    pub farm: String,
    pub rules: Vec<ThrottleRule>,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ThrottleRule {
    /// Static: nothing is sent from minute `from` to minute `to` of the day
    /// (log time, UTC); `from > to` wraps past midnight.
    Quiet { from_minute: u16, to_minute: u16 },
    /// Dynamic: at most this many bytes and messages per window of log
    /// time, counted across the whole farm.
    Limit {
        window_ms: u64,
        max_bytes: Option<u64>,
        max_messages: Option<u64>,
    },
}

/// Sends a farm member made since its last report.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReportUsage {
    pub farm: String,
    pub member: ComponentRef,
    pub increments: Vec<Usage>,
}

#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
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
    NackReason { Rejected, Throttled, ReceptionFailed }
}
