//! What an operator sees when something is wrong: API down, RBAC missing, podCIDR that does not fit, unknown
//! Node, no weft-system namespace. Each is a clear error, never a panic or a silent wrong subnet.
use crate::{config, req, Kit};
use weft_store::StoreError;
use weft_store_kube::KubeStore;

fn other(r: Result<impl std::fmt::Debug, StoreError>) -> String {
    match r {
        Err(StoreError::Other(m)) => m,
        other => panic!("expected StoreError::Other, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_is_unavailable_with_the_url() {
    // A port nothing listens on: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = KubeStore::connect(&format!("kube+http://127.0.0.1:{port}")).await.expect("connect makes no request");
    use weft_store::Store;
    for r in
        [s.leases().await.map(|_| ()), s.network_config().await.map(|_| ()), s.acquire(&req("n")).await.map(|_| ())]
    {
        match r {
            Err(StoreError::Unavailable(m)) => assert!(m.contains(&format!("http://127.0.0.1:{port}")), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert!(matches!(s.watch_leases(0).await, Err(StoreError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidr_outside_the_cluster_cidr_is_a_clear_error() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.server.cluster().add_node("far", &["10.1.0.0/24"]);
    k.server.cluster().add_node("wide", &["10.244.0.0/23"]);
    let s = k.store().await;
    let m = other(s.acquire(&req("far")).await);
    assert!(m.contains("Node far podCIDR 10.1.0.0/24 is outside clusterCidr 10.244.0.0/16"), "{m}");
    let m = other(s.acquire(&req("wide")).await);
    assert!(m.contains("is a /23 but subnetLen is 24"), "{m}");
    assert!(s.leases().await.unwrap().items.is_empty(), "nothing published on a misconfigured node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_node_and_missing_namespace_say_what_to_fix() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    let m = other(k.store().await.acquire(&req("ghost")).await);
    assert!(m.contains("Node \"ghost\" does not exist") && m.contains("spec.nodeName"), "{m}");

    let bare =
        weft_store_kube::fake::FakeApiServer::start("127.0.0.1:0".parse().unwrap(), Default::default()).await.unwrap();
    let s = KubeStore::connect(&bare.store_url()).await.unwrap();
    use weft_store::Store;
    let m = other(s.init_network_config(&config("10.244.0.0/16", 24)).await);
    assert!(m.contains("namespace weft-system does not exist") && m.contains("deploy/weft.yaml"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_names_the_missing_rbac_rule() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.server.cluster().deny("", "nodes", "list");
    k.nodes(&["n1"]);
    let s = k.store().await;
    let m = other(s.leases().await);
    assert!(m.starts_with("RBAC:") && m.contains("verb \"list\" on nodes at the cluster scope"), "{m}");
    let m = other(s.acquire(&req("n1")).await);
    assert!(m.contains("verb \"list\" on nodes"), "{m}");
    k.server.cluster().allow_all();
    k.server.cluster().deny("coordination.k8s.io", "leases", "create");
    let m = other(s.acquire(&req("n1")).await);
    assert!(m.contains("verb \"create\" on leases.coordination.k8s.io in namespace weft-system"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waits_for_its_pod_cidr_when_the_cluster_allocates() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.server.cluster().add_node("old", &["10.244.1.0/24"]);
    k.nodes(&["new"]);
    let s = k.store().await;
    match s.acquire(&req("new")).await {
        Err(StoreError::Unavailable(m)) => {
            assert!(m.contains("Node new has no podCIDR yet") && m.contains("old"), "{m}")
        }
        other => panic!("expected Unavailable (retried by the agent), got {other:?}"),
    }
    assert!(k.claims().is_empty(), "no subnet of its own was claimed");
    // The controller manager gets to it: the next try takes its podCIDR.
    k.server.cluster().add_node("new", &["10.244.2.0/24"]);
    assert_eq!(s.acquire(&req("new")).await.unwrap().subnet.to_string(), "10.244.2.0/24");
}
