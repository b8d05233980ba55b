//! End to end: `weftctl lab --backend wireguard` (real weftd agents running weft's userspace WireGuard over TUN,
//! real CNI plugin, a routed underlay): every pod pair talks, bulk TCP crosses nodes, the underlay carries only
//! WireGuard UDP and never a pod's payload, and an agent restart keeps a TCP connection. Modules under
//! `wireguard_lab/`: key rotation under traffic, and everything else on this backend (NetworkPolicy,
//! dual-stack and MTU, masquerade, drift repair, node removal, the store outage, kube mode, a spoofed peer), and
//! two agents on an IPv6 underlay (built by the test: the lab's underlays are IPv4) with their MTU, and `wg show`
//! on the agent's read-only UAPI socket.
//! (`#[path]` because a bare `mod kit;` in a test crate root would load tests/kit.rs.)
#[path = "wireguard_lab/drills.rs"]
mod drills;
#[path = "wireguard_lab/features.rs"]
mod features;
#[path = "wireguard_lab/ipv6_underlay.rs"]
mod ipv6_underlay;
#[path = "wireguard_lab/kit.rs"]
mod kit;
#[path = "wireguard_lab/rotation.rs"]
mod rotation;
#[path = "wireguard_lab/spoof.rs"]
mod spoof;
#[path = "wireguard_lab/wg_show.rs"]
mod wg_show;

use kit::{contains, iperf_server, ns_exec, Capture, Lab, Pod, WG_PORT};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;
use weft_e2e::{require_root, wait_until};

/// Bulk TCP: iperf3 for `secs` from pod `client` to pod `server`; returns (client exit ok, bytes received).
fn iperf(server: &Pod, client: &Pod, secs: u32) -> (bool, u64) {
    let port = iperf_server(&server.ns, &server.ip);
    let out = ns_exec(&client.ns, &["iperf3", "-c", &server.ip, "-p", &port, "-t", &secs.to_string(), "-J"]);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), j["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0))
}

#[test]
fn wireguard_lab_all_pairs_bulk_and_the_underlay_shows_only_wireguard() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&[]);
    let pods = lab.pods();
    assert_eq!(pods.len(), 6);
    for src in &pods {
        for dst in &pods {
            let ok = ns_exec(&src.ns, &["ping", "-c", "1", "-W", "2", &dst.ip]).status.success();
            assert!(ok, "{} cannot ping {}", src.ns, dst.ip);
        }
    }
    let (a, b) = (&pods[0], &pods[2]);
    assert_ne!(a.node, b.node, "pods on different nodes");
    let (_, bytes) = iperf(b, a, 2);
    assert!(bytes > 10_000_000, "bulk TCP across nodes moved only {bytes} bytes (MTU black hole?)");

    // The key file is the node's alone.
    let key = lab.dir().join("node1/wireguard.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).expect("key file").permissions());
    assert_eq!(mode & 0o077, 0, "key file {key:?} is readable by others: {mode:o}");
    let log = std::fs::read_to_string(lab.dir().join("node1/weftd.log")).unwrap();
    let private = std::fs::read_to_string(&key).unwrap();
    assert!(!log.contains(private.trim()), "the private key is in the log");

    // Per-peer session counters in the status (refreshed every pass, at the latest on the periodic resync).
    let status = || -> Value {
        serde_json::from_slice(&std::fs::read(lab.dir().join("node1/status.json")).unwrap_or_default())
            .unwrap_or(Value::Null)
    };
    let counted = wait_until(Duration::from_secs(60), || {
        let st = status();
        let peers = st["peers"].as_array().cloned().unwrap_or_default();
        peers.len() == 2
            && peers.iter().all(|p| {
                let t = &p["tunnel"];
                t["handshakeAgeMs"].is_u64() && t["rxBytes"].as_u64() > Some(0) && t["txBytes"].as_u64() > Some(0)
            })
    });
    assert!(counted, "no per-peer WireGuard counters in node1's status: {}", status());
    assert!(!status().to_string().contains(private.trim()), "the private key is in the status");

    // A marker from a pod on node1 to one on node2: on the underlay only WireGuard UDP, never the marker;
    // inside the tunnel device (the control) the marker is there.
    let marker = b"weft-wg-marker-7";
    let hex: String = marker.iter().map(|b| format!("{b:02x}")).collect();
    let (n1, _) = lab.node(0);
    let under = Capture::start(&n1, "eth0", &[]);
    let inner = Capture::start(&n1, "weft.1", &[]);
    let ping = ns_exec(&a.ns, &["ping", "-c", "5", "-i", "0.2", "-W", "2", "-p", &hex, &b.ip]);
    assert!(ping.status.success(), "marker ping failed: {}", String::from_utf8_lossy(&ping.stdout));
    let (_, bulk) = iperf(b, a, 1);
    assert!(bulk > 0);
    let (raw_inner, _) = inner.finish();
    let (raw, lines) = under.finish();
    assert!(contains(&raw_inner, marker), "the control capture inside the tunnel misses the marker");
    assert!(!contains(&raw, marker), "the marker crossed the underlay in clear");
    let wg = lines.iter().filter(|l| l.contains(&format!(".{WG_PORT}")) && l.contains("UDP")).count();
    assert!(wg > 10, "no WireGuard traffic on the underlay:\n{}", lines.join("\n"));
    for l in &lines {
        let ipv4 = l.contains(" IP ");
        let clear = ipv4 && !(l.contains(&format!(".{WG_PORT} ")) || l.contains(&format!(".{WG_PORT}:")));
        // Only link-level chatter (ARP, IPv6 neighbour discovery) may appear besides WireGuard.
        let other = !ipv4 && !l.contains("ARP") && !l.contains("ICMP6");
        assert!(!clear && !other, "non-WireGuard packet on the underlay: {l}\n{}", lines.join("\n"));
    }
}

#[test]
fn wireguard_lab_agent_restart_keeps_a_tcp_connection() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&[]);
    let pods = lab.pods();
    let (a, b) = (pods[0].clone(), pods[2].clone());
    // A 100 pps ping and an 8 s TCP stream from node1 to node2 while both agents restart.
    let pinger = Command::new("ip")
        .args(["netns", "exec", &a.ns, "ping", "-n", "-q", "-i", "0.01", "-c", "700", "-W", "1", &b.ip])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stream = std::thread::spawn(move || iperf(&b, &a, 8));
    std::thread::sleep(Duration::from_secs(2));
    for node in ["node1", "node2"] {
        lab.ok(&["lab", "restart", node]);
    }
    let (ok, bytes) = stream.join().unwrap();
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("restart of node1 and node2 agents during a 100 pps ping: {}", text.trim());
    assert!(ok && bytes > 1_000_000, "the TCP stream did not survive the restarts (ok {ok}, {bytes} bytes)");
    // The restarted agents re-attached to the same device and are ready.
    assert!(wait_until(Duration::from_secs(20), || {
        let st: Value = serde_json::from_slice(&std::fs::read(lab.dir().join("node1/status.json")).unwrap_or_default())
            .unwrap_or(Value::Null);
        st["ready"] == true
    }));
}
