//! End to end: `weftctl lab` clusters (real weftd agents, real weft CNI plugin, real kernel VXLAN and routes,
//! embedded store and real etcd), driven exactly as an operator would drive them.
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use weft_e2e::{bin, require_root, unique, wait_until};

/// A lab that is brought down on drop, even when the test fails.
struct Lab {
    name: String,
}

impl Lab {
    fn up(args: &[&str]) -> Lab {
        let name = format!("t{}", unique());
        let lab = Lab { name: name.clone() };
        let out = Command::new(bin("weftctl"))
            .args(["lab", "up", "--name", &name, "--lease-ttl", "4s"])
            .args(args)
            .output()
            .expect("weftctl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("{text}");
        assert!(out.status.success(), "lab up failed:\n{text}\n{}", lab.logs());
        assert!(text.contains("pod pairs connected"), "no matrix printed");
        lab
    }

    fn dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/weft-lab").join(&self.name)
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join("state.json")).expect("state")).expect("json")
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=5 {
            if let Ok(l) = std::fs::read_to_string(self.dir().join(format!("node{i}/weftd.log"))) {
                s += &format!("--- node{i} weftd.log (tail)\n{}\n", tail(&l, 30));
            }
        }
        s
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["lab"];
        all.extend_from_slice(&args[..1]);
        all.extend_from_slice(&["--name", &self.name]);
        all.extend_from_slice(&args[1..]);
        Command::new(bin("weftctl")).args(&all).output().expect("weftctl")
    }

    /// `weftctl ARGS --lab NAME` for commands outside `lab` (policy).
    fn ctl_global(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("weftctl")).args(args).args(["--lab", &self.name]).output().expect("weftctl")
    }

    /// (pod namespace, IPv4) of every pod, in node order.
    fn pods(&self) -> Vec<(String, String, String)> {
        let st = self.state();
        let mut v = vec![];
        for n in st["nodes"].as_array().unwrap() {
            for p in n["pods"].as_array().unwrap() {
                v.push((
                    n["name"].as_str().unwrap().to_string(),
                    p["ns"].as_str().unwrap().to_string(),
                    p["ip"].as_str().unwrap().to_string(),
                ));
            }
        }
        v
    }

    fn node_ns(&self, i: usize) -> String {
        self.state()["nodes"][i]["ns"].as_str().unwrap().to_string()
    }

    fn status(&self, node: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join(node).join("status.json")).unwrap_or_default())
            .unwrap_or(Value::Null)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let out = Command::new(bin("weftctl")).args(["lab", "down", "--name", &self.name]).output();
        if let Ok(o) = out {
            if !o.status.success() {
                eprintln!("lab down failed: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn ns_exec(ns: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("ip netns exec")
}

/// Bulk TCP across nodes: iperf3 for 2 s from a pod on node1 to a pod on node2; returns bytes received.
/// Ping alone misses MTU black holes (pings pass while TCP moves 0 bytes): this moves real segments.
fn bulk_tcp(server_ns: &str, server_ip: &str, client_ns: &str) -> u64 {
    let port = weft_e2e::free_port().to_string();
    let pidfile = std::env::temp_dir().join(format!("weft-iperf-{}.pid", unique()));
    let started = Command::new("ip")
        .args(["netns", "exec", server_ns, "iperf3", "-s", "-1", "-D", "-B", server_ip, "-p", &port, "--pidfile"])
        .arg(&pidfile)
        .status()
        .expect("iperf3");
    assert!(started.success(), "iperf3 server did not start");
    std::thread::sleep(Duration::from_millis(300));
    let out = ns_exec(client_ns, &["iperf3", "-c", server_ip, "-p", &port, "-t", "2", "-J"]);
    let _ = std::fs::remove_file(&pidfile);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    j["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

fn all_pairs_and_bulk(lab: &Lab) {
    let pods = lab.pods();
    assert_eq!(pods.len(), 6);
    for (_, src, _) in &pods {
        for (_, _, dst) in &pods {
            let ok = ns_exec(src, &["ping", "-c", "1", "-W", "2", dst]).status.success();
            assert!(ok, "{src} cannot ping {dst}");
        }
    }
    let (a, b) = (&pods[0], &pods[2]);
    assert_ne!(a.0, b.0, "pods on different nodes");
    let bytes = bulk_tcp(&b.1, &b.2, &a.1);
    assert!(bytes > 10_000_000, "bulk TCP across nodes moved only {bytes} bytes (MTU black hole?)");
}

fn lab_case(args: &[&str]) {
    if !require_root() {
        return;
    }
    let lab = Lab::up(args);
    all_pairs_and_bulk(&lab);
    let prefix = format!("wl{}-", lab.name);
    drop(lab);
    let left = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .count();
    assert_eq!(left, 0, "lab down left namespaces behind");
}

#[test]
fn lab_vxlan_embedded() {
    lab_case(&["--backend", "vxlan", "--store", "embedded"]);
}

#[test]
fn lab_hostgw_embedded() {
    lab_case(&["--backend", "host-gw", "--store", "embedded"]);
}

#[test]
fn lab_vxlan_etcd() {
    lab_case(&["--backend", "vxlan", "--store", "etcd"]);
}

#[test]
fn lab_hostgw_etcd() {
    lab_case(&["--backend", "host-gw", "--store", "etcd"]);
}

#[test]
fn lab_vxlan_dual_stack_direct_routing() {
    if !require_root() {
        return;
    }
    // One L2 segment: VXLAN uses direct routes between nodes for IPv4; IPv6 pod subnets ride the tunnel.
    let lab = Lab::up(&["--backend", "vxlan", "--underlay", "l2", "--ipv6"]);
    let st = lab.status("node1");
    assert!(st["peers"].as_array().unwrap().iter().all(|p| p["path"] == "direct"), "{st}");
    let state = lab.state();
    let a = &state["nodes"][0]["pods"][0];
    let b = &state["nodes"][1]["pods"][0];
    let ip6 = b["ip6"].as_str().expect("dual-stack pod has an IPv6 address");
    assert!(ns_exec(a["ns"].as_str().unwrap(), &["ping", "-c", "1", "-W", "2", ip6]).status.success());
    assert!(ns_exec(a["ns"].as_str().unwrap(), &["ping", "-c", "1", "-W", "2", b["ip"].as_str().unwrap()])
        .status
        .success());
}

#[test]
fn agent_restart_loses_no_packet() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--backend", "vxlan"]);
    let pods = lab.pods();
    let (src, dst) = (&pods[0].1, &pods[2].2);
    // 400 pings 10 ms apart (4 s) while node1's and node2's agents restart.
    let pinger = Command::new("ip")
        .args(["netns", "exec", src, "ping", "-n", "-q", "-i", "0.01", "-c", "400", "-W", "1", dst])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for node in ["node1", "node2"] {
        let out = lab.ctl(&["restart", node]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("400 packets transmitted, 400 received"), "packets lost across restart: {text}");
    // The restarted agents hold the same subnets and programmed nothing new.
    assert!(wait_until(Duration::from_secs(10), || lab.status("node1")["ready"] == true));
}

#[test]
fn node_removed_entries_vanish_within_ttl_and_drift_is_repaired() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--backend", "vxlan"]);
    let n1 = lab.node_ns(0);
    let subnet3 = lab.status("node3")["subnet"].as_str().unwrap().to_string();
    let routes =
        |ns: &str| String::from_utf8_lossy(&ns_exec(ns, &["ip", "route", "show", "proto", "201"]).stdout).into_owned();
    assert!(routes(&n1).contains(&subnet3));

    // Drift: delete the device and a route by hand; the next resync (2 s) repairs both.
    let subnet2 = lab.status("node2")["subnet"].as_str().unwrap().to_string();
    assert!(ns_exec(&n1, &["ip", "route", "del", &subnet2]).status.success());
    assert!(wait_until(Duration::from_secs(6), || routes(&n1).contains(&subnet2)), "route not repaired");
    assert!(ns_exec(&n1, &["ip", "link", "del", "weft.1"]).status.success());
    assert!(
        wait_until(Duration::from_secs(8), || routes(&n1).contains(&subnet2) && routes(&n1).contains(&subnet3)),
        "device not repaired: {}",
        routes(&n1)
    );
    assert!(!lab.status("node1")["lastDrift"].as_array().unwrap().is_empty(), "drift not reported");
    let pods = lab.pods();
    assert!(
        wait_until(Duration::from_secs(8), || ns_exec(&pods[0].1, &["ping", "-c", "1", "-W", "1", &pods[2].2])
            .status
            .success()),
        "traffic not restored after the device was recreated"
    );

    // Drift inside a present nft table: the pods' anti-spoofing rule deleted by hand (by its handle, the table
    // stays) comes back within a few resyncs, and is counted; resyncs of intact tables repaired nothing before.
    let metrics = || {
        let m = ns_exec(&n1, &["curl", "-sf", "-m", "5", "http://127.0.0.1:9473/metrics"]);
        String::from_utf8_lossy(&m.stdout).into_owned()
    };
    let repaired = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("weft_nft_tables_repaired_total{table=\"inet weft\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(repaired(&metrics()), 0, "intact table counted as repaired: {}", metrics());
    let listing =
        || String::from_utf8_lossy(&ns_exec(&n1, &["nft", "-a", "list", "table", "inet", "weft"]).stdout).into_owned();
    let spoof_rule = |l: &str| l.lines().find(|r| r.contains("counter name \"spoofed\" drop")).map(str::to_string);
    let rule = spoof_rule(&listing()).expect("anti-spoofing rule in inet weft");
    let chain = listing()
        .lines()
        .take_while(|l| !l.contains("counter name \"spoofed\" drop"))
        .filter_map(|l| l.trim().strip_prefix("chain ").and_then(|c| c.split_whitespace().next()).map(str::to_string))
        .last()
        .expect("chain of the rule");
    let handle = rule.rsplit("# handle ").next().unwrap().trim().to_string();
    let del = ns_exec(&n1, &["nft", "delete", "rule", "inet", "weft", &chain, "handle", &handle]);
    assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
    assert!(spoof_rule(&listing()).is_none(), "rule not deleted");
    assert!(wait_until(Duration::from_secs(10), || spoof_rule(&listing()).is_some()), "deleted rule not repaired");
    assert!(wait_until(Duration::from_secs(10), || repaired(&metrics()) == 1), "repair not counted: {}", metrics());
    // The same inside the policy table (checked with its counters, every 6th resync here): its first rule goes.
    let stateless = || {
        String::from_utf8_lossy(&ns_exec(&n1, &["nft", "-s", "list", "table", "inet", "weft-policy"]).stdout)
            .into_owned()
    };
    let intact = stateless();
    let policy_listing =
        String::from_utf8_lossy(&ns_exec(&n1, &["nft", "-a", "list", "table", "inet", "weft-policy"]).stdout)
            .into_owned();
    let (mut chain, mut victim) = (None, None);
    for l in policy_listing.lines().map(str::trim) {
        if let Some(c) = l.strip_prefix("chain ") {
            chain = c.split_whitespace().next().map(str::to_string);
        } else if chain.is_some() && !l.starts_with("type ") && l.contains("# handle ") {
            victim = Some((chain.clone().unwrap(), l.rsplit("# handle ").next().unwrap().trim().to_string()));
            break;
        }
    }
    let (chain, handle) = victim.expect("a rule in inet weft-policy");
    let del = ns_exec(&n1, &["nft", "delete", "rule", "inet", "weft-policy", &chain, "handle", &handle]);
    assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
    assert_ne!(stateless(), intact, "rule not deleted");
    assert!(wait_until(Duration::from_secs(45), || stateless() == intact), "policy table not repaired");
    let policy_repaired =
        |m: &str| m.lines().any(|l| l.starts_with("weft_nft_tables_repaired_total{table=\"inet weft-policy\"} 1"));
    assert!(wait_until(Duration::from_secs(10), || policy_repaired(&metrics())), "not counted: {}", metrics());

    // Node removed without goodbye (SIGKILL): its entries vanish from the others within the lease TTL (4 s).
    let t0 = Instant::now();
    assert!(lab.ctl(&["restart", "node3", "--kill"]).status.success());
    let gone = wait_until(Duration::from_secs(8), || !routes(&n1).contains(&subnet3));
    let took = t0.elapsed();
    println!("node3's route vanished from node1 after {took:?} (lease TTL 4 s)");
    assert!(gone, "route to the removed node remained: {}", routes(&n1));
    assert!(took < Duration::from_millis(4000 + 1500), "took {took:?}, longer than TTL + one resync");
    let fdb = String::from_utf8_lossy(&ns_exec(&n1, &["bridge", "fdb", "show", "dev", "weft.1"]).stdout).into_owned();
    let ip3 = lab.state()["nodes"][2]["ip"].as_str().unwrap().to_string();
    assert!(!fdb.contains(&ip3), "FDB entry of the removed node remained: {fdb}");
    let gw3 = subnet3.split('/').next().unwrap().to_string();
    let neigh = String::from_utf8_lossy(&ns_exec(&n1, &["ip", "neigh", "show", "dev", "weft.1"]).stdout).into_owned();
    assert!(
        !neigh.lines().any(|l| l.starts_with(&format!("{gw3} "))),
        "neighbour of the removed node remained: {neigh}"
    );
    let nh = String::from_utf8_lossy(&ns_exec(&n1, &["ip", "nexthop", "show"]).stdout).into_owned();
    assert!(!nh.contains(&format!("via {gw3} ")), "nexthop of the removed node remained: {nh}");
}

#[test]
fn etcd_outage_keeps_dataplane_and_agents_catch_up() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--backend", "vxlan", "--store", "etcd"]);
    let pods = lab.pods();
    let n1 = lab.node_ns(0);
    assert!(lab.ctl(&["etcd", "stop"]).status.success());
    // 30 s without a store: traffic keeps flowing the whole time.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let ok = ns_exec(&pods[0].1, &["ping", "-c", "1", "-W", "1", &pods[4].2]).status.success();
        assert!(ok, "traffic broke during the store outage after {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(lab.status("node1")["storeUp"], false, "agent did not notice the outage");
    assert!(lab.ctl(&["etcd", "start"]).status.success());
    assert!(wait_until(Duration::from_secs(20), || lab.status("node1")["storeUp"] == true), "agent did not reconnect");
    // Catching up: a change made after the outage (node3 leaves) reaches node1.
    let subnet3 = lab.status("node3")["subnet"].as_str().unwrap().to_string();
    assert!(lab.ctl(&["restart", "node3", "--kill"]).status.success());
    let routes =
        || String::from_utf8_lossy(&ns_exec(&n1, &["ip", "route", "show", "proto", "201"]).stdout).into_owned();
    assert!(wait_until(Duration::from_secs(15), || !routes().contains(&subnet3)), "no catch-up: {}", routes());
}

#[test]
fn vxlan_from_unknown_source_is_dropped() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--backend", "vxlan", "--underlay", "l2", "--nodes", "3"]);
    let st = lab.state();
    let fabric = st["fabricNs"].as_str().unwrap().to_string();
    let n1_ip = st["nodes"][0]["ip"].as_str().unwrap().to_string();
    let pod_ip = st["nodes"][0]["pods"][0]["ip"].as_str().unwrap().to_string();
    let pod_ns = st["nodes"][0]["pods"][0]["ns"].as_str().unwrap().to_string();
    // A rogue host on the underlay with its own VXLAN device aimed at node1, VNI 1, port 8472: it crafts
    // encapsulated packets to a pod, exactly what an attacker on the node network would send.
    let rogue = weft_e2e::Netns::new(format!("wr{}", unique()));
    let port = format!("r{}", unique());
    weft_e2e::run(
        "ip",
        &["-n", &fabric, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &rogue.name],
    );
    weft_e2e::run("ip", &["-n", &fabric, "link", "set", &port, "master", "br0", "up"]);
    rogue.ip(&["addr", "add", "172.30.0.99/24", "dev", "eth0"]);
    rogue.ip(&["link", "set", "eth0", "up"]);
    rogue.ip(&["link", "add", "vx", "type", "vxlan", "id", "1", "remote", &n1_ip, "dstport", "8472", "dev", "eth0"]);
    rogue.ip(&["addr", "add", "10.244.250.1/16", "dev", "vx"]);
    rogue.ip(&["link", "set", "vx", "up"]);
    // Inner frames carry node1's real VTEP MAC, so without the filter node1 would decapsulate and route them.
    let mac = lab.status("node1")["vtepMac"].as_str().unwrap().to_string();
    rogue.ip(&["neigh", "add", &pod_ip, "lladdr", &mac, "dev", "vx", "nud", "permanent"]);
    let counter = || {
        let o = ns_exec(&lab.node_ns(0), &["nft", "-j", "list", "counter", "inet", "weft", "vxlan_rejected"]);
        let j: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        j["nftables"][1]["counter"]["packets"].as_u64().unwrap_or(0)
    };
    let before = counter();
    // Count what reaches the pod: an nft counter in the pod's own namespace.
    weft_e2e::run("ip", &["netns", "exec", &pod_ns, "nft", "add table inet t; add chain inet t c { type filter hook prerouting priority -300; }; add rule inet t c ip saddr 10.244.250.1 counter"]);
    let _ = rogue.try_exec("ping", &["-c", "5", "-i", "0.2", "-W", "1", &pod_ip]);
    let after = counter();
    let reached =
        String::from_utf8_lossy(&ns_exec(&pod_ns, &["nft", "list", "chain", "inet", "t", "c"]).stdout).into_owned();
    assert!(after >= before + 5, "node1 did not count the rogue VXLAN packets as rejected ({before} → {after})");
    assert!(reached.contains("packets 0 "), "rogue packets reached the pod: {reached}");
    weft_e2e::run("ip", &["-n", &fabric, "link", "del", &port]);
}

#[test]
fn lab_vxlan_kube_mode_with_policy() {
    if !require_root() {
        return;
    }
    // Kubernetes mode against the FAKE API server (weft-fake-apiserver): agents take leases, peers, pods and
    // policies from the API; pods are created as Pod objects, policies as NetworkPolicy objects.
    let lab = Lab::up(&["--backend", "vxlan", "--store", "kube"]);
    all_pairs_and_bulk(&lab);
    let file = std::env::temp_dir().join(format!("weft-policy-{}.yaml", unique()));
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: default}\n\
         spec:\n  podSelector: {matchLabels: {app: pod2}}\n  policyTypes: [Ingress]\n",
    )
    .unwrap();
    let out = lab.ctl_global(&["policy", "apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(lab.ctl_global(&["policy", "wait"]).status.success());
    let pods = lab.pods();
    // pods[1] is node1-pod2 (app=pod2, now isolated); pods[2] is node2-pod1 (app=pod1, not selected).
    assert!(!ns_exec(&pods[0].1, &["ping", "-c", "1", "-W", "1", &pods[1].2]).status.success(), "isolated pod reached");
    assert!(
        ns_exec(&pods[1].1, &["ping", "-c", "1", "-W", "1", &pods[2].2]).status.success(),
        "egress is not isolated"
    );

    // A pod whose Pod object does not carry its addresses yet (the kubelet has not reported the sandbox): node1's
    // agent compiles it from the plugin's IPAM record at once instead of holding it in the new-pod
    // default-deny until the status update, and its policy applies from then on.
    let out = lab.ctl_global(&[
        "lab",
        "pod-add",
        "--node",
        "node1",
        "--pod",
        "default/late",
        "--label",
        "app=late",
        "--pending",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let late_ip = said.split_whitespace().nth(2).expect("pod-add prints the address").to_string();
    let t0 = Instant::now();
    let reached = wait_until(Duration::from_secs(20), || {
        ns_exec(&pods[2].1, &["ping", "-c", "1", "-W", "1", &late_ip]).status.success()
    });
    assert!(reached, "a pod without addresses in its Pod object stays default-deny: {}", lab.status("node1")["policy"]);
    println!("pending pod reachable {:?} after its ADD (no store write since)", t0.elapsed());
    assert!(lab.status("node1")["policy"]["fromIpam"].as_u64() >= Some(1), "{}", lab.status("node1")["policy"]);
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-pod1, namespace: default}\n\
         spec:\n  podSelector: {matchLabels: {app: late}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    \
         - podSelector: {matchLabels: {app: pod1}}\n",
    )
    .unwrap();
    assert!(lab.ctl_global(&["policy", "apply", "-f", file.to_str().unwrap()]).status.success());
    assert!(lab.ctl_global(&["policy", "wait"]).status.success());
    // Its policy, not a fall-back to default-deny: node2-pod1 (app=pod1) is let in, node1-pod2 (app=pod2) not.
    assert!(
        wait_until(Duration::from_secs(10), || {
            ns_exec(&pods[2].1, &["ping", "-c", "1", "-W", "1", &late_ip]).status.success()
        }),
        "the policy's allowed peer is refused"
    );
    assert!(
        !ns_exec(&pods[1].1, &["ping", "-c", "1", "-W", "1", &late_ip]).status.success(),
        "the pending pod's policy does not apply"
    );
    let _ = std::fs::remove_file(file);
}

/// VXLAN over the lab's IPv6-only underlay (`--underlay routed6`): every pair connects and bulk TCP crosses, the
/// agents take 1500 − 70 = 1430 by themselves, and a host-gw lab there is refused with the reason (the kernel
/// has no IPv4 route via an IPv6 next hop).
#[test]
fn lab_vxlan_on_a_routed_ipv6_underlay() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--backend", "vxlan", "--underlay", "routed6"]);
    all_pairs_and_bulk(&lab);
    let st = lab.status("node1");
    assert!(st["nodeIp"].as_str().is_some_and(|ip| ip.starts_with("fd30:")), "{st}");
    assert_eq!(st["mtu"], 1430, "{st}");
    let out = Command::new(bin("weftctl"))
        .args(["lab", "up", "--name", &format!("h{}", unique()), "--backend", "host-gw", "--underlay", "routed6"])
        .output()
        .expect("weftctl");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("host-gw cannot route"));
}
