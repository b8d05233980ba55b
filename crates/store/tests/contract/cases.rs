//! The contract: every case runs against every store (see `main.rs`). A case only uses the `Store` trait and
//! the harness, never a backend's own API, so passing it means "the agent cannot tell the stores apart".
use crate::harness::{config, next, quiet, req, Harness};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use weft_store::{ObjectKind, StoreError, WatchEvent};

const LONG: Duration = Duration::from_secs(60);

pub async fn config_first_writer_wins(h: Harness) {
    let a = h.store().await;
    assert!(matches!(a.network_config().await, Err(StoreError::NoNetworkConfig)));
    let first = config("10.244.0.0/16", 24);
    let second = config("10.99.0.0/16", 26);
    assert_eq!(a.init_network_config(&first).await.unwrap(), first);
    let b = h.store().await;
    assert_eq!(b.init_network_config(&second).await.unwrap(), first, "the second writer gets the stored config");
    assert_eq!(b.network_config().await.unwrap(), first);
    assert!(matches!(h.store().await.acquire(&req("n", LONG)).await.map(|l| l.subnet.prefix_len()), Ok(24)));
}

pub async fn acquire_without_config_fails(h: Harness) {
    let s = h.store().await;
    assert!(matches!(s.acquire(&req("n1", LONG)).await, Err(StoreError::NoNetworkConfig)));
}

pub async fn acquire_is_inside_the_cidr_and_stable_across_restarts(h: Harness) {
    let cfg = config("10.244.0.0/16", 24);
    let s = h.store().await;
    s.init_network_config(&cfg).await.unwrap();
    let l = s.acquire(&req("n1", LONG)).await.unwrap();
    assert_eq!(l.node, "n1");
    assert_eq!(l.subnet.prefix_len(), 24);
    assert!(cfg.cluster_cidr.contains(&l.subnet));
    let idx = cfg.index_of(l.subnet).expect("a node subnet of the config");
    assert_eq!(l.subnet6, cfg.subnet6(idx), "IPv6 subnet paired by index");
    assert!(l.expires_at_ms > 0);

    // The agent restarts (new store object) with a new address: same subnet, new attributes published.
    let again = h.store().await;
    let mut r = req("n1", LONG);
    r.node_ip = "192.0.2.99".parse().unwrap();
    let l2 = again.acquire(&r).await.unwrap();
    assert_eq!(l2.subnet, l.subnet);
    let snap = again.leases().await.unwrap();
    assert_eq!(snap.items.len(), 1, "one lease per node: {:?}", snap.items);
    assert_eq!(snap.items[0].node_ip.to_string(), "192.0.2.99");
    assert_eq!(snap.items[0].backend_data, r.backend_data);
}

pub async fn hint_is_honoured_when_free(h: Harness) {
    let s = h.store().await;
    s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
    let hint = "10.244.77.0/24".parse().unwrap();
    let mut r = req("n1", LONG);
    r.hint = Some(hint);
    assert_eq!(s.acquire(&r).await.unwrap().subnet, hint);
    r.node = "n2".into();
    let other = s.acquire(&r).await.unwrap().subnet;
    assert_ne!(other, hint, "a taken hint is not handed out twice");
    // A hint outside the cluster CIDR is ignored, not obeyed.
    r.node = "n3".into();
    r.hint = Some("10.1.0.0/24".parse().unwrap());
    let l3 = s.acquire(&r).await.unwrap();
    assert!(l3.subnet != hint && l3.subnet != other && l3.subnet.to_string().starts_with("10.244."));
}

pub async fn fifty_agents_at_once_get_fifty_subnets(h: Harness) {
    h.store().await.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
    let mut stores = Vec::new();
    for _ in 0..50 {
        stores.push(h.store().await);
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(async move { s.acquire(&req(&format!("node-{i}"), LONG)).await }))
        .collect();
    let mut subnets = HashSet::new();
    for t in tasks {
        let l = t.await.unwrap().expect("acquire");
        assert!(subnets.insert(l.subnet), "{} handed out twice", l.subnet);
    }
    eprintln!("50 concurrent acquires (50 store instances): {:?}", t0.elapsed());
    assert_eq!(subnets.len(), 50);
    let listed: HashSet<_> = h.store().await.leases().await.unwrap().items.into_iter().map(|l| l.subnet).collect();
    assert_eq!(listed, subnets);
    // A figure for the record, not an assertion: one agent's restart (acquire of its own lease) in a full pool.
    let s = h.store().await;
    let t0 = Instant::now();
    for i in 0..20 {
        s.acquire(&req(&format!("node-{i}"), LONG)).await.unwrap();
    }
    eprintln!("acquire of an existing lease with 50 leases stored: {:?} each", t0.elapsed() / 20);
}

pub async fn exhaustion_is_an_error_until_a_subnet_returns(h: Harness) {
    let s = h.store().await;
    s.init_network_config(&config("10.9.0.0/29", 30)).await.unwrap();
    let a = s.acquire(&req("a", LONG)).await.unwrap();
    let b = s.acquire(&req("b", LONG)).await.unwrap();
    assert_ne!(a.subnet, b.subnet);
    match s.acquire(&req("c", LONG)).await {
        Err(StoreError::Exhausted(cidr)) => assert_eq!(cidr, "10.9.0.0/29"),
        other => panic!("expected Exhausted, got {other:?}"),
    }
    s.release("a").await.unwrap();
    assert_eq!(s.acquire(&req("c", LONG)).await.unwrap().subnet, a.subnet);
}

pub async fn renew_keeps_the_lease_and_publishes_attributes(h: Harness) {
    let s = h.store().await;
    s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
    let ttl = h.short_ttl();
    let mut l = s.acquire(&req("n1", ttl)).await.unwrap();
    // Renew at about half the TTL for three TTLs: the lease must survive throughout.
    for i in 0..6 {
        h.pass_time(ttl / 2).await;
        l.backend_data = weft_types::BackendData::Vxlan { vtep_mac: format!("02:00:00:00:00:{i:02x}") };
        let before = l.expires_at_ms;
        l = s.renew(&l, ttl).await.unwrap();
        assert!(l.expires_at_ms >= before, "renew moves the expiry forward");
    }
    let snap = s.leases().await.unwrap();
    assert_eq!(snap.items.len(), 1);
    assert_eq!(snap.items[0].backend_data, weft_types::BackendData::Vxlan { vtep_mac: "02:00:00:00:00:05".into() });
    // Renewing with a longer TTL works too (etcd needs a new lease for that).
    l = s.renew(&l, LONG).await.unwrap();
    h.pass_time(ttl * 2).await;
    assert_eq!(s.leases().await.unwrap().items, vec![l.clone()]);
    // A lease the store does not hold cannot be renewed.
    let mut stranger = l.clone();
    stranger.node = "n2".into();
    assert!(matches!(s.renew(&stranger, ttl).await, Err(StoreError::LeaseLost(n)) if n == "n2"));
}

pub async fn unrenewed_lease_expires_and_its_subnet_returns(h: Harness) {
    let s = h.store().await;
    s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
    let l = s.acquire(&req("n1", h.short_ttl())).await.unwrap();
    let keep = s.acquire(&req("n2", LONG)).await.unwrap();
    let snap = s.leases().await.unwrap();
    assert_eq!(snap.items.len(), 2);
    let mut w = s.watch_leases(snap.revision).await.unwrap();
    h.pass_time(h.short_ttl() + Duration::from_millis(500)).await;
    assert_eq!(next(&mut w).await, WatchEvent::Delete("n1".into()));
    assert_eq!(s.leases().await.unwrap().items, vec![keep]);
    assert!(matches!(s.renew(&l, h.short_ttl()).await, Err(StoreError::LeaseLost(_))));
    let mut r = req("n3", LONG);
    r.hint = Some(l.subnet);
    assert_eq!(s.acquire(&r).await.unwrap().subnet, l.subnet, "the expired subnet is free again");
}

pub async fn release_frees_now_and_is_idempotent(h: Harness) {
    let s = h.store().await;
    s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
    let l = s.acquire(&req("n1", LONG)).await.unwrap();
    let snap = s.leases().await.unwrap();
    let mut w = s.watch_leases(snap.revision).await.unwrap();
    s.release("n1").await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("n1".into()));
    assert!(s.leases().await.unwrap().items.is_empty());
    s.release("n1").await.unwrap();
    s.release("never-was").await.unwrap();
    assert!(matches!(s.renew(&l, LONG).await, Err(StoreError::LeaseLost(_))));
    let mut r = req("n2", LONG);
    r.hint = Some(l.subnet);
    assert_eq!(s.acquire(&r).await.unwrap().subnet, l.subnet);
}

pub async fn watch_sees_every_change_after_a_listed_revision(h: Harness) {
    let s = h.store().await;
    s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
    let r0 = s.leases().await.unwrap().revision;
    // Changes between the list and the watch are not lost: the watch starts from the list's revision.
    let a = s.acquire(&req("a", LONG)).await.unwrap();
    let b = h.store().await.acquire(&req("b", LONG)).await.unwrap();
    let mut w = s.watch_leases(r0).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(a.clone()));
    assert_eq!(next(&mut w).await, WatchEvent::Put(b.clone()));
    // Live events arrive on the same stream, from any store instance.
    let c = h.store().await.acquire(&req("c", LONG)).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(c.clone()));
    // Resuming from a later snapshot replays only what came after it.
    let snap = s.leases().await.unwrap();
    assert_eq!(snap.items.len(), 3);
    s.release("a").await.unwrap();
    let mut resumed = s.watch_leases(snap.revision).await.unwrap();
    assert_eq!(next(&mut resumed).await, WatchEvent::Delete("a".into()));
    quiet(&mut resumed, Duration::from_millis(300)).await;
    // Objects do not leak into lease watches.
    s.put_object(ObjectKind::Endpoint, "ns/p", &serde_json::json!({})).await.unwrap();
    quiet(&mut resumed, Duration::from_millis(300)).await;
}

pub async fn objects_put_list_delete_watch(h: Harness) {
    let s = h.store().await;
    let r0 = s.objects(ObjectKind::Endpoint).await.unwrap().revision;
    let mut w = s.watch_objects(ObjectKind::Endpoint, r0).await.unwrap();
    let mut pw = s.watch_objects(ObjectKind::Policy, r0).await.unwrap();
    let a = serde_json::json!({"ips": ["10.244.1.5"], "labels": {"app": "a"}});
    let b = serde_json::json!({"ips": ["10.244.1.6"]});
    let ra = s.put_object(ObjectKind::Endpoint, "default/a", &a).await.unwrap();
    let rb = h.store().await.put_object(ObjectKind::Endpoint, "default/b", &b).await.unwrap();
    assert!(rb > ra && ra > r0, "revisions grow: {r0} {ra} {rb}");
    s.put_object(ObjectKind::Namespace, "default", &serde_json::json!({"labels": {}})).await.unwrap();
    let snap = s.objects(ObjectKind::Endpoint).await.unwrap();
    assert_eq!(snap.items, vec![("default/a".to_string(), a.clone()), ("default/b".to_string(), b.clone())]);
    assert!(snap.revision >= rb);
    assert_eq!(s.objects(ObjectKind::Namespace).await.unwrap().items.len(), 1);
    assert!(s.objects(ObjectKind::Policy).await.unwrap().items.is_empty());
    s.delete_object(ObjectKind::Endpoint, "default/a").await.unwrap();
    s.delete_object(ObjectKind::Endpoint, "default/a").await.unwrap();
    s.delete_object(ObjectKind::Policy, "nope/none").await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(("default/a".into(), a)));
    assert_eq!(next(&mut w).await, WatchEvent::Put(("default/b".into(), b.clone())));
    assert_eq!(next(&mut w).await, WatchEvent::Delete("default/a".into()));
    assert_eq!(s.objects(ObjectKind::Endpoint).await.unwrap().items, vec![("default/b".to_string(), b)]);
    quiet(&mut pw, Duration::from_millis(300)).await;
}

pub async fn compaction_resets_old_watchers(h: Harness) {
    let s = h.store().await;
    let r0 = s.objects(ObjectKind::Policy).await.unwrap().revision;
    for i in 0..5 {
        s.put_object(ObjectKind::Policy, &format!("ns/p{i}"), &serde_json::json!({"i": i})).await.unwrap();
    }
    h.compact().await;
    let mut w = s.watch_objects(ObjectKind::Policy, r0).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Reset);
    use futures::StreamExt;
    assert!(w.next().await.is_none(), "the stream ends after Reset");
    // A watcher from a fresh snapshot works.
    let snap = s.objects(ObjectKind::Policy).await.unwrap();
    assert_eq!(snap.items.len(), 5);
    let mut w = s.watch_objects(ObjectKind::Policy, snap.revision).await.unwrap();
    s.delete_object(ObjectKind::Policy, "ns/p0").await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("ns/p0".into()));
    // History is one for all kinds: a lease watcher from before the compaction resets too.
    let mut lw = s.watch_leases(r0).await.unwrap();
    assert_eq!(next(&mut lw).await, WatchEvent::Reset);
}
