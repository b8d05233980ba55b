//! End to end: `weftctl lab --backend wireguard` (real weftd agents running weft's userspace WireGuard over TUN,
//! real CNI plugin, a routed underlay): every pod pair talks, bulk TCP crosses nodes, the underlay carries only
//! WireGuard UDP and never a pod's payload, and an agent restart keeps a TCP connection.
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;
use weft_e2e::{bin, require_root, unique, wait_until};

/// The lab's WireGuard port (`weftctl lab` sets it in the network config).
const WG_PORT: &str = "51820";

/// A lab brought down on drop, even when the test fails.
struct Lab {
    name: String,
}

impl Lab {
    fn up() -> Lab {
        let name = format!("w{}", unique());
        let lab = Lab { name: name.clone() };
        let out = Command::new(bin("weftctl"))
            .args(["lab", "up", "--name", &name, "--lease-ttl", "4s", "--backend", "wireguard"])
            .output()
            .expect("weftctl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("{text}");
        assert!(out.status.success(), "lab up failed:\n{text}\n{}", lab.logs());
        assert!(text.contains("30/30 pod pairs connected"), "not every pod pair connected:\n{text}");
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
        for i in 1..=3 {
            if let Ok(l) = std::fs::read_to_string(self.dir().join(format!("node{i}/weftd.log"))) {
                let lines: Vec<&str> = l.lines().collect();
                s += &format!("--- node{i} weftd.log (tail)\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n"));
            }
        }
        s
    }

    fn restart(&self, node: &str) {
        let out = Command::new(bin("weftctl"))
            .args(["lab", "restart", "--name", &self.name, node])
            .output()
            .expect("weftctl");
        assert!(out.status.success(), "restart {node}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// (node, pod namespace, IPv4) of every pod, in node order.
    fn pods(&self) -> Vec<(String, String, String)> {
        let st = self.state();
        let mut v = vec![];
        for n in st["nodes"].as_array().unwrap() {
            for p in n["pods"].as_array().unwrap() {
                v.push((
                    n["name"].as_str().unwrap().into(),
                    p["ns"].as_str().unwrap().into(),
                    p["ip"].as_str().unwrap().into(),
                ));
            }
        }
        v
    }

    fn node_ns(&self, i: usize) -> String {
        self.state()["nodes"][i]["ns"].as_str().unwrap().to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let _ = Command::new(bin("weftctl")).args(["lab", "down", "--name", &self.name]).output();
    }
}

fn ns_exec(ns: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("ip netns exec")
}

/// A tcpdump in a namespace writing to a file; killed on drop.
struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(ns: &str, dev: &str) -> Capture {
        let file = std::env::temp_dir().join(format!("weft-wg-{}.pcap", unique()));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-U", "-n", "-i", dev, "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump");
        // The pcap header (24 bytes) is written once the capture is open.
        let open =
            wait_until(Duration::from_secs(20), || std::fs::metadata(&file).map(|m| m.len() >= 24).unwrap_or(false));
        assert!(open, "tcpdump on {dev} in {ns} did not start");
        std::thread::sleep(Duration::from_millis(300));
        Capture { child, file }
    }

    /// Stops the capture; returns its raw bytes and tcpdump's one-line decodes.
    fn finish(mut self) -> (Vec<u8>, Vec<String>) {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let raw = std::fs::read(&self.file).expect("pcap");
        let out = Command::new("tcpdump").args(["-nn", "-r"]).arg(&self.file).output().expect("tcpdump -r");
        let lines = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        (raw, lines)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Bulk TCP: iperf3 for `secs` from `client_ns` to `server_ip`; returns (client exit ok, bytes received).
fn iperf(server_ns: &str, server_ip: &str, client_ns: &str, secs: u32) -> (bool, u64) {
    let port = weft_e2e::free_port().to_string();
    let pidfile = std::env::temp_dir().join(format!("weft-iperf-{}.pid", unique()));
    let started = Command::new("ip")
        .args(["netns", "exec", server_ns, "iperf3", "-s", "-1", "-D", "-B", server_ip, "-p", &port, "--pidfile"])
        .arg(&pidfile)
        .status()
        .expect("iperf3");
    assert!(started.success(), "iperf3 server did not start");
    assert!(wait_until(Duration::from_secs(10), || pidfile.exists()), "iperf3 server has no pidfile");
    let out = ns_exec(client_ns, &["iperf3", "-c", server_ip, "-p", &port, "-t", &secs.to_string(), "-J"]);
    let _ = std::fs::remove_file(&pidfile);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), j["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0))
}

#[test]
fn wireguard_lab_all_pairs_bulk_and_the_underlay_shows_only_wireguard() {
    if !require_root() {
        return;
    }
    let lab = Lab::up();
    let pods = lab.pods();
    assert_eq!(pods.len(), 6);
    for (_, src, _) in &pods {
        for (_, _, dst) in &pods {
            assert!(ns_exec(src, &["ping", "-c", "1", "-W", "2", dst]).status.success(), "{src} cannot ping {dst}");
        }
    }
    let (a, b) = (&pods[0], &pods[2]);
    assert_ne!(a.0, b.0, "pods on different nodes");
    let (_, bytes) = iperf(&b.1, &b.2, &a.1, 2);
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
    let n1 = lab.node_ns(0);
    let under = Capture::start(&n1, "eth0");
    let inner = Capture::start(&n1, "weft.1");
    let ping = ns_exec(&a.1, &["ping", "-c", "5", "-i", "0.2", "-W", "2", "-p", &hex, &b.2]);
    assert!(ping.status.success(), "marker ping failed: {}", String::from_utf8_lossy(&ping.stdout));
    let (_, bulk) = iperf(&b.1, &b.2, &a.1, 1);
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
    let lab = Lab::up();
    let pods = lab.pods();
    let (a, b) = (pods[0].clone(), pods[2].clone());
    // A 100 pps ping and an 8 s TCP stream from node1 to node2 while both agents restart.
    let pinger = Command::new("ip")
        .args(["netns", "exec", &a.1, "ping", "-n", "-q", "-i", "0.01", "-c", "700", "-W", "1", &b.2])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stream = std::thread::spawn(move || iperf(&b.1, &b.2, &a.1, 8));
    std::thread::sleep(Duration::from_secs(2));
    for node in ["node1", "node2"] {
        lab.restart(node);
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
