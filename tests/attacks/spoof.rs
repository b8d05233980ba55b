//! A pod forges another pod's source address to get past NetworkPolicy (issue 8, item 5).
//!
//! Dual-stack, two nodes. On node1: the attacker `a` and its neighbour `b`; on node2: the target `c`, whose
//! policy admits only `b`. `a` takes `b`'s addresses onto its own interface (IPv6 `nodad`, so the kernel uses it at
//! once) and sends UDP and ICMP from them to `c`. What reaches `c` is counted inside `c`'s own namespace (an nft
//! counter at the very front of its prerouting), i.e. after node2's policy admitted it. Before the fix the IPv6
//! packets arrived (IPv4 was stopped by rp_filter); now both families are dropped on node1 and counted in
//! `inet weft` counter `spoofed`, which the agent exports as `weft_spoofed_dropped_packets` and in status.
//! Controls keep the test honest: `b` itself reaches `c` (so delivery would be seen), and link-local traffic and
//! duplicate address detection (source `::`) still work and are not counted.
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use weft_e2e::{bin, require_root, unique, wait_until};

/// A `weftctl lab` torn down on drop; pods added with `pod-add` (named pods, labels).
pub(crate) struct Lab {
    pub name: String,
}

pub(crate) struct Pod {
    pub netns: String,
    pub ip: String,
    pub ip6: Option<String>,
}

impl Lab {
    pub fn up(args: &[&str]) -> Lab {
        let name = format!("a{}", unique());
        let lab = Lab { name: name.clone() };
        lab.ok(&["lab", "up", "--name", &name, "--lease-ttl", "4s", "--pods-per-node", "0"], args);
        lab
    }

    /// Runs `weftctl ARGS EXTRA`, panicking with its output (and the agents' logs) on failure.
    pub fn ok(&self, args: &[&str], extra: &[&str]) -> String {
        let out = Command::new(bin("weftctl")).args(args).args(extra).output().expect("weftctl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "weftctl {} {}: {text}\n{}", args.join(" "), extra.join(" "), self.logs());
        text
    }

    pub fn dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/weft-lab").join(&self.name)
    }

    pub fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join("state.json")).expect("lab state")).expect("json")
    }

    pub fn status(&self, node: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join(node).join("status.json")).unwrap_or_default())
            .unwrap_or(Value::Null)
    }

    /// (namespace, underlay IP) of node `i` (0-based).
    pub fn node(&self, i: usize) -> (String, String) {
        let st = self.state();
        let n = &st["nodes"][i];
        (n["ns"].as_str().unwrap().to_string(), n["ip"].as_str().unwrap().to_string())
    }

    pub fn add_pod(&self, node: &str, pod: &str, label: &str) -> Pod {
        let out =
            self.ok(&["lab", "pod-add", "--name", &self.name, "--node", node, "--pod", pod, "--label", label], &[]);
        // "pod default/a 10.244.0.2 wlNAME-n1a"
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(f.first(), Some(&"pod"), "unexpected pod-add output: {out}");
        let netns = f[3].to_string();
        let st = self.state();
        let p = st["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| n["pods"].as_array().into_iter().flatten())
            .find(|p| p["ns"] == netns.as_str())
            .expect("pod in lab state")
            .clone();
        Pod { netns, ip: f[2].to_string(), ip6: p["ip6"].as_str().map(str::to_string) }
    }

    pub fn apply_policy(&self, yaml: &str) {
        let file = std::env::temp_dir().join(format!("weft-attack-{}.yaml", unique()));
        std::fs::write(&file, yaml).expect("policy file");
        self.ok(&["policy", "apply", "--lab", &self.name, "-f", file.to_str().unwrap()], &[]);
        let _ = std::fs::remove_file(file);
        self.ok(&["policy", "wait", "--lab", &self.name], &[]);
    }

    /// A named counter of `inet weft` on node namespace `ns`: packets.
    pub fn counter(ns: &str, name: &str) -> u64 {
        let o = ns_exec(ns, &["nft", "-j", "list", "counter", "inet", "weft", name]);
        let j: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        j["nftables"][1]["counter"]["packets"].as_u64().unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=3 {
            if let Ok(l) = std::fs::read_to_string(self.dir().join(format!("node{i}/weftd.log"))) {
                let lines: Vec<&str> = l.lines().collect();
                s += &format!("--- node{i} weftd.log\n{}\n", lines[lines.len().saturating_sub(20)..].join("\n"));
            }
        }
        s
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

pub(crate) fn ns_exec(ns: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("ip netns exec")
}

fn sh(ns: &str, cmd: &[&str]) -> String {
    let o = ns_exec(ns, cmd);
    assert!(o.status.success(), "{ns}: {cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Counts, inside pod `ns`, every packet that arrives with source `src` (v4 or v6), before anything else runs.
fn count_arrivals(ns: &str, srcs: &[&str]) {
    sh(ns, &["nft", "add table inet seen; add chain inet seen c { type filter hook prerouting priority -400; }"]);
    for (i, s) in srcs.iter().enumerate() {
        let fam = if s.contains(':') { "ip6" } else { "ip" };
        sh(
            ns,
            &["nft", &format!("add counter inet seen s{i}; add rule inet seen c {fam} saddr {s} counter name s{i}")],
        );
    }
}

fn arrivals(ns: &str, i: usize) -> u64 {
    let o = ns_exec(ns, &["nft", "-j", "list", "counter", "inet", "seen", &format!("s{i}")]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    j["nftables"][1]["counter"]["packets"].as_u64().expect("counter in the target pod")
}

/// Polls until counter `i` in pod `ns` reaches `n` (packets are still in flight when the sender returns).
fn arrives(ns: &str, i: usize, n: u64) -> bool {
    wait_until(Duration::from_secs(10), || arrivals(ns, i) >= n)
}

fn probe() -> &'static str {
    env!("CARGO_BIN_EXE_weft-probe")
}

/// UDP from `src` to every target (port 80), `n` datagrams each; plus `n` pings from `src`.
fn send_from(ns: &str, src: &str, targets: &[&str], n: u32) {
    let mut args =
        vec![probe().to_string(), "send".into(), "--src".into(), src.into(), "--count".into(), n.to_string()];
    for t in targets {
        args.push(if t.contains(':') { format!("[{t}]:80/udp") } else { format!("{t}:80/udp") });
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sh(ns, &args);
    assert!(out.contains(&format!("\"sent\":{}", n as usize * targets.len())), "{out}");
    for t in targets {
        // Replies (if any) go to the real owner of `src`: only the receiver's counter tells.
        let _ = ns_exec(ns, &["ping", "-c", &n.to_string(), "-i", "0.05", "-W", "1", "-I", src, t]);
    }
}

fn add_addr(ns: &str, ip: &str) {
    let (len, extra) = if ip.contains(':') { ("128", Some("nodad")) } else { ("32", None) };
    let mut args = vec!["ip", "addr", "add", ip, "dev", "eth0"];
    let cidr = format!("{ip}/{len}");
    args[3] = &cidr;
    args.extend(extra);
    sh(ns, &args);
}

/// The agent's /metrics inside the node namespace (it listens on the node's loopback in the lab).
fn metric(node_ns: &str, name: &str) -> Option<u64> {
    let o = ns_exec(node_ns, &["curl", "-sf", "-m", "2", "http://127.0.0.1:9473/metrics"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn pod_cannot_send_with_another_pods_source_address() {
    spoofing_is_dropped("vxlan");
}

fn spoofing_is_dropped(backend: &str) {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--nodes", "2", "--ipv6", "--backend", backend]);
    let a = lab.add_pod("node1", "attacker", "role=attacker");
    let b = lab.add_pod("node1", "friend", "role=friend");
    let c = lab.add_pod("node2", "target", "role=target");
    let d = lab.add_pod("node2", "remote", "role=remote");
    let (b6, c6, d6) = (b.ip6.clone().unwrap(), c.ip6.clone().unwrap(), d.ip6.clone().unwrap());
    let ((n1, n1_ip), (n2, _)) = (lab.node(0), lab.node(1));
    lab.apply_policy(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-friend, namespace: default}\n\
         spec:\n  podSelector: {matchLabels: {role: target}}\n  policyTypes: [Ingress]\n  ingress:\n  \
         - from: [{podSelector: {matchLabels: {role: friend}}}]\n",
    );
    count_arrivals(&c.netns, &[&b.ip, &b6, &a.ip]);

    // Control: b, with its own addresses, reaches c in both families (the policy admits it; arrivals are seen).
    send_from(&b.netns, &b.ip, &[&c.ip], 3);
    send_from(&b.netns, &b6, &[&c6], 3);
    assert!(arrives(&c.netns, 0, 6) && arrives(&c.netns, 1, 6), "b's own packets did not reach c");
    // Control: the policy is in force (a, with its own address, is not admitted; nor counted as spoofed).
    let spoofed0 = Lab::counter(&n1, "spoofed");
    send_from(&a.netns, &a.ip, &[&c.ip], 3);
    assert_eq!(arrivals(&c.netns, 2), 0, "the policy admits the attacker's own address");

    // Link-local ICMPv6 (router solicitation, MLD, neighbour discovery) and duplicate address detection (source
    // ::) are not spoofing: the pod's own link-local echo requests to all-nodes multicast are sent and not counted.
    // (The host veth has no link-local address, so nothing answers; the counter is what is checked.)
    assert!(host_veth_has_no_link_local(&n1, &a.netns), "the host veth has a link-local address");
    let _ = ns_exec(&a.netns, &["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", "eth0", "ff02::1"]);
    let fresh = format!("{}ff", a.ip6.as_deref().unwrap());
    sh(&a.netns, &["ip", "addr", "add", &format!("{fresh}/128"), "dev", "eth0"]);
    let dad_done = wait_until(Duration::from_secs(10), || {
        let o = sh(&a.netns, &["ip", "-6", "addr", "show", "dev", "eth0"]);
        o.contains(&fresh) && !o.contains("tentative") && !o.contains("dadfailed")
    });
    assert!(dad_done, "duplicate address detection did not complete");
    sh(&a.netns, &["ip", "addr", "del", &format!("{fresh}/128"), "dev", "eth0"]);
    assert_eq!(Lab::counter(&n1, "spoofed"), spoofed0, "own, link-local or DAD traffic was counted as spoofed");

    // The attack: a sends from b's addresses (same node), then from a remote pod's and from node1's own address.
    add_addr(&a.netns, &b6);
    add_addr(&a.netns, &b.ip);
    let (before_v4, before_v6) = (arrivals(&c.netns, 0), arrivals(&c.netns, 1));
    send_from(&a.netns, &b6, &[&c6], 5);
    send_from(&a.netns, &b.ip, &[&c.ip], 5);
    let after_local = Lab::counter(&n1, "spoofed");
    assert_eq!(arrivals(&c.netns, 1), before_v6, "packets forged with b's IPv6 address reached c past its policy");
    assert_eq!(arrivals(&c.netns, 0), before_v4, "packets forged with b's IPv4 address reached c past its policy");
    assert!(after_local >= spoofed0 + 20, "node1 did not count the forged packets: {spoofed0} → {after_local}");
    add_addr(&a.netns, &d6);
    add_addr(&a.netns, &d.ip);
    add_addr(&a.netns, &n1_ip);
    send_from(&a.netns, &d6, &[&c6], 3);
    send_from(&a.netns, &d.ip, &[&c.ip], 3);
    send_from(&a.netns, &n1_ip, &[&c.ip], 3);
    let after_remote = Lab::counter(&n1, "spoofed");
    assert!(after_remote >= after_local + 18, "remote-pod or node sources not dropped: {after_local} → {after_remote}");
    assert_eq!(Lab::counter(&n2, "spoofed"), 0, "node2 saw spoofed packets: node1 let them out");

    // Exported: status and /metrics (read at the periodic resync, 2 s in the lab).
    let seen = wait_until(Duration::from_secs(15), || {
        lab.status("node1")["spoofedDropped"].as_u64().unwrap_or(0) >= after_remote
            && metric(&n1, "weft_spoofed_dropped_packets").unwrap_or(0) >= after_remote
    });
    assert!(seen, "status/metrics do not show the drops: {}", lab.status("node1")["spoofedDropped"]);

    // And b itself still reaches c afterwards (a's forged copies did not disturb it).
    let v6 = arrivals(&c.netns, 1);
    send_from(&b.netns, &b6, &[&c6], 2);
    assert!(arrives(&c.netns, 1, v6 + 4), "b lost its connectivity");
}

/// Whether the host side of pod `pod_ns`'s veth, in node namespace `node_ns`, has no link-local address (the
/// plugin turns IPv6 address generation off there).
fn host_veth_has_no_link_local(node_ns: &str, pod_ns: &str) -> bool {
    let link: Value = serde_json::from_str(&sh(pod_ns, &["ip", "-j", "link", "show", "eth0"])).unwrap();
    let peer = link[0]["link_index"].as_u64().expect("veth peer index");
    let addrs: Value =
        serde_json::from_str(&sh(node_ns, &["ip", "-j", "-6", "addr", "show", "scope", "link"])).unwrap();
    !addrs.as_array().unwrap().iter().any(|l| l["ifindex"].as_u64() == Some(peer))
}
