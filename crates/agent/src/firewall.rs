//! The agent's own nftables table `inet weft`: masquerade, VXLAN port protection, and the checksum workaround.
//!
//! Rendered as text and applied by replacing the whole table atomically (`nft -f`), so there is never a moment
//! with half a ruleset. Pure: the rendering is unit-tested; the agent only hands the text to the dataplane.
//!
//! - **Masquerade** pod traffic that leaves the cluster network (source in the cluster CIDR, destination
//!   outside it); pod↔pod traffic keeps its addresses, on every node, through tunnel or direct routes.
//! - **VXLAN port protection:** the kernel VXLAN socket accepts any UDP packet to its port and decapsulates it,
//!   so anyone who can reach a node could inject packets "from" a pod. Only known node IPs (the peers' leases)
//!   may send to the port; everything else is counted and dropped.
//! - **Checksum offload (Flannel issue 1279, the "63 s delay"):** the kernel sends outer VXLAN UDP packets with
//!   checksum 0, and old kernels' NAT code, when a masquerade with `--random-fully` (kube-proxy) rewrote the outer
//!   packet's source port, "updated" that zero checksum into a wrong one; receivers dropped the packet and TCP
//!   retried for 63 s. Flannel's fix turns tx checksum offload off on the VXLAN device, which costs 3× in
//!   throughput here (13 → 4 Gb/s). What is actually needed is only that NAT never touches the *outer* packets:
//!   `notrack` on the VXLAN port (raw priority, before conntrack) takes them out of conntrack and therefore out of
//!   every NAT table, whoever installed it, and keeps offload on. It also saves a conntrack entry per flow.
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt::Write;
use std::net::IpAddr;

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
}

pub fn render(spec: &FirewallSpec) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "table {FAMILY} {TABLE} {{");
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = spec.node_ips.iter().partition(|ip| ip.is_ipv4());
    // Always declared: counts masqueraded connections, and its presence tells a periodic check the table exists.
    let _ = writeln!(t, "  counter masqueraded {{ }}");
    set(&mut t, "nodes4", "ipv4_addr", &v4);
    set(&mut t, "nodes6", "ipv6_addr", &v6);
    if let Some(port) = spec.vxlan_port {
        let _ = writeln!(t, "  counter vxlan_rejected {{ }}");
        let _ = writeln!(t, "  chain raw_prerouting {{\n    type filter hook prerouting priority raw; policy accept;");
        let _ = writeln!(t, "    udp dport {port} notrack\n  }}");
        let _ = writeln!(t, "  chain raw_output {{\n    type filter hook output priority raw; policy accept;");
        let _ = writeln!(t, "    udp dport {port} notrack\n  }}");
        let _ = writeln!(t, "  chain input {{\n    type filter hook input priority filter - 1; policy accept;");
        let _ =
            writeln!(t, "    meta nfproto ipv4 udp dport {port} ip saddr != @nodes4 counter name vxlan_rejected drop");
        let _ =
            writeln!(t, "    meta nfproto ipv6 udp dport {port} ip6 saddr != @nodes6 counter name vxlan_rejected drop");
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
        }
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
}
