//! The operational drills on WireGuard: drift repaired, a node removed within the lease TTL, the store
//! stopped under traffic, and kube mode (the public key as a Node annotation) against the fake API server.
use crate::kit::{ns_exec, ping, reaches, routes, sh, Lab};
use std::time::{Duration, Instant};
use weft_e2e::{require_root, wait_until};

/// Peers in a node's status (with their tunnel counters).
fn peer_names(lab: &Lab, node: &str) -> Vec<String> {
    let st = lab.status(node);
    st["peers"].as_array().into_iter().flatten().filter_map(|p| p["node"].as_str().map(str::to_string)).collect()
}

#[test]
fn wireguard_lab_drift_repaired_and_a_removed_node_vanishes_within_the_ttl() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&[]);
    let pods = lab.pods();
    let (n1, _) = lab.node(0);
    let subnet2 = lab.status("node2")["subnet"].as_str().unwrap().to_string();
    let subnet3 = lab.status("node3")["subnet"].as_str().unwrap().to_string();
    assert!(routes(&n1, false).contains(&format!("{subnet2} nhid")), "{}", routes(&n1, false));

    // A route into the TUN deleted by hand comes back at the next resync (2 s).
    sh(&n1, &["ip", "route", "del", &subnet2]);
    assert!(wait_until(Duration::from_secs(10), || routes(&n1, false).contains(&subnet2)), "route not repaired");
    assert!(reaches(&pods[0].ns, &pods[2].ip, 10), "traffic not restored after the route came back");

    // The TUN device deleted by hand: the agent starts its tunnel again on a new device, routes follow.
    let ifindex = |ns: &str| sh(ns, &["ip", "-o", "link", "show", "weft.1"]).split(':').next().unwrap().to_string();
    let before = ifindex(&n1);
    sh(&n1, &["ip", "link", "del", "weft.1"]);
    let back = wait_until(Duration::from_secs(15), || {
        ns_exec(&n1, &["ip", "link", "show", "weft.1"]).status.success()
            && routes(&n1, false).contains(&subnet2)
            && routes(&n1, false).contains(&subnet3)
    });
    assert!(back, "device and routes not repaired: {}", routes(&n1, false));
    assert_ne!(ifindex(&n1), before, "the device was not recreated");
    assert!(reaches(&pods[0].ns, &pods[2].ip, 15), "traffic to node2 not restored after the device was recreated");
    assert!(reaches(&pods[4].ns, &pods[1].ip, 15), "traffic from node3 not restored after the device was recreated");
    assert!(!lab.status("node1")["lastDrift"].as_array().unwrap().is_empty(), "drift not reported");

    // node3 dies without goodbye (SIGKILL): its route and its WireGuard peer vanish from node1 within the TTL.
    assert_eq!(peer_names(&lab, "node1").len(), 2);
    let t0 = Instant::now();
    lab.ok(&["lab", "restart", "node3", "--kill"]);
    let gone = wait_until(Duration::from_secs(10), || {
        !routes(&n1, false).contains(&subnet3) && peer_names(&lab, "node1") == ["node2"]
    });
    let took = t0.elapsed();
    println!("node3's route and WireGuard peer left node1 after {took:?} (lease TTL 4 s)");
    assert!(gone, "node3 is still a peer of node1: {:?}, {}", peer_names(&lab, "node1"), routes(&n1, false));
    assert!(took < Duration::from_millis(4000 + 2500), "took {took:?}, longer than TTL + one resync");
    assert!(reaches(&pods[0].ns, &pods[2].ip, 5), "the remaining peer was disturbed");
}

#[test]
fn wireguard_lab_store_outage_keeps_traffic_and_agents_catch_up() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--store", "etcd"]);
    let pods = lab.pods();
    let (n1, _) = lab.node(0);
    lab.ok(&["lab", "etcd", "stop"]);
    // 20 s without a store (five lease TTLs): traffic between all nodes keeps flowing the whole time.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        for (a, b) in [(0, 2), (2, 4), (4, 1)] {
            let ok = ping(&pods[a].ns, &pods[b].ip) || ping(&pods[a].ns, &pods[b].ip);
            assert!(ok, "{} → {} broke during the store outage after {:?}", pods[a].ns, pods[b].ip, t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(lab.status("node1")["storeUp"], false, "agent did not notice the outage");
    assert_eq!(lab.status("node1")["peers"].as_array().map(Vec::len), Some(2), "peers dropped during the outage");
    lab.ok(&["lab", "etcd", "start"]);
    assert!(wait_until(Duration::from_secs(30), || lab.status("node1")["storeUp"] == true), "no reconnect");
    // Catching up: a change made after the outage (node3 leaves) reaches node1.
    let subnet3 = lab.status("node3")["subnet"].as_str().unwrap().to_string();
    lab.ok(&["lab", "restart", "node3", "--kill"]);
    assert!(wait_until(Duration::from_secs(20), || !routes(&n1, false).contains(&subnet3)), "no catch-up");
    assert!(reaches(&pods[0].ns, &pods[2].ip, 5));
}

/// A Node object from the fake API server (in the fabric namespace).
fn node_object(lab: &Lab, node: &str) -> serde_json::Value {
    let fabric = lab.state()["fabricNs"].as_str().unwrap().to_string();
    let url = format!("http://127.0.0.1:16443/api/v1/nodes/{node}");
    serde_json::from_str(&sh(&fabric, &["curl", "-sf", &url])).expect("Node JSON")
}

fn annotated_key(lab: &Lab, node: &str) -> String {
    let n = node_object(lab, node);
    let data = n["metadata"]["annotations"]["weft.dev/backend-data"].as_str().expect("backend-data annotation");
    let v: serde_json::Value = serde_json::from_str(data).expect("annotation JSON");
    assert_eq!(v["type"], "wireguard", "{v}");
    v["publicKey"].as_str().expect("publicKey").to_string()
}

/// Kube mode: agents take leases, peers and pods from the (fake) API server; each node's public key is its
/// Node's `weft.dev/backend-data` annotation, equal to what `wg pubkey` derives from its key file, and the
/// private key is nowhere in the Node. A rotation there moves the annotation and keeps traffic.
#[test]
fn wireguard_lab_kube_mode_key_is_a_node_annotation() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--store", "kube"]);
    for n in ["node1", "node2", "node3"] {
        let private = lab.private_key(n);
        let public = weft_e2e::wg::wg_pubkey(&private);
        assert_eq!(annotated_key(&lab, n), public, "{n}: annotation ≠ wg pubkey of its key file");
        assert!(!node_object(&lab, n).to_string().contains(&private), "{n}'s private key is in its Node");
    }
    let pods = lab.pods();
    let old = annotated_key(&lab, "node2");
    let out = lab.ok(&["wireguard", "rotate-key", "--node", "node2"]);
    assert!(out.contains(&format!("node2: WireGuard key rotated {old} -> ")), "{out}");
    let new = out.trim().rsplit(' ').next().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(20), || annotated_key(&lab, "node2") == new), "annotation not updated");
    assert_eq!(weft_e2e::wg::wg_pubkey(&lab.private_key("node2")), new);
    for (a, b) in [(0, 2), (4, 3), (3, 1)] {
        assert!(reaches(&pods[a].ns, &pods[b].ip, 15), "{} → {} after node2's rotation", pods[a].ns, pods[b].ip);
    }
}
