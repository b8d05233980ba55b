//! `diff(desired, actual) -> Vec<Op>`: the pure heart of the overlay reconciler.
//!
//! The agent never asks "what changed since last time?"; it builds the whole desired state from the leases, reads
//! the actual one from the kernel, and applies only the difference (level-triggered, like kube-rs controllers). So a
//! restart, a missed watch event or an entry deleted behind weft's back all converge the same way.
//!
//! Decisions:
//! - A changed entry (same key, different value: a neighbour with a new MAC, a nexthop with a new gateway, a route
//!   now pointing at another nexthop) is emitted as a single `Add*`. Every `Add*` is applied with *replace*
//!   semantics (NLM_F_CREATE|NLM_F_REPLACE), so the kernel swaps the entry in place: no window without a route or
//!   a neighbour, as a Del+Add would have. FDB entries are keyed by all their fields, so a changed FDB destination
//!   is an add of the new entry plus a delete of the old one (FDB entries are appended, a MAC may have several).
//! - Order (flannel's vxlan.go reasoning): on the way in, neighbour and FDB entries exist before the nexthop and
//!   route that make traffic use them, so the kernel never ARPs or floods on the VXLAN device; nexthops exist
//!   before the routes that name them. On the way out, routes go before the nexthops they use (deleting a nexthop
//!   would silently take its routes with it), and neighbours/FDB last.
use crate::{Op, OverlayState};
use std::collections::BTreeMap;

/// Ops that turn `actual` into `desired`, in a safe order (see the module comment). `diff(x, x)` is empty.
pub fn diff(desired: &OverlayState, actual: &OverlayState) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend(changed(&desired.neighs, &actual.neighs).map(|n| Op::AddNeigh(*n)));
    ops.extend(changed(&desired.fdbs, &actual.fdbs).map(|f| Op::AddFdb(*f)));
    ops.extend(changed(&desired.nexthops, &actual.nexthops).map(|n| Op::AddNexthop(*n)));
    ops.extend(changed(&desired.routes, &actual.routes).map(|r| Op::AddRoute(*r)));
    ops.extend(extra(&desired.routes, &actual.routes).map(|r| Op::DelRoute(*r)));
    ops.extend(extra(&desired.nexthops, &actual.nexthops).map(|n| Op::DelNexthop(*n)));
    ops.extend(extra(&desired.neighs, &actual.neighs).map(|n| Op::DelNeigh(*n)));
    ops.extend(extra(&desired.fdbs, &actual.fdbs).map(|f| Op::DelFdb(*f)));
    ops
}

/// Desired entries that are missing from `actual` or differ from it.
fn changed<'a, K: Ord, V: PartialEq>(
    desired: &'a BTreeMap<K, V>,
    actual: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = &'a V> + 'a {
    desired.iter().filter(move |(k, v)| actual.get(k) != Some(*v)).map(|(_, v)| v)
}

/// Actual entries whose key is not desired at all.
fn extra<'a, K: Ord, V>(desired: &'a BTreeMap<K, V>, actual: &'a BTreeMap<K, V>) -> impl Iterator<Item = &'a V> + 'a {
    actual.iter().filter(move |(k, _)| !desired.contains_key(k)).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fdb, Neigh, Nexthop, Route, RouteTarget};
    use std::net::{IpAddr, Ipv4Addr};

    fn ip(a: u8, b: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 244, a, b))
    }

    /// One peer the way the agent programs it: neighbour, FDB, nexthop, route.
    fn peer(state: &mut OverlayState, i: u8, mac_last: u8) {
        let gw = ip(i, 0);
        let mac = [2, 0, 0, 0, 0, mac_last];
        state.add_neigh(Neigh { ifindex: 5, ip: gw, mac });
        state.add_fdb(Fdb { ifindex: 5, mac, dst: IpAddr::V4(Ipv4Addr::new(192, 168, 0, i)) });
        state.add_nexthop(Nexthop { id: u32::from(i), gateway: gw, ifindex: 5, onlink: true });
        state.add_route(Route {
            dst: format!("10.244.{i}.0/24").parse().unwrap(),
            target: RouteTarget::Nexthop(i.into()),
        });
    }

    fn kinds(ops: &[Op]) -> Vec<&'static str> {
        ops.iter()
            .map(|op| match op {
                Op::AddNeigh(_) => "+neigh",
                Op::AddFdb(_) => "+fdb",
                Op::AddNexthop(_) => "+nh",
                Op::AddRoute(_) => "+route",
                Op::DelRoute(_) => "-route",
                Op::DelNexthop(_) => "-nh",
                Op::DelNeigh(_) => "-neigh",
                Op::DelFdb(_) => "-fdb",
                _ => "tenant",
            })
            .collect()
    }

    #[test]
    fn from_empty_adds_everything_neighbour_first_route_last() {
        let mut desired = OverlayState::default();
        peer(&mut desired, 1, 1);
        let ops = diff(&desired, &OverlayState::default());
        assert_eq!(kinds(&ops), ["+neigh", "+fdb", "+nh", "+route"]);
    }

    #[test]
    fn to_empty_deletes_route_first_fdb_last() {
        let mut actual = OverlayState::default();
        peer(&mut actual, 1, 1);
        let ops = diff(&OverlayState::default(), &actual);
        assert_eq!(kinds(&ops), ["-route", "-nh", "-neigh", "-fdb"]);
    }

    #[test]
    fn changed_mac_replaces_neighbour_and_moves_fdb() {
        let mut actual = OverlayState::default();
        peer(&mut actual, 1, 1);
        let mut desired = OverlayState::default();
        peer(&mut desired, 1, 9);
        let ops = diff(&desired, &actual);
        // The neighbour is replaced in place; the FDB entry is keyed by MAC, so new one in, old one out.
        assert_eq!(kinds(&ops), ["+neigh", "+fdb", "-fdb"]);
        assert_eq!(ops[0], Op::AddNeigh(desired.neighs[&(5, ip(1, 0))]));
    }

    #[test]
    fn route_to_another_nexthop_is_a_replace_and_old_nexthop_goes_after() {
        let mut actual = OverlayState::default();
        peer(&mut actual, 1, 1);
        let mut desired = actual.clone();
        desired.nexthops.clear();
        desired.add_nexthop(Nexthop { id: 7, gateway: ip(1, 0), ifindex: 5, onlink: true });
        let dst = "10.244.1.0/24".parse().unwrap();
        desired.add_route(Route { dst, target: RouteTarget::Nexthop(7) });
        let ops = diff(&desired, &actual);
        assert_eq!(kinds(&ops), ["+nh", "+route", "-nh"]);
        assert_eq!(ops[1], Op::AddRoute(Route { dst, target: RouteTarget::Nexthop(7) }));
        assert!(matches!(ops[2], Op::DelNexthop(Nexthop { id: 1, .. })));
    }

    #[test]
    fn diff_of_equal_states_is_empty() {
        let mut s = OverlayState::default();
        for i in 1..20 {
            peer(&mut s, i, i);
        }
        assert!(diff(&s, &s).is_empty());
    }
}
