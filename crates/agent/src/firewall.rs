//! The agent's own nftables table `inet weft`: pod source check, agent port protection, masquerade, VXLAN port
//! protection, and the checksum workaround.
//!
//! Rendered as text and applied by replacing the whole table atomically (`nft -f`), so there is never a moment
//! with half a ruleset. Pure: the rendering is unit-tested; the agent only hands the text to the dataplane.
//!
//! - **Masquerade** pod traffic that leaves the cluster network (source in the cluster CIDR, destination
//!   outside it); pod↔pod traffic keeps its addresses, on every node, through tunnel or direct routes.
//! - **VXLAN port protection:** the kernel VXLAN socket accepts any UDP packet to its port and decapsulates it,
//!   so anyone who can reach a node could inject packets "from" a pod. Only known node IPs (the peers' leases)
//!   may send to the port; everything else is counted and dropped. With the VXLAN backend, a known node may
//!   send only with its own pod sources inside, per VNI ([`vxlan_source`]): an admitted peer cannot pass for
//!   another node's pods.
//! - **Checksum offload (Flannel issue 1279, the "63 s delay"):** the kernel sends outer VXLAN UDP packets with
//!   checksum 0, and old kernels' NAT code, when a masquerade with `--random-fully` (kube-proxy) rewrote the outer
//!   packet's source port, "updated" that zero checksum into a wrong one; receivers dropped the packet and TCP
//!   retried for 63 s. Flannel's fix turns tx checksum offload off on the VXLAN device, which costs 3× in
//!   throughput here (13 → 4 Gb/s). What is actually needed is only that NAT never touches the *outer* packets:
//!   `notrack` on the VXLAN port (raw priority, before conntrack) takes them out of conntrack and therefore out of
//!   every NAT table, whoever installed it, and keeps offload on. It also saves a conntrack entry per flow.
//! - **A pod sends only from its own addresses** (both families), checked where its packets enter the node, before
//!   conntrack and long before the policy table's forward chain: otherwise a pod that takes another pod's address
//!   is admitted by every policy that admits that pod. IPv4 also has strict rp_filter on the host veth (set by the
//!   plugin); IPv6 has no rp_filter at all. The check is a reverse-path lookup: the host routes each pod's `/32`
//!   and `/128` through that pod's veth, so "the route back to the source leaves through the interface the
//!   packet came in on" holds for exactly the pod's own addresses and fails for another local pod, a remote pod, a node
//!   address or anything else. Two exemptions come first, both ICMPv6 that never leaves the link: the unspecified
//!   source `::` of duplicate address detection and MLD (to link-scope multicast, those message types only), and
//!   the pod's link-local ICMPv6 (router solicitation, MLD, ND) to link-local or link-scope multicast addresses:
//!   the host veth has no link-local address (`addr_gen_mode none`), so no route leads back to `fe80::/64` there.
//!   Drops are counted (`spoofed`). The lookup carries the packet's mark: a tenant network's pod routes live in
//!   that network's table, selected by the mark the isolation table (`weft_policy::isolation`) sets first, so a
//!   tenant pod is checked against its own network (two networks may hold the same address) and a default pod
//!   (mark 0) against main as before.
//! - **Pods never reach the agent's HTTP port** (status: every node IP, VTEP MAC, subnet, policy names;
//!   metrics), whatever address the agent listens on: dropped when a local pod sends to any address of this node
//!   or to a node IP of a peer (a pod's packets to a peer's underlay address are masqueraded, so the peer could
//!   not tell them from the node's own), and when a packet from the cluster network arrives for a local address
//!   (a remote pod through the tunnel or a direct route). Counted (`agent_port_rejected`).
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use weft_policy::isolation::{IsolatedNetwork, IsolationInput};
use weft_types::tenant::TenantNetwork;

pub mod vxlan_source;
pub use vxlan_source::InnerSource;

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "weft";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSpec {
    pub cluster_cidr: Ipv4Net,
    pub cluster_cidr6: Option<Ipv6Net>,
    /// VXLAN UDP port to protect (None with host-gw).
    pub vxlan_port: Option<u16>,
    /// Underlay addresses allowed to send to the VXLAN port (peer node IPs and our own).
    pub node_ips: Vec<IpAddr>,
    pub masquerade: bool,
    /// TCP port of the agent's HTTP endpoints, closed to pods (see the module comment).
    pub agent_port: Option<u16>,
    /// VXLAN only: the (node IP, VNI, inner source) triples the port admits ([`vxlan_source::allowed`]); None
    /// checks no inner source (WireGuard authenticates its packets itself, host-gw has no port).
    pub vxlan_sources: Option<Vec<InnerSource>>,
}

/// The host side of every pod veth (`weft_cni::names`); nothing else weft or the kernel creates starts so.
const POD_IFACES: &str = "\"wf*\"";

pub fn render(spec: &FirewallSpec) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "table {FAMILY} {TABLE} {{");
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = spec.node_ips.iter().partition(|ip| ip.is_ipv4());
    // Always declared: counts masqueraded connections, and its presence tells a periodic check the table exists.
    let _ = writeln!(t, "  counter masqueraded {{ }}");
    set(&mut t, "nodes4", "ipv4_addr", &v4);
    set(&mut t, "nodes6", "ipv6_addr", &v6);
    pods(&mut t, spec);
    if let Some(port) = spec.vxlan_port {
        let _ = writeln!(t, "  counter vxlan_rejected {{ }}");
        let _ = writeln!(t, "  chain raw_prerouting {{\n    type filter hook prerouting priority raw; policy accept;");
        let _ = writeln!(t, "    udp dport {port} notrack\n  }}");
        let _ = writeln!(t, "  chain raw_output {{\n    type filter hook output priority raw; policy accept;");
        let _ = writeln!(t, "    udp dport {port} notrack\n  }}");
        if let Some(sources) = &spec.vxlan_sources {
            vxlan_source::render(&mut t, sources);
        }
        let _ = writeln!(t, "  chain input {{\n    type filter hook input priority filter - 1; policy accept;");
        let _ =
            writeln!(t, "    meta nfproto ipv4 udp dport {port} ip saddr != @nodes4 counter name vxlan_rejected drop");
        let _ =
            writeln!(t, "    meta nfproto ipv6 udp dport {port} ip6 saddr != @nodes6 counter name vxlan_rejected drop");
        if spec.vxlan_sources.is_some() {
            let _ = writeln!(t, "    udp dport {port} jump {}", vxlan_source::CHAIN);
        }
        let _ = writeln!(t, "  }}");
    }
    if spec.masquerade {
        let _ = writeln!(t, "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;");
        masq(&mut t, "ip", IpNet::V4(spec.cluster_cidr));
        if let Some(c6) = spec.cluster_cidr6 {
            masq(&mut t, "ip6", IpNet::V6(c6));
        }
        let _ = writeln!(t, "  }}");
    }
    let _ = writeln!(t, "}}");
    t
}

/// What pods may send to the node: only from their own addresses, and never to the agent's port. Priority: before
/// conntrack (raw), so a spoofed packet creates no connection entry either.
fn pods(t: &mut String, spec: &FirewallSpec) {
    let _ = writeln!(t, "  counter spoofed {{ }}");
    if spec.agent_port.is_some() {
        let _ = writeln!(t, "  counter agent_port_rejected {{ }}");
    }
    let _ = writeln!(t, "  chain pods {{\n    type filter hook prerouting priority raw - 10; policy accept;");
    // Duplicate address detection and MLD before an address is usable: source `::`, to link-scope multicast,
    // those ICMPv6 messages only (a UDP packet from `::` would reach host sockets unchecked).
    let _ = writeln!(
        t,
        "    iifname {POD_IFACES} ip6 saddr :: ip6 daddr ff02::/16 icmpv6 type {{ nd-neighbor-solicit, \
         mld-listener-report, mld2-listener-report }} accept"
    );
    // A pod's own link-local ICMPv6 (router solicitation, MLD, ND) stays on its link: the host veth has no
    // link-local address (no route back), so the reverse-path check would drop and count it as spoofed.
    let _ = writeln!(
        t,
        "    iifname {POD_IFACES} ip6 saddr fe80::/10 ip6 daddr {{ fe80::/10, ff02::/16 }} meta l4proto ipv6-icmp accept"
    );
    // With the mark: a tenant pod's address is routed in its network's table (ip rule on the mark, set by
    // `inet weft-net` at priority -350, before this chain), a default pod's (mark 0) in main.
    let _ = writeln!(t, "    iifname {POD_IFACES} fib saddr . mark . iif oif missing counter name spoofed drop");
    if let Some(port) = spec.agent_port {
        let _ = writeln!(
            t,
            "    iifname {POD_IFACES} tcp dport {port} fib daddr type local counter name agent_port_rejected drop"
        );
        let _ = writeln!(
            t,
            "    iifname {POD_IFACES} ip daddr @nodes4 tcp dport {port} counter name agent_port_rejected drop"
        );
        let _ = writeln!(
            t,
            "    iifname {POD_IFACES} ip6 daddr @nodes6 tcp dport {port} counter name agent_port_rejected drop"
        );
        let c4 = spec.cluster_cidr;
        let _ = writeln!(
            t,
            "    iifname != \"lo\" ip saddr {c4} tcp dport {port} fib daddr type local counter name agent_port_rejected drop"
        );
        if let Some(c6) = spec.cluster_cidr6 {
            let _ = writeln!(
                t,
                "    iifname != \"lo\" ip6 saddr {c6} tcp dport {port} fib daddr type local counter name agent_port_rejected drop"
            );
        }
    }
    let _ = writeln!(t, "  }}");
}

/// The input of the isolation table (`inet weft-net`, `weft_policy::isolation`): the networks this node serves
/// that hold a mark slot (`slots`: VNI → slot), every admitted network's CIDRs (`all`, also those not served
/// here: they are weft's, never "the outside"), every node's underlay address (`node_ips`: a tenant pod must not
/// reach another node's host services — kubelet, etcd, sshd, NodePorts into the default network — disguised as
/// its own node by masquerade), and the default network's CIDRs. A served network without a
/// slot is left out, which fails closed: its pods' group is in the tenant range, so their packets are dropped.
pub fn isolation_input(
    served: &[TenantNetwork],
    slots: &BTreeMap<u32, u8>,
    all: &[TenantNetwork],
    node_ips: &[IpAddr],
    cluster_cidr: Ipv4Net,
    cluster_cidr6: Option<Ipv6Net>,
) -> IsolationInput {
    let networks = served
        .iter()
        .filter_map(|n| {
            let slot = *slots.get(&n.vni)?;
            let ids = n.ids();
            Some(IsolatedNetwork {
                name: n.name.clone(),
                vni: n.vni,
                slot,
                group: ids.group,
                device: ids.device,
                cidr: n.cidr,
                cidr6: n.cidr6,
                masquerade: n.masquerade,
            })
        })
        .collect();
    let weft_cidrs = all
        .iter()
        .flat_map(|n| std::iter::once(IpNet::V4(n.cidr)).chain(n.cidr6.map(IpNet::V6)))
        .chain(node_ips.iter().map(|ip| IpNet::from(*ip)))
        .collect();
    IsolationInput { networks, default_cidr: cluster_cidr, default_cidr6: cluster_cidr6, weft_cidrs }
}

fn set(t: &mut String, name: &str, ty: &str, ips: &[IpAddr]) {
    let _ = write!(t, "  set {name} {{\n    type {ty};\n");
    if !ips.is_empty() {
        let elems: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        let _ = writeln!(t, "    elements = {{ {} }}", elems.join(", "));
    }
    let _ = writeln!(t, "  }}");
}

fn masq(t: &mut String, fam: &str, cidr: IpNet) {
    let _ = writeln!(t, "    {fam} saddr {cidr} {fam} daddr != {cidr} counter name masqueraded masquerade");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FirewallSpec {
        FirewallSpec {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            cluster_cidr6: None,
            vxlan_port: Some(8472),
            node_ips: vec!["192.168.0.1".parse().unwrap(), "192.168.0.2".parse().unwrap()],
            masquerade: true,
            agent_port: Some(9473),
            vxlan_sources: None,
        }
    }

    /// The rendered table, loaded with `nft --check` when nft is installed (syntax and the kernel's view of it).
    pub(super) fn nft_accepts(t: &str) {
        let Ok(mut child) = std::process::Command::new("nft")
            .args(["--check", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), t.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Without CAP_NET_ADMIN nft cannot even check; that says nothing about the text.
        if !err.contains("Operation not permitted") {
            assert!(out.status.success(), "nft refuses the table: {err}\n{t}");
        }
    }

    #[test]
    fn pods_send_only_from_their_own_addresses() {
        let t = render(&spec());
        // Reverse-path check on every pod veth, both families in one rule (inet), before conntrack.
        assert!(t.contains("type filter hook prerouting priority raw - 10;"));
        let spoof = "iifname \"wf*\" fib saddr . mark . iif oif missing counter name spoofed drop";
        assert!(t.contains(spoof), "{t}");
        assert!(t.contains("counter spoofed { }"));
        // Duplicate address detection (source ::) goes to link-scope multicast only, and is let through first.
        let dad = t.find("ip6 saddr :: ip6 daddr ff02::/16 icmpv6 type { nd-neighbor-solicit,").expect("DAD exemption");
        assert!(dad < t.find(spoof).unwrap());
        let ll = t.find("ip6 saddr fe80::/10 ip6 daddr { fe80::/10, ff02::/16 } meta l4proto ipv6-icmp accept");
        assert!(ll.expect("link-local ICMPv6 exemption") < t.find(spoof).unwrap());
        nft_accepts(&t);
        let mut hg = spec();
        hg.vxlan_port = None;
        hg.masquerade = false;
        assert!(render(&hg).contains(spoof), "the check does not depend on the backend");
    }

    #[test]
    fn pods_never_reach_the_agent_port() {
        let mut s = spec();
        s.cluster_cidr6 = Some("fd00:10:244::/56".parse().unwrap());
        s.node_ips.push("fd00::1".parse().unwrap());
        let t = render(&s);
        for rule in [
            "iifname \"wf*\" tcp dport 9473 fib daddr type local counter name agent_port_rejected drop",
            "iifname \"wf*\" ip daddr @nodes4 tcp dport 9473 counter name agent_port_rejected drop",
            "iifname \"wf*\" ip6 daddr @nodes6 tcp dport 9473 counter name agent_port_rejected drop",
            "iifname != \"lo\" ip saddr 10.244.0.0/16 tcp dport 9473 fib daddr type local counter name agent_port_rejected drop",
            "iifname != \"lo\" ip6 saddr fd00:10:244::/56 tcp dport 9473 fib daddr type local counter name agent_port_rejected drop",
        ] {
            assert!(t.contains(rule), "missing {rule}:\n{t}");
        }
        // The counter is declared before the chain that names it.
        assert!(t.find("counter agent_port_rejected { }").unwrap() < t.find("chain pods").unwrap());
        nft_accepts(&t);
        s.agent_port = None;
        assert!(!render(&s).contains("agent_port_rejected"));
    }

    #[test]
    fn vxlan_table_has_protection_notrack_and_masquerade() {
        let t = render(&spec());
        assert!(t.contains("elements = { 192.168.0.1, 192.168.0.2 }"));
        assert!(t.contains("udp dport 8472 ip saddr != @nodes4 counter name vxlan_rejected drop"));
        assert_eq!(t.matches("udp dport 8472 notrack").count(), 2);
        assert!(t.contains("ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 counter name masqueraded masquerade"));
        assert!(!t.contains("ip6 saddr fd"));
    }

    #[test]
    fn host_gw_has_no_vxlan_rules() {
        let mut s = spec();
        s.vxlan_port = None;
        s.cluster_cidr6 = Some("fd00:10:244::/48".parse().unwrap());
        let t = render(&s);
        assert!(!t.contains("8472"));
        assert!(
            t.contains("ip6 saddr fd00:10:244::/48 ip6 daddr != fd00:10:244::/48 counter name masqueraded masquerade")
        );
        assert!(t.contains("counter masqueraded { }"));
    }

    #[test]
    fn source_check_looks_up_with_the_mark_after_the_isolation_table_set_it() {
        let t = render(&spec());
        assert!(t.contains("fib saddr . mark . iif oif missing"), "{t}");
        assert!(!t.contains("fib saddr . iif"), "no lookup without the mark is left: {t}");
        // The mark is set before this chain runs (raw - 10 = -310), and tenant groups are those the isolation
        // table treats as tenant interfaces.
        let iso = weft_policy::isolation::isolation(&weft_policy::isolation::IsolationInput {
            networks: vec![],
            default_cidr: spec().cluster_cidr,
            default_cidr6: None,
            weft_cidrs: vec![],
        });
        let marks = iso.table.chain("prerouting").and_then(|c| c.hook).expect("prerouting base chain");
        assert!(marks.priority < -310, "{marks:?}");
        assert_eq!(weft_policy::isolation::TENANT_GROUP_BASE, weft_types::tenant::TENANT_ID_BASE);
        nft_accepts(&t);
    }

    #[test]
    fn isolation_input_from_networks_and_slots() {
        let net = |name: &str, cidr: &str, vni: u32| -> TenantNetwork {
            serde_json::from_value(serde_json::json!({"name": name, "cidr": cidr, "vni": vni})).unwrap()
        };
        let (blue, red, far) =
            (net("blue", "10.50.0.0/16", 100), net("red", "10.50.0.0/16", 200), net("far", "10.90.0.0/16", 300));
        let slots: BTreeMap<u32, u8> = [(100, 1)].into();
        let nodes: [IpAddr; 2] = ["192.168.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let input =
            isolation_input(&[blue.clone(), red.clone()], &slots, &[blue, red, far], &nodes, spec().cluster_cidr, None);
        // red has no slot yet: left out (its pods are dropped as tenant interfaces of no admitted network).
        assert_eq!(input.networks.len(), 1);
        let b = &input.networks[0];
        assert_eq!((b.name.as_str(), b.slot, b.group, b.device.as_str()), ("blue", 1, 0x5700_0064, "wn100"));
        assert!(b.masquerade);
        assert!(
            input.weft_cidrs.contains(&"10.90.0.0/16".parse().unwrap()),
            "a network not served here is still weft's"
        );
        assert!(
            input.weft_cidrs.contains(&"192.168.0.2/32".parse().unwrap())
                && input.weft_cidrs.contains(&"fd00::2/128".parse().unwrap()),
            "node addresses are never the outside for a tenant pod"
        );
        let iso = weft_policy::isolation::isolation(&input);
        assert!(iso.refused.is_empty(), "{:?}", iso.refused);
        let t = iso.table.render();
        assert!(t.contains("10.90.0.0/16") && t.contains("goto pre_blue") && !t.contains("pre_red"), "{t}");
    }
}
