//! VXLAN inner sources: a packet on the VXLAN port from node N's underlay address is let through to the kernel's
//! VXLAN socket only if its *inner* source lies in N's own pod subnets on the network its VNI names.
//!
//! Why: the socket decapsulates whatever reaches its port. `nodes4`/`nodes6` keep strangers out, but an admitted
//! peer (a rogue or compromised node) could put a third node's pod address inside and be admitted by every
//! NetworkPolicy that admits that pod; routing would deliver it, since nothing on the receiving side ties a
//! tunnel packet to its sender. Tying the inner source to the outer one leaves a peer only its own pods'
//! addresses, which it owns anyway.
//!
//! Where: the `input` hook on the outer UDP packet, before the socket (and before any reassembly of the inner
//! packet could matter: IPv4 is reassembled before `input`), by raw payload offsets from the outer UDP header
//! (`@th`), which are the same over an IPv4 and an IPv6 underlay:
//!
//! | bytes from `@th` | field |
//! |---|---|
//! | 0–7 | outer UDP header |
//! | 12–14 (bit 96, 24 bits) | VNI (the kernel rejects non-zero reserved bits itself) |
//! | 28–29 (bit 224, 16 bits) | inner EtherType |
//! | 42–45 (bit 336, 32 bits) | inner IPv4 source (Ethernet at 16, IPv4 header at 30, source at +12) |
//! | 38–53 (bit 304, 128 bits) | inner IPv6 source (IPv6 header at 30, source at +8) |
//!
//! One set per (outer family, inner family), keyed `outer source . VNI . inner source` with interval flags (a
//! pipapo set: one lookup per packet, whatever the number of peers and networks). nft 1.0.6 types a raw payload
//! as a plain integer, so the inner prefixes are written as integer ranges (`0x0af40100-0x0af401ff`). The chain
//! fails closed: a packet is accepted only by a set hit, and everything else is dropped and counted
//! (`vxlan_spoofed_inner`): a wrong inner source, an unknown VNI, a frame too short to hold the fields (a load
//! past the end never matches), and every EtherType other than IPv4 and IPv6. No legitimate non-IP frame
//! crosses: weft programs permanent neighbour and FDB entries with learning off and no flood entry, so the
//! kernel never sends ARP, neighbour discovery or broadcast through the tunnel.
//!
//! What a node may send with, per lease: on the default VNI its lease subnets and its own underlay address
//! (a host process on the node that binds it); on a tenant network's VNI its subnets there
//! (`TenantNetwork::subnet_for` with the lease's index, as the networks manager routes them), not for a peer
//! whose underlay address lies inside the network (the networks manager leaves it out too). A lease whose
//! IPv4 subnet is not a node subnet of the cluster CIDR (or whose IPv6 subnet is not strictly inside the
//! cluster's) is skipped, or loses that part, and is reported; an element that
//! overlaps one already kept for the same node and VNI is dropped (the kernel refuses overlapping elements,
//! which would fail the whole table): one bad lease never breaks the table for the others.
use ipnet::IpNet;
use std::fmt::Write;
use std::net::IpAddr;
use weft_types::tenant::TenantNetwork;
use weft_types::{Lease, NetworkConfig};

/// Counter of packets dropped by the inner-source check.
pub const COUNTER: &str = "vxlan_spoofed_inner";
/// The regular chain the input hook jumps to for the VXLAN port.
pub const CHAIN: &str = "vxlan_inner";

/// One admitted (sender, VNI, inner source prefix) triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InnerSource {
    /// Outer source: the sending node's underlay address.
    pub node_ip: IpAddr,
    pub vni: u32,
    /// Inner sources that node may use on that VNI.
    pub inner: IpNet,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Sorted, no two overlapping for the same node and VNI.
    pub sources: Vec<InnerSource>,
    /// What was left out, and why (one line each, for the log).
    pub skipped: Vec<String>,
}

/// The triples for every lease (peers and our own) on the default network and on the tenant networks this node
/// carries (`tenants`).
pub fn allowed<'a>(
    cfg: &NetworkConfig,
    leases: impl IntoIterator<Item = &'a Lease>,
    tenants: &[TenantNetwork],
) -> Allowed {
    let mut out = Allowed::default();
    let mut kept: Vec<InnerSource> = Vec::new();
    let mut add = |s: InnerSource, out: &mut Allowed| {
        let clash = kept.iter().find(|k| k.node_ip == s.node_ip && k.vni == s.vni && overlaps(k.inner, s.inner));
        match clash {
            Some(k) => out.skipped.push(format!(
                "inner source {} of {} on VNI {} overlaps {}: left out",
                s.inner, s.node_ip, s.vni, k.inner
            )),
            None => kept.push(s),
        }
    };
    let vni = cfg.backend.vni;
    for l in leases {
        let Some(idx) = cfg.index_of(l.subnet) else {
            out.skipped
                .push(format!("lease of {}: subnet {} is not a node subnet of the cluster CIDR", l.node, l.subnet));
            continue;
        };
        add(InnerSource { node_ip: l.node_ip, vni, inner: IpNet::V4(l.subnet) }, &mut out);
        // What admission lets through: inside the cluster's IPv6 CIDR (Kubernetes podCIDRs need not follow the
        // index), and strictly inside, so one lease never speaks for the whole cluster.
        if let Some(s6) = l.subnet6 {
            if cfg.cluster_cidr6.is_some_and(|c6| c6.contains(&s6) && s6.prefix_len() > c6.prefix_len()) {
                add(InnerSource { node_ip: l.node_ip, vni, inner: IpNet::V6(s6) }, &mut out);
            } else {
                out.skipped.push(format!("lease of {}: subnet6 {s6} is not a node subnet of the cluster", l.node));
            }
        }
        add(InnerSource { node_ip: l.node_ip, vni, inner: IpNet::from(l.node_ip) }, &mut out);
        for n in tenants.iter().filter(|n| !n.contains(l.node_ip)) {
            let Some((s4, s6)) = n.subnet_for(idx) else { continue };
            add(InnerSource { node_ip: l.node_ip, vni: n.vni, inner: IpNet::V4(s4) }, &mut out);
            if let Some(s6) = s6 {
                add(InnerSource { node_ip: l.node_ip, vni: n.vni, inner: IpNet::V6(s6) }, &mut out);
            }
        }
    }
    kept.sort();
    out.sources = kept;
    out
}

fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Declares the counter, the four sets and the chain [`CHAIN`]; the caller jumps to it for the VXLAN port.
/// Rendered before the chain that jumps.
pub fn render(t: &mut String, sources: &[InnerSource]) {
    let _ = writeln!(t, "  counter {COUNTER} {{ }}");
    for (outer, inner) in [("ip", "ip"), ("ip", "ip6"), ("ip6", "ip"), ("ip6", "ip6")] {
        let _ = write!(
            t,
            "  set {} {{\n    typeof {outer} saddr . @th,96,24 . {}\n    flags interval\n",
            set_name(outer, inner),
            inner_field(inner)
        );
        let elems: Vec<String> = sources
            .iter()
            .filter(|s| s.node_ip.is_ipv6() == (outer == "ip6") && s.inner.addr().is_ipv6() == (inner == "ip6"))
            .map(|s| format!("{} . {} . {}", s.node_ip, s.vni, range(s.inner)))
            .collect();
        if !elems.is_empty() {
            let _ = writeln!(t, "    elements = {{ {} }}", elems.join(", "));
        }
        let _ = writeln!(t, "  }}");
    }
    let _ = writeln!(t, "  chain {CHAIN} {{");
    for (outer, inner) in [("ip", "ip"), ("ip", "ip6"), ("ip6", "ip"), ("ip6", "ip6")] {
        let _ = writeln!(
            t,
            "    @th,224,16 {} {outer} saddr . @th,96,24 . {} @{} accept",
            ether_type(inner),
            inner_field(inner),
            set_name(outer, inner)
        );
    }
    let _ = writeln!(t, "    counter name {COUNTER} drop\n  }}");
}

fn set_name(outer: &str, inner: &str) -> String {
    let f = |x: &str| if x == "ip" { '4' } else { '6' };
    format!("vxlan_src{}{}", f(outer), f(inner))
}

fn inner_field(inner: &str) -> &'static str {
    if inner == "ip" {
        "@th,336,32"
    } else {
        "@th,304,128"
    }
}

fn ether_type(inner: &str) -> &'static str {
    if inner == "ip" {
        "0x0800"
    } else {
        "0x86dd"
    }
}

/// A prefix as the integer range nft compares the raw payload with (one value for a host prefix).
fn range(n: IpNet) -> String {
    let (lo, hi) = match n {
        IpNet::V4(n) => (format!("0x{:08x}", u32::from(n.network())), format!("0x{:08x}", u32::from(n.broadcast()))),
        IpNet::V6(n) => {
            (format!("0x{:032x}", u128::from(n.network())), format!("0x{:032x}", u128::from(n.broadcast())))
        }
    };
    if lo == hi {
        lo
    } else {
        format!("{lo}-{hi}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{render as render_table, FirewallSpec};
    use weft_types::BackendData;

    fn cfg() -> NetworkConfig {
        serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16","clusterCidr6":"fd00:10:244::/48","subnetLen6":64,"backend":{"type":"vxlan","vni":1,"port":8472}}"#)
            .unwrap()
    }

    fn lease(i: u8) -> Lease {
        Lease {
            node: format!("n{i}"),
            subnet: format!("10.244.{i}.0/24").parse().unwrap(),
            subnet6: Some(format!("fd00:10:244:{i}::/64").parse().unwrap()),
            node_ip: format!("172.30.{i}.1").parse().unwrap(),
            backend_data: BackendData::Vxlan { vtep_mac: format!("02:00:00:00:00:0{i}") },
            expires_at_ms: 0,
        }
    }

    fn blue() -> TenantNetwork {
        serde_json::from_value(serde_json::json!({"name": "blue", "cidr": "10.50.0.0/16", "cidr6": "fd00:50::/48",
            "subnetLen6": 64, "vni": 100}))
        .unwrap()
    }

    fn src(ip: &str, vni: u32, inner: &str) -> InnerSource {
        InnerSource { node_ip: ip.parse().unwrap(), vni, inner: inner.parse().unwrap() }
    }

    fn table(sources: Vec<InnerSource>) -> String {
        render_table(&FirewallSpec {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            cluster_cidr6: Some("fd00:10:244::/48".parse().unwrap()),
            vxlan_port: Some(8472),
            node_ips: sources.iter().map(|s| s.node_ip).collect(),
            masquerade: true,
            agent_port: Some(9473),
            vxlan_sources: Some(sources),
        })
    }

    #[test]
    fn each_node_sends_only_from_its_own_subnets_per_vni() {
        let leases = [lease(1), lease(2)];
        let a = allowed(&cfg(), &leases, &[blue()]);
        assert!(a.skipped.is_empty(), "{:?}", a.skipped);
        for want in [
            src("172.30.1.1", 1, "10.244.1.0/24"),
            src("172.30.1.1", 1, "fd00:10:244:1::/64"),
            src("172.30.1.1", 1, "172.30.1.1/32"),
            src("172.30.1.1", 100, "10.50.1.0/24"),
            src("172.30.1.1", 100, "fd00:50:0:1::/64"),
            src("172.30.2.1", 1, "10.244.2.0/24"),
            src("172.30.2.1", 100, "10.50.2.0/24"),
        ] {
            assert!(a.sources.contains(&want), "missing {want:?} in {:?}", a.sources);
        }
        // Only its own: node 2's pods never under node 1's outer address, its underlay address not on a tenant VNI.
        assert_eq!(a.sources.len(), 10, "{:?}", a.sources);
        assert!(!a
            .sources
            .iter()
            .any(|s| s.node_ip.to_string() == "172.30.1.1" && s.inner.to_string().contains(".2.")));
        assert!(!a.sources.iter().any(|s| s.vni == 100 && s.inner.addr().to_string().starts_with("172.30.")));
    }

    #[test]
    fn rendered_sets_are_keyed_outer_vni_inner_and_fail_closed() {
        let t = table(allowed(&cfg(), &[lease(1), lease(2)], &[blue()]).sources);
        assert!(t.contains("typeof ip saddr . @th,96,24 . @th,336,32\n    flags interval"), "{t}");
        assert!(t.contains("typeof ip6 saddr . @th,96,24 . @th,304,128"), "{t}");
        assert!(t.contains("172.30.1.1 . 1 . 0x0af40100-0x0af401ff"), "{t}");
        assert!(t.contains("172.30.1.1 . 1 . 0xac1e0101,"), "a host prefix is one value: {t}");
        assert!(t.contains("172.30.2.1 . 100 . 0x0a320200-0x0a3202ff"), "{t}");
        assert!(
            t.contains("172.30.1.1 . 1 . 0xfd000010024400010000000000000000-0xfd00001002440001ffffffffffffffff"),
            "{t}"
        );
        for rule in [
            "@th,224,16 0x0800 ip saddr . @th,96,24 . @th,336,32 @vxlan_src44 accept",
            "@th,224,16 0x86dd ip saddr . @th,96,24 . @th,304,128 @vxlan_src46 accept",
            "@th,224,16 0x0800 ip6 saddr . @th,96,24 . @th,336,32 @vxlan_src64 accept",
            "@th,224,16 0x86dd ip6 saddr . @th,96,24 . @th,304,128 @vxlan_src66 accept",
        ] {
            assert!(t.contains(rule), "missing {rule}:\n{t}");
        }
        // Everything no set admits (other sources, VNIs, EtherTypes, truncated frames) ends in the counted drop.
        let chain = &t[t.find("chain vxlan_inner").unwrap()..];
        let end = chain.find("  }").unwrap();
        assert!(chain[..end].trim_end().ends_with("counter name vxlan_spoofed_inner drop"), "{chain}");
        // Declared before the input chain that jumps to it, after the unknown-source drop.
        let jump = t.find("udp dport 8472 jump vxlan_inner").expect("jump");
        assert!(t.find("chain vxlan_inner").unwrap() < t.find("chain input").unwrap());
        assert!(t.find("ip6 saddr != @nodes6 counter name vxlan_rejected drop").unwrap() < jump);
        assert_eq!(t.matches("udp dport 8472 notrack").count(), 2, "notrack unchanged");
        crate::firewall::tests::nft_accepts(&t);
    }

    #[test]
    fn an_ipv6_underlay_keys_the_ip6_sets() {
        let mut c = cfg();
        c.cluster_cidr6 = None;
        let mut l = lease(3);
        l.subnet6 = None;
        l.node_ip = "fd00:30::3".parse().unwrap();
        let a = allowed(&c, &[l], &[]);
        let t = table(a.sources);
        assert!(t.contains("fd00:30::3 . 1 . 0x0af40300-0x0af403ff"), "{t}");
        assert!(t.contains("fd00:30::3 . 1 . 0xfd000030000000000000000000000003"), "{t}");
        crate::firewall::tests::nft_accepts(&t);
    }

    #[test]
    fn a_hostile_lease_is_skipped_and_the_others_stay() {
        let mut huge = lease(3);
        huge.subnet = "10.0.0.0/8".parse().unwrap();
        let mut outside = lease(4);
        outside.subnet = "192.168.4.0/24".parse().unwrap();
        let mut wrong6 = lease(5);
        wrong6.subnet6 = Some("fd00:10:244::/48".parse().unwrap());
        // A Kubernetes podCIDR need not follow the index: inside the cluster's CIDR is what admission asks.
        let mut pod_cidr6 = lease(8);
        pod_cidr6.subnet6 = Some("fd00:10:244:abcd::/64".parse().unwrap());
        let mut outside6 = lease(9);
        outside6.subnet6 = Some("fd00:99::/64".parse().unwrap());
        // A node IP inside a subnet (its own or not) would overlap the subnet element: the kernel refuses
        // overlapping elements, which would fail the whole table.
        let mut inside = lease(6);
        inside.node_ip = "10.244.6.9".parse().unwrap();
        let leases = [lease(1), huge, outside, wrong6, inside, pod_cidr6, outside6, lease(2)];
        let a = allowed(&cfg(), &leases, &[blue()]);
        assert_eq!(a.skipped.len(), 5, "{:?}", a.skipped);
        assert!(a.sources.contains(&src("172.30.8.1", 1, "fd00:10:244:abcd::/64")));
        assert!(a.sources.contains(&src("172.30.9.1", 1, "10.244.9.0/24")));
        assert!(!a.sources.iter().any(|s| s.inner.to_string().starts_with("fd00:99:")));
        assert!(a.skipped.iter().any(|s| s.contains("10.0.0.0/8")), "{:?}", a.skipped);
        assert!(!a
            .sources
            .iter()
            .any(|s| s.node_ip.to_string() == "172.30.3.1" || s.node_ip.to_string() == "172.30.4.1"));
        assert!(a.sources.contains(&src("172.30.5.1", 1, "10.244.5.0/24")), "the IPv4 part of a bad subnet6 stays");
        assert!(!a
            .sources
            .iter()
            .any(|s| s.node_ip.to_string() == "172.30.5.1" && s.inner.addr().is_ipv6() && s.vni == 1));
        assert!(a.sources.contains(&src("10.244.6.9", 1, "10.244.6.0/24")));
        assert!(a.sources.contains(&src("172.30.2.1", 1, "10.244.2.0/24")), "a later good lease stays");
        crate::firewall::tests::nft_accepts(&table(a.sources));
    }

    #[test]
    fn a_peer_inside_a_tenant_network_is_left_out_of_it() {
        let mut l = lease(7);
        l.node_ip = "10.50.99.1".parse().unwrap();
        let a = allowed(&cfg(), &[l], &[blue()]);
        assert!(!a.sources.iter().any(|s| s.vni == 100), "{:?}", a.sources);
        assert!(a.sources.iter().any(|s| s.vni == 1));
    }

    #[test]
    fn a_network_past_a_nodes_index_gives_it_nothing_there() {
        let small: TenantNetwork =
            serde_json::from_value(serde_json::json!({"name": "s", "cidr": "10.60.0.0/23", "vni": 7})).unwrap();
        let a = allowed(&cfg(), &[lease(1), lease(2)], &[small]);
        assert!(a.sources.contains(&src("172.30.1.1", 7, "10.60.1.0/24")));
        assert!(!a.sources.iter().any(|s| s.node_ip.to_string() == "172.30.2.1" && s.vni == 7));
    }
}
