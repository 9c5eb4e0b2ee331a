//! `farmlog.v1.Streams`: append with an expected version (one event per
//! call, or a batch of up to [`APPEND_BATCH_MAX`], each its own command
//! with its own outcome), read, list and subscribe, in the caller's
//! tenant.

use farmlog_engine::state::command::{
    ArchivedCommandBody, CommandBody, ExpectedVersion, Idempotency, StreamAppend, IDEMPOTENCY_WINDOW_MS_DEFAULT,
};
use farmlog_engine::state::outcome::{Effect, Outcome, Verdict};
use farmlog_engine::state::{Direction, Place, TenantView};
use farmlog_replica::proposer::QUEUE_COMMANDS_MAX;
use tonic::{Code, Request, Response, Status};

use crate::auth::Op;
use crate::context::{applied, Context, Subscription, SUBSCRIPTION_PAGE};
use crate::pb::{self, streams_server::Streams};
use crate::status::{invalid, CURRENT_VERSION_HEADER};

/// Most events one read returns, and what a read that names no limit gets.
pub const READ_LIMIT_MAX: u32 = 1000;
pub const READ_LIMIT_DEFAULT: u32 = 100;

pub struct StreamsService {
    context: Context,
}

impl StreamsService {
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

/// Most appends one `AppendBatch` call carries.
pub const APPEND_BATCH_MAX: usize = 1000;
// A batch is queued for the proposer whole before any outcome is awaited.
const _: () = assert!(APPEND_BATCH_MAX <= QUEUE_COMMANDS_MAX);

/// An append request as the command it proposes, and its session.
fn append_command(request: pb::AppendRequest) -> (Option<pb::Session>, CommandBody) {
    let expected = match request.expected.and_then(|expected| expected.expected) {
        None | Some(pb::expected_version::Expected::Any(_)) => ExpectedVersion::Any,
        Some(pb::expected_version::Expected::NoStream(_)) => ExpectedVersion::NoStream,
        Some(pb::expected_version::Expected::Exact(version)) => ExpectedVersion::Exact(version),
    };
    let idempotency = request.idempotency_key.map(|key| Idempotency {
        key,
        window_ms: match request.idempotency_window_ms {
            0 => IDEMPOTENCY_WINDOW_MS_DEFAULT,
            window => window,
        },
    });
    let body = CommandBody::StreamAppend(StreamAppend {
        stream: request.stream,
        expected,
        idempotency,
        event_type: request.event_type,
        body: request.body.to_vec(),
    });
    (request.session, body)
}

/// What Append answers for a written append: its place and version, or
/// the status of its rejection.
fn appended(place: Place, outcome: Outcome) -> Result<pb::AppendResponse, Status> {
    let (written, outcome) = applied(place, outcome)?;
    let (position, version, duplicate) = match outcome.verdict {
        Verdict::Applied(Effect::StreamAppended { position, version }) => (position, version, false),
        Verdict::Applied(Effect::StreamDuplicate { position, version }) => (position, version, true),
        other => return Err(Status::internal(format!("an append applied as {other:?}"))),
    };
    Ok(pb::AppendResponse {
        position,
        version,
        duplicate,
        written: Some(written),
    })
}

/// A batch's append that failed, as the status Append would have given.
fn failure(status: &Status) -> pb::AppendFailure {
    pb::AppendFailure {
        code: status.code() as i32,
        message: status.message().to_string(),
        current_version: status
            .metadata()
            .get(CURRENT_VERSION_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok()),
    }
}

/// The limit a read asked for, checked.
pub fn read_limit(limit: u32) -> Result<usize, Status> {
    match limit {
        0 => Ok(READ_LIMIT_DEFAULT as usize),
        1..=READ_LIMIT_MAX => Ok(limit as usize),
        _ => Err(invalid("limit", format!("at most {READ_LIMIT_MAX}"))),
    }
}

pub fn direction(direction: i32) -> Result<Direction, Status> {
    match pb::Direction::try_from(direction) {
        Ok(pb::Direction::Forward) => Ok(Direction::Forward),
        Ok(pb::Direction::Backward) => Ok(Direction::Backward),
        Err(_) => Err(invalid("direction", format!("unknown value {direction}"))),
    }
}

/// The event at `position`, which must be a stream append of this tenant.
fn stream_event(context: &Context, view: &TenantView<'_>, position: u64) -> Result<pb::StreamEvent, Status> {
    let event = context.event(view, position)?;
    let command = event.command();
    let ArchivedCommandBody::StreamAppend(append) = &command.body else {
        return Err(Status::not_found(format!("no stream event at position {position}")));
    };
    let stream = append.stream.as_str();
    Ok(pb::StreamEvent {
        stream: stream.to_string(),
        version: view.stream_version_at(stream, position).unwrap_or_default(),
        position,
        event_type: append.event_type.to_string(),
        body: bytes::Bytes::copy_from_slice(append.body.as_slice()),
        proposed_at_ms: command.proposed_at_ms.to_native(),
        principal: command.principal.to_string(),
    })
}

#[tonic::async_trait]
impl Streams for StreamsService {
    async fn append(&self, request: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        let caller = self.context.caller(&request, Op::AppendStream)?;
        let (session, body) = append_command(request.into_inner());
        let (place, outcome) = self.context.write(&caller, session, body).await?;
        appended(place, outcome).map(Response::new)
    }

    async fn append_batch(
        &self,
        request: Request<pb::AppendBatchRequest>,
    ) -> Result<Response<pb::AppendBatchResponse>, Status> {
        let caller = self.context.caller(&request, Op::AppendStream)?;
        let appends = request.into_inner().appends;
        if appends.is_empty() {
            return Err(invalid("appends", "at least one append"));
        }
        if appends.len() > APPEND_BATCH_MAX {
            return Err(invalid("appends", format!("at most {APPEND_BATCH_MAX} appends")));
        }
        let writes = appends.into_iter().map(append_command).collect();
        let results = self.context.write_many(&caller, writes).await;
        // None written for sure or not (a follower, a node stopping): the
        // call fails as Append would, so a client follows the leader hint
        // and retries by the same rules.
        let unavailable =
            |result: &Result<_, Status>| matches!(result, Err(status) if status.code() == Code::Unavailable);
        if results.iter().all(unavailable) {
            let first = results.into_iter().find_map(Result::err);
            return Err(first.unwrap_or_else(|| Status::internal("a batch of appends had no result")));
        }
        let outcomes = results
            .into_iter()
            .map(|result| {
                let outcome = match result.and_then(|(place, outcome)| appended(place, outcome)) {
                    Ok(response) => pb::append_outcome::Outcome::Appended(response),
                    Err(status) => pb::append_outcome::Outcome::Failed(failure(&status)),
                };
                pb::AppendOutcome { outcome: Some(outcome) }
            })
            .collect();
        Ok(Response::new(pb::AppendBatchResponse { outcomes }))
    }

    async fn read(&self, request: Request<pb::ReadStreamRequest>) -> Result<Response<pb::ReadStreamResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadStreams)?;
        let body = request.get_ref();
        let (limit, direction) = (read_limit(body.limit)?, direction(body.direction)?);
        let (stream, from) = (body.stream.clone(), body.from_version);
        self.context
            .read(&request, &caller, |view, _| {
                let events = view
                    .read_stream(&stream, from, direction, limit)
                    .ok_or_else(|| Status::not_found(format!("stream {stream:?} not found")))?;
                let events = events
                    .iter()
                    .map(|event| stream_event(&self.context, &view, event.position))
                    .collect::<Result<_, _>>()?;
                Ok(pb::ReadStreamResponse { events })
            })
            .await
    }

    async fn read_all(&self, request: Request<pb::ReadAllRequest>) -> Result<Response<pb::ReadStreamResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadStreams)?;
        let body = request.get_ref();
        let (limit, direction) = (read_limit(body.limit)?, direction(body.direction)?);
        let from = body.from_position;
        self.context
            .read(&request, &caller, |view, _| {
                let events = view
                    .read_all_streams(from, direction, limit)
                    .into_iter()
                    .map(|position| stream_event(&self.context, &view, position))
                    .collect::<Result<_, _>>()?;
                Ok(pb::ReadStreamResponse { events })
            })
            .await
    }

    async fn list(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadStreams)?;
        self.context
            .read(&request, &caller, |view, _| {
                let streams = view
                    .streams()
                    .into_iter()
                    .map(|stream| pb::StreamInfo {
                        stream: stream.to_string(),
                        version: view.stream_version(stream).unwrap_or_default(),
                    })
                    .collect();
                Ok(pb::ListStreamsResponse { streams })
            })
            .await
    }

    type SubscribeStream = Subscription<pb::StreamEvent>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeStreamRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.context.caller(&request, Op::ReadStreams)?;
        let pb::SubscribeStreamRequest { stream, from_version } = request.into_inner();
        let context = self.context.clone();
        let mut next = from_version;
        let events = self.context.follow(&caller, move |view, _| {
            // A stream that does not exist yet is waited for.
            let events = view
                .read_stream(&stream, next, Direction::Forward, SUBSCRIPTION_PAGE)
                .unwrap_or_default();
            next += events.len() as u64;
            events
                .iter()
                .map(|event| stream_event(&context, &view, event.position))
                .collect()
        })?;
        Ok(Response::new(events))
    }

    type SubscribeAllStream = Subscription<pb::StreamEvent>;

    async fn subscribe_all(
        &self,
        request: Request<pb::SubscribeAllRequest>,
    ) -> Result<Response<Self::SubscribeAllStream>, Status> {
        let caller = self.context.caller(&request, Op::ReadStreams)?;
        let context = self.context.clone();
        let mut next = request.into_inner().from_position;
        let events = self.context.follow(&caller, move |view, _| {
            let positions = view.read_all_streams(next, Direction::Forward, SUBSCRIPTION_PAGE);
            if let Some(last) = positions.last() {
                next = last + 1;
            }
            positions
                .into_iter()
                .map(|position| stream_event(&context, &view, position))
                .collect()
        })?;
        Ok(Response::new(events))
    }
}
