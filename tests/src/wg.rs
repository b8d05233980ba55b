//! WireGuard peers in namespaces, shared by tests/wireguard.rs and the benchmark: two "nodes" joined by a veth
//! underlay, each running either weft's tunnel (`weft-tunnel-test`) or Debian's `wireguard-go` configured with
//! `wg`. Everything is deleted on drop.

use crate::{bin, run, unique, wait_until, Netns, TempDir};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Two namespaces `a` (underlay 10.200.0.1) and `b` (10.200.0.2) on one veth.
pub struct Underlay {
    pub a: Netns,
    pub b: Netns,
    pub token: String,
    pub veth_a: String,
    pub veth_b: String,
}

pub const UNDER_A: &str = "10.200.0.1";
pub const UNDER_B: &str = "10.200.0.2";

impl Underlay {
    pub fn new() -> Self {
        let token = unique();
        let a = Netns::new(format!("wga{token}"));
        let b = Netns::new(format!("wgb{token}"));
        let (veth_a, veth_b) = (format!("wu{token}a"), format!("wu{token}b"));
        run(
            "ip",
            &["link", "add", &veth_a, "netns", &a.name, "type", "veth", "peer", "name", &veth_b, "netns", &b.name],
        );
        a.ip(&["addr", "add", &format!("{UNDER_A}/24"), "dev", &veth_a]);
        b.ip(&["addr", "add", &format!("{UNDER_B}/24"), "dev", &veth_b]);
        // IPv4-only underlay: no IPv6 router solicitations, so a capture holds WireGuard's packets alone.
        a.exec("sysctl", &["-qw", &format!("net.ipv6.conf.{veth_a}.disable_ipv6=1")]);
        b.exec("sysctl", &["-qw", &format!("net.ipv6.conf.{veth_b}.disable_ipv6=1")]);
        a.ip(&["link", "set", &veth_a, "up"]);
        b.ip(&["link", "set", &veth_b, "up"]);
        Underlay { a, b, token, veth_a, veth_b }
    }
}

impl Default for Underlay {
    fn default() -> Self {
        Self::new()
    }
}

/// weft's tunnel in a namespace, driven through its peers file and read through its stats file.
pub struct Ours {
    pub ns: String,
    pub ifname: String,
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    args: Vec<String>,
    rotations: u64,
    peers: Value,
}

impl Ours {
    /// Starts it with inner address `addr` (CIDR) and `extra` flags (`--no-offload`, `--queues N`, ...).
    pub fn start(ns: &Netns, ifname: &str, port: u16, addr: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new("wg");
        let mut o = Ours {
            ns: ns.name.clone(),
            ifname: ifname.to_string(),
            port,
            dir,
            child: None,
            args: Vec::new(),
            rotations: 0,
            peers: json!([]),
        };
        o.write_peers();
        let d = o.dir.path().to_path_buf();
        let mut args: Vec<String> = vec![
            "--ifname".into(),
            ifname.into(),
            "--key-dir".into(),
            d.join("key").display().to_string(),
            "--port".into(),
            port.to_string(),
            "--mtu".into(),
            "1420".into(),
            "--address".into(),
            addr.into(),
            "--peers".into(),
            d.join("peers.json").display().to_string(),
            "--stats".into(),
            d.join("stats.json").display().to_string(),
            "--uapi".into(),
            format!("/var/run/wireguard/{ifname}.sock"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        o.args = args;
        o.spawn();
        o
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("stats.json"));
        let log = std::fs::File::create(self.dir.path().join("log")).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(bin("weft-tunnel-test"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn weft-tunnel-test");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(20), || self.try_stats().is_some()),
            "weft-tunnel-test did not start: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn try_stats(&self) -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("stats.json")).ok()?).ok()
    }

    pub fn stats(&self) -> Value {
        self.try_stats().expect("stats file")
    }

    pub fn public_key(&self) -> String {
        self.stats()["public_key"].as_str().expect("public_key").to_string()
    }

    pub fn peer_stats(&self, public_key: &str) -> Value {
        let s = self.stats();
        s["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["public_key"] == public_key)
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.stats()["counters"][name].as_u64().unwrap_or(0)
    }

    fn write_peers(&self) {
        let body = json!({"peers": self.peers, "rotate": self.rotations}).to_string();
        let tmp = self.dir.path().join("peers.tmp");
        std::fs::write(&tmp, body).expect("peers file");
        std::fs::rename(&tmp, self.dir.path().join("peers.json")).expect("peers file");
    }

    /// Replaces the whole peer set (level-triggered), each `(public key, endpoint, allowed ips)`.
    pub fn set_peers(&mut self, peers: &[(&str, &str, &[&str])]) {
        self.peers = peers
            .iter()
            .map(|(k, e, ips)| json!({"public_key": k, "endpoint": e, "allowed_ips": ips}))
            .collect::<Vec<_>>()
            .into();
        self.write_peers();
    }

    /// Asks for a key rotation and waits until the stats show the new public key; returns it.
    pub fn rotate(&mut self) -> String {
        let old = self.public_key();
        self.rotations += 1;
        self.write_peers();
        let mut new = String::new();
        assert!(wait_until(Duration::from_secs(10), || {
            new = self.public_key();
            new != old
        }));
        new
    }

    pub fn pid(&self) -> u32 {
        // `ip netns exec` execs the command, so the child is the tunnel process itself.
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM and wait (a clean stop: the persistent TUN device stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// Starts the same process again (same key dir, same device).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Debian's wireguard-go in a namespace, configured with `wg`.
pub struct Go {
    pub ns: String,
    pub ifname: String,
    pub port: u16,
    pub public_key: String,
    key: PathBuf,
    _dir: TempDir,
    child: Option<Child>,
}

impl Go {
    pub fn start(ns: &Netns, ifname: &str, port: u16, addr: &str) -> Self {
        Self::start_program(ns, &["wireguard-go", "-f"], ifname, port, addr)
    }

    /// Any userspace WireGuard that serves the cross-platform UAPI socket and is configured with `wg` (e.g.
    /// `["boringtun-cli", "-f", "--disable-drop-privileges"]`); the interface name is appended.
    pub fn start_program(ns: &Netns, program: &[&str], ifname: &str, port: u16, addr: &str) -> Self {
        let dir = TempDir::new("wggo");
        let key = dir.path().join("key");
        let private = run("wg", &["genkey"]);
        std::fs::write(&key, &private).expect("key");
        let public_key = wg_pubkey(private.trim());
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(program)
            .arg(ifname)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (wireguard-go: apt-get install wireguard-go)", program[0]));
        let sock = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        assert!(wait_until(Duration::from_secs(10), || sock.exists()), "{} did not start", program[0]);
        let k = key.display().to_string();
        ns.exec("wg", &["set", ifname, "private-key", &k, "listen-port", &port.to_string()]);
        ns.ip(&["addr", "add", addr, "dev", ifname]);
        ns.ip(&["link", "set", ifname, "mtu", "1420", "up"]);
        Go { ns: ns.name.clone(), ifname: ifname.into(), port, public_key, key, _dir: dir, child: Some(child) }
    }

    /// `wg set IF ARGS...`.
    pub fn wg_set(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.ns, "wg", "set", &self.ifname];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    pub fn add_peer(&self, public_key: &str, endpoint: &str, allowed: &str) {
        self.wg_set(&["peer", public_key, "endpoint", endpoint, "allowed-ips", allowed]);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn key_path(&self) -> &PathBuf {
        &self.key
    }
}

impl Drop for Go {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.ifname));
    }
}

pub fn wg_pubkey(private: &str) -> String {
    use std::io::Write;
    let mut child =
        Command::new("wg").arg("pubkey").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("wg pubkey");
    child.stdin.take().expect("stdin").write_all(format!("{private}\n").as_bytes()).expect("write");
    String::from_utf8(child.wait_with_output().expect("wg pubkey").stdout).expect("utf8").trim().to_string()
}

/// utime + stime of a process in seconds (from /proc/PID/stat, clock ticks of 100 Hz).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    (ticks(11) + ticks(12)) / 100.0
}
