//! `farmlog.v1.Throttle`: a customer MLM farm's throttle rules (seed 001
//! L625–629), the usage its members report, and the decision "may this
//! component send now?" from the replicated state.
//!
//! Scope: setting rules is tenant-wide (refused to a principal scoped to a
//! component or group); a report is made as a farm member the caller acts
//! as ([`Context::acts_as`]); a read needs a farm member, or the component
//! asked about, in the caller's scope ([`Visible`]).

use farmlog_engine::state::command::{CommandBody, ComponentRef, ReportUsage, SetThrottle, ThrottleRule, Usage};
use farmlog_engine::state::outcome::{Effect, Verdict};
use farmlog_engine::state::throttle::Counter;
use farmlog_engine::state::TenantView;
use tonic::{Request, Response, Status};

use crate::auth::Op;
use crate::context::{now_ms, Caller, Context};
use crate::pb::{self, throttle_server::Throttle};
use crate::services::spools::{required, whole_tenant, Visible};
use crate::services::topology::required_ref;
use crate::status::invalid;

/// The `farmlog.v1.Throttle` service.
pub struct ThrottleService {
    context: Context,
}

impl ThrottleService {
    /// The service, answering every call through `context`.
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    /// Proposes a throttle write; answers its position.
    async fn write(
        &self,
        caller: &Caller,
        session: Option<pb::Session>,
        body: CommandBody,
    ) -> Result<Response<pb::ThrottleWriteResponse>, Status> {
        let (written, outcome) = self.context.applied(caller, session, body).await?;
        match outcome.verdict {
            Verdict::Applied(Effect::Recorded { position }) => Ok(Response::new(pb::ThrottleWriteResponse {
                position,
                written: Some(written),
            })),
            other => Err(Status::internal(format!("a throttle write applied as {other:?}"))),
        }
    }
}

fn minute(field: &str, minute: u32) -> Result<u16, Status> {
    u16::try_from(minute).map_err(|_| invalid(field, format!("{minute}, not a minute of the day")))
}

fn rule(at: usize, rule: pb::ThrottleRule) -> Result<ThrottleRule, Status> {
    let field = |suffix: &str| format!("rules[{at}]{suffix}");
    Ok(match required(&field(".rule"), rule.rule)? {
        pb::throttle_rule::Rule::Quiet(quiet) => ThrottleRule::Quiet {
            from_minute: minute(&field(".quiet.from_minute"), quiet.from_minute)?,
            to_minute: minute(&field(".quiet.to_minute"), quiet.to_minute)?,
        },
        pb::throttle_rule::Rule::Limit(limit) => ThrottleRule::Limit {
            window_ms: limit.window_ms,
            max_bytes: limit.max_bytes,
            max_messages: limit.max_messages,
        },
    })
}

fn rule_pb(rule: &ThrottleRule) -> pb::ThrottleRule {
    let rule = match *rule {
        ThrottleRule::Quiet { from_minute, to_minute } => pb::throttle_rule::Rule::Quiet(pb::QuietWindow {
            from_minute: u32::from(from_minute),
            to_minute: u32::from(to_minute),
        }),
        ThrottleRule::Limit {
            window_ms,
            max_bytes,
            max_messages,
        } => pb::throttle_rule::Rule::Limit(pb::UsageLimit {
            window_ms,
            max_bytes,
            max_messages,
        }),
    };
    pb::ThrottleRule { rule: Some(rule) }
}

fn usage(increment: pb::UsageIncrement) -> Usage {
    Usage {
        bytes: increment.bytes,
        messages: increment.messages,
    }
}

fn usage_pb(usage: Usage) -> pb::UsageIncrement {
    pb::UsageIncrement {
        bytes: usage.bytes,
        messages: usage.messages,
    }
}

fn window_pb(counter: Counter) -> pb::WindowUsage {
    pb::WindowUsage {
        window_start_ms: counter.window_start_ms,
        bytes: counter.bytes,
        messages: counter.messages,
    }
}

/// The farm's group must exist, be an MLM group, and (for a scoped
/// caller) hold a component in the caller's scope; NOT_FOUND otherwise.
fn check_farm(caller: &Caller, view: &TenantView<'_>, farm: &str) -> Result<(), Status> {
    let not_found = || Status::not_found(format!("farm {farm:?} not found"));
    let group = view.group(farm).ok_or_else(not_found)?;
    if group.kind != farmlog_engine::state::command::GroupKind::Mlm {
        return Err(not_found());
    }
    let visible = Visible::of(caller, view);
    let member = |(tenant, id): &(String, String)| ComponentRef {
        hosted: tenant != view.tenant(),
        id: id.clone(),
    };
    match matches!(visible, Visible::All) || group.members.iter().any(|one| visible.sees(&member(one))) {
        true => Ok(()),
        false => Err(not_found()),
    }
}

#[tonic::async_trait]
impl Throttle for ThrottleService {
    async fn set(
        &self,
        request: Request<pb::SetThrottleRequest>,
    ) -> Result<Response<pb::ThrottleWriteResponse>, Status> {
        let caller = self.context.caller(&request, Op::SetThrottle)?;
        whole_tenant(&caller, "set a farm's throttle")?;
        let pb::SetThrottleRequest { farm, rules, session } = request.into_inner();
        let rules = rules.into_iter().enumerate();
        let rules = rules.map(|(at, one)| rule(at, one)).collect::<Result<_, _>>()?;
        self.write(&caller, session, CommandBody::SetThrottle(SetThrottle { farm, rules }))
            .await
    }

    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ThrottleWriteResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReportUsage)?;
        let pb::ReportUsageRequest {
            farm,
            member,
            increments,
            session,
        } = request.into_inner();
        let member = required_ref(member, "member")?;
        self.context.acts_as(&caller, &member)?;
        let body = ReportUsage {
            farm,
            member,
            increments: increments.into_iter().map(usage).collect(),
        };
        self.write(&caller, session, CommandBody::ReportUsage(body)).await
    }

    async fn show(
        &self,
        request: Request<pb::ShowThrottleRequest>,
    ) -> Result<Response<pb::ShowThrottleResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadThrottle)?;
        let name = request.get_ref().farm.clone();
        self.context
            .read(&request, &caller, |view, applier| {
                check_farm(&caller, &view, &name)?;
                let at_ms = applier.state.log_time_ms();
                // A farm whose rules were never set is not throttled.
                let Some(farm) = view.farm(&name) else {
                    return Ok(pb::ShowThrottleResponse {
                        at_ms,
                        ..Default::default()
                    });
                };
                let usage = farm.usage_at(at_ms).into_iter();
                let rules = farm.rules.iter().zip(usage).map(|(rule, usage)| pb::ThrottleRuleState {
                    rule: Some(rule_pb(rule)),
                    usage: usage.map(window_pb),
                });
                Ok(pb::ShowThrottleResponse {
                    rules: rules.collect(),
                    set_at: farm.set_at,
                    reported: Some(usage_pb(farm.reported)),
                    at_ms,
                })
            })
            .await
    }

    async fn may_send(&self, request: Request<pb::MaySendRequest>) -> Result<Response<pb::MaySendResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadThrottle)?;
        let body = request.get_ref();
        let component = required_ref(body.component.clone(), "component")?;
        let (bytes, at_ms) = (body.bytes, body.at_ms);
        self.context
            .read(&request, &caller, |view, applier| {
                Visible::of(&caller, &view).check(&component)?;
                let at_ms = at_ms.unwrap_or_else(|| now_ms().max(applier.state.log_time_ms()));
                let answer = view
                    .may_send(&component, bytes, at_ms)
                    .ok_or_else(|| Status::not_found(format!("component {:?} not found", component.id)))?;
                let (rule_index, rule) = match answer.rule {
                    Some((index, rule)) => (u32::try_from(index).ok(), Some(rule_pb(&rule))),
                    None => (None, None),
                };
                Ok(pb::MaySendResponse {
                    allowed: answer.allowed,
                    farm: answer.farm,
                    rule_index,
                    rule,
                    at_ms,
                })
            })
            .await
    }
}
