//! An admitted node forges VXLAN packets whose *inner* source is another node's pod (README, security model).
//!
//! Three-node dual-stack VXLAN lab with a tenant network `blue` (VNI 100). node3 plays the rogue node: it is a
//! real, admitted peer (its underlay address is in node1's `nodes4` set), and from its own namespace it sends
//! hand-built VXLAN frames (outer UDP from its node IP to node1's port 8472, inner Ethernet to node1's VTEP MAC,
//! inner IPv4/IPv6 UDP) to pods on node1. What reaches a pod is counted inside the pod's own namespace (an nft
//! counter at the front of its prerouting, per inner source). Expected:
//! - inner source = a pod of node2 (default network, both families, and blue on VNI 100): nothing arrives, node1
//!   counts the drops in `inet weft` counter `vxlan_spoofed_inner` (exported as
//!   `weft_vxlan_spoofed_inner_packets`);
//! - inner source = node3's own pods (default and blue): arrives (the control that makes the zero above mean
//!   something, sent after the forgeries on the same path);
//! - node3's default-network pod as the source on blue's VNI, and an inner ARP frame: dropped and counted;
//! - the normal traffic of the lab (pod pings across nodes, both families, both networks) is never counted;
//! - and the attack worked before: with the check's rules flushed (a table left as before the fix), the very
//!   same forged frames reach the pods.
//!
//! The lab's underlay is IPv4; a second test checks the same offsets over an IPv6 underlay on two bare
//! namespaces, with the table the agent renders (`weft_agent::firewall`) and a kernel VXLAN device.
#[allow(dead_code)]
#[path = "networks_lab/kit.rs"]
mod kit;

use kit::{nft, ns_exec, text, Lab};
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;
use weft_e2e::{require_root, unique, wait_until, Netns};

const VNI_DEFAULT: u32 = 1;
const VNI_BLUE: u32 = 100;
const COUNT: u32 = 5;

fn mac(s: &str) -> [u8; 6] {
    let b: Vec<u8> = s.split(':').map(|x| u8::from_str_radix(x, 16).expect("MAC")).collect();
    b.try_into().expect("6 bytes")
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The UDP payload of a VXLAN packet: VXLAN header (VNI), inner Ethernet (`dst`/`src` MACs), inner IPv4 or
/// IPv6 packet from `src` to `dst` carrying one UDP datagram to port 9.
fn vxlan_frame(vni: u32, dst_mac: [u8; 6], src_mac: [u8; 6], src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let mut f = vec![0x08, 0, 0, 0, (vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0];
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    let data = b"vxsrc-forged";
    let udp_len = 8 + data.len() as u16;
    let mut udp = vec![0x10, 0x92, 0, 9];
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
            ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 17, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = fold(sum16(&ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
            f.extend_from_slice(&udp); // UDP checksum 0: allowed over IPv4
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&udp_len.to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            let c = fold(sum16(&udp, sum16(&pseudo, 0)));
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
            f.extend_from_slice(&udp);
        }
        _ => panic!("mixed families"),
    }
    f
}

/// An inner ARP request (who-has `dst`, tell `src`).
fn arp_frame(vni: u32, dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x08, 0, 0, 0, (vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0];
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&dst);
    f
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Pod {
    netns: String,
    ip: IpAddr,
    ip6: IpAddr,
}

fn pod(lab: &Lab, key: &str) -> Pod {
    let st = lab.state();
    let (ns, name) = key.split_once('/').unwrap();
    let p = st["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["pods"].as_array().into_iter().flatten())
        .find(|p| p["namespace"] == ns && p["name"] == name)
        .unwrap_or_else(|| panic!("no pod {key} in the lab state"))
        .clone();
    let ip = |k: &str| p[k].as_str().unwrap_or_else(|| panic!("pod {key} has no {k}: {p}")).parse().unwrap();
    Pod { netns: p["ns"].as_str().unwrap().to_string(), ip: ip("ip"), ip6: ip("ip6") }
}

fn status(lab: &Lab, node: &str) -> Value {
    serde_json::from_slice(&std::fs::read(lab.dir().join(node).join("status.json")).unwrap_or_default())
        .unwrap_or(Value::Null)
}

/// Counts, inside pod `p`, every packet arriving from each of `srcs` (counter `s<i>`), before anything else.
fn count_arrivals(p: &Pod, srcs: &[IpAddr]) {
    nft(&p.netns, "add table inet seen; add chain inet seen c { type filter hook prerouting priority -400; }");
    for (i, s) in srcs.iter().enumerate() {
        let fam = if s.is_ipv6() { "ip6" } else { "ip" };
        nft(&p.netns, &format!("add counter inet seen s{i}; add rule inet seen c {fam} saddr {s} counter name s{i}"));
    }
}

fn nft_counter(ns: &str, table: &str, name: &str) -> u64 {
    let o = ns_exec(ns, &["nft", "-j", "list", "counter", "inet", table, name]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    j["nftables"].as_array().into_iter().flatten().find_map(|o| o["counter"]["packets"].as_u64()).unwrap_or(0)
}

fn arrivals(p: &Pod, i: usize) -> u64 {
    nft_counter(&p.netns, "seen", &format!("s{i}"))
}

fn metric(node_ns: &str, name: &str) -> Option<u64> {
    let o = ns_exec(node_ns, &["curl", "-sf", "-m", "2", "http://127.0.0.1:9473/metrics"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// node3 (`from_ns`, underlay `from_ip`) sends `frame` `COUNT` times to node1's VXLAN port.
fn send(from_ns: &str, from_ip: &str, to_ip: &str, frame: &[u8]) {
    let target = format!("{to_ip}:8472/udp");
    let count = COUNT.to_string();
    let payload = hex(frame);
    let args = [
        env!("CARGO_BIN_EXE_weft-probe"),
        "send",
        "--src",
        from_ip,
        "--count",
        &count,
        "--interval-ms",
        "5",
        "--payload-hex",
        &payload,
        &target,
    ];
    let o = ns_exec(from_ns, &args);
    assert!(o.status.success(), "weft-probe send: {}", text(&o));
}

fn ping(from: &Pod, to: IpAddr) {
    let o = ns_exec(&from.netns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()]);
    assert!(o.status.success(), "{} → {to}: {}", from.netns, text(&o));
}

#[test]
fn admitted_node_cannot_forge_another_nodes_pod_as_inner_source() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(
        "vs",
        &[
            "--backend",
            "vxlan",
            "--nodes",
            "3",
            "--ipv6",
            "--pods-per-node",
            "0",
            "--network",
            "blue:10.50.0.0/16:100:blue-a",
        ],
    );
    for (node, key) in [
        ("node1", "default/t"),
        ("node1", "blue-a/t"),
        ("node2", "default/b"),
        ("node2", "blue-a/b"),
        ("node3", "default/r"),
        ("node3", "blue-a/r"),
    ] {
        lab.ok(&["lab", "pod-add", "--node", node, "--pod", key]);
    }
    let (t, bt) = (pod(&lab, "default/t"), pod(&lab, "blue-a/t"));
    let (b, bb) = (pod(&lab, "default/b"), pod(&lab, "blue-a/b"));
    let (r, br) = (pod(&lab, "default/r"), pod(&lab, "blue-a/r"));
    let st = lab.state();
    let node_ip = |i: usize| st["nodes"][i]["ip"].as_str().unwrap().to_string();
    let (n1, n3) = (lab.node_ns(0), lab.node_ns(2));
    let (n1_ip, n3_ip) = (node_ip(0), node_ip(2));
    let vtep = |node: &str| {
        let s = status(&lab, node);
        mac(s["vtepMac"].as_str().unwrap_or_else(|| panic!("{node} has no vtepMac: {s}")))
    };
    let (to_mac, from_mac) = (vtep("node1"), vtep("node3"));
    let spoofed = || nft_counter(&n1, "weft", "vxlan_spoofed_inner");

    // Normal traffic first, through the tunnel both ways, both families, both networks: never counted.
    for (from, to) in [(&b, &t), (&t, &b), (&r, &t), (&bb, &bt), (&bt, &bb), (&br, &bt)] {
        ping(from, to.ip);
        ping(from, to.ip6);
    }
    assert_eq!(spoofed(), 0, "node1 dropped legitimate tunnel traffic as spoofed");

    // Sources counted in t: 0 = b (node2's pod, forged), 1 = r (node3's own, control), 2/3 the same in IPv6.
    count_arrivals(&t, &[b.ip, r.ip, b.ip6, r.ip6]);
    // In blue's t: 0 = blue b (forged), 1 = blue r (control), 2 = node3's default pod on blue's VNI (forged).
    count_arrivals(&bt, &[bb.ip, br.ip, r.ip]);
    let forged = [
        vxlan_frame(VNI_DEFAULT, to_mac, from_mac, b.ip, t.ip),
        vxlan_frame(VNI_DEFAULT, to_mac, from_mac, b.ip6, t.ip6),
        vxlan_frame(VNI_BLUE, to_mac, from_mac, bb.ip, bt.ip),
        vxlan_frame(VNI_BLUE, to_mac, from_mac, r.ip, bt.ip),
    ];
    let own = [
        vxlan_frame(VNI_DEFAULT, to_mac, from_mac, r.ip, t.ip),
        vxlan_frame(VNI_DEFAULT, to_mac, from_mac, r.ip6, t.ip6),
        vxlan_frame(VNI_BLUE, to_mac, from_mac, br.ip, bt.ip),
    ];
    let IpAddr::V4(r4) = r.ip else { panic!("IPv4 pod") };
    let IpAddr::V4(t4) = t.ip else { panic!("IPv4 pod") };
    let arp = arp_frame(VNI_DEFAULT, to_mac, from_mac, r4.octets(), t4.octets());

    let before = spoofed();
    for f in forged.iter().chain([&arp]) {
        send(&n3, &n3_ip, &n1_ip, f);
    }
    // The controls go the same way after the forgeries: once they are in, the forgeries would be too.
    for f in &own {
        send(&n3, &n3_ip, &n1_ip, f);
    }
    let n = u64::from(COUNT);
    let arrived =
        wait_until(Duration::from_secs(15), || arrivals(&t, 1) >= n && arrivals(&t, 3) >= n && arrivals(&bt, 1) >= n);
    assert!(
        arrived,
        "node3's own pod sources did not arrive (v4 {}, v6 {}, blue {}): the test could not see a delivery",
        arrivals(&t, 1),
        arrivals(&t, 3),
        arrivals(&bt, 1)
    );
    let counted = wait_until(Duration::from_secs(10), || spoofed() >= before + 5 * n);
    let (v4, v6, blue, cross) = (arrivals(&t, 0), arrivals(&t, 2), arrivals(&bt, 0), arrivals(&bt, 2));
    println!(
        "forged from node3: arrived v4 {v4}, v6 {v6}, blue {blue}, default-on-blue {cross}; counted {}",
        spoofed() - before
    );
    assert_eq!((v4, v6, blue, cross), (0, 0, 0, 0), "forged inner sources reached pods on node1");
    assert!(counted, "node1 counted {} forged packets, want >= {}", spoofed() - before, 5 * n);
    // Exported: the metrics follow the counter on the agent's next full pass.
    let exported = wait_until(Duration::from_secs(30), || {
        metric(&n1, "weft_vxlan_spoofed_inner_packets").is_some_and(|m| m >= before + 5 * n)
    });
    assert!(exported, "weft_vxlan_spoofed_inner_packets: {:?}", metric(&n1, "weft_vxlan_spoofed_inner_packets"));

    // Before the fix: the same table without the check (its chain emptied, so the jump returns and the packet
    // goes on to the socket). The very same forgeries now reach the pods.
    nft(&n1, "flush chain inet weft vxlan_inner");
    for f in &forged[..3] {
        send(&n3, &n3_ip, &n1_ip, f);
    }
    let reached =
        wait_until(Duration::from_secs(15), || arrivals(&t, 0) >= n && arrivals(&t, 2) >= n && arrivals(&bt, 0) >= n);
    assert!(
        reached,
        "without the check the forgeries should arrive (v4 {}, v6 {}, blue {}): the test shows nothing",
        arrivals(&t, 0),
        arrivals(&t, 2),
        arrivals(&bt, 0)
    );
}

#[test]
fn ipv6_underlay_same_offsets_same_verdicts() {
    use weft_agent::firewall::{self, vxlan_source, FirewallSpec};
    use weft_types::{BackendData, Lease, NetworkConfig};
    if !require_root() {
        return;
    }
    let id = unique();
    let (a, b) = (Netns::new(format!("wva{id}")), Netns::new(format!("wvb{id}")));
    a.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name]);
    for (ns, addr) in [(&a, "fd00:77::1/64"), (&b, "fd00:77::2/64")] {
        ns.ip(&["addr", "add", addr, "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    // Node A: a VXLAN device on the IPv6 underlay, with its pod gateway addresses (where decapsulated packets go).
    let a_mac = "02:00:00:00:00:01";
    a.ip(&[
        "link",
        "add",
        "vx0",
        "address",
        a_mac,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "fd00:77::1",
        "dstport",
        "8472",
    ]);
    a.ip(&["link", "set", "vx0", "type", "vxlan", "nolearning"]);
    a.ip(&["addr", "add", "10.244.1.1/24", "dev", "vx0"]);
    a.ip(&["addr", "add", "fd00:10:244:1::1/64", "dev", "vx0", "nodad"]);
    a.ip(&["link", "set", "vx0", "up"]);
    let cfg: NetworkConfig =
        serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16","clusterCidr6":"fd00:10:244::/48","subnetLen6":64}"#)
            .unwrap();
    let lease = |i: u8| Lease {
        node: format!("n{i}"),
        subnet: format!("10.244.{i}.0/24").parse().unwrap(),
        subnet6: Some(format!("fd00:10:244:{i}::/64").parse().unwrap()),
        node_ip: format!("fd00:77::{i}").parse().unwrap(),
        backend_data: BackendData::Vxlan { vtep_mac: format!("02:00:00:00:00:0{i}") },
        expires_at_ms: 0,
    };
    let leases = [lease(1), lease(2)];
    let allowed = vxlan_source::allowed(&cfg, &leases, &[]);
    assert!(allowed.skipped.is_empty(), "{:?}", allowed.skipped);
    let table = firewall::render(&FirewallSpec {
        cluster_cidr: cfg.cluster_cidr,
        cluster_cidr6: cfg.cluster_cidr6,
        vxlan_port: Some(8472),
        node_ips: leases.iter().map(|l| l.node_ip).collect(),
        masquerade: false,
        agent_port: None,
        vxlan_sources: Some(allowed.sources),
    });
    let file = std::env::temp_dir().join(format!("weft-vxsrc-{id}.nft"));
    std::fs::write(&file, &table).unwrap();
    a.exec("nft", &["-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);

    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let (own4, own6, forged4, forged6) =
        (ip("10.244.2.5"), ip("fd00:10:244:2::5"), ip("10.244.3.5"), ip("fd00:10:244:3::5"));
    let a_pod = Pod { netns: a.name.clone(), ip: ip("10.244.1.1"), ip6: ip("fd00:10:244:1::1") };
    count_arrivals(&a_pod, &[own4, own6, forged4, forged6]);
    let (to, from) = (mac(a_mac), mac("02:00:00:00:00:02"));
    let mut truncated = vxlan_frame(1, to, from, forged4, a_pod.ip);
    truncated.truncate(30); // ends inside the inner IPv4 header, before its source
    let forged = [
        vxlan_frame(1, to, from, forged4, a_pod.ip),
        vxlan_frame(1, to, from, forged6, a_pod.ip6),
        vxlan_frame(2, to, from, own4, a_pod.ip), // B's own source, on a VNI it has nothing on
        truncated,
    ];
    for f in &forged {
        send(&b.name, "fd00:77::2", "[fd00:77::1]", f);
    }
    for f in [vxlan_frame(1, to, from, own4, a_pod.ip), vxlan_frame(1, to, from, own6, a_pod.ip6)] {
        send(&b.name, "fd00:77::2", "[fd00:77::1]", &f);
    }
    let n = u64::from(COUNT);
    let arrived = wait_until(Duration::from_secs(15), || arrivals(&a_pod, 0) >= n && arrivals(&a_pod, 1) >= n);
    assert!(arrived, "B's own sources did not arrive over the IPv6 underlay: {table}");
    let spoofed = || nft_counter(&a.name, "weft", "vxlan_spoofed_inner");
    assert!(wait_until(Duration::from_secs(10), || spoofed() >= 4 * n), "counted {}, want {}", spoofed(), 4 * n);
    assert_eq!((arrivals(&a_pod, 2), arrivals(&a_pod, 3)), (0, 0), "forged inner sources were decapsulated");
}
