//! Hostile or broken rows: one undecodable lease or object must not make a list or a watch fail, and every
//! lease reaches the consumer with what admission needs (its key, its creation order).
use crate::harness::{config, next, req, Harness};
use std::time::Duration;
use weft_store::{admit, ObjectKind, Reason, Rules, WatchEvent};

const LONG: Duration = Duration::from_secs(60);

pub async fn undecodable_rows_are_skipped_and_named(h: Harness) {
    let s = h.store().await;
    let cfg = config("10.244.0.0/16", 24);
    s.init_network_config(&cfg).await.unwrap();
    let good = s.acquire(&req("n1", LONG)).await.unwrap();
    s.put_object(ObjectKind::Policy, "ns/good", &serde_json::json!({"a": 1})).await.unwrap();
    let r0 = s.leases().await.unwrap().revision;
    let mut leases = s.watch_leases(r0).await.unwrap();
    let mut entries = s.watch_lease_entries(r0).await.unwrap();
    let mut objects = s.watch_objects(ObjectKind::Policy, r0).await.unwrap();

    h.write_raw_lease("10.244.200.0/24", "bad", "not json").await;
    h.write_raw_object(ObjectKind::Policy, "ns/bad", "{truncated").await;

    // Lists skip the bad row and keep the rest.
    assert_eq!(s.leases().await.unwrap().items, vec![good.clone()]);
    let pols = s.objects(ObjectKind::Policy).await.unwrap();
    assert_eq!(pols.items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["ns/good"]);
    // Entries show it, as undecodable, under its key; admission refuses it and admits the rest.
    let listed = s.lease_entries().await.unwrap();
    assert_eq!(listed.items.len(), 2, "{:?}", listed.items);
    let bad = listed.items.iter().find(|e| e.lease.is_err()).expect("the bad row is an entry");
    assert_eq!(bad.key_subnet, Some("10.244.200.0/24".parse().unwrap()));
    let a = admit(Rules::new(&cfg, None), &listed.items);
    assert_eq!(a.admitted.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(), vec![good.clone()]);
    assert_eq!(a.refused.len(), 1);
    assert_eq!(a.refused[0].key, bad.key);
    assert!(matches!(a.refused[0].reason, Reason::Undecodable(_)), "{:?}", a.refused[0]);

    // Watches go on: the lease watch asks for a relist (it cannot name the node), the entry watch delivers the
    // bad entry, the object watch drops the key.
    assert_eq!(next(&mut leases).await, WatchEvent::Reset);
    match next(&mut entries).await {
        WatchEvent::Put(e) => assert!(e.lease.is_err() && e.key == bad.key, "{e:?}"),
        other => panic!("expected the bad entry, got {other:?}"),
    }
    assert_eq!(next(&mut objects).await, WatchEvent::Delete("ns/bad".into()));
    let n2 = s.acquire(&req("n2", LONG)).await.unwrap();
    assert_ne!(n2.subnet, bad.key_subnet.unwrap(), "a bad row still occupies its subnet");
    match next(&mut entries).await {
        WatchEvent::Put(e) => assert_eq!(e.lease.as_ref().ok(), Some(&n2)),
        other => panic!("expected n2, got {other:?}"),
    }
    // A release (the owner's own operation) of a node with a bad row next to it still works.
    s.release("n1").await.unwrap();
    assert_eq!(s.leases().await.unwrap().items, vec![n2]);
}

pub async fn entries_carry_key_and_creation_order(h: Harness) {
    let s = h.store().await;
    let cfg = config("10.244.0.0/16", 24);
    s.init_network_config(&cfg).await.unwrap();
    let mut hinted = req("n1", LONG);
    hinted.hint = Some("10.244.9.0/24".parse().unwrap());
    let l1 = s.acquire(&hinted).await.unwrap();
    let l2 = s.acquire(&req("n2", LONG)).await.unwrap();
    s.renew(&l1, LONG).await.unwrap();
    let snap = s.lease_entries().await.unwrap();
    let mut e = snap.items.clone();
    e.sort_by(|a, b| a.created.cmp(&b.created));
    let order: Vec<_> = e.iter().map(|e| e.lease.as_ref().unwrap().node.as_str()).collect();
    assert_eq!(order, ["n1", "n2"], "creation order, not subnet order, and a renewal keeps it");
    for e in &snap.items {
        let l = e.lease.as_ref().unwrap();
        assert!(e.key_subnet.is_none_or(|k| k == l.subnet), "{e:?}");
        assert!(e.key_node.as_ref().is_none_or(|k| *k == l.node), "{e:?}");
    }
    let a = admit(Rules::new(&cfg, None), &snap.items);
    assert!(a.refused.is_empty(), "{:?}", a.refused);

    let mut w = s.watch_lease_entries(snap.revision).await.unwrap();
    let k2 = snap.items.iter().find(|e| e.lease.as_ref().unwrap().node == "n2").unwrap().key.clone();
    s.release("n2").await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete(k2));
    let _ = l2;
}

pub async fn a_value_claiming_another_subnet_is_refused(h: Harness) {
    let s = h.store().await;
    let cfg = config("10.244.0.0/16", 24);
    s.init_network_config(&cfg).await.unwrap();
    let victim = s.acquire(&req("victim", LONG)).await.unwrap();
    // The hijack of the issue: a free subnet's key whose value claims the victim's subnet.
    let mut rogue = victim.clone();
    rogue.node = "rogue".into();
    rogue.node_ip = "192.0.2.66".parse().unwrap();
    h.write_raw_lease("10.244.250.0/24", "rogue", &serde_json::to_string(&rogue).unwrap()).await;
    let snap = s.lease_entries().await.unwrap();
    let a = admit(Rules::new(&cfg, None), &snap.items);
    assert_eq!(a.admitted.iter().map(|(_, l)| l.node.as_str()).collect::<Vec<_>>(), ["victim"]);
    assert!(matches!(a.refused[0].reason, Reason::SubnetNotKey { .. }), "{:?}", a.refused);
}
