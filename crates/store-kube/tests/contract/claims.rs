//! Weft's own allocation: a Node's annotated subnet counts only if the claim on it names that Node. A rogue
//! agent (it can patch its own Node, and create claims only naming itself, as deploy/weft.yaml's admission
//! policy allows) cannot take a victim's subnet by annotating it, even from a Node older than the victim.
use crate::{config, next, req, Kit};
use serde_json::json;
use std::sync::Arc;
use weft_store::{admit, LeaseEntry, Rules, Store, WatchEvent};
use weft_store_kube::fake::{resources, PatchKind};
use weft_types::{BackendData, Lease, LeaseRequest};

/// The time as the fake stamps creationTimestamp (RFC 3339, seconds), which sorts as text.
fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let t = weft_store_kube::node::format_time(ms / 1000 * 1000);
    t.trim_end_matches('Z').split('.').next().unwrap().to_string() + "Z"
}

/// A lease request with a VTEP MAC of its own (admission refuses a copied one).
fn own(node: &str, mac: u8) -> LeaseRequest {
    LeaseRequest { backend_data: BackendData::Vxlan { vtep_mac: format!("02:00:00:00:00:{mac:02x}") }, ..req(node) }
}

/// What a rogue agent writes on its own Node: weft's annotations, with any subnet it likes.
fn annotate(k: &Kit, node: &str, subnet: &str, mac: u8) {
    let nodes = resources::by_plural("", "v1", "nodes").unwrap();
    let data = json!({"type": "vxlan", "vtepMac": format!("02:00:00:00:00:{mac:02x}")}).to_string();
    let patch = json!({"metadata": {"annotations": {"weft.dev/node-ip": "192.0.2.66", "weft.dev/subnet": subnet,
        "weft.dev/subnet-source": "weft", "weft.dev/backend-data": data}}});
    k.server.cluster().patch(nodes, None, node, PatchKind::Merge, &patch).unwrap();
}

/// A claim created through the API by `holder`'s agent (the admission policy lets it name only itself).
fn claim(k: &Kit, subnet: &str, holder: &str) {
    let name = format!("subnet-{}", subnet.replace(['.', '/'], "-"));
    k.server
        .cluster()
        .apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "weft-system", "labels": {"weft.dev/subnet-claim": "true"},
                "annotations": {"weft.dev/subnet": subnet}},
            "spec": {"holderIdentity": holder}}))
        .unwrap();
}

fn entry<'a>(entries: &'a [LeaseEntry], key: &str) -> &'a LeaseEntry {
    entries.iter().find(|e| e.key == key).unwrap_or_else(|| panic!("no entry {key} in {entries:?}"))
}

/// What the third node's agent programs: admission of the store's entries against its own lease.
fn peers(s: &[LeaseEntry], me: &Lease) -> (Vec<String>, Vec<(String, String)>) {
    let cfg = config("10.244.0.0/16", 24);
    let a = admit(Rules::new(&cfg, Some(me)), s);
    let admitted = a.admitted.iter().map(|(k, _)| k.clone()).collect();
    (admitted, a.refused.iter().map(|r| (r.key.clone(), r.reason.to_string())).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_node_older_than_its_victim_cannot_take_the_victims_subnet() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    // "rogue" registers first (and sorts first by name, should the timestamps fall in one second).
    k.nodes(&["rogue"]);
    k.nodes(&["victim", "third"]);
    let victim = k.store().await.acquire(&own("victim", 1)).await.unwrap();
    let third_store = k.store().await;
    let third = third_store.acquire(&own("third", 3)).await.unwrap();
    let before = third_store.lease_entries().await.unwrap();
    let mut w = third_store.watch_lease_entries(before.revision).await.unwrap();
    let mut leases = third_store.watch_leases(before.revision).await.unwrap();

    annotate(&k, "rogue", &victim.subnet.to_string(), 66);
    // The watch delivers the rogue Node as a refused entry, with the reason.
    let WatchEvent::Put(e) = next(&mut w).await else { panic!("expected a Put") };
    assert_eq!(e.key, "rogue");
    let why = e.lease.unwrap_err();
    assert!(why.contains(&format!("weft.dev/subnet {} is not backed by its claim", victim.subnet)), "{why}");
    assert!(why.contains("is held by \"victim\""), "{why}");

    let listed = third_store.lease_entries().await.unwrap().items;
    assert!(entry(&listed, "rogue").created < entry(&listed, "victim").created, "the rogue Node is older");
    let (mut admitted, refused) = peers(&listed, &third);
    admitted.sort();
    assert_eq!(admitted, vec!["third".to_string(), "victim".to_string()], "{refused:?}");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, "rogue");
    assert!(refused[0].1.contains("held by \"victim\""), "{refused:?}");
    // A plain lease list and watch leave it out too.
    let nodes: Vec<String> = third_store.leases().await.unwrap().items.into_iter().map(|l| l.node).collect();
    assert_eq!(nodes, vec!["third".to_string(), "victim".to_string()]);

    // The victim's renewals go on being seen: the rest keep working.
    let mut moved = victim.clone();
    moved.node_ip = "192.0.2.9".parse().unwrap();
    let renewed = k.store().await.renew(&moved, crate::LONG).await.unwrap();
    assert_eq!(next(&mut leases).await, WatchEvent::Put(renewed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotation_without_a_claim_is_refused_and_a_second_claim_backs_nothing() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["greedy", "loner", "honest"]);
    let s = k.store().await;
    let honest = s.acquire(&own("honest", 1)).await.unwrap();
    annotate(&k, "loner", "10.244.200.0/24", 2);
    let entries = s.lease_entries().await.unwrap().items;
    let why = entry(&entries, "loner").lease.clone().unwrap_err();
    assert!(why.contains("there is no claim weft-system/subnet-10-244-200-0-24"), "{why}");
    assert!(entry(&entries, "honest").lease.is_ok());

    // A node holding a claim already may create more (they name itself), but only its oldest counts.
    let greedy = k.store().await.acquire(&own("greedy", 3)).await.unwrap();
    // Claims are ordered by creationTimestamp (seconds), then name: let the second claim be a second younger.
    let leases = resources::by_plural("coordination.k8s.io", "v1", "leases").unwrap();
    let first = format!("subnet-{}", greedy.subnet.to_string().replace(['.', '/'], "-"));
    let created = k.server.cluster().get(leases, Some("weft-system"), &first).unwrap()["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while now_rfc3339() <= created {
        assert!(std::time::Instant::now() < deadline, "the clock does not move");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    claim(&k, "10.244.201.0/24", "greedy");
    annotate(&k, "greedy", "10.244.201.0/24", 3);
    let entries = s.lease_entries().await.unwrap().items;
    let why = entry(&entries, "greedy").lease.clone().unwrap_err();
    assert!(why.contains(&format!("only its oldest, {first}, counts")), "{why}");
    let (admitted, _) = peers(&entries, &honest);
    assert_eq!(admitted, vec!["honest".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_event_re_judges_the_nodes_it_backed() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["a", "b"]);
    let s = k.store().await;
    let a = k.store().await.acquire(&own("a", 1)).await.unwrap();
    let snap = s.lease_entries().await.unwrap();
    assert!(entry(&snap.items, "a").lease.is_ok());
    let mut w = s.watch_lease_entries(snap.revision).await.unwrap();
    // a's agent deletes its claim but keeps its annotation (so another node could claim the subnet).
    let name = format!("subnet-{}", a.subnet.to_string().replace(['.', '/'], "-"));
    k.server.cluster().remove("Lease", Some("weft-system"), &name).unwrap();
    let WatchEvent::Put(e) = next(&mut w).await else { panic!("expected a Put") };
    assert_eq!(e.key, "a");
    assert!(e.lease.unwrap_err().contains("there is no claim"));
    // b claims it: b's lease counts, a's stays refused.
    claim(&k, &a.subnet.to_string(), "b");
    annotate(&k, "b", &a.subnet.to_string(), 2);
    // (a is judged again on the new claim: still refused, now because b holds it.)
    let b = loop {
        let WatchEvent::Put(e) = next(&mut w).await else { panic!("expected a Put") };
        if e.key == "b" {
            break e;
        }
        assert!(e.lease.is_err(), "{e:?}");
    };
    assert_eq!(b.lease.unwrap().subnet, a.subnet);
    let entries = s.lease_entries().await.unwrap().items;
    assert!(entry(&entries, "a").lease.as_ref().unwrap_err().contains("held by \"b\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_cluster_is_unaffected() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    let names = ["n1", "n2", "n3", "n4", "n5"];
    k.nodes(&names);
    let watcher: Arc<dyn Store> = k.store().await;
    let r0 = watcher.lease_entries().await.unwrap().revision;
    let mut w = watcher.watch_lease_entries(r0).await.unwrap();
    let mut leases = Vec::new();
    for (i, n) in names.iter().enumerate() {
        leases.push(k.store().await.acquire(&own(n, i as u8 + 1)).await.unwrap());
    }
    for l in &leases {
        let WatchEvent::Put(e) = next(&mut w).await else { panic!("expected a Put") };
        assert_eq!(e.lease.as_ref(), Ok(l), "{e:?}");
    }
    let entries = watcher.lease_entries().await.unwrap().items;
    assert!(entries.iter().all(|e| e.lease.is_ok()), "{entries:?}");
    let (admitted, refused) = peers(&entries, &leases[0]);
    assert_eq!(admitted.len(), names.len());
    assert!(refused.is_empty(), "{refused:?}");
    // Moving to another subnet (lease lost, acquired again) leaves one claim that backs the new subnet.
    let holder = &leases[1].node;
    let gone = format!("subnet-{}", leases[1].subnet.to_string().replace(['.', '/'], "-"));
    k.server.cluster().remove("Lease", Some("weft-system"), &gone).unwrap();
    let entries = watcher.lease_entries().await.unwrap().items;
    assert!(entry(&entries, holder).lease.is_err());
    // Its agent learns it at the next renewal (peers refuse its lease now), and acquires again.
    let renewed = k.store().await.renew(&leases[1], crate::LONG).await;
    assert!(matches!(renewed, Err(weft_store::StoreError::LeaseLost(ref n)) if n == holder), "{renewed:?}");
    let again = k.store().await.acquire(&own(holder, 9)).await.unwrap();
    let entries = watcher.lease_entries().await.unwrap().items;
    assert_eq!(entry(&entries, holder).lease.as_ref(), Ok(&again));
    assert_eq!(k.claims().iter().filter(|(_, h)| h == holder).count(), 1);
}
