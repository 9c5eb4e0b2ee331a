//! Upstream bulk-transfer authorization (seed 001 Fig 20–21): a component
//! (a proxy, typically) asks with a short bulk-request message to send bulk
//! data up to the provider; any hop on its path may deny, an applications
//! MLM or application server grants with a URL to POST to, and the proxy
//! marks the data transferred.
//!
//! The payload never enters the log: the bulk data goes out of band, to the
//! granted URL, and no hop on the path sees it. Only the authorization is
//! logged: the request message (stored by [`super::messages`], which calls
//! [`Transfers::observe`]) and each [`TransferStep`]. This projection holds,
//! per tenant and by the request's message id, where each transfer stands.
//!
//! Invariants:
//! - **Phases.** Requested → Granted → Transferred, or Requested → Denied →
//!   Requested again (by the retry timer, or by the requester resubmitting).
//!   A resubmission after Transferred starts a fresh transfer under the same
//!   id; one while Granted changes nothing.
//! - **On the path.** A hop that grants or denies has the requester below
//!   it; the hop that marks the data transferred is the requester or a proxy
//!   it is below.
//! - **All or nothing.** A step is checked completely before anything
//!   changes; a rejected step gets no position and leaves the transfer as it
//!   was.
//! - **Namespaces.** Requests are found in the command's tenant only: another
//!   tenant's request is "not found", like a missing one.
//! - **Lazy retries.** A retry timer re-checks when it fires: one left over
//!   from an earlier denial (the transfer was resubmitted and denied again
//!   since) does nothing.
//! - **Bounded.** A transfer keeps its latest [`DENIALS_KEPT`] denials.

use rkyv::{Archive, Deserialize, Serialize};

use super::command::*;
use super::outcome::{Effect, Object, Rejection, TransferPhase, Verdict};
use super::table::{Name, Slot, Table};
use super::timers::Timer;
use super::topology::Topology;
use super::{per_slot, Context};

/// Most denials a transfer keeps; the oldest is dropped first.
pub const DENIALS_KEPT: usize = 16;
const _: () = assert!(DENIALS_KEPT > 0);
const _: () = assert!(TRANSFER_RETRY_MS_DEFAULT > 0 && TRANSFER_RETRY_MS_DEFAULT <= TRANSFER_RETRY_MS_MAX);

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Transfers {
    /// Per tenant slot: request message id → transfer, in order of first
    /// request.
    by_request: Vec<Table<Name, Transfer>>,
}

/// One upstream bulk transfer and where its authorization stands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The bulk request's source component.
    pub requester: Slot,
    /// Bytes the requester wants to send.
    pub size: u64,
    /// The request message's class and subclass.
    pub class: Name,
    pub subclass: Name,
    /// Position of the request message (of the latest one, after a
    /// transferred transfer started over).
    pub requested_at: u64,
    pub phase: TransferPhase,
    /// Times requested: the first request, resubmissions and retries.
    pub requests: u32,
    /// Where to POST the data, once granted.
    pub url: Option<String>,
    /// The log time of the retry, while denied.
    pub retry_at_ms: Option<u64>,
    /// The latest [`DENIALS_KEPT`] denials, oldest first.
    pub denials: Vec<Denial>,
    /// Position of the grant.
    pub granted_at: Option<u64>,
    /// Position of the step that marked the data sent.
    pub transferred_at: Option<u64>,
}

/// A hop's refusal of a transfer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub position: u64,
    pub hop: Slot,
    pub reason: String,
}

type Outcome<T> = Result<T, Rejection>;

impl Transfers {
    /// Called for every upstream message that was stored (not a duplicate)
    /// at `position`; records a transfer when it is a bulk request.
    pub(super) fn observe(
        &mut self,
        context: &mut Context<'_>,
        topology: &Topology,
        message: &ArchivedUpstreamMessage,
        position: u64,
    ) {
        let ArchivedContent::BulkRequest(request) = &message.content else {
            return;
        };
        let tenant = context.tenant;
        let header = &message.header;
        let requester = topology
            .registered(tenant, header.source.as_str())
            .expect("the message was stored, so its source is registered");
        let fresh = || Transfer::requested(requester, header, request, position);
        let transfers = per_slot(&mut self.by_request, tenant);
        let Some(slot) = transfers.slot(header.message_id.as_str()) else {
            transfers.insert(Name::from(header.message_id.as_str()), fresh());
            return;
        };
        let transfer = transfers.get_mut(slot);
        match transfer.phase {
            TransferPhase::Transferred => *transfer = fresh(),
            // The proxy resubmitted (its watchdog, seed 001 step 2050).
            TransferPhase::Requested | TransferPhase::Denied => transfer.request_again(),
            // The requester already holds a URL: a late copy changes nothing.
            TransferPhase::Granted => {}
        }
    }

    pub(super) fn step(
        &mut self,
        context: &mut Context<'_>,
        topology: &Topology,
        body: &ArchivedTransferStep,
    ) -> Verdict {
        match self.try_step(context, topology, body) {
            Ok(position) => Verdict::Applied(Effect::Recorded { position }),
            Err(rejection) => Verdict::Rejected(rejection),
        }
    }

    fn try_step(
        &mut self,
        context: &mut Context<'_>,
        topology: &Topology,
        body: &ArchivedTransferStep,
    ) -> Outcome<u64> {
        let tenant = context.tenant;
        let request = body.request.as_str();
        let transfer = self.transfer_mut(tenant, request);
        let transfer = transfer.ok_or(Rejection::NotFound {
            object: Object::Transfer,
        })?;
        let hop = topology.resolve(tenant, body.hop.hosted, body.hop.id.as_str());
        let hop = hop.ok_or(Rejection::NotFound {
            object: Object::Component,
        })?;
        match &body.action {
            ArchivedTransferAction::Grant { url } => {
                check_grant(topology, transfer, hop)?;
                let position = context.assign_position();
                transfer.grant(url.as_str(), position);
                Ok(position)
            }
            ArchivedTransferAction::Deny { reason, retry_after_ms } => {
                check_deny(topology, transfer, hop)?;
                let position = context.assign_position();
                let retry_at_ms = context
                    .now_ms
                    .saturating_add(retry_delay_ms(retry_after_ms.to_native()));
                let denial = Denial {
                    position,
                    hop,
                    reason: reason.to_string(),
                };
                transfer.deny(denial, retry_at_ms);
                let timer = Timer::TransferRetry {
                    tenant,
                    request: Name::from(request),
                };
                context.timers.schedule(retry_at_ms, timer);
                Ok(position)
            }
            ArchivedTransferAction::Transferred => {
                check_transferred(topology, transfer, hop)?;
                let position = context.assign_position();
                transfer.transferred(position);
                Ok(position)
            }
        }
    }

    /// A `Timer::TransferRetry` fired: returns the request's id when it went
    /// from denied back to requested.
    pub(super) fn retry_due(&mut self, tenant: Slot, request: &Name, now_ms: u64) -> Option<Name> {
        let transfer = self.transfer_mut(tenant, request)?;
        let due = transfer.phase == TransferPhase::Denied && transfer.retry_at_ms.is_some_and(|at| at <= now_ms);
        if !due {
            return None;
        }
        transfer.request_again();
        Some(request.clone())
    }

    fn transfer_mut(&mut self, tenant: Slot, request: &str) -> Option<&mut Transfer> {
        let transfers = self.by_request.get_mut(tenant as usize)?;
        let slot = transfers.slot(request)?;
        Some(transfers.get_mut(slot))
    }

    // ------------------------------------------------------------ queries

    /// The transfer requested by message `request` in the tenant.
    pub fn transfer(&self, tenant: Slot, request: &str) -> Option<&Transfer> {
        let transfers = self.by_request.get(tenant as usize)?;
        Some(transfers.get(transfers.slot(request)?))
    }

    /// The tenant's transfers that are not yet transferred, by request id,
    /// in order of first request.
    pub fn outstanding(&self, tenant: Slot) -> Vec<(&str, &Transfer)> {
        let Some(transfers) = self.by_request.get(tenant as usize) else {
            return Vec::new();
        };
        let outstanding = transfers
            .iter()
            .filter(|(_, _, transfer)| transfer.phase != TransferPhase::Transferred)
            .map(|(_, request, transfer)| (request.as_str(), transfer));
        outstanding.collect()
    }

    /// Transfers of every tenant, in any phase.
    pub fn count(&self) -> usize {
        self.by_request.iter().map(Table::len).sum()
    }

    pub(super) fn rebuild(&mut self) {
        self.by_request.iter_mut().for_each(Table::rebuild);
    }
}

impl Transfer {
    fn requested(
        requester: Slot,
        header: &ArchivedMessageHeader,
        request: &ArchivedBulkRequest,
        position: u64,
    ) -> Self {
        Self {
            requester,
            size: request.size.to_native(),
            class: Name::from(header.class.as_str()),
            subclass: Name::from(header.subclass.as_str()),
            requested_at: position,
            phase: TransferPhase::Requested,
            requests: 1,
            url: None,
            retry_at_ms: None,
            denials: Vec::new(),
            granted_at: None,
            transferred_at: None,
        }
    }

    /// Back to requested: resubmitted by the requester, or its retry time
    /// came.
    fn request_again(&mut self) {
        debug_assert!(matches!(self.phase, TransferPhase::Requested | TransferPhase::Denied));
        self.phase = TransferPhase::Requested;
        self.requests = self.requests.saturating_add(1);
        self.retry_at_ms = None;
    }

    fn grant(&mut self, url: &str, position: u64) {
        debug_assert_eq!(self.phase, TransferPhase::Requested);
        self.phase = TransferPhase::Granted;
        self.url = Some(url.to_string());
        self.granted_at = Some(position);
    }

    fn deny(&mut self, denial: Denial, retry_at_ms: u64) {
        debug_assert_eq!(self.phase, TransferPhase::Requested);
        self.phase = TransferPhase::Denied;
        self.retry_at_ms = Some(retry_at_ms);
        if self.denials.len() == DENIALS_KEPT {
            self.denials.remove(0);
        }
        self.denials.push(denial);
        debug_assert!(self.denials.len() <= DENIALS_KEPT);
    }

    fn transferred(&mut self, position: u64) {
        debug_assert_eq!(self.phase, TransferPhase::Granted);
        self.phase = TransferPhase::Transferred;
        self.transferred_at = Some(position);
    }

    fn expect_phase(&self, phase: TransferPhase) -> Outcome<()> {
        match self.phase == phase {
            true => Ok(()),
            false => Err(Rejection::TransferPhase { phase: self.phase }),
        }
    }
}

/// An applications MLM or application server the requester is below grants
/// a requested transfer (seed 001 step 2020).
fn check_grant(topology: &Topology, transfer: &Transfer, hop: Slot) -> Outcome<()> {
    let kind = topology.component(hop).kind;
    if !matches!(kind, ComponentKind::ApplicationsMlm | ComponentKind::ApplicationServer) {
        return Err(Rejection::WrongKind {
            object: Object::Component,
            kind,
        });
    }
    if !topology.is_below(transfer.requester, hop) {
        return Err(Rejection::NotReachable);
    }
    transfer.expect_phase(TransferPhase::Requested)
}

/// Any hop the requester is below may deny a requested transfer (seed 001
/// steps 2012, 2014).
fn check_deny(topology: &Topology, transfer: &Transfer, hop: Slot) -> Outcome<()> {
    if !topology.is_below(transfer.requester, hop) {
        return Err(Rejection::NotReachable);
    }
    transfer.expect_phase(TransferPhase::Requested)
}

/// The requester, or a proxy it is below, marks a granted transfer's data
/// sent (seed 001 step 2150).
fn check_transferred(topology: &Topology, transfer: &Transfer, hop: Slot) -> Outcome<()> {
    let through_proxy =
        topology.component(hop).kind == ComponentKind::Proxy && topology.is_below(transfer.requester, hop);
    if hop != transfer.requester && !through_proxy {
        return Err(Rejection::NotReachable);
    }
    transfer.expect_phase(TransferPhase::Granted)
}

/// The delay a denial asks for, or [`TRANSFER_RETRY_MS_DEFAULT`] when it
/// names none (0).
fn retry_delay_ms(retry_after_ms: u64) -> u64 {
    debug_assert!(retry_after_ms <= TRANSFER_RETRY_MS_MAX, "validate bounds the delay");
    match retry_after_ms {
        0 => TRANSFER_RETRY_MS_DEFAULT,
        delay_ms => delay_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::{
        AlarmState, BulkRequest, CommandBody, ComponentKind, ComponentKind::*, ComponentRef, Content, TransferAction,
        TransferStep, LANDLORD, TRANSFER_RETRY_MS_DEFAULT, TRANSFER_RETRY_MS_MAX,
    };
    use super::super::messages::MESSAGE_DEDUPE_WINDOW_MS;
    use super::super::outcome::{Effect, Object, Outcome, Rejection, TransferPhase, Verdict};
    use super::super::testing::*;
    use super::super::{Command, Fired, State};
    use super::{Denial, Transfer, DENIALS_KEPT};

    const SIZE: u64 = 1 << 30;
    const URL: &str = "https://apps.example/bulk/b1";

    /// [`farm`]'s commands, each expected to apply: positions 1–7.
    fn farm_steps() -> Vec<(Command, Expect)> {
        farm().into_iter().map(|command| (command, Expect::Applied)).collect()
    }

    fn run(more: Vec<(Command, Expect)>) -> State {
        let mut steps = farm_steps();
        steps.extend(more);
        check(&steps)
    }

    fn bulk_request(tenant: &str, at_ms: u64, id: &str, source: &str, kind: ComponentKind) -> Command {
        let content = Content::BulkRequest(BulkRequest {
            size: SIZE,
            description: "core file".into(),
        });
        command(
            tenant,
            at_ms,
            message(tenant, id, source, kind, ("bulk", "core"), content),
        )
    }

    fn step(tenant: &str, at_ms: u64, request: &str, hop: ComponentRef, action: TransferAction) -> Command {
        let body = TransferStep {
            request: request.into(),
            hop,
            action,
        };
        command(tenant, at_ms, CommandBody::Transfer(body))
    }

    fn grant() -> TransferAction {
        TransferAction::Grant { url: URL.into() }
    }

    fn deny(reason: &str, retry_after_ms: u64) -> TransferAction {
        TransferAction::Deny {
            reason: reason.into(),
            retry_after_ms,
        }
    }

    fn stored(position: u64) -> Expect {
        Expect::Effect(Effect::MessageStored { position, alarm: None })
    }

    fn recorded(position: u64) -> Expect {
        Expect::Effect(Effect::Recorded { position })
    }

    fn rejected(rejection: Rejection) -> Expect {
        Expect::Rejected(rejection)
    }

    fn phase(phase: TransferPhase) -> Expect {
        rejected(Rejection::TransferPhase { phase })
    }

    fn slot(state: &State, tenant: &str, id: &str) -> u32 {
        let tenant = state.tenant_slot(tenant).unwrap();
        state.topology().registered(tenant, id).unwrap()
    }

    fn transfer<'a>(state: &'a State, tenant: &str, request: &str) -> &'a Transfer {
        let tenant = state.tenant_slot(tenant).unwrap();
        state.transfers().transfer(tenant, request).unwrap()
    }

    /// A transfer just requested by `requester` at `position`.
    fn requested(requester: u32, position: u64) -> Transfer {
        Transfer {
            requester,
            size: SIZE,
            class: "bulk".into(),
            subclass: "core".into(),
            requested_at: position,
            phase: TransferPhase::Requested,
            requests: 1,
            url: None,
            retry_at_ms: None,
            denials: Vec::new(),
            granted_at: None,
            transferred_at: None,
        }
    }

    /// A harness that has applied [`farm`].
    fn farm_harness() -> Harness {
        let mut harness = Harness::new();
        for command in farm() {
            assert!(harness.apply(command).is_applied());
        }
        harness
    }

    fn apply(harness: &mut Harness, command: Command, verdict: Verdict) -> Outcome {
        let outcome = harness.apply(command);
        assert_eq!(outcome.verdict, verdict, "{outcome:?}");
        outcome
    }

    fn retries(outcome: &Outcome) -> Vec<&Fired> {
        let retries = outcome
            .fired
            .iter()
            .filter(|fired| matches!(fired, Fired::TransferRetry { .. }));
        retries.collect()
    }

    fn retry_fired(request: &str) -> Fired {
        Fired::TransferRetry {
            tenant: "acme".into(),
            request: request.into(),
        }
    }

    #[test]
    fn a_request_granted_by_the_applications_mlm_is_transferred_by_the_proxy() {
        let state = run(vec![
            (bulk_request("acme", 10, "b1", "proxy", Proxy), stored(8)),
            (
                step("acme", 11, "b1", own("proxy"), TransferAction::Transferred),
                phase(TransferPhase::Requested),
            ),
            (step("acme", 11, "b1", hosted("apps"), grant()), recorded(9)),
            (
                step("acme", 12, "b1", own("proxy"), TransferAction::Transferred),
                recorded(10),
            ),
        ]);
        let proxy = slot(&state, "acme", "proxy");
        let expected = Transfer {
            phase: TransferPhase::Transferred,
            url: Some(URL.into()),
            granted_at: Some(9),
            transferred_at: Some(10),
            ..requested(proxy, 8)
        };
        assert_eq!(transfer(&state, "acme", "b1"), &expected);
        let acme = state.tenant_slot("acme").unwrap();
        assert!(state.transfers().outstanding(acme).is_empty());
        assert_eq!(state.transfers().count(), 1);
    }

    #[test]
    fn an_integration_modules_request_is_transferred_by_itself_or_its_proxy_only() {
        let state = run(vec![
            (bulk_request("acme", 10, "b1", "im", IntegrationModule), stored(8)),
            (bulk_request("acme", 10, "b2", "im", IntegrationModule), stored(9)),
            (step("acme", 11, "b1", hosted("server"), grant()), recorded(10)),
            (step("acme", 11, "b2", hosted("apps"), grant()), recorded(11)),
            // agg is on the path but is not a proxy; si is below im.
            (
                step("acme", 12, "b1", hosted("agg"), TransferAction::Transferred),
                rejected(Rejection::NotReachable),
            ),
            (
                step("acme", 12, "b1", own("si"), TransferAction::Transferred),
                rejected(Rejection::NotReachable),
            ),
            (
                step("acme", 12, "b1", own("proxy"), TransferAction::Transferred),
                recorded(12),
            ),
            (
                step("acme", 12, "b2", own("im"), TransferAction::Transferred),
                recorded(13),
            ),
        ]);
        let im = slot(&state, "acme", "im");
        assert_eq!(transfer(&state, "acme", "b1").requester, im);
        assert_eq!(transfer(&state, "acme", "b1").transferred_at, Some(12));
        assert_eq!(transfer(&state, "acme", "b2").transferred_at, Some(13));
    }

    #[test]
    fn only_an_applications_mlm_or_server_grants() {
        let state = run(vec![
            (bulk_request("acme", 10, "b1", "proxy", Proxy), stored(8)),
            (
                step("acme", 11, "b1", hosted("agg"), grant()),
                rejected(Rejection::WrongKind {
                    object: Object::Component,
                    kind: AggregationMlm,
                }),
            ),
            (
                step("acme", 11, "b1", own("proxy"), grant()),
                rejected(Rejection::WrongKind {
                    object: Object::Component,
                    kind: Proxy,
                }),
            ),
            // The landlord's components are found only as hosted ones.
            (
                step("acme", 11, "b1", own("apps"), grant()),
                rejected(Rejection::NotFound {
                    object: Object::Component,
                }),
            ),
            (
                step("acme", 11, "b9", hosted("apps"), grant()),
                rejected(Rejection::NotFound {
                    object: Object::Transfer,
                }),
            ),
            (step("acme", 11, "b1", hosted("server"), grant()), recorded(9)),
        ]);
        let expected = Transfer {
            phase: TransferPhase::Granted,
            url: Some(URL.into()),
            granted_at: Some(9),
            ..requested(slot(&state, "acme", "proxy"), 8)
        };
        assert_eq!(transfer(&state, "acme", "b1"), &expected);
    }

    #[test]
    fn a_denied_request_is_requested_again_at_its_retry_time() {
        let mut harness = farm_harness();
        apply(
            &mut harness,
            bulk_request("acme", 10, "b1", "proxy", Proxy),
            Verdict::Applied(Effect::MessageStored {
                position: 8,
                alarm: None,
            }),
        );
        apply(
            &mut harness,
            step("acme", 20, "b1", hosted("agg"), deny("disk full", 0)),
            Verdict::Applied(Effect::Recorded { position: 9 }),
        );
        let retry_at_ms = 20 + TRANSFER_RETRY_MS_DEFAULT;
        let agg = slot(&harness.state, LANDLORD, "agg");
        let proxy = slot(&harness.state, "acme", "proxy");
        let denied = Transfer {
            phase: TransferPhase::Denied,
            retry_at_ms: Some(retry_at_ms),
            denials: vec![Denial {
                position: 9,
                hop: agg,
                reason: "disk full".into(),
            }],
            ..requested(proxy, 8)
        };
        assert_eq!(transfer(&harness.state, "acme", "b1"), &denied);
        // Denied: only a new request or the retry timer reopens it.
        apply(
            &mut harness,
            step("acme", 30, "b1", hosted("apps"), grant()),
            Verdict::Rejected(Rejection::TransferPhase {
                phase: TransferPhase::Denied,
            }),
        );
        let early = harness.apply(command("acme", retry_at_ms - 1, CommandBody::Tick));
        assert!(retries(&early).is_empty(), "{early:?}");
        assert_eq!(transfer(&harness.state, "acme", "b1"), &denied);

        let due = harness.apply(command("acme", retry_at_ms, CommandBody::Tick));
        assert_eq!(retries(&due), [&retry_fired("b1")], "{due:?}");
        let again = Transfer {
            phase: TransferPhase::Requested,
            requests: 2,
            retry_at_ms: None,
            ..denied.clone()
        };
        assert_eq!(transfer(&harness.state, "acme", "b1"), &again);
        apply(
            &mut harness,
            step("acme", retry_at_ms, "b1", hosted("apps"), grant()),
            Verdict::Applied(Effect::Recorded { position: 10 }),
        );
        assert_eq!(transfer(&harness.state, "acme", "b1").phase, TransferPhase::Granted);
    }

    #[test]
    fn a_stale_retry_timer_does_not_reopen_a_later_denial_early() {
        let mut harness = farm_harness();
        let first_denial_ms = 10;
        apply(
            &mut harness,
            bulk_request("acme", first_denial_ms, "b1", "proxy", Proxy),
            Verdict::Applied(Effect::MessageStored {
                position: 8,
                alarm: None,
            }),
        );
        apply(
            &mut harness,
            step(
                "acme",
                first_denial_ms,
                "b1",
                hosted("agg"),
                deny("busy", TRANSFER_RETRY_MS_MAX),
            ),
            Verdict::Applied(Effect::Recorded { position: 9 }),
        );
        // The proxy's watchdog resubmits once the message id may be reused.
        let resubmitted_ms = first_denial_ms + MESSAGE_DEDUPE_WINDOW_MS;
        let resubmitted = apply(
            &mut harness,
            bulk_request("acme", resubmitted_ms, "b1", "proxy", Proxy),
            Verdict::Applied(Effect::MessageStored {
                position: 10,
                alarm: None,
            }),
        );
        assert!(retries(&resubmitted).is_empty());
        let b1 = transfer(&harness.state, "acme", "b1");
        assert_eq!(
            (b1.phase, b1.requests, b1.retry_at_ms),
            (TransferPhase::Requested, 2, None)
        );
        assert_eq!(b1.requested_at, 8, "a resubmission continues the transfer");

        let second_denial_ms = resubmitted_ms + 1;
        apply(
            &mut harness,
            step(
                "acme",
                second_denial_ms,
                "b1",
                hosted("apps"),
                deny("busy", TRANSFER_RETRY_MS_MAX),
            ),
            Verdict::Applied(Effect::Recorded { position: 11 }),
        );
        let second_retry_ms = second_denial_ms + TRANSFER_RETRY_MS_MAX;
        // The first denial's timer fires now, finds a later retry time and
        // does nothing.
        let stale = harness.apply(command(
            "acme",
            first_denial_ms + TRANSFER_RETRY_MS_MAX,
            CommandBody::Tick,
        ));
        assert!(retries(&stale).is_empty(), "{stale:?}");
        let b1 = transfer(&harness.state, "acme", "b1");
        assert_eq!(
            (b1.phase, b1.requests, b1.retry_at_ms),
            (TransferPhase::Denied, 2, Some(second_retry_ms))
        );
        let denials: Vec<_> = b1.denials.iter().map(|denial| denial.position).collect();
        assert_eq!(denials, [9, 11]);

        let due = harness.apply(command("acme", second_retry_ms, CommandBody::Tick));
        assert_eq!(retries(&due), [&retry_fired("b1")], "{due:?}");
        let b1 = transfer(&harness.state, "acme", "b1");
        assert_eq!(
            (b1.phase, b1.requests, b1.retry_at_ms),
            (TransferPhase::Requested, 3, None)
        );
    }

    #[test]
    fn steps_in_the_wrong_phase_are_rejected_without_effect() {
        let state = run(vec![
            (bulk_request("acme", 10, "b1", "proxy", Proxy), stored(8)),
            (
                step("acme", 11, "b1", own("proxy"), TransferAction::Transferred),
                phase(TransferPhase::Requested),
            ),
            (step("acme", 11, "b1", hosted("agg"), deny("busy", 1000)), recorded(9)),
            (
                step("acme", 11, "b1", hosted("apps"), grant()),
                phase(TransferPhase::Denied),
            ),
            (
                step("acme", 11, "b1", hosted("agg"), deny("busy", 1000)),
                phase(TransferPhase::Denied),
            ),
            (
                step("acme", 11, "b1", own("proxy"), TransferAction::Transferred),
                phase(TransferPhase::Denied),
            ),
            // Log time 1011: the retry timer reopens it.
            (step("acme", 1011, "b1", hosted("apps"), grant()), recorded(10)),
            (
                step("acme", 1011, "b1", hosted("apps"), grant()),
                phase(TransferPhase::Granted),
            ),
            (
                step("acme", 1011, "b1", hosted("agg"), deny("late", 0)),
                phase(TransferPhase::Granted),
            ),
            (
                step("acme", 1011, "b1", own("proxy"), TransferAction::Transferred),
                recorded(11),
            ),
            (
                step("acme", 1011, "b1", own("proxy"), TransferAction::Transferred),
                phase(TransferPhase::Transferred),
            ),
            (
                step("acme", 1011, "b1", hosted("apps"), grant()),
                phase(TransferPhase::Transferred),
            ),
            (
                step("acme", 1011, "b1", hosted("agg"), deny("late", 0)),
                phase(TransferPhase::Transferred),
            ),
        ]);
        let b1 = transfer(&state, "acme", "b1");
        assert_eq!(b1.requests, 2);
        assert_eq!(b1.denials.len(), 1);
        assert_eq!((b1.granted_at, b1.transferred_at), (Some(10), Some(11)));
        assert_eq!(state.last_position(), 11, "rejected steps got no position");
    }

    #[test]
    fn a_hop_off_the_requesters_path_is_not_reachable() {
        let state = run(vec![
            (
                command(LANDLORD, 3, component("agg2", AggregationMlm, vec![own("apps")])),
                recorded(8),
            ),
            (command(LANDLORD, 3, customer("globex")), recorded(9)),
            (
                command("globex", 3, component("proxy", Proxy, vec![hosted("agg2")])),
                recorded(10),
            ),
            (
                command("acme", 3, component("proxy2", Proxy, vec![hosted("agg")])),
                recorded(11),
            ),
            (bulk_request("globex", 10, "g1", "proxy", Proxy), stored(12)),
            (bulk_request("acme", 10, "b1", "proxy", Proxy), stored(13)),
            // globex's proxy hangs below agg2, not agg.
            (
                step("globex", 11, "g1", hosted("agg"), deny("busy", 0)),
                rejected(Rejection::NotReachable),
            ),
            // Below the requester, or the requester itself, is not a hop.
            (
                step("acme", 11, "b1", own("im"), deny("busy", 0)),
                rejected(Rejection::NotReachable),
            ),
            (
                step("acme", 11, "b1", own("proxy"), deny("busy", 0)),
                rejected(Rejection::NotReachable),
            ),
            (step("acme", 11, "b1", hosted("apps"), grant()), recorded(14)),
            // A sibling proxy is not on the path.
            (
                step("acme", 11, "b1", own("proxy2"), TransferAction::Transferred),
                rejected(Rejection::NotReachable),
            ),
            (step("globex", 11, "g1", hosted("agg2"), deny("busy", 0)), recorded(15)),
        ]);
        assert_eq!(transfer(&state, "acme", "b1").phase, TransferPhase::Granted);
        let g1 = transfer(&state, "globex", "g1");
        assert_eq!(g1.phase, TransferPhase::Denied);
        assert_eq!(g1.denials[0].hop, slot(&state, LANDLORD, "agg2"));
    }

    #[test]
    fn requests_are_found_in_the_commands_tenant_only() {
        let state = run(vec![
            (command(LANDLORD, 3, customer("globex")), recorded(8)),
            (
                command("globex", 3, component("proxy", Proxy, vec![hosted("agg")])),
                recorded(9),
            ),
            (bulk_request("acme", 10, "b1", "proxy", Proxy), stored(10)),
            (
                step("globex", 11, "b1", hosted("apps"), grant()),
                rejected(Rejection::NotFound {
                    object: Object::Transfer,
                }),
            ),
            // The same id in globex is globex's own transfer.
            (bulk_request("globex", 11, "b1", "proxy", Proxy), stored(11)),
            (step("globex", 12, "b1", hosted("apps"), grant()), recorded(12)),
            (
                command(
                    LANDLORD,
                    12,
                    CommandBody::Transfer(TransferStep {
                        request: "b1".into(),
                        hop: own("apps"),
                        action: TransferAction::Transferred,
                    }),
                ),
                Expect::Invalid("tenant"),
            ),
        ]);
        let acme = state.tenant_slot("acme").unwrap();
        let globex = state.tenant_slot("globex").unwrap();
        assert_eq!(
            transfer(&state, "acme", "b1"),
            &requested(slot(&state, "acme", "proxy"), 10)
        );
        let globex_b1 = transfer(&state, "globex", "b1");
        assert_eq!(globex_b1.requester, slot(&state, "globex", "proxy"));
        assert_eq!(globex_b1.phase, TransferPhase::Granted);
        assert_eq!(state.transfers().count(), 2);
        assert_eq!(state.transfers().outstanding(acme).len(), 1);
        assert_eq!(state.transfers().outstanding(globex).len(), 1);
        assert_eq!(state.transfers().transfer(super::super::LANDLORD_SLOT, "b1"), None);
    }

    #[test]
    fn resubmissions_continue_a_transfer_and_start_over_after_it_was_transferred() {
        let resubmit = |at_ms| bulk_request("acme", at_ms, "b1", "proxy", Proxy);
        let window = MESSAGE_DEDUPE_WINDOW_MS;
        let state = run(vec![
            (resubmit(10), stored(8)),
            (resubmit(11), Expect::Effect(Effect::MessageDuplicate { position: 8 })),
            (resubmit(10 + window), stored(9)),
            (step("acme", 10 + window, "b1", hosted("apps"), grant()), recorded(10)),
            // Granted: a late copy changes nothing.
            (resubmit(10 + 2 * window), stored(11)),
            (
                step("acme", 10 + 2 * window, "b1", own("proxy"), TransferAction::Transferred),
                recorded(12),
            ),
        ]);
        let b1 = transfer(&state, "acme", "b1");
        assert_eq!((b1.requests, b1.requested_at, b1.granted_at), (2, 8, Some(10)));
        let state = run(vec![
            (resubmit(10), stored(8)),
            (step("acme", 10, "b1", hosted("apps"), grant()), recorded(9)),
            (
                step("acme", 10, "b1", own("proxy"), TransferAction::Transferred),
                recorded(10),
            ),
            (resubmit(10 + window), stored(11)),
        ]);
        let proxy = slot(&state, "acme", "proxy");
        assert_eq!(transfer(&state, "acme", "b1"), &requested(proxy, 11));
        assert_eq!(state.transfers().count(), 1);
        let acme = state.tenant_slot("acme").unwrap();
        let outstanding = state.transfers().outstanding(acme);
        assert_eq!(outstanding, [("b1", &requested(proxy, 11))]);
    }

    #[test]
    fn a_transfer_keeps_its_latest_denials() {
        let denials = DENIALS_KEPT as u64 + 4;
        let mut steps = vec![(bulk_request("acme", 10, "b1", "proxy", Proxy), stored(8))];
        // Each denial asks for a retry 1 ms later; the next command's log
        // time fires it first, so every denial finds the transfer requested.
        for at in 0..denials {
            let denial = step("acme", 10 + at, "b1", hosted("agg"), deny(&format!("busy {at}"), 1));
            steps.push((denial, recorded(9 + at)));
        }
        let state = run(steps);
        let b1 = transfer(&state, "acme", "b1");
        assert_eq!(b1.requests as u64, denials);
        assert_eq!(b1.denials.len(), DENIALS_KEPT);
        let kept: Vec<_> = b1.denials.iter().map(|denial| denial.reason.as_str()).collect();
        let expected: Vec<_> = (4..denials).map(|at| format!("busy {at}")).collect();
        assert_eq!(kept, expected);
        assert_eq!(b1.denials[0].position, 13);
        assert_eq!(b1.retry_at_ms, Some(10 + denials));
    }

    #[test]
    fn only_bulk_requests_start_transfers_and_a_snapshot_keeps_them() {
        let state = run(vec![
            (
                command(
                    "acme",
                    10,
                    message(
                        "acme",
                        "m1",
                        "im",
                        IntegrationModule,
                        ("alarm", "disk"),
                        alarm("si", "a1", AlarmState::Raised),
                    ),
                ),
                Expect::Applied,
            ),
            (bulk_request("acme", 10, "b1", "proxy", Proxy), stored(9)),
            (bulk_request("acme", 10, "b2", "proxy", Proxy), stored(10)),
            (bulk_request("acme", 10, "b3", "im", IntegrationModule), stored(11)),
            (step("acme", 11, "b2", hosted("apps"), grant()), recorded(12)),
            (
                step("acme", 11, "b2", own("proxy"), TransferAction::Transferred),
                recorded(13),
            ),
        ]);
        let acme = state.tenant_slot("acme").unwrap();
        assert_eq!(state.transfers().count(), 3);
        assert_eq!(state.transfers().transfer(acme, "m1"), None);
        let outstanding = |state: &State| -> Vec<String> {
            let outstanding = state.transfers().outstanding(acme).into_iter();
            outstanding.map(|(request, _)| request.to_string()).collect()
        };
        assert_eq!(outstanding(&state), ["b1", "b3"]);
        let restored = State::restore(&state.snapshot()).unwrap();
        assert_eq!(restored.hash(), state.hash());
        assert_eq!(outstanding(&restored), ["b1", "b3"]);
        assert_eq!(
            restored.transfers().transfer(acme, "b2"),
            state.transfers().transfer(acme, "b2"),
            "the index is rebuilt on restore"
        );
        assert_eq!(
            restored.transfers().transfer(acme, "b2").unwrap().transferred_at,
            Some(13)
        );
    }
}
