//! End to end: tenant networks in real `weftctl lab` clusters (namespaces as nodes and pods, real agents, the
//! real plugin, real VXLAN, routing rules and nftables), driven as an operator would.
//!
//! - the isolation matrix: three networks (two with the same CIDR) and the default network × three nodes,
//!   every ordered pod pair over TCP, UDP and ICMP: all inside a network, none across; then with forged source
//!   addresses, then with policies that allow every ipBlock (`probe.rs` says how an answer is attributed when
//!   addresses overlap);
//! - masquerade to a host outside the cluster from every network, also with equal tuples from two overlapping
//!   networks at once;
//! - network lifecycle: refusals, deletion refused while pods hold addresses, nothing left after it;
//! - an agent restart keeps every network's flows;
//! - the upstream-style NetworkPolicy truth table with its namespaces on a tenant network (`truth.rs`);
//! - kube mode: networks as `networks.weft.dev` objects through the fake API server.
#[path = "networks_lab/kit.rs"]
mod kit;
#[path = "networks_lab/probe.rs"]
mod probe;
#[path = "networks_lab/truth.rs"]
mod truth;
// tests/policy's truth-table lab, model and scenarios, reused whole (only part of their API is used here).
#[allow(dead_code)]
#[path = "policy/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "policy/matrix.rs"]
mod matrix;
#[allow(dead_code)]
#[path = "policy/model.rs"]
mod model;
#[allow(dead_code)]
#[path = "policy/scenarios.rs"]
mod scenarios;
#[path = "policy/scenarios_changes.rs"]
mod scenarios_changes;
#[path = "policy/scenarios_traffic.rs"]
mod scenarios_traffic;

use kit::{counter, nft, ns_exec, text, Lab};
use probe::{send_forged, send_plain, Probes, CONTROL_PORT, SPOOF_PORT};
use std::process::{Command, Stdio};
use std::time::Duration;
use weft_e2e::{require_root, unique, wait_until, Netns};

const THREE_NETWORKS: [&str; 6] = [
    "--network",
    "blue:10.50.0.0/16:100:blue-a",
    "--network",
    "red:10.60.0.0/16:101:red-a",
    "--network",
    "green:10.60.0.0/16:102:green-a",
];

fn assert_clean(phase: &str, s: &probe::Summary) {
    println!("{phase}: {} cells inside networks, {} across, {} wrong", s.inside, s.across, s.failures.len());
    assert!(s.failures.is_empty(), "{phase}: {} wrong cells:\n{}", s.failures.len(), s.failures.join("\n"));
}

#[test]
fn isolation_matrix_three_networks_overlapping_forged_sources_and_ipblocks() {
    if !require_root() {
        return;
    }
    let args = [&["--nodes", "3", "--pods-per-node", "1"][..], &THREE_NETWORKS].concat();
    let lab = Lab::up("ni", &args);
    // A second green pod per node: its address (.3) is free in red, so some green cells are unambiguous.
    for n in 1..=3 {
        lab.ok(&["lab", "pod-add", "--node", &format!("node{n}"), "--pod", &format!("green-a/extra{n}")]);
    }
    let pods = lab.pods();
    assert_eq!(pods.len(), 15);
    for p in &pods {
        let want = match p.key.split('/').next().unwrap() {
            "default" => (None, "10.244."),
            "blue-a" => (Some("blue"), "10.50."),
            "red-a" => (Some("red"), "10.60."),
            "green-a" => (Some("green"), "10.60."),
            other => panic!("unexpected namespace {other}"),
        };
        assert_eq!((p.network.as_deref(), p.ip.starts_with(want.1)), (want.0, true), "{p:?}");
    }
    // Overlapping CIDRs live at once: the same address held in red and in green.
    let shared = pods
        .iter()
        .filter(|r| r.net() == "red")
        .filter(|r| pods.iter().any(|g| g.net() == "green" && g.ip == r.ip))
        .count();
    assert_eq!(shared, 3, "red and green should hold equal addresses on every node");

    // The operator's view agrees: nothing broken, no leak, cross pairs isolated.
    let out = lab.ctl(&["lab", "status"]);
    let said = text(&out);
    println!("{said}");
    assert_eq!(out.status.code(), Some(0), "lab status: {said}");
    assert!(said.contains(" 0 broken,") && said.contains(" 0 LEAK across networks"), "{said}");
    assert!(said.contains("iso") && said.contains("=own") && said.contains("@blue"), "{said}");

    let mut probes = Probes::start(pods.clone());
    assert_clean("plain", &probes.matrix("plain"));

    // Forged sources: a pod sending with another network's pod address (or a default pod's) never reaches the
    // network it pretends to be in. Counted at the receivers; a legitimate stream beside proves the counters.
    let by = |key: &str| pods.iter().find(|p| p.key == key).unwrap().clone();
    let (red1, blue2, blue3) = (by("red-a/node1-pod1"), by("blue-a/node2-pod1"), by("blue-a/node3-pod1"));
    let (def1, def2, def3) = (by("default/node1-pod1"), by("default/node2-pod1"), by("default/node3-pod1"));
    let (green2, green3x) = (by("green-a/node2-pod1"), by("green-a/extra3"));
    let forged = [
        (&red1, blue3.ip.as_str(), &blue2),     // red pod posing as a blue pod, to blue
        (&red1, def3.ip.as_str(), &def2),       // red pod posing as a default pod, to default
        (&def1, blue3.ip.as_str(), &blue2),     // default pod posing as blue, to blue
        (&blue3, green3x.ip.as_str(), &green2), // blue pod posing as green, to green
        (&red1, green3x.ip.as_str(), &green2),  // red posing as green (same CIDR), to green
    ];
    for (from, src, to) in forged {
        send_forged(from, src, &to.ip, SPOOF_PORT, 20);
    }
    for to in [&blue2, &def2, &green2] {
        let legit = pods.iter().find(|p| p.network == to.network && p.key != to.key).unwrap();
        send_plain(legit, &to.ip, CONTROL_PORT, 5);
        assert!(
            wait_until(Duration::from_secs(20), || counter(&to.netns, "control") > 0),
            "control datagrams from {} never reached {}",
            legit.key,
            to.key
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    for to in [&blue2, &def2, &green2] {
        assert_eq!(counter(&to.netns, "spoofed"), 0, "forged datagrams reached {} ({})", to.key, to.net());
    }

    // Policies that try to open every network to every address: isolation does not move.
    let mut yaml = String::new();
    for ns in ["default", "blue-a", "red-a", "green-a"] {
        yaml += &format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-world, namespace: {ns}}}\n\
             spec:\n  podSelector: {{}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{{from: [{{ipBlock: {{cidr: 0.0.0.0/0}}}}]}}]\n  \
             egress: [{{to: [{{ipBlock: {{cidr: 0.0.0.0/0}}}}]}}]\n"
        );
    }
    yaml += "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-red, namespace: blue-a}\n\
             spec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.60.0.0/16}}, {ipBlock: {cidr: 10.244.0.0/16}}]}]\n";
    let file = std::env::temp_dir().join(format!("weft-netlab-{}.yaml", unique()));
    std::fs::write(&file, yaml).unwrap();
    lab.ok(&["policy", "apply", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    lab.ok(&["policy", "wait", "--timeout-secs", "60"]);
    assert_clean("ipblock", &probes.matrix("ipblock"));
}

/// A host outside the cluster on the underlay (behind the fabric, like the internet behind a router).
struct Outside {
    ns: Netns,
    ip: &'static str,
}

fn outside_host(lab: &Lab) -> Outside {
    let fabric = lab.state()["fabricNs"].as_str().unwrap().to_string();
    let ns = Netns::new(format!("wx{}", unique()));
    let port = format!("x{}", unique());
    weft_e2e::run(
        "ip",
        &["-n", &fabric, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name],
    );
    weft_e2e::run("ip", &["-n", &fabric, "addr", "add", "172.31.250.254/24", "dev", &port]);
    weft_e2e::run("ip", &["-n", &fabric, "link", "set", &port, "up"]);
    ns.ip(&["addr", "add", "172.31.250.1/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", "default", "via", "172.31.250.254"]);
    nft(
        &ns.name,
        "add table inet probe; add counter inet probe podsrc; add counter inet probe nodesrc; \
         add chain inet probe pre { type filter hook prerouting priority -400; }; \
         add rule inet probe pre ip saddr 10.0.0.0/8 counter name podsrc; \
         add rule inet probe pre ip saddr 172.30.0.0/16 counter name nodesrc",
    );
    Outside { ns, ip: "172.31.250.1" }
}

#[test]
fn masquerade_to_an_outside_host_from_every_network() {
    if !require_root() {
        return;
    }
    let lab = Lab::up("nm", &[&["--nodes", "2", "--pods-per-node", "1"][..], &THREE_NETWORKS].concat());
    let ext = outside_host(&lab);
    let mut server = ext
        .ns
        .command(probe::probe_bin())
        .args(["serve", "--tcp", "8080", "--udp", "8080"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("weft-probe serve");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "serving");
    let targets = [format!("{}:8080/tcp", ext.ip), format!("{}:8080/udp", ext.ip)];
    let reach = |p: &kit::Pod, base: u16| -> bool {
        let o = ns_exec(
            &p.netns,
            &[
                probe::probe_bin(),
                "matrix",
                "--timeout-ms",
                "2000",
                "--udp-src-base",
                &base.to_string(),
                &targets[0],
                &targets[1],
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v[&targets[0]] == true && v[&targets[1]] == true
    };
    let pods = lab.pods();
    assert_eq!(pods.len(), 8);
    for (base, p) in (40_001..).zip(pods.iter()) {
        assert!(
            wait_until(Duration::from_secs(30), || reach(p, base)),
            "{} ({}) cannot reach the outside host",
            p.key,
            p.net()
        );
        assert!(
            ns_exec(&p.netns, &["ping", "-c", "1", "-W", "2", ext.ip]).status.success(),
            "{} cannot ping out",
            p.key
        );
    }
    assert!(counter(&ext.ns.name, "nodesrc") > 0, "nothing arrived from node addresses");
    assert_eq!(counter(&ext.ns.name, "podsrc"), 0, "pod addresses left the cluster unmasqueraded");
    // Equal tuples from two overlapping networks at once: red and green pods on node1 share an address; the
    // same UDP source port from both must give two flows, each answered.
    let red = pods.iter().find(|p| p.net() == "red" && p.node == "node1").unwrap().clone();
    let green = pods.iter().find(|p| p.net() == "green" && p.node == "node1").unwrap().clone();
    assert_eq!(red.ip, green.ip, "overlapping networks should give equal addresses");
    for round in 0..3u16 {
        let b = 45_000 + round * 10;
        let (r, g) = std::thread::scope(|s| {
            let r = s.spawn(|| reach(&red, b));
            let g = s.spawn(|| reach(&green, b));
            (r.join().unwrap(), g.join().unwrap())
        });
        assert!(r && g, "equal tuples from red and green at once: red answered {r}, green answered {g}");
    }
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn network_lifecycle_refusals_deletion_and_nothing_left_etcd() {
    if !require_root() {
        return;
    }
    let lab = Lab::up("nd", &["--store", "etcd", "--nodes", "2", "--pods-per-node", "1"]);
    lab.ok(&["lab", "network", "create", "teal", "--cidr", "10.70.0.0/16", "--vni", "300", "-n", "t1"]);
    // Refusals change nothing.
    for (args, why) in [
        (&["lab", "network", "create", "teal", "--cidr", "10.71.0.0/16"][..], "exists already"),
        (&["lab", "network", "create", "teal2", "--cidr", "10.71.0.0/16", "--vni", "300"][..], "already used by teal"),
        (&["lab", "network", "create", "teal2", "--cidr", "10.71.0.0/16", "--vni", "1"][..], "already used by default"),
        (
            &["lab", "network", "create", "teal2", "--cidr", "10.71.0.0/16", "-n", "t1"][..],
            "already on network \"teal\"",
        ),
        (&["lab", "network", "create", "teal2", "--cidr", "127.0.0.0/16"][..], "loopback"),
        (&["lab", "network", "create", "Teal", "--cidr", "10.71.0.0/16"][..], "DNS-1123"),
        (&["lab", "network", "create", "teal2", "--cidr", "10.71.0.0/16", "-n", "default"][..], "has pods"),
        (&["lab", "ns-add", "t2", "--network", "nope"][..], "no network \"nope\""),
    ] {
        let e = lab.refused(args);
        assert!(e.contains(why), "{args:?}: {e}");
    }
    lab.ok(&["lab", "ns-add", "t2", "--network", "teal"]);
    for n in ["node1", "node2"] {
        let nf = lab.node_file(n);
        let teal = nf["networks"].as_array().unwrap().iter().find(|x| x["name"] == "teal").cloned().unwrap();
        assert!(teal["namespaces"].as_array().unwrap().iter().any(|x| x == "t2"), "{n}: {nf}");
    }
    lab.ok(&["lab", "pod-add", "--node", "node1", "--pod", "t1/a"]);
    lab.ok(&["lab", "pod-add", "--node", "node2", "--pod", "t2/b"]);
    let (a, b, d) = (lab.pod("t1/a"), lab.pod("t2/b"), lab.pod("default/node2-pod1"));
    assert!(a.ip.starts_with("10.70.") && b.ip.starts_with("10.70."), "{a:?} {b:?}");
    let ping = |from: &kit::Pod, to: &str| ns_exec(&from.netns, &["ping", "-c", "1", "-W", "1", to]).status.success();
    assert!(wait_until(Duration::from_secs(30), || ping(&a, &b.ip)), "t1/a cannot reach t2/b inside teal");
    assert!(!ping(&a, &d.ip), "teal reached the default network");
    let list = lab.ok(&["lab", "network", "list"]);
    println!("{list}");
    assert!(list.contains("teal") && list.contains("300") && list.contains("node2: ready"), "{list}");

    let e = lab.refused(&["lab", "network", "delete", "teal"]);
    assert!(e.contains("still has pods") && e.contains("t1/a") && e.contains("t2/b"), "{e}");
    assert!(ping(&a, &b.ip), "a refused delete disturbed the network");
    lab.ok(&["lab", "pod-del", "t1/a"]);
    lab.ok(&["lab", "pod-del", "t2/b"]);
    lab.ok(&["lab", "network", "delete", "teal"]);
    // Nothing of teal stays on any node: no device, no rule, no route in its table, not in the node file.
    let table = (0x5700_0000u32 | 300).to_string();
    for (i, n) in ["node1", "node2"].iter().enumerate() {
        let ns = lab.node_ns(i);
        let gone = || {
            let links = text(&ns_exec(&ns, &["ip", "-o", "link", "show"]));
            let rules = text(&ns_exec(&ns, &["ip", "rule", "show"]));
            let routes = ns_exec(&ns, &["ip", "route", "show", "table", &table]);
            !links.contains("wn300") && !rules.contains(&table) && routes.stdout.is_empty()
        };
        assert!(
            wait_until(Duration::from_secs(30), gone),
            "{n} kept teal's kernel state: {}\n{}",
            text(&ns_exec(&ns, &["ip", "rule", "show"])),
            text(&ns_exec(&ns, &["ip", "route", "show", "table", &table]))
        );
        assert!(lab.node_file(n)["networks"].as_array().is_none_or(|v| v.is_empty()), "{n}: {}", lab.node_file(n));
    }
    assert!(lab.ok(&["lab", "network", "list"]).contains("no tenant networks"));
    // Its namespaces are back on the default network.
    lab.ok(&["lab", "pod-add", "--node", "node1", "--pod", "t1/c"]);
    let c = lab.pod("t1/c");
    assert!(c.ip.starts_with("10.244.") && c.network.is_none(), "{c:?}");
    assert!(wait_until(Duration::from_secs(30), || ping(&c, &d.ip)), "t1/c on the default network cannot reach it");
}

#[test]
fn agent_restart_keeps_every_networks_flows() {
    if !require_root() {
        return;
    }
    // blue and red share one CIDR: both live, both must survive the restarts.
    let lab = Lab::up(
        "nr",
        &[
            "--nodes",
            "2",
            "--pods-per-node",
            "1",
            "--network",
            "blue:10.50.0.0/16:100:blue-a",
            "--network",
            "red:10.50.0.0/16:101:red-a",
        ],
    );
    let pods = lab.pods();
    let pairs: Vec<(String, String, String)> = ["default", "blue", "red"]
        .iter()
        .map(|net| {
            let src = pods.iter().find(|p| p.net() == *net && p.node == "node1").unwrap();
            let dst = pods.iter().find(|p| p.net() == *net && p.node == "node2").unwrap();
            (net.to_string(), src.netns.clone(), dst.ip.clone())
        })
        .collect();
    for (net, src, dst) in &pairs {
        assert!(
            wait_until(Duration::from_secs(30), || ns_exec(src, &["ping", "-c", "1", "-W", "1", dst]).status.success()),
            "{net}: no traffic before the restarts"
        );
    }
    // 400 pings 10 ms apart (4 s) per network while node1's and node2's agents restart.
    let pingers: Vec<_> = pairs
        .iter()
        .map(|(net, src, dst)| {
            let c = Command::new("ip")
                .args(["netns", "exec", src, "ping", "-n", "-q", "-i", "0.01", "-c", "400", "-W", "1", dst])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            (net.clone(), c)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for node in ["node1", "node2"] {
        lab.ok(&["lab", "restart", node]);
    }
    for (net, p) in pingers {
        let out = p.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("{net}: {said}");
        assert!(said.contains("400 packets transmitted, 400 received"), "{net} lost packets across restarts: {said}");
    }
    // The restarted agents serve the same networks with the same subnets.
    for n in ["node1", "node2"] {
        let nf = lab.node_file(n);
        assert_eq!(nf["networks"].as_array().map(Vec::len), Some(2), "{n}: {nf}");
    }
}

#[test]
fn kube_mode_networks_through_the_crd() {
    if !require_root() {
        return;
    }
    // Against the FAKE API server: networks are `networks.weft.dev` objects, their status comes back from the
    // agents through the CRD's status.
    let lab = Lab::up(
        "nk",
        &["--store", "kube", "--nodes", "2", "--pods-per-node", "1", "--network", "blue:10.50.0.0/16:100:blue-a"],
    );
    let pods = lab.pods();
    assert_eq!(pods.len(), 4);
    let list = lab.ok(&["lab", "network", "list"]);
    println!("{list}");
    assert!(list.contains("blue") && list.contains("node1: ready") && list.contains("node2: ready"), "{list}");
    let out = lab.ctl(&["lab", "status"]);
    let said = text(&out);
    println!("{said}");
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("8 isolated across networks, 0 LEAK across networks"), "{said}");
    let e = lab.refused(&["lab", "network", "delete", "blue"]);
    assert!(e.contains("still has pods"), "{e}");
    // A second network created while the lab runs, then used and removed.
    lab.ok(&["lab", "network", "create", "red", "--cidr", "10.50.0.0/16", "-n", "red-a"]);
    lab.ok(&["lab", "pod-add", "--node", "node2", "--pod", "red-a/r"]);
    let r = lab.pod("red-a/r");
    assert_eq!(r.network.as_deref(), Some("red"));
    let blue1 = pods.iter().find(|p| p.net() == "blue" && p.node == "node1").unwrap();
    let blue2 = pods.iter().find(|p| p.net() == "blue" && p.node == "node2").unwrap();
    assert_eq!(r.ip, blue2.ip, "red (same CIDR as blue) gives its first node2 pod the address blue's has");
    assert!(!ns_exec(&r.netns, &["ping", "-c", "1", "-W", "1", &blue1.ip]).status.success(), "red reached blue");
    lab.ok(&["lab", "pod-del", "red-a/r"]);
    lab.ok(&["lab", "network", "delete", "red"]);
}

#[test]
fn policy_truth_table_inside_a_tenant_network() {
    if !require_root() {
        return;
    }
    // tests/policy's representative set (the one also run on host-gw) and every egress/ipBlock scenario.
    // Scenarios that write the default network's CIDR into their YAML mean nothing on another network.
    let default_cidr = |s: &scenarios::Scenario| {
        s.steps.iter().any(|st| matches!(st, scenarios::Step::Apply(y) if y.contains("10.244.")))
    };
    truth::run("teal:10.80.0.0/16:200", |s| (s.host_gw || s.group == scenarios::Group::Egress) && !default_cidr(s));
}

/// Relabelling a namespace out of its tenant network under running pods (what anyone allowed to label
/// namespaces can do) neither lets those pods escape their NetworkPolicy nor carries them onto the default
/// network: they keep their old network's veth and address, so the table (compiled by namespace) knows them
/// nowhere and drops their forwarded traffic both ways, policy or not (fail closed, `drop_unready`). The agent
/// names each in its status (`STRANDED`). New pods of the namespace land on its new network and work; so does a
/// re-created one.
#[test]
fn a_namespace_relabelled_out_of_its_network_strands_its_pods_closed_not_open() {
    if !require_root() {
        return;
    }
    let lab = Lab::up("nm", &["--nodes", "2", "--pods-per-node", "1"]);
    lab.ok(&["lab", "network", "create", "blue", "--cidr", "10.60.0.0/16", "--selector", "net=blue"]);
    lab.ok(&["lab", "ns-add", "x", "--label", "net=blue"]);
    lab.ok(&["lab", "pod-add", "--node", "node1", "--pod", "x/a"]);
    lab.ok(&["lab", "pod-add", "--node", "node2", "--pod", "x/b"]);
    let (a, b, d) = (lab.pod("x/a"), lab.pod("x/b"), lab.pod("default/node2-pod1"));
    assert!(a.ip.starts_with("10.60.") && b.ip.starts_with("10.60."), "{a:?} {b:?}");
    let ping = |from: &kit::Pod, to: &str| ns_exec(&from.netns, &["ping", "-c", "1", "-W", "1", to]).status.success();
    assert!(wait_until(Duration::from_secs(30), || ping(&b, &a.ip)), "x/b cannot reach x/a inside blue");
    let policy = std::env::temp_dir().join(format!("weft-strand-{}.yaml", unique()));
    std::fs::write(
        &policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\n\
         spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    )
    .unwrap();
    lab.ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let _ = std::fs::remove_file(&policy);
    lab.ok(&["policy", "wait"]);
    assert!(!ping(&b, &a.ip) && !ping(&b, &a.ip), "deny-all ingress in x does not hold inside blue");

    // The relabel: x is now on the default network (no network selects it any more).
    let unready = |node: usize| {
        let out = ns_exec(&lab.node_ns(node), &["nft", "-j", "list", "counter", "inet", "weft-policy", "drop_unready"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["nftables"].as_array().into_iter().flatten().find_map(|o| o["counter"]["packets"].as_u64()).unwrap_or(0)
    };
    lab.ok(&["lab", "label", "ns", "x", "net-"]);
    lab.ok(&["policy", "wait"]);
    let status = |node: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(lab.dir().join(node).join("status.json")).unwrap_or_default())
            .unwrap_or_default()
    };
    let stranded = |node: &str| status(node)["policy"]["stranded"].as_array().cloned().unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || stranded("node1").len() == 1 && stranded("node2").len() == 1),
        "each node names its stranded pod: {:?} {:?}",
        stranded("node1"),
        stranded("node2")
    );
    let s1 = stranded("node1")[0].as_str().unwrap().to_string();
    assert!(
        s1.starts_with(&format!("x/a {}: address from network \"blue\"", a.ip)) && s1.contains("\"default\""),
        "{s1}"
    );
    let said = lab.ok(&["status", "--state-dir", lab.dir().join("node1").to_str().unwrap()]);
    assert!(said.contains("STRANDED  pod x/a"), "weftctl status:\n{said}");
    // x/b's packets to x/a are dropped where they enter the forward path, on node2 (x/a's answers on node1).
    let before = unready(0) + unready(1);
    for round in 0..3 {
        assert!(!ping(&b, &a.ip), "round {round}: x/b reached x/a: the relabel escaped the deny policy");
        assert!(!ping(&a, &d.ip), "round {round}: x/a (blue) reached the default network");
        assert!(!ping(&d, &a.ip), "round {round}: the default network reached x/a (blue)");
    }
    assert!(unready(0) + unready(1) >= before + 3, "the stranded pods' drops are counted as drop_unready");
    // Without any policy: still cut off (stranded, not merely denied).
    lab.ok(&["policy", "delete", "x/deny"]);
    lab.ok(&["policy", "wait"]);
    assert!(!ping(&b, &a.ip) && !ping(&a, &b.ip), "stranded pods talk once the policy is gone");

    // New pods of x are on the default network and work; re-creating x/a fixes it.
    lab.ok(&["lab", "pod-add", "--node", "node1", "--pod", "x/c"]);
    let c = lab.pod("x/c");
    assert!(c.ip.starts_with("10.244.") && c.network.is_none(), "{c:?}");
    assert!(wait_until(Duration::from_secs(30), || ping(&c, &d.ip)), "x/c on the default network cannot reach it");
    lab.ok(&["lab", "pod-del", "x/a"]);
    lab.ok(&["lab", "pod-add", "--node", "node1", "--pod", "x/a"]);
    let a2 = lab.pod("x/a");
    assert!(a2.ip.starts_with("10.244."), "{a2:?}");
    assert!(
        wait_until(Duration::from_secs(30), || ping(&a2, &d.ip)),
        "re-created x/a cannot reach the default network"
    );
    assert!(wait_until(Duration::from_secs(20), || stranded("node1").is_empty()), "{:?}", stranded("node1"));
}
