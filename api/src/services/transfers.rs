//! `farmlog.v1.Transfers`: the authorization steps of an upstream bulk
//! transfer (seed 001 Fig 20–21) — grant, deny, transferred — and the
//! reads of where transfers stand.
//!
//! The request itself is a bulk-request upstream message (the Messages
//! service); the state machine checks that each hop is on the request's
//! path and that the phase allows the step. This service checks that the
//! caller acts as the hop ([`Context::acts_as`]) and, for reads, that the
//! requester is in the caller's scope ([`Visible`]).

use farmlog_engine::state::command::{CommandBody, TransferAction, TransferStep};
use farmlog_engine::state::outcome::{Effect, TransferPhase, Verdict};
use farmlog_engine::state::view::TransferInfo;
use tonic::{Request, Response, Status};

use crate::auth::Op;
use crate::context::{Caller, Context};
use crate::pb::{self, transfers_server::Transfers};
use crate::services::spools::{component_ref_to_pb, Visible};
use crate::services::streams::read_limit;
use crate::services::topology::required_ref;

/// The `farmlog.v1.Transfers` service.
pub struct TransfersService {
    context: Context,
}

impl TransfersService {
    /// The service, answering every call through `context`.
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    /// Proposes one step as `hop`, which the caller must act as.
    async fn step(
        &self,
        caller: &Caller,
        session: Option<pb::Session>,
        request: String,
        hop: Option<pb::ComponentRef>,
        action: TransferAction,
    ) -> Result<Response<pb::TransferStepResponse>, Status> {
        let hop = required_ref(hop, "hop")?;
        self.context.acts_as(caller, &hop)?;
        let body = CommandBody::Transfer(TransferStep { request, hop, action });
        let (written, outcome) = self.context.applied(caller, session, body).await?;
        match outcome.verdict {
            Verdict::Applied(Effect::Recorded { position }) => Ok(Response::new(pb::TransferStepResponse {
                position,
                written: Some(written),
            })),
            other => Err(Status::internal(format!("a transfer step applied as {other:?}"))),
        }
    }
}

fn phase_pb(phase: TransferPhase) -> pb::TransferPhase {
    match phase {
        TransferPhase::Requested => pb::TransferPhase::Requested,
        TransferPhase::Denied => pb::TransferPhase::Denied,
        TransferPhase::Granted => pb::TransferPhase::Granted,
        TransferPhase::Transferred => pb::TransferPhase::Transferred,
    }
}

fn transfer_pb(transfer: TransferInfo) -> pb::TransferInfo {
    let denials = transfer
        .denials
        .into_iter()
        .map(|(position, hop, reason)| pb::TransferDenial {
            position,
            hop: Some(component_ref_to_pb(&hop)),
            reason,
        });
    pb::TransferInfo {
        request: transfer.request,
        requester: Some(component_ref_to_pb(&transfer.requester)),
        size: transfer.size,
        class: transfer.class,
        subclass: transfer.subclass,
        phase: phase_pb(transfer.phase).into(),
        requests: transfer.requests,
        url: transfer.url,
        retry_at_ms: transfer.retry_at_ms,
        denials: denials.collect(),
    }
}

#[tonic::async_trait]
impl Transfers for TransfersService {
    async fn grant(
        &self,
        request: Request<pb::GrantTransferRequest>,
    ) -> Result<Response<pb::TransferStepResponse>, Status> {
        let caller = self.context.caller(&request, Op::GrantTransfer)?;
        let pb::GrantTransferRequest {
            request,
            hop,
            url,
            session,
        } = request.into_inner();
        self.step(&caller, session, request, hop, TransferAction::Grant { url })
            .await
    }

    async fn deny(
        &self,
        request: Request<pb::DenyTransferRequest>,
    ) -> Result<Response<pb::TransferStepResponse>, Status> {
        let caller = self.context.caller(&request, Op::DenyTransfer)?;
        let pb::DenyTransferRequest {
            request,
            hop,
            reason,
            retry_after_ms,
            session,
        } = request.into_inner();
        let action = TransferAction::Deny { reason, retry_after_ms };
        self.step(&caller, session, request, hop, action).await
    }

    async fn transferred(
        &self,
        request: Request<pb::TransferredRequest>,
    ) -> Result<Response<pb::TransferStepResponse>, Status> {
        let caller = self.context.caller(&request, Op::Transferred)?;
        let pb::TransferredRequest { request, hop, session } = request.into_inner();
        self.step(&caller, session, request, hop, TransferAction::Transferred)
            .await
    }

    async fn status(&self, request: Request<pb::TransferStatusRequest>) -> Result<Response<pb::TransferInfo>, Status> {
        let caller = self.context.caller(&request, Op::ReadTransfers)?;
        let id = request.get_ref().request.clone();
        self.context
            .read(&request, &caller, |view, _| {
                let not_found = || Status::not_found(format!("transfer {id:?} not found"));
                let transfer = view.transfer(&id).ok_or_else(not_found)?;
                match Visible::of(&caller, &view).sees(&transfer.requester) {
                    true => Ok(transfer_pb(transfer)),
                    false => Err(not_found()),
                }
            })
            .await
    }

    async fn outstanding(
        &self,
        request: Request<pb::OutstandingTransfersRequest>,
    ) -> Result<Response<pb::OutstandingTransfersResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadTransfers)?;
        let limit = read_limit(request.get_ref().limit)?;
        self.context
            .read(&request, &caller, |view, _| {
                let visible = Visible::of(&caller, &view);
                let transfers = view
                    .outstanding_transfers()
                    .into_iter()
                    .filter(|transfer| visible.sees(&transfer.requester))
                    .take(limit)
                    .map(transfer_pb);
                Ok(pb::OutstandingTransfersResponse {
                    transfers: transfers.collect(),
                })
            })
            .await
    }
}
