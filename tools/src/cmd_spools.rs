//! `farmlog spool ...`: the back-channel from the command line — publish
//! a multicast message to components and a group, poll as a component,
//! ack or nack deliveries, and read the spools (a message's deliveries,
//! depth, parked deliveries, pruned responses), redrive parked ones,
//! set the capacity, and watch for ready deliveries.
//!
//! A message is named by its position (as `publish` and `poll` print it)
//! or, with `--message-id`, by its id: the id is looked up first (one
//! read). Writes carry a session, so their retries are safe; a poll has
//! no session, and is retried anyway: the deliveries a lost answer
//! handed out come back after their visibility timeout.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use farmlog_api::client::Client;
use farmlog_api::pb::{self, spools_client::SpoolsClient};
use serde_json::{json, Value};

use crate::client_cmd::{
    block_on, bytes_json, bytes_text, emit, enum_name, follow, new_message_id, now_ms, opt_ref_text,
    parse_component_ref, ref_json, ref_text, refs_json, refs_text, rpc, say, session, written_json, Connect,
    FollowLimits,
};
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Publishes a back-channel message to components and at most one
    /// MLM or proxy group (applications MLMs and landlord admins).
    Publish {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: PublishArgs,
    },
    /// Collects the deliveries ready for a component and those reachable
    /// through it.
    Poll {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: PollArgs,
    },
    /// Acks a message's deliveries: delivered, or taken over on the
    /// destinations' behalf.
    Ack {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: SettleArgs,
    },
    /// Nacks a message's deliveries: retried later, parked once out of
    /// attempts.
    Nack {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: SettleArgs,
        /// Why the deliveries were not taken.
        #[arg(long, value_enum, default_value = "rejected")]
        reason: NackReasonArg,
    },
    /// One message and the state of each of its deliveries.
    Status {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        message: MessageArgs,
    },
    /// Live deliveries spooled for one destination, or for the tenant.
    Depth {
        #[command(flatten)]
        connect: Connect,
        /// The destination (`hosted:<id>` for a hosted one); default: the
        /// whole tenant.
        #[arg(value_parser = parse_component_ref)]
        destination: Option<pb::ComponentRef>,
    },
    /// Parked deliveries, oldest message first.
    Parked {
        #[command(flatten)]
        connect: Connect,
        /// 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Puts parked deliveries back with fresh attempts (admins): all of
    /// the tenant's, one message's, one destination's, or both.
    Redrive {
        #[command(flatten)]
        connect: Connect,
        /// Only this message's (its position).
        #[arg(long)]
        position: Option<u64>,
        /// Only this destination's.
        #[arg(long, value_parser = parse_component_ref)]
        destination: Option<pb::ComponentRef>,
    },
    /// Sets the tenant's spool capacity per destination (admins).
    Configure {
        #[command(flatten)]
        connect: Connect,
        /// Live deliveries each destination may hold (1..=1048576).
        #[arg(long)]
        capacity: u32,
    },
    /// The "rejected" responses a publisher got for pruned deliveries.
    Pruned {
        #[command(flatten)]
        connect: Connect,
        /// The publisher (`hosted:<id>` for a hosted one).
        #[arg(value_parser = parse_component_ref)]
        publisher: pb::ComponentRef,
        /// Only responses given at or after this position.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Prints a line whenever deliveries are ready for a component (then
    /// poll).
    Watch {
        #[command(flatten)]
        connect: Connect,
        /// The component that will poll.
        #[arg(value_parser = parse_component_ref)]
        caller: pb::ComponentRef,
        /// Stop after this many notifications.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after watching for this many milliseconds.
        #[arg(long)]
        follow_ms: Option<u64>,
    },
}

/// Why a delivery was not taken.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NackReasonArg {
    Rejected,
    Throttled,
    ReceptionFailed,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "payload")]
pub struct PayloadArgs {
    /// The body, as text (inline, at most 1 MiB).
    #[arg(long)]
    pub body: Option<String>,
    /// The body, read from a file (inline, at most 1 MiB).
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Where the destinations fetch the data (a bulk message; give
    /// --bulk-size too).
    #[arg(long, requires = "bulk_size")]
    pub bulk_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The publisher, which the caller acts as (`hosted:<id>` for a
    /// hosted applications MLM or application server).
    #[arg(long, value_parser = parse_component_ref)]
    pub source: pb::ComponentRef,
    /// The message id, unique among the tenant's back-channel messages
    /// (default: a new one).
    #[arg(long = "id")]
    pub message_id: Option<String>,
    /// Software update, configuration change, ...
    #[arg(long, default_value = "configuration")]
    pub class: String,
    #[arg(long, default_value = "general")]
    pub subclass: String,
    /// A final destination (repeat, or comma-separate; `hosted:<id>` for
    /// a hosted one).
    #[arg(long = "to", value_delimiter = ',', value_parser = parse_component_ref)]
    pub destinations: Vec<pb::ComponentRef>,
    /// An MLM or proxy group, expanded into its members.
    #[arg(long)]
    pub group: Option<String>,
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// The inline body's type.
    #[arg(long, default_value = "text/plain")]
    pub mime_type: String,
    /// Bytes at --bulk-url.
    #[arg(long)]
    pub bulk_size: Option<u64>,
    /// Attempts before a delivery is parked (1..=1000; 0: 10).
    #[arg(long, default_value_t = 0)]
    pub max_attempts: u32,
    /// Higher goes first (0..=255).
    #[arg(long, default_value_t = 0)]
    pub precedence: u32,
    /// When the message expires, in milliseconds since the Unix epoch.
    #[arg(long)]
    pub expiry_ms: Option<u64>,
    /// Ask for persistence.
    #[arg(long)]
    pub persistent: bool,
}

#[derive(Debug, Args)]
pub struct PollArgs {
    /// The component polling, which the caller acts as.
    #[arg(value_parser = parse_component_ref)]
    pub caller: pb::ComponentRef,
    /// Most deliveries to hand out (1..=4096; 0: 100).
    #[arg(long, default_value_t = 0)]
    pub max: u32,
    /// Most body bytes to hand out (0: 4 MiB).
    #[arg(long, default_value_t = 0)]
    pub max_bytes: u64,
    /// How long handed-out deliveries stay with the caller before they
    /// are handed out again unless settled (1000..=43200000; 0: 60 s).
    #[arg(long, default_value_t = 0)]
    pub visibility_ms: u64,
}

/// A back-channel message: by position, or by id.
#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "message")]
pub struct MessageArgs {
    /// The message's position.
    pub position: Option<u64>,
    /// The message's id instead.
    #[arg(long)]
    pub message_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct SettleArgs {
    /// The settling component (the destination or one on its path), which
    /// the caller acts as.
    #[arg(value_parser = parse_component_ref)]
    pub caller: pb::ComponentRef,
    #[command(flatten)]
    pub message: MessageArgs,
    /// The destinations to settle (repeat, or comma-separate; default:
    /// the caller itself).
    #[arg(long = "for", value_delimiter = ',', value_parser = parse_component_ref)]
    pub destinations: Vec<pb::ComponentRef>,
}

/// Runs a `spool` subcommand.
pub fn run(command: &SpoolCommand) -> Result<(), Failure> {
    match command {
        SpoolCommand::Publish { connect, args } => publish(connect, args),
        SpoolCommand::Poll { connect, args } => poll(connect, args),
        SpoolCommand::Ack { connect, args } => {
            settle(connect, args, pb::settle_request::Settlement::Ack(pb::SettleAck {}))
        }
        SpoolCommand::Nack { connect, args, reason } => {
            let reason = match reason {
                NackReasonArg::Rejected => pb::NackReason::Rejected,
                NackReasonArg::Throttled => pb::NackReason::Throttled,
                NackReasonArg::ReceptionFailed => pb::NackReason::ReceptionFailed,
            };
            settle(connect, args, pb::settle_request::Settlement::Nack(reason.into()))
        }
        SpoolCommand::Status { connect, message } => status(connect, message),
        SpoolCommand::Depth { connect, destination } => depth(connect, destination.clone()),
        SpoolCommand::Parked { connect, limit } => parked(connect, *limit),
        SpoolCommand::Redrive {
            connect,
            position,
            destination,
        } => redrive(connect, *position, destination.clone()),
        SpoolCommand::Configure { connect, capacity } => configure(connect, *capacity),
        SpoolCommand::Pruned {
            connect,
            publisher,
            from,
            limit,
        } => pruned(connect, publisher, *from, *limit),
        SpoolCommand::Watch {
            connect,
            caller,
            count,
            follow_ms,
        } => watch(connect, caller, FollowLimits::new(*count, *follow_ms)),
    }
}

fn payload(args: &PublishArgs) -> Result<pb::publish_request::Payload, Failure> {
    use pb::publish_request::Payload;
    let inline = |body: Vec<u8>| {
        Payload::Inline(pb::InlinePayload {
            mime_type: args.mime_type.clone(),
            body: body.into(),
        })
    };
    match (&args.payload.body, &args.payload.body_file, &args.payload.bulk_url) {
        (Some(body), _, _) => Ok(inline(body.clone().into_bytes())),
        (None, Some(path), _) => std::fs::read(path)
            .map(inline)
            .map_err(|error| Failure::usage(format!("{}: {error}", path.display()))),
        (None, None, Some(url)) => Ok(Payload::Bulk(pb::BulkPayload {
            url: url.clone(),
            size: args.bulk_size.unwrap_or(0),
        })),
        (None, None, None) => Err(Failure::usage("give --body, --body-file or --bulk-url")),
    }
}

fn publish(connect: &Connect, args: &PublishArgs) -> Result<(), Failure> {
    let payload = payload(args)?;
    block_on(async {
        let client = connect.client()?;
        let message_id = args
            .message_id
            .clone()
            .unwrap_or_else(|| new_message_id(&args.source.id));
        let request = pb::PublishRequest {
            header: Some(pb::BackHeader {
                message_id: message_id.clone(),
                source: Some(args.source.clone()),
                class: args.class.clone(),
                subclass: args.subclass.clone(),
                created_at_ms: now_ms(),
            }),
            qos: Some(pb::Qos {
                precedence: args.precedence,
                expiry_ms: args.expiry_ms,
                persistence: args.persistent,
            }),
            routing: Vec::new(),
            payload: Some(payload),
            destinations: args.destinations.clone(),
            groups: args.group.iter().cloned().collect(),
            max_attempts: args.max_attempts,
            session: session(&client).await?,
        };
        let answer = rpc!(&client, SpoolsClient::publish, request)?;
        emit(
            connect.json,
            || {
                json!({
                    "message_id": message_id, "position": answer.position, "destinations": answer.destinations,
                    "pruned": answer.pruned, "written": written_json(answer.written.as_ref()),
                })
            },
            || {
                let mut text = format!(
                    "published {message_id} at position {} for {} destinations",
                    answer.position, answer.destinations
                );
                if answer.pruned > 0 {
                    text.push_str(&format!("; {} deliveries pruned over capacity", answer.pruned));
                }
                text
            },
        )
    })
}

fn poll(connect: &Connect, args: &PollArgs) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::PollRequest {
            caller: Some(args.caller.clone()),
            max_deliveries: args.max,
            max_bytes: args.max_bytes,
            visibility_ms: args.visibility_ms,
            message: None,
        };
        let answer = rpc!(&client, SpoolsClient::poll, request)?;
        if connect.json {
            let handouts: Vec<Value> = answer.handouts.iter().map(handout_json).collect();
            return say(json!({"handouts": handouts, "written": written_json(answer.written.as_ref())}));
        }
        if answer.handouts.is_empty() {
            return say(format!("nothing ready for {}", ref_text(&args.caller)));
        }
        for handout in &answer.handouts {
            say(handout_text(handout))?;
        }
        Ok(())
    })
}

fn handout_json(handout: &pb::Handout) -> Value {
    let header = handout.header.clone().unwrap_or_default();
    let qos = handout.qos.unwrap_or_default();
    let payload = match &handout.payload {
        Some(pb::handout::Payload::Inline(inline)) => {
            json!({"inline": {"mime_type": inline.mime_type, "body": bytes_json(&inline.body)}})
        }
        Some(pb::handout::Payload::Bulk(bulk)) => json!({"bulk": {"url": bulk.url, "size": bulk.size}}),
        None => Value::Null,
    };
    json!({
        "position": handout.position, "tenant": handout.tenant, "message_id": header.message_id,
        "source": ref_json(header.source.as_ref()), "class": header.class, "subclass": header.subclass,
        "created_at_ms": header.created_at_ms,
        "qos": {"precedence": qos.precedence, "expiry_ms": qos.expiry_ms, "persistence": qos.persistence},
        "payload": payload, "destinations": refs_json(&handout.destinations),
    })
}

fn handout_text(handout: &pb::Handout) -> String {
    let header = handout.header.clone().unwrap_or_default();
    let payload = match &handout.payload {
        Some(pb::handout::Payload::Inline(inline)) => format!("{}: {}", inline.mime_type, bytes_text(&inline.body)),
        Some(pb::handout::Payload::Bulk(bulk)) => format!("bulk, {} bytes at {}", bulk.size, bulk.url),
        None => "no payload".into(),
    };
    format!(
        "#{} {} ({}) {}/{} from {} for {}: {payload}",
        handout.position,
        header.message_id,
        handout.tenant,
        header.class,
        header.subclass,
        opt_ref_text(header.source.as_ref()),
        refs_text(&handout.destinations)
    )
}

/// The position of the message `message` names: given, or looked up by
/// its id.
async fn position_of(client: &Client, message: &MessageArgs) -> Result<u64, Failure> {
    match (message.position, &message.message_id) {
        (Some(position), _) => Ok(position),
        (None, Some(id)) => {
            let request = pb::MessageStatusRequest {
                message: Some(pb::message_status_request::Message::MessageId(id.clone())),
            };
            let answer = rpc!(client, SpoolsClient::message_status, request)?;
            answer
                .message
                .map(|message| message.position)
                .ok_or_else(|| Failure::usage(format!("the node answered no message for {id}")))
        }
        (None, None) => Err(Failure::usage("give a position or --message-id")),
    }
}

fn settle(connect: &Connect, args: &SettleArgs, settlement: pb::settle_request::Settlement) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let position = position_of(&client, &args.message).await?;
        let destinations = match args.destinations.is_empty() {
            true => vec![args.caller.clone()],
            false => args.destinations.clone(),
        };
        let request = pb::SettleRequest {
            caller: Some(args.caller.clone()),
            position,
            destinations: destinations.clone(),
            settlement: Some(settlement),
            session: session(&client).await?,
        };
        let answer = rpc!(&client, SpoolsClient::settle, request)?;
        emit(
            connect.json,
            || {
                json!({
                    "position": answer.position, "acked": answer.acked, "respooled": answer.respooled,
                    "parked": answer.parked, "unchanged": answer.unchanged, "unpublished": answer.unpublished,
                    "written": written_json(answer.written.as_ref()),
                })
            },
            || {
                let mut text = format!(
                    "#{position} for {}: {} acked, {} respooled, {} parked, {} unchanged",
                    refs_text(&destinations),
                    answer.acked,
                    answer.respooled,
                    answer.parked,
                    answer.unchanged
                );
                if answer.unpublished {
                    text.push_str("; every delivery is done: its bulk URL may be unpublished");
                }
                text
            },
        )
    })
}

fn status(connect: &Connect, message: &MessageArgs) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let selector = match (message.position, &message.message_id) {
            (Some(position), _) => pb::message_status_request::Message::Position(position),
            (None, Some(id)) => pb::message_status_request::Message::MessageId(id.clone()),
            (None, None) => return Err(Failure::usage("give a position or --message-id")),
        };
        let request = pb::MessageStatusRequest {
            message: Some(selector),
        };
        let answer = rpc!(&client, SpoolsClient::message_status, request)?;
        let message = answer.message.clone().unwrap_or_default();
        if connect.json {
            let deliveries: Vec<Value> = answer.deliveries.iter().map(delivery_json).collect();
            return say(json!({
                "position": message.position, "message_id": message.message_id,
                "source": ref_json(message.source.as_ref()), "precedence": message.precedence,
                "expiry_ms": message.expiry_ms, "persistent": message.persistent, "bulk": message.bulk,
                "published_at_ms": message.published_at_ms, "destinations": message.destinations,
                "open": message.open, "finished": message.finished, "deliveries": deliveries,
            }));
        }
        say(format!(
            "#{} {} from {}: {} destinations, {} open{}",
            message.position,
            message.message_id,
            opt_ref_text(message.source.as_ref()),
            message.destinations,
            message.open,
            if message.finished { ", finished" } else { "" }
        ))?;
        for delivery in &answer.deliveries {
            say(format!(
                "  {} {} (attempts {}, holder {}{})",
                opt_ref_text(delivery.destination.as_ref()),
                enum_name::<pb::DeliveryState>(delivery.state),
                delivery.attempts,
                opt_ref_text(delivery.holder.as_ref()),
                match pb::NackReason::try_from(delivery.nacked) {
                    Ok(pb::NackReason::Unspecified) => String::new(),
                    _ => format!(", nacked {}", enum_name::<pb::NackReason>(delivery.nacked)),
                }
            ))?;
        }
        Ok(())
    })
}

fn delivery_json(delivery: &pb::DeliveryStatus) -> Value {
    let nacked = match pb::NackReason::try_from(delivery.nacked) {
        Ok(pb::NackReason::Unspecified) => None,
        _ => Some(enum_name::<pb::NackReason>(delivery.nacked)),
    };
    json!({
        "destination": ref_json(delivery.destination.as_ref()),
        "state": enum_name::<pb::DeliveryState>(delivery.state), "attempts": delivery.attempts,
        "holder": ref_json(delivery.holder.as_ref()), "due_ms": delivery.due_ms, "nacked": nacked,
    })
}

fn depth(connect: &Connect, destination: Option<pb::ComponentRef>) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let what = destination.as_ref().map_or_else(|| "the tenant".into(), ref_text);
        let answer = rpc!(&client, SpoolsClient::depth, pb::DepthRequest { destination })?;
        emit(
            connect.json,
            || json!({"depth": answer.depth, "capacity": answer.capacity}),
            || {
                format!(
                    "{what}: {} live deliveries (capacity {} per destination)",
                    answer.depth, answer.capacity
                )
            },
        )
    })
}

fn parked(connect: &Connect, limit: u32) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let answer = rpc!(&client, SpoolsClient::parked, pb::ParkedRequest { limit })?;
        if connect.json {
            let parked: Vec<Value> = answer
                .parked
                .iter()
                .map(
                    |parked| json!({"position": parked.position, "destination": ref_json(parked.destination.as_ref())}),
                )
                .collect();
            return say(json!({ "parked": parked }));
        }
        if answer.parked.is_empty() {
            return say("nothing parked");
        }
        for parked in &answer.parked {
            say(format!(
                "#{} for {}",
                parked.position,
                opt_ref_text(parked.destination.as_ref())
            ))?;
        }
        Ok(())
    })
}

fn redrive(connect: &Connect, position: Option<u64>, destination: Option<pb::ComponentRef>) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::RedriveRequest {
            position,
            destination,
            session: session(&client).await?,
        };
        let answer = rpc!(&client, SpoolsClient::redrive, request)?;
        emit(
            connect.json,
            || {
                json!({
                    "position": answer.position, "count": answer.count, "more": answer.more,
                    "written": written_json(answer.written.as_ref()),
                })
            },
            || {
                format!(
                    "redrove {} deliveries at position {}{}",
                    answer.count,
                    answer.position,
                    if answer.more {
                        "; more are parked: redrive again"
                    } else {
                        ""
                    }
                )
            },
        )
    })
}

fn configure(connect: &Connect, capacity: u32) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::ConfigureSpoolRequest {
            capacity,
            session: session(&client).await?,
        };
        let answer = rpc!(&client, SpoolsClient::configure, request)?;
        emit(
            connect.json,
            || json!({"position": answer.position, "written": written_json(answer.written.as_ref())}),
            || format!("capacity {capacity} per destination, at position {}", answer.position),
        )
    })
}

fn pruned(connect: &Connect, publisher: &pb::ComponentRef, from: u64, limit: u32) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::PrunedResponsesRequest {
            publisher: Some(publisher.clone()),
            from_position: from,
            limit,
        };
        let answer = rpc!(&client, SpoolsClient::pruned_responses, request)?;
        if connect.json {
            let responses: Vec<Value> = answer
                .responses
                .iter()
                .map(|response| {
                    json!({
                        "at": response.at, "position": response.position, "message_id": response.message_id,
                        "destination": ref_json(response.destination.as_ref()),
                    })
                })
                .collect();
            return say(json!({ "responses": responses }));
        }
        if answer.responses.is_empty() {
            return say(format!("no pruned deliveries of {}", ref_text(publisher)));
        }
        for response in &answer.responses {
            say(format!(
                "#{} {} for {}: pruned at position {}",
                response.position,
                response.message_id,
                opt_ref_text(response.destination.as_ref()),
                response.at
            ))?;
        }
        Ok(())
    })
}

fn watch(connect: &Connect, caller: &pb::ComponentRef, limits: FollowLimits) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let open = || {
            let request = pb::SubscribeDeliveriesRequest {
                caller: Some(caller.clone()),
            };
            let client = &client;
            async move { rpc!(client, SpoolsClient::subscribe_deliveries, request) }
        };
        let each = |ready: pb::DeliveriesReady| {
            emit(
                connect.json,
                || json!({"applied_index": ready.applied_index, "reminder": ready.reminder}),
                || {
                    format!(
                        "deliveries ready for {} at applied index {}{}",
                        ref_text(caller),
                        ready.applied_index,
                        if ready.reminder { " (still)" } else { "" }
                    )
                },
            )
        };
        follow(&client, limits, open, each).await
    })
}
