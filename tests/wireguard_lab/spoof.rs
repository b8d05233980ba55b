//! The attack that works on VXLAN (tests/lab.rs, `vxlan_from_unknown_source_is_dropped` and the README's
//! "this filter is not authentication"), on WireGuard: a host on the nodes' segment sends to node1's WireGuard
//! port with node2's address as its source, which passes the node-IP filter. It replays real node2 → node1
//! WireGuard packets (each carrying a ping to a pod), sends a tampered copy, and runs its own WireGuard
//! (Debian's wireguard-go, a key of its own) claiming node2's pod address. Nothing of it reaches the pod
//! (counted inside the pod's namespace), node1 counts the replays and the forgery as decryption failures on
//! node2's session and every one of the impostor's handshake initiations as a drop from an unknown peer (status,
//! `weftctl status`, metrics), and node1 never answers the impostor (nothing from node1 arrives at the rogue
//! host).
use crate::kit::{contains, now_ms, ns_exec, reaches, sh, udp_payloads, Capture, Lab, WG_PORT};
use std::time::Duration;
use weft_e2e::wg::Go;
use weft_e2e::{bin, require_root, run, unique, wait_until, Netns};

/// WireGuard handshake initiations (message type 1, 148 bytes) in an Ethernet pcap sent by MAC `from`.
fn initiations_from(pcap: &[u8], from: &[u8; 6]) -> usize {
    let (mut i, mut n) = (24, 0);
    while i + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[i + 8..i + 12].try_into().unwrap()) as usize;
        let frame = &pcap[i + 16..(i + 16 + caplen).min(pcap.len())];
        i += 16 + caplen;
        let ihl = frame.get(14).map_or(0, |b| usize::from(b & 0xf) * 4);
        let payload = frame.get(14 + ihl + 8..).unwrap_or_default();
        if frame.get(6..12) == Some(&from[..])
            && frame.get(14 + 9) == Some(&17)
            && payload.len() == 148
            && payload[0] == 1
        {
            n += 1;
        }
    }
    n
}

/// node1's status once written by a pass that began after this call (the device counters it holds are then at
/// least as new as everything that arrived before the call).
fn fresh_status(lab: &Lab, node: &str) -> serde_json::Value {
    let since = now_ms();
    let mut st = serde_json::Value::Null;
    let fresh = wait_until(Duration::from_secs(60), || {
        st = lab.status(node);
        st["lastReconcileAtMs"].as_u64().is_some_and(|at| at > since)
    });
    assert!(fresh, "{node} wrote no status for 60 s: {st}");
    st
}

/// What node1 dropped as handshakes from unknown keys: (status.json, `weftctl status` text, `/metrics`).
fn unknown_peer_drops(lab: &Lab) -> (u64, String, u64) {
    let st = fresh_status(lab, "node1");
    let status = st["tunnelDropped"]["unknownPeer"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tunnel drop counters in node1's status: {st}"));
    let text = lab.ok(&["status", "--node", "node1"]);
    let line = text.lines().find(|l| l.starts_with("tunnel dropped")).unwrap_or_else(|| panic!("{text}")).to_string();
    let (n1, _) = lab.node(0);
    let m = ns_exec(&n1, &["curl", "-sf", "-m", "5", "http://127.0.0.1:9473/metrics"]);
    let m = String::from_utf8_lossy(&m.stdout);
    let series = "weft_tunnel_dropped_packets_total{reason=\"unknown_peer\"} ";
    let metric = m
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in node1's metrics:\n{m}"));
    (status, line, metric)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn wireguard_lab_spoofed_peer_address_never_reaches_a_pod() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--underlay", "l2"]);
    let st = lab.state();
    let fabric = st["fabricNs"].as_str().unwrap().to_string();
    let (n1, ip1) = lab.node(0);
    let (_, ip2) = lab.node(1);
    let pods = lab.pods();
    let (target, sender) = (&pods[0], &pods[2]);
    assert_eq!((target.node.as_str(), sender.node.as_str()), ("node1", "node2"));
    // What reaches the target pod from node2's pod address: counted in the pod's own namespace, first thing.
    sh(
        &target.ns,
        &[
            "nft",
            &format!(
                "add table inet seen; add chain inet seen c {{ type filter hook prerouting priority -400; }}; \
                 add counter inet seen echo; add rule inet seen c ip saddr {} icmp type echo-request counter name echo",
                sender.ip
            ),
        ],
    );
    let delivered = || {
        let o = ns_exec(&target.ns, &["nft", "-j", "list", "counter", "inet", "seen", "echo"]);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        j["nftables"][1]["counter"]["packets"].as_u64().expect("counter in the target pod")
    };
    let failures = || {
        let s = lab.status("node1");
        let p = s["peers"].as_array().and_then(|ps| ps.iter().find(|p| p["node"] == "node2").cloned());
        p.and_then(|p| p["tunnel"]["decryptFailures"].as_u64()).unwrap_or(0)
    };

    // Real traffic node2 → node1 on the wire, to replay: 5 pings carrying a marker.
    let filter = ["udp", "and", "src", "host", &ip2, "and", "dst", "port", WG_PORT];
    let cap = Capture::start(&n1, "eth0", &filter);
    let marker = hex(b"spoof-me");
    let ok = ns_exec(&sender.ns, &["ping", "-c", "5", "-i", "0.2", "-W", "2", "-p", &marker, &target.ip]);
    assert!(ok.status.success(), "control: node2's pod reaches node1's pod");
    let (raw, _) = cap.finish();
    assert!(!contains(&raw, b"spoof-me"), "the marker crossed the underlay in clear");
    let data: Vec<Vec<u8>> = udp_payloads(&raw)
        .into_iter()
        .filter(|(_, port, p)| port.to_string() == WG_PORT && p.first() == Some(&4) && p.len() > 100)
        .map(|(_, _, p)| p)
        .collect();
    // (Usually one per ping; the sender's UDP GSO may hand the veth two in one frame, counted once here.)
    assert!(data.len() >= 3, "captured only {} WireGuard data packets from node2", data.len());
    let seen_before = delivered();
    assert!(seen_before >= 5, "control: the real pings were counted in the pod ({seen_before})");

    // The rogue host on the segment, holding node2's address; it never answers ARP and never asks (a static
    // neighbour for node1), so node1 keeps sending node2's traffic to node2.
    let rogue = Netns::new(format!("wr{}", unique()));
    let port = format!("r{}", unique());
    run("ip", &["-n", &fabric, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &rogue.name]);
    run("ip", &["-n", &fabric, "link", "set", &port, "master", "br0", "up"]);
    for k in ["all", "eth0"] {
        rogue.exec("sysctl", &["-qw", &format!("net.ipv4.conf.{k}.arp_ignore=8")]);
    }
    rogue.ip(&["addr", "add", &format!("{ip2}/32"), "dev", "eth0"]);
    rogue.ip(&["link", "set", "eth0", "up"]);
    let mac1 = sh(&n1, &["cat", "/sys/class/net/eth0/address"]).trim().to_string();
    rogue.ip(&["neigh", "add", &ip1, "lladdr", &mac1, "dev", "eth0", "nud", "permanent"]);
    rogue.ip(&["route", "add", &format!("{ip1}/32"), "dev", "eth0"]);
    let at_rogue = Capture::start(&rogue.name, "eth0", &["udp", "and", "src", "host", &ip1]);

    // 1. Replays and a tampered copy, from node2's address.
    let failures_before = failures();
    let mut tampered = data[data.len() - 1].clone();
    let n = tampered.len();
    tampered[n - 20] ^= 0x55;
    let mut packets: Vec<String> = data.iter().map(|d| hex(d)).collect();
    packets.push(hex(&tampered));
    let to = format!("{ip1}:{WG_PORT}");
    let mut args = vec!["send-udp", "--from", ip2.as_str(), "--to", to.as_str(), "--hex"];
    args.extend(packets.iter().map(String::as_str));
    rogue.exec(bin("weft-tunnel-test").to_str().unwrap(), &args);
    let want = failures_before + packets.len() as u64;
    let counted = wait_until(Duration::from_secs(15), || failures() >= want);
    assert!(counted, "node1 counted {} decryption failures on node2's session, want {want}", failures());

    // 2. An impostor WireGuard with its own key, claiming node2's pod address, aimed at node1. Before it: what
    // node1 has dropped as handshakes from unknown keys so far (initiations that raced the lab's start, if any).
    let (unknown_before, line, metric) = unknown_peer_drops(&lab);
    assert!(line.contains(&format!(" {unknown_before} unknown peer")), "weftctl status says {line:?}");
    assert_eq!(metric, unknown_before, "metrics and status disagree before the attack");
    let node1_key = lab.lease_key("node1");
    let rogue_mac: Vec<u8> = sh(&rogue.name, &["cat", "/sys/class/net/eth0/address"])
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let at_node1 = Capture::start(&n1, "eth0", &["udp", "and", "src", "host", &ip2]);
    let impostor = Go::start(&rogue, &format!("wg{}", unique()), 51820, &format!("{}/32", sender.ip));
    impostor.add_peer(&node1_key, &to, &format!("{}/32", target.ip));
    rogue.ip(&["route", "add", &format!("{}/32", target.ip), "dev", &impostor.ifname]);
    // Over 6 s: wireguard-go retries its initiation after 5 s, so node1 sees (and must count) more than one.
    let got_in = rogue.try_exec("ping", &["-c", "13", "-i", "0.5", "-W", "1", &target.ip]);
    assert!(!got_in.status.success(), "the impostor got an answer from node1's pod");

    std::thread::sleep(Duration::from_secs(1));
    let seen_after = delivered();
    // The impostor stops before the captures do, so they hold every initiation it sent.
    drop(impostor);
    let (_, answers) = at_rogue.finish();
    let (raw1, _) = at_node1.finish();
    let tries = initiations_from(&raw1, &rogue_mac.try_into().unwrap());
    assert!(tries >= 1, "control: the impostor's handshake initiations did not reach node1");
    // Each initiation is counted once as from an unknown peer, in the status, `weftctl status` and metrics.
    let want = unknown_before + tries as u64;
    let mut unknown = unknown_peer_drops(&lab);
    let counted = wait_until(Duration::from_secs(30), || {
        unknown = unknown_peer_drops(&lab);
        unknown.0 >= want
    });
    assert!(counted, "node1 counted {} handshakes from unknown keys, want {want}", unknown.0);
    let (unknown_after, line, metric) = unknown;
    assert_eq!(
        unknown_after, want,
        "node1 counted other drops than the impostor's {tries} initiations as unknown peer"
    );
    assert!(line.contains(&format!(" {want} unknown peer")), "weftctl status says {line:?}");
    assert_eq!(metric, want, "weft_tunnel_dropped_packets_total{{reason=\"unknown_peer\"}}");
    println!(
        "spoofed node2 ({ip2}) → node1's WireGuard port: {} replayed + 1 tampered packets, counted as {} decryption \
         failures; impostor handshake initiations {tries}, counted as unknown peer {} (before the attack: \
         {unknown_before}), answered: {}; packets delivered to the pod: {}",
        data.len(),
        failures() - failures_before,
        unknown_after - unknown_before,
        answers.len(),
        seen_after - seen_before
    );
    assert_eq!(seen_after, seen_before, "a spoofed packet reached the pod");
    assert!(answers.is_empty(), "node1 answered the rogue host: {answers:?}");
    // The real node2 was not disturbed by any of it.
    assert!(reaches(&sender.ns, &target.ip, 10), "node2's pod lost node1's pod after the attack");
}
