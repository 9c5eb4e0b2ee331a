//! A real cluster: three `farmlog serve` processes on loopback with
//! mutual TLS, on free ports. A workload runs through the Rust client;
//! the leader is killed with SIGKILL mid-workload; a new leader must take
//! writes within a bounded time and every acknowledged write must be
//! readable; the killed node restarts, catches up, and every node's state
//! hash agrees. Then the door: no certificate, an untrusted certificate,
//! another tenant, and malformed or oversized requests.
//!
//! Every process is started here and killed by its `Child` handle when
//! the test ends, however it ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use farmlog_api::certs::DevCa;
use farmlog_api::client::{Client, ClientOptions, Retry};
use farmlog_api::pb::{self, admin_client::AdminClient, streams_client::StreamsClient};
use farmlog_api::tls::TlsFiles;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

/// How long anything in this test may take.
const WAIT: Duration = Duration::from_secs(30);
/// A new leader must take writes this soon after the old one died.
const FAILOVER_MAX: Duration = Duration::from_secs(10);
/// Appends of the workload, per phase.
const APPENDS: usize = 60;

/// The nodes' processes; killed when dropped.
struct Nodes {
    dir: PathBuf,
    addresses: BTreeMap<u64, String>,
    metrics: BTreeMap<u64, String>,
    children: BTreeMap<u64, Child>,
}

impl Nodes {
    fn start(&mut self, id: u64) {
        let members: Vec<String> = self
            .addresses
            .iter()
            .map(|(id, address)| format!("{id}={address}"))
            .collect();
        let certs = self.dir.join("certs");
        let log = std::fs::File::create(self.dir.join(format!("node-{id}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_farmlog"))
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--listen", &self.addresses[&id]])
            .args(["--metrics-listen", &self.metrics[&id]])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")))
            .args(["--members", &members.join(",")])
            .arg("--tls-ca")
            .arg(certs.join("ca.pem"))
            .arg("--tls-cert")
            .arg(certs.join(format!("node-{id}.pem")))
            .arg("--tls-key")
            .arg(certs.join(format!("node-{id}.key")))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.insert(id, child);
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn endpoints(&self) -> Vec<String> {
        self.addresses.values().cloned().collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.children.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client(endpoints: Vec<String>, certs: &Path, name: &str, tenant: Option<&str>) -> Client {
    Client::new(ClientOptions {
        endpoints,
        tls: Some(TlsFiles::in_dir(certs, name)),
        principal: None,
        tenant: tenant.map(str::to_string),
        follower_reads: false,
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

/// The status one node gives of itself.
async fn status_of(client: &Client, at: usize) -> Result<pb::ClusterStatus, tonic::Status> {
    AdminClient::new(client.channel(at))
        .status(pb::ClusterStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
}

async fn leader(client: &Client, nodes: usize) -> u64 {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        for at in 0..nodes {
            if let Ok(status) = status_of(client, at).await {
                if status.role == "leader" {
                    return status.node_id;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader within {WAIT:?}");
}

async fn append(client: &Client, stream: &str, body: String) -> Result<pb::AppendResponse, tonic::Status> {
    let request = pb::AppendRequest {
        stream: stream.into(),
        event_type: "work".into(),
        body: body.into_bytes().into(),
        session: Some(client.session().await?),
        ..Default::default()
    };
    client
        .call(Retry::Safe, |channel| {
            let request = request.clone();
            async move { StreamsClient::new(channel).append(request).await }
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn read_all(client: &Client, stream: &str) -> Vec<String> {
    let request = pb::ReadStreamRequest {
        stream: stream.into(),
        limit: 1000,
        ..Default::default()
    };
    let events = client
        .call(Retry::Safe, |channel| {
            let request = request.clone();
            async move { StreamsClient::new(channel).read(request).await }
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    events
        .into_iter()
        .map(|event| String::from_utf8(event.body.to_vec()).unwrap())
        .collect()
}

/// A raw TLS channel: trusting `ca`, presenting `identity` if any.
async fn raw_channel(address: &str, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|error| error.to_string())
}

/// `GET /metrics` over plain HTTP/1.0.
async fn scrape(address: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_survive_the_leader_being_killed() {
    tokio::time::timeout(Duration::from_secs(240), run())
        .await
        .expect("the cluster test took too long");
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = DevCa::new().unwrap();
    ca.write_ca(&certs).unwrap();
    for id in 1..=3 {
        ca.write_issued(&certs, &format!("node-{id}"), "farmlog://landlord/node", &["127.0.0.1"])
            .unwrap();
    }
    ca.write_issued(&certs, "landlord-admin", "farmlog://landlord/admin", &[])
        .unwrap();
    ca.write_issued(&certs, "acme-admin", "farmlog://tenant/acme/admin", &[])
        .unwrap();
    ca.write_issued(&certs, "beta-admin", "farmlog://tenant/beta/admin", &[])
        .unwrap();
    // A certificate from a CA the cluster does not trust.
    let stranger = DevCa::new().unwrap();
    let strangers = dir.path().join("strangers");
    std::fs::create_dir_all(&strangers).unwrap();
    stranger
        .write_issued(&strangers, "landlord-admin", "farmlog://landlord/admin", &[])
        .unwrap();

    let mut nodes = Nodes {
        dir: dir.path().to_path_buf(),
        addresses: (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect(),
        metrics: (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect(),
        children: BTreeMap::new(),
    };
    for id in 1..=3 {
        nodes.start(id);
    }
    let admin = Arc::new(client(nodes.endpoints(), &certs, "landlord-admin", None));
    let first_leader = leader(&admin, 3).await;

    // The workload, with the leader killed in the middle of it.
    let mut acknowledged = Vec::new();
    for n in 0..APPENDS {
        let body = format!("before-{n}");
        append(&admin, "work", body.clone()).await.unwrap();
        acknowledged.push(body);
    }
    let writer = {
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failed = 0;
            for n in 0..APPENDS {
                let body = format!("during-{n}");
                match append(&admin, "work", body.clone()).await {
                    Ok(_) => acknowledged.push(body),
                    Err(_) => failed += 1,
                }
            }
            (acknowledged, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    nodes.kill(first_leader);
    let killed_at = Instant::now();
    let (during, failed) = writer.await.unwrap();
    assert!(failed <= 1, "{failed} appends failed around the failover");
    acknowledged.extend(during);

    // A new leader takes writes, soon.
    let survivors: Vec<String> = nodes.endpoints();
    let after = client(survivors.clone(), &certs, "landlord-admin", None);
    append(&after, "work", "after".into()).await.unwrap();
    acknowledged.push("after".into());
    let failover = killed_at.elapsed();
    assert!(failover < FAILOVER_MAX, "writes resumed only after {failover:?}");
    let new_leader = leader(&after, 3).await;
    assert_ne!(new_leader, first_leader);

    // Every acknowledged write is there (a write retried across the
    // failover carries its session, so it is there once).
    let stored = read_all(&after, "work").await;
    for body in &acknowledged {
        assert_eq!(
            stored.iter().filter(|stored| *stored == body).count(),
            1,
            "{body} is not stored exactly once"
        );
    }

    // The killed node comes back, catches up, and agrees.
    nodes.start(first_leader);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut statuses = Vec::new();
        for at in 0..3 {
            if let Ok(status) = status_of(&after, at).await {
                statuses.push(status);
            }
        }
        let applied: Vec<Option<u64>> = statuses.iter().map(|status| status.applied_index).collect();
        let hashes: Vec<&str> = statuses.iter().map(|status| status.state_hash.as_str()).collect();
        if statuses.len() == 3
            && applied.iter().all(|index| *index == applied[0])
            && hashes.iter().all(|hash| *hash == hashes[0])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up: {applied:?} {hashes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The new leader's metrics show the writes it committed, its fsyncs
    // and their latency.
    let scraped = scrape(&nodes.metrics[&new_leader]).await;
    for name in [
        "farmlog_is_leader 1",
        "farmlog_writes_total{result=\"applied\"}",
        "farmlog_commit_latency_seconds_bucket",
        "farmlog_fsync_latency_seconds_bucket",
        "farmlog_log_fsyncs_total",
        "farmlog_raft_commands_proposed_total",
        "farmlog_applied_index",
        "farmlog_spool_depth",
        "farmlog_scrub_passes_total",
    ] {
        assert!(scraped.contains(name), "{name} is not in the metrics:\n{scraped}");
    }

    // The door.
    let address = &nodes.addresses[&new_leader];
    let anonymous = match raw_channel(address, &certs.join("ca.pem"), None).await {
        Err(_) => None,
        Ok(channel) => Some(
            AdminClient::new(channel)
                .status(pb::ClusterStatusRequest {})
                .await
                .unwrap_err(),
        ),
    };
    if let Some(status) = anonymous {
        assert!(
            matches!(
                status.code(),
                Code::Unauthenticated | Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "an anonymous client got {status:?}"
        );
    }
    let untrusted = raw_channel(
        address,
        &certs.join("ca.pem"),
        Some((
            &strangers.join("landlord-admin.pem"),
            &strangers.join("landlord-admin.key"),
        )),
    )
    .await;
    if let Ok(channel) = untrusted {
        let refused = AdminClient::new(channel)
            .status(pb::ClusterStatusRequest {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused.code(),
                Code::Unauthenticated | Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "an untrusted certificate got {refused:?}"
        );
    }
    // Tenants: acme registers nothing it can show beta; the landlord's
    // stream is not found for acme; tenants never reach Admin.
    let acme = client(nodes.endpoints(), &certs, "acme-admin", None);
    let hidden = acme
        .call(Retry::Safe, |channel| async move {
            StreamsClient::new(channel)
                .read(pb::ReadStreamRequest {
                    stream: "work".into(),
                    ..Default::default()
                })
                .await
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let denied = status_of(&acme, 0).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Malformed and oversized requests get their statuses; the node stays
    // healthy.
    let oversized_body = pb::AppendRequest {
        stream: "work".into(),
        event_type: "big".into(),
        body: vec![0u8; 2 << 20].into(),
        ..Default::default()
    };
    let too_big = after
        .call(Retry::OnlyIfNotWritten, |channel| {
            let request = oversized_body.clone();
            async move { StreamsClient::new(channel).append(request).await }
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument, "{too_big:?}");
    let over_cap = pb::AppendRequest {
        body: vec![0u8; 5 << 20].into(),
        ..oversized_body.clone()
    };
    let refused = after
        .call(Retry::OnlyIfNotWritten, |channel| {
            let request = over_cap.clone();
            async move { StreamsClient::new(channel).append(request).await }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{refused:?}"
    );
    let nameless = pb::AppendRequest {
        stream: String::new(),
        ..Default::default()
    };
    let unnamed = after
        .call(Retry::OnlyIfNotWritten, |channel| {
            let request = nameless.clone();
            async move { StreamsClient::new(channel).append(request).await }
        })
        .await
        .unwrap_err();
    assert_eq!(unnamed.code(), Code::InvalidArgument);
    assert!(unnamed.message().contains("stream"), "{}", unnamed.message());
    append(&after, "work", "still-healthy".into()).await.unwrap();
    assert_eq!(
        read_all(&after, "work").await.last().map(String::as_str),
        Some("still-healthy")
    );
}
