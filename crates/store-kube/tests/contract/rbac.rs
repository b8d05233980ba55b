//! The calls the store makes are exactly `API_CALLS`: every store operation is driven against the fake, which
//! records each request, and the set of (group, resource, verb, namespace) it saw must equal the list. With
//! the manifest test (`API_CALLS` equals the ClusterRole and Role rules) this proves RBAC grants exactly what
//! the code calls.
use crate::{config, next, req, Kit};
use std::collections::BTreeSet;
use weft_store::ObjectKind;
use weft_store_kube::{ApiCall, API_CALLS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_calls_exactly_what_api_calls_declares() {
    let k = Kit::start().await;
    let s = k.store().await;
    s.init_network_config(&config("10.9.0.0/29", 30)).await.unwrap();
    s.network_config().await.unwrap();
    k.nodes(&["a", "b", "c"]);
    let a = s.acquire(&req("a")).await.unwrap();
    let mut moved = a.clone();
    moved.node_ip = "192.0.2.9".parse().unwrap();
    s.renew(&moved, crate::LONG).await.unwrap();
    // A deleted node's claim is freed by the next agent that needs a subnet (a delete with a precondition).
    k.server.cluster().remove("Node", None, "a").unwrap();
    s.acquire(&req("b")).await.unwrap();
    s.release("b").await.unwrap();
    let snap = s.leases().await.unwrap();
    let mut w = s.watch_leases(snap.revision).await.unwrap();
    // A Node annotating a subnet without a claim: the watch looks the claim up (a get) before refusing it.
    k.nodes(&["r"]);
    let nodes = weft_store_kube::fake::resources::by_plural("", "v1", "nodes").unwrap();
    let rogue = serde_json::json!({"metadata": {"annotations": {
        "weft.dev/node-ip": "192.0.2.99", "weft.dev/subnet": "10.99.0.0/30"}}});
    k.server.cluster().patch(nodes, None, "r", weft_store_kube::fake::PatchKind::Merge, &rogue).unwrap();
    // Events of one watch come in order: c's lease comes after r was judged.
    s.acquire(&req("c")).await.unwrap();
    assert_eq!(next(&mut w).await, weft_store::WatchEvent::Put(s.leases().await.unwrap().items[0].clone()));
    // The controller manager's podCIDR path (a cluster uses one way or the other: this comes last).
    k.server.cluster().add_node("pc", &["10.9.0.4/30"]);
    s.acquire(&req("pc")).await.unwrap();
    // Tenant networks: list and watch them and their statuses, publish and remove this node's status.
    let blue = serde_json::json!({"name": "blue", "cidr": "10.50.0.0/16", "vni": 100});
    k.server.cluster().apply(weft_store_kube::network::object_of(&serde_json::from_value(blue).unwrap())).unwrap();
    let st = serde_json::json!({"ready": true, "used": 0, "capacity": 253});
    s.put_object(ObjectKind::NetworkStatus, "blue/pc", &st).await.unwrap();
    s.delete_object(ObjectKind::NetworkStatus, "blue/pc").await.unwrap();
    for kind in [
        ObjectKind::Endpoint,
        ObjectKind::Namespace,
        ObjectKind::Policy,
        ObjectKind::Network,
        ObjectKind::NetworkStatus,
    ] {
        let snap = s.objects(kind).await.unwrap();
        drop(s.watch_objects(kind, snap.revision).await.unwrap());
    }
    let seen: BTreeSet<(String, String, String, Option<String>)> =
        k.server.cluster().requests().into_iter().map(|r| (r.group, r.resource, r.verb, r.namespace)).collect();
    let declared: BTreeSet<(String, String, String, Option<String>)> = API_CALLS
        .iter()
        .map(|c: &ApiCall| (c.group.into(), c.resource.into(), c.verb.into(), c.namespace.map(Into::into)))
        .collect();
    assert_eq!(seen, declared, "requests the fake saw vs API_CALLS");
}
