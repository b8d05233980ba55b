//! Tenant networks on this node, pure: store objects + leases + what the kernel already holds → the kernel state
//! to program, the node file's `networks`, and each network's status on this node.
//!
//! Per network N (VNI v, table T, slot S) this node serves, and per peer lease L (index i, node IP, VTEP MAC):
//! `(s4, s6) = N.subnet_for(i)`; in table T `s4 via s4.0 dev wn<v> onlink` (+ s6), neighbour `s4.0 → MAC` and
//! FDB `MAC → node IP` on `wn<v>`; T ends with `unreachable N.cidr` (+ cidr6), so nothing inside the network
//! falls through to another table; rules (pref [`RULE_PRIORITY`]): `fwmark S<<24/0xff000000 lookup T` (the
//! isolation firewall marks the network's pods' packets), `iif wn<v> lookup T` (decapsulated packets), and
//! `iif lo to <own s4> lookup T` (the node's own probes to its pods) only when N's CIDR overlaps no other
//! network and not the default cluster CIDR: with an overlap, "to 10.50.1.0/24" from the node is ambiguous, and
//! the node reaches none of the overlapping networks' pods rather than the wrong one.
//!
//! A node serves N when it runs the VXLAN backend and N has a node subnet for its lease index. Peers are taken
//! from the default leases (already admitted); a peer without a subnet in N (past N's end) or without a VTEP
//! MAC is skipped for N only.
use super::slots::{mark_of, MARK_MASK};
use crate::backend::vxlan::vtep_mac;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use weft_dataplane::networks::{NetworksState, Rule, TableRoute, TableRouteKind};
use weft_dataplane::{Fdb, Neigh};
use weft_types::tenant::{network_of, NetworkIds, NetworkNodeStatus, TenantNetwork};
use weft_types::{Lease, NetworkConfig, NodeNetwork};

pub const RULE_PRIORITY: u32 = 1000;

/// What the plan needs to know about this node.
pub struct Local<'a> {
    pub me: &'a Lease,
    pub cfg: &'a NetworkConfig,
    /// The backend's name; tenant networks need `vxlan`.
    pub backend: &'a str,
    /// The pod MTU of the default network (tenant devices have the same).
    pub mtu: u32,
}

/// One network with kernel presence on this node (served or draining), for the isolation firewall and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub name: String,
    pub vni: u32,
    pub slot: u8,
    pub ids: NetworkIds,
    pub cidr: Ipv4Net,
    pub cidr6: Option<Ipv6Net>,
    pub subnet: Ipv4Net,
    pub subnet6: Option<Ipv6Net>,
    pub masquerade: bool,
    /// Deleted from the store; kept while local pods hold addresses.
    pub draining: bool,
    /// Peers programmed for this network.
    pub peers: usize,
    /// IPv4 addresses local pods hold in its pool.
    pub used: u32,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub state: NetworksState,
    pub served: Vec<Served>,
    pub node_networks: Vec<NodeNetwork>,
    /// Per store network (by name): its status on this node.
    pub statuses: BTreeMap<String, NetworkNodeStatus>,
    pub warnings: Vec<String>,
    /// Admitted store network (by name) → the namespaces it serves: a namespace here whose network the node
    /// file does not offer is "pending" for the plugin (retry), never the default network.
    pub claimed: BTreeMap<String, Vec<String>>,
}

/// A namespace selected by a second network: (namespace, the network that loses it, the one that keeps it).
pub type Conflict = (String, String, String);

/// Namespace → network, with every namespace claimed by a second network reported (the first by name keeps it).
pub fn resolve_namespaces(
    nets: &[TenantNetwork],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> (BTreeMap<String, Vec<String>>, Vec<Conflict>) {
    // Namespaces listed by name count even before their object exists (the CNI sees only the name).
    let mut all: BTreeMap<&str, BTreeMap<String, String>> =
        namespaces.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    for n in nets {
        for name in &n.namespaces.names {
            all.entry(name.as_str()).or_default();
        }
    }
    let mut by_net: BTreeMap<String, Vec<String>> = nets.iter().map(|n| (n.name.clone(), Vec::new())).collect();
    let mut conflicts = Vec::new();
    for (ns, labels) in &all {
        let Some(winner) = network_of(nets, ns, labels) else { continue };
        by_net.get_mut(&winner.name).expect("admitted").push(ns.to_string());
        for other in nets.iter().filter(|o| o.name != winner.name && o.namespaces.selects(ns, labels)) {
            conflicts.push((ns.to_string(), other.name.clone(), winner.name.clone()));
        }
    }
    (by_net, conflicts)
}

fn overlaps4(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn overlaps6(a: Ipv6Net, b: Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Addresses a node subnet offers pods (network, gateway and broadcast excluded), as the CNI's pool counts.
pub fn capacity(subnet: Ipv4Net) -> u32 {
    let size = 1u64 << (32 - u32::from(subnet.prefix_len()));
    size.saturating_sub(3).min(u64::from(u32::MAX)) as u32
}

/// Why this node cannot serve `n`, or its subnets.
pub fn serves<'a>(
    local: &Local<'_>,
    n: &TenantNetwork,
    mut peers: impl Iterator<Item = &'a Lease>,
) -> Result<(Ipv4Net, Option<Ipv6Net>), String> {
    if local.backend != "vxlan" {
        return Err(format!("tenant networks need the vxlan backend; this node runs {}", local.backend));
    }
    // The outer packet of the network's VXLAN device keeps the inner packet's mark, so the kernel routes it by
    // the network's table first: a CIDR holding the node's underlay address would swallow (`unreachable`) or
    // misroute the node's own tunnel traffic. Refused on the node, not only on peers that notice it.
    if n.contains(local.me.node_ip) {
        return Err(format!("network CIDR contains this node's underlay address {}", local.me.node_ip));
    }
    // A peer's underlay address inside the network would be routed into the network's table by this node (the
    // node's own traffic to its subnet, the tunnel packets): a pod of the network holding that address would
    // receive it. Not served at all rather than served with holes.
    if let Some(p) = peers.find(|p| n.contains(p.node_ip)) {
        return Err(format!("network CIDR contains node {}'s underlay address {}", p.node, p.node_ip));
    }
    let idx = local.cfg.index_of(local.me.subnet).ok_or("this node's lease is outside the cluster CIDR")?;
    n.subnet_for(idx).ok_or_else(|| format!("network has no node subnet for this node's index {idx}"))
}

pub struct PlanInput<'a, P> {
    /// Admitted store networks, sorted by name.
    pub nets: &'a [TenantNetwork],
    /// Networks deleted from the store whose local pods still hold addresses (kept programmed, not offered).
    pub draining: &'a [TenantNetwork],
    pub namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
    pub peers: P,
    /// VNI → fwmark slot (see `slots`).
    pub slots: &'a BTreeMap<u32, u8>,
    /// VNI → ifindex of the network's VXLAN device (absent: not created, the network is not ready).
    pub devices: &'a BTreeMap<u32, u32>,
    /// Network name → addresses local pods hold in its pool.
    pub used: &'a BTreeMap<String, u32>,
}

pub fn plan<'a, P: Iterator<Item = &'a Lease> + Clone>(local: &Local<'_>, input: PlanInput<'a, P>) -> Plan {
    let mut out = Plan::default();
    let (by_net, conflicts) = resolve_namespaces(input.nets, input.namespaces);
    out.claimed = by_net.clone();
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ns, loser, winner) in conflicts {
        let why = format!("namespace {ns} is also selected by network {winner}, which keeps it");
        out.warnings.push(format!("network {loser}: {why}"));
        reasons.entry(loser).or_default().push(why);
    }
    let every: Vec<&TenantNetwork> = input.nets.iter().chain(input.draining.iter()).collect();
    for n in &every {
        let draining = input.draining.iter().any(|d| d.name == n.name);
        let used = input.used.get(&n.name).copied().unwrap_or(0);
        let mut status =
            NetworkNodeStatus { ready: false, subnet: None, subnet6: None, used, capacity: 0, reason: None };
        let mut why: Vec<String> = reasons.remove(&n.name).unwrap_or_default();
        match serves(local, n, input.peers.clone()) {
            Err(e) => why.insert(0, e),
            Ok((s4, s6)) => {
                let s6 = s6.filter(|_| n.cidr6.is_some());
                status.subnet = Some(s4);
                status.subnet6 = s6;
                status.capacity = capacity(s4);
                let (Some(&slot), Some(&dev)) = (input.slots.get(&n.vni), input.devices.get(&n.vni)) else {
                    why.insert(
                        0,
                        if input.slots.contains_key(&n.vni) {
                            "VXLAN device not created yet".into()
                        } else {
                            "no free fwmark slot on this node (255 networks at most)".into()
                        },
                    );
                    out.statuses.insert(n.name.clone(), status);
                    finish(&mut out, n, why);
                    continue;
                };
                let peers = program(&mut out.state, local, n, &every, slot, dev, s4, s6, input.peers.clone());
                status.ready = true;
                if !draining {
                    out.node_networks.push(NodeNetwork {
                        name: n.name.clone(),
                        vni: n.vni,
                        subnet: s4,
                        subnet6: s6,
                        cidr: n.cidr,
                        cidr6: n.cidr6,
                        mtu: local.mtu,
                        namespaces: by_net.get(&n.name).cloned().unwrap_or_default(),
                    });
                } else {
                    why.insert(0, format!("deleted; draining ({used} addresses still held by local pods)"));
                }
                out.served.push(Served {
                    name: n.name.clone(),
                    vni: n.vni,
                    slot,
                    ids: n.ids(),
                    cidr: n.cidr,
                    cidr6: n.cidr6,
                    subnet: s4,
                    subnet6: s6,
                    masquerade: n.masquerade,
                    draining,
                    peers,
                    used,
                });
            }
        }
        if !draining {
            out.statuses.insert(n.name.clone(), status);
        }
        finish(&mut out, n, why);
    }
    out
}

fn finish(out: &mut Plan, n: &TenantNetwork, why: Vec<String>) {
    if let Some(st) = out.statuses.get_mut(&n.name) {
        st.reason = (!why.is_empty()).then(|| why.join("; "));
    }
}

/// Adds network `n`'s entries; returns the number of peers programmed.
#[allow(clippy::too_many_arguments)]
fn program<'a>(
    st: &mut NetworksState,
    local: &Local<'_>,
    n: &TenantNetwork,
    every: &[&TenantNetwork],
    slot: u8,
    dev: u32,
    s4: Ipv4Net,
    s6: Option<Ipv6Net>,
    peers: impl Iterator<Item = &'a Lease>,
) -> usize {
    let table = n.ids().table;
    st.add_route(TableRoute { table, dst: IpNet::V4(n.cidr), kind: TableRouteKind::Unreachable });
    if let Some(c6) = n.cidr6 {
        st.add_route(TableRoute { table, dst: IpNet::V6(c6), kind: TableRouteKind::Unreachable });
    }
    let families: &[bool] = if n.cidr6.is_some() { &[false, true] } else { &[false] };
    for &v6 in families {
        let fwmark = Some((mark_of(slot), MARK_MASK));
        st.add_rule(Rule { v6, priority: RULE_PRIORITY, fwmark, iif: None, dst: None, table });
        st.add_rule(Rule { v6, priority: RULE_PRIORITY, fwmark: None, iif: Some(n.ids().device), dst: None, table });
    }
    let others = || every.iter().filter(|o| o.name != n.name);
    let alone4 = !overlaps4(n.cidr, local.cfg.cluster_cidr) && others().all(|o| !overlaps4(n.cidr, o.cidr));
    if alone4 {
        let dst = Some(IpNet::V4(s4));
        st.add_rule(Rule { v6: false, priority: RULE_PRIORITY, fwmark: None, iif: Some("lo".into()), dst, table });
    }
    if let (Some(c6), Some(s6)) = (n.cidr6, s6) {
        let alone6 = local.cfg.cluster_cidr6.is_none_or(|d| !overlaps6(c6, d))
            && others().all(|o| o.cidr6.is_none_or(|o6| !overlaps6(c6, o6)));
        if alone6 {
            let dst = Some(IpNet::V6(s6));
            st.add_rule(Rule { v6: true, priority: RULE_PRIORITY, fwmark: None, iif: Some("lo".into()), dst, table });
        }
    }
    let mut count = 0;
    for peer in peers {
        // A peer whose underlay address lies inside the network cannot be reached through it (see `serves`).
        if peer.node == local.me.node
            || peer.node_ip.is_ipv4() != local.me.node_ip.is_ipv4()
            || n.contains(peer.node_ip)
        {
            continue;
        }
        let (Some(idx), Some(mac)) = (local.cfg.index_of(peer.subnet), vtep_mac(&peer.backend_data)) else {
            continue;
        };
        let Some((p4, p6)) = n.subnet_for(idx) else { continue };
        let mut via = |dst: IpNet| {
            let gateway = dst.network();
            st.add_neigh(Neigh { ifindex: dev, ip: gateway, mac });
            st.add_route(TableRoute { table, dst, kind: TableRouteKind::Via { gateway, ifindex: dev } });
        };
        via(IpNet::V4(p4));
        if let (Some(p6), Some(_)) = (p6, n.cidr6) {
            via(IpNet::V6(p6));
        }
        st.add_fdb(Fdb { ifindex: dev, mac, dst: peer.node_ip });
        count += 1;
    }
    count
}
