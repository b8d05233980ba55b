//! Lease admission: which stored leases may reach the dataplane. Pure: entries in, admitted leases and refusals
//! out, so every rule is unit-tested without a store.
//!
//! Every store entry is hostile input: anyone who can write the store (a pod that reaches an unauthenticated
//! etcd, a node with a stolen credential) could otherwise steer another node's pod traffic to itself by
//! publishing a lease on the victim's subnet. The rules:
//! - the value decodes, and agrees with its key: the subnet a key names (etcd, SQLite) and the IPv6 subnet
//!   paired with it, the node a key names (SQLite, Kubernetes);
//! - the node name is a DNS-1123 subdomain (what Kubernetes allows for a Node);
//! - the subnet is one of the cluster's node subnets (inside `clusterCidr`, `subnetLen` long, aligned), and the
//!   IPv6 subnet is inside `clusterCidr6` (without a `clusterCidr6`, a lease's IPv6 subnet is dropped, not
//!   routed);
//! - the node IP is a unicast address one can tunnel to: not loopback, multicast, unspecified, link-local or
//!   broadcast;
//! - the backend data passes the backend's own check (VXLAN: [`check_vtep_mac`]);
//! - no overlap: of two leases whose subnets overlap, or that name the same node, the older by creation wins,
//!   and no other node's lease may overlap the local node's own subnet, whatever its age.
//!
//! Overlap is found with interval maps of the admitted subnets (disjoint by construction), so admitting
//! 10 000 leases costs 10 000 map lookups, not 50 million comparisons.
use crate::entry::LeaseEntry;
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use weft_types::{BackendData, Lease, NetworkConfig};

/// Why a lease was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("value does not decode: {0}")]
    Undecodable(String),
    #[error("value claims subnet {claimed} but its key names {key}")]
    SubnetNotKey { claimed: Ipv4Net, key: Ipv4Net },
    #[error("value claims IPv6 subnet {claimed} but the key's subnet pairs with {expected}")]
    Subnet6NotKey { claimed: String, expected: String },
    #[error("value names node {claimed:?} but its key names {key:?}")]
    NodeNotKey { claimed: String, key: String },
    #[error("node name {0:?} is not a DNS-1123 subdomain")]
    NodeName(String),
    #[error("subnet {subnet} is not a node subnet of {cluster} (/{len}, aligned)")]
    SubnetOutside { subnet: Ipv4Net, cluster: Ipv4Net, len: u8 },
    #[error("IPv6 subnet {subnet} is outside the IPv6 cluster CIDR {cluster}")]
    Subnet6Outside { subnet: Ipv6Net, cluster: String },
    #[error("node IP {0} is not a usable unicast address")]
    NodeIp(IpAddr),
    #[error("backend data: {0}")]
    BackendData(String),
    #[error("claims the local node's subnet {0}")]
    ClaimsLocalSubnet(String),
    #[error("names the local node {0} but is not its lease")]
    ClaimsLocalNode(String),
    #[error("subnet overlaps the older lease {0}")]
    Overlap(String),
    #[error("node already has the older lease {0}")]
    DuplicateNode(String),
    #[error("backend identity {identity} is already published by {holder}")]
    DuplicateIdentity { identity: String, holder: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub key: String,
    /// The node the value names, when it decoded.
    pub node: Option<String>,
    pub reason: Reason,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Admission {
    /// Admitted leases with their keys, oldest first. Includes the local node's own lease if it was listed.
    pub admitted: Vec<(String, Lease)>,
    /// Refused entries, in key order.
    pub refused: Vec<Refusal>,
}

/// What admission judges against.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    pub cfg: &'a NetworkConfig,
    /// This node's own current lease: nobody else may hold or overlap its subnet.
    pub local: Option<&'a Lease>,
    /// The backend's check of its own data (VXLAN: the VTEP MAC).
    pub backend_data: fn(&BackendData) -> Result<(), String>,
}

impl<'a> Rules<'a> {
    pub fn new(cfg: &'a NetworkConfig, local: Option<&'a Lease>) -> Self {
        Self { cfg, local, backend_data: check_vtep_mac }
    }
}

/// Splits `entries` into admitted leases and refusals (see the module docs for the rules).
pub fn admit<'e>(rules: Rules<'_>, entries: impl IntoIterator<Item = &'e LeaseEntry>) -> Admission {
    let mut refused = Vec::new();
    let mut valid: Vec<(&LeaseEntry, &Lease)> = Vec::new();
    for e in entries {
        match (&e.lease, check_one(rules, e)) {
            (Ok(l), Ok(())) => valid.push((e, l)),
            (l, Err(reason)) => {
                refused.push(Refusal { key: e.key.clone(), node: l.as_ref().ok().map(|l| l.node.clone()), reason })
            }
            (Err(_), Ok(())) => unreachable!("check_one refuses undecodable entries"),
        }
    }
    valid.sort_by(|a, b| a.0.created.cmp(&b.0.created).then_with(|| a.0.key.cmp(&b.0.key)));
    let mut v4 = Intervals::<u32>::default();
    let mut v6 = Intervals::<u128>::default();
    let mut nodes: HashMap<&str, &str> = HashMap::new();
    // A VTEP MAC names exactly one node: FDB entries for one MAC are appended per destination, so a second lease
    // with a victim's MAC would get a copy of every frame sent to the victim.
    let mut identities: HashMap<String, String> = HashMap::new();
    let local = rules.local;
    if let Some((me, id)) = local.and_then(|me| identity(&me.backend_data).map(|id| (me, id))) {
        identities.insert(id, format!("the local node {}", me.node));
    }
    let (local4, local6) = (local.map(|l| range4(l.subnet)), local.and_then(|l| l.subnet6.map(range6)));
    let mut admitted = Vec::new();
    let cfg6_off = rules.cfg.cluster_cidr6.is_none();
    for (e, l) in valid {
        let refuse = |reason| Refusal { key: e.key.clone(), node: Some(l.node.clone()), reason };
        let r4 = range4(l.subnet);
        let r6 = l.subnet6.map(range6);
        if let Some(me) = local {
            if l.node == me.node {
                if l.subnet != me.subnet || l.subnet6 != me.subnet6 {
                    refused.push(refuse(Reason::ClaimsLocalNode(me.node.clone())));
                    continue;
                }
            } else if local4.is_some_and(|m| overlaps(m, r4))
                || (r6.is_some() && local6.is_some_and(|m| overlaps(m, r6.unwrap())))
            {
                refused.push(refuse(Reason::ClaimsLocalSubnet(me.subnet.to_string())));
                continue;
            }
        }
        if let Some(k) = nodes.get(l.node.as_str()) {
            refused.push(refuse(Reason::DuplicateNode(k.to_string())));
            continue;
        }
        if let Some(k) = v4.find(r4).or_else(|| r6.and_then(|r| v6.find(r))) {
            refused.push(refuse(Reason::Overlap(k.to_string())));
            continue;
        }
        let id = identity(&l.backend_data);
        if let Some((identity, holder)) = id.as_ref().and_then(|i| identities.get(i).map(|h| (i.clone(), h.clone()))) {
            if local.is_none_or(|me| me.node != l.node) {
                refused.push(refuse(Reason::DuplicateIdentity { identity, holder }));
                continue;
            }
        }
        if let Some(i) = id {
            identities.entry(i).or_insert_with(|| e.key.clone());
        }
        v4.insert(r4, &e.key);
        if let Some(r) = r6 {
            v6.insert(r, &e.key);
        }
        nodes.insert(&l.node, &e.key);
        let mut l = l.clone();
        if cfg6_off {
            // A dual-stack Kubernetes node in a cluster where weft runs IPv4 only: route none of its IPv6.
            l.subnet6 = None;
        }
        admitted.push((e.key.clone(), l));
    }
    refused.sort_by(|a, b| a.key.cmp(&b.key));
    Admission { admitted, refused }
}

/// What in a lease's backend data names one node only (VXLAN: its VTEP MAC; WireGuard: its public key).
fn identity(data: &BackendData) -> Option<String> {
    match data {
        BackendData::Vxlan { vtep_mac } => Some(format!("vtepMac {}", vtep_mac.to_ascii_lowercase())),
        // A WireGuard key names one peer: a second lease with it would take over the victim's session routing.
        BackendData::Wireguard { public_key, .. } => Some(format!("publicKey {public_key}")),
        BackendData::HostGw => None,
    }
}

/// The rules that look at one entry alone.
fn check_one(rules: Rules<'_>, e: &LeaseEntry) -> Result<(), Reason> {
    let l = e.lease.as_ref().map_err(|why| Reason::Undecodable(why.clone()))?;
    let cfg = rules.cfg;
    if let Some(key) = e.key_subnet {
        if l.subnet != key {
            return Err(Reason::SubnetNotKey { claimed: l.subnet, key });
        }
        if let Some(claimed) = l.subnet6 {
            let expected = cfg.index_of(key).and_then(|i| cfg.subnet6(i));
            if expected != Some(claimed) {
                let expected = expected.map_or_else(|| "no IPv6 subnet".to_string(), |s| s.to_string());
                return Err(Reason::Subnet6NotKey { claimed: claimed.to_string(), expected });
            }
        }
    }
    if let Some(key) = &e.key_node {
        if &l.node != key {
            return Err(Reason::NodeNotKey { claimed: l.node.clone(), key: key.clone() });
        }
    }
    if !is_dns1123_subdomain(&l.node) {
        return Err(Reason::NodeName(l.node.clone()));
    }
    if !crate::alloc::is_node_subnet(cfg, l.subnet) {
        return Err(Reason::SubnetOutside { subnet: l.subnet, cluster: cfg.cluster_cidr, len: cfg.subnet_len });
    }
    if let (Some(s6), Some(c6)) = (l.subnet6, cfg.cluster_cidr6) {
        if !c6.contains(&s6) {
            return Err(Reason::Subnet6Outside { subnet: s6, cluster: c6.to_string() });
        }
    }
    if !is_usable_node_ip(l.node_ip) {
        return Err(Reason::NodeIp(l.node_ip));
    }
    (rules.backend_data)(&l.backend_data).map_err(Reason::BackendData)
}

/// An address a tunnel or route can point at: not loopback, multicast, unspecified, link-local or broadcast.
pub fn is_usable_node_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_multicast() || a.is_unspecified() || a.is_link_local() || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
            let mapped = a.to_ipv4_mapped().is_some_and(|v4| !is_usable_node_ip(IpAddr::V4(v4)));
            !(a.is_loopback() || a.is_multicast() || a.is_unspecified() || link_local || mapped)
        }
    }
}

/// The VXLAN backend's check of its lease data: the VTEP MAC of VXLAN data is a unicast, non-zero MAC.
/// (Kept separate so the VXLAN backend can own it once backends carry typed data.)
pub fn check_vtep_mac(data: &BackendData) -> Result<(), String> {
    let BackendData::Vxlan { vtep_mac: text } = data else { return Ok(()) };
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| if b.len() == 2 { u8::from_str_radix(b, 16).ok() } else { None })
        .collect::<Option<_>>()
        .filter(|v: &Vec<u8>| v.len() == 6)
        .ok_or_else(|| format!("vtepMac {text:?} is not a MAC address"))?;
    if bytes.iter().all(|b| *b == 0) {
        return Err("vtepMac is all zeros".into());
    }
    if bytes[0] & 1 == 1 {
        return Err(format!("vtepMac {text} is a multicast/broadcast address"));
    }
    Ok(())
}

/// Kubernetes' rule for object names such as Nodes: at most 253 characters, dot-separated labels of lowercase
/// letters, digits and '-', each starting and ending with a letter or digit.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]) && b.iter().all(|c| alnum(*c) || *c == b'-')
        })
}

fn range4(n: Ipv4Net) -> (u32, u32) {
    (u32::from(n.network()), u32::from(n.broadcast()))
}

fn range6(n: Ipv6Net) -> (u128, u128) {
    (u128::from(n.network()), u128::from(n.broadcast()))
}

fn overlaps<T: Ord>(a: (T, T), b: (T, T)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// Disjoint closed intervals by start, each with the key that holds it.
struct Intervals<'k, T> {
    by_start: BTreeMap<T, (T, &'k str)>,
}

impl<T> Default for Intervals<'_, T> {
    fn default() -> Self {
        Self { by_start: BTreeMap::new() }
    }
}

impl<'k, T: Ord + Copy> Intervals<'k, T> {
    /// The key of an interval overlapping `r`. The intervals are disjoint, so only the last one starting at or
    /// before `r`'s end can overlap it.
    fn find(&self, r: (T, T)) -> Option<&'k str> {
        let (_, (end, key)) = self.by_start.range(..=r.1).next_back()?;
        (*end >= r.0).then_some(*key)
    }

    fn insert(&mut self, r: (T, T), key: &'k str) {
        self.by_start.insert(r.0, (r.1, key));
    }
}

#[cfg(test)]
#[path = "admit_tests.rs"]
mod tests;
