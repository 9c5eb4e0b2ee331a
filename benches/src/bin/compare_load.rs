//! `compare_load`: the load generator `benches/compare.sh` drives etcd and
//! NATS JetStream with, in the shape of `farmlog bench cluster`, so that
//! the three are measured alike.
//!
//! The same workload for each system:
//! - C clients, each with its own connection (mutual TLS, the same
//!   certificates and the same rustls as farmlog's client), to the node
//!   that orders writes: etcd's Raft leader (found with
//!   `Maintenance.Status`), the NATS server that leads the stream's Raft
//!   group (found with `$JS.API.STREAM.INFO`); farmlog's client follows
//!   its leader hint the same way.
//! - Each client keeps K requests in flight; a request writes one value of
//!   B bytes, or with `--batch R` R of them at once (etcd: one `Txn` of R
//!   puts; NATS: R publishes written together, done when all R acks are
//!   in; farmlog: one `Streams.AppendBatch`).
//! - etcd: `KV.Put` of a new key `bench/<client>/<slot>/<n>` per value.
//!   NATS: a publish to `bench.<client>` with a reply inbox, into a file
//!   stream with R3 replicas that captures `bench.>`; done when the
//!   stream's PubAck arrives. Nothing is deduplicated in either (and
//!   farmlog appends without a session).
//! - The clock: every client connects and makes one request, then all run
//!   for the warm-up and the measured window; requests that complete
//!   inside the window count, and their latency (send to answer) goes to
//!   an hdrhistogram. Requests in flight when it closes are awaited but
//!   not counted. The output is `farmlog bench cluster`'s: text, then one
//!   JSON line with the same keys.
//!
//! The etcd client speaks gRPC through tonic with the few messages of
//! etcd's `rpc.proto` it needs, written out below (no protoc, no client
//! crate). The NATS client speaks the NATS text protocol (INFO, CONNECT,
//! SUB, PUB, MSG/HMSG, PING/PONG) over tokio-rustls; it is small and
//! handles only what this load needs.
//!
//! Invariants: every input is checked against a named bound; every wait
//! (connecting, a leader, a stream, an answer) has a deadline; the last
//! line printed is one JSON object.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// Most clients one run may start.
const CLIENTS_MAX: usize = 1024;
/// Most requests one client keeps in flight.
const INFLIGHT_MAX: usize = 256;
/// Most values per request (etcd refuses a `Txn` of more than its
/// `--max-txn-ops`, 128 by default).
const BATCH_MAX: usize = 1000;
/// Largest value.
const SIZE_MAX: usize = 1 << 20;
/// Longest measured window and warm-up, in seconds.
const DURATION_SECONDS_MAX: f64 = 3600.0;
const WARMUP_SECONDS_MAX: f64 = 600.0;
/// How long the requests in flight at the end of the window may take.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// One request's answer, at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting (TCP and TLS), at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for a leader, or for the stream to be ready, at most.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// Between two looks at a cluster that is not ready yet.
const SETUP_PAUSE: Duration = Duration::from_millis(200);
/// A slot whose request failed waits this long before its next one.
const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Longest NATS protocol line accepted (an INFO line is a few KiB).
const LINE_BYTES_MAX: usize = 64 << 10;
/// Largest NATS message payload accepted.
const PAYLOAD_BYTES_MAX: usize = 8 << 20;
/// Significant decimal digits the latency histograms keep.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// The byte the values are filled with.
const BODY_FILLER: u8 = 0x5a;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    Etcd,
    Nats,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::Nats => "nats",
        }
    }
}

/// Drive etcd or NATS JetStream like `farmlog bench cluster` drives farmlog.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    system: System,
    /// host:port of every member (etcd: client URLs; NATS: client ports).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// The CA (PEM) the servers' certificates chain to.
    #[arg(long)]
    ca: PathBuf,
    /// The client certificate and key (PEM).
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long, value_name = "C", default_value_t = 16)]
    clients: usize,
    #[arg(long, value_name = "K", default_value_t = 1)]
    inflight: usize,
    /// Bytes of each value.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    size: usize,
    /// The measured window, in seconds.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the window opens, not counted.
    #[arg(long, value_name = "W", default_value_t = 1.0)]
    warmup: f64,
    /// Values per request.
    #[arg(long, value_name = "R")]
    batch: Option<usize>,
    /// NATS: the stream (created if missing, file storage).
    #[arg(long, default_value = "BENCH")]
    stream: String,
    /// NATS: the stream's replicas.
    #[arg(long, default_value_t = 3)]
    replicas: u32,
}

/// A checked request.
#[derive(Debug, Clone)]
struct Plan {
    system: System,
    clients: usize,
    inflight: usize,
    size: usize,
    batch: usize,
    warmup: Duration,
    duration: Duration,
}

impl Plan {
    fn check(args: &Args) -> Result<Self> {
        if !(1..=CLIENTS_MAX).contains(&args.clients) {
            return Err(format!("--clients must be 1..={CLIENTS_MAX}").into());
        }
        if !(1..=INFLIGHT_MAX).contains(&args.inflight) {
            return Err(format!("--inflight must be 1..={INFLIGHT_MAX}").into());
        }
        if args.size > SIZE_MAX {
            return Err(format!("--size must be at most {SIZE_MAX}").into());
        }
        let batch = args.batch.unwrap_or(1);
        if !(1..=BATCH_MAX).contains(&batch) {
            return Err(format!("--batch must be 1..={BATCH_MAX}").into());
        }
        if !(args.duration > 0.0 && args.duration <= DURATION_SECONDS_MAX) {
            return Err(format!("--duration must be more than 0 and at most {DURATION_SECONDS_MAX}").into());
        }
        if !(0.0..=WARMUP_SECONDS_MAX).contains(&args.warmup) {
            return Err(format!("--warmup must be 0..={WARMUP_SECONDS_MAX}").into());
        }
        if args.endpoints.is_empty() {
            return Err("--endpoints: at least one".into());
        }
        Ok(Self {
            system: args.system,
            clients: args.clients,
            inflight: args.inflight,
            size: args.size,
            batch,
            warmup: Duration::from_secs_f64(args.warmup),
            duration: Duration::from_secs_f64(args.duration),
        })
    }
}

/// When the measured window opens and closes.
#[derive(Clone, Copy)]
struct Window {
    opens: Instant,
    closes: Instant,
}

impl Window {
    fn starting_now(plan: &Plan) -> Self {
        let opens = Instant::now() + plan.warmup;
        Self {
            opens,
            closes: opens + plan.duration,
        }
    }

    fn counts(&self, at: Instant) -> bool {
        at >= self.opens && at < self.closes
    }
}

/// What a slot or a client counted inside the window.
struct Tally {
    requests: u64,
    records: u64,
    errors: u64,
    first_error: Option<String>,
    latency_ns: Histogram<u64>,
}

impl Tally {
    fn new() -> Result<Self> {
        Ok(Self {
            requests: 0,
            records: 0,
            errors: 0,
            first_error: None,
            latency_ns: Histogram::new(LATENCY_SIGNIFICANT_DIGITS)?,
        })
    }

    /// A request that completed at `done_at` after `latency`, having
    /// written `records` values and had `refused` refused.
    fn completed(&mut self, latency: Duration, records: u64, refused: u64, refusal: Option<String>) -> Result<()> {
        self.requests += 1;
        self.records += records;
        self.errors += refused;
        if self.first_error.is_none() {
            self.first_error = refusal;
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // `record` grows an auto-resizing histogram; `saturating_record`
        // would clamp.
        self.latency_ns.record(nanos.max(1))?;
        Ok(())
    }

    fn failed(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }

    fn merge(&mut self, other: Tally) -> Result<()> {
        self.requests += other.requests;
        self.records += other.records;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency_ns.add(other.latency_ns)?;
        Ok(())
    }
}

/// The client's TLS material, read once.
struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Tls {
    fn read(args: &Args) -> Result<Self> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()));
        Ok(Self {
            ca: read(&args.ca)?,
            cert: read(&args.cert)?,
            key: read(&args.key)?,
        })
    }
}

/// Sends requests in one slot until the window closes: `send` returns the
/// values written and refused (with the first refusal), or an error.
async fn run_slot<F, Fut>(window: Window, mut send: F) -> Result<Tally>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<(u64, u64, Option<String>), String>>,
{
    let mut tally = Tally::new()?;
    while Instant::now() < window.closes {
        let sent_at = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, send()).await;
        let done_at = Instant::now();
        let result = result.unwrap_or_else(|_| Err(format!("no answer in {REQUEST_TIMEOUT:?}")));
        match result {
            Ok((records, refused, refusal)) => {
                if window.counts(done_at) {
                    tally.completed(done_at - sent_at, records, refused, refusal)?;
                }
            }
            Err(error) => {
                if window.counts(done_at) {
                    tally.failed(error);
                }
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    Ok(tally)
}

/// Joins every task and merges their tallies, giving up [`DRAIN_MAX`]
/// after the window closed.
async fn gather(mut tasks: tokio::task::JoinSet<Result<Tally>>, window: Window) -> Result<Tally> {
    let mut total = Tally::new()?;
    let deadline = window.closes + DRAIN_MAX;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(None) => return Ok(total),
            Ok(Some(joined)) => total.merge(joined??)?,
            Err(_) => {
                tasks.abort_all();
                return Err(format!("requests still in flight {DRAIN_MAX:?} after the window closed").into());
            }
        }
    }
}

// ------------------------------------------------------------------ etcd

/// The messages of etcd's `etcdserverpb/rpc.proto` (v3 API) this load
/// uses, with etcd's field numbers; fields it does not need are left out
/// (protobuf skips them when decoding).
mod etcd {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
        #[prost(uint64, tag = "4")]
        pub raft_term: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// `RequestOp`: its `oneof request` holds a put in field 2 (a oneof
    /// member is encoded like an optional field).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestOp {
        #[prost(message, optional, tag = "2")]
        pub request_put: Option<PutRequest>,
    }

    /// `TxnRequest` without compares: its `success` ops always run.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnRequest {
        #[prost(message, repeated, tag = "2")]
        pub success: Vec<RequestOp>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(bool, tag = "2")]
        pub succeeded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }

    pub const PUT: &str = "/etcdserverpb.KV/Put";
    pub const TXN: &str = "/etcdserverpb.KV/Txn";
    pub const STATUS: &str = "/etcdserverpb.Maintenance/Status";
}

/// One unary call on `grpc`.
async fn unary<Req, Resp>(
    grpc: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    request: Req,
) -> std::result::Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// A connected channel to one etcd member, with mutual TLS.
async fn etcd_channel(endpoint: &str, tls: &Tls) -> Result<Channel> {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca))
        .identity(Identity::from_pem(&tls.cert, &tls.key))
        .assume_http2(true);
    let channel = Endpoint::from_shared(format!("https://{endpoint}"))?
        .tls_config(config)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await?;
    Ok(channel)
}

/// The endpoint of etcd's Raft leader: the member whose own id is the
/// leader its status names.
async fn etcd_leader(endpoints: &[String], tls: &Tls) -> Result<String> {
    let deadline = Instant::now() + SETUP_WAIT;
    let mut last = String::from("no member answered");
    while Instant::now() < deadline {
        for endpoint in endpoints {
            let status = async {
                let mut grpc = tonic::client::Grpc::new(etcd_channel(endpoint, tls).await?);
                let status: etcd::StatusResponse = unary(&mut grpc, etcd::STATUS, etcd::StatusRequest {}).await?;
                Ok::<_, Error>(status)
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, status).await {
                Ok(Ok(status)) => {
                    let member = status.header.as_ref().map_or(0, |header| header.member_id);
                    if status.leader != 0 && status.leader == member {
                        eprintln!("compare_load: etcd {} leads at {endpoint}", status.version);
                        return Ok(endpoint.clone());
                    }
                }
                Ok(Err(error)) => last = format!("{endpoint}: {error}"),
                Err(_) => last = format!("{endpoint}: no answer"),
            }
        }
        tokio::time::sleep(SETUP_PAUSE).await;
    }
    Err(format!("no etcd leader within {SETUP_WAIT:?} ({last})").into())
}

/// One etcd request: a put, or a transaction of puts.
enum EtcdRequest {
    Put(etcd::PutRequest),
    Txn(etcd::TxnRequest),
}

impl EtcdRequest {
    /// The next request of a slot: `batch` new keys `<prefix>/<n>`.
    fn next(prefix: &str, next: &mut u64, value: &[u8], batch: usize) -> Self {
        let mut put = || {
            *next += 1;
            etcd::PutRequest {
                key: format!("{prefix}/{next}").into_bytes(),
                value: value.to_vec(),
            }
        };
        match batch {
            1 => Self::Put(put()),
            _ => Self::Txn(etcd::TxnRequest {
                success: (0..batch)
                    .map(|_| etcd::RequestOp {
                        request_put: Some(put()),
                    })
                    .collect(),
            }),
        }
    }

    /// Sends it; returns the values written and refused.
    async fn send(
        self,
        mut grpc: tonic::client::Grpc<Channel>,
    ) -> std::result::Result<(u64, u64, Option<String>), String> {
        let failed = |status: tonic::Status| format!("{:?}: {}", status.code(), status.message());
        match self {
            Self::Put(put) => {
                let _: etcd::PutResponse = unary(&mut grpc, etcd::PUT, put).await.map_err(failed)?;
                Ok((1, 0, None))
            }
            Self::Txn(txn) => {
                let puts = txn.success.len() as u64;
                let answer: etcd::TxnResponse = unary(&mut grpc, etcd::TXN, txn).await.map_err(failed)?;
                match answer.succeeded {
                    true => Ok((puts, 0, None)),
                    false => Ok((0, puts, Some("the transaction did not succeed".into()))),
                }
            }
        }
    }
}

async fn run_etcd(args: &Args, plan: &Plan) -> Result<Tally> {
    let tls = Tls::read(args)?;
    let leader = etcd_leader(&args.endpoints, &tls).await?;
    let value = Arc::new(vec![BODY_FILLER; plan.size]);
    // Every client: its own connection, and one request through it.
    let mut channels = Vec::with_capacity(plan.clients);
    for client in 0..plan.clients {
        let channel = etcd_channel(&leader, &tls).await?;
        let grpc = tonic::client::Grpc::new(channel.clone());
        let first = EtcdRequest::next(&format!("bench/{client}/first"), &mut 0, &value, 1);
        let sent = tokio::time::timeout(REQUEST_TIMEOUT, first.send(grpc))
            .await
            .unwrap_or_else(|_| Err(format!("no answer in {REQUEST_TIMEOUT:?}")));
        sent.map_err(|error| format!("client {client}: the first put failed: {error}"))?;
        channels.push(channel);
    }
    let window = Window::starting_now(plan);
    let mut tasks = tokio::task::JoinSet::new();
    for (client, channel) in channels.into_iter().enumerate() {
        for slot in 0..plan.inflight {
            let grpc = tonic::client::Grpc::new(channel.clone());
            let (value, batch) = (value.clone(), plan.batch);
            let prefix = format!("bench/{client}/{slot}");
            let mut next = 0;
            tasks.spawn(run_slot(window, move || {
                EtcdRequest::next(&prefix, &mut next, &value, batch).send(grpc.clone())
            }));
        }
    }
    gather(tasks, window).await
}

// ------------------------------------------------------------------ NATS

/// Incoming protocol messages this client cares about.
enum Incoming {
    /// A message on one of our subscriptions: its subject, and its payload
    /// or the status a header-only message carries (503: no responders).
    Msg {
        subject: String,
        payload: Vec<u8>,
        status: Option<u16>,
    },
    Ping,
    Pong,
    Error(String),
    /// INFO (cluster changes) and +OK: nothing to do.
    Other,
}

/// One NATS connection with TLS, after CONNECT.
struct NatsConnection {
    stream: BufStream<tokio_rustls::client::TlsStream<TcpStream>>,
    line: Vec<u8>,
    server_name: String,
}

/// The client TLS configuration for NATS (rustls with ring, like tonic).
fn rustls_config(tls: &Tls) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = |error: rustls::pki_types::pem::Error| format!("reading PEM: {error:?}");
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&tls.ca) {
        roots.add(certificate.map_err(pem)?)?;
    }
    let chain = CertificateDer::pem_slice_iter(&tls.cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(pem)?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key).map_err(pem)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// Reads one line (without its CR LF) of at most [`LINE_BYTES_MAX`].
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, line: &mut Vec<u8>) -> Result<()> {
    line.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Err("the server closed the connection".into());
        }
        let (taken, complete) = match available.iter().position(|&byte| byte == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if line.len() > LINE_BYTES_MAX {
            return Err(format!("a protocol line longer than {LINE_BYTES_MAX} bytes").into());
        }
        if complete {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            return Ok(());
        }
    }
}

/// The INFO line a server sends first, in plaintext, read byte by byte
/// so that nothing of the TLS handshake that follows is consumed.
async fn read_info(tcp: &mut TcpStream) -> Result<Value> {
    let mut line = Vec::new();
    loop {
        let byte = tcp.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        line.push(byte);
        if line.len() > LINE_BYTES_MAX {
            return Err("an INFO line that does not end".into());
        }
    }
    let text = std::str::from_utf8(&line)?.trim_end();
    let json = text
        .strip_prefix("INFO ")
        .ok_or_else(|| format!("expected INFO, got {text:?}"))?;
    Ok(serde_json::from_str(json)?)
}

impl NatsConnection {
    async fn connect(endpoint: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Self> {
        let connecting = async {
            let mut tcp = TcpStream::connect(endpoint).await?;
            tcp.set_nodelay(true)?;
            let info = read_info(&mut tcp).await?;
            let host = endpoint
                .rsplit_once(':')
                .map(|(host, _)| host)
                .ok_or_else(|| format!("{endpoint}: not host:port"))?;
            let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await?;
            let server_name = info["server_name"].as_str().unwrap_or_default().to_string();
            let mut connection = Self {
                stream: BufStream::new(stream),
                line: Vec::new(),
                server_name,
            };
            let connect = json!({
                "verbose": false, "pedantic": false, "tls_required": true, "name": "compare_load",
                "lang": "rust", "version": env!("CARGO_PKG_VERSION"), "protocol": 1,
                "headers": true, "no_responders": true, "echo": false,
            });
            connection
                .stream
                .write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
                .await?;
            connection.stream.flush().await?;
            loop {
                match connection.next().await? {
                    Incoming::Pong => return Ok::<_, Error>(connection),
                    Incoming::Error(error) => return Err(format!("{endpoint}: {error}").into()),
                    Incoming::Ping => connection.pong().await?,
                    Incoming::Msg { .. } | Incoming::Other => {}
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| format!("{endpoint}: not connected in {CONNECT_TIMEOUT:?}"))?
    }

    async fn pong(&mut self) -> Result<()> {
        self.stream.write_all(b"PONG\r\n").await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn subscribe(&mut self, subject: &str, sid: u32) -> Result<()> {
        self.stream
            .write_all(format!("SUB {subject} {sid}\r\n").as_bytes())
            .await?;
        Ok(())
    }

    /// Writes a publish (not flushed).
    async fn publish(&mut self, subject: &str, reply: &str, payload: &[u8]) -> Result<()> {
        let head = format!("PUB {subject} {reply} {}\r\n", payload.len());
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(payload).await?;
        self.stream.write_all(b"\r\n").await?;
        Ok(())
    }

    /// The payload of `length` bytes and its CR LF.
    async fn payload(&mut self, length: usize) -> Result<Vec<u8>> {
        if length > PAYLOAD_BYTES_MAX {
            return Err(format!("a message of {length} bytes").into());
        }
        let mut payload = vec![0; length + 2];
        self.stream.read_exact(&mut payload).await?;
        payload.truncate(length);
        Ok(payload)
    }

    /// The next protocol message.
    async fn next(&mut self) -> Result<Incoming> {
        let mut line = std::mem::take(&mut self.line);
        let read = read_line(&mut self.stream, &mut line).await;
        let parsed = match read {
            Ok(()) => self.parse(&line).await,
            Err(error) => Err(error),
        };
        self.line = line;
        parsed
    }

    async fn parse(&mut self, line: &[u8]) -> Result<Incoming> {
        let text = std::str::from_utf8(line)?;
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        let number = |field: Option<&&str>| -> Result<usize> {
            field
                .and_then(|field| field.parse().ok())
                .ok_or_else(|| format!("a malformed line: {text:?}").into())
        };
        match fields.first().copied() {
            // MSG <subject> <sid> [reply-to] <bytes>
            Some("MSG") if (4..=5).contains(&fields.len()) => {
                let length = number(fields.last())?;
                let payload = self.payload(length).await?;
                Ok(Incoming::Msg {
                    subject: fields[1].to_string(),
                    payload,
                    status: None,
                })
            }
            // HMSG <subject> <sid> [reply-to] <header bytes> <total bytes>
            Some("HMSG") if (5..=6).contains(&fields.len()) => {
                let header_length = number(fields.get(fields.len() - 2))?;
                let total = number(fields.last())?;
                let mut payload = self.payload(total).await?;
                if header_length > payload.len() {
                    return Err(format!("a malformed line: {text:?}").into());
                }
                let status = std::str::from_utf8(&payload[..header_length])
                    .ok()
                    .and_then(|header| header.lines().next())
                    .and_then(|first| first.split_ascii_whitespace().nth(1))
                    .and_then(|code| code.parse().ok());
                payload.drain(..header_length);
                Ok(Incoming::Msg {
                    subject: fields[1].to_string(),
                    payload,
                    status,
                })
            }
            Some("PING") => Ok(Incoming::Ping),
            Some("PONG") => Ok(Incoming::Pong),
            Some("-ERR") => Ok(Incoming::Error(text.to_string())),
            Some("+OK" | "INFO") => Ok(Incoming::Other),
            _ => Err(format!("an unexpected line: {text:?}").into()),
        }
    }

    /// A request: publishes `payload` to `subject` and returns the JSON of
    /// the first answer on `reply` (which this connection subscribes).
    async fn request(&mut self, subject: &str, reply: &str, payload: &[u8]) -> Result<Value> {
        self.publish(subject, reply, payload).await?;
        self.stream.flush().await?;
        let answer = async {
            loop {
                match self.next().await? {
                    Incoming::Msg {
                        subject,
                        payload,
                        status,
                    } if subject == reply => {
                        if let Some(status) = status {
                            return Err(format!("status {status} (no responders: JetStream not ready)").into());
                        }
                        return Ok::<Value, Error>(serde_json::from_slice(&payload)?);
                    }
                    Incoming::Ping => self.pong().await?,
                    Incoming::Error(error) => return Err(error.into()),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, answer)
            .await
            .map_err(|_| format!("no answer to {subject} in {REQUEST_TIMEOUT:?}"))?
    }
}

/// The JetStream API's error in an answer, if any.
fn api_error(answer: &Value) -> Option<String> {
    answer.get("error").map(Value::to_string)
}

/// Creates the stream (file storage, `replicas`) unless it exists, and
/// waits until its Raft group has a leader and every replica is current;
/// returns the leader's server name.
async fn nats_stream(connection: &mut NatsConnection, stream: &str, replicas: u32) -> Result<String> {
    const INBOX: &str = "_INBOX.compare_load_setup";
    connection.subscribe(&format!("{INBOX}.*"), 1).await?;
    let config = json!({
        "name": stream, "subjects": ["bench.>"], "retention": "limits", "discard": "old",
        "storage": "file", "num_replicas": replicas,
    });
    let deadline = Instant::now() + SETUP_WAIT;
    let mut last = String::from("not asked yet");
    let mut asked = 0u64;
    while Instant::now() < deadline {
        asked += 1;
        let reply = format!("{INBOX}.{asked}");
        let created = connection
            .request(
                &format!("$JS.API.STREAM.CREATE.{stream}"),
                &reply,
                config.to_string().as_bytes(),
            )
            .await;
        match created {
            // 10058: the stream name is already in use (an earlier run's).
            Ok(answer) if api_error(&answer).is_none_or(|error| error.contains("10058")) => {
                asked += 1;
                let reply = format!("{INBOX}.{asked}");
                let info = connection
                    .request(&format!("$JS.API.STREAM.INFO.{stream}"), &reply, b"")
                    .await?;
                let cluster = &info["cluster"];
                let peers = cluster["replicas"].as_array().map_or(&[][..], Vec::as_slice);
                let current = peers.iter().filter(|peer| peer["current"] == true).count();
                match cluster["leader"].as_str() {
                    Some(leader) if current + 1 >= replicas as usize => return Ok(leader.to_string()),
                    _ => last = format!("stream info: {cluster}"),
                }
            }
            Ok(answer) => last = api_error(&answer).unwrap_or_default(),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(SETUP_PAUSE).await;
    }
    Err(format!("the stream was not ready within {SETUP_WAIT:?} ({last})").into())
}

/// The endpoint whose server is named `leader`.
async fn nats_endpoint_of(endpoints: &[String], tls: &Arc<rustls::ClientConfig>, leader: &str) -> Result<String> {
    for endpoint in endpoints {
        let connection = NatsConnection::connect(endpoint, tls).await?;
        if connection.server_name == leader {
            return Ok(endpoint.clone());
        }
    }
    Err(format!("no endpoint is the server {leader:?}").into())
}

/// One NATS client: one connection, `inflight` requests in flight, each
/// `batch` publishes to `bench.<client>` acknowledged by the stream.
struct NatsClient {
    connection: NatsConnection,
    subject: String,
    inbox: String,
    payload: Vec<u8>,
    batch: usize,
    /// Request number → (sent at, acks still awaited, refused so far).
    pending: HashMap<u64, (Instant, usize, u64)>,
    next: u64,
}

impl NatsClient {
    async fn connect(endpoint: &str, tls: &Arc<rustls::ClientConfig>, client: usize, plan: &Plan) -> Result<Self> {
        let mut connection = NatsConnection::connect(endpoint, tls).await?;
        let inbox = format!("_INBOX.compare_load.{}.{client}", std::process::id());
        connection.subscribe(&format!("{inbox}.*"), 1).await?;
        Ok(Self {
            connection,
            subject: format!("bench.{client}"),
            inbox,
            payload: vec![BODY_FILLER; plan.size],
            batch: plan.batch,
            pending: HashMap::new(),
            next: 0,
        })
    }

    /// Writes one request's publishes (not flushed).
    async fn send(&mut self) -> Result<()> {
        self.next += 1;
        let reply = format!("{}.{}", self.inbox, self.next);
        for _ in 0..self.batch {
            self.connection.publish(&self.subject, &reply, &self.payload).await?;
        }
        self.pending.insert(self.next, (Instant::now(), self.batch, 0));
        Ok(())
    }

    /// Keeps `inflight` requests in flight until the window closes (with
    /// `resend`; without, sends `inflight` once), then waits for those
    /// still out; counts what completes inside it.
    async fn run(&mut self, inflight: usize, window: Window, resend: bool) -> Result<Tally> {
        let mut tally = Tally::new()?;
        for _ in 0..inflight {
            self.send().await?;
        }
        self.connection.stream.flush().await?;
        while !self.pending.is_empty() {
            let incoming = match tokio::time::timeout(REQUEST_TIMEOUT, self.connection.next()).await {
                Ok(incoming) => incoming?,
                Err(_) => {
                    let error = format!("{} requests unanswered for {REQUEST_TIMEOUT:?}", self.pending.len());
                    tally.failed(error);
                    return Ok(tally);
                }
            };
            match incoming {
                Incoming::Msg {
                    subject,
                    payload,
                    status,
                } => {
                    let completed = self.acked(&subject, &payload, status, window, &mut tally)?;
                    if completed && resend && Instant::now() < window.closes {
                        self.send().await?;
                        self.connection.stream.flush().await?;
                    }
                }
                Incoming::Ping => self.connection.pong().await?,
                Incoming::Error(error) => return Err(error.into()),
                Incoming::Pong | Incoming::Other => {}
            }
        }
        Ok(tally)
    }

    /// Takes one ack; returns whether it completed a request.
    fn acked(
        &mut self,
        subject: &str,
        payload: &[u8],
        status: Option<u16>,
        window: Window,
        tally: &mut Tally,
    ) -> Result<bool> {
        let Some(request) = subject.rsplit('.').next().and_then(|number| number.parse::<u64>().ok()) else {
            return Ok(false);
        };
        let refusal = match status {
            Some(status) => Some(format!("status {status}")),
            None => match serde_json::from_slice::<Value>(payload) {
                Ok(answer) => api_error(&answer),
                Err(error) => Some(format!("an ack that is not JSON: {error}")),
            },
        };
        let Some((sent_at, awaited, refused)) = self.pending.get_mut(&request) else {
            return Ok(false);
        };
        *awaited -= 1;
        *refused += u64::from(refusal.is_some());
        if *awaited > 0 {
            if let Some(refusal) = refusal {
                tally.first_error.get_or_insert(refusal);
            }
            return Ok(false);
        }
        let (sent_at, refused) = (*sent_at, *refused);
        self.pending.remove(&request);
        let done_at = Instant::now();
        if window.counts(done_at) {
            tally.completed(done_at - sent_at, self.batch as u64 - refused, refused, refusal)?;
        }
        Ok(true)
    }
}

async fn run_nats(args: &Args, plan: &Plan) -> Result<Tally> {
    let tls = rustls_config(&Tls::read(args)?)?;
    let mut setup = NatsConnection::connect(&args.endpoints[0], &tls).await?;
    let leader = nats_stream(&mut setup, &args.stream, args.replicas).await?;
    let endpoint = nats_endpoint_of(&args.endpoints, &tls, &leader).await?;
    eprintln!("compare_load: stream {} is led by {leader} at {endpoint}", args.stream);
    let mut clients = Vec::with_capacity(plan.clients);
    for client in 0..plan.clients {
        let mut nats = NatsClient::connect(&endpoint, &tls, client, plan).await?;
        // One request before the clock, like the other systems' clients.
        let now = Instant::now();
        let first = Window {
            opens: now,
            closes: now + REQUEST_TIMEOUT,
        };
        let first = nats.run(1, first, false).await?;
        if first.requests != 1 || first.errors > 0 {
            let why = first.first_error.unwrap_or_default();
            return Err(format!("client {client}: the first publish failed: {why}").into());
        }
        clients.push(nats);
    }
    let window = Window::starting_now(plan);
    let mut tasks = tokio::task::JoinSet::new();
    for mut nats in clients {
        let inflight = plan.inflight;
        tasks.spawn(async move { nats.run(inflight, window, true).await });
    }
    gather(tasks, window).await
}

// ---------------------------------------------------------------- report

fn report(plan: &Plan, tally: &Tally) {
    let seconds = plan.duration.as_secs_f64();
    let requests_per_sec = tally.requests as f64 / seconds;
    let records_per_sec = tally.records as f64 / seconds;
    let mb_per_sec = tally.records as f64 * plan.size as f64 / seconds / 1e6;
    let quantile_us = |quantile: f64| tally.latency_ns.value_at_quantile(quantile) as f64 / 1e3;
    let (p50_us, p99_us, p999_us) = (quantile_us(0.5), quantile_us(0.99), quantile_us(0.999));
    let max_us = tally.latency_ns.max() as f64 / 1e3;
    let summary = json!({
        "system": plan.system.name(),
        "clients": plan.clients,
        "inflight": plan.inflight,
        "batch": plan.batch,
        "size": plan.size,
        "warmup_seconds": plan.warmup.as_secs_f64(),
        "seconds": seconds,
        "requests": tally.requests,
        "records": tally.records,
        "requests_per_sec": requests_per_sec,
        "records_per_sec": records_per_sec,
        "mb_per_sec": mb_per_sec,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "p50_us": p50_us,
        "p99_us": p99_us,
        "p999_us": p999_us,
        "max_us": max_us,
    });
    let first_error = tally
        .first_error
        .as_ref()
        .map_or_else(String::new, |error| format!(" (first: {error})"));
    println!(
        "{}: {} clients × {} in flight × {} value(s) of {} bytes per request, {seconds:.3} s measured after {:.3} s of warm-up",
        plan.system.name(),
        plan.clients,
        plan.inflight,
        plan.batch,
        plan.size,
        plan.warmup.as_secs_f64()
    );
    println!("requests/s:        {requests_per_sec:.1}");
    println!("records/s:         {records_per_sec:.1}");
    println!("MB/s:              {mb_per_sec:.3} (values)");
    println!("errors:            {}{first_error}", tally.errors);
    println!("request latency:   p50 {p50_us:.1} us, p99 {p99_us:.1} us, p999 {p999_us:.1} us, max {max_us:.1} us");
    println!("{summary}");
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = match Plan::check(&args) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("compare_load: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("compare_load: starting the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let tally = runtime.block_on(async {
        match plan.system {
            System::Etcd => run_etcd(&args, &plan).await,
            System::Nats => run_nats(&args, &plan).await,
        }
    });
    match tally {
        Ok(tally) if tally.requests > 0 => {
            report(&plan, &tally);
            ExitCode::SUCCESS
        }
        Ok(tally) => {
            let why = tally
                .first_error
                .unwrap_or_else(|| "no request completed in the window".into());
            eprintln!("compare_load: nothing was written: {why}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("compare_load: {error}");
            ExitCode::from(2)
        }
    }
}
