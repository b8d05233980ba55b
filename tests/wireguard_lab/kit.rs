//! What the WireGuard lab tests share: a `weftctl lab --backend wireguard` torn down on drop, commands in
//! namespaces, captures, traffic that runs in the background while something happens, and what the store and
//! the agents' status files say.
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_e2e::{bin, unique, wait_until};

/// The lab's WireGuard port (`weftctl lab` sets it in the network config).
pub const WG_PORT: &str = "51820";

/// A lab brought down on drop, even when the test fails.
pub struct Lab {
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub node: String,
    pub ns: String,
    pub ip: String,
    pub ip6: Option<String>,
}

impl Lab {
    /// `weftctl lab up --backend wireguard --lease-ttl 4s EXTRA`; every pod pair must connect.
    pub fn up(extra: &[&str]) -> Lab {
        Lab::up_env(extra, &[])
    }

    /// [`Lab::up`] with `env` set for `weftctl`, and so for the agents it starts (e.g. `WEFT_*` agent settings).
    pub fn up_env(extra: &[&str], env: &[(&str, &str)]) -> Lab {
        let name = format!("w{}", unique());
        let lab = Lab { name: name.clone() };
        let out = Command::new(bin("weftctl"))
            .args(["lab", "up", "--name", &name, "--lease-ttl", "4s", "--backend", "wireguard"])
            .args(extra)
            .envs(env.iter().copied())
            .output()
            .expect("weftctl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("{text}");
        assert!(out.status.success(), "lab up failed:\n{text}\n{}", lab.logs());
        assert!(text.contains(" 0 broken"), "pod pairs broken:\n{text}");
        lab
    }

    pub fn dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/weft-lab").join(&self.name)
    }

    pub fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join("state.json")).expect("state")).expect("json")
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=3 {
            if let Ok(l) = std::fs::read_to_string(self.dir().join(format!("node{i}/weftd.log"))) {
                let lines: Vec<&str> = l.lines().collect();
                s += &format!("--- node{i} weftd.log (tail)\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n"));
            }
        }
        s
    }

    /// `weftctl ARGS --lab NAME`, panicking (with the agents' logs) on failure; returns stdout + stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = Command::new(bin("weftctl")).args(args).args(["--lab", &self.name]).output().expect("weftctl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{} {}: {text}\n{}", bin("weftctl").display(), args.join(" "), self.logs());
        text
    }

    pub fn status(&self, node: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join(node).join("status.json")).unwrap_or_default())
            .unwrap_or(Value::Null)
    }

    /// Every pod, in node order.
    pub fn pods(&self) -> Vec<Pod> {
        let st = self.state();
        let mut v = vec![];
        for n in st["nodes"].as_array().unwrap() {
            for p in n["pods"].as_array().unwrap() {
                v.push(Pod {
                    node: n["name"].as_str().unwrap().into(),
                    ns: p["ns"].as_str().unwrap().into(),
                    ip: p["ip"].as_str().unwrap().into(),
                    ip6: p["ip6"].as_str().map(str::to_string),
                });
            }
        }
        v
    }

    /// (namespace, underlay IP) of node `i` (0-based).
    pub fn node(&self, i: usize) -> (String, String) {
        let st = self.state();
        let n = &st["nodes"][i];
        (n["ns"].as_str().unwrap().to_string(), n["ip"].as_str().unwrap().to_string())
    }

    /// `weftctl lab pod-add --node NODE --pod NAMESPACE/POD`.
    pub fn add_pod(&self, node: &str, pod: &str) -> Pod {
        let out = self.ok(&["lab", "pod-add", "--node", node, "--pod", pod]);
        // "pod default/a 10.244.0.2 wlNAME-n1p1"
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(f.first(), Some(&"pod"), "unexpected pod-add output: {out}");
        Pod { node: node.into(), ns: f[3].into(), ip: f[2].into(), ip6: None }
    }

    /// Applies NetworkPolicy YAML and waits until every node enforces it.
    pub fn apply_policy(&self, yaml: &str) {
        let file = std::env::temp_dir().join(format!("weft-wgpol-{}.yaml", unique()));
        std::fs::write(&file, yaml).expect("policy file");
        self.ok(&["policy", "apply", "-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(file);
        self.ok(&["policy", "wait"]);
    }

    /// The node's private key file (base64 text).
    pub fn private_key(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir().join(node).join("wireguard.key")).expect("key file").trim().to_string()
    }

    /// The public key node `node` publishes in its lease, read from the lab's embedded store.
    pub fn lease_key(&self, node: &str) -> String {
        let c = rusqlite::Connection::open(self.dir().join("store.db")).expect("store.db");
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let value: String =
            c.query_row("SELECT value FROM leases WHERE node = ?1", [node], |r| r.get(0)).expect("lease row");
        let v: Value = serde_json::from_str(&value).expect("lease JSON");
        v["backendData"]["publicKey"].as_str().unwrap_or_else(|| panic!("no public key in the lease: {v}")).into()
    }

    /// When (ms since the epoch) `node` last completed a handshake with peer `peer`, from its status: the status
    /// is written at `lastReconcileAtMs` with the age of the handshake at that moment.
    pub fn handshake_at_ms(&self, node: &str, peer: &str) -> Option<u64> {
        let st = self.status(node);
        let at = st["lastReconcileAtMs"].as_u64()?;
        let p = st["peers"].as_array()?.iter().find(|p| p["node"] == peer)?.clone();
        Some(at.saturating_sub(p["tunnel"]["handshakeAgeMs"].as_u64()?))
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

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

pub fn ns_exec(ns: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("ip netns exec")
}

/// Runs a command in a namespace, panicking with its stderr on failure; returns stdout.
pub fn sh(ns: &str, cmd: &[&str]) -> String {
    let o = ns_exec(ns, cmd);
    assert!(o.status.success(), "{ns}: {cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One ping, one second to answer.
pub fn ping(ns: &str, dst: &str) -> bool {
    ns_exec(ns, &["ping", "-c", "1", "-W", "1", "-n", dst]).status.success()
}

/// Pings until one answers (a first packet may wait for a handshake), up to `secs`.
pub fn reaches(ns: &str, dst: &str, secs: u64) -> bool {
    wait_until(Duration::from_secs(secs), || ping(ns, dst))
}

/// A tcpdump in a namespace writing to a file; killed on drop.
pub struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    pub fn start(ns: &str, dev: &str, filter: &[&str]) -> Capture {
        let file = std::env::temp_dir().join(format!("weft-wg-{}.pcap", unique()));
        let child = Command::new("ip")
            // Immediate mode: each packet is handed over as it arrives (libpcap's ring otherwise holds them up to
            // its 1 s block timeout, and a capture stopped sooner would miss its last second).
            .args(["netns", "exec", ns, "tcpdump", "--immediate-mode", "-U", "-n", "-i", dev, "-w"])
            .arg(&file)
            .args(filter)
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
    pub fn finish(mut self) -> (Vec<u8>, Vec<String>) {
        std::thread::sleep(Duration::from_millis(300));
        // SIGTERM: tcpdump writes out what it holds and exits (`ip netns exec` became tcpdump: same pid).
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        if !wait_until(Duration::from_secs(10), || self.child.try_wait().ok().flatten().is_some()) {
            let _ = self.child.kill();
        }
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

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// (source IP, destination port, UDP payload) of the IPv4/UDP packets in an Ethernet pcap.
pub fn udp_payloads(pcap: &[u8]) -> Vec<([u8; 4], u16, Vec<u8>)> {
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
        let src: [u8; 4] = frame[14 + 12..14 + 16].try_into().unwrap();
        let udp = &frame[14 + ihl..];
        out.push((src, u16::from_be_bytes([udp[2], udp[3]]), udp[8..].to_vec()));
    }
    out
}

/// An iperf3 server that serves one client, started and listening.
pub fn iperf_server(ns: &str, ip: &str) -> String {
    let port = weft_e2e::free_port().to_string();
    let pidfile = std::env::temp_dir().join(format!("weft-iperf-{}.pid", unique()));
    let started = Command::new("ip")
        .args(["netns", "exec", ns, "iperf3", "-s", "-1", "-D", "-B", ip, "-p", &port, "--pidfile"])
        .arg(&pidfile)
        .status()
        .expect("iperf3");
    assert!(started.success(), "iperf3 server did not start");
    assert!(wait_until(Duration::from_secs(10), || pidfile.exists()), "iperf3 server has no pidfile");
    let _ = std::fs::remove_file(&pidfile);
    port
}

/// A TCP stream (iperf3, `secs` long) and a 100 pps ping, running in the background across something.
pub struct Traffic {
    iperf: Child,
    ping: Child,
}

impl Traffic {
    /// The stream from `client` to `server`, the ping from `pinger` to `target`.
    pub fn start(client: &Pod, server: &Pod, pinger: &Pod, target: &str, secs: u32) -> Traffic {
        let port = iperf_server(&server.ns, &server.ip);
        let iperf = Command::new("ip")
            .args(["netns", "exec", &client.ns, "iperf3", "-c", &server.ip, "-p", &port, "-J"])
            .args(["-t", &secs.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3");
        let count = (secs * 100).to_string();
        let ping = Command::new("ip")
            .args(["netns", "exec", &pinger.ns, "ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", &count, target])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ping");
        Traffic { iperf, ping }
    }

    /// Waits for both; returns (iperf3 JSON, whether iperf3 succeeded, pings sent, pings lost).
    pub fn finish(self) -> (Value, bool, u64, u64) {
        let iperf = self.iperf.wait_with_output().expect("iperf3");
        let ping = self.ping.wait_with_output().expect("ping");
        let text = String::from_utf8_lossy(&ping.stdout);
        let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_string();
        let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        let (sent, got) = (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0));
        let json: Value = serde_json::from_slice(&iperf.stdout).unwrap_or(Value::Null);
        let ok = iperf.status.success() && json["error"].is_null();
        (json, ok, sent, sent.saturating_sub(got))
    }
}

pub fn received_bytes(v: &Value) -> u64 {
    v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

/// Routes weft programmed on a node (proto 201).
pub fn routes(ns: &str, v6: bool) -> String {
    let fam = if v6 { "-6" } else { "-4" };
    String::from_utf8_lossy(&ns_exec(ns, &["ip", fam, "route", "show", "proto", "201"]).stdout).into_owned()
}
