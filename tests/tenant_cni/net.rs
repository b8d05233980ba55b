//! Helpers of the tenant-network CNI tests: a node namespace with a hand-written node file holding two networks
//! with the same CIDRs beside the default one, pods of Kubernetes namespaces (CNI_ARGS), and views of each
//! network's pool, route table and link group.
use super::kit::{finish, Node, Res};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Child;
use weft_e2e::Netns;

/// Tenant tables and groups: `0x5700_0000 | VNI` (`weft_types::tenant::NetworkIds`), written out here so the
/// test fails if the derivation changes behind the agent's back.
pub const BLUE: Net = Net { name: "blue", vni: 100, ns: "team-a", mtu: 1400, id: 0x5700_0064 };
pub const RED: Net = Net { name: "red", vni: 200, ns: "team-b", mtu: 1380, id: 0x5700_00c8 };
pub const DEFAULT_NS: &str = "other";

#[derive(Clone, Copy)]
pub struct Net {
    pub name: &'static str,
    pub vni: u32,
    pub ns: &'static str,
    pub mtu: u32,
    /// Route table and link group.
    pub id: u32,
}

pub struct TenantNode {
    pub node: Node,
    pub conf: String,
}

impl TenantNode {
    /// Default subnet 10.126.0.0/24 (MTU 1450); blue and red both on 10.77.0.0/16 + fd00:77::/48, node subnets
    /// 10.77.1.0/24 + fd00:77:0:1::/80.
    pub fn new(tag: &str) -> TenantNode {
        let node = Node::new(tag);
        let nf = node.data.path().join("node.json");
        let net = |n: Net| {
            json!({"name": n.name, "vni": n.vni, "subnet": "10.77.1.0/24", "subnet6": "fd00:77:0:1::/80",
                   "cidr": "10.77.0.0/16", "cidr6": "fd00:77::/48", "mtu": n.mtu, "namespaces": [n.ns]})
        };
        let file = json!({"subnet": "10.126.0.0/24", "subnet6": "fd00:126::/64", "mtu": 1450,
                          "clusterCidr": "10.126.0.0/16", "networks": [net(BLUE), net(RED)]});
        std::fs::write(&nf, file.to_string()).unwrap();
        let conf = node.conf("1.1.0", json!({"nodeFile": nf}));
        TenantNode { node, conf }
    }

    fn env<'a>(verb: &'a str, cid: &'a str, netns: Option<&'a str>, args: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![("CNI_COMMAND", verb), ("CNI_CONTAINERID", cid), ("CNI_IFNAME", "eth0")];
        if let Some(p) = netns {
            env.push(("CNI_NETNS", p));
        }
        if !args.is_empty() {
            env.push(("CNI_ARGS", args));
        }
        env
    }

    /// `weft VERB` for attachment (cid, eth0) of a pod in Kubernetes namespace `k8s_ns`.
    pub fn weft(&self, verb: &str, cid: &str, pod: Option<&Netns>, k8s_ns: &str, stdin: &str) -> Res {
        self.spawn(verb, cid, pod, k8s_ns, |child| finish(child, stdin))
    }

    /// Starts `weft VERB` (stdin not yet written) and hands the child to `f`.
    pub fn spawn<T>(&self, verb: &str, cid: &str, pod: Option<&Netns>, k8s_ns: &str, f: impl FnOnce(Child) -> T) -> T {
        let path = pod.map(|p| p.path().display().to_string());
        let args = if k8s_ns.is_empty() {
            String::new()
        } else {
            format!("K8S_POD_NAMESPACE={k8s_ns};K8S_POD_NAME=pod-{cid}")
        };
        let env = Self::env(verb, cid, path.as_deref(), &args);
        f(self.node.command(&super::kit::weft_bin(), &env).spawn().expect("spawn weft"))
    }

    pub fn pool_dir(&self, net: Option<Net>) -> PathBuf {
        match net {
            None => self.node.ipam_dir(),
            Some(n) => self.node.ipam_dir().join(format!("net-{}", n.name)),
        }
    }

    /// Addresses reserved in a network's pool (None: the default one).
    pub fn reservations(&self, net: Option<Net>) -> Vec<String> {
        let mut v: Vec<String> =
            self.files(net).into_iter().filter(|n| n.parse::<std::net::IpAddr>().is_ok()).collect();
        v.sort();
        v
    }

    /// Files of a pool except the lock, the hints and (for the default pool) the tenant pools' directories.
    pub fn files(&self, net: Option<Net>) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.pool_dir(net)) else { return vec![] };
        let mut v: Vec<String> = rd
            .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
            .filter(|n| n != "lock" && !n.starts_with("last-reserved") && !n.starts_with("net-"))
            .collect();
        v.sort();
        v
    }

    /// `ip [-6] route show table T` in the node (routes only, one per line).
    pub fn routes(&self, table: &str, v6: bool) -> String {
        let fam = if v6 { "-6" } else { "-4" };
        self.node.ns.ip(&[fam, "route", "show", "table", table])
    }

    /// Names of the node's links in link group `group`.
    pub fn links_in_group(&self, group: u32) -> Vec<String> {
        self.node
            .ns
            .ip(&["-o", "link", "show", "group", &group.to_string()])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect()
    }

    /// The host veth named in an ADD result.
    pub fn host_veth(res: &Value) -> String {
        res["interfaces"][0]["name"].as_str().expect("host veth in the result").to_string()
    }
}
