//! One node's gRPC server: the public services, the internal Raft
//! service, health and reflection, on one port, with mutual TLS unless
//! the node runs `--insecure`.

use std::future::Future;
use std::sync::Arc;

use farmlog_replica::Node;
use tokio::net::TcpListener;
use tonic::service::Interceptor;
use tonic::transport::Server;
use tonic::{Request, Status};

use crate::auth::{allowed, Op};
use crate::context::{Context, Identity};
use crate::metrics::serve_metrics;
use crate::pb;
use crate::quota::{QuotaSettings, Quotas};
use crate::raft::RaftService;
use crate::services::admin::{AdminService, SessionsService};
use crate::services::streams::StreamsService;
use crate::tls::{TlsError, TlsFiles};

/// Largest request message a client may send (a body is at most 1 MiB;
/// the rest is envelope): larger is refused before it is decoded.
pub const REQUEST_BYTES_MAX: usize = 4 << 20;
/// Largest response message (a page of events or deliveries).
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Requests one connection may have in flight (HTTP/2 streams).
pub const CONCURRENT_STREAMS_PER_CONNECTION: u32 = 256;
/// Requests one connection's services work on at once; more wait.
pub const CONCURRENCY_PER_CONNECTION: usize = 256;
/// A connection silent this long is probed, and dropped if it does not
/// answer.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// After the stop signal, how long open calls (subscriptions, say) may
/// go on before their connections are closed.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How a node serves.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// None: plaintext, and callers name themselves in a header (the
    /// `--insecure` dev flag; never in production).
    pub tls: Option<TlsFiles>,
    pub quotas: QuotaSettings,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP);
    /// None: nowhere.
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("metrics on {address}: {source}")]
    Metrics {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server reflection could not be built: {0}")]
    Reflection(String),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Refuses Raft traffic from anyone but a node (with TLS on).
#[derive(Clone)]
struct OnlyNodes {
    context: Context,
}

impl Interceptor for OnlyNodes {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let principal = self.context.principal(&request)?;
        match allowed(&principal, Op::Raft) {
            true => Ok(request),
            false => Err(Status::permission_denied(format!(
                "{principal} is not a node: only nodes send Raft traffic"
            ))),
        }
    }
}

/// A task that ends with the server.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A generated server with the message size limits.
macro_rules! limited {
    ($server:expr) => {
        $server
            .max_decoding_message_size(REQUEST_BYTES_MAX)
            .max_encoding_message_size(RESPONSE_BYTES_MAX)
    };
}

/// Serves `node` on `listener` until `shutdown` completes.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let identity = match options.tls {
        Some(_) => Identity::Certificates,
        None => Identity::InsecureHeader,
    };
    let context = Context::new(node.clone(), identity, Quotas::new(options.quotas));
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(KEEP_ALIVE))
        .http2_keepalive_timeout(Some(KEEP_ALIVE))
        .max_concurrent_streams(CONCURRENT_STREAMS_PER_CONNECTION)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION);
    if let Some(tls) = &options.tls {
        builder = builder.tls_config(tls.server()?)?;
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    // Every public service answers SERVING once the node serves (the
    // empty name, the whole server, does by default).
    for service in [
        "farmlog.v1.Topology",
        "farmlog.v1.Messages",
        "farmlog.v1.Streams",
        "farmlog.v1.Spools",
        "farmlog.v1.Transfers",
        "farmlog.v1.Throttle",
        "farmlog.v1.Sessions",
        "farmlog.v1.Admin",
    ] {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| ServeError::Reflection(error.to_string()))?;
    let raft = RaftService::new(node.inbox()).into_server();
    let router = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            raft,
            OnlyNodes {
                context: context.clone(),
            },
        ))
        .add_service(limited!(pb::streams_server::StreamsServer::new(StreamsService::new(
            context.clone()
        ))))
        .add_service(limited!(pb::admin_server::AdminServer::new(AdminService::new(
            context.clone()
        ))))
        .add_service(limited!(pb::sessions_server::SessionsServer::new(
            SessionsService::new(context.clone())
        )))
        .add_service(limited!(pb::topology_server::TopologyServer::new(
            crate::services::topology::TopologyService::new(context.clone())
        )))
        .add_service(limited!(pb::messages_server::MessagesServer::new(
            crate::services::messages::MessagesService::new(context.clone())
        )))
        .add_service(limited!(pb::spools_server::SpoolsServer::new(
            crate::services::spools::SpoolsService::new(context.clone())
        )))
        .add_service(limited!(pb::transfers_server::TransfersServer::new(
            crate::services::transfers::TransfersService::new(context.clone())
        )))
        .add_service(limited!(pb::throttle_server::ThrottleServer::new(
            crate::services::throttle::ThrottleService::new(context.clone())
        )));
    let stop = Arc::new(tokio::sync::Notify::new());
    let metrics_stop = Arc::new(tokio::sync::Notify::new());
    let _metrics = match options.metrics {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| ServeError::Metrics { address, source })?;
            let metrics = context.metrics().clone();
            let stopped = metrics_stop.clone();
            Some(AbortOnDrop(tokio::spawn(async move {
                if let Err(error) = serve_metrics(listener, metrics, async move { stopped.notified().await }).await {
                    tracing::error!(%error, "the metrics endpoint failed");
                }
            })))
        }
        None => None,
    };
    let _ticker = AbortOnDrop(tokio::spawn(crate::ticker::run(context.clone())));
    // tonic ignores its own `tcp_nodelay` for a listener handed in, so it
    // is set here on each accepted connection: with Nagle's algorithm on,
    // a small answer waits for the peer's delayed ACK (40 ms on Linux),
    // longer than openraft 0.9 gives an AppendEntries (3/4 of the
    // heartbeat interval), and each such timeout stalls replication to
    // that follower for openraft's backoff.
    let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "TCP_NODELAY could not be set; answers on this connection may be delayed");
            }
        })
    });
    let server = router.serve_with_incoming_shutdown(incoming, {
        let stop = stop.clone();
        async move { stop.notified().await }
    });
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return Ok(served?),
        () = shutdown => {
            stop.notify_one();
            metrics_stop.notify_one();
        }
    }
    // Open subscriptions keep their connections: they get a grace period,
    // not a veto.
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(served) => Ok(served?),
        Err(_) => {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
            Ok(())
        }
    }
}
