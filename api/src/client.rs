//! The Rust client: reaches a cluster through any of its nodes, finds the
//! leader (following the `farmlog-leader` hint a follower answers with),
//! retries what is safe to retry, and bounds every call by a timeout.
//!
//! Safe retries: a read is always safe; a write is retried only when it
//! carries a client session ([`Client::session`]), so that the cluster
//! applies it at most once, or when the node said nothing was written (a
//! follower's UNAVAILABLE with a leader hint).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::context::{LEADER_HEADER, PRINCIPAL_HEADER, READ_HEADER, TENANT_HEADER};
use crate::pb;
use crate::tls::{TlsError, TlsFiles};

/// Attempts one call makes, at most, across nodes.
pub const CALL_ATTEMPTS_MAX: usize = 64;
/// How long a call goes on retrying, at most: long enough for a cluster
/// to elect a new leader after its leader died.
pub const CALL_RETRY_BUDGET: Duration = Duration::from_secs(15);
/// The pause between attempts grows from this, doubling.
pub const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// ... up to this.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Most endpoints a client is given.
pub const ENDPOINTS_MAX: usize = 64;
/// How long connecting to a node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A call's timeout when the client names none.
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How a client reaches the cluster.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// host:port of one or more nodes.
    pub endpoints: Vec<String>,
    /// The client's certificate (which names its principal), key and CA.
    /// None: plaintext to an `--insecure` cluster, naming `principal`.
    pub tls: Option<TlsFiles>,
    /// Insecure clusters only: the principal to claim.
    pub principal: Option<String>,
    /// A landlord principal acting in a customer's namespace.
    pub tenant: Option<String>,
    /// Let any node answer reads from what it has applied.
    pub follower_reads: bool,
    /// Each attempt's timeout.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given (--endpoints or FARMLOG_ENDPOINTS: host:port of one or more nodes)")]
    NoEndpoints,
    #[error("at most {ENDPOINTS_MAX} endpoints")]
    TooManyEndpoints,
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{header} {value:?} is not a valid header value")]
    Header { header: &'static str, value: String },
}

/// The headers every call of this client carries.
#[derive(Clone)]
pub struct Headers {
    principal: Option<MetadataValue<Ascii>>,
    tenant: Option<MetadataValue<Ascii>>,
    follower_reads: bool,
}

impl Interceptor for Headers {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        if let Some(principal) = &self.principal {
            metadata.insert(PRINCIPAL_HEADER, principal.clone());
        }
        if let Some(tenant) = &self.tenant {
            metadata.insert(TENANT_HEADER, tenant.clone());
        }
        if self.follower_reads {
            metadata.insert(READ_HEADER, MetadataValue::from_static("follower"));
        }
        Ok(request)
    }
}

/// A channel to one node with this client's headers.
pub type NodeChannel = InterceptedService<Channel, Headers>;

/// Whether a call may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// A read, or a write that carries a session.
    Safe,
    /// A write without a session: sent again only when the node said
    /// nothing was written.
    OnlyIfNotWritten,
}

/// A client of a farmlog cluster; cheap to share.
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    headers: Headers,
    timeout: Duration,
    /// The endpoint believed to lead.
    leader: AtomicUsize,
    session: tokio::sync::OnceCell<u64>,
    sequence: AtomicU64,
}

fn header(header: &'static str, value: &Option<String>) -> Result<Option<MetadataValue<Ascii>>, ClientError> {
    value
        .as_ref()
        .map(|value| {
            value.parse().map_err(|_| ClientError::Header {
                header,
                value: value.clone(),
            })
        })
        .transpose()
}

impl Client {
    /// A client of the nodes at `options.endpoints` (connections are made
    /// when first used).
    pub fn new(mut options: ClientOptions) -> Result<Self, ClientError> {
        options.endpoints.retain(|endpoint| !endpoint.trim().is_empty());
        if options.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        if options.endpoints.len() > ENDPOINTS_MAX {
            return Err(ClientError::TooManyEndpoints);
        }
        let tls = options.tls.as_ref().map(TlsFiles::client).transpose()?;
        let mut channels = Vec::new();
        for endpoint in &options.endpoints {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let failed = |reason: String| ClientError::Endpoint {
                endpoint: endpoint.clone(),
                reason,
            };
            let mut built = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
                .map_err(|error| failed(error.to_string()))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(options.timeout);
            if let Some(tls) = &tls {
                built = built
                    .tls_config(tls.clone())
                    .map_err(|error| failed(error.to_string()))?;
            }
            channels.push(built.connect_lazy());
        }
        Ok(Self {
            endpoints: options.endpoints.clone(),
            channels,
            headers: Headers {
                principal: match options.tls {
                    Some(_) => None,
                    None => header(PRINCIPAL_HEADER, &options.principal)?,
                },
                tenant: header(TENANT_HEADER, &options.tenant)?,
                follower_reads: options.follower_reads,
            },
            timeout: options.timeout,
            leader: AtomicUsize::new(0),
            session: tokio::sync::OnceCell::new(),
            sequence: AtomicU64::new(0),
        })
    }

    /// The channel to endpoint `at`.
    pub fn channel(&self, at: usize) -> NodeChannel {
        InterceptedService::new(self.channels[at % self.channels.len()].clone(), self.headers.clone())
    }

    /// Moves on to the next endpoint (after a stream from this one broke).
    pub fn next_endpoint(&self) {
        self.leader.fetch_add(1, Ordering::Relaxed);
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The next place in this client's session (opened on first use):
    /// put it in a write, and resend the same write to retry it.
    pub async fn session(&self) -> Result<pb::Session, Status> {
        let client_id = *self
            .session
            .get_or_try_init(|| async {
                let opened = self
                    .call(Retry::OnlyIfNotWritten, |channel| async move {
                        pb::sessions_client::SessionsClient::new(channel)
                            .open(pb::OpenSessionRequest {})
                            .await
                    })
                    .await?;
                Ok::<u64, Status>(opened.into_inner().client_id)
            })
            .await?;
        Ok(pb::Session {
            client_id,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    /// Makes `call` against the leader, as far as it is known: a follower's
    /// hint moves the client to the leader, an unreachable node to the
    /// next one; at most [`CALL_ATTEMPTS_MAX`] attempts, each bounded by
    /// the client's timeout.
    pub async fn call<R, F, Fut>(&self, retry: Retry, mut call: F) -> Result<Response<R>, Status>
    where
        F: FnMut(NodeChannel) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let mut backoff = RETRY_BACKOFF_FIRST;
        let mut last = Status::unavailable("no attempt made");
        let started = std::time::Instant::now();
        let mut followed_hint = false;
        for _ in 0..CALL_ATTEMPTS_MAX {
            if started.elapsed() > CALL_RETRY_BUDGET {
                break;
            }
            let at = self.leader.load(Ordering::Relaxed) % self.channels.len();
            let attempt = tokio::time::timeout(self.timeout, call(self.channel(at))).await;
            let status = match attempt {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(status)) => status,
                Err(_) => {
                    Status::deadline_exceeded(format!("no answer from {} in {:?}", self.endpoints[at], self.timeout))
                }
            };
            let hint = status
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(|leader| self.endpoints.iter().position(|endpoint| endpoint == leader));
            let not_written = hint.is_some()
                || status.code() == Code::Unavailable && !status.message().contains("outcome is unknown");
            let retryable = match status.code() {
                Code::Unavailable => retry == Retry::Safe || not_written,
                Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => retry == Retry::Safe,
                _ => false,
            };
            if !retryable {
                return Err(status);
            }
            let next = hint.filter(|&hint| hint != at).unwrap_or(at + 1);
            self.leader.store(next, Ordering::Relaxed);
            // A fresh hint is followed at once; anything else (no leader
            // yet, a hint to a node that just failed) waits a little.
            let fresh_hint = hint.is_some_and(|hint| hint != at) && !followed_hint;
            followed_hint = fresh_hint;
            if !fresh_hint {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            last = status;
        }
        Err(last)
    }
}
