//! Stateless validation: the checks that need nothing but the command
//! (fields, sizes, counts). They run where a command is proposed, before
//! it enters the log, and again in apply from the same code, on the same
//! archived bytes. A failure names the field.
//!
//! Checks that depend on state (does the parent exist, is the expected
//! version right) belong to apply and produce a [`super::Rejection`].

use std::fmt;

use super::command::*;

/// A command that fails a stateless check: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// The field's path inside the command, e.g. `body.header.class`.
    pub field: String,
    pub reason: String,
}

impl CommandError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "invalid field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for CommandError {}

type Checked = Result<(), CommandError>;

/// Runs every stateless check on an archived command.
pub fn validate(command: &ArchivedCommand) -> Checked {
    let version = command.schema_version.to_native();
    if version != SCHEMA_VERSION {
        return Err(CommandError::new(
            "schema_version",
            format!("version {version} is not the version this build writes ({SCHEMA_VERSION})"),
        ));
    }
    tenant_name("tenant", &command.tenant)?;
    name("principal", &command.principal)?;
    if command.encryption.is_some() {
        return Err(CommandError::new(
            "encryption",
            "reserved for per-tenant encryption; must be empty in schema version 1",
        ));
    }
    if let Some(session) = command.session.as_ref() {
        if session.client_id.to_native() == 0 {
            return Err(CommandError::new(
                "session.client_id",
                "0 is not a client id; open a session first",
            ));
        }
        if session.sequence.to_native() == 0 {
            return Err(CommandError::new("session.sequence", "sequence numbers start at 1"));
        }
    }
    let landlord = command.tenant.as_str() == LANDLORD;
    match &command.body {
        ArchivedCommandBody::Tick => Ok(()),
        ArchivedCommandBody::OpenSession => match command.session.is_some() {
            true => Err(CommandError::new(
                "session",
                "opening a session cannot itself run in a session",
            )),
            false => Ok(()),
        },
        ArchivedCommandBody::RegisterCustomer(body) => register_customer(body, landlord),
        ArchivedCommandBody::RegisterComponent(body) => register_component(body, landlord),
        ArchivedCommandBody::SetEnabled(body) => name("body.component", &body.component),
        ArchivedCommandBody::Deregister(body) => name("body.component.id", &body.component.id),
        ArchivedCommandBody::MapManagementId(body) => {
            name("body.proxy", &body.proxy)?;
            name("body.management_id", &body.management_id)?;
            optional_name("body.component", body.component.as_ref())
        }
        ArchivedCommandBody::DefineGroup(body) => {
            name("body.name", &body.name)?;
            match (GroupKind::from_archived(&body.kind), landlord) {
                (GroupKind::Security, true) => Err(CommandError::new(
                    "body.kind",
                    "security groups hold one customer's components",
                )),
                _ => Ok(()),
            }
        }
        ArchivedCommandBody::ChangeGroupMember(body) => {
            name("body.group", &body.group)?;
            name("body.member.id", &body.member.id)
        }
        ArchivedCommandBody::Upstream(message) => upstream(message, &command.tenant, landlord),
        ArchivedCommandBody::StreamAppend(body) => stream_append(body),
        ArchivedCommandBody::Publish(body) => publish(body),
        ArchivedCommandBody::Poll(body) => {
            if command.session.is_some() {
                return Err(CommandError::new(
                    "session",
                    "a poll is not retried through a session: what a lost reply handed out is handed out again after its visibility timeout",
                ));
            }
            poll(body, &command.tenant, landlord)
        }
        ArchivedCommandBody::Settle(body) => settle(body),
        ArchivedCommandBody::Redrive(body) => match body.destination.as_ref() {
            Some(destination) => name("body.destination.id", &destination.id),
            None => Ok(()),
        },
        ArchivedCommandBody::ConfigureSpool(body) => {
            let capacity = body.capacity.to_native();
            match (1..=SPOOL_CAPACITY_MAX).contains(&capacity) {
                true => Ok(()),
                false => Err(CommandError::new(
                    "body.capacity",
                    format!("{capacity}, not within 1..={SPOOL_CAPACITY_MAX}"),
                )),
            }
        }
        ArchivedCommandBody::Transfer(body) => transfer(body, landlord),
        ArchivedCommandBody::SetThrottle(body) => set_throttle(body),
        ArchivedCommandBody::ReportUsage(body) => {
            name("body.farm", &body.farm)?;
            name("body.member.id", &body.member.id)?;
            count("body.increments", body.increments.len(), 1, USAGE_INCREMENTS_MAX)
        }
    }
}

fn publish(body: &ArchivedPublish) -> Checked {
    let header = &body.header;
    name("body.header.message_id", &header.message_id)?;
    name("body.header.source.id", &header.source.id)?;
    name("body.header.class", &header.class)?;
    name("body.header.subclass", &header.subclass)?;
    routing(&body.routing)?;
    match &body.payload {
        ArchivedPayload::Inline { mime_type, body } => {
            name("body.payload.mime_type", mime_type)?;
            bytes("body.payload.body", body.len())?;
        }
        ArchivedPayload::Bulk { url, size } => {
            self::url("body.payload.url", url)?;
            if size.to_native() == 0 {
                return Err(CommandError::new(
                    "body.payload.size",
                    "a bulk transfer has at least one byte",
                ));
            }
        }
    }
    if body.groups.len() > PUBLISH_GROUPS_MAX {
        return Err(CommandError::new(
            "body.groups",
            format!(
                "{} groups: a back-channel message targets at most {PUBLISH_GROUPS_MAX} group, so that the path to each final destination is unique",
                body.groups.len()
            ),
        ));
    }
    for (at, group) in body.groups.iter().enumerate() {
        name_at(("body.groups", at, ""), group)?;
    }
    if body.destinations.is_empty() && body.groups.is_empty() {
        return Err(CommandError::new(
            "body.destinations",
            "a back-channel message needs a destination or a group",
        ));
    }
    if body.destinations.len() > PUBLISH_DESTINATIONS_MAX {
        return Err(CommandError::new(
            "body.destinations",
            format!(
                "{} destinations, more than {PUBLISH_DESTINATIONS_MAX}",
                body.destinations.len()
            ),
        ));
    }
    for (at, destination) in body.destinations.iter().enumerate() {
        name_at(("body.destinations", at, ".id"), &destination.id)?;
    }
    let attempts = body.max_attempts.to_native();
    if attempts > DELIVERY_ATTEMPTS_MAX {
        return Err(CommandError::new(
            "body.max_attempts",
            format!("{attempts}, more than {DELIVERY_ATTEMPTS_MAX} (0 means {DELIVERY_ATTEMPTS_DEFAULT})"),
        ));
    }
    Ok(())
}

fn poll(body: &ArchivedPoll, tenant: &str, landlord: bool) -> Checked {
    name("body.caller.id", &body.caller.id)?;
    let deliveries = body.max_deliveries.to_native();
    count(
        "body.max_deliveries",
        deliveries as usize,
        1,
        POLL_DELIVERIES_MAX as usize,
    )?;
    let max_bytes = body.max_bytes.to_native();
    if !(1..=POLL_BYTES_MAX).contains(&max_bytes) {
        return Err(CommandError::new(
            "body.max_bytes",
            format!("{max_bytes}, not within 1..={POLL_BYTES_MAX}"),
        ));
    }
    let visibility = body.visibility_ms.to_native();
    if visibility != 0 && !(VISIBILITY_MS_MIN..=VISIBILITY_MS_MAX).contains(&visibility) {
        return Err(CommandError::new(
            "body.visibility_ms",
            format!("{visibility} ms, not within {VISIBILITY_MS_MIN}..={VISIBILITY_MS_MAX} (0 means {VISIBILITY_MS_DEFAULT})"),
        ));
    }
    match body.message.as_ref() {
        // The carried message's fields are under `body.message`.
        Some(message) => upstream(message, tenant, landlord).map_err(|mut error| {
            if let Some(rest) = error.field.strip_prefix("body.") {
                error.field = format!("body.message.{rest}");
            }
            error
        }),
        None => Ok(()),
    }
}

fn settle(body: &ArchivedSettle) -> Checked {
    name("body.caller.id", &body.caller.id)?;
    if body.message.to_native() == 0 {
        return Err(CommandError::new("body.message", "positions start at 1"));
    }
    count("body.destinations", body.destinations.len(), 1, SETTLE_DESTINATIONS_MAX)?;
    for (at, destination) in body.destinations.iter().enumerate() {
        name_at(("body.destinations", at, ".id"), &destination.id)?;
    }
    Ok(())
}

fn transfer(body: &ArchivedTransferStep, landlord: bool) -> Checked {
    if landlord {
        return Err(CommandError::new(
            "tenant",
            "a bulk transfer belongs to the customer whose proxy requested it",
        ));
    }
    name("body.request", &body.request)?;
    name("body.hop.id", &body.hop.id)?;
    match &body.action {
        ArchivedTransferAction::Grant { url } => self::url("body.action.url", url),
        ArchivedTransferAction::Deny { reason, retry_after_ms } => {
            if reason.is_empty() {
                return Err(CommandError::new("body.action.reason", "a denial says why"));
            }
            text("body.action.reason", reason)?;
            let retry = retry_after_ms.to_native();
            match retry <= TRANSFER_RETRY_MS_MAX {
                true => Ok(()),
                false => Err(CommandError::new(
                    "body.action.retry_after_ms",
                    format!("{retry} ms, more than {TRANSFER_RETRY_MS_MAX}"),
                )),
            }
        }
        ArchivedTransferAction::Transferred => Ok(()),
    }
}

fn set_throttle(body: &ArchivedSetThrottle) -> Checked {
    name("body.farm", &body.farm)?;
    count("body.rules", body.rules.len(), 0, THROTTLE_RULES_MAX)?;
    for (at, rule) in body.rules.iter().enumerate() {
        let field = |suffix: &str| format!("body.rules[{at}].{suffix}");
        match rule {
            ArchivedThrottleRule::Quiet { from_minute, to_minute } => {
                for (value, which) in [(from_minute, "from_minute"), (to_minute, "to_minute")] {
                    if value.to_native() >= MINUTES_PER_DAY {
                        return Err(CommandError::new(
                            field(which),
                            format!("{}, not a minute of the day (0..{MINUTES_PER_DAY})", value.to_native()),
                        ));
                    }
                }
                if from_minute == to_minute {
                    return Err(CommandError::new(field("to_minute"), "an empty quiet window"));
                }
            }
            ArchivedThrottleRule::Limit {
                window_ms,
                max_bytes,
                max_messages,
            } => {
                let window = window_ms.to_native();
                if !(1..=THROTTLE_WINDOW_MS_MAX).contains(&window) {
                    return Err(CommandError::new(
                        field("window_ms"),
                        format!("{window} ms, not within 1..={THROTTLE_WINDOW_MS_MAX}"),
                    ));
                }
                if max_bytes.is_none() && max_messages.is_none() {
                    return Err(CommandError::new(
                        field("max_bytes"),
                        "a limit bounds bytes, messages or both",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn register_customer(body: &ArchivedRegisterCustomer, landlord: bool) -> Checked {
    if !landlord {
        return Err(CommandError::new("tenant", "only the landlord registers customers"));
    }
    tenant_name("body.name", &body.name)?;
    if body.name.as_str() == LANDLORD {
        return Err(CommandError::new("body.name", "`landlord` is reserved"));
    }
    text("body.display_name", &body.display_name)
}

fn register_component(body: &ArchivedRegisterComponent, landlord: bool) -> Checked {
    name("body.id", &body.id)?;
    name("body.version", &body.version)?;
    let kind = ComponentKind::from_archived(&body.kind);
    if kind.is_hosted() != landlord {
        let reason = match landlord {
            true => format!("kind `{}` belongs to a customer, not the landlord", kind.name()),
            false => format!(
                "kind `{}` is hosted by the provider: the landlord registers it",
                kind.name()
            ),
        };
        return Err(CommandError::new("body.kind", reason));
    }
    let parents = body.parents.len();
    let allowed = match kind {
        ComponentKind::ApplicationServer => 0..=0,
        ComponentKind::SupportInstance => 1..=PARENTS_MAX,
        _ => 1..=1,
    };
    if !allowed.contains(&parents) {
        return Err(CommandError::new(
            "body.parents",
            format!(
                "kind `{}` has {}..={} parents, not {parents}",
                kind.name(),
                allowed.start(),
                allowed.end()
            ),
        ));
    }
    for (at, parent) in body.parents.iter().enumerate() {
        name_at(("body.parents", at, ".id"), &parent.id)?;
    }
    if parents == 2 && same_ref(&body.parents[0], &body.parents[1]) {
        return Err(CommandError::new("body.parents[1]", "the two parents must differ"));
    }
    Ok(())
}

fn same_ref(one: &ArchivedComponentRef, other: &ArchivedComponentRef) -> bool {
    one.hosted == other.hosted && one.id == other.id
}

fn upstream(message: &ArchivedUpstreamMessage, tenant: &str, landlord: bool) -> Checked {
    if landlord {
        return Err(CommandError::new(
            "tenant",
            "upstream messages come from a customer's components",
        ));
    }
    let header = &message.header;
    name("body.header.message_id", &header.message_id)?;
    name("body.header.source", &header.source)?;
    name("body.header.source_version", &header.source_version)?;
    if header.customer.as_str() != tenant {
        return Err(CommandError::new(
            "body.header.customer",
            "must equal the command's tenant",
        ));
    }
    name("body.header.class", &header.class)?;
    name("body.header.subclass", &header.subclass)?;
    routing(&message.routing)?;
    content(&message.content, header)
}

fn routing(hops: &rkyv::vec::ArchivedVec<ArchivedRouteHop>) -> Checked {
    if hops.len() > ROUTE_HOPS_MAX {
        return Err(CommandError::new(
            "body.routing",
            format!("{} hops, more than {ROUTE_HOPS_MAX}", hops.len()),
        ));
    }
    for (at, hop) in hops.iter().enumerate() {
        name_at(("body.routing", at, ".component.id"), &hop.component.id)?;
    }
    Ok(())
}

fn content(content: &ArchivedContent, header: &ArchivedMessageHeader) -> Checked {
    match content {
        ArchivedContent::Alarm(alarm) => {
            name("body.content.alarm_id", &alarm.alarm_id)?;
            name("body.content.support_instance", &alarm.support_instance)?;
            text("body.content.text", &alarm.text)?;
            bytes("body.content.data", alarm.data.len())
        }
        ArchivedContent::Event(event) => {
            optional_name("body.content.support_instance", event.support_instance.as_ref())?;
            text("body.content.text", &event.text)?;
            bytes("body.content.data", event.data.len())
        }
        ArchivedContent::Data(data) => {
            name("body.content.mime_type", &data.mime_type)?;
            optional_name("body.content.encoding", data.encoding.as_ref())?;
            bytes("body.content.body", data.body.len())?;
            match data.size.to_native() == data.body.len() as u64 {
                true => Ok(()),
                false => Err(CommandError::new("body.content.size", "must equal the body's length")),
            }
        }
        ArchivedContent::Response(response) => {
            name("body.content.in_reply_to", &response.in_reply_to)?;
            match response.error.as_ref() {
                Some(error) => text("body.content.error", error),
                None => Ok(()),
            }
        }
        ArchivedContent::BulkRequest(request) => {
            if request.size.to_native() == 0 {
                return Err(CommandError::new(
                    "body.content.size",
                    "a bulk transfer has at least one byte",
                ));
            }
            text("body.content.description", &request.description)
        }
        ArchivedContent::BulkResponse(response) => bulk_response(response),
        ArchivedContent::Heartbeat(heartbeat) => {
            if header.class.as_str() != HEARTBEAT_CLASS || header.subclass.as_str() != HEARTBEAT_SUBCLASS {
                return Err(CommandError::new(
                    "body.header.class",
                    format!("a heartbeat has class `{HEARTBEAT_CLASS}` and subclass `{HEARTBEAT_SUBCLASS}`"),
                ));
            }
            if heartbeat.components.len() > HEARTBEAT_COMPONENTS_MAX {
                return Err(CommandError::new(
                    "body.content.components",
                    format!(
                        "{} components, more than {HEARTBEAT_COMPONENTS_MAX}",
                        heartbeat.components.len()
                    ),
                ));
            }
            for (at, component) in heartbeat.components.iter().enumerate() {
                name_at(("body.content.components", at, ""), component)?;
            }
            Ok(())
        }
    }
}

fn bulk_response(response: &ArchivedBulkResponse) -> Checked {
    name("body.content.request_message_id", &response.request_message_id)?;
    match (response.granted, response.url.as_ref(), response.reason.as_ref()) {
        (true, Some(url), reason) => {
            self::url("body.content.url", url)?;
            reason.map_or(Ok(()), |reason| text("body.content.reason", reason))
        }
        (true, None, _) => Err(CommandError::new(
            "body.content.url",
            "a grant says where to send the data",
        )),
        (false, Some(_), _) => Err(CommandError::new("body.content.url", "a denial has no URL")),
        (false, None, Some(reason)) if reason.is_empty() => {
            Err(CommandError::new("body.content.reason", "a denial says why"))
        }
        (false, None, Some(reason)) => text("body.content.reason", reason),
        (false, None, None) => Err(CommandError::new("body.content.reason", "a denial says why")),
    }
}

fn stream_append(body: &ArchivedStreamAppend) -> Checked {
    name("body.stream", &body.stream)?;
    name("body.event_type", &body.event_type)?;
    bytes("body.body", body.body.len())?;
    if let Some(idempotency) = body.idempotency.as_ref() {
        name("body.idempotency.key", &idempotency.key)?;
        let window = idempotency.window_ms.to_native();
        if window == 0 || window > IDEMPOTENCY_WINDOW_MS_MAX {
            return Err(CommandError::new(
                "body.idempotency.window_ms",
                format!("{window} ms, not within 1..={IDEMPOTENCY_WINDOW_MS_MAX}"),
            ));
        }
    }
    Ok(())
}

fn name(field: &str, value: &str) -> Checked {
    name_problem(value).map_or(Ok(()), |reason| Err(CommandError::new(field, reason)))
}

/// [`name`] for an element of a list: the path (`prefix[at]suffix`) is
/// only built when the check fails.
fn name_at((prefix, at, suffix): (&str, usize, &str), value: &str) -> Checked {
    match name_problem(value) {
        None => Ok(()),
        Some(reason) => Err(CommandError::new(format!("{prefix}[{at}]{suffix}"), reason)),
    }
}

fn name_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".into());
    }
    if value.len() > NAME_BYTES_MAX {
        return Some(format!("{} bytes, more than {NAME_BYTES_MAX}", value.len()));
    }
    has_control(value).then(|| "must not contain control characters".into())
}

/// Whether `value` holds a control character (Unicode category Cc:
/// U+0000–U+001F and U+007F–U+009F), in one pass over the UTF-8 bytes:
/// the C1 controls are exactly the two-byte sequences 0xC2 0x80..=0x9F.
fn has_control(value: &str) -> bool {
    let bytes = value.as_bytes();
    // A branch-free pass the compiler vectorizes; the exact pass below runs
    // only when a byte could start a control character.
    let suspect = bytes.iter().fold(false, |suspect, &byte| {
        suspect | (byte < 0x20) | (byte == 0x7f) | (byte == 0xc2)
    });
    if !suspect {
        return false;
    }
    let mut previous = 0u8;
    for &byte in bytes {
        if byte < 0x20 || byte == 0x7f || (previous == 0xc2 && (0x80..=0x9f).contains(&byte)) {
            return true;
        }
        previous = byte;
    }
    false
}

fn optional_name(field: &str, value: Option<&rkyv::string::ArchivedString>) -> Checked {
    value.map_or(Ok(()), |value| name(field, value))
}

/// A tenant name: what certificates carry, so a plain, portable alphabet.
fn tenant_name(field: &str, value: &str) -> Checked {
    name(field, value)?;
    let portable = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
    let starts_well = value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    match starts_well && value.chars().all(portable) {
        true => Ok(()),
        false => Err(CommandError::new(
            field,
            "start with a lowercase ASCII letter or digit; then use those, `-`, `_` and `.`",
        )),
    }
}

fn text(field: &str, value: &str) -> Checked {
    match value.len() <= TEXT_BYTES_MAX {
        true => Ok(()),
        false => Err(CommandError::new(
            field,
            format!("{} bytes, more than {TEXT_BYTES_MAX}", value.len()),
        )),
    }
}

fn url(field: &str, value: &str) -> Checked {
    if value.is_empty() || value.len() > URL_BYTES_MAX {
        return Err(CommandError::new(
            field,
            format!("{} bytes, not within 1..={URL_BYTES_MAX}", value.len()),
        ));
    }
    match has_control(value) {
        true => Err(CommandError::new(field, "must not contain control characters")),
        false => Ok(()),
    }
}

/// A list's length (or a requested count) within `min..=max`.
fn count(field: &str, len: usize, min: usize, max: usize) -> Checked {
    match (min..=max).contains(&len) {
        true => Ok(()),
        false => Err(CommandError::new(field, format!("{len}, not within {min}..={max}"))),
    }
}

fn bytes(field: &str, len: usize) -> Checked {
    match len <= BODY_BYTES_MAX {
        true => Ok(()),
        false => Err(CommandError::new(
            field,
            format!("{len} bytes, more than {BODY_BYTES_MAX}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::has_control;

    #[test]
    fn control_characters_are_those_of_category_cc() {
        for code in 0..=0x10_ffffu32 {
            let Some(c) = char::from_u32(code) else { continue };
            let text = format!("a{c}b");
            assert_eq!(has_control(&text), c.is_control(), "U+{code:04X}");
        }
    }
}
