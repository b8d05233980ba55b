//! Network config and leases: podCIDR from the controller manager, weft's own allocation, renew, release.
use crate::{config, req, Kit, LONG};
use std::collections::HashSet;
use std::time::Instant;
use weft_store::StoreError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_first_writer_wins_and_lives_in_a_configmap() {
    let k = Kit::start().await;
    let a = k.store().await;
    assert!(matches!(a.network_config().await, Err(StoreError::NoNetworkConfig)));
    k.nodes(&["n"]);
    assert!(matches!(a.acquire(&req("n")).await, Err(StoreError::NoNetworkConfig)));
    let first = config("10.244.0.0/16", 24);
    assert_eq!(a.init_network_config(&first).await.unwrap(), first);
    let b = k.store().await;
    assert_eq!(
        b.init_network_config(&config("10.99.0.0/16", 26)).await.unwrap(),
        first,
        "second writer gets the first"
    );
    assert_eq!(b.network_config().await.unwrap(), first);
    let cms = weft_store_kube::fake::resources::by_plural("", "v1", "configmaps").unwrap();
    let cm = k.server.cluster().get(cms, Some("weft-system"), "weft-config").unwrap();
    let stored: weft_types::NetworkConfig = serde_json::from_str(cm["data"]["network.json"].as_str().unwrap()).unwrap();
    assert_eq!(stored, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_takes_the_node_pod_cidr() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.server.cluster().add_node("n1", &["10.244.7.0/24", "fd00:10:244:7::/64"]);
    let s = k.store().await;
    let l = s.acquire(&req("n1")).await.unwrap();
    assert_eq!(l.subnet.to_string(), "10.244.7.0/24");
    assert_eq!(l.subnet6.unwrap().to_string(), "fd00:10:244:7::/64");
    let a = k.annotations("n1");
    assert_eq!(a["weft.dev/subnet-source"], "podCIDR");
    assert_eq!(a["weft.dev/node-ip"], "192.0.2.1");
    let data: serde_json::Value = serde_json::from_str(a["weft.dev/backend-data"].as_str().unwrap()).unwrap();
    assert_eq!(data, serde_json::json!({"type": "vxlan", "vtepMac": "02:00:00:00:00:01"}));
    assert!(k.claims().is_empty(), "no claim when the controller manager allocates");
    assert_eq!(s.leases().await.unwrap().items, vec![l]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_at_once_get_twenty_subnets_of_their_own() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    let names: Vec<String> = (0..20).map(|i| format!("node-{i}")).collect();
    for n in &names {
        k.nodes(&[n]);
    }
    let mut stores = Vec::new();
    for _ in &names {
        stores.push(k.store().await);
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = stores
        .into_iter()
        .zip(names.clone())
        .map(|(s, n)| tokio::spawn(async move { s.acquire(&req(&n)).await }))
        .collect();
    let mut subnets = HashSet::new();
    for t in tasks {
        let l = t.await.unwrap().expect("acquire");
        assert_eq!(l.subnet.prefix_len(), 24);
        assert!(subnets.insert(l.subnet), "{} handed out twice", l.subnet);
    }
    eprintln!("20 concurrent acquires against the fake API server: {:?}", t0.elapsed());
    let claims = k.claims();
    assert_eq!(claims.len(), 20, "one claim per node: {claims:?}");
    let holders: HashSet<_> = claims.iter().map(|c| c.1.clone()).collect();
    assert_eq!(holders, names.iter().cloned().collect());
    let listed: HashSet<_> = k.store().await.leases().await.unwrap().items.into_iter().map(|l| l.subnet).collect();
    assert_eq!(listed, subnets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_node_again_keeps_its_subnet_and_publishes_new_attributes() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["n1", "n2"]);
    let l = k.store().await.acquire(&req("n1")).await.unwrap();
    assert_eq!(k.annotations("n1")["weft.dev/subnet-source"], "weft");
    let mut r = req("n1");
    r.node_ip = "192.0.2.99".parse().unwrap();
    r.hint = Some("10.244.200.0/24".parse().unwrap());
    let again = k.store().await.acquire(&r).await.unwrap();
    assert_eq!(again.subnet, l.subnet, "the agent's restart keeps the subnet, hint or not");
    assert_eq!(k.claims().len(), 1);
    let snap = k.store().await.leases().await.unwrap();
    assert_eq!(snap.items, vec![again.clone()]);
    assert_eq!(snap.items[0].node_ip.to_string(), "192.0.2.99");
    // A hint is honoured for a node without a subnet, and then is not free for anybody else.
    let mut r2 = req("n2");
    r2.hint = Some(l.subnet);
    let l2 = k.store().await.acquire(&r2).await.unwrap();
    assert_ne!(l2.subnet, l.subnet);
    r2.hint = Some("10.244.77.0/24".parse().unwrap());
    k.store().await.release("n2").await.unwrap();
    assert_eq!(k.store().await.acquire(&r2).await.unwrap().subnet.to_string(), "10.244.77.0/24");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_then_release_returns_the_subnet() {
    let k = Kit::with_config("10.9.0.0/29", 30).await;
    k.nodes(&["a", "b", "c"]);
    let s = k.store().await;
    let a = s.acquire(&req("a")).await.unwrap();
    let b = s.acquire(&req("b")).await.unwrap();
    assert_ne!(a.subnet, b.subnet);
    match s.acquire(&req("c")).await {
        Err(StoreError::Exhausted(cidr)) => assert_eq!(cidr, "10.9.0.0/29"),
        other => panic!("expected Exhausted, got {other:?}"),
    }
    s.release("a").await.unwrap();
    assert_eq!(s.acquire(&req("c")).await.unwrap().subnet, a.subnet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_nodes_claim_is_taken_back() {
    let k = Kit::with_config("10.9.0.0/29", 30).await;
    k.nodes(&["a", "b", "c"]);
    let s = k.store().await;
    let a = s.acquire(&req("a")).await.unwrap();
    s.acquire(&req("b")).await.unwrap();
    // The fake has no garbage collector: the claim of a deleted Node stays until an agent finds it stale.
    k.server.cluster().remove("Node", None, "a").unwrap();
    assert_eq!(s.acquire(&req("c")).await.unwrap().subnet, a.subnet);
    let holders: HashSet<_> = k.claims().into_iter().map(|c| c.1).collect();
    assert_eq!(holders, HashSet::from(["b".to_string(), "c".to_string()]));
}

/// With deploy/weft.yaml's admission policy an agent may not delete another node's claim (403): the claim of a
/// deleted Node then stays taken until the garbage collector removes it, and allocation goes on around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_nodes_claim_the_admission_policy_protects_stays_taken() {
    let k = Kit::with_config("10.9.0.0/28", 30).await;
    k.nodes(&["a", "b", "c"]);
    let s = k.store().await;
    let a = s.acquire(&req("a")).await.unwrap();
    s.acquire(&req("b")).await.unwrap();
    k.server.cluster().remove("Node", None, "a").unwrap();
    k.server.cluster().deny("coordination.k8s.io", "leases", "delete");
    let c = s.acquire(&req("c")).await.expect("allocation goes on around a claim it may not delete");
    assert_ne!(c.subnet, a.subnet);
    let holders: HashSet<_> = k.claims().into_iter().map(|c| c.1).collect();
    assert_eq!(holders, HashSet::from(["a".to_string(), "b".to_string(), "c".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_publishes_and_moves_expiry_forward() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["n1"]);
    let s = k.store().await;
    let mut l = s.acquire(&req("n1")).await.unwrap();
    for i in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        l.backend_data = weft_types::BackendData::Vxlan { vtep_mac: format!("02:00:00:00:00:{i:02x}") };
        let before = l.expires_at_ms;
        l = s.renew(&l, LONG).await.unwrap();
        assert!(l.expires_at_ms > before, "renew moves the expiry forward");
    }
    assert_eq!(s.leases().await.unwrap().items, vec![l.clone()]);
    let data = k.annotations("n1")["weft.dev/backend-data"].as_str().unwrap().to_string();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&data).unwrap(),
        serde_json::json!({"type": "vxlan", "vtepMac": "02:00:00:00:00:02"})
    );
    assert!(k.annotations("n1")["weft.dev/renewed-at"].as_str().unwrap().ends_with('Z'));
    let mut stranger = l.clone();
    stranger.node = "n2".into();
    assert!(matches!(s.renew(&stranger, LONG).await, Err(StoreError::LeaseLost(n)) if n == "n2"));
    // A renewal that names a subnet the node no longer has is a lost lease too.
    let mut other = l.clone();
    other.subnet = "10.244.250.0/24".parse().unwrap();
    assert!(matches!(s.renew(&other, LONG).await, Err(StoreError::LeaseLost(_))));
}

/// Nodes do not expire, so a renewal with nothing new writes nothing: at 5000 nodes renewing every 20 s, a write
/// each time would be 250 Node events a second for every agent to process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_without_news_writes_nothing() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["n1"]);
    let s = k.store().await;
    let l = s.acquire(&req("n1")).await.unwrap();
    let patches = || k.server.cluster().requests().iter().filter(|r| r.verb == "patch").count();
    let before = patches();
    for _ in 0..5 {
        assert_eq!(s.renew(&l, LONG).await.unwrap(), l, "nothing changed: the published lease as is");
    }
    assert_eq!(patches(), before, "no write without news");
    let mut moved = l.clone();
    moved.node_ip = "192.0.2.50".parse().unwrap();
    let m = s.renew(&moved, LONG).await.unwrap();
    assert_eq!(patches(), before + 1);
    assert_eq!(s.leases().await.unwrap().items, vec![m]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_removes_annotations_and_claim_and_is_idempotent() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["n1"]);
    let s = k.store().await;
    let l = s.acquire(&req("n1")).await.unwrap();
    // One cluster would not mix the two ways; here they come one after the other to release both kinds.
    k.server.cluster().add_node("pc", &["10.244.9.0/24"]);
    s.acquire(&req("pc")).await.unwrap();
    s.release("n1").await.unwrap();
    s.release("pc").await.unwrap();
    for n in ["n1", "pc"] {
        let a = k.annotations(n);
        assert!(a.as_object().is_none_or(|m| m.keys().all(|k| !k.starts_with("weft.dev/"))), "{n}: {a}");
    }
    assert!(k.claims().is_empty());
    assert!(s.leases().await.unwrap().items.is_empty());
    s.release("n1").await.unwrap();
    s.release("never-was").await.unwrap();
    assert!(matches!(s.renew(&l, LONG).await, Err(StoreError::LeaseLost(_))));
}
