//! Plan step, pure: from a command, the node's subnets and the addresses IPAM chose, derive the exact kernel
//! state ([`PodSpec`]) and the CNI result. No I/O, so every rule here is unit-tested without root.
use crate::config::{NetConf, SubnetSource, DEFAULT_MTU};
use crate::error::CniError;
use crate::ipam::Pool;
use crate::names;
use crate::spec::{CniResult, Dns, Interface, IpConfig, Route};
use crate::subnet::{pod_subnet_v4, pod_subnet_v6};
use crate::tenant::NetworkRef;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use weft_dataplane::pod::{format_mac, Defaults, PodAddr, PodNetwork, PodRoute, PodSpec};
use weft_types::node_file::{NodeFile, NodeFileError};

/// The node's pod subnets and MTU, whichever source they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnets {
    pub v4: Ipv4Net,
    pub v6: Option<Ipv6Net>,
    pub mtu: u32,
    /// The cluster's pod CIDRs (node file only): what a secondary attachment routes through its gateway. For a
    /// tenant network, that network's CIDRs.
    pub cluster_v4: Option<Ipv4Net>,
    pub cluster_v6: Option<Ipv6Net>,
    /// The tenant network these subnets belong to (`None`: the default network).
    pub network: Option<NetworkRef>,
}

impl Subnets {
    /// MTU: config `mtu`, else the node file's `mtu`, else 1500. A missing node file means the agent has not
    /// run yet on this node: error 11, the runtime retries.
    pub fn resolve(
        conf: &NetConf,
        load: impl FnOnce(&Path) -> Result<NodeFile, NodeFileError>,
    ) -> Result<Subnets, CniError> {
        Self::resolve_for(conf, "", load)
    }

    /// The subnets of a pod in Kubernetes namespace `namespace` (empty when the runtime gave none): its tenant
    /// network's when the node file lists the namespace (see [`crate::tenant`]), else the node's default ones.
    /// Standalone configs (`ipam.subnet`) know no tenant networks.
    pub fn resolve_for(
        conf: &NetConf,
        namespace: &str,
        load: impl FnOnce(&Path) -> Result<NodeFile, NodeFileError>,
    ) -> Result<Subnets, CniError> {
        match &conf.subnets {
            SubnetSource::Static { v4, v6 } => Ok(Subnets {
                v4: *v4,
                v6: *v6,
                mtu: conf.mtu.unwrap_or(DEFAULT_MTU),
                cluster_v4: None,
                cluster_v6: None,
                network: None,
            }),
            SubnetSource::NodeFile(path) => {
                let nf = load(path).map_err(|e| match e {
                    NodeFileError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                        CniError::TryAgainLater(format!(
                            "node file {} does not exist yet (is weftd running on this node?)",
                            path.display()
                        ))
                    }
                    other => CniError::Io(other.to_string()),
                })?;
                // The node file is input too (anyone who can write its path writes the pods' routes): the same
                // rules as for the config, reported as an I/O failure of the node file (5; STATUS says 50).
                let bad = |e: String| CniError::Io(format!("node file {}: subnet {e}", path.display()));
                let v4 = pod_subnet_v4(nf.subnet).map_err(bad)?;
                let v6 = nf.subnet6.map(pod_subnet_v6).transpose().map_err(bad)?;
                if !(68..=65535).contains(&nf.mtu) && conf.mtu.is_none() {
                    return Err(CniError::Io(format!(
                        "node file {}: mtu {} is outside 68..=65535",
                        path.display(),
                        nf.mtu
                    )));
                }
                // A cluster CIDR is only used if it holds the node's subnet (else it is not this network's).
                let cluster_v4 = nf.cluster_cidr.map(|c| c.trunc()).filter(|c| c.contains(&v4) && c.prefix_len() >= 8);
                let cluster_v6 = nf
                    .cluster_cidr6
                    .map(|c| c.trunc())
                    .filter(|c| v6.is_some_and(|v6| c.contains(&v6)) && c.prefix_len() >= 16);
                if let Some(tenant) = crate::tenant::resolve(&nf, namespace, conf.mtu, path)? {
                    return Ok(tenant);
                }
                Ok(Subnets { v4, v6, mtu: conf.mtu.unwrap_or(nf.mtu), cluster_v4, cluster_v6, network: None })
            }
        }
    }

    /// One pool per family, IPv4 first.
    pub fn pools(&self) -> Vec<Pool> {
        let mut p = vec![Pool::new(IpNet::V4(self.v4))];
        p.extend(self.v6.map(|n| Pool::new(IpNet::V6(n))));
        p
    }

    /// The IPAM directory of these subnets' network (its own per tenant network, so overlapping CIDRs of two
    /// networks are allocated independently).
    pub fn pool_dir(&self, data_dir: &Path) -> PathBuf {
        crate::tenant::pool_dir(data_dir, self.network.as_ref())
    }
}

/// The kernel state of attachment (cid, ifname) with addresses `ips` (each inside one of `pools`).
///
/// Routes, per family: the pod's **primary** attachment (no default route in the pod yet, `taken` says which
/// families have one that another attachment or anyone else made) gets the default route via its gateway. A
/// **secondary** attachment (Multus: a second network on `net1`) leaves the existing default route alone and
/// gets only a route to its own network via its gateway: the cluster CIDR when the node file names one, else
/// its subnet.
pub fn pod_spec(a: &AttachIds, ips: &[IpAddr], subnets: &Subnets, taken: Defaults) -> PodSpec {
    let pools = subnets.pools();
    let addrs: Vec<PodAddr> = ips
        .iter()
        .map(|ip| {
            let pool = pools.iter().find(|p| p.is_assignable(*ip)).expect("IPAM returns addresses of the pools");
            PodAddr { ip: *ip, gateway: pool.gateway() }
        })
        .collect();
    let routes = addrs
        .iter()
        .map(|addr| {
            let dst = if !taken.has(addr.ip) {
                default_dst(addr.ip)
            } else if addr.ip.is_ipv4() {
                IpNet::V4(subnets.cluster_v4.unwrap_or(subnets.v4))
            } else {
                IpNet::V6(subnets.cluster_v6.or(subnets.v6).expect("an IPv6 address comes from subnet6"))
            };
            PodRoute { dst, gateway: addr.gateway }
        })
        .collect();
    spec_with(a, addrs, routes, subnets.mtu, pod_network(subnets.network.as_ref()))
}

/// Kernel ids of the attachment's network on the node, derived from the VNI (never read from a file).
pub fn pod_network(network: Option<&NetworkRef>) -> Option<PodNetwork> {
    network.map(|n| {
        let ids = n.ids();
        PodNetwork { table: ids.table, group: ids.group }
    })
}

/// The names an attachment is known by.
#[derive(Debug, Clone, Copy)]
pub struct AttachIds<'a> {
    pub network: &'a str,
    pub cid: &'a str,
    pub ifname: &'a str,
}

fn default_dst(ip: IpAddr) -> IpNet {
    if ip.is_ipv4() {
        "0.0.0.0/0".parse().expect("cidr")
    } else {
        "::/0".parse().expect("cidr")
    }
}

fn spec_with(
    a: &AttachIds,
    addrs: Vec<PodAddr>,
    routes: Vec<PodRoute>,
    mtu: u32,
    pod_net: Option<PodNetwork>,
) -> PodSpec {
    let AttachIds { network, cid, ifname } = *a;
    PodSpec {
        host_ifname: names::host_veth(network, cid, ifname),
        host_mac: names::host_mac(network, cid, ifname),
        alias: names::alias(network, cid, ifname),
        pod_ifname: ifname.to_string(),
        pod_mac: names::pod_mac(network, cid, ifname),
        mtu,
        addrs,
        routes,
        network: pod_net,
    }
}

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("valid host prefix")
}

/// The ADD result (newest shape; the caller lowers it to the config's version). Interface 0 is the host veth
/// (no sandbox: `bandwidth` looks for it there), interface 1 the pod's.
pub fn add_result(spec: &PodSpec, netns: &Path, dns: &Dns) -> CniResult {
    let interfaces = vec![
        Interface {
            name: spec.host_ifname.clone(),
            mac: Some(format_mac(&spec.host_mac)),
            mtu: Some(spec.mtu),
            sandbox: None,
        },
        Interface {
            name: spec.pod_ifname.clone(),
            mac: Some(format_mac(&spec.pod_mac)),
            mtu: Some(spec.mtu),
            sandbox: Some(netns.display().to_string()),
        },
    ];
    let ips = spec
        .addrs
        .iter()
        .map(|a| IpConfig { version: None, address: host_prefix(a.ip), gateway: Some(a.gateway), interface: Some(1) })
        .collect();
    let routes = spec.routes.iter().map(|r| Route { dst: r.dst, gw: Some(r.gateway) }).collect();
    CniResult { cni_version: String::new(), interfaces, ips, routes, dns: dns.clone() }
}

/// What CHECK expects, rebuilt from the prevResult the runtime kept: the addresses (and gateways) listed for the
/// pod interface, the routes via those gateways, everything else derived again from the attachment.
pub fn check_spec(
    a: &AttachIds,
    prev: &CniResult,
    mtu: u32,
    network: Option<&NetworkRef>,
) -> Result<PodSpec, CniError> {
    let ifname = a.ifname;
    let ours = |i: Option<usize>| match i {
        None => true,
        Some(i) => prev.interfaces.get(i).is_some_and(|iface| iface.name == ifname && iface.sandbox.is_some()),
    };
    let mut addrs = Vec::new();
    for ip in prev.ips.iter().filter(|ip| ours(ip.interface)) {
        let addr = ip.address.addr();
        let gateway = ip.gateway.ok_or_else(|| {
            CniError::InvalidConfig(format!("prevResult: address {} has no gateway (not a weft result)", ip.address))
        })?;
        addrs.push(PodAddr { ip: addr, gateway });
    }
    if addrs.is_empty() {
        return Err(CniError::InvalidConfig(format!("prevResult lists no address for interface {ifname}")));
    }
    let routes = prev
        .routes
        .iter()
        .filter_map(|r| {
            let gw =
                r.gw.filter(|gw| addrs.iter().any(|a| a.gateway == *gw && gw.is_ipv4() == r.dst.addr().is_ipv4()))?;
            Some(PodRoute { dst: r.dst.trunc(), gateway: gw })
        })
        .collect();
    Ok(spec_with(a, addrs, routes, mtu, pod_network(network)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Version;

    fn conf(json: &str) -> NetConf {
        NetConf::parse(json.as_bytes()).unwrap()
    }

    fn nf() -> NodeFile {
        NodeFile {
            subnet: "10.244.3.0/24".parse().unwrap(),
            subnet6: Some("fd00:10:244:3::/64".parse().unwrap()),
            mtu: 1450,
            cluster_cidr: None,
            cluster_cidr6: None,
            networks: Vec::new(),
            pending_namespaces: Vec::new(),
        }
    }

    #[test]
    fn subnets_from_config_node_file_and_their_absence() {
        let c = conf(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.88.0.0/24"}}"#);
        let s = Subnets::resolve(&c, |_| panic!("standalone must not read the node file")).unwrap();
        assert_eq!((s.v4.to_string(), s.v6, s.mtu), ("10.88.0.0/24".into(), None, 1500));

        let c = conf(r#"{"cniVersion":"1.1.0","name":"n","nodeFile":"/x/node.json"}"#);
        let s = Subnets::resolve(&c, |p| {
            assert_eq!(p, Path::new("/x/node.json"));
            Ok(nf())
        })
        .unwrap();
        assert_eq!((s.mtu, s.pools().len()), (1450, 2));

        let c = conf(r#"{"cniVersion":"1.1.0","name":"n","mtu":1300}"#);
        assert_eq!(Subnets::resolve(&c, |_| Ok(nf())).unwrap().mtu, 1300, "config mtu wins");

        let missing = Subnets::resolve(&c, |p| NodeFile::load(&p.join("nope"))).unwrap_err();
        assert_eq!(missing.code(), 11);

        for (v4, v6, mtu) in [
            ("0.0.0.0/0", None, 1450),
            ("127.0.0.0/8", None, 1450),
            ("10.0.0.0/31", None, 1450),
            ("10.1.0.0/24", Some("::/0"), 1450),
            ("10.1.0.0/24", Some("fe80::/64"), 1450),
            ("10.1.0.0/24", None, 0),
        ] {
            let bad = NodeFile {
                subnet: v4.parse().unwrap(),
                subnet6: v6.map(|s| s.parse().unwrap()),
                mtu,
                cluster_cidr: None,
                cluster_cidr6: None,
                networks: Vec::new(),
                pending_namespaces: Vec::new(),
            };
            let c = conf(r#"{"cniVersion":"1.1.0","name":"n"}"#);
            let e = Subnets::resolve(&c, |_| Ok(bad.clone())).unwrap_err();
            assert_eq!(e.code(), 5, "{v4} {v6:?} {mtu}: {e}");
        }
    }

    #[test]
    fn spec_and_result_for_dual_stack() {
        let s = subnets();
        let ips: Vec<IpAddr> = vec!["10.1.0.9".parse().unwrap(), "fd00:1::9".parse().unwrap()];
        let spec = pod_spec(&IDS, &ips, &s, Defaults::default());
        assert_eq!(spec.addrs[0].gateway, "10.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(spec.addrs[1].gateway, "fd00:1::1".parse::<IpAddr>().unwrap());
        assert_eq!(spec.host_ifname, names::host_veth("net", "c1", "eth0"));
        let r = add_result(&spec, Path::new("/run/netns/p"), &Dns::default()).for_version(Version::V040);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["interfaces"][0]["name"], spec.host_ifname.as_str());
        assert!(v["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(v["ips"][0]["address"], "10.1.0.9/32");
        assert_eq!(v["ips"][1]["address"], "fd00:1::9/128");
        assert_eq!(v["ips"][1]["version"], "6");
        assert_eq!(v["routes"][1]["dst"], "::/0");
        assert_eq!(v["routes"][1]["gw"], "fd00:1::1");

        let back = check_spec(&IDS, &r, 1400, None).unwrap();
        assert_eq!(back, spec, "CHECK rebuilds exactly what ADD planned");
    }

    const IDS: AttachIds = AttachIds { network: "net", cid: "c1", ifname: "eth0" };

    fn subnets() -> Subnets {
        Subnets {
            v4: "10.1.0.0/24".parse().unwrap(),
            v6: Some("fd00:1::/64".parse().unwrap()),
            mtu: 1400,
            cluster_v4: None,
            cluster_v6: None,
            network: None,
        }
    }

    /// A second attachment in a pod that has a default route already gets only its own network's route, and
    /// CHECK rebuilds the same from its result.
    #[test]
    fn secondary_attachment_routes_only_its_network() {
        let ips: Vec<IpAddr> = vec!["10.1.0.9".parse().unwrap(), "fd00:1::9".parse().unwrap()];
        let taken = Defaults { v4: true, v6: false };
        let spec = pod_spec(&IDS, &ips, &subnets(), taken);
        let dsts: Vec<String> = spec.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["10.1.0.0/24", "::/0"], "only the family with a default route is secondary");
        let mut with_cluster = subnets();
        with_cluster.cluster_v4 = Some("10.0.0.0/8".parse().unwrap());
        let spec = pod_spec(&IDS, &ips, &with_cluster, Defaults { v4: true, v6: true });
        let dsts: Vec<String> = spec.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["10.0.0.0/8", "fd00:1::/64"]);
        let r = add_result(&spec, Path::new("/run/netns/p"), &Dns::default()).for_version(Version::V110);
        assert_eq!(check_spec(&IDS, &r, 1400, None).unwrap(), spec);
    }

    /// A tenant network's subnets: the kernel ids come from the VNI, a secondary attachment routes the network's
    /// CIDR, and CHECK rebuilds the same spec from the result and the recorded network.
    #[test]
    fn tenant_plan_derives_table_and_group_from_the_vni() {
        let net = NetworkRef { name: "blue".into(), vni: 100 };
        let s = Subnets {
            v4: "10.70.3.0/24".parse().unwrap(),
            v6: None,
            mtu: 1400,
            cluster_v4: Some("10.70.0.0/16".parse().unwrap()),
            cluster_v6: None,
            network: Some(net.clone()),
        };
        let ips: Vec<IpAddr> = vec!["10.70.3.2".parse().unwrap()];
        let spec = pod_spec(&IDS, &ips, &s, Defaults::default());
        assert_eq!(spec.network, Some(PodNetwork { table: 0x5700_0064, group: 0x5700_0064 }));
        assert_eq!((spec.host_table(), spec.host_group()), (0x5700_0064, 0x5700_0064));
        assert_eq!(spec.host_ifname, names::host_veth("net", "c1", "eth0"), "names do not depend on the network");
        assert_eq!(spec.routes[0].dst.to_string(), "0.0.0.0/0");
        let r = add_result(&spec, Path::new("/run/netns/p"), &Dns::default()).for_version(Version::V110);
        assert_eq!(check_spec(&IDS, &r, 1400, Some(&net)).unwrap(), spec);
        assert_eq!(check_spec(&IDS, &r, 1400, None).unwrap().network, None);
        let sec = pod_spec(&IDS, &ips, &s, Defaults { v4: true, v6: false });
        assert_eq!(sec.routes[0].dst.to_string(), "10.70.0.0/16", "a secondary attachment routes its network");
        let default = pod_spec(&IDS, &ips, &Subnets { network: None, ..s }, Defaults::default());
        assert_eq!((default.network, default.host_table(), default.host_group()), (None, 254, 0));
    }

    #[test]
    fn check_spec_needs_our_addresses() {
        let prev: CniResult = serde_json::from_str(
            r#"{"interfaces":[{"name":"eth1","sandbox":"/x"}],"ips":[{"address":"10.0.0.2/32","gateway":"10.0.0.1","interface":0}]}"#,
        )
        .unwrap();
        assert_eq!(check_spec(&IDS, &prev, 1500, None).unwrap_err().code(), 7);
        let prev: CniResult = serde_json::from_str(r#"{"ips":[{"address":"10.0.0.2/32"}]}"#).unwrap();
        assert_eq!(check_spec(&IDS, &prev, 1500, None).unwrap_err().code(), 7);
    }
}
