//! A node with two tenant networks on the same CIDR, built by hand with `ip` as the design note lays the
//! datapath out (host veths in the network's link group, pod routes in the network's table, ip rules on the
//! mark), a default-network pod, tenant tunnel devices (veths standing in for VXLAN devices, with a remote pod on the far side; what
//! is sent to them shows in their tx counter), and an outside host on an underlay veth. The isolation table is the one
//! `weft_policy::isolation` produces, loaded with `nft -f`.
use std::process::{Child, Stdio};

use weft_e2e::{run, unique, Netns, TempDir};
use weft_policy::isolation::{isolation, IsolatedNetwork, IsolationInput, TENANT_GROUP_BASE};

pub const PROBE: &str = env!("CARGO_BIN_EXE_weft-probe");
pub const NODE_IP: &str = "192.168.77.1";
pub const OUTSIDE_IP: &str = "192.168.77.2";
pub const DEFAULT_POD: &str = "10.244.1.2";
pub const NODE_IP6: &str = "fd00:77::1";
pub const OUTSIDE_IP6: &str = "fd00:77::2";

pub struct Net {
    pub name: &'static str,
    pub vni: u32,
    pub slot: u8,
}

impl Net {
    pub fn table(&self) -> String {
        (TENANT_GROUP_BASE | self.vni).to_string()
    }
    pub fn device(&self) -> String {
        format!("wn{}", self.vni)
    }
}

pub const A: Net = Net { name: "net-a", vni: 100, slot: 1 };
pub const B: Net = Net { name: "net-b", vni: 200, slot: 2 };

pub struct Pod {
    pub ns: Netns,
    pub ip: &'static str,
    /// Its IPv6 address (`fd00:50::N` / `fd00:244::N` for `10.50.0.N` / `10.244.1.N`; none for remote pods).
    pub ip6: String,
    pub host_if: String,
}

impl Pod {
    /// Packets the pod received on eth0 (TCP, UDP, ICMP), counted by a table in the pod itself.
    pub fn seen(&self) -> u64 {
        counter(&self.ns, "inet seen", "seen")
    }

    /// Starts weft-probe's server (TCP and UDP 80) and waits until it listens.
    pub fn serve(&self) -> Child {
        serve(&self.ns, "80")
    }
}

pub struct Fixture {
    pub node: Netns,
    pub outside: Netns,
    pub a1: Pod,
    pub a2: Pod,
    pub b1: Pod,
    pub b2: Pod,
    pub d1: Pod,
    /// The far side of each network's tunnel: a pod "on another node" at 10.50.5.2 in both networks.
    pub remote_a: Pod,
    pub remote_b: Pod,
    pub dir: TempDir,
    // Servers; killed with their namespaces.
    pub servers: Vec<Child>,
}

pub fn counter(ns: &Netns, table: &str, name: &str) -> u64 {
    let out =
        ns.exec("nft", &["list", "counter", table.split(' ').next().unwrap(), table.split(' ').nth(1).unwrap(), name]);
    let n = out.split("packets ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok());
    n.unwrap_or_else(|| panic!("no packet count in {out}"))
}

pub fn serve(ns: &Netns, port: &str) -> Child {
    let mut c = ns
        .command(PROBE)
        .args(["serve", "--tcp", port, "--udp", port])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("weft-probe");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "serving");
    c
}

/// TCP `ip:port` answered from inside `ns` (weft-probe: a real `ok` from the server).
pub fn reaches(ns: &Netns, target: &str) -> bool {
    let out = ns.exec(PROBE, &["matrix", "--timeout-ms", "1500", target]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
    v[target].as_bool().unwrap_or_else(|| panic!("{out}"))
}

impl Fixture {
    pub fn new() -> Fixture {
        let t = unique();
        let node = Netns::new(format!("iso-{t}-node"));
        let outside = Netns::new(format!("iso-{t}-out"));
        node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        node.exec("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
        node.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", &outside.name]);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "u0"]);
        node.ip(&["addr", "add", &format!("{NODE_IP6}/64"), "dev", "u0", "nodad"]);
        node.ip(&["link", "set", "u0", "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "u0"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_IP6}/64"), "dev", "u0", "nodad"]);
        outside.ip(&["link", "set", "u0", "up"]);
        let mut remotes = Vec::new();
        for net in [&A, &B] {
            remotes.push(remote(&node, &t, net));
            node.ip(&["route", "add", "unreachable", "10.50.0.0/16", "table", &net.table()]);
            node.ip(&["-6", "route", "add", "unreachable", "fd00:50::/64", "table", &net.table()]);
            let mark = format!("{:#x}/0xff000000", u32::from(net.slot) << 24);
            node.ip(&["rule", "add", "pref", "1000", "fwmark", &mark, "lookup", &net.table()]);
            node.ip(&["-6", "rule", "add", "pref", "1000", "fwmark", &mark, "lookup", &net.table()]);
        }
        let remote_b = remotes.pop().unwrap();
        let remote_a = remotes.pop().unwrap();
        let mk = |i: u8, net: Option<&Net>, ip: &'static str| pod(&node, &t, i, net, ip);
        let f = Fixture {
            a1: mk(1, Some(&A), "10.50.0.2"),
            a2: mk(2, Some(&A), "10.50.0.3"),
            b1: mk(3, Some(&B), "10.50.0.2"),
            b2: mk(4, Some(&B), "10.50.0.3"),
            d1: mk(5, None, DEFAULT_POD),
            remote_a,
            remote_b,
            node,
            outside,
            dir: TempDir::new("iso"),
            servers: Vec::new(),
        };
        f.load();
        f
    }

    /// The isolation input of this node: networks A and B, both 10.50.0.0/16.
    pub fn input() -> IsolationInput {
        let n = |net: &Net| IsolatedNetwork {
            name: net.name.into(),
            vni: net.vni,
            slot: net.slot,
            group: TENANT_GROUP_BASE | net.vni,
            device: net.device(),
            cidr: "10.50.0.0/16".parse().unwrap(),
            cidr6: Some("fd00:50::/64".parse().unwrap()),
            masquerade: true,
        };
        IsolationInput {
            networks: vec![n(&A), n(&B)],
            default_cidr: "10.244.0.0/16".parse().unwrap(),
            default_cidr6: Some("fd00:244::/64".parse().unwrap()),
            weft_cidrs: vec![],
        }
    }

    /// Loads `script` into the node with `nft -f`.
    pub fn nft(&self, script: &str) {
        let path = self.dir.path().join("table.nft");
        std::fs::write(&path, script).unwrap();
        self.node.exec("nft", &["-f", path.to_str().unwrap()]);
    }

    pub fn load(&self) {
        let iso = isolation(&Self::input());
        assert!(iso.refused.is_empty(), "{:?}", iso.refused);
        self.nft(&iso.table.render_replace());
    }

    /// The table without its forward and input rules: packets are still marked (so routed by their network's
    /// table) and zoned, nothing is checked. What the routes alone would do.
    pub fn unload(&self) {
        let mut t = isolation(&Self::input()).table;
        for c in t.chains.iter_mut().filter(|c| c.name == "forward" || c.name == "input") {
            c.rules.clear();
        }
        self.nft(&t.render_replace());
    }

    pub fn dropped(&self, net: &Net) -> u64 {
        counter(&self.node, "inet weft-net", &format!("dropped_{}", net.name.replace('-', "_")))
    }

    /// Packets the node sent out of a tunnel device (a veth here).
    pub fn tunnel_tx(&self, net: &Net) -> u64 {
        let out = self.node.ip(&["-s", "-j", "link", "show", "dev", &net.device()]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or_else(|| panic!("{out}"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// A pod: netns with `ip/32`, gateway `.1` behind a permanent neighbour; its host veth `wf<t><i>` in the
/// network's group with a host route in the network's table (main for the default network).
fn pod(node: &Netns, t: &str, i: u8, net: Option<&Net>, ip: &'static str) -> Pod {
    let ns = Netns::new(format!("iso-{t}-p{i}"));
    let host_if = format!("wf{t}{i}");
    let (host_mac, pod_mac) = (format!("02:aa:00:00:00:{i:02x}"), format!("02:bb:00:00:00:{i:02x}"));
    let peer = format!("p{t}{i}");
    node.ip(&[
        "link", "add", &host_if, "address", &host_mac, "type", "veth", "peer", "name", &peer, "address", &pod_mac,
        "netns", &ns.name,
    ]);
    let group = net.map_or(0, |n| TENANT_GROUP_BASE | n.vni).to_string();
    node.ip(&["link", "set", &host_if, "group", &group, "up"]);
    let table = net.map_or("main".to_string(), Net::table);
    node.ip(&["route", "add", ip, "dev", &host_if, "scope", "link", "table", &table]);
    node.ip(&["neigh", "add", ip, "lladdr", &pod_mac, "dev", &host_if, "nud", "permanent"]);
    let gw = format!("{}.1", ip.rsplit_once('.').unwrap().0);
    ns.ip(&["link", "set", &peer, "name", "eth0"]);
    ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", &gw, "dev", "eth0", "scope", "link"]);
    ns.ip(&["route", "add", "default", "via", &gw, "dev", "eth0"]);
    ns.ip(&["neigh", "add", &gw, "lladdr", &host_mac, "dev", "eth0", "nud", "permanent"]);
    let ip6 = format!("fd00:{}::{}", if net.is_some() { 50 } else { 244 }, ip.rsplit_once('.').unwrap().1);
    let gw6 = format!("fd00:{}::1", if net.is_some() { 50 } else { 244 });
    node.ip(&["-6", "route", "add", &ip6, "dev", &host_if, "table", &table]);
    node.ip(&["-6", "neigh", "add", &ip6, "lladdr", &pod_mac, "dev", &host_if, "nud", "permanent"]);
    ns.ip(&["-6", "addr", "add", &format!("{ip6}/128"), "dev", "eth0", "nodad"]);
    ns.ip(&["-6", "route", "add", &gw6, "dev", "eth0"]);
    ns.ip(&["-6", "route", "add", "default", "via", &gw6, "dev", "eth0"]);
    ns.ip(&["-6", "neigh", "add", &gw6, "lladdr", &host_mac, "dev", "eth0", "nud", "permanent"]);
    count_arrivals(&ns, "eth0");
    Pod { ns, ip, ip6, host_if }
}

/// A table `inet seen` in `ns` counting TCP, UDP, ICMP and ICMPv6 echo packets arriving on `iface` (counter
/// `seen`; not ND/MLD, which the kernel sends on its own).
pub fn count_arrivals(ns: &Netns, iface: &str) {
    let seen = format!(
        "table inet seen {{ counter seen {{ }}\n chain pre {{ type filter hook prerouting priority -500; policy accept;\n \
         iifname \"{iface}\" meta l4proto {{ icmp, tcp, udp }} counter name seen\n \
         iifname \"{iface}\" icmpv6 type {{ echo-request, echo-reply }} counter name seen\n }}\n}}\n"
    );
    let dir = TempDir::new("isoseen");
    let path = dir.path().join("seen.nft");
    std::fs::write(&path, seen).unwrap();
    run("ip", &["netns", "exec", &ns.name, "nft", "-f", path.to_str().unwrap()]);
}

/// The network's tunnel device `wn<vni>` on the node: a veth (no dummy or second node needed) whose far end
/// is a namespace holding a remote pod of the network at 10.50.5.2, routed by the network's table.
fn remote(node: &Netns, t: &str, net: &Net) -> Pod {
    let ns = Netns::new(format!("iso-{t}-r{}", net.slot));
    let dev = net.device();
    let (dev_mac, far_mac) = (format!("02:ee:00:00:00:{:02x}", net.slot), format!("02:dd:00:00:00:{:02x}", net.slot));
    node.ip(&[
        "link", "add", &dev, "address", &dev_mac, "type", "veth", "peer", "name", "eth0", "address", &far_mac, "netns",
        &ns.name,
    ]);
    node.ip(&["link", "set", &dev, "up"]);
    let ip = "10.50.5.2";
    node.ip(&["route", "add", "10.50.5.0/24", "dev", &dev, "table", &net.table()]);
    node.ip(&["neigh", "add", ip, "lladdr", &far_mac, "dev", &dev, "nud", "permanent"]);
    ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", "10.50.5.1", "dev", "eth0", "scope", "link"]);
    ns.ip(&["route", "add", "default", "via", "10.50.5.1", "dev", "eth0"]);
    ns.ip(&["neigh", "add", "10.50.5.1", "lladdr", &dev_mac, "dev", "eth0", "nud", "permanent"]);
    count_arrivals(&ns, "eth0");
    Pod { ns, ip, ip6: String::new(), host_if: dev }
}
