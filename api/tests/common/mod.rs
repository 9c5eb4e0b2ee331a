//! What the api's tests share: a one-node cluster serving gRPC on
//! loopback (plaintext; callers name their principal in the insecure
//! header), and clients that act as a principal.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use farmlog_api::context::{PRINCIPAL_HEADER, TENANT_HEADER};
use farmlog_api::raft::GrpcTransport;
use farmlog_api::server::{serve, ServeOptions};
use farmlog_engine::io::OsStorage;
use farmlog_replica::{Node, RaftSettings, StoreOptions};
use openraft::BasicNode;
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running one-node cluster.
pub struct Single {
    pub node: Arc<Node>,
    pub address: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Single {
    /// Starts node 1 in a fresh directory, initializes it as a one-node
    /// cluster and waits until it leads.
    pub async fn start() -> Self {
        Self::start_with(ServeOptions::default()).await
    }

    pub async fn start_with(options: ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let config = RaftSettings::default().config("api-test").unwrap();
        let node = Node::start(
            1,
            Arc::new(OsStorage),
            dir.path(),
            StoreOptions::default(),
            config,
            Arc::new(GrpcTransport::new(None)),
        )
        .await
        .unwrap();
        let node = Arc::new(node);
        node.raft
            .initialize(BTreeMap::from([(1, BasicNode { addr: address.clone() })]))
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let node = node.clone();
            async move {
                serve(node, listener, options, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            }
        });
        assert_eq!(node.wait_for_leader(WAIT).await, Some(1));
        Self {
            node,
            address,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    /// A channel to the node.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A channel whose every call names `principal` (and, for a landlord
    /// principal acting for a customer, `tenant`).
    pub async fn as_principal(&self, principal: &str, tenant: Option<&str>) -> As {
        InterceptedService::new(
            self.channel().await,
            Claim {
                principal: principal.parse().unwrap(),
                tenant: tenant.map(|tenant| tenant.parse().unwrap()),
            },
        )
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.node.shutdown().await;
    }
}

/// Adds the insecure principal header (and the tenant header) to a call.
#[derive(Clone)]
pub struct Claim {
    principal: MetadataValue<tonic::metadata::Ascii>,
    tenant: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Claim {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(PRINCIPAL_HEADER, self.principal.clone());
        if let Some(tenant) = &self.tenant {
            request.metadata_mut().insert(TENANT_HEADER, tenant.clone());
        }
        Ok(request)
    }
}

/// A channel acting as one principal.
pub type As = InterceptedService<Channel, Claim>;

/// Proposes a command straight to `single`'s node (for set-up that is not
/// what a test is about) and checks that it applied.
pub async fn propose(single: &Single, tenant: &str, body: farmlog_engine::state::command::CommandBody) {
    let command = farmlog_engine::state::testing::command(tenant, farmlog_api::context::now_ms(), body);
    let encoded = farmlog_engine::state::batch::encode(&command).unwrap();
    let (_, outcome) = single.node.propose(encoded).await.unwrap();
    assert!(outcome.is_applied(), "{command:?}: {outcome:?}");
}

/// acme's customer MLM and proxies, each scoped to its component.
pub const MLM: &str = "farmlog://tenant/acme/intermediate-mlm/component/cmlm";
pub const P1: &str = "farmlog://tenant/acme/proxy/component/p1";
pub const P2: &str = "farmlog://tenant/acme/proxy/component/p2";

/// Principals of the tests.
pub const LANDLORD_ADMIN: &str = "farmlog://landlord/admin";
pub const APPS_MLM: &str = "farmlog://landlord/applications-mlm";

pub fn tenant(customer: &str, role: &str) -> String {
    format!("farmlog://tenant/{customer}/{role}")
}
