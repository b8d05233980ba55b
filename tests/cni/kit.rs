//! Helpers for the CNI end-to-end tests: a "node" namespace in which plugins run (as a runtime would run them:
//! CNI_* in the environment, config on stdin, via `nsenter --net`), pods as namespaces, and views of what the
//! plugin left behind (IPAM files, host veths).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use weft_e2e::{run, Netns, TempDir};

/// The node's own address (on its loopback), reachable from pods through the routed veths.
pub const NODE_IP: &str = "192.168.250.1";
pub const NODE_IP6: &str = "fd00:ffff::1";

pub struct Node {
    pub ns: Netns,
    pub token: String,
    pub data: TempDir,
    pub net: String,
}

/// What a plugin printed and how it exited.
#[derive(Debug)]
pub struct Res {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Res {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
    /// The error code; panics if the call succeeded.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {self:?}");
        self.json()["code"].as_u64().unwrap_or_else(|| panic!("no code in {self:?}"))
    }
    pub fn expect_ok(self) -> Self {
        assert!(self.ok, "plugin failed: {self:?}");
        self
    }
    /// The first address of the result, without its prefix length (family `v6` or not).
    pub fn ip(&self, v6: bool) -> String {
        let j = self.json();
        let ips = j["ips"].as_array().expect("ips");
        let a = ips
            .iter()
            .map(|i| i["address"].as_str().unwrap().split('/').next().unwrap().to_string())
            .find(|a| a.contains(':') == v6)
            .unwrap_or_else(|| panic!("no {} address in {j}", if v6 { "IPv6" } else { "IPv4" }));
        a
    }
}

pub fn weft_bin() -> PathBuf {
    weft_e2e::bin("weft")
}

pub fn ping(ns: &Netns, dst: &str) -> bool {
    // Debian's minimal image has no iputils; busybox-static is installed everywhere we run.
    ns.try_exec("busybox", &["ping", "-c", "1", "-W", "2", dst]).status.success()
}

impl Node {
    /// A node namespace with forwarding off (the plugin must turn it on) and an address on its loopback.
    pub fn new(tag: &str) -> Node {
        let token = format!("wc{}", weft_e2e::unique());
        let ns = Netns::new(format!("{token}{tag}"));
        ns.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]);
        ns.ip(&["addr", "add", &format!("{NODE_IP6}/128"), "dev", "lo"]);
        let data = TempDir::new(&format!("cni-{tag}"));
        Node { ns, net: format!("net-{token}"), token, data }
    }

    pub fn pod(&self, i: usize) -> Netns {
        Netns::new(format!("{}p{i}", self.token))
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.data.path().join("ipam")
    }

    /// The network config: common keys plus `extra` (an object) merged in.
    pub fn conf(&self, version: &str, extra: Value) -> String {
        let mut c = json!({"cniVersion": version, "name": self.net, "type": "weft", "dataDir": self.ipam_dir()});
        for (k, v) in extra.as_object().expect("extra is an object") {
            c[k] = v.clone();
        }
        c.to_string()
    }

    /// Standalone dual-stack (or v4-only) config.
    pub fn static_conf(&self, version: &str, dual: bool) -> String {
        let ipam = if dual {
            json!({"subnet": "10.123.0.0/24", "subnet6": "fd00:123::/64"})
        } else {
            json!({"subnet": "10.123.0.0/24"})
        };
        self.conf(version, json!({ "ipam": ipam }))
    }

    /// Prepares a plugin invocation inside the node namespace, exactly like a runtime: env + stdin.
    pub fn command(&self, bin: &Path, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns.path().display())).arg(bin);
        c.env("CNI_PATH", format!("/usr/lib/cni:{}", bin.parent().unwrap().display()));
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    pub fn run(&self, bin: &Path, env: &[(&str, &str)], stdin: &str) -> Res {
        let child = self.command(bin, env).spawn().expect("spawn plugin");
        finish(child, stdin)
    }

    /// `weft` with the usual env for `verb` on attachment (cid, eth0) of `pod` (None: no CNI_NETNS).
    pub fn weft(&self, verb: &str, cid: &str, pod: Option<&Netns>, stdin: &str) -> Res {
        let path = pod.map(|p| p.path().display().to_string());
        self.weft_at(verb, cid, path.as_deref(), stdin)
    }

    pub fn weft_at(&self, verb: &str, cid: &str, netns: Option<&str>, stdin: &str) -> Res {
        let mut env = vec![("CNI_COMMAND", verb), ("CNI_CONTAINERID", cid), ("CNI_IFNAME", "eth0")];
        if let Some(p) = netns {
            env.push(("CNI_NETNS", p));
        }
        self.run(&weft_bin(), &env, stdin)
    }

    /// Addresses reserved in the IPAM store.
    pub fn reservations(&self) -> Vec<IpAddr> {
        let Ok(rd) = std::fs::read_dir(self.ipam_dir()) else { return vec![] };
        let mut v: Vec<IpAddr> = rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
        v.sort();
        v
    }

    /// Every file of the IPAM store except the lock and the next-fit hints.
    pub fn ipam_files(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.ipam_dir()) else { return vec![] };
        rd.filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
            .filter(|n| n != "lock" && !n.starts_with("last-reserved"))
            .collect()
    }

    /// Names of weft host veths in the node.
    pub fn weft_links(&self) -> Vec<String> {
        self.ns
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("wf"))
            .collect()
    }

    /// Waits until no weft veth is left (DEL hands the unregister to a reaper that needs ~20 ms).
    pub fn wait_no_links(&self) -> bool {
        weft_e2e::wait_until(std::time::Duration::from_secs(10), || self.weft_links().is_empty())
    }

    pub fn sysctl(&self, key: &str) -> String {
        self.ns.exec("cat", &[&format!("/proc/sys/{}", key.replace('.', "/"))]).trim().to_string()
    }
}

pub fn finish(mut child: Child, stdin: &str) -> Res {
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("plugin output");
    Res {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `config` with `prevResult` set (what a runtime sends to the next plugin, and to every plugin on CHECK/DEL).
pub fn with_prev(config: &str, prev: &Value) -> String {
    let mut c: Value = serde_json::from_str(config).unwrap();
    c["prevResult"] = prev.clone();
    c.to_string()
}

pub fn sh(cmd: &str) -> String {
    run("sh", &["-c", cmd])
}
