//! Subnet choice, with no I/O: both stores call [`plan`] inside their own atomic step (an SQLite write
//! transaction, or before an etcd compare-and-swap) so the policy is written and tested once.
//!
//! Order of preference, as the trait promises: the node's own live lease (a restart keeps its subnet), then the
//! hint (the subnet in its node file, so a node whose lease lapsed while it was down still gets it back when
//! nobody took it), then any free subnet. The free scan starts at a caller-chosen offset: with a random offset,
//! 50 agents racing against etcd mostly try different subnets and few compare-and-swaps fail; the embedded store
//! serialises writers anyway and passes 0 so subnets fill in order, which reads better in a lab.
//!
//! Subnets are computed by arithmetic, never by iterating `Ipv4Net::subnets()`: a /8 cut into /30s has four
//! million of them.
use ipnet::Ipv4Net;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use weft_types::NetworkConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The node's own lease is still live and valid: keep its subnet, refresh the lease.
    Keep(Ipv4Net),
    /// Take this free subnet (the hint, or one found by the scan).
    Take(Ipv4Net),
    /// Every subnet of the cluster CIDR is taken.
    Exhausted,
}

/// The `i`-th node subnet of the cluster CIDR, or None past the end.
pub fn nth_subnet(cfg: &NetworkConfig, i: u64) -> Option<Ipv4Net> {
    if i >= cfg.subnet_count() {
        return None;
    }
    let shift = 32 - u32::from(cfg.subnet_len);
    let base = u64::from(u32::from(cfg.cluster_cidr.network()));
    let addr = base + (i << shift);
    Ipv4Net::new(Ipv4Addr::from(u32::try_from(addr).ok()?), cfg.subnet_len).ok()
}

/// True if `subnet` is one of the node subnets of the cluster CIDR (inside it, right length, aligned).
pub fn is_node_subnet(cfg: &NetworkConfig, subnet: Ipv4Net) -> bool {
    subnet.network() == subnet.addr() && cfg.index_of(subnet).is_some()
}

/// Chooses a subnet for a node. `own` is the node's current live lease, `taken` every live lease's subnet
/// (the node's own included or not, either works), `start` the scan offset (any number; taken modulo the count).
/// The lease a request gets on `subnet`: the IPv6 subnet is paired by index (both stores must agree on it).
pub fn lease_for(
    cfg: &weft_types::NetworkConfig,
    req: &weft_types::LeaseRequest,
    subnet: ipnet::Ipv4Net,
    expires_at_ms: u64,
) -> weft_types::Lease {
    weft_types::Lease {
        node: req.node.clone(),
        subnet,
        subnet6: cfg.index_of(subnet).and_then(|i| cfg.subnet6(i)),
        node_ip: req.node_ip,
        backend_data: req.backend_data.clone(),
        expires_at_ms,
    }
}

pub fn plan(
    cfg: &NetworkConfig,
    own: Option<Ipv4Net>,
    hint: Option<Ipv4Net>,
    taken: &HashSet<Ipv4Net>,
    start: u64,
) -> Plan {
    if let Some(own) = own.filter(|s| is_node_subnet(cfg, *s)) {
        return Plan::Keep(own);
    }
    if let Some(hint) = hint.filter(|h| is_node_subnet(cfg, *h) && !taken.contains(h)) {
        return Plan::Take(hint);
    }
    let count = cfg.subnet_count();
    if taken.len() as u64 >= count && taken.iter().all(|s| is_node_subnet(cfg, *s)) {
        return Plan::Exhausted;
    }
    let start = start % count;
    (0..count)
        .map(|k| (start + k) % count)
        .filter_map(|i| nth_subnet(cfg, i))
        .find(|s| !taken.contains(s))
        .map_or(Plan::Exhausted, Plan::Take)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(cidr: &str, len: u8) -> NetworkConfig {
        serde_json::from_value(serde_json::json!({"clusterCidr": cidr, "subnetLen": len})).unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn nth_matches_the_types_crate_and_ends() {
        let c = cfg("10.244.0.0/16", 24);
        for i in [0, 1, 77, 255] {
            assert_eq!(nth_subnet(&c, i), c.subnet(i));
        }
        assert_eq!(nth_subnet(&c, 256), None);
        let big = cfg("10.0.0.0/8", 30);
        assert_eq!(nth_subnet(&big, (1 << 22) - 1), Some(net("10.255.255.252/30")));
    }

    #[test]
    fn own_lease_then_hint_then_scan() {
        let c = cfg("10.244.0.0/16", 24);
        let taken: HashSet<_> = [net("10.244.0.0/24"), net("10.244.5.0/24")].into();
        assert_eq!(plan(&c, Some(net("10.244.5.0/24")), None, &taken, 0), Plan::Keep(net("10.244.5.0/24")));
        assert_eq!(plan(&c, None, Some(net("10.244.9.0/24")), &taken, 0), Plan::Take(net("10.244.9.0/24")));
        // A taken hint falls through to the scan, which skips taken subnets.
        assert_eq!(plan(&c, None, Some(net("10.244.5.0/24")), &taken, 0), Plan::Take(net("10.244.1.0/24")));
        // A hint outside the cluster CIDR, of the wrong length, or unaligned is ignored.
        for bad in ["10.245.9.0/24", "10.244.9.0/25", "10.244.9.128/24"] {
            assert_eq!(plan(&c, None, Some(net(bad)), &taken, 0), Plan::Take(net("10.244.1.0/24")));
        }
        // An own lease that is not a node subnet of this config is not kept.
        assert_eq!(plan(&c, Some(net("10.9.0.0/24")), None, &taken, 4), Plan::Take(net("10.244.4.0/24")));
    }

    #[test]
    fn scan_wraps_and_exhausts() {
        let c = cfg("10.0.0.0/29", 30);
        let mut taken: HashSet<_> = [net("10.0.0.4/30")].into();
        assert_eq!(plan(&c, None, None, &taken, 1), Plan::Take(net("10.0.0.0/30")));
        taken.insert(net("10.0.0.0/30"));
        assert_eq!(plan(&c, None, Some(net("10.0.0.0/30")), &taken, 0), Plan::Exhausted);
    }

    proptest! {
        #[test]
        fn never_hands_out_a_taken_or_foreign_subnet(
            len in 20u8..=26,
            taken_idx in proptest::collection::hash_set(0u64..64, 0..64),
            hint_idx in proptest::option::of(0u64..80),
            start in any::<u64>(),
        ) {
            let c = cfg("10.244.0.0/20", len);
            let taken: HashSet<_> = taken_idx.iter().filter_map(|i| nth_subnet(&c, *i)).collect();
            let hint = hint_idx.and_then(|i| nth_subnet(&c, i));
            match plan(&c, None, hint, &taken, start) {
                Plan::Take(s) => {
                    prop_assert!(!taken.contains(&s));
                    prop_assert!(is_node_subnet(&c, s));
                    if let Some(h) = hint.filter(|h| !taken.contains(h)) {
                        prop_assert_eq!(s, h);
                    }
                }
                Plan::Exhausted => prop_assert_eq!(taken.len() as u64, c.subnet_count()),
                Plan::Keep(_) => prop_assert!(false, "no own lease was given"),
            }
        }
    }
}
