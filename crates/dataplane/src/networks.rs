//! Tenant networks' kernel state as plain data: policy-routing rules, routes in the networks' own tables, and the
//! neighbour/FDB entries on their VXLAN devices; and its pure diff.
//!
//! Kept beside [`crate::OverlayState`] rather than inside it: the default network's state (main table, nexthop
//! objects, one device) is read and diffed exactly as before, and nothing a tenant network holds can be mistaken
//! for a default-network entry or deleted by its diff (the default reader sees only the main table; tenant routes
//! use no nexthop objects, which the default reader would claim).
//!
//! What weft owns here, and so reads back and may delete:
//! - ip rules with protocol [`RTPROT_WEFT`](crate::RTPROT_WEFT) (FRA_PROTOCOL);
//! - routes with protocol weft in a tenant table (top byte `0x57`, see `weft_types::tenant::TENANT_ID_BASE`) that
//!   are either unreachable or go through one of the networks' VXLAN devices. The CNI's pod routes in the same
//!   tables (protocol weft too, `dev <host veth> scope link`) are the plugin's: never read as ours;
//! - permanent neighbours and FDB entries with a destination on the networks' VXLAN devices.
use crate::{Fdb, Mac, Neigh, Op};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Top byte of every tenant route table (`weft_types::tenant::TENANT_ID_BASE`); the reader keeps only those.
pub const TENANT_TABLE_MASK: u32 = 0xff00_0000;
pub const TENANT_TABLE_BASE: u32 = 0x5700_0000;

pub fn is_tenant_table(table: u32) -> bool {
    table & TENANT_TABLE_MASK == TENANT_TABLE_BASE
}

/// One policy-routing rule, `ip rule add [from all] [fwmark M/K] [iif X] [to D] lookup T pref P proto weft`.
/// All fields identify it: the kernel matches a delete on every attribute given.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub v6: bool,
    pub priority: u32,
    /// (mark, mask).
    pub fwmark: Option<(u32, u32)>,
    pub iif: Option<String>,
    pub dst: Option<IpNet>,
    pub table: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableRouteKind {
    /// `via GW dev IFINDEX onlink`.
    Via { gateway: IpAddr, ifindex: u32 },
    /// `unreachable DST`: nothing inside a network's CIDR falls through to another table.
    Unreachable,
}

/// A route in a tenant table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableRoute {
    pub table: u32,
    pub dst: IpNet,
    pub kind: TableRouteKind,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NetworksState {
    pub rules: BTreeSet<Rule>,
    /// Key: (table, destination).
    pub routes: BTreeMap<(u32, IpNet), TableRoute>,
    /// Key: (ifindex, ip).
    pub neighs: BTreeMap<(u32, IpAddr), Neigh>,
    /// Key: (ifindex, mac, dst).
    pub fdbs: BTreeMap<(u32, Mac, IpAddr), Fdb>,
}

impl NetworksState {
    pub fn add_rule(&mut self, r: Rule) {
        self.rules.insert(r);
    }
    pub fn add_route(&mut self, r: TableRoute) {
        self.routes.insert((r.table, r.dst), r);
    }
    pub fn add_neigh(&mut self, n: Neigh) {
        self.neighs.insert((n.ifindex, n.ip), n);
    }
    pub fn add_fdb(&mut self, f: Fdb) {
        self.fdbs.insert((f.ifindex, f.mac, f.dst), f);
    }
    pub fn len(&self) -> usize {
        self.rules.len() + self.routes.len() + self.neighs.len() + self.fdbs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where to read tenant state: the networks' VXLAN devices (neighbours, FDB and via-routes are read only there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworksScope {
    pub devices: Vec<u32>,
}

/// Ops turning `actual` into `desired`. On the way in neighbours and FDB entries first, then routes, then the
/// rules that steer traffic into the tables (so no packet is steered into a table that cannot deliver it yet);
/// on the way out the rules first, then routes, neighbours and FDB entries.
pub fn diff_networks(desired: &NetworksState, actual: &NetworksState) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend(desired.neighs.iter().filter(|(k, v)| actual.neighs.get(*k) != Some(*v)).map(|(_, n)| Op::AddNeigh(*n)));
    ops.extend(desired.fdbs.iter().filter(|(k, _)| !actual.fdbs.contains_key(*k)).map(|(_, f)| Op::AddFdb(*f)));
    ops.extend(
        desired.routes.iter().filter(|(k, v)| actual.routes.get(*k) != Some(*v)).map(|(_, r)| Op::AddTableRoute(*r)),
    );
    ops.extend(desired.rules.difference(&actual.rules).cloned().map(Op::AddRule));
    ops.extend(actual.rules.difference(&desired.rules).cloned().map(Op::DelRule));
    ops.extend(
        actual.routes.iter().filter(|(k, _)| !desired.routes.contains_key(*k)).map(|(_, r)| Op::DelTableRoute(*r)),
    );
    ops.extend(actual.neighs.iter().filter(|(k, _)| !desired.neighs.contains_key(*k)).map(|(_, n)| Op::DelNeigh(*n)));
    ops.extend(actual.fdbs.iter().filter(|(k, _)| !desired.fdbs.contains_key(*k)).map(|(_, f)| Op::DelFdb(*f)));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(table: u32, dev: u32) -> NetworksState {
        let mut s = NetworksState::default();
        let mac = [2, 0, 0, 0, 0, 1];
        s.add_neigh(Neigh { ifindex: dev, ip: "10.50.2.0".parse().unwrap(), mac });
        s.add_fdb(Fdb { ifindex: dev, mac, dst: "192.168.0.2".parse().unwrap() });
        s.add_route(TableRoute {
            table,
            dst: "10.50.2.0/24".parse().unwrap(),
            kind: TableRouteKind::Via { gateway: "10.50.2.0".parse().unwrap(), ifindex: dev },
        });
        s.add_route(TableRoute { table, dst: "10.50.0.0/16".parse().unwrap(), kind: TableRouteKind::Unreachable });
        s.add_rule(Rule {
            v6: false,
            priority: 1000,
            fwmark: Some((1 << 24, 0xff00_0000)),
            iif: None,
            dst: None,
            table,
        });
        s
    }

    fn kinds(ops: &[Op]) -> Vec<&'static str> {
        ops.iter()
            .map(|o| match o {
                Op::AddNeigh(_) => "+neigh",
                Op::AddFdb(_) => "+fdb",
                Op::AddTableRoute(_) => "+route",
                Op::AddRule(_) => "+rule",
                Op::DelRule(_) => "-rule",
                Op::DelTableRoute(_) => "-route",
                Op::DelNeigh(_) => "-neigh",
                Op::DelFdb(_) => "-fdb",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn in_rules_last_out_rules_first_equal_is_empty() {
        let s = state(0x5700_0064, 7);
        assert_eq!(
            kinds(&diff_networks(&s, &NetworksState::default())),
            ["+neigh", "+fdb", "+route", "+route", "+rule"]
        );
        assert_eq!(
            kinds(&diff_networks(&NetworksState::default(), &s)),
            ["-rule", "-route", "-route", "-neigh", "-fdb"]
        );
        assert!(diff_networks(&s, &s).is_empty());
    }

    #[test]
    fn same_prefix_in_two_tables_are_two_routes() {
        let mut a = state(0x5700_0064, 7);
        let b = state(0x5700_0065, 8);
        a.routes.extend(b.routes.clone());
        assert_eq!(a.routes.len(), 4);
        let ops = diff_networks(&a, &b);
        assert_eq!(ops.iter().filter(|o| matches!(o, Op::AddTableRoute(r) if r.table == 0x5700_0064)).count(), 2);
        assert!(!ops.iter().any(|o| matches!(o, Op::DelTableRoute(_))));
    }

    #[test]
    fn tenant_tables_are_recognised() {
        assert!(is_tenant_table(0x5700_0064));
        assert!(!is_tenant_table(254) && !is_tenant_table(0x7765_6674));
    }
}
