//! `farmlog topology ...`: the Topology service from the command line —
//! register customers and components, switch, deregister, map management
//! ids, define and change groups, and read what is registered, reachable
//! and alive.
//!
//! A component is named by its id in the caller's tenant, or as
//! `hosted:<id>` for one of the provider's hosted components (see
//! [`parse_component_ref`]). Writes carry a session, so their retries are
//! safe.

use clap::{Args, Subcommand, ValueEnum};
use farmlog_api::pb::{self, topology_client::TopologyClient};
use serde_json::{json, Value};

use crate::client_cmd::{
    block_on, emit, enum_name, parse_component_ref, ref_text, refs_json, refs_text, rpc, say, session, written_json,
    Connect,
};
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Registers a customer (landlord admins) or a component.
    #[command(subcommand)]
    Register(RegisterCommand),
    /// Turns on a support instance's monitoring or a proxy's forwarding.
    Enable {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: SwitchArgs,
    },
    /// Turns off a support instance's monitoring or a proxy's forwarding.
    Disable {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: SwitchArgs,
    },
    /// Removes a component that has nothing registered below it.
    Deregister {
        #[command(flatten)]
        connect: Connect,
        /// The component (`hosted:<id>` for a hosted one).
        #[arg(value_parser = parse_component_ref)]
        component: pb::ComponentRef,
    },
    /// Maps one of a proxy's management ids to a component below it, or
    /// removes the mapping.
    MapManagementId {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: MapArgs,
    },
    /// The component a proxy maps a management id to.
    Resolve {
        #[command(flatten)]
        connect: Connect,
        /// The proxy.
        proxy: String,
        /// One of its management ids.
        management_id: String,
    },
    /// Groups: define, add or remove a member, show.
    #[command(subcommand)]
    Group(GroupCommand),
    /// A registered component.
    Show {
        #[command(flatten)]
        connect: Connect,
        /// The component's id.
        id: String,
    },
    /// Everything registered below a component, depth first.
    Reachable {
        #[command(flatten)]
        connect: Connect,
        /// The component's id.
        id: String,
    },
    /// A component's liveness, and the worst of it and its subtree.
    Status {
        #[command(flatten)]
        connect: Connect,
        /// The component's id.
        id: String,
    },
    /// The tenant's late and failed components.
    NotAlive {
        #[command(flatten)]
        connect: Connect,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegisterCommand {
    /// Registers a customer, a tenant (landlord admins only).
    Customer {
        #[command(flatten)]
        connect: Connect,
        /// The tenant name its principals will carry.
        name: String,
        /// Free text (default: the name).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Registers a component below its parents.
    Component {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: ComponentArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Defines a group: of MLMs or proxies (back-channel destinations), or
    /// a security group.
    Define {
        #[command(flatten)]
        connect: Connect,
        /// The group's name.
        name: String,
        #[arg(long, value_enum)]
        kind: GroupKindArg,
    },
    /// Adds a member to a group.
    Add {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: MemberArgs,
    },
    /// Removes a member from a group.
    Remove {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: MemberArgs,
    },
    /// A group, its members and the history of its changes.
    Show {
        #[command(flatten)]
        connect: Connect,
        /// The group's name.
        name: String,
    },
}

/// What a component is.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Proxy,
    IntegrationModule,
    SupportInstance,
    CustomerMlm,
    AggregationMlm,
    ApplicationsMlm,
    ApplicationServer,
}

impl KindArg {
    /// The kind on the wire.
    pub fn to_pb(self) -> pb::ComponentKind {
        match self {
            Self::Proxy => pb::ComponentKind::Proxy,
            Self::IntegrationModule => pb::ComponentKind::IntegrationModule,
            Self::SupportInstance => pb::ComponentKind::SupportInstance,
            Self::CustomerMlm => pb::ComponentKind::CustomerMlm,
            Self::AggregationMlm => pb::ComponentKind::AggregationMlm,
            Self::ApplicationsMlm => pb::ComponentKind::ApplicationsMlm,
            Self::ApplicationServer => pb::ComponentKind::ApplicationServer,
        }
    }
}

/// How a component talks upstream.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// A session (HTTP): it has a back-channel.
    Session,
    /// A message link (email): no back-channel.
    Message,
}

/// What a group holds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GroupKindArg {
    /// MLMs: a back-channel destination, and a throttle's farm.
    Mlm,
    /// Proxies: a back-channel destination.
    Proxy,
    /// Any of the customer's own components; certificates may be scoped
    /// to it.
    Security,
}

/// What `enable`/`disable` switches.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SwitchArg {
    /// Whether a support instance is monitored.
    SupportInstance,
    /// Whether a proxy forwards data.
    ProxyForwarding,
}

#[derive(Debug, Args)]
pub struct ComponentArgs {
    /// Unique in the tenant's namespace.
    pub id: String,
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// A parent (repeat for a support instance behind two proxies);
    /// `hosted:<id>` for a hosted one. None for an application server.
    #[arg(long = "parent", value_parser = parse_component_ref)]
    pub parents: Vec<pb::ComponentRef>,
    #[arg(long, value_enum, default_value = "session")]
    pub mode: ModeArg,
    /// The component's software version.
    #[arg(long, default_value = "1.0")]
    pub version: String,
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// The support instance or proxy.
    pub component: String,
    /// What to switch (default: by the component's kind).
    #[arg(long, value_enum)]
    pub switch: Option<SwitchArg>,
}

#[derive(Debug, Args)]
pub struct MapArgs {
    /// The proxy.
    pub proxy: String,
    /// One of its management ids (an IP address, say).
    pub management_id: String,
    /// The component below the proxy the id stands for.
    #[arg(long, required_unless_present = "remove", conflicts_with = "remove")]
    pub component: Option<String>,
    /// Remove the mapping instead.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct MemberArgs {
    /// The group.
    pub group: String,
    /// The member (`hosted:<id>` for a hosted one).
    #[arg(value_parser = parse_component_ref)]
    pub member: pb::ComponentRef,
}

/// Runs a `topology` subcommand.
pub fn run(command: &TopologyCommand) -> Result<(), Failure> {
    match command {
        TopologyCommand::Register(RegisterCommand::Customer {
            connect,
            name,
            display_name,
        }) => register_customer(connect, name, display_name.as_deref()),
        TopologyCommand::Register(RegisterCommand::Component { connect, args }) => register_component(connect, args),
        TopologyCommand::Enable { connect, args } => set_enabled(connect, args, true),
        TopologyCommand::Disable { connect, args } => set_enabled(connect, args, false),
        TopologyCommand::Deregister { connect, component } => deregister(connect, component),
        TopologyCommand::MapManagementId { connect, args } => map_management_id(connect, args),
        TopologyCommand::Resolve {
            connect,
            proxy,
            management_id,
        } => resolve(connect, proxy, management_id),
        TopologyCommand::Group(command) => group(command),
        TopologyCommand::Show { connect, id } => show(connect, id),
        TopologyCommand::Reachable { connect, id } => reachable(connect, id),
        TopologyCommand::Status { connect, id } => status(connect, id),
        TopologyCommand::NotAlive { connect } => not_alive(connect),
    }
}

/// Prints what a topology write recorded.
fn recorded(connect: &Connect, what: String, answer: &pb::Recorded) -> Result<(), Failure> {
    emit(
        connect.json,
        || json!({"position": answer.position, "written": written_json(answer.written.as_ref())}),
        || format!("{what} at position {}", answer.position),
    )
}

fn register_customer(connect: &Connect, name: &str, display_name: Option<&str>) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::RegisterCustomerRequest {
            tenant: name.into(),
            display_name: display_name.unwrap_or(name).into(),
            session: session(&client).await?,
        };
        let answer = rpc!(&client, TopologyClient::register_customer, request)?;
        recorded(connect, format!("registered customer {name}"), &answer)
    })
}

fn register_component(connect: &Connect, args: &ComponentArgs) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let kind = args.kind.to_pb();
        let request = pb::RegisterComponentRequest {
            id: args.id.clone(),
            kind: kind.into(),
            version: args.version.clone(),
            mode: match args.mode {
                ModeArg::Session => pb::CommunicationMode::Session,
                ModeArg::Message => pb::CommunicationMode::Message,
            }
            .into(),
            parents: args.parents.clone(),
            session: session(&client).await?,
        };
        let answer = rpc!(&client, TopologyClient::register_component, request)?;
        let mut what = format!("registered {} {}", enum_name::<pb::ComponentKind>(kind.into()), args.id);
        if !args.parents.is_empty() {
            what.push_str(&format!(" below {}", refs_text(&args.parents)));
        }
        recorded(connect, what, &answer)
    })
}

fn set_enabled(connect: &Connect, args: &SwitchArgs, enabled: bool) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let switch = match args.switch {
            Some(SwitchArg::SupportInstance) => pb::Switch::SupportInstance,
            Some(SwitchArg::ProxyForwarding) => pb::Switch::ProxyForwarding,
            // By the kind: the switch that applies to it (the node says
            // FAILED_PRECONDITION for a kind none applies to).
            None => {
                let request = pb::GetComponentRequest {
                    id: args.component.clone(),
                };
                let info = rpc!(&client, TopologyClient::get_component, request)?;
                match info.kind() {
                    pb::ComponentKind::Proxy => pb::Switch::ProxyForwarding,
                    _ => pb::Switch::SupportInstance,
                }
            }
        };
        let request = pb::SetEnabledRequest {
            component: args.component.clone(),
            switch: switch.into(),
            enabled,
            session: session(&client).await?,
        };
        let answer = rpc!(&client, TopologyClient::set_enabled, request)?;
        let what = match (switch, enabled) {
            (pb::Switch::ProxyForwarding, true) => "forwards data",
            (pb::Switch::ProxyForwarding, false) => "forwards no data",
            (_, true) => "is monitored",
            (_, false) => "is not monitored",
        };
        recorded(connect, format!("{} {what}", args.component), &answer)
    })
}

fn deregister(connect: &Connect, component: &pb::ComponentRef) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::DeregisterRequest {
            component: Some(component.clone()),
            session: session(&client).await?,
        };
        let answer = rpc!(&client, TopologyClient::deregister, request)?;
        recorded(connect, format!("deregistered {}", ref_text(component)), &answer)
    })
}

fn map_management_id(connect: &Connect, args: &MapArgs) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::MapManagementIdRequest {
            proxy: args.proxy.clone(),
            management_id: args.management_id.clone(),
            component: args.component.clone(),
            session: session(&client).await?,
        };
        let answer = rpc!(&client, TopologyClient::map_management_id, request)?;
        let what = match &args.component {
            Some(component) => format!("{} maps {} to {component}", args.proxy, args.management_id),
            None => format!("{} maps {} to nothing", args.proxy, args.management_id),
        };
        recorded(connect, what, &answer)
    })
}

fn resolve(connect: &Connect, proxy: &str, management_id: &str) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::ResolveManagementIdRequest {
            proxy: proxy.into(),
            management_id: management_id.into(),
        };
        let info = rpc!(&client, TopologyClient::resolve_management_id, request)?;
        emit(connect.json, || component_json(&info), || component_text(&info))
    })
}

fn group(command: &GroupCommand) -> Result<(), Failure> {
    match command {
        GroupCommand::Define { connect, name, kind } => block_on(async {
            let client = connect.client()?;
            let kind = match kind {
                GroupKindArg::Mlm => pb::GroupKind::Mlm,
                GroupKindArg::Proxy => pb::GroupKind::Proxy,
                GroupKindArg::Security => pb::GroupKind::Security,
            };
            let request = pb::DefineGroupRequest {
                name: name.clone(),
                kind: kind.into(),
                session: session(&client).await?,
            };
            let answer = rpc!(&client, TopologyClient::define_group, request)?;
            let what = format!("defined {} group {name}", enum_name::<pb::GroupKind>(kind.into()));
            recorded(connect, what, &answer)
        }),
        GroupCommand::Add { connect, args } => change_member(connect, args, pb::MembershipChange::Add),
        GroupCommand::Remove { connect, args } => change_member(connect, args, pb::MembershipChange::Remove),
        GroupCommand::Show { connect, name } => block_on(async {
            let client = connect.client()?;
            let request = pb::GetGroupRequest { name: name.clone() };
            let info = rpc!(&client, TopologyClient::get_group, request)?;
            emit(connect.json, || group_json(&info), || group_text(&info))
        }),
    }
}

fn change_member(connect: &Connect, args: &MemberArgs, change: pb::MembershipChange) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::ChangeGroupMemberRequest {
            group: args.group.clone(),
            member: Some(args.member.clone()),
            change: change.into(),
            session: session(&client).await?,
        };
        let answer = rpc!(&client, TopologyClient::change_group_member, request)?;
        let what = match change {
            pb::MembershipChange::Remove => format!("removed {} from {}", ref_text(&args.member), args.group),
            _ => format!("added {} to {}", ref_text(&args.member), args.group),
        };
        recorded(connect, what, &answer)
    })
}

fn show(connect: &Connect, id: &str) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let info = rpc!(
            &client,
            TopologyClient::get_component,
            pb::GetComponentRequest { id: id.into() }
        )?;
        emit(connect.json, || component_json(&info), || component_text(&info))
    })
}

fn reachable(connect: &Connect, id: &str) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::ReachableThroughRequest { id: id.into() };
        let answer = rpc!(&client, TopologyClient::reachable_through, request)?;
        print_components(
            connect,
            &answer.components,
            &format!("nothing is registered below {id}"),
        )
    })
}

fn not_alive(connect: &Connect) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let answer = rpc!(&client, TopologyClient::not_alive, pb::NotAliveRequest {})?;
        print_components(connect, &answer.components, "every component is alive")
    })
}

/// Components as one JSON object, or one line each.
fn print_components(connect: &Connect, components: &[pb::ComponentInfo], none: &str) -> Result<(), Failure> {
    if connect.json {
        return say(json!({"components": components.iter().map(component_json).collect::<Vec<_>>()}));
    }
    if components.is_empty() {
        return say(none);
    }
    for info in components {
        say(format!(
            "{} {} {}, below {}",
            info.id,
            enum_name::<pb::ComponentKind>(info.kind),
            enum_name::<pb::Liveness>(info.liveness),
            refs_text(&info.parents)
        ))?;
    }
    Ok(())
}

fn status(connect: &Connect, id: &str) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::ComponentStatusRequest { id: id.into() };
        let answer = rpc!(&client, TopologyClient::component_status, request)?;
        let own = enum_name::<pb::Liveness>(answer.own);
        let worst = enum_name::<pb::Liveness>(answer.worst);
        emit(
            connect.json,
            || json!({"id": id, "own": own, "worst": worst}),
            || format!("{id}: {own}; with everything below it: {worst}"),
        )
    })
}

/// A component as JSON.
pub fn component_json(info: &pb::ComponentInfo) -> Value {
    json!({
        "tenant": info.tenant, "id": info.id,
        "kind": enum_name::<pb::ComponentKind>(info.kind), "version": info.version,
        "mode": enum_name::<pb::CommunicationMode>(info.mode), "parents": refs_json(&info.parents),
        "registered": info.registered, "enabled": info.enabled, "forwarding": info.forwarding,
        "registered_at": info.registered_at, "last_seen_ms": info.last_seen_ms,
        "liveness": enum_name::<pb::Liveness>(info.liveness),
    })
}

fn component_text(info: &pb::ComponentInfo) -> String {
    let mut flags = Vec::new();
    if !info.registered {
        flags.push("deregistered");
    }
    if !info.enabled {
        flags.push("not monitored");
    }
    if !info.forwarding {
        flags.push("not forwarding");
    }
    format!(
        "{} ({} {}, {} mode) in {}, below {}\n  registered at position {}; {}; last seen at {} ms{}",
        info.id,
        enum_name::<pb::ComponentKind>(info.kind),
        info.version,
        enum_name::<pb::CommunicationMode>(info.mode),
        info.tenant,
        refs_text(&info.parents),
        info.registered_at,
        enum_name::<pb::Liveness>(info.liveness),
        info.last_seen_ms,
        match flags.is_empty() {
            true => String::new(),
            false => format!("; {}", flags.join(", ")),
        }
    )
}

fn group_json(info: &pb::GroupInfo) -> Value {
    let history: Vec<Value> = info
        .history
        .iter()
        .map(|change| json!({"position": change.position, "member": change.member, "added": change.added}))
        .collect();
    json!({
        "name": info.name, "kind": enum_name::<pb::GroupKind>(info.kind), "defined_at": info.defined_at,
        "members": refs_json(&info.members), "history": history,
    })
}

fn group_text(info: &pb::GroupInfo) -> String {
    let history: Vec<String> = info
        .history
        .iter()
        .map(|change| {
            let sign = if change.added { '+' } else { '-' };
            format!("{sign}{} at {}", change.member, change.position)
        })
        .collect();
    format!(
        "{} ({} group, defined at position {})\n  members: {}\n  history: {}",
        info.name,
        enum_name::<pb::GroupKind>(info.kind),
        info.defined_at,
        refs_text(&info.members),
        match history.is_empty() {
            true => "-".into(),
            false => history.join(", "),
        }
    )
}
