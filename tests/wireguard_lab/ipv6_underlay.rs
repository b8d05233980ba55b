//! WireGuard over an IPv6 underlay: the automatic MTU overhead is 80 there (IPv6 40 + UDP 8 + WireGuard data
//! header and tag 32), where it is 60 over IPv4 (`features.rs`). The first test builds its two nodes itself (an
//! MTU other than the lab's 1500, on one bridge): namespaces on one bridge with IPv6 addresses only (MTU 1450, so no default of
//! 1500 can pass for a right answer), a `weftd` in each on an embedded store file they share, and a pod on each
//! made by the real `weft` plugin. The tunnel device and the pods get 1450 − 80 = 1370; a full-size packet with
//! DF crosses nodes in both pod families and fills the underlay exactly (1450-byte IPv6 datagrams, never a
//! fragment), one byte more does not leave the pod, and bulk TCP crosses too.
use crate::kit::{ns_exec, reaches, sh, Capture};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use weft_e2e::{bin, require_root, unique, wait_until, Netns, TempDir};

const UNDERLAY_MTU: usize = 1450;
const PORT: u16 = 51820;

type Node = weft_e2e::agent_node::AgentNode;

/// A pod made by `weft ADD` in its own namespace; its addresses from the CNI result.
struct Pod {
    ns: Netns,
    ip: String,
    ip6: String,
}

fn cni_add(node: &Node, pod: Netns) -> Pod {
    let conf = json!({"cniVersion": "1.0.0", "name": "weft", "type": "weft", "dataDir": node.dir.join("ipam"),
                      "nodeFile": node.dir.join("node.json")});
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.ns.name]).arg(bin("weft"));
    cmd.env("CNI_COMMAND", "ADD").env("CNI_CONTAINERID", &pod.name).env("CNI_IFNAME", "eth0");
    cmd.env("CNI_PATH", "/nonexistent").env("CNI_NETNS", pod.path());
    cmd.env("CNI_ARGS", format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={}", pod.name));
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("weft");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "weft ADD on {}: {text}", node.name);
    let result: Value = serde_json::from_slice(&out.stdout).expect("CNI result");
    let addr = |v6: bool| {
        result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .find(|a| a.contains(':') == v6)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no IPv{} address in {result}", if v6 { 6 } else { 4 }))
            .to_string()
    };
    Pod { ip: addr(false), ip6: addr(true), ns: pod }
}

fn mtu_of(ns: &str, dev: &str) -> usize {
    let out = sh(ns, &["ip", "-o", "link", "show", dev]);
    let f: Vec<&str> = out.split_whitespace().collect();
    let i = f.iter().position(|w| *w == "mtu").expect("mtu in ip link");
    f[i + 1].parse().expect("mtu number")
}

/// A ping of exactly `size` payload bytes that may not be fragmented (IPv4 DF; IPv6 never fragments en route).
fn ping_df(ns: &str, dst: &str, size: usize) -> bool {
    let fam = if dst.contains(':') { "-6" } else { "-4" };
    ns_exec(ns, &["ping", fam, "-c", "1", "-W", "3", "-M", "do", "-s", &size.to_string(), dst]).status.success()
}

/// (IPv6 packet length, next header) of every IPv6 frame in an Ethernet pcap.
fn ipv6_packets(pcap: &[u8]) -> Vec<(usize, u8)> {
    let (mut i, mut out) = (24, Vec::new());
    while i + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[i + 8..i + 12].try_into().unwrap()) as usize;
        let frame = &pcap[i + 16..(i + 16 + caplen).min(pcap.len())];
        i += 16 + caplen;
        if frame.len() >= 14 + 40 && frame[12..14] == [0x86, 0xdd] {
            out.push((40 + usize::from(u16::from_be_bytes([frame[18], frame[19]])), frame[20]));
        }
    }
    out
}

#[test]
fn wireguard_over_an_ipv6_underlay_takes_80_bytes_and_full_size_packets_cross() {
    if !require_root() {
        return;
    }
    let token = unique();
    let dir = TempDir::new("wg6");
    let fabric = Netns::new(format!("w6{token}f"));
    fabric.ip(&["link", "add", "br0", "mtu", &UNDERLAY_MTU.to_string(), "type", "bridge"]);
    fabric.ip(&["link", "set", "br0", "up"]);
    let store = format!("embedded://{}", dir.path().join("store.db").display());
    let net_cfg = dir.path().join("network.json");
    let cfg = json!({"clusterCidr": "10.244.0.0/16", "clusterCidr6": "fd00:10:244::/56",
                     "backend": {"type": "wireguard", "port": PORT}});
    std::fs::write(&net_cfg, cfg.to_string()).unwrap();
    let mut nodes = Vec::new();
    for i in 1..=2 {
        let ns = Netns::new(format!("w6{token}n{i}"));
        let outer = format!("w6{token}{i}");
        let mtu = UNDERLAY_MTU.to_string();
        fabric.ip(&["link", "add", &outer, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
        fabric.ip(&["link", "set", &outer, "master", "br0", "up"]);
        // IPv6 only on the underlay: no IPv4 address anywhere a tunnel packet could take.
        let ip = format!("fd00:77::{i}");
        ns.ip(&["link", "set", "eth0", "mtu", &mtu]);
        ns.ip(&["-6", "addr", "add", &format!("{ip}/64"), "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        let ndir = dir.path().join(format!("n{i}"));
        std::fs::create_dir_all(&ndir).unwrap();
        nodes.push(Node::new(format!("n{i}"), ip, ns, ndir));
    }
    for n in &mut nodes {
        n.start(&store, &net_cfg);
    }
    let logs = |nodes: &[Node]| nodes.iter().map(Node::log).collect::<String>();
    let converged = wait_until(Duration::from_secs(90), || {
        nodes.iter().all(|n| {
            let st = n.status();
            st["ready"] == true && st["peers"].as_array().map(Vec::len) == Some(1)
        })
    });
    assert!(converged, "agents did not converge on the IPv6 underlay:\n{}", logs(&nodes));

    // The overhead: 80 bytes over IPv6, in the status, the node file the plugin reads and the tunnel device.
    let want = UNDERLAY_MTU - 80;
    for n in &nodes {
        let st = n.status();
        assert_eq!(st["mtu"].as_u64(), Some(want as u64), "{}: status MTU over an IPv6 underlay: {st}", n.name);
        assert_eq!(st["peers"][0]["nodeIp"].as_str().map(|s| s.contains(':')), Some(true), "{st}");
        assert_eq!(mtu_of(&n.ns.name, "weft.1"), want, "{}: the WireGuard device's MTU", n.name);
        let nf: Value = serde_json::from_slice(&std::fs::read(n.dir.join("node.json")).unwrap()).unwrap();
        assert_eq!(nf["mtu"].as_u64(), Some(want as u64), "{}: node file {nf}", n.name);
    }
    let pods: Vec<Pod> = nodes.iter().zip(1..).map(|(n, i)| cni_add(n, Netns::new(format!("w6{token}p{i}")))).collect();
    let (a, b) = (&pods[0], &pods[1]);
    assert_eq!(mtu_of(&a.ns.name, "eth0"), want, "the pod's MTU over an IPv6 underlay is the underlay's minus 80");
    for dst in [&b.ip, &b.ip6] {
        // The first packet starts the handshake: poll.
        assert!(reaches(&a.ns.name, dst, 30), "pod on n1 cannot reach {dst} on n2:\n{}", logs(&nodes));
    }

    // Full size with DF in both pod families; the underlay must carry them whole: 1450-byte IPv6 datagrams
    // (inner 1370 + 80), never a fragment. IPv4: 20 header + 8 ICMP; IPv6: 40 + 8.
    let capture = Capture::start(&nodes[0].ns.name, "eth0", &["ip6"]);
    assert!(ping_df(&a.ns.name, &b.ip, want - 28), "a full-size IPv4 packet with DF did not cross the tunnel");
    assert!(ping_df(&a.ns.name, &b.ip6, want - 48), "a full-size IPv6 packet did not cross the tunnel");
    let (raw, lines) = capture.finish();
    let packets = ipv6_packets(&raw);
    let fragments = packets.iter().filter(|(_, next)| *next == 44).count();
    let full = packets.iter().filter(|(len, next)| *next == 17 && *len == UNDERLAY_MTU).count();
    let biggest = packets.iter().map(|(len, _)| *len).max().unwrap_or(0);
    assert_eq!(fragments, 0, "the underlay carried IPv6 fragments:\n{}", lines.join("\n"));
    assert!(biggest <= UNDERLAY_MTU, "a {biggest}-byte packet on a {UNDERLAY_MTU}-byte underlay");
    // Two pings, each way: four datagrams filling the underlay.
    assert!(full >= 4, "{full} WireGuard datagrams of exactly {UNDERLAY_MTU} bytes, want 4:\n{}", lines.join("\n"));
    // One byte more does not leave the pod.
    assert!(!ping_df(&a.ns.name, &b.ip, want - 27), "an IPv4 packet one byte over the MTU went out with DF");
    assert!(!ping_df(&a.ns.name, &b.ip6, want - 47), "an IPv6 packet one byte over the MTU went out");

    // Bulk TCP (a black hole shows as 0 bytes, not as a failed ping), in both families.
    for dst in [&b.ip, &b.ip6] {
        let port = crate::kit::iperf_server(&b.ns.name, dst);
        let out = ns_exec(&a.ns.name, &["iperf3", "-c", dst, "-p", &port, "-t", "2", "-J"]);
        let j: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let bytes = crate::kit::received_bytes(&j);
        assert!(bytes > 10_000_000, "bulk TCP to {dst} over the IPv6 underlay moved only {bytes} bytes");
    }
    // Pods go first (their host veths with them), then the agents and node namespaces, then the fabric.
    drop(pods);
    drop(nodes);
}

/// The same backend in `weftctl lab` on its IPv6-only routed underlay (`--underlay routed6`, node i at
/// `fd30:0:0:i::1`, MTU 1500), dual-stack pods: every pair connects (`Lab::up`), the agents pick 1500 − 80 =
/// 1420 by themselves, a full-size DF packet crosses nodes in both pod families and one byte more does not, and
/// the underlay carries nothing but WireGuard over IPv6 (no IPv4 at all, never the marker).
#[test]
fn wireguard_lab_on_a_routed_ipv6_underlay() {
    if !require_root() {
        return;
    }
    let lab = crate::kit::Lab::up(&["--underlay", "routed6", "--ipv6"]);
    let (n1, ip1) = lab.node(0);
    assert!(ip1.starts_with("fd30:"), "node1 is on the IPv6 underlay: {ip1}");
    assert_eq!(lab.status("node1")["mtu"], 1420, "{}", lab.status("node1"));
    let pods = lab.pods();
    let (a, b) = (&pods[0], &pods[4]);
    assert!(a.node == "node1" && b.node == "node3");
    assert_eq!(mtu_of(&a.ns, "eth0"), 1420);
    let b6 = b.ip6.as_deref().expect("dual-stack pod");
    assert!(ping_df(&a.ns, &b.ip, 1420 - 28), "full-size IPv4 DF ping over the IPv6 underlay");
    assert!(!ping_df(&a.ns, &b.ip, 1420 - 27), "one byte more than the MTU left the pod");
    assert!(ping_df(&a.ns, b6, 1420 - 48), "full-size IPv6 DF ping over the IPv6 underlay");
    let marker = b"weft-wg6-marker-9";
    let hex: String = marker.iter().map(|c| format!("{c:02x}")).collect();
    let under = Capture::start(&n1, "eth0", &[]);
    let ping = ns_exec(&a.ns, &["ping", "-c", "5", "-i", "0.2", "-W", "2", "-p", &hex, &b.ip]);
    assert!(ping.status.success(), "marker ping: {}", String::from_utf8_lossy(&ping.stdout));
    let (raw, lines) = under.finish();
    assert!(!crate::kit::contains(&raw, marker), "the marker crossed the underlay in clear");
    let wg =
        lines.iter().filter(|l| l.contains(" IP6 ") && l.contains(&format!(".{PORT} ")) && l.contains("UDP")).count();
    assert!(wg >= 10, "no WireGuard over IPv6 on the underlay:\n{}", lines.join("\n"));
    for l in &lines {
        assert!(!l.contains(" IP "), "IPv4 on the IPv6 underlay: {l}");
        let other = l.contains(" IP6 ") && !l.contains(&format!(".{PORT} ")) && !l.contains("ICMP6");
        assert!(!other, "non-WireGuard packet on the underlay: {l}\n{}", lines.join("\n"));
    }
}
