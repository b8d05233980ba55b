//! The overlay's kernel state as plain data: what the agent wants programmed and what the kernel has.
//!
//! The agent builds an [`OverlayState`] from the leases (desired), the dataplane reads one from the kernel
//! (actual), [`diff`](crate::diff::diff) turns the pair into [`Op`]s, and [`Dataplane::apply`] applies only those.
//! Everything here is owned by weft: routes carry [`RTPROT_WEFT`], nexthops too, neighbours and FDB entries live
//! on weft's own VXLAN device, so reading "actual" never touches anything someone else programmed.
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Route protocol number marking weft's routes and nexthops (`ip route show proto 201`).
pub const RTPROT_WEFT: u8 = 201;

pub type Mac = [u8; 6];

pub fn format_mac(mac: &Mac) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// Underlay address packets leave from (the node IP).
    pub local: IpAddr,
    /// Underlay link the tunnel is bound to.
    pub underlay_ifindex: u32,
    pub mtu: u32,
    /// Address put on the device (the node subnet's network address as /32, flannel-style), so that traffic
    /// from the node to remote pods has a source address inside the cluster network.
    pub address: Option<IpNet>,
    /// Same for IPv6 (subnet6 network address /128).
    pub address6: Option<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtepInfo {
    pub ifindex: u32,
    pub mac: Mac,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlayInfo {
    pub ifindex: u32,
    pub name: String,
    pub mtu: u32,
    /// The node IP with its prefix on that link (tells which peers share the L2 segment).
    pub network: IpNet,
}

/// A permanent neighbour entry on the VXLAN device: the remote VTEP's gateway address → its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neigh {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Mac,
}

/// A forwarding-database entry on the VXLAN device: remote VTEP MAC → remote node IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    pub ifindex: u32,
    pub mac: Mac,
    pub dst: IpAddr,
}

/// A nexthop object (`ip nexthop`): routes point at it by id, which keeps route insertion linear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nexthop {
    pub id: u32,
    pub gateway: IpAddr,
    pub ifindex: u32,
    pub onlink: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTarget {
    /// Through a nexthop object (RTA_NH_ID).
    Nexthop(u32),
    /// Classic gateway route (used where nexthop objects are unavailable).
    Via { gateway: IpAddr, ifindex: u32, onlink: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub target: RouteTarget,
}

/// Entries keyed by what identifies them in the kernel; the value is the full entry, so a changed value
/// (same neighbour IP, new MAC) is a replace, not a delete + add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayState {
    /// Key: (ifindex, ip).
    pub neighs: BTreeMap<(u32, IpAddr), Neigh>,
    /// Key: (ifindex, mac, dst) — one MAC may legitimately have several destinations (append semantics).
    pub fdbs: BTreeMap<(u32, Mac, IpAddr), Fdb>,
    /// Key: id.
    pub nexthops: BTreeMap<u32, Nexthop>,
    /// Key: destination prefix.
    pub routes: BTreeMap<IpNet, Route>,
}

impl OverlayState {
    pub fn add_neigh(&mut self, n: Neigh) {
        self.neighs.insert((n.ifindex, n.ip), n);
    }
    pub fn add_fdb(&mut self, f: Fdb) {
        self.fdbs.insert((f.ifindex, f.mac, f.dst), f);
    }
    pub fn add_nexthop(&mut self, n: Nexthop) {
        self.nexthops.insert(n.id, n);
    }
    pub fn add_route(&mut self, r: Route) {
        self.routes.insert(r.dst, r);
    }
    pub fn len(&self) -> usize {
        self.neighs.len() + self.fdbs.len() + self.nexthops.len() + self.routes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One kernel change. `diff` orders them so the kernel never needs to ARP or flood: neighbours and FDB entries
/// before nexthops before routes on the way in; routes before nexthops before neighbours/FDB on the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddNeigh(Neigh),
    DelNeigh(Neigh),
    AddFdb(Fdb),
    DelFdb(Fdb),
    AddNexthop(Nexthop),
    DelNexthop(Nexthop),
    AddRoute(Route),
    DelRoute(Route),
    /// Tenant networks (see [`crate::networks`]): a policy-routing rule (added exclusively; an existing equal
    /// rule counts as added) and a route in a tenant table (replace).
    AddRule(crate::networks::Rule),
    DelRule(crate::networks::Rule),
    AddTableRoute(crate::networks::TableRoute),
    DelTableRoute(crate::networks::TableRoute),
}

/// Where to look for weft's entries when reading the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The VXLAN device whose neighbours and FDB entries are ours (None with host-gw).
    pub vxlan_ifindex: Option<u32>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub applied: usize,
    /// Ops the kernel refused, with its message. Apply goes on after a failure; the next resync retries.
    pub failed: Vec<(Op, String)>,
}
