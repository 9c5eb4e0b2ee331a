//! Test and benchmark support: command builders, and [`check`], which runs
//! commands through the real encode → batch → apply path and compares each
//! outcome with what the test expects, so most state tests read as data.

use super::command::*;
use super::outcome::{Effect, Outcome, Rejection, Verdict};
use super::{encode, BatchBuilder, State};
use crate::kinds::COMMAND_BATCH;

/// The principal the builders put in every envelope.
pub const TEST_PRINCIPAL: &str = "test";

/// The standard small farm most state tests start from: the landlord's
/// hosted chain (application server `server` → applications MLM `apps` →
/// aggregation MLM `agg`) at log time 1, and customer `acme` with a proxy
/// `proxy` below `agg`, an integration module `im` and a support instance
/// `si` at log time 2.
pub fn farm() -> Vec<Command> {
    use ComponentKind::*;
    vec![
        command(LANDLORD, 1, component("server", ApplicationServer, vec![])),
        command(LANDLORD, 1, component("apps", ApplicationsMlm, vec![own("server")])),
        command(LANDLORD, 1, component("agg", AggregationMlm, vec![own("apps")])),
        command(LANDLORD, 1, customer("acme")),
        command("acme", 2, component("proxy", Proxy, vec![hosted("agg")])),
        command("acme", 2, component("im", IntegrationModule, vec![own("proxy")])),
        command("acme", 2, component("si", SupportInstance, vec![own("im")])),
    ]
}

/// The integration-module data of the alarm in [`every_family`].
pub const EVERY_FAMILY_ALARM_DATA: &str = "disk /var at 99%";
/// The body of the data message in [`every_family`]: longer than a
/// preview, not UTF-8.
pub const EVERY_FAMILY_DATA_BODY: [u8; 300] = [0xab; 300];

/// One command of every body family and every content type, valid against
/// [`farm`], at log times 10–13. Opens the state's first client session
/// (in `acme`) and defines the proxy group `proxies`.
pub fn every_family() -> Vec<Command> {
    use ComponentKind::*;
    let upstream = |id: &str, class: (&str, &str), content: Content| {
        command("acme", 12, message("acme", id, "im", IntegrationModule, class, content))
    };
    let mut alarm = alarm("si", "a1", AlarmState::Raised);
    if let Content::Alarm(alarm) = &mut alarm {
        alarm.data = EVERY_FAMILY_ALARM_DATA.as_bytes().to_vec();
    }
    let event = Content::Event(Event {
        support_instance: Some("si".into()),
        severity: Severity::Warning,
        text: "restarted".into(),
        data: vec![0, 1, 2, 0xff],
    });
    let response = Content::Response(MessageResponse {
        in_reply_to: "m1".into(),
        status: ResponseStatus::Ok,
        error: None,
    });
    let bulk_request = Content::BulkRequest(BulkRequest {
        size: 1 << 20,
        description: "logs".into(),
    });
    let bulk_response = Content::BulkResponse(BulkResponse {
        request_message_id: "m5".into(),
        granted: true,
        url: Some("https://bulk.example/m5".into()),
        reason: None,
    });
    vec![
        command("acme", 10, CommandBody::Tick),
        command("acme", 10, CommandBody::OpenSession),
        command(LANDLORD, 10, customer("globex")),
        command("acme", 11, component("si2", SupportInstance, vec![own("im")])),
        command("acme", 11, set_enabled("si", Switch::SupportInstance, false)),
        command("acme", 11, map_management_id("proxy", "10.0.0.1", Some("si"))),
        command("acme", 11, define_group("proxies", GroupKind::Proxy)),
        command("acme", 11, group_member("proxies", own("proxy"), true)),
        upstream("m1", ("alarm", "disk"), alarm),
        upstream("m2", ("event", "restart"), event),
        upstream("m3", ("inventory", "patch"), data(&EVERY_FAMILY_DATA_BODY)),
        upstream("m4", ("response", "command"), response),
        upstream("m5", ("bulk", "request"), bulk_request),
        upstream("m6", ("bulk", "response"), bulk_response),
        command("acme", 12, heartbeat("acme", "m7", "im", IntegrationModule, &["si"])),
        command(
            "acme",
            13,
            append("audit", ExpectedVersion::NoStream, Some("k"), b"first"),
        ),
        command("acme", 13, deregister("si2")),
    ]
}

/// A command in `tenant` at log time `at_ms`, outside any session.
pub fn command(tenant: &str, at_ms: u64, body: CommandBody) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        tenant: tenant.to_string(),
        principal: TEST_PRINCIPAL.to_string(),
        proposed_at_ms: at_ms,
        session: None,
        encryption: None,
        body,
    }
}

/// The same command inside a client session.
pub fn in_session(mut command: Command, client_id: u64, sequence: u64) -> Command {
    command.session = Some(SessionRef { client_id, sequence });
    command
}

pub fn customer(name: &str) -> CommandBody {
    CommandBody::RegisterCustomer(RegisterCustomer {
        name: name.to_string(),
        display_name: name.to_uppercase(),
    })
}

/// A reference to a component in the command's own tenant.
pub fn own(id: &str) -> ComponentRef {
    ComponentRef {
        hosted: false,
        id: id.to_string(),
    }
}

/// A reference to a component the landlord hosts.
pub fn hosted(id: &str) -> ComponentRef {
    ComponentRef {
        hosted: true,
        id: id.to_string(),
    }
}

pub fn component(id: &str, kind: ComponentKind, parents: Vec<ComponentRef>) -> CommandBody {
    CommandBody::RegisterComponent(RegisterComponent {
        id: id.to_string(),
        kind,
        version: "1.0".to_string(),
        mode: CommunicationMode::Session,
        parents,
    })
}

pub fn deregister(id: &str) -> CommandBody {
    CommandBody::Deregister(Deregister { component: own(id) })
}

pub fn set_enabled(id: &str, switch: Switch, enabled: bool) -> CommandBody {
    CommandBody::SetEnabled(SetEnabled {
        component: id.to_string(),
        switch,
        enabled,
    })
}

pub fn define_group(name: &str, kind: GroupKind) -> CommandBody {
    CommandBody::DefineGroup(DefineGroup {
        name: name.to_string(),
        kind,
    })
}

pub fn group_member(group: &str, member: ComponentRef, add: bool) -> CommandBody {
    CommandBody::ChangeGroupMember(ChangeGroupMember {
        group: group.to_string(),
        member,
        add,
    })
}

pub fn map_management_id(proxy: &str, management_id: &str, component: Option<&str>) -> CommandBody {
    CommandBody::MapManagementId(MapManagementId {
        proxy: proxy.to_string(),
        management_id: management_id.to_string(),
        component: component.map(str::to_string),
    })
}

/// An upstream message from `source` (of kind `source_kind`) in `tenant`.
pub fn message(
    tenant: &str,
    message_id: &str,
    source: &str,
    source_kind: ComponentKind,
    (class, subclass): (&str, &str),
    content: Content,
) -> CommandBody {
    CommandBody::Upstream(UpstreamMessage {
        header: MessageHeader {
            message_id: message_id.to_string(),
            source: source.to_string(),
            source_version: "1.0".to_string(),
            source_kind,
            customer: tenant.to_string(),
            class: class.to_string(),
            subclass: subclass.to_string(),
            created_at_ms: 0,
        },
        qos: Qos {
            precedence: 0,
            expiry_ms: None,
            persistence: false,
        },
        routing: vec![RouteHop {
            component: own(source),
            at_ms: 0,
        }],
        content,
    })
}

pub fn heartbeat(
    tenant: &str,
    message_id: &str,
    source: &str,
    source_kind: ComponentKind,
    seen: &[&str],
) -> CommandBody {
    let content = Content::Heartbeat(Heartbeat {
        components: seen.iter().map(|id| id.to_string()).collect(),
    });
    message(
        tenant,
        message_id,
        source,
        source_kind,
        (HEARTBEAT_CLASS, HEARTBEAT_SUBCLASS),
        content,
    )
}

pub fn alarm(support_instance: &str, alarm_id: &str, state: AlarmState) -> Content {
    Content::Alarm(Alarm {
        alarm_id: alarm_id.to_string(),
        support_instance: support_instance.to_string(),
        severity: Severity::Major,
        state,
        text: format!("alarm {alarm_id}"),
        data: Vec::new(),
    })
}

pub fn data(body: &[u8]) -> Content {
    Content::Data(Data {
        mime_type: "application/octet-stream".to_string(),
        size: body.len() as u64,
        encoding: Some("binary".to_string()),
        body: body.to_vec(),
    })
}

pub fn append(stream: &str, expected: ExpectedVersion, key: Option<&str>, body: &[u8]) -> CommandBody {
    CommandBody::StreamAppend(StreamAppend {
        stream: stream.to_string(),
        expected,
        idempotency: key.map(|key| Idempotency {
            key: key.to_string(),
            window_ms: IDEMPOTENCY_WINDOW_MS_DEFAULT,
        }),
        event_type: "test".to_string(),
        body: body.to_vec(),
    })
}

/// [`farm`] grown for the back-channel, at log time 3: a second acme
/// proxy `proxy2` with integration module `im2`; support instance `si2`
/// behind both integration modules (redundant proxies); a proxy `mailer`
/// that talks by message (no back-channel); the proxy group `proxies`
/// (`proxy`, `proxy2`) and the security group `ops`; and customer `globex`
/// with proxy `gproxy` below `agg`.
pub fn spool_farm() -> Vec<Command> {
    use ComponentKind::*;
    let mut mailer = component("mailer", Proxy, vec![hosted("agg")]);
    if let CommandBody::RegisterComponent(register) = &mut mailer {
        register.mode = CommunicationMode::Message;
    }
    let mut commands = farm();
    commands.extend([
        command("acme", 3, component("proxy2", Proxy, vec![hosted("agg")])),
        command("acme", 3, component("im2", IntegrationModule, vec![own("proxy2")])),
        command(
            "acme",
            3,
            component("si2", SupportInstance, vec![own("im"), own("im2")]),
        ),
        command("acme", 3, mailer),
        command("acme", 3, define_group("proxies", GroupKind::Proxy)),
        command("acme", 3, group_member("proxies", own("proxy"), true)),
        command("acme", 3, group_member("proxies", own("proxy2"), true)),
        command("acme", 3, define_group("ops", GroupKind::Security)),
        command(LANDLORD, 3, customer("globex")),
        command("globex", 3, component("gproxy", Proxy, vec![hosted("agg")])),
    ]);
    commands
}

/// A back-channel message from the hosted applications MLM `apps`, with a
/// small inline body, precedence 0, no expiry, not persistent.
pub fn publish(message_id: &str, destinations: Vec<ComponentRef>, groups: &[&str]) -> CommandBody {
    CommandBody::Publish(Publish {
        header: BackHeader {
            message_id: message_id.to_string(),
            source: hosted("apps"),
            class: "configuration".to_string(),
            subclass: "change".to_string(),
            created_at_ms: 0,
        },
        qos: Qos {
            precedence: 0,
            expiry_ms: None,
            persistence: false,
        },
        routing: Vec::new(),
        payload: Payload::Inline {
            mime_type: "text/plain".to_string(),
            body: format!("body of {message_id}").into_bytes(),
        },
        destinations,
        groups: groups.iter().map(|group| group.to_string()).collect(),
        max_attempts: 0,
    })
}

/// [`publish`] with other QoS.
pub fn publish_qos(message_id: &str, destinations: Vec<ComponentRef>, qos: Qos) -> CommandBody {
    let mut body = publish(message_id, destinations, &[]);
    if let CommandBody::Publish(publish) = &mut body {
        publish.qos = qos;
    }
    body
}

/// A poll by `caller` for at most `max_deliveries`, 1 MiB, default
/// visibility timeout.
pub fn poll(caller: ComponentRef, max_deliveries: u32) -> CommandBody {
    CommandBody::Poll(Poll {
        caller,
        max_deliveries,
        max_bytes: 1 << 20,
        visibility_ms: 0,
        message: None,
    })
}

pub fn settle(
    caller: ComponentRef,
    message: u64,
    destinations: Vec<ComponentRef>,
    settlement: Settlement,
) -> CommandBody {
    CommandBody::Settle(Settle {
        caller,
        message,
        destinations,
        settlement,
    })
}

/// What a test expects of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Applied, with any effect.
    Applied,
    /// Applied with exactly this effect.
    Effect(Effect),
    Rejected(Rejection),
    /// Refused before the log by the stateless checks, naming this field.
    Invalid(&'static str),
}

/// Applies commands to a state, one record each, the way a node does.
pub struct Harness {
    pub state: State,
    next_index: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Self {
            state: State::new(),
            next_index: 1,
        }
    }

    /// Encodes `commands` into one batch record and applies it.
    pub fn apply_batch(&mut self, commands: &[Command]) -> Vec<Outcome> {
        let mut batch = BatchBuilder::new();
        for command in commands {
            let encoded = encode(command).unwrap_or_else(|error| panic!("{command:?} is invalid: {error}"));
            batch.push(encoded).expect("test batches fit");
        }
        let payload = aligned(&batch.finish());
        let index = self.next_index;
        self.next_index += 1;
        self.state
            .apply(index, COMMAND_BATCH, &payload)
            .expect("a well-formed batch applies")
    }

    pub fn apply(&mut self, command: Command) -> Outcome {
        self.apply_batch(std::slice::from_ref(&command))
            .pop()
            .expect("one outcome per command")
    }
}

/// Copies bytes into an 8-aligned buffer, as log payloads are.
pub fn aligned(bytes: &[u8]) -> rkyv::util::AlignedVec<8> {
    let mut aligned = rkyv::util::AlignedVec::<8>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    aligned
}

/// Runs each command (one record each) and checks its outcome; a command
/// expected to be invalid must fail its stateless checks and leave the state
/// unchanged. Returns the final state for further queries.
pub fn check(steps: &[(Command, Expect)]) -> State {
    let mut harness = Harness::new();
    for (at, (command, expect)) in steps.iter().enumerate() {
        if let Expect::Invalid(field) = expect {
            let before = harness.state.hash();
            match encode(command) {
                Err(error) => assert_eq!(error.field, *field, "step {at}: wrong field in {error}"),
                Ok(_) => panic!("step {at}: expected field `{field}` to be refused, but {command:?} encoded"),
            }
            assert_eq!(
                before,
                harness.state.hash(),
                "step {at}: a refused command changed the state"
            );
            continue;
        }
        let outcome = harness.apply(command.clone());
        let matches = match (expect, &outcome.verdict) {
            (Expect::Applied, Verdict::Applied(_)) => true,
            (Expect::Effect(effect), Verdict::Applied(actual)) => effect == actual,
            (Expect::Rejected(rejection), Verdict::Rejected(actual)) => rejection == actual,
            _ => false,
        };
        assert!(
            matches,
            "step {at}: expected {expect:?}, got {outcome:?}\n  command: {command:?}"
        );
    }
    harness.state
}
