//! What works on the other backends works on WireGuard: NetworkPolicy across nodes, dual-stack pods with the
//! MTU right, and masquerade of pod traffic leaving the cluster.
use crate::kit::{ping, reaches, sh, Lab};
use std::time::Duration;
use weft_e2e::{require_root, wait_until};

/// A small truth table across nodes: y/a (node2) is the target; x/a (node1), z/a (node3) and y/b (node3) the
/// clients. No policy: all reach it. Deny-all ingress in y: none does (egress from y/a is not isolated). Then
/// allow from namespace x: only x/a does. Every client sits on another node than the target, so each verdict
/// is taken on traffic that crossed the tunnel (and kept its pod source address: no masquerade inside).
#[test]
fn wireguard_lab_network_policy_across_nodes() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--pods-per-node", "0"]);
    for ns in ["x", "y", "z"] {
        lab.ok(&["lab", "ns-add", ns, "--label", &format!("ns={ns}")]);
    }
    let xa = lab.add_pod("node1", "x/a");
    let ya = lab.add_pod("node2", "y/a");
    let za = lab.add_pod("node3", "z/a");
    let yb = lab.add_pod("node3", "y/b");
    let clients = [("x/a", &xa), ("z/a", &za), ("y/b", &yb)];
    let table = |want: [bool; 3], stage: &str| {
        for ((name, c), want) in clients.iter().zip(want) {
            // An allowed pair may still be shaking hands: poll it; a denied one must fail every time.
            let got = if want { reaches(&c.ns, &ya.ip, 15) } else { ping(&c.ns, &ya.ip) || ping(&c.ns, &ya.ip) };
            assert_eq!(got, want, "{stage}: {name} → y/a should be {}", if want { "allowed" } else { "denied" });
        }
    };
    table([true, true, true], "no policy");
    lab.apply_policy(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: y}\n\
         spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    table([false, false, false], "deny-all ingress in y");
    assert!(reaches(&ya.ns, &xa.ip, 10), "egress from y/a is not isolated by an ingress policy");
    lab.apply_policy(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-x, namespace: y}\n\
         spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - namespaceSelector: \
         {matchLabels: {ns: x}}\n",
    );
    table([true, false, false], "deny-all + allow from namespace x");
}

fn mtu_of(ns: &str) -> usize {
    let out = sh(ns, &["ip", "-o", "link", "show", "eth0"]);
    let f: Vec<&str> = out.split_whitespace().collect();
    let i = f.iter().position(|w| *w == "mtu").expect("mtu in ip link");
    f[i + 1].parse().expect("mtu number")
}

/// A ping of exactly `size` payload bytes with DF (IPv4) / no fragmentation (IPv6).
fn ping_df(ns: &str, dst: &str, size: usize) -> bool {
    let fam = if dst.contains(':') { "-6" } else { "-4" };
    let s = size.to_string();
    crate::kit::ns_exec(ns, &["ping", fam, "-c", "1", "-W", "2", "-M", "do", "-s", &s, dst]).status.success()
}

/// Dual-stack on WireGuard: IPv6 pod subnets ride the tunnel (allowed IPs carry both families), every pod
/// reaches every other in IPv6, and the MTU is automatic and right: the pod MTU is the underlay's minus 60,
/// a full-size packet with DF crosses nodes in both families, one byte more does not leave the pod.
#[test]
fn wireguard_lab_dual_stack_and_mtu() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--ipv6"]);
    let pods = lab.pods();
    for a in &pods {
        for b in &pods {
            let ip6 = b.ip6.as_deref().expect("dual-stack pod has an IPv6 address");
            assert!(reaches(&a.ns, ip6, 10), "{} cannot reach {ip6} over IPv6", a.ns);
        }
    }
    let (n1, _) = lab.node(0);
    assert!(crate::kit::routes(&n1, true).contains("dev weft.1"), "IPv6 pod subnets are not routed into the tunnel");
    let underlay = mtu_of(&n1);
    let (a, b) = (&pods[0], &pods[2]);
    assert_ne!(a.node, b.node);
    let mtu = mtu_of(&a.ns);
    assert_eq!(mtu, underlay - 60, "pod MTU over an IPv4 underlay is the underlay's minus 60");
    assert_eq!(lab.status("node1")["mtu"].as_u64(), Some(mtu as u64));
    let ip6 = b.ip6.clone().unwrap();
    // IPv4: 20 header + 8 ICMP; IPv6: 40 + 8.
    assert!(ping_df(&a.ns, &b.ip, mtu - 28), "a full-size IPv4 packet with DF did not cross the tunnel");
    assert!(!ping_df(&a.ns, &b.ip, mtu - 27), "an IPv4 packet one byte over the MTU went out with DF");
    assert!(ping_df(&a.ns, &ip6, mtu - 48), "a full-size IPv6 packet did not cross the tunnel");
    assert!(!ping_df(&a.ns, &ip6, mtu - 47), "an IPv6 packet one byte over the MTU went out unfragmented");
    // And bulk TCP in IPv6 (a black hole shows as 0 bytes, not as a failed ping).
    let port = crate::kit::iperf_server(&b.ns, &ip6);
    let out = crate::kit::ns_exec(&a.ns, &["iperf3", "-6", "-c", &ip6, "-p", &port, "-t", "2", "-J"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bytes = crate::kit::received_bytes(&j);
    assert!(bytes > 10_000_000, "bulk TCP over IPv6 across nodes moved only {bytes} bytes");
}

/// Pod traffic to a host outside the cluster (the fabric, the underlay's router) leaves with the node's
/// address: the host sees the node IP, never a pod address, and its replies find their way back.
#[test]
fn wireguard_lab_masquerade_to_an_outside_host() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&[]);
    let fabric = lab.state()["fabricNs"].as_str().unwrap().to_string();
    let pods = lab.pods();
    sh(
        &fabric,
        &[
            "nft",
            "add table inet seen; add chain inet seen c { type filter hook prerouting priority -400; }; \
             add counter inet seen pods; add counter inet seen nodes; \
             add rule inet seen c ip saddr 10.244.0.0/16 counter name pods; \
             add rule inet seen c ip saddr 172.30.0.0/16 icmp type echo-request counter name nodes",
        ],
    );
    let count = |name: &str| {
        let o = crate::kit::ns_exec(&fabric, &["nft", "-j", "list", "counter", "inet", "seen", name]);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        j["nftables"][1]["counter"]["packets"].as_u64().expect("counter")
    };
    for p in [&pods[0], &pods[2], &pods[4]] {
        let (_, node_ip) = lab.node(p.node.trim_start_matches("node").parse::<usize>().unwrap() - 1);
        // The fabric's address on this node's segment (routed underlay: 172.30.i.254).
        let outside = format!("{}.254", node_ip.rsplit_once('.').unwrap().0);
        assert!(reaches(&p.ns, &outside, 10), "{} cannot reach the outside host {outside}", p.ns);
    }
    assert!(wait_until(Duration::from_secs(5), || count("nodes") >= 3), "the outside host saw no node address");
    assert_eq!(count("pods"), 0, "a pod address left the cluster unmasqueraded");
}
