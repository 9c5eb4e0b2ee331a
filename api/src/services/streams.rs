//! `farmlog.v1.Streams`: append with an expected version, read, list and
//! subscribe, in the caller's tenant.

use farmlog_engine::state::command::{
    ArchivedCommandBody, CommandBody, ExpectedVersion, Idempotency, StreamAppend, IDEMPOTENCY_WINDOW_MS_DEFAULT,
};
use farmlog_engine::state::outcome::{Effect, Verdict};
use farmlog_engine::state::{Direction, TenantView};
use tonic::{Request, Response, Status};

use crate::auth::Op;
use crate::context::{Context, Subscription, SUBSCRIPTION_PAGE};
use crate::pb::{self, streams_server::Streams};
use crate::status::invalid;

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
        let request = request.into_inner();
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
        let (written, outcome) = self.context.applied(&caller, request.session, body).await?;
        let (position, version, duplicate) = match outcome.verdict {
            Verdict::Applied(Effect::StreamAppended { position, version }) => (position, version, false),
            Verdict::Applied(Effect::StreamDuplicate { position, version }) => (position, version, true),
            other => return Err(Status::internal(format!("an append applied as {other:?}"))),
        };
        Ok(Response::new(pb::AppendResponse {
            position,
            version,
            duplicate,
            written: Some(written),
        }))
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
