//! Tenant networks on the Kubernetes store: Networks (`networks.weft.dev`) list and watch as `TenantNetwork`
//! JSON, a malformed one skipped by key; per-node statuses are `status.nodes.<node>`, written by merge patches
//! of the status subresource that touch nothing else, listed and watched as flattened `network/node` keys.
use crate::{next, quiet, Kit};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use weft_store::{ObjectKind, StoreError, WatchEvent};
use weft_store_kube::fake::resources::{by_plural, Resource};
use weft_store_kube::fake::PatchKind;
use weft_store_kube::network::object_of;
use weft_types::tenant::{NetworkNodeStatus, TenantNetwork};

fn networks() -> Resource {
    by_plural("weft.dev", "v1alpha1", "networks").unwrap()
}

fn tenant(name: &str, cidr: &str, vni: u32) -> TenantNetwork {
    serde_json::from_value(json!({"name": name, "cidr": cidr, "vni": vni, "namespaces": {"names": [name]}})).unwrap()
}

fn status(used: u32, reason: Option<&str>) -> NetworkNodeStatus {
    NetworkNodeStatus {
        ready: reason.is_none(),
        subnet: Some("10.50.1.0/24".parse().unwrap()),
        subnet6: None,
        used,
        capacity: 253,
        reason: reason.map(Into::into),
    }
}

fn v<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_list_and_watch_as_tenant_networks_a_malformed_one_skipped() {
    let k = Kit::start().await;
    let c = k.server.cluster();
    let s = k.store().await;
    let blue = tenant("blue", "10.50.0.0/16", 100);
    c.apply(object_of(&blue)).unwrap();
    c.apply(json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Network", "metadata": {"name": "bad"},
                   "spec": {"cidr": "not-a-cidr", "vni": 5}}))
        .unwrap();
    let snap = s.objects(ObjectKind::Network).await.unwrap();
    assert_eq!(snap.items, vec![("blue".to_string(), v(&blue))], "the malformed Network is left out");
    assert_eq!(serde_json::from_value::<TenantNetwork>(snap.items[0].1.clone()).unwrap(), blue);

    let mut w = s.watch_objects(ObjectKind::Network, snap.revision).await.unwrap();
    let red = tenant("red", "10.50.0.0/16", 200);
    c.apply(object_of(&red)).unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(("red".into(), v(&red))));
    let mut grown = red.clone();
    grown.namespaces.names.push("team-b".into());
    c.apply(object_of(&grown)).unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(("red".into(), v(&grown))));
    // A status write is a MODIFIED event of the Network, but not a change of the network.
    s.put_object(ObjectKind::NetworkStatus, "red/n1", &v(&status(1, None))).await.unwrap();
    quiet(&mut w, Duration::from_millis(300)).await;
    // A Network edited into garbage goes away for the consumer, by key; the others stay.
    let mut broken = object_of(&grown);
    broken["spec"]["vni"] = json!("two hundred");
    c.apply(broken).unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("red".into()));
    c.remove("Network", None, "blue").unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("blue".into()));
    c.remove("Network", None, "bad").unwrap();
    quiet(&mut w, Duration::from_millis(300)).await;
    assert!(s.objects(ObjectKind::Network).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_are_merge_patches_of_the_status_subresource() {
    let k = Kit::start().await;
    let c = k.server.cluster();
    let s = k.store().await;
    c.apply(object_of(&tenant("blue", "10.50.0.0/16", 100))).unwrap();
    let before = c.get(networks(), None, "blue").unwrap();
    s.put_object(ObjectKind::NetworkStatus, "blue/n1", &v(&status(0, Some("starting")))).await.unwrap();
    k.store().await.put_object(ObjectKind::NetworkStatus, "blue/n2", &v(&status(4, None))).await.unwrap();
    // The one that had a reason loses it: the patch replaces the node's entry, it does not merge into it.
    s.put_object(ObjectKind::NetworkStatus, "blue/n1", &v(&status(2, None))).await.unwrap();
    let obj = c.get(networks(), None, "blue").unwrap();
    assert_eq!(obj["status"]["nodes"]["n1"], v(&status(2, None)));
    assert_eq!(obj["status"]["nodes"]["n2"], v(&status(4, None)), "another node's entry is untouched");
    assert_eq!((&obj["spec"], &obj["metadata"]["generation"]), (&before["spec"], &json!(1)), "status only");
    let listed = s.objects(ObjectKind::NetworkStatus).await.unwrap();
    assert_eq!(listed.items, vec![("blue/n1".into(), v(&status(2, None))), ("blue/n2".into(), v(&status(4, None)))]);
    // Removing an entry, twice, and for a network that does not exist, succeeds.
    s.delete_object(ObjectKind::NetworkStatus, "blue/n1").await.unwrap();
    s.delete_object(ObjectKind::NetworkStatus, "blue/n1").await.unwrap();
    s.delete_object(ObjectKind::NetworkStatus, "gone/n1").await.unwrap();
    assert!(c.get(networks(), None, "blue").unwrap()["status"]["nodes"].get("n1").is_none());
    // Writing the status of a network that does not exist, with a hostile key, or a value that is not a
    // status is an error that changes nothing.
    match s.put_object(ObjectKind::NetworkStatus, "gone/n1", &v(&status(0, None))).await {
        Err(StoreError::Other(m)) => assert!(m.contains("network gone does not exist"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    for key in ["blue", "blue/n1/status", "../nodes/n1", "Blue/n1"] {
        let e = s.put_object(ObjectKind::NetworkStatus, key, &v(&status(0, None))).await.unwrap_err();
        assert!(e.to_string().contains("NETWORK/NODE"), "{key}: {e}");
    }
    let e = s.put_object(ObjectKind::NetworkStatus, "blue/n3", &json!({"ready": "yes"})).await.unwrap_err();
    assert!(e.to_string().contains("blue/n3"), "{e}");
    // The networks themselves stay read-only through the store (an operator creates them).
    let e = s.put_object(ObjectKind::Network, "blue", &json!({})).await.unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    let after = c.get(networks(), None, "blue").unwrap();
    assert_eq!(after["status"]["nodes"], json!({"n2": v(&status(4, None))}));
    assert_eq!(after["spec"], before["spec"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_sees_create_update_delete_per_node() {
    let k = Kit::start().await;
    let c = k.server.cluster();
    let s = k.store().await;
    c.apply(object_of(&tenant("blue", "10.50.0.0/16", 100))).unwrap();
    s.put_object(ObjectKind::NetworkStatus, "blue/n1", &v(&status(1, None))).await.unwrap();
    let snap = s.objects(ObjectKind::NetworkStatus).await.unwrap();
    assert_eq!(snap.items.len(), 1);
    let mut w = s.watch_objects(ObjectKind::NetworkStatus, snap.revision).await.unwrap();
    // Another agent's store writes n2; n1 changes; then n1 goes: one event per node entry that changed.
    let other = k.store().await;
    other.put_object(ObjectKind::NetworkStatus, "blue/n2", &v(&status(0, None))).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(("blue/n2".into(), v(&status(0, None)))));
    s.put_object(ObjectKind::NetworkStatus, "blue/n1", &v(&status(3, None))).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(("blue/n1".into(), v(&status(3, None)))));
    s.delete_object(ObjectKind::NetworkStatus, "blue/n1").await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("blue/n1".into()));
    // A spec change of the network is not a status change.
    let mut grown = tenant("blue", "10.50.0.0/16", 100);
    grown.namespaces.names.push("x".into());
    c.apply(object_of(&grown)).unwrap();
    quiet(&mut w, Duration::from_millis(300)).await;
    // A new network's statuses arrive as Puts, its deletion takes every node's entry with it.
    c.apply(object_of(&tenant("red", "10.60.0.0/16", 200))).unwrap();
    other.put_object(ObjectKind::NetworkStatus, "red/n2", &v(&status(0, Some("no subnet")))).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(("red/n2".into(), v(&status(0, Some("no subnet"))))));
    c.remove("Network", None, "blue").unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("blue/n2".into()));
    // Malformed entries written behind the store's back are skipped by key: a new one is no event, a shown
    // one turned bad is a Delete of its key; the other entries stay.
    let bad = json!({"status": {"nodes": {"evil": {"ready": "yes"}}}});
    c.patch_status(networks(), None, "red", PatchKind::Merge, &bad).unwrap();
    quiet(&mut w, Duration::from_millis(300)).await;
    other.put_object(ObjectKind::NetworkStatus, "red/n3", &v(&status(0, None))).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(("red/n3".into(), v(&status(0, None)))));
    let bad = json!({"status": {"nodes": {"n2": {"used": -1}}}});
    c.patch_status(networks(), None, "red", PatchKind::Merge, &bad).unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("red/n2".into()));
    let keys: Vec<String> =
        s.objects(ObjectKind::NetworkStatus).await.unwrap().items.into_iter().map(|i| i.0).collect();
    assert_eq!(keys, ["red/n3"]);
    quiet(&mut w, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_watch_from_an_unknown_revision_asks_for_a_relist() {
    let k = Kit::start().await;
    let c = k.server.cluster();
    c.apply(object_of(&tenant("blue", "10.50.0.0/16", 100))).unwrap();
    let s = k.store().await;
    let snap = s.objects(ObjectKind::NetworkStatus).await.unwrap();
    // Another store instance never listed at that revision: it cannot tell what each Network held there.
    let mut w = k.store().await.watch_objects(ObjectKind::NetworkStatus, snap.revision).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Reset);
    assert!(w.next().await.is_none(), "the stream ends after Reset");
    // From revision 0 every entry comes as a Put.
    s.put_object(ObjectKind::NetworkStatus, "blue/n1", &v(&status(1, None))).await.unwrap();
    let mut all = k.store().await.watch_objects(ObjectKind::NetworkStatus, 0).await.unwrap();
    assert_eq!(next(&mut all).await, WatchEvent::Put(("blue/n1".into(), v(&status(1, None)))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_serves_a_status_subresource_as_a_crd_does() {
    let k = Kit::start().await;
    let c = k.server.cluster();
    let mut obj = object_of(&tenant("blue", "10.50.0.0/16", 100));
    obj["status"] = json!({"nodes": {"n1": {"ready": true, "used": 9, "capacity": 9}}});
    let created = c.apply(obj.clone()).unwrap();
    assert!(created.get("status").is_none(), "create ignores status");
    assert_eq!(created["metadata"]["generation"], 1);
    let st = json!({"status": {"nodes": {"n1": {"ready": true, "used": 1, "capacity": 253}}}, "spec": {"vni": 7}});
    let patched = c.patch_status(networks(), None, "blue", PatchKind::Merge, &st).unwrap();
    assert_eq!(patched["spec"]["vni"], 100, "a status patch changes only status");
    assert_eq!(patched["status"]["nodes"]["n1"]["used"], 1);
    // The main resource ignores status and counts spec changes.
    let main = json!({"spec": {"vni": 101}, "status": {"nodes": {}}});
    let p = c.patch(networks(), None, "blue", PatchKind::Merge, &main).unwrap();
    assert_eq!((p["spec"]["vni"].clone(), p["metadata"]["generation"].clone()), (json!(101), json!(2)));
    assert_eq!(p["status"]["nodes"]["n1"]["used"], 1);
    // Over HTTP, with the RBAC resource name of the subresource.
    let url = format!("{}/apis/weft.dev/v1alpha1/networks/blue/status", k.server.http_url());
    let out = std::process::Command::new("curl")
        .args(["-sS", "-X", "PATCH", "-H", "content-type: application/merge-patch+json", "--data-binary"])
        .arg(r#"{"status": {"nodes": {"n2": {"ready": false, "used": 0, "capacity": 0}}}}"#)
        .arg(&url)
        .output()
        .expect("curl");
    let body: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(body["kind"], "Network");
    assert_eq!(body["status"]["nodes"]["n2"]["ready"], false);
    let rec = c.requests();
    assert!(rec.iter().any(|r| r.resource == "networks/status" && r.verb == "patch"), "{rec:?}");
    let nodes_status = format!("{}/api/v1/nodes/x/status", k.server.http_url());
    let out = std::process::Command::new("curl").args(["-sS", &nodes_status]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"code\":404"), "no other subresource is served");
}

/// The creation order of Networks (tenant-network conflicts go to the oldest): `metadata.creationTimestamp`,
/// set by the API server and kept by every update, then the name; the same through a list and a watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_entries_carry_the_creation_order() {
    let k = Kit::start().await;
    let c = k.server.cluster();
    let s = k.store().await;
    let secs = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Timestamps have a resolution of one second: the newer object is created in a later second than the older.
    let next_second = |t0: u64| async move {
        while secs() <= t0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let t0 = secs();
    c.apply(object_of(&tenant("zzz-old", "10.50.0.0/16", 100))).unwrap();
    next_second(t0).await;
    let snap = s.object_entries(ObjectKind::Network).await.unwrap();
    let mut w = s.watch_object_entries(ObjectKind::Network, snap.revision).await.unwrap();
    c.apply(object_of(&tenant("aaa-new", "10.50.0.0/16", 100))).unwrap();
    let WatchEvent::Put(new) = next(&mut w).await else { panic!("expected a put") };
    assert_eq!((new.key.as_str(), &new.value), ("aaa-new", &v(&tenant("aaa-new", "10.50.0.0/16", 100))));
    let items = s.object_entries(ObjectKind::Network).await.unwrap().items;
    assert_eq!(items.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["aaa-new", "zzz-old"], "key order");
    assert!(items[1].created < items[0].created, "zzz-old is older: {items:?}");
    assert_eq!(new.created, items[0].created, "the watch and the list agree");
    assert_eq!(new.created.1, "aaa-new", "ties are broken by name");
    // An update (kubectl apply) keeps the age; a status write is no change at all.
    next_second(secs()).await;
    let mut edited = tenant("zzz-old", "10.50.0.0/16", 100);
    edited.namespaces.names.push("more".into());
    c.apply(object_of(&edited)).unwrap();
    let WatchEvent::Put(upd) = next(&mut w).await else { panic!("expected a put") };
    assert_eq!((upd.key.as_str(), &upd.created), ("zzz-old", &items[1].created));
    s.put_object(ObjectKind::NetworkStatus, "zzz-old/n1", &v(&status(1, None))).await.unwrap();
    quiet(&mut w, Duration::from_millis(300)).await;
    // Other kinds have no creation order here (the trait's default: by key).
    let ns = s.object_entries(ObjectKind::Namespace).await.unwrap().items;
    assert!(ns.iter().all(|e| e.created == weft_store::Created(0, e.key.clone())), "{ns:?}");
}
