//! The Topology service through gRPC: customers and components registered
//! by the landlord and by the customer's admin, switches, management ids,
//! groups, the reads; tenants see only their own components; scoped and
//! read-only principals are held to what they may do.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{tenant, As, Single, LANDLORD_ADMIN};
use farmlog_api::pb::sessions_client::SessionsClient;
use farmlog_api::pb::topology_client::TopologyClient;
use farmlog_api::pb::{self, ComponentKind as Kind};
use tonic::Code;

/// The longest a whole test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a test body, bounded by [`TEST_TIMEOUT`].
async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test timed out")
}

fn own(id: &str) -> pb::ComponentRef {
    pb::ComponentRef {
        id: id.into(),
        hosted: false,
    }
}

fn hosted(id: &str) -> pb::ComponentRef {
    pb::ComponentRef {
        id: id.into(),
        hosted: true,
    }
}

fn component(id: &str, kind: Kind, parents: Vec<pb::ComponentRef>) -> pb::RegisterComponentRequest {
    pb::RegisterComponentRequest {
        id: id.into(),
        kind: kind.into(),
        version: "1.0".into(),
        mode: pb::CommunicationMode::Session.into(),
        parents,
        session: None,
    }
}

fn customer(name: &str) -> pb::RegisterCustomerRequest {
    pb::RegisterCustomerRequest {
        tenant: name.into(),
        display_name: name.to_uppercase(),
        session: None,
    }
}

async fn client(single: &Single, principal: &str, tenant: Option<&str>) -> TopologyClient<As> {
    TopologyClient::new(single.as_principal(principal, tenant).await)
}

/// The farm of these tests: the landlord's hosted chain (application
/// server `server` → applications MLM `apps`), customers `acme` and
/// `beta`, and acme's customer MLM `mlm-1` → proxy `p1` → integration
/// module `i1` → support instance `s1`, registered by the landlord's admin
/// for acme, with a proxy group `proxies` holding p1.
async fn farm(single: &Single) {
    let mut landlord = client(single, LANDLORD_ADMIN, None).await;
    for name in ["acme", "beta"] {
        landlord.register_customer(customer(name)).await.unwrap();
    }
    landlord
        .register_component(component("server", Kind::ApplicationServer, vec![]))
        .await
        .unwrap();
    landlord
        .register_component(component("apps", Kind::ApplicationsMlm, vec![own("server")]))
        .await
        .unwrap();
    let mut for_acme = client(single, LANDLORD_ADMIN, Some("acme")).await;
    for request in [
        component("mlm-1", Kind::CustomerMlm, vec![hosted("apps")]),
        component("p1", Kind::Proxy, vec![own("mlm-1")]),
        component("i1", Kind::IntegrationModule, vec![own("p1")]),
        component("s1", Kind::SupportInstance, vec![own("i1")]),
    ] {
        for_acme.register_component(request).await.unwrap();
    }
    for_acme
        .define_group(pb::DefineGroupRequest {
            name: "proxies".into(),
            kind: pb::GroupKind::Proxy.into(),
            session: None,
        })
        .await
        .unwrap();
    for_acme
        .change_group_member(pb::ChangeGroupMemberRequest {
            group: "proxies".into(),
            member: Some(own("p1")),
            change: pb::MembershipChange::Add.into(),
            session: None,
        })
        .await
        .unwrap();
}

fn ids(components: &[pb::ComponentInfo]) -> Vec<&str> {
    components.iter().map(|component| component.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_read_and_switch_a_customers_topology() {
    bounded(async {
        let single = Single::start().await;
        farm(&single).await;
        // acme's own admin registers in its own namespace.
        let mut admin = client(&single, &tenant("acme", "admin"), None).await;
        let recorded = admin
            .register_component(component("p2", Kind::Proxy, vec![own("mlm-1")]))
            .await
            .unwrap()
            .into_inner();
        assert!(recorded.position > 0);
        assert!(recorded.written.is_some());
        admin
            .register_component(component("i2", Kind::IntegrationModule, vec![own("p2")]))
            .await
            .unwrap();
        let taken = admin
            .register_component(component("p2", Kind::Proxy, vec![own("mlm-1")]))
            .await
            .unwrap_err();
        assert_eq!(taken.code(), Code::AlreadyExists, "{}", taken.message());

        // Reads.
        let p1 = admin
            .get_component(pb::GetComponentRequest { id: "p1".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((p1.tenant.as_str(), p1.kind()), ("acme", Kind::Proxy));
        assert_eq!(p1.parents, vec![own("mlm-1")]);
        assert_eq!(p1.liveness(), pb::Liveness::Alive);
        let mlm = admin
            .get_component(pb::GetComponentRequest { id: "mlm-1".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(mlm.parents, vec![hosted("apps")]);
        let below = admin
            .reachable_through(pb::ReachableThroughRequest { id: "mlm-1".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ids(&below.components), ["p1", "i1", "s1", "p2", "i2"]);
        let status = admin
            .component_status(pb::ComponentStatusRequest { id: "p1".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (status.own(), status.worst()),
            (pb::Liveness::Alive, pb::Liveness::Alive)
        );
        let not_alive = admin.not_alive(pb::NotAliveRequest {}).await.unwrap().into_inner();
        assert!(not_alive.components.is_empty());
        let group = admin
            .get_group(pb::GetGroupRequest { name: "proxies".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(group.kind(), pb::GroupKind::Proxy);
        assert_eq!(group.members, vec![own("p1")]);
        assert_eq!(group.history.len(), 1);
        assert!(group.history[0].added && group.history[0].member == "p1");

        // Switches.
        admin
            .set_enabled(pb::SetEnabledRequest {
                component: "s1".into(),
                switch: pb::Switch::SupportInstance.into(),
                enabled: false,
                session: None,
            })
            .await
            .unwrap();
        let s1 = admin
            .get_component(pb::GetComponentRequest { id: "s1".into() })
            .await
            .unwrap()
            .into_inner();
        assert!(!s1.enabled);
        let wrong_kind = admin
            .set_enabled(pb::SetEnabledRequest {
                component: "s1".into(),
                switch: pb::Switch::ProxyForwarding.into(),
                enabled: false,
                session: None,
            })
            .await
            .unwrap_err();
        assert_eq!(wrong_kind.code(), Code::FailedPrecondition);

        // A proxy scoped to p1 maps p1's management ids, not p2's.
        let mut proxy = client(&single, "farmlog://tenant/acme/proxy/component/p1", None).await;
        let map = |proxy: &str, component: Option<&str>| pb::MapManagementIdRequest {
            proxy: proxy.into(),
            management_id: "10.0.0.1".into(),
            component: component.map(str::to_string),
            session: None,
        };
        proxy.map_management_id(map("p1", Some("s1"))).await.unwrap();
        let resolved = proxy
            .resolve_management_id(pb::ResolveManagementIdRequest {
                proxy: "p1".into(),
                management_id: "10.0.0.1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resolved.id, "s1");
        let outside = proxy.map_management_id(map("p2", Some("i2"))).await.unwrap_err();
        assert_eq!(outside.code(), Code::NotFound, "{}", outside.message());
        proxy.map_management_id(map("p1", None)).await.unwrap();
        let unmapped = proxy
            .resolve_management_id(pb::ResolveManagementIdRequest {
                proxy: "p1".into(),
                management_id: "10.0.0.1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unmapped.code(), Code::NotFound);

        // Deregistration: a leaf goes, a component with children stays.
        let i2 = pb::DeregisterRequest {
            component: Some(own("i2")),
            session: None,
        };
        admin.deregister(i2).await.unwrap();
        let busy = pb::DeregisterRequest {
            component: Some(own("p1")),
            session: None,
        };
        let busy = admin.deregister(busy).await.unwrap_err();
        assert_eq!(busy.code(), Code::FailedPrecondition, "{}", busy.message());
        let gone = admin
            .get_component(pb::GetComponentRequest { id: "i2".into() })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        single.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_roles_are_held_to_their_own() {
    bounded(async {
        let single = Single::start().await;
        farm(&single).await;
        // beta sees none of acme's topology: not found, like a missing one.
        let mut beta = client(&single, &tenant("beta", "admin"), None).await;
        let hidden = beta
            .get_component(pb::GetComponentRequest { id: "p1".into() })
            .await
            .unwrap_err();
        let missing = beta
            .get_component(pb::GetComponentRequest { id: "nothing".into() })
            .await
            .unwrap_err();
        assert_eq!((hidden.code(), missing.code()), (Code::NotFound, Code::NotFound));
        for error in [
            beta.reachable_through(pb::ReachableThroughRequest { id: "mlm-1".into() })
                .await
                .unwrap_err(),
            beta.get_group(pb::GetGroupRequest { name: "proxies".into() })
                .await
                .unwrap_err(),
            beta.component_status(pb::ComponentStatusRequest { id: "s1".into() })
                .await
                .unwrap_err(),
        ] {
            assert_eq!(error.code(), Code::NotFound, "{}", error.message());
        }
        // Naming acme's tenant does not help.
        let mut beta_as_acme = client(&single, &tenant("beta", "admin"), Some("acme")).await;
        let refused = beta_as_acme
            .get_component(pb::GetComponentRequest { id: "p1".into() })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound);
        // beta cannot hang a component below acme's proxy either.
        let below = beta
            .register_component(component("i9", Kind::IntegrationModule, vec![own("p1")]))
            .await
            .unwrap_err();
        assert_eq!(below.code(), Code::NotFound, "{}", below.message());

        // A service module reads the topology but may not change it.
        let mut module = client(&single, &tenant("acme", "service-module"), None).await;
        let p1 = module
            .get_component(pb::GetComponentRequest { id: "p1".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p1.id, "p1");
        let denied = module
            .register_component(component("p3", Kind::Proxy, vec![own("mlm-1")]))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        // Only the landlord's admin registers customers.
        let mut acme_admin = client(&single, &tenant("acme", "admin"), None).await;
        let denied = acme_admin.register_customer(customer("gamma")).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);

        // An admin scoped to a security group changes only its members and
        // what is below them, and cannot widen its own group.
        let mut landlord = client(&single, LANDLORD_ADMIN, Some("acme")).await;
        landlord
            .register_component(component("p2", Kind::Proxy, vec![own("mlm-1")]))
            .await
            .unwrap();
        landlord
            .define_group(pb::DefineGroupRequest {
                name: "plant-1".into(),
                kind: pb::GroupKind::Security.into(),
                session: None,
            })
            .await
            .unwrap();
        landlord
            .change_group_member(pb::ChangeGroupMemberRequest {
                group: "plant-1".into(),
                member: Some(own("p1")),
                change: pb::MembershipChange::Add.into(),
                session: None,
            })
            .await
            .unwrap();
        let mut scoped = client(&single, "farmlog://tenant/acme/admin/group/plant-1", None).await;
        scoped
            .register_component(component("i3", Kind::IntegrationModule, vec![own("p1")]))
            .await
            .unwrap();
        let outside = scoped
            .register_component(component("i4", Kind::IntegrationModule, vec![own("p2")]))
            .await
            .unwrap_err();
        assert_eq!(outside.code(), Code::NotFound, "{}", outside.message());
        let widen = scoped
            .change_group_member(pb::ChangeGroupMemberRequest {
                group: "plant-1".into(),
                member: Some(own("p2")),
                change: pb::MembershipChange::Add.into(),
                session: None,
            })
            .await
            .unwrap_err();
        assert_eq!(widen.code(), Code::NotFound, "{}", widen.message());
        single.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_and_sessions_retry_once() {
    bounded(async {
        let single = Single::start().await;
        farm(&single).await;
        let mut admin = client(&single, &tenant("acme", "admin"), None).await;
        let mut unspecified = component("p3", Kind::Proxy, vec![own("mlm-1")]);
        unspecified.kind = 0;
        let mut unknown = component("p3", Kind::Proxy, vec![own("mlm-1")]);
        unknown.kind = 99;
        let mut no_mode = component("p3", Kind::Proxy, vec![own("mlm-1")]);
        no_mode.mode = 0;
        for (request, field) in [(unspecified, "`kind`"), (unknown, "`kind`"), (no_mode, "`mode`")] {
            let bad = admin.register_component(request).await.unwrap_err();
            assert_eq!(bad.code(), Code::InvalidArgument);
            assert!(bad.message().contains(field), "{}", bad.message());
        }
        let no_switch = admin
            .set_enabled(pb::SetEnabledRequest {
                component: "s1".into(),
                switch: 0,
                enabled: true,
                session: None,
            })
            .await
            .unwrap_err();
        assert_eq!(no_switch.code(), Code::InvalidArgument);
        assert!(no_switch.message().contains("`switch`"), "{}", no_switch.message());
        let no_change = admin
            .change_group_member(pb::ChangeGroupMemberRequest {
                group: "proxies".into(),
                member: Some(own("p1")),
                change: 0,
                session: None,
            })
            .await
            .unwrap_err();
        assert!(no_change.message().contains("`change`"), "{}", no_change.message());
        let no_member = admin
            .change_group_member(pb::ChangeGroupMemberRequest {
                group: "proxies".into(),
                member: None,
                change: pb::MembershipChange::Remove.into(),
                session: None,
            })
            .await
            .unwrap_err();
        assert_eq!(no_member.code(), Code::InvalidArgument);
        assert!(no_member.message().contains("`member`"), "{}", no_member.message());
        // The engine's own checks name their field too.
        let empty_id = admin
            .register_component(component("", Kind::Proxy, vec![own("mlm-1")]))
            .await
            .unwrap_err();
        assert_eq!(empty_id.code(), Code::InvalidArgument);
        assert!(empty_id.message().contains("id"), "{}", empty_id.message());
        let mut landlord = client(&single, LANDLORD_ADMIN, None).await;
        let reserved = landlord.register_customer(customer("landlord")).await.unwrap_err();
        assert_eq!(reserved.code(), Code::InvalidArgument);
        assert!(reserved.message().contains("name"), "{}", reserved.message());

        // A write in a session is applied once however often it is sent.
        let mut sessions = SessionsClient::new(single.as_principal(&tenant("acme", "admin"), None).await);
        let client_id = sessions
            .open(pb::OpenSessionRequest {})
            .await
            .unwrap()
            .into_inner()
            .client_id;
        let mut request = component("p3", Kind::Proxy, vec![own("mlm-1")]);
        request.session = Some(pb::Session { client_id, sequence: 1 });
        let first = admin.register_component(request.clone()).await.unwrap().into_inner();
        let again = admin.register_component(request).await.unwrap().into_inner();
        assert_eq!(first.position, again.position);
        assert!(again.written.is_some_and(|written| written.retried));
        single.stop().await;
    })
    .await;
}
