//! Tenant networks (`ObjectKind::Network`) and their per-node status (`ObjectKind::NetworkStatus`) are plain
//! objects to the store: the same put/list/watch/delete contract, keys with and without '/', kept apart from
//! each other and from the other kinds, and a row that does not decode skipped by its key.
use crate::harness::{next, quiet, Harness};
use serde_json::{json, Value};
use std::time::Duration;
use weft_store::{ObjectKind, WatchEvent};
use weft_types::tenant::{NetworkNodeStatus, TenantNetwork};

fn blue() -> TenantNetwork {
    serde_json::from_value(json!({"name": "blue", "cidr": "10.50.0.0/16", "vni": 100,
        "cidr6": "fd00:50::/48", "namespaces": {"names": ["team-a"], "matchLabels": {"tenant": "blue"}}}))
    .unwrap()
}

fn status(used: u32) -> NetworkNodeStatus {
    NetworkNodeStatus {
        ready: true,
        subnet: Some("10.50.1.0/24".parse().unwrap()),
        subnet6: None,
        used,
        capacity: 253,
        reason: None,
    }
}

fn v<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap()
}

pub async fn networks_round_trip_as_tenant_networks(h: Harness) {
    let s = h.store().await;
    let net = blue();
    s.put_object(ObjectKind::Network, "blue", &v(&net)).await.unwrap();
    s.put_object(ObjectKind::NetworkStatus, "blue/n1", &v(&status(3))).await.unwrap();
    s.put_object(ObjectKind::NetworkStatus, "blue/n2", &v(&status(0))).await.unwrap();
    // Read back by another instance, decoded into the types the agent and the CLI use.
    let other = h.store().await;
    let nets = other.objects(ObjectKind::Network).await.unwrap();
    assert_eq!(nets.items.len(), 1);
    assert_eq!(nets.items[0].0, "blue");
    assert_eq!(serde_json::from_value::<TenantNetwork>(nets.items[0].1.clone()).unwrap(), net);
    let st = other.objects(ObjectKind::NetworkStatus).await.unwrap();
    let keys: Vec<&str> = st.items.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["blue/n1", "blue/n2"]);
    assert_eq!(serde_json::from_value::<NetworkNodeStatus>(st.items[0].1.clone()).unwrap(), status(3));
    // The kinds stay apart: "networks" is not a prefix of "network-status" in any backend's layout.
    assert!(other.objects(ObjectKind::Namespace).await.unwrap().items.is_empty());
    s.delete_object(ObjectKind::Network, "blue").await.unwrap();
    assert!(other.objects(ObjectKind::Network).await.unwrap().items.is_empty());
    assert_eq!(other.objects(ObjectKind::NetworkStatus).await.unwrap().items.len(), 2, "status is its own kind");
    s.delete_object(ObjectKind::NetworkStatus, "blue/n1").await.unwrap();
    s.delete_object(ObjectKind::NetworkStatus, "blue/n1").await.unwrap();
    let left: Vec<String> =
        other.objects(ObjectKind::NetworkStatus).await.unwrap().items.into_iter().map(|(k, _)| k).collect();
    assert_eq!(left, ["blue/n2"]);
}

pub async fn network_watches_see_create_update_delete(h: Harness) {
    let s = h.store().await;
    let r0 = s.objects(ObjectKind::Network).await.unwrap().revision;
    let mut nw = s.watch_objects(ObjectKind::Network, r0).await.unwrap();
    let mut sw = s.watch_objects(ObjectKind::NetworkStatus, r0).await.unwrap();
    let mut net = blue();
    s.put_object(ObjectKind::Network, "blue", &v(&net)).await.unwrap();
    assert_eq!(next(&mut nw).await, WatchEvent::Put(("blue".into(), v(&net))));
    net.namespaces.names.push("team-b".into());
    h.store().await.put_object(ObjectKind::Network, "blue", &v(&net)).await.unwrap();
    assert_eq!(next(&mut nw).await, WatchEvent::Put(("blue".into(), v(&net))));
    s.put_object(ObjectKind::NetworkStatus, "blue/n1", &v(&status(0))).await.unwrap();
    s.put_object(ObjectKind::NetworkStatus, "blue/n1", &v(&status(2))).await.unwrap();
    assert_eq!(next(&mut sw).await, WatchEvent::Put(("blue/n1".into(), v(&status(0)))));
    assert_eq!(next(&mut sw).await, WatchEvent::Put(("blue/n1".into(), v(&status(2)))));
    s.delete_object(ObjectKind::NetworkStatus, "blue/n1").await.unwrap();
    s.delete_object(ObjectKind::Network, "blue").await.unwrap();
    assert_eq!(next(&mut sw).await, WatchEvent::Delete("blue/n1".into()));
    assert_eq!(next(&mut nw).await, WatchEvent::Delete("blue".into()));
    // Each watch saw only its own kind.
    quiet(&mut nw, Duration::from_millis(300)).await;
    quiet(&mut sw, Duration::from_millis(100)).await;
}

pub async fn undecodable_network_rows_are_skipped_by_key(h: Harness) {
    let s = h.store().await;
    s.put_object(ObjectKind::Network, "blue", &v(&blue())).await.unwrap();
    s.put_object(ObjectKind::NetworkStatus, "blue/n1", &v(&status(1))).await.unwrap();
    let r0 = s.objects(ObjectKind::Network).await.unwrap().revision;
    let mut nw = s.watch_objects(ObjectKind::Network, r0).await.unwrap();
    let mut sw = s.watch_objects(ObjectKind::NetworkStatus, r0).await.unwrap();
    h.write_raw_object(ObjectKind::Network, "red", "{\"name\": \"red\", \"cidr\": ").await;
    h.write_raw_object(ObjectKind::NetworkStatus, "blue/evil", "not json").await;
    let nets = s.objects(ObjectKind::Network).await.unwrap();
    assert_eq!(nets.items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["blue"]);
    let st = s.objects(ObjectKind::NetworkStatus).await.unwrap();
    assert_eq!(st.items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["blue/n1"]);
    assert_eq!(next(&mut nw).await, WatchEvent::Delete("red".into()));
    assert_eq!(next(&mut sw).await, WatchEvent::Delete("blue/evil".into()));
    // The watches go on after the bad rows.
    s.put_object(ObjectKind::NetworkStatus, "blue/n2", &v(&status(0))).await.unwrap();
    assert_eq!(next(&mut sw).await, WatchEvent::Put(("blue/n2".into(), v(&status(0)))));
}

/// Tenant-network conflicts go to the oldest object (a newer one must not take a running network's VNI or
/// namespaces by a name that sorts first), so the store gives each object its creation order: the same through
/// a list and a watch, kept by an update, renewed only by a delete and a new create; in key order it says
/// nothing about age.
pub async fn object_entries_carry_the_creation_order(h: Harness) {
    let s = h.store().await;
    let net = |name: &str, vni: u32| v(&json!({"name": name, "cidr": "10.50.0.0/16", "vni": vni}));
    s.put_object(ObjectKind::Network, "zzz-old", &net("zzz-old", 100)).await.unwrap();
    s.put_object(ObjectKind::Network, "mmm", &net("mmm", 200)).await.unwrap();
    let snap = s.object_entries(ObjectKind::Network).await.unwrap();
    let mut w = s.watch_object_entries(ObjectKind::Network, snap.revision).await.unwrap();
    s.put_object(ObjectKind::Network, "aaa-new", &net("aaa-new", 100)).await.unwrap();
    let WatchEvent::Put(new) = next(&mut w).await else { panic!("expected a put") };
    assert_eq!((new.key.as_str(), &new.value), ("aaa-new", &net("aaa-new", 100)));

    let snap = h.store().await.object_entries(ObjectKind::Network).await.unwrap();
    let keys: Vec<&str> = snap.items.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["aaa-new", "mmm", "zzz-old"], "listed in key order, as objects()");
    let created = |k: &str| snap.items.iter().find(|e| e.key == k).unwrap().created.clone();
    assert!(created("zzz-old") < created("mmm") && created("mmm") < created("aaa-new"), "{:?}", snap.items);
    assert_eq!(new.created, created("aaa-new"), "the watch and the list agree");
    let objects = s.objects(ObjectKind::Network).await.unwrap().items;
    assert_eq!(objects, snap.items.iter().cloned().map(|e| e.into_object()).collect::<Vec<_>>());

    // An update keeps the age (a running network edited stays the oldest); a re-create is the youngest.
    s.put_object(ObjectKind::Network, "zzz-old", &net("zzz-old", 101)).await.unwrap();
    let WatchEvent::Put(upd) = next(&mut w).await else { panic!("expected a put") };
    assert_eq!((upd.key.as_str(), upd.created.clone()), ("zzz-old", created("zzz-old")));
    s.delete_object(ObjectKind::Network, "mmm").await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("mmm".into()));
    s.put_object(ObjectKind::Network, "mmm", &net("mmm", 200)).await.unwrap();
    let WatchEvent::Put(again) = next(&mut w).await else { panic!("expected a put") };
    assert!(again.created > created("aaa-new"), "re-created: {again:?}");
    let after = s.object_entries(ObjectKind::Network).await.unwrap().items;
    let order = |items: &[weft_store::ObjectEntry]| {
        let mut v: Vec<_> = items.iter().map(|e| (e.created.clone(), e.key.clone())).collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect::<Vec<_>>()
    };
    assert_eq!(order(&after), ["zzz-old", "aaa-new", "mmm"]);
    quiet(&mut w, Duration::from_millis(300)).await;
}
