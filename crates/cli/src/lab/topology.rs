//! The lab's wires: one "fabric" namespace is the underlay network, every node is a namespace with an `eth0`
//! veth into the fabric.
//!
//! Two underlays, because the backends need different ones:
//! - `l2`: the fabric is a bridge, every node on one /24 — what host-gw needs (and what makes VXLAN use direct
//!   routes between nodes, its "direct routing" optimisation).
//! - `routed`: every node on its own /24, the fabric routes between them — nodes share no L2 segment, so VXLAN
//!   must tunnel. The default for VXLAN, so the lab exercises the tunnel.
//! - `routed6`: the same with IPv6 only (node i is `fd30:0:0:i::1/64`): the tunnels run over IPv6, with their
//!   larger overhead (VXLAN 70, WireGuard 80), while the pods keep their IPv4 (and, with `--ipv6`, IPv6).
//!
//! All links live inside the lab's namespaces; nothing is added to the host's own network.
use crate::sh::{in_ns, ip};
use anyhow::Result;

pub const FABRIC_IP_L2: &str = "172.30.0.254";

/// Underlay address of node `i` (1-based) and the address the fabric answers on for it.
pub fn node_addr(underlay: &str, i: usize) -> (String, String) {
    match underlay {
        "l2" => (format!("172.30.0.{i}"), FABRIC_IP_L2.to_string()),
        "routed6" => (format!("fd30:0:0:{i:x}::1"), format!("fd30:0:0:{i:x}::fe")),
        _ => (format!("172.30.{i}.1"), format!("172.30.{i}.254")),
    }
}

pub fn create_fabric(ns: &str, underlay: &str) -> Result<()> {
    add_ns(ns)?;
    in_ns(ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    if underlay == "routed6" {
        in_ns(ns, "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])?;
    }
    if underlay == "l2" {
        ip(ns, &["link", "add", "br0", "type", "bridge"])?;
        ip(ns, &["addr", "add", &format!("{FABRIC_IP_L2}/24"), "dev", "br0"])?;
        ip(ns, &["link", "set", "br0", "up"])?;
    }
    Ok(())
}

pub fn add_ns(ns: &str) -> Result<()> {
    crate::sh::run("ip", &["netns", "add", ns])?;
    ip(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Creates node namespace `ns` (node number `i`) and wires its eth0 into the fabric.
pub fn create_node(fabric: &str, ns: &str, i: usize, underlay: &str) -> Result<String> {
    add_ns(ns)?;
    let port = format!("n{i}");
    // The peer is created directly in the node namespace: no link ever appears in the host namespace.
    ip(fabric, &["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
    let (addr, gw) = node_addr(underlay, i);
    if underlay == "l2" {
        ip(fabric, &["link", "set", &port, "master", "br0"])?;
        ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
    } else if underlay == "routed6" {
        // No duplicate address detection: the addresses are usable at once (agents bind to them), and the lab
        // hands each out once.
        ip(fabric, &["-6", "addr", "add", &format!("{gw}/64"), "dev", &port, "nodad"])?;
        ip(ns, &["-6", "addr", "add", &format!("{addr}/64"), "dev", "eth0", "nodad"])?;
    } else {
        ip(fabric, &["addr", "add", &format!("{gw}/24"), "dev", &port])?;
        ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
    }
    ip(fabric, &["link", "set", &port, "up"])?;
    ip(ns, &["link", "set", "eth0", "up"])?;
    let fam = if underlay == "routed6" { "-6" } else { "-4" };
    ip(ns, &[fam, "route", "add", "default", "via", &gw])?;
    Ok(addr)
}
