//! Desired state of tenant networks: overlapping networks, namespaces claimed twice, nodes that cannot serve,
//! draining, bad store objects; and the pools the CNI keeps.
use super::desired::*;
use super::*;
use std::collections::BTreeMap;
use weft_dataplane::networks::{Rule, TableRouteKind};
use weft_types::{BackendData, Lease, NetworkConfig};

fn cfg() -> NetworkConfig {
    serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16"}"#).unwrap()
}

/// A VXLAN lease of node `node` with index `i` (subnet 10.244.i.0/24, underlay 192.168.0.i).
pub(crate) fn lease(node: &str, i: u8) -> Lease {
    Lease {
        node: node.into(),
        subnet: format!("10.244.{i}.0/24").parse().unwrap(),
        subnet6: None,
        node_ip: format!("192.168.0.{i}").parse().unwrap(),
        backend_data: BackendData::Vxlan { vtep_mac: format!("02:00:00:00:00:{i:02x}") },
        expires_at_ms: 0,
    }
}

fn net(name: &str, cidr: &str, vni: u32, ns: &[&str]) -> TenantNetwork {
    serde_json::from_value(serde_json::json!({"name": name, "cidr": cidr, "vni": vni,
        "namespaces": {"names": ns}}))
    .unwrap()
}

struct World {
    me: Lease,
    peers: Vec<Lease>,
    cfg: NetworkConfig,
    slots: BTreeMap<u32, u8>,
    devices: BTreeMap<u32, u32>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    used: BTreeMap<String, u32>,
}

fn world(nets: &[TenantNetwork]) -> World {
    let slots = nets.iter().enumerate().map(|(i, n)| (n.vni, i as u8 + 1)).collect();
    let devices = nets.iter().enumerate().map(|(i, n)| (n.vni, 10 + i as u32)).collect();
    World {
        me: lease("n1", 1),
        peers: vec![lease("n1", 1), lease("n2", 2), lease("n3", 3)],
        cfg: cfg(),
        slots,
        devices,
        namespaces: BTreeMap::new(),
        used: BTreeMap::new(),
    }
}

fn run(w: &World, nets: &[TenantNetwork], draining: &[TenantNetwork], backend: &str) -> Plan {
    let local = Local { me: &w.me, cfg: &w.cfg, backend, mtu: 1450 };
    plan(
        &local,
        PlanInput {
            nets,
            draining,
            namespaces: &w.namespaces,
            peers: w.peers.iter(),
            slots: &w.slots,
            devices: &w.devices,
            used: &w.used,
        },
    )
}

#[test]
fn overlapping_networks_get_their_own_tables_and_no_node_rule() {
    let nets = [
        net("blue", "10.50.0.0/16", 100, &["a"]),
        net("green", "10.60.0.0/16", 300, &["c"]),
        net("red", "10.50.0.0/16", 200, &["b"]),
    ];
    let w = world(&nets);
    let p = run(&w, &nets, &[], "vxlan");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let (blue, red, green) = (nets[0].ids().table, nets[2].ids().table, nets[1].ids().table);
    for (t, dev) in [(blue, 10), (red, 12)] {
        // Two peers (n2, n3) in each table, through the network's own device, then the unreachable CIDR.
        let vias: Vec<_> = p.state.routes.values().filter(|r| r.table == t).collect();
        assert_eq!(vias.len(), 3, "{vias:?}");
        let peer2 = &p.state.routes[&(t, "10.50.2.0/24".parse().unwrap())];
        assert_eq!(peer2.kind, TableRouteKind::Via { gateway: "10.50.2.0".parse().unwrap(), ifindex: dev });
        assert_eq!(p.state.routes[&(t, "10.50.0.0/16".parse().unwrap())].kind, TableRouteKind::Unreachable);
        assert!(!p.state.rules.iter().any(|r| r.table == t && r.iif.as_deref() == Some("lo")), "overlap: no node rule");
    }
    // green overlaps nothing: the node may reach its own green pods.
    let lo = Rule {
        v6: false,
        priority: RULE_PRIORITY,
        fwmark: None,
        iif: Some("lo".into()),
        dst: Some("10.60.1.0/24".parse().unwrap()),
        table: green,
    };
    assert!(p.state.rules.contains(&lo));
    // Marks per slot, one device rule per network.
    assert!(p.state.rules.iter().any(|r| r.table == red && r.fwmark == Some((3 << 24, 0xff00_0000))));
    assert!(p.state.rules.iter().any(|r| r.table == blue && r.iif.as_deref() == Some("wn100")));
    // Neighbours and FDB per device, with the peer's VTEP MAC.
    assert_eq!(p.state.fdbs.len(), 6);
    assert!(p
        .state
        .fdbs
        .values()
        .any(|f| f.ifindex == 12 && f.dst == "192.168.0.3".parse::<std::net::IpAddr>().unwrap()));
    // Node file: subnets by the node's lease index, namespaces resolved.
    let nf: Vec<_> =
        p.node_networks.iter().map(|n| (n.name.as_str(), n.subnet.to_string(), n.namespaces.clone())).collect();
    assert_eq!(
        nf,
        [
            ("blue", "10.50.1.0/24".to_string(), vec!["a".to_string()]),
            ("green", "10.60.1.0/24".into(), vec!["c".into()]),
            ("red", "10.50.1.0/24".into(), vec!["b".into()])
        ]
    );
    assert!(p.statuses.values().all(|s| s.ready && s.capacity == 253 && s.reason.is_none()));
}

#[test]
fn overlap_with_the_default_cluster_cidr_also_drops_the_node_rule() {
    let nets = [net("blue", "10.244.0.0/16", 100, &["a"])];
    let p = run(&world(&nets), &nets, &[], "vxlan");
    assert!(!p.state.rules.iter().any(|r| r.iif.as_deref() == Some("lo")));
}

#[test]
fn a_namespace_claimed_twice_goes_to_the_oldest_and_is_reported() {
    // Admission order (oldest first): blue, then red.
    let mut blue = net("blue", "10.50.0.0/16", 100, &["shared"]);
    blue.namespaces.match_labels.insert("tenant".into(), "blue".into());
    let red = net("red", "10.70.0.0/16", 200, &["shared", "r"]);
    let nets = [blue, red];
    let mut w = world(&nets);
    w.namespaces.insert("labelled".into(), [("tenant".to_string(), "blue".to_string())].into());
    let p = run(&w, &nets, &[], "vxlan");
    assert_eq!(p.node_networks[0].namespaces, ["labelled", "shared"]);
    assert_eq!(p.node_networks[1].namespaces, ["r"]);
    assert!(p.statuses["red"].reason.as_deref().unwrap().contains("namespace shared is also selected by network blue"));
    assert!(p.statuses["blue"].reason.is_none());
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn nodes_that_cannot_serve_say_why_and_program_nothing() {
    let nets = [net("blue", "10.50.0.0/16", 100, &["a"])];
    let w = world(&nets);
    let p = run(&w, &nets, &[], "wireguard");
    assert!(p.state.is_empty() && p.node_networks.is_empty());
    assert!(!p.statuses["blue"].ready);
    assert!(p.statuses["blue"].reason.as_deref().unwrap().contains("vxlan backend"));
    assert_eq!(p.claimed["blue"], ["a"], "still claimed: the plugin retries its pods instead of the default network");

    // A network too small for this node's index (10.50.0.0/23 has two /24s; n1 has index 1, n3 index 3).
    let small = [net("tiny", "10.50.0.0/23", 100, &["a"])];
    let mut w = world(&small);
    w.me = lease("n3", 3);
    let p = run(&w, &small, &[], "vxlan");
    assert!(p.statuses["tiny"].reason.as_deref().unwrap().contains("no node subnet"));
    assert!(p.state.is_empty());
    // ...and a node inside it skips the peer past its end.
    let w = world(&small);
    let p = run(&w, &small, &[], "vxlan");
    assert_eq!(p.served[0].peers, 0, "a /23 of /24s has indexes 0 and 1 only: n2 and n3 are past its end");

    // A network whose CIDR holds this node's underlay address (192.168.0.1) would capture the node's own tunnel
    // packets (they keep the inner mark): refused on this node; a peer whose underlay address it holds is skipped.
    let under = [net("under", "192.168.0.0/16", 100, &["a"])];
    let p = run(&world(&under), &under, &[], "vxlan");
    assert!(p.statuses["under"].reason.as_deref().unwrap().contains("underlay address 192.168.0.1"), "{p:?}");
    assert!(p.state.is_empty() && p.node_networks.is_empty());
    let mut w = world(&under);
    w.me.node_ip = "172.16.0.1".parse().unwrap();
    let p = run(&w, &under, &[], "vxlan");
    let why = p.statuses["under"].reason.as_deref().unwrap();
    assert!(why.contains("node n1's underlay address 192.168.0.1"), "peers' addresses count too: {why}");
    assert!(p.state.is_empty() && p.node_networks.is_empty());

    // No device (creation failed): not ready, nothing programmed.
    let mut w = world(&nets);
    w.devices.clear();
    let p = run(&w, &nets, &[], "vxlan");
    assert!(p.state.is_empty() && !p.statuses["blue"].ready);
}

#[test]
fn a_draining_network_stays_programmed_but_takes_no_pods() {
    let blue = net("blue", "10.50.0.0/16", 100, &["a"]);
    let mut w = world(std::slice::from_ref(&blue));
    w.used.insert("blue".into(), 2);
    let p = run(&w, &[], std::slice::from_ref(&blue), "vxlan");
    assert!(p.node_networks.is_empty(), "deleted: off the node file at once");
    assert!(p.statuses.is_empty(), "no status for a network the store no longer has");
    assert_eq!(p.served.len(), 1);
    assert!(p.served[0].draining && p.served[0].used == 2);
    assert!(p.state.rules.iter().any(|r| r.table == blue.ids().table), "its pods keep their routes");
    // Drained (the manager stops passing it): nothing of it is desired.
    assert!(run(&w, &[], &[], "vxlan").state.is_empty());
}

#[test]
fn growing_a_network_keeps_subnets_and_changes_only_the_unreachable_route() {
    let small = [net("blue", "10.50.0.0/17", 100, &["a"])];
    let big = [net("blue", "10.50.0.0/16", 100, &["a"])];
    let w = world(&small);
    let a = run(&w, &small, &[], "vxlan");
    let b = run(&w, &big, &[], "vxlan");
    assert_eq!(a.node_networks[0].subnet, b.node_networks[0].subnet);
    let ops = weft_dataplane::networks::diff_networks(&b.state, &a.state);
    assert_eq!(ops.len(), 2, "one unreachable route in, the old one out: {ops:?}");
}

#[test]
fn bad_store_objects_are_skipped_by_key_and_the_rest_admitted() {
    let objs: Vec<weft_store::Object> = vec![
        ("blue".into(), serde_json::json!({"name":"blue","cidr":"10.50.0.0/16","vni":100})),
        ("garbage".into(), serde_json::json!({"name":"garbage","cidr":"nope"})),
        ("liar".into(), serde_json::json!({"name":"other","cidr":"10.51.0.0/16","vni":101})),
        ("evil".into(), serde_json::json!({"name":"evil","cidr":"10.52.0.0/16","vni":102,"table":254})),
        ("copy".into(), serde_json::json!({"name":"copy","cidr":"10.53.0.0/16","vni":100})),
        ("dflt".into(), serde_json::json!({"name":"dflt","cidr":"10.54.0.0/16","vni":1})),
        ("inside".into(), serde_json::json!({"name":"inside","cidr":"10.244.128.0/17","vni":103})),
    ];
    let entries: Vec<weft_store::ObjectEntry> = objs.into_iter().map(weft_store::ObjectEntry::by_key).collect();
    let (ok, errs) = parse_networks(entries.iter(), &cfg());
    assert_eq!(ok.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["blue"]);
    assert_eq!(errs.len(), 6, "{errs:?}");
    for key in ["garbage", "liar", "evil", "copy", "dflt", "inside"] {
        assert!(errs.iter().any(|e| e.contains(key)), "{key}: {errs:?}");
    }
    let ns: Vec<weft_store::Object> = vec![
        ("a".into(), serde_json::json!({"name":"a","labels":{"t":"x"}})),
        ("Bad".into(), serde_json::json!({"name":"Bad_Name"})),
    ];
    let (ok, errs) = parse_namespaces(ns.iter());
    assert_eq!(ok.len(), 1);
    assert!(errs[0].contains("namespace Bad"), "{errs:?}");
}

#[test]
fn pools_count_reservations_only() {
    let dir = std::env::temp_dir().join(format!("weft-pools-{}", std::process::id()));
    let pool = pool_dir(&dir, "blue");
    std::fs::create_dir_all(&pool).unwrap();
    for f in ["10.50.1.2", "10.50.1.3", "fd00::5", "a.k1.10.50.1.2", "tmp.k.9", "lock", "last-reserved-v4"] {
        std::fs::write(pool.join(f), b"{}").unwrap();
    }
    assert_eq!(held(&dir, "blue"), (2, 3));
    assert_eq!(held(&dir, "missing"), (0, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn known_networks_round_trip_and_bad_entries_are_dropped() {
    let dir = std::env::temp_dir().join(format!("weft-known-{}", std::process::id()));
    let nets = vec![net("blue", "10.50.0.0/16", 100, &["a"])];
    store_known(&dir, &nets).unwrap();
    assert_eq!(load_known(&dir), nets);
    std::fs::write(dir.join("networks.json"), br#"[{"name":"x","cidr":"127.0.0.0/16","vni":5}]"#).unwrap();
    assert!(load_known(&dir).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The takeover attack of the security review: `blue` runs (VNI 100, namespace `team-a`); later someone creates
/// `aaa` (sorts first by name) with blue's VNI, and `aab` naming blue's namespace. Decided by name, as before,
/// `aaa` took the VNI and `aab` the namespace from the running network. By the store's creation order, blue
/// keeps both, whatever the order the store lists them in, and the newer objects are refused or lose.
#[test]
fn the_oldest_network_keeps_its_vni_and_namespaces_whatever_the_names() {
    let entry = |key: &str, created: i64, v: serde_json::Value| weft_store::ObjectEntry {
        key: key.into(),
        created: weft_store::Created(created, key.into()),
        value: v,
    };
    let objs = [
        entry("aaa", 7, serde_json::json!({"name":"aaa","cidr":"10.60.0.0/16","vni":100,"namespaces":{"names":["x"]}})),
        entry(
            "aab",
            9,
            serde_json::json!({"name":"aab","cidr":"10.61.0.0/16","vni":300,"namespaces":{"names":["team-a"]}}),
        ),
        entry(
            "blue",
            3,
            serde_json::json!({"name":"blue","cidr":"10.50.0.0/16","vni":100,"namespaces":{"names":["team-a"]}}),
        ),
    ];
    let (ok, errs) = parse_networks(objs.iter(), &cfg());
    assert_eq!(ok.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["blue", "aab"], "oldest first");
    assert!(errs.iter().any(|e| e.contains("aaa") && e.contains("already used by blue")), "{errs:?}");
    let (by_net, conflicts) = resolve_namespaces(&ok, &BTreeMap::new());
    assert_eq!(by_net["blue"], ["team-a"]);
    assert!(by_net["aab"].is_empty());
    assert_eq!(conflicts, [("team-a".to_string(), "aab".to_string(), "blue".to_string())]);
    // The listing order does not matter, only the creation order; equal creation falls back to the key.
    let mut rev = objs.clone();
    rev.reverse();
    assert_eq!(parse_networks(rev.iter(), &cfg()).0, ok);
    let same_age: Vec<_> = objs
        .iter()
        .cloned()
        .map(|mut e| {
            e.created.0 = 0;
            e
        })
        .collect();
    let (ok, _) = parse_networks(same_age.iter(), &cfg());
    assert_eq!(ok[0].name, "aaa", "a tie is broken by key");
}
