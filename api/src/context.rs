//! What every service shares: the node, and the steps of every call —
//! who is calling ([`Context::caller`]), in which tenant, may they
//! ([`crate::auth`]), propose a command ([`Context::write`]) or read the
//! applied state ([`Context::read`]).
//!
//! Architecture invariant: a service never proposes or reads except
//! through this module, so every call is authenticated, authorized and
//! answered with the same statuses and headers (`common.proto` lists
//! them).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use farmlog_engine::state::batch::{encode, EncodedCommand};
use farmlog_engine::state::command::{Command, CommandBody, ComponentRef, SessionRef, LANDLORD, SCHEMA_VERSION};
use farmlog_engine::state::outcome::{Outcome, Verdict};
use farmlog_engine::state::read::{EventRecord, ReadError as EventReadError};
use farmlog_engine::state::{Place, TenantView};
use farmlog_replica::state_machine::Applier;
use farmlog_replica::{Node, NodeId, ProposeError, ReadError};
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::auth::{allowed, Op, Principal, Scope, NODE_PRINCIPAL};
use crate::metrics::Metrics;
use crate::pb;
use crate::quota::Quotas;
use crate::status;

/// A landlord principal acts in a customer's namespace with this header.
pub const TENANT_HEADER: &str = "farmlog-tenant";
/// The leader's address, on an UNAVAILABLE answer from a follower.
pub const LEADER_HEADER: &str = "farmlog-leader";
/// `follower` lets any node answer a read from what it has applied.
pub const READ_HEADER: &str = "farmlog-read";
/// The applied log index a read was answered at.
pub const APPLIED_HEADER: &str = "farmlog-applied-index";
/// In `--insecure` mode only (no TLS, no certificates): the principal a
/// caller claims. Never read when TLS is on.
pub const PRINCIPAL_HEADER: &str = "farmlog-principal";

/// How callers are identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Mutual TLS: the client certificate's principal.
    Certificates,
    /// Development only: the [`PRINCIPAL_HEADER`] is believed.
    InsecureHeader,
}

/// The node and the settings every service shares; cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<Node>,
    identity: Identity,
    quotas: Quotas,
    subscriptions: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
}

/// An authenticated, authorized caller and the tenant it acts in.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub tenant: String,
}

impl Context {
    pub fn new(node: Arc<Node>, identity: Identity, quotas: Quotas) -> Self {
        let metrics = Arc::new(Metrics::new(node.clone()));
        Self {
            inner: Arc::new(Inner {
                node,
                identity,
                quotas,
                subscriptions: Arc::new(tokio::sync::Semaphore::new(SUBSCRIPTIONS_MAX)),
                metrics,
            }),
        }
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Proposes a Tick as the node itself, so that log time (and with it
    /// expiries, visibility timeouts, retries and liveness) advances when
    /// no client writes. See [`crate::ticker`].
    pub async fn tick(&self) -> Result<(), Status> {
        let command = Command {
            schema_version: SCHEMA_VERSION,
            tenant: LANDLORD.to_string(),
            principal: NODE_PRINCIPAL.to_string(),
            proposed_at_ms: now_ms(),
            session: None,
            encryption: None,
            body: CommandBody::Tick,
        };
        let encoded = encode(&command).map_err(|error| Status::internal(error.to_string()))?;
        self.node()
            .propose(encoded)
            .await
            .map_err(|error| self.propose_error(error))?;
        Ok(())
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.inner.node
    }

    /// The principal of the call's client certificate (or, insecure, its
    /// header): UNAUTHENTICATED without one.
    pub fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        match self.inner.identity {
            Identity::Certificates => {
                let certificates = request
                    .peer_certs()
                    .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
                let leaf = certificates
                    .first()
                    .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
                Principal::from_certificate(leaf.as_ref()).map_err(|error| Status::unauthenticated(error.to_string()))
            }
            Identity::InsecureHeader => {
                let claimed = request
                    .metadata()
                    .get(PRINCIPAL_HEADER)
                    .ok_or_else(|| {
                        Status::unauthenticated(format!("insecure mode: send the {PRINCIPAL_HEADER} header"))
                    })?
                    .to_str()
                    .map_err(|_| Status::unauthenticated(format!("{PRINCIPAL_HEADER} is not text")))?;
                Principal::parse(claimed).map_err(|error| Status::unauthenticated(error.to_string()))
            }
        }
    }

    /// Authenticates the caller, checks that its role may call `op`
    /// (PERMISSION_DENIED otherwise), and settles the tenant it acts in.
    pub fn caller<T>(&self, request: &Request<T>, op: Op) -> Result<Caller, Status> {
        let principal = self.principal(request)?;
        if !allowed(&principal, op) {
            return Err(Status::permission_denied(format!(
                "{principal} may not call {op:?} (see docs/auth.md)"
            )));
        }
        let named = request
            .metadata()
            .get(TENANT_HEADER)
            .map(|value| {
                value
                    .to_str()
                    .map(str::to_string)
                    .map_err(|_| Status::invalid_argument(format!("{TENANT_HEADER} is not text")))
            })
            .transpose()?;
        let tenant = match (principal.is_landlord(), named) {
            (_, None) => principal.tenant.clone(),
            (true, Some(tenant)) => tenant,
            (false, Some(tenant)) if tenant == principal.tenant => tenant,
            // Another tenant is not found, like a missing one.
            (false, Some(tenant)) => return Err(Status::not_found(format!("tenant {tenant:?} not found"))),
        };
        Ok(Caller { principal, tenant })
    }

    /// Proposes `body` in the caller's tenant; returns where it landed and
    /// its outcome, or the status a client gets: UNAVAILABLE (with the
    /// leader's address) on a follower, RESOURCE_EXHAUSTED over a quota,
    /// INVALID_ARGUMENT naming the field. A rejected command (it stays in
    /// the log, with no effect) is returned as an `Outcome`; see
    /// [`Context::applied`].
    ///
    /// When it returns `Ok`, the command is committed on a quorum of
    /// nodes (durable on each) and applied on this one.
    pub async fn write(
        &self,
        caller: &Caller,
        session: Option<pb::Session>,
        body: CommandBody,
    ) -> Result<(Place, Outcome), Status> {
        let encoded = self.command(caller, session, body)?;
        let started = std::time::Instant::now();
        let result = self.node().propose(encoded).await;
        self.observe(&result, started);
        result.map_err(|error| self.propose_error(error))
    }

    /// Counts a proposed write's result in the metrics.
    fn observe(&self, result: &Result<(Place, Outcome), ProposeError>, started: std::time::Instant) {
        match result {
            Ok((_, outcome)) if outcome.is_applied() => self.inner.metrics.write("applied", Some(started.elapsed())),
            Ok(_) => self.inner.metrics.write("rejected", Some(started.elapsed())),
            Err(_) => self.inner.metrics.write("failed", None),
        }
    }

    /// Proposes several commands in the caller's tenant together, so that
    /// they share as few Raft entries as the entry bounds allow (see
    /// `Node::propose_many`): one result per write, in order, each what
    /// [`Context::write`] would have returned for it alone. One failing
    /// does not stop the others.
    pub async fn write_many(
        &self,
        caller: &Caller,
        writes: Vec<(Option<pb::Session>, CommandBody)>,
    ) -> Vec<Result<(Place, Outcome), Status>> {
        // None: proposed, its result comes from `propose_many`, in order.
        let mut refused = Vec::with_capacity(writes.len());
        let mut commands = Vec::with_capacity(writes.len());
        for (session, body) in writes {
            match self.command(caller, session, body) {
                Ok(command) => {
                    commands.push(command);
                    refused.push(None);
                }
                Err(status) => refused.push(Some(status)),
            }
        }
        let started = std::time::Instant::now();
        let proposed = self.node().propose_many(commands).await;
        proposed.iter().for_each(|result| self.observe(result, started));
        let mut proposed = proposed.into_iter();
        refused
            .into_iter()
            .map(|refused| match refused {
                Some(status) => Err(status),
                None => match proposed.next() {
                    Some(result) => result.map_err(|error| self.propose_error(error)),
                    // propose_many answers each command it was given.
                    None => Err(Status::internal("a proposed command got no result")),
                },
            })
            .collect()
    }

    /// The caller's command for `body`, encoded and admitted by the
    /// tenant's quota.
    fn command(
        &self,
        caller: &Caller,
        session: Option<pb::Session>,
        body: CommandBody,
    ) -> Result<EncodedCommand, Status> {
        let command = Command {
            schema_version: SCHEMA_VERSION,
            tenant: caller.tenant.clone(),
            principal: caller.principal.uri(),
            proposed_at_ms: now_ms(),
            session: session.map(|session| SessionRef {
                client_id: session.client_id,
                sequence: session.sequence,
            }),
            encryption: None,
            body,
        };
        let encoded = encode(&command).map_err(|error| {
            self.inner.metrics.write("invalid", None);
            Status::invalid_argument(error.to_string())
        })?;
        if let Err(status) = self.inner.quotas.admit(&caller.tenant, encoded.bytes().len() as u64) {
            self.inner.metrics.write("over_quota", None);
            return Err(status);
        }
        Ok(encoded)
    }

    /// A write whose command must have applied: a rejection becomes its
    /// status (see [`status::rejection`]).
    pub async fn applied(
        &self,
        caller: &Caller,
        session: Option<pb::Session>,
        body: CommandBody,
    ) -> Result<(pb::Written, Outcome), Status> {
        let (place, outcome) = self.write(caller, session, body).await?;
        applied(place, outcome)
    }

    /// Reads the applied state in the caller's tenant: linearizable (on the
    /// leader) unless the request opts into a follower read. The caller's
    /// tenant must be registered (NOT_FOUND otherwise).
    pub async fn read<T, R>(
        &self,
        request: &Request<T>,
        caller: &Caller,
        read: impl FnOnce(TenantView<'_>, &Applier) -> Result<R, Status>,
    ) -> Result<tonic::Response<R>, Status> {
        let follower = request
            .metadata()
            .get(READ_HEADER)
            .is_some_and(|value| value.as_bytes() == b"follower");
        let tenant = caller.tenant.as_str();
        let answer = |applier: &Applier| {
            let view = applier
                .state
                .view(tenant)
                .ok_or_else(|| Status::not_found(format!("tenant {tenant:?} not found")))?;
            let applied = applier.applied.map_or(0, |applied| applied.index);
            read(view, applier).map(|answer| (answer, applied))
        };
        let (answer, applied) = match follower {
            true => self.node().read_local(answer)?,
            false => self
                .node()
                .read(answer)
                .await
                .map_err(|error| self.read_error(error))??,
        };
        let mut response = tonic::Response::new(answer);
        response
            .metadata_mut()
            .insert(APPLIED_HEADER, MetadataValue::from(applied));
        Ok(response)
    }

    /// Checks that the caller may act as `component`: a tenant principal
    /// only as its own components inside its scope, a landlord principal
    /// as hosted ones (an admin as any). Outside the scope is NOT_FOUND,
    /// like a missing component.
    pub fn acts_as(&self, caller: &Caller, component: &ComponentRef) -> Result<(), Status> {
        let principal = &caller.principal;
        let not_found = || Status::not_found(format!("component {:?} not found", component.id));
        if principal.is_landlord() {
            let hosted = component.hosted || caller.tenant == LANDLORD;
            return match hosted || principal.role == crate::auth::Role::Admin {
                true => Ok(()),
                false => Err(not_found()),
            };
        }
        if component.hosted {
            return Err(not_found());
        }
        match &principal.scope {
            Scope::Whole => Ok(()),
            Scope::Component(id) if *id == component.id => Ok(()),
            Scope::Component(_) => Err(not_found()),
            Scope::Group(group) => {
                let member = self.node().read_local(|applier| {
                    applier
                        .state
                        .view(&caller.tenant)
                        .and_then(|view| view.group(group))
                        .is_some_and(|info| {
                            info.members
                                .iter()
                                .any(|(tenant, id)| *tenant == caller.tenant && *id == component.id)
                        })
                });
                match member {
                    true => Ok(()),
                    false => Err(not_found()),
                }
            }
        }
    }

    /// Reads the event at `position` of the caller's tenant from the log.
    pub fn event(&self, view: &TenantView<'_>, position: u64) -> Result<EventRecord, Status> {
        view.event(self.node().log(), position).map_err(|error| match error {
            EventReadError::NoSuchPosition { position } => {
                Status::not_found(format!("no event at position {position}"))
            }
            other => Status::unavailable(format!("the event cannot be read here: {other}")),
        })
    }

    /// The address of node `id`, as the membership names it.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.node().raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone())
    }

    fn not_leader(&self, leader: Option<NodeId>) -> Status {
        let address = leader.and_then(|leader| self.address_of(leader));
        let message = match (leader, &address) {
            (Some(leader), Some(address)) => {
                format!("this node is not the leader; the leader is node {leader} at {address}")
            }
            _ => "this node is not the leader, and no leader is known yet; retry shortly".to_string(),
        };
        let mut status = Status::unavailable(message);
        if let Some(value) = address.and_then(|address| address.parse().ok()) {
            status.metadata_mut().insert(LEADER_HEADER, value);
        }
        status
    }

    fn propose_error(&self, error: ProposeError) -> Status {
        match error {
            ProposeError::NotLeader { leader } => self.not_leader(leader),
            ProposeError::Unknown { reason } => Status::unavailable(format!(
                "the outcome is unknown ({reason}); retry with the same session sequence to apply it at most once"
            )),
            ProposeError::Stopped => Status::unavailable("the node is shutting down; nothing was written"),
            ProposeError::TooLarge => Status::invalid_argument("command: too large for one log entry"),
            error @ ProposeError::DiskNearlyFull { .. } => Status::resource_exhausted(error.to_string()),
            error @ ProposeError::SchemaNotEnabled { .. } => Status::failed_precondition(error.to_string()),
        }
    }

    fn read_error(&self, error: ReadError) -> Status {
        match error {
            ReadError::NotLeader { leader } => self.not_leader(leader),
            ReadError::Unavailable { reason } => Status::unavailable(reason),
        }
    }
}

/// A written command that must have applied: a rejection becomes its
/// status (see [`status::rejection`]); otherwise where it landed.
pub fn applied(place: Place, outcome: Outcome) -> Result<(pb::Written, Outcome), Status> {
    if let Verdict::Rejected(rejection) = &outcome.verdict {
        return Err(status::rejection(rejection));
    }
    let written = pb::Written {
        log_index: place.index,
        slot: place.slot,
        retried: outcome.retried,
    };
    Ok((written, outcome))
}

/// The wall clock in milliseconds since the epoch (the proposer's
/// timestamp; log time never goes backwards whatever it says).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Items a subscription holds for a client that has not read them yet;
/// a slow client stops its subscription here rather than growing memory.
pub const SUBSCRIPTION_BUFFER: usize = 64;
/// Subscriptions one node serves at once; past this, RESOURCE_EXHAUSTED.
pub const SUBSCRIPTIONS_MAX: usize = 1024;
/// Items one catch-up step reads before it hands them on.
pub const SUBSCRIPTION_PAGE: usize = 256;
/// A subscription caught up re-checks at least this often (it is woken
/// at once when this node applies more).
pub const SUBSCRIPTION_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// A server stream of `T`.
pub type Subscription<T> = tokio_stream::wrappers::ReceiverStream<Result<T, Status>>;

impl Context {
    /// Follows the applied state for a subscriber: `next` is called with
    /// the caller's tenant view and returns the next items after its own
    /// cursor (at most [`SUBSCRIPTION_PAGE`]), or none when it has caught
    /// up; then the subscription waits until this node applies more. It
    /// ends when the client goes away or `next` fails (the client gets the
    /// status). Flow control: at most [`SUBSCRIPTION_BUFFER`] items wait
    /// for the client; then the subscription waits for it.
    pub fn follow<T, F>(&self, caller: &Caller, mut next: F) -> Result<Subscription<T>, Status>
    where
        T: Send + 'static,
        F: FnMut(TenantView<'_>, &Applier) -> Result<Vec<T>, Status> + Send + 'static,
    {
        let permit = self.inner.subscriptions.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!("this node serves {SUBSCRIPTIONS_MAX} subscriptions already"))
        })?;
        let (sender, receiver) = tokio::sync::mpsc::channel(SUBSCRIPTION_BUFFER);
        let node = self.node().clone();
        let tenant = caller.tenant.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut applied = node.raft.metrics();
            loop {
                let page = node.read_local(|applier| match applier.state.view(&tenant) {
                    Some(view) => next(view, applier),
                    None => Err(Status::not_found(format!("tenant {tenant:?} not found"))),
                });
                match page {
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                    Ok(items) if items.is_empty() => {
                        tokio::select! {
                            changed = applied.changed() => if changed.is_err() { return },
                            _ = tokio::time::sleep(SUBSCRIPTION_POLL) => {}
                            _ = sender.closed() => return,
                        }
                    }
                    Ok(items) => {
                        for item in items {
                            if sender.send(Ok(item)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }
}
