//! `farmlog.v1.Topology`: customers, components, switches, management ids
//! and groups (writes), and what is registered, reachable and alive
//! (reads), in the caller's tenant.
//!
//! The conversions between the topology's protobuf types and the engine's
//! live here, one function per type and direction; the Messages service
//! uses the component ones. [`reaches`] is the scope check of every write
//! that names a component: a scoped principal changes, or speaks for, only
//! what it may act as ([`Context::acts_as`]) and what is registered below
//! that.

use farmlog_engine::state::command::{
    ChangeGroupMember, CommandBody, CommunicationMode, ComponentKind, ComponentRef, DefineGroup, Deregister, GroupKind,
    MapManagementId, RegisterComponent, RegisterCustomer, SetEnabled, Switch, LANDLORD,
};
use farmlog_engine::state::topology::Liveness;
use farmlog_engine::state::view::{ComponentInfo, GroupInfo};
use tonic::{Request, Response, Status};

use crate::auth::{Op, Scope};
use crate::context::{Caller, Context};
use crate::pb::{self, topology_server::Topology};
use crate::status::{invalid, missing};

/// Most components [`reaches`] visits walking up from the one named: the
/// tree is at most a support instance → integration module → proxy →
/// customer MLM deep in a customer's namespace, and a support instance has
/// at most two parents.
pub const REACH_WALK_MAX: usize = 16;

/// The `farmlog.v1.Topology` service.
pub struct TopologyService {
    context: Context,
}

impl TopologyService {
    /// The service over the node and settings every service shares.
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    /// Proposes a topology change and answers where it was recorded.
    async fn record(
        &self,
        caller: &Caller,
        session: Option<pb::Session>,
        body: CommandBody,
    ) -> Result<Response<pb::Recorded>, Status> {
        let (written, outcome) = self.context.applied(caller, session, body).await?;
        let position = outcome
            .position()
            .ok_or_else(|| Status::internal(format!("a topology change applied as {:?}", outcome.verdict)))?;
        Ok(Response::new(pb::Recorded {
            position,
            written: Some(written),
        }))
    }
}

// ------------------------------------------------------------ scope

/// Checks that the caller's scope reaches `component`: a principal of the
/// whole customer reaches everything its tenant may name; any other one
/// must act as the component ([`Context::acts_as`]) or as a component above
/// it (a proxy scoped to itself speaks for its integration modules and
/// support instances; a landlord MLM for the customers' components below
/// hosted ones). NOT_FOUND otherwise, like a missing component.
pub fn reaches(context: &Context, caller: &Caller, component: &ComponentRef) -> Result<(), Status> {
    let principal = &caller.principal;
    if !principal.is_landlord() && principal.scope == Scope::Whole {
        return Ok(());
    }
    let refused = match context.acts_as(caller, component) {
        Ok(()) => return Ok(()),
        Err(refused) => refused,
    };
    if component.hosted {
        return Err(refused);
    }
    let above = ancestors(context, caller, &component.id);
    match above.iter().any(|ancestor| context.acts_as(caller, ancestor).is_ok()) {
        true => Ok(()),
        false => Err(refused),
    }
}

/// The components above `id` in the caller's tenant, nearest first, at
/// most [`REACH_WALK_MAX`]; a hosted one ends its branch. Read from this
/// node's applied state, like [`Context::acts_as`] reads groups.
fn ancestors(context: &Context, caller: &Caller, id: &str) -> Vec<ComponentRef> {
    context.node().read_local(|applier| {
        let mut found: Vec<ComponentRef> = Vec::new();
        let Some(view) = applier.state.view(&caller.tenant) else {
            return found;
        };
        let mut walk = vec![id.to_string()];
        let mut at = 0;
        while let Some(id) = walk.get(at).cloned() {
            at += 1;
            let parents = view.component(&id).map(|info| info.parents).unwrap_or_default();
            for (tenant, parent) in parents {
                let reference = ComponentRef {
                    hosted: tenant != caller.tenant,
                    id: parent,
                };
                if found.len() == REACH_WALK_MAX {
                    return found;
                }
                if found.contains(&reference) {
                    continue;
                }
                if !reference.hosted {
                    walk.push(reference.id.clone());
                }
                found.push(reference);
            }
        }
        found
    })
}

// ------------------------------------------------------------ conversions

/// An enum field left at 0 (unspecified) or set to a value this build does
/// not know (for the enums whose 0 is `*_UNSPECIFIED`, never valid).
pub(crate) fn bad_enum(field: &str, value: i32) -> Status {
    match value {
        0 => invalid(field, "required (0 is unspecified)"),
        _ => invalid(field, format!("unknown value {value}")),
    }
}

/// A component kind from a request; `field` names it in errors.
pub fn kind_from_pb(value: i32, field: &str) -> Result<ComponentKind, Status> {
    match pb::ComponentKind::try_from(value) {
        Ok(pb::ComponentKind::Proxy) => Ok(ComponentKind::Proxy),
        Ok(pb::ComponentKind::IntegrationModule) => Ok(ComponentKind::IntegrationModule),
        Ok(pb::ComponentKind::SupportInstance) => Ok(ComponentKind::SupportInstance),
        Ok(pb::ComponentKind::CustomerMlm) => Ok(ComponentKind::CustomerMlm),
        Ok(pb::ComponentKind::AggregationMlm) => Ok(ComponentKind::AggregationMlm),
        Ok(pb::ComponentKind::ApplicationsMlm) => Ok(ComponentKind::ApplicationsMlm),
        Ok(pb::ComponentKind::ApplicationServer) => Ok(ComponentKind::ApplicationServer),
        Ok(pb::ComponentKind::Unspecified) | Err(_) => Err(bad_enum(field, value)),
    }
}

/// A component kind for an answer.
pub fn kind_to_pb(kind: ComponentKind) -> pb::ComponentKind {
    match kind {
        ComponentKind::Proxy => pb::ComponentKind::Proxy,
        ComponentKind::IntegrationModule => pb::ComponentKind::IntegrationModule,
        ComponentKind::SupportInstance => pb::ComponentKind::SupportInstance,
        ComponentKind::CustomerMlm => pb::ComponentKind::CustomerMlm,
        ComponentKind::AggregationMlm => pb::ComponentKind::AggregationMlm,
        ComponentKind::ApplicationsMlm => pb::ComponentKind::ApplicationsMlm,
        ComponentKind::ApplicationServer => pb::ComponentKind::ApplicationServer,
    }
}

fn mode_from_pb(value: i32, field: &str) -> Result<CommunicationMode, Status> {
    match pb::CommunicationMode::try_from(value) {
        Ok(pb::CommunicationMode::Session) => Ok(CommunicationMode::Session),
        Ok(pb::CommunicationMode::Message) => Ok(CommunicationMode::Message),
        Ok(pb::CommunicationMode::Unspecified) | Err(_) => Err(bad_enum(field, value)),
    }
}

fn mode_to_pb(mode: CommunicationMode) -> pb::CommunicationMode {
    match mode {
        CommunicationMode::Session => pb::CommunicationMode::Session,
        CommunicationMode::Message => pb::CommunicationMode::Message,
    }
}

fn switch_from_pb(value: i32, field: &str) -> Result<Switch, Status> {
    match pb::Switch::try_from(value) {
        Ok(pb::Switch::SupportInstance) => Ok(Switch::SupportInstance),
        Ok(pb::Switch::ProxyForwarding) => Ok(Switch::ProxyForwarding),
        Ok(pb::Switch::Unspecified) | Err(_) => Err(bad_enum(field, value)),
    }
}

fn group_kind_from_pb(value: i32, field: &str) -> Result<GroupKind, Status> {
    match pb::GroupKind::try_from(value) {
        Ok(pb::GroupKind::Mlm) => Ok(GroupKind::Mlm),
        Ok(pb::GroupKind::Proxy) => Ok(GroupKind::Proxy),
        Ok(pb::GroupKind::Security) => Ok(GroupKind::Security),
        Ok(pb::GroupKind::Unspecified) | Err(_) => Err(bad_enum(field, value)),
    }
}

fn group_kind_to_pb(kind: GroupKind) -> pb::GroupKind {
    match kind {
        GroupKind::Mlm => pb::GroupKind::Mlm,
        GroupKind::Proxy => pb::GroupKind::Proxy,
        GroupKind::Security => pb::GroupKind::Security,
    }
}

/// True adds, false removes.
fn membership_change_from_pb(value: i32, field: &str) -> Result<bool, Status> {
    match pb::MembershipChange::try_from(value) {
        Ok(pb::MembershipChange::Add) => Ok(true),
        Ok(pb::MembershipChange::Remove) => Ok(false),
        Ok(pb::MembershipChange::Unspecified) | Err(_) => Err(bad_enum(field, value)),
    }
}

fn liveness_to_pb(liveness: Liveness) -> pb::Liveness {
    match liveness {
        Liveness::Alive => pb::Liveness::Alive,
        Liveness::Late => pb::Liveness::Late,
        Liveness::Failed => pb::Liveness::Failed,
    }
}

/// A component reference from a request.
pub fn component_ref_from_pb(reference: pb::ComponentRef) -> ComponentRef {
    ComponentRef {
        hosted: reference.hosted,
        id: reference.id,
    }
}

/// A component reference the request must carry.
pub fn required_ref(reference: Option<pb::ComponentRef>, field: &str) -> Result<ComponentRef, Status> {
    reference.map(component_ref_from_pb).ok_or_else(|| missing(field))
}

/// A (tenant, id) the view names, as a reference made from `home`'s
/// namespace: a customer's components hang below their own tenant's or
/// the landlord's, so any other tenant is the landlord's.
fn named_to_pb((tenant, id): (String, String), home: &str) -> pb::ComponentRef {
    pb::ComponentRef {
        hosted: tenant != home,
        id,
    }
}

fn component_to_pb(info: ComponentInfo) -> pb::ComponentInfo {
    let home = info.tenant.clone();
    pb::ComponentInfo {
        parents: info
            .parents
            .into_iter()
            .map(|parent| named_to_pb(parent, &home))
            .collect(),
        tenant: info.tenant,
        id: info.id,
        kind: kind_to_pb(info.kind).into(),
        version: info.version,
        mode: mode_to_pb(info.mode).into(),
        registered: info.registered,
        enabled: info.enabled,
        forwarding: info.forwarding,
        registered_at: info.registered_at,
        last_seen_ms: info.last_seen_ms,
        liveness: liveness_to_pb(info.liveness).into(),
    }
}

fn components_to_pb(infos: Vec<ComponentInfo>) -> pb::ComponentsResponse {
    pb::ComponentsResponse {
        components: infos.into_iter().map(component_to_pb).collect(),
    }
}

fn group_to_pb(name: String, info: GroupInfo, home: &str) -> pb::GroupInfo {
    pb::GroupInfo {
        name,
        kind: group_kind_to_pb(info.kind).into(),
        defined_at: info.defined_at,
        members: info
            .members
            .into_iter()
            .map(|member| named_to_pb(member, home))
            .collect(),
        history: info
            .history
            .into_iter()
            .map(|(position, member, added)| pb::GroupChange {
                position,
                member,
                added,
            })
            .collect(),
    }
}

fn component_not_found(id: &str) -> Status {
    Status::not_found(format!("component {id:?} not found"))
}

// ------------------------------------------------------------ service

#[tonic::async_trait]
impl Topology for TopologyService {
    async fn register_customer(
        &self,
        request: Request<pb::RegisterCustomerRequest>,
    ) -> Result<Response<pb::Recorded>, Status> {
        let caller = self.context.caller(&request, Op::RegisterCustomer)?;
        // Customers are registered in the landlord's namespace, whichever
        // customer the call names.
        let caller = Caller {
            tenant: LANDLORD.to_string(),
            ..caller
        };
        let pb::RegisterCustomerRequest {
            tenant,
            display_name,
            session,
        } = request.into_inner();
        let body = CommandBody::RegisterCustomer(RegisterCustomer {
            name: tenant,
            display_name,
        });
        self.record(&caller, session, body).await
    }

    async fn register_component(
        &self,
        request: Request<pb::RegisterComponentRequest>,
    ) -> Result<Response<pb::Recorded>, Status> {
        let caller = self.context.caller(&request, Op::RegisterComponent)?;
        let pb::RegisterComponentRequest {
            id,
            kind,
            version,
            mode,
            parents,
            session,
        } = request.into_inner();
        let body = RegisterComponent {
            id,
            kind: kind_from_pb(kind, "kind")?,
            version,
            mode: mode_from_pb(mode, "mode")?,
            parents: parents.into_iter().map(component_ref_from_pb).collect(),
        };
        for parent in &body.parents {
            reaches(&self.context, &caller, parent)?;
        }
        self.record(&caller, session, CommandBody::RegisterComponent(body))
            .await
    }

    async fn set_enabled(&self, request: Request<pb::SetEnabledRequest>) -> Result<Response<pb::Recorded>, Status> {
        let caller = self.context.caller(&request, Op::SetEnabled)?;
        let pb::SetEnabledRequest {
            component,
            switch,
            enabled,
            session,
        } = request.into_inner();
        let body = SetEnabled {
            switch: switch_from_pb(switch, "switch")?,
            component,
            enabled,
        };
        let target = ComponentRef {
            hosted: false,
            id: body.component.clone(),
        };
        reaches(&self.context, &caller, &target)?;
        self.record(&caller, session, CommandBody::SetEnabled(body)).await
    }

    async fn deregister(&self, request: Request<pb::DeregisterRequest>) -> Result<Response<pb::Recorded>, Status> {
        let caller = self.context.caller(&request, Op::Deregister)?;
        let pb::DeregisterRequest { component, session } = request.into_inner();
        let component = required_ref(component, "component")?;
        reaches(&self.context, &caller, &component)?;
        self.record(&caller, session, CommandBody::Deregister(Deregister { component }))
            .await
    }

    async fn map_management_id(
        &self,
        request: Request<pb::MapManagementIdRequest>,
    ) -> Result<Response<pb::Recorded>, Status> {
        let caller = self.context.caller(&request, Op::MapManagementId)?;
        let pb::MapManagementIdRequest {
            proxy,
            management_id,
            component,
            session,
        } = request.into_inner();
        let target = ComponentRef {
            hosted: false,
            id: proxy.clone(),
        };
        reaches(&self.context, &caller, &target)?;
        let body = CommandBody::MapManagementId(MapManagementId {
            proxy,
            management_id,
            component,
        });
        self.record(&caller, session, body).await
    }

    async fn define_group(&self, request: Request<pb::DefineGroupRequest>) -> Result<Response<pb::Recorded>, Status> {
        let caller = self.context.caller(&request, Op::DefineGroup)?;
        let pb::DefineGroupRequest { name, kind, session } = request.into_inner();
        let body = CommandBody::DefineGroup(DefineGroup {
            name,
            kind: group_kind_from_pb(kind, "kind")?,
        });
        self.record(&caller, session, body).await
    }

    async fn change_group_member(
        &self,
        request: Request<pb::ChangeGroupMemberRequest>,
    ) -> Result<Response<pb::Recorded>, Status> {
        let caller = self.context.caller(&request, Op::ChangeGroupMember)?;
        let pb::ChangeGroupMemberRequest {
            group,
            member,
            change,
            session,
        } = request.into_inner();
        let body = ChangeGroupMember {
            group,
            member: required_ref(member, "member")?,
            add: membership_change_from_pb(change, "change")?,
        };
        // A scoped principal cannot widen a group (its own security group,
        // say) beyond what it reaches.
        reaches(&self.context, &caller, &body.member)?;
        self.record(&caller, session, CommandBody::ChangeGroupMember(body))
            .await
    }

    async fn get_component(
        &self,
        request: Request<pb::GetComponentRequest>,
    ) -> Result<Response<pb::ComponentInfo>, Status> {
        let caller = self.context.caller(&request, Op::ReadTopology)?;
        let id = request.get_ref().id.as_str();
        self.context
            .read(&request, &caller, |view, _| {
                let info = view.component(id).ok_or_else(|| component_not_found(id))?;
                Ok(component_to_pb(info))
            })
            .await
    }

    async fn reachable_through(
        &self,
        request: Request<pb::ReachableThroughRequest>,
    ) -> Result<Response<pb::ComponentsResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadTopology)?;
        let id = request.get_ref().id.as_str();
        self.context
            .read(&request, &caller, |view, _| {
                let below = view.reachable_through(id).ok_or_else(|| component_not_found(id))?;
                Ok(components_to_pb(below))
            })
            .await
    }

    async fn component_status(
        &self,
        request: Request<pb::ComponentStatusRequest>,
    ) -> Result<Response<pb::ComponentStatusResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadTopology)?;
        let id = request.get_ref().id.as_str();
        self.context
            .read(&request, &caller, |view, _| {
                let (own, worst) = view.status(id).ok_or_else(|| component_not_found(id))?;
                Ok(pb::ComponentStatusResponse {
                    own: liveness_to_pb(own).into(),
                    worst: liveness_to_pb(worst).into(),
                })
            })
            .await
    }

    async fn not_alive(
        &self,
        request: Request<pb::NotAliveRequest>,
    ) -> Result<Response<pb::ComponentsResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadTopology)?;
        self.context
            .read(&request, &caller, |view, _| Ok(components_to_pb(view.not_alive())))
            .await
    }

    async fn resolve_management_id(
        &self,
        request: Request<pb::ResolveManagementIdRequest>,
    ) -> Result<Response<pb::ComponentInfo>, Status> {
        let caller = self.context.caller(&request, Op::ReadTopology)?;
        let pb::ResolveManagementIdRequest { proxy, management_id } = request.get_ref();
        self.context
            .read(&request, &caller, |view, _| {
                let info = view.management_id(proxy, management_id).ok_or_else(|| {
                    Status::not_found(format!("management id {management_id:?} of proxy {proxy:?} not found"))
                })?;
                Ok(component_to_pb(info))
            })
            .await
    }

    async fn get_group(&self, request: Request<pb::GetGroupRequest>) -> Result<Response<pb::GroupInfo>, Status> {
        let caller = self.context.caller(&request, Op::ReadTopology)?;
        let name = request.get_ref().name.as_str();
        self.context
            .read(&request, &caller, |view, _| {
                let info = view
                    .group(name)
                    .ok_or_else(|| Status::not_found(format!("group {name:?} not found")))?;
                Ok(group_to_pb(name.to_string(), info, view.tenant()))
            })
            .await
    }
}
