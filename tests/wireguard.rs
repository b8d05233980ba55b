//! weft's WireGuard datapath (crates/tunnel, run by `weft-tunnel-test`) against a real peer: Debian's
//! `wireguard-go` configured with `wg`, each in its own namespace over a veth underlay.
//!
//! Proven here: wire compatibility (handshake, ping and TCP both ways), `wg show` on our UAPI socket, what the
//! underlay sees (only WireGuard UDP, never the cleartext), that forged, replayed and unknown-key packets never
//! reach the inner side (and are counted), that a restart of the tunnel process keeps a TCP stream, and that a
//! key rotation does too.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_e2e::wg::{Go, Ours, Underlay, UNDER_A, UNDER_B};
use weft_e2e::{bin, require_root, run, wait_until, Netns, TempDir};

const GO_PORT: u16 = 51820;
const OUR_PORT: u16 = 51821;
const GO_INNER: &str = "10.201.0.1";
const OUR_INNER: &str = "10.201.0.2";
/// "WEFTMARKER" in hex, as `ping -p` wants it (it fills the ICMP payload with the pattern).
const MARKER: &[u8] = b"WEFTMARKER";

struct Pair {
    u: Underlay,
    go: Go,
    ours: Ours,
}

fn pair(extra: &[&str]) -> Pair {
    let u = Underlay::new();
    let go = Go::start(&u.a, &format!("wg{}g", u.token), GO_PORT, &format!("{GO_INNER}/24"));
    let mut ours = Ours::start(&u.b, &format!("wg{}o", u.token), OUR_PORT, &format!("{OUR_INNER}/24"), extra);
    go.add_peer(&ours.public_key(), &format!("{UNDER_B}:{OUR_PORT}"), &format!("{OUR_INNER}/32"));
    let go_ep = format!("{UNDER_A}:{GO_PORT}");
    let allowed = format!("{GO_INNER}/32");
    ours.set_peers(&[(&go.public_key, &go_ep, &[&allowed])]);
    assert!(
        wait_until(Duration::from_secs(30), || u.a.ping(OUR_INNER)),
        "no ping through the tunnel; our log:\n{}",
        ours.log()
    );
    Pair { u, go, ours }
}

/// tcpdump writing a pcap, stopped (and flushed) on `stop`.
struct Capture {
    child: Option<Child>,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(ns: &Netns, ifname: &str, file: &Path, filter: &[&str]) -> Capture {
        let child = ns
            .command("tcpdump")
            .args(["-i", ifname, "-U", "-n", "-w"])
            .arg(file)
            .args(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump not installed");
        // The pcap header is written once the capture is live.
        assert!(wait_until(Duration::from_secs(10), || std::fs::metadata(file).is_ok_and(|m| m.len() >= 24)));
        Capture { child: Some(child), file: file.to_path_buf() }
    }

    fn stop(&mut self) -> Vec<u8> {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
            let _ = c.wait();
        }
        std::fs::read(&self.file).expect("pcap")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// UDP payloads of the IPv4/UDP packets in an Ethernet pcap, with their source and destination ports.
fn udp_payloads(pcap: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[i + 8..i + 12].try_into().unwrap()) as usize;
        let frame = &pcap[i + 16..(i + 16 + caplen).min(pcap.len())];
        i += 16 + caplen;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0xf) * 4;
        let udp = &frame[14 + ihl..];
        let (sp, dp) = (u16::from_be_bytes([udp[0], udp[1]]), u16::from_be_bytes([udp[2], udp[3]]));
        out.push((sp, dp, udp[8..].to_vec()));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn iperf(server: &Netns, server_ip: &str, client: &Netns, port: u16, args: &[&str]) -> Value {
    let p = port.to_string();
    server.exec("iperf3", &["-s", "-1", "-D", "-B", server_ip, "-p", &p]);
    let mut out = None;
    let ok = wait_until(Duration::from_secs(10), || {
        let mut all = vec!["-c", server_ip, "-p", &p, "-J"];
        all.extend_from_slice(args);
        let o = client.try_exec("iperf3", &all);
        let done = o.status.success();
        out = Some(o);
        done
    });
    let o = out.expect("iperf3 ran");
    assert!(ok, "iperf3 failed: {}", String::from_utf8_lossy(&o.stdout));
    serde_json::from_slice(&o.stdout).expect("iperf3 JSON")
}

fn received_bytes(v: &Value) -> u64 {
    v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

#[test]
fn wireguard_go_interop_capture_and_forgeries() {
    if !require_root() {
        return;
    }
    let Pair { u, go, mut ours } = pair(&[]);
    let tmp = TempDir::new("wgcap");
    let mut under = Capture::start(&u.b, &u.veth_b, &tmp.path().join("under.pcap"), &["not", "arp"]);
    let mut inner = Capture::start(&u.b, &ours.ifname, &tmp.path().join("inner.pcap"), &[]);

    // Ping both ways with the marker as payload, then TCP both ways.
    let pattern = hex(MARKER);
    u.a.exec("ping", &["-c", "3", "-i", "0.2", "-p", &pattern, OUR_INNER]);
    u.b.exec("ping", &["-c", "3", "-i", "0.2", "-p", &pattern, GO_INNER]);
    let up = iperf(&u.b, OUR_INNER, &u.a, 5301, &["-t", "2"]);
    let down = iperf(&u.a, GO_INNER, &u.b, 5302, &["-t", "2"]);
    assert!(received_bytes(&up) > 1_000_000 && received_bytes(&down) > 1_000_000, "TCP through the tunnel");

    let st = ours.peer_stats(&go.public_key);
    assert!(st["handshakes"].as_u64().unwrap_or(0) >= 1, "handshake counted: {st}");
    assert!(st["rx_bytes"].as_u64().unwrap_or(0) > 1_000_000 && st["tx_bytes"].as_u64().unwrap_or(0) > 1_000_000);
    assert!(st["handshake_age"].is_object(), "handshake age shown: {st}");

    // `wg show` (wireguard-tools) reads our UAPI socket.
    let show = run("wg", &["show", &ours.ifname]);
    assert!(show.contains(&go.public_key) && show.contains("latest handshake"), "wg show:\n{show}");

    // Forgeries from a spoofed underlay address: a replayed real data packet and a tampered copy.
    let pcap = std::fs::read(tmp.path().join("under.pcap")).expect("pcap so far");
    let data = udp_payloads(&pcap)
        .into_iter()
        .rev()
        .find(|(sp, dp, p)| *sp == GO_PORT && *dp == OUR_PORT && p.first() == Some(&4) && p.len() > 100)
        .expect("a data packet from wireguard-go on the underlay")
        .2;
    let mut tampered = data.clone();
    let last = tampered.len() - 20;
    tampered[last] ^= 0x55;
    u.a.ip(&["addr", "add", "10.200.0.9/24", "dev", &u.veth_a]);
    let failures_before = st["decrypt_failures"].as_u64().unwrap_or(0);
    let rx_before = ours.peer_stats(&go.public_key)["rx_bytes"].as_u64().unwrap_or(0);
    let sender = bin("weft-tunnel-test");
    let to = format!("{UNDER_B}:{OUR_PORT}");
    u.a.exec(
        sender.to_str().unwrap(),
        &["send-udp", "--from", "10.200.0.9", "--to", &to, "--hex", &hex(&data), &hex(&tampered)],
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            ours.peer_stats(&go.public_key)["decrypt_failures"].as_u64().unwrap_or(0) >= failures_before + 2
        }),
        "replayed and tampered packets counted as decryption failures: {}",
        ours.peer_stats(&go.public_key)
    );
    let st = ours.peer_stats(&go.public_key);
    assert_eq!(st["endpoint"], format!("{UNDER_A}:{GO_PORT}"), "a forged packet must not move the endpoint");
    assert_eq!(st["rx_bytes"].as_u64().unwrap_or(0), rx_before, "nothing forged was delivered");

    // A WireGuard peer with a key we do not know: its handshakes are counted and nothing reaches our side.
    let impostor = Go::start(&u.a, &format!("wg{}x", u.token), 51822, "10.202.0.9/24");
    impostor.add_peer(&ours.public_key(), &to, &format!("{OUR_INNER}/32"));
    u.a.ip(&["route", "replace", &format!("{OUR_INNER}/32"), "dev", &impostor.ifname]);
    assert!(!u.a.ping(OUR_INNER), "an unknown key got through");
    assert!(
        wait_until(Duration::from_secs(15), || ours.counter("unknown_peer") >= 1),
        "unknown-key handshakes counted: {}",
        ours.stats()
    );

    let under = under.stop();
    let inner = inner.stop();
    assert!(contains(&inner, MARKER), "control: the marker crossed the inner interface");
    assert!(!contains(&inner, &[10, 202, 0, 9]), "a packet of the impostor reached the inner side");
    assert!(!contains(&under, MARKER), "the marker appeared in cleartext on the underlay");
    // Every packet on the underlay is UDP between WireGuard ports.
    let listing = run("tcpdump", &["-r", under_path(&tmp).as_str(), "-n"]);
    let mut lines = 0;
    for line in listing.lines() {
        lines += 1;
        // "IP SRC.PORT > DST.PORT: UDP, length N": UDP, to or from a WireGuard port (forgeries come from any port).
        let wg = [GO_PORT, OUR_PORT, 51822];
        let wg_ports = line.contains(": UDP, length")
            && wg.iter().any(|p| line.contains(&format!(".{p}: UDP")) || line.contains(&format!(".{p} >")));
        assert!(wg_ports, "a packet other than WireGuard UDP on the underlay: {line}");
    }
    assert!(lines > 100, "the capture saw the traffic ({lines} packets)");
    drop(impostor);
    ours.stop();
}

fn under_path(tmp: &TempDir) -> String {
    tmp.path().join("under.pcap").display().to_string()
}

/// Runs a 100 pps ping and a TCP stream from `a` to our side across `during`; returns (lost pings, iperf3 JSON).
fn stream_across(a: &Netns, b: &Netns, port: u16, during: impl FnOnce()) -> (u64, Value) {
    let ps = port.to_string();
    b.exec("iperf3", &["-s", "-1", "-D", "-B", OUR_INNER, "-p", &ps]);
    assert!(wait_until(Duration::from_secs(10), || {
        b.try_exec("ss", &["-Htln", &format!("sport = :{port}")]).stdout.len() > 1
    }));
    let iperf =
        a.command("iperf3").args(["-c", OUR_INNER, "-p", &ps, "-t", "8", "-J"]).stdout(Stdio::piped()).spawn().unwrap();
    let ping = a
        .command("ping")
        .args(["-i", "0.01", "-c", "700", "-W", "1", OUR_INNER])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    during();
    let iperf = iperf.wait_with_output().unwrap();
    let ping = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_string();
    let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    let lost = nums.first().zip(nums.get(1)).map(|(t, r)| t - r).unwrap_or(u64::MAX);
    let json: Value = serde_json::from_slice(&iperf.stdout).unwrap_or(Value::Null);
    assert!(iperf.status.success() && json["error"].is_null(), "the TCP stream broke: {json}");
    (lost, json)
}

#[test]
fn restart_of_the_tunnel_process_keeps_a_tcp_stream() {
    if !require_root() {
        return;
    }
    let Pair { u, go, mut ours } = pair(&[]);
    let link_before = u.b.ip(&["-o", "link", "show", &ours.ifname]);
    let mut down = Duration::ZERO;
    let (lost, json) = stream_across(&u.a, &u.b, 5303, || {
        let t = Instant::now();
        ours.restart();
        down = t.elapsed();
    });
    let link_after = u.b.ip(&["-o", "link", "show", &ours.ifname]);
    // The same device (same ifindex) survived the process: the kernel kept its addresses and routes.
    assert_eq!(link_before.split(':').next(), link_after.split(':').next(), "the persistent TUN device was recreated");
    assert!(received_bytes(&json) > 1_000_000, "the stream carried data: {json}");
    let st = ours.peer_stats(&go.public_key);
    assert!(st["handshakes"].as_u64().unwrap_or(0) >= 1, "the new process re-handshook: {st}");
    eprintln!(
        "restart: process down-and-up {:.0} ms, pings lost {lost} of 700 at 100 pps (~{} ms gap), TCP stream kept \
         ({} retransmits)",
        down.as_secs_f64() * 1000.0,
        lost * 10,
        json["end"]["sum_sent"]["retransmits"]
    );
    ours.stop();
}

#[test]
fn key_rotation_keeps_a_tcp_stream() {
    if !require_root() {
        return;
    }
    let Pair { u, go, mut ours } = pair(&[]);
    let old = ours.public_key();
    let key_file = ours.dir.path().join("key").join("wireguard.key");
    let old_file = std::fs::read_to_string(&key_file).unwrap();
    let handshakes_before = ours.peer_stats(&go.public_key)["handshakes"].as_u64().unwrap_or(0);
    let mut new = String::new();
    let (lost, json) = stream_across(&u.a, &u.b, 5304, || {
        new = ours.rotate();
        // The control plane tells the peer the new key (in weft: the lease); wireguard-go drops the old peer.
        go.add_peer(&new, &format!("{UNDER_B}:{OUR_PORT}"), &format!("{OUR_INNER}/32"));
        go.wg_set(&["peer", &old, "remove"]);
    });
    assert_ne!(new, old);
    assert!(received_bytes(&json) > 1_000_000, "the stream carried data: {json}");
    let st = ours.peer_stats(&go.public_key);
    assert!(st["handshakes"].as_u64().unwrap_or(0) > handshakes_before, "a handshake with the new key: {st}");
    let show = run("ip", &["netns", "exec", &u.a.name, "wg", "show", &go.ifname, "latest-handshakes"]);
    assert!(
        show.lines().any(|l| l.starts_with(&new) && !l.ends_with("\t0")),
        "wireguard-go shook hands with the new key: {show}"
    );
    let new_file = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(old_file, new_file, "the new key was stored");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    eprintln!("rotation: pings lost {lost} of 700 at 100 pps, TCP stream kept");
    ours.stop();
}

#[test]
fn peers_join_and_leave_live_without_disturbing_the_others() {
    if !require_root() {
        return;
    }
    let Pair { u, go, mut ours } = pair(&[]);
    // A second wireguard-go node with its own inner subnet.
    let go2 = Go::start(&u.a, &format!("wg{}h", u.token), 51822, "10.201.1.1/24");
    go2.add_peer(&ours.public_key(), &format!("{UNDER_B}:{OUR_PORT}"), &format!("{OUR_INNER}/32"));
    // Both nodes live in namespace A: the second one's replies leave through its own device (policy routing).
    u.a.ip(&["route", "add", &format!("{OUR_INNER}/32"), "dev", &go2.ifname, "table", "100"]);
    u.a.ip(&["rule", "add", "from", "10.201.1.1", "lookup", "100"]);
    u.b.ip(&["route", "add", "10.201.1.0/24", "dev", &ours.ifname]);
    let (ep1, ep2) = (format!("{UNDER_A}:{GO_PORT}"), format!("{UNDER_A}:51822"));
    let (ips1, ips2) = ([format!("{GO_INNER}/32")], ["10.201.1.0/24".to_string()]);
    let ips1: Vec<&str> = ips1.iter().map(String::as_str).collect();
    let ips2: Vec<&str> = ips2.iter().map(String::as_str).collect();
    let handshakes = |o: &Ours, k: &str| o.peer_stats(k)["handshakes"].as_u64().unwrap_or(0);
    // The count once it has stopped moving: a first handshake can be doubled (both ends initiate at once) or
    // retried (an answer slower than wireguard-go's 5 s retry on a loaded machine); that is not a disturbance.
    let settled = |o: &Ours, k: &str| {
        let mut last = (handshakes(o, k), std::time::Instant::now());
        let t0 = std::time::Instant::now();
        while last.1.elapsed() < Duration::from_secs(7) && t0.elapsed() < Duration::from_secs(90) {
            std::thread::sleep(Duration::from_millis(200));
            let now = handshakes(o, k);
            if now != last.0 {
                last = (now, std::time::Instant::now());
            }
        }
        last.0
    };

    // Join: the new peer works, the first one keeps its session (no new handshake).
    let h1 = settled(&ours, &go.public_key);
    ours.set_peers(&[(&go.public_key, &ep1, &ips1), (&go2.public_key, &ep2, &ips2)]);
    assert!(wait_until(Duration::from_secs(20), || u.b.ping("10.201.1.1")), "the new peer is reachable");
    assert!(u.b.ping(GO_INNER), "the first peer still is");
    assert_eq!(handshakes(&ours, &go.public_key), h1, "the first peer was not disturbed");

    // Leave: the removed peer is unreachable at once, the other untouched.
    let h2 = settled(&ours, &go2.public_key);
    ours.set_peers(&[(&go2.public_key, &ep2, &ips2)]);
    assert!(wait_until(Duration::from_secs(10), || !u.b.ping(GO_INNER)), "the removed peer still gets traffic");
    assert!(u.b.ping("10.201.1.1"));
    assert_eq!(handshakes(&ours, &go2.public_key), h2, "the remaining peer was not disturbed");
    let peers = ours.stats()["peers"].as_array().cloned().unwrap_or_default();
    assert_eq!(peers.len(), 1, "stats list only the configured peer: {peers:?}");
    ours.stop();
}

/// Both ends weft (the real deployment): one node rotates, the other learns the new key through its desired
/// peer set (same endpoint, new key), and a stream between them continues.
#[test]
fn weft_to_weft_key_change_on_one_side_keeps_a_tcp_stream() {
    if !require_root() {
        return;
    }
    let u = Underlay::new();
    let mut a = Ours::start(&u.a, &format!("wg{}p", u.token), GO_PORT, &format!("{GO_INNER}/24"), &[]);
    let mut b = Ours::start(&u.b, &format!("wg{}q", u.token), OUR_PORT, &format!("{OUR_INNER}/24"), &[]);
    let (ep_a, ep_b) = (format!("{UNDER_A}:{GO_PORT}"), format!("{UNDER_B}:{OUR_PORT}"));
    let (ips_a, ips_b) = (format!("{GO_INNER}/32"), format!("{OUR_INNER}/32"));
    let (ka, kb) = (a.public_key(), b.public_key());
    a.set_peers(&[(&kb, &ep_b, &[&ips_b])]);
    b.set_peers(&[(&ka, &ep_a, &[&ips_a])]);
    assert!(wait_until(Duration::from_secs(20), || u.a.ping(OUR_INNER)), "a: {}\nb: {}", a.log(), b.log());
    let before = a.peer_stats(&kb)["handshakes"].as_u64().unwrap_or(0);
    let mut new = String::new();
    let (lost, json) = stream_across(&u.a, &u.b, 5305, || {
        new = b.rotate();
        a.set_peers(&[(&new, &ep_b, &[&ips_b])]);
    });
    assert!(received_bytes(&json) > 1_000_000, "the stream carried data: {json}");
    let st = a.peer_stats(&new);
    assert!(st["handshakes"].as_u64().unwrap_or(0) > before, "a handshake with the new key: {st}");
    assert!(u.a.ping(OUR_INNER));
    eprintln!("weft↔weft key change: pings lost {lost} of 700 at 100 pps, TCP stream kept");
    a.stop();
    b.stop();
}
