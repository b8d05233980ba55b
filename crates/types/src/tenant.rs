//! Tenant networks: isolated overlays beside the cluster's default network, one VNI each, CIDRs may overlap.
//!
//! A [`TenantNetwork`] is a store object (kind `networks`, key = its name; in Kubernetes mode the CRD
//! `networks.weft.dev`). The namespaces it serves get their pods' addresses from it; every other namespace
//! stays on the default network, which behaves exactly as before networks existed.
//!
//! ```json
//! {"name": "blue", "cidr": "10.50.0.0/16", "subnetLen": 24, "vni": 100,
//!  "namespaces": {"names": ["team-a"], "matchLabels": {"tenant": "blue"}}}
//! ```
//!
//! Per-node subnets are not allocated separately: a node's subnet on network N is N's node subnet with the
//! same index as the node's lease on the default network ([`TenantNetwork::subnet_for`]). The default leases are
//! unique (store admission), so tenant subnets are unique too, every node computes every peer's tenant subnets
//! from the leases it already watches, and no extra store write or race exists per network and node. A network
//! with fewer node subnets than the highest lease index in use cannot serve the nodes past its end (reported).
//!
//! Kernel identity of a network on a node is derived from its VNI ([`NetworkIds`]), never read from a file: a
//! hostile node file cannot point a pod at the main routing table or at another network's group.
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// Name reserved for the cluster's default network (not a store object).
pub const DEFAULT_NETWORK: &str = "default";

/// Link group, route table and fwmark-independent ids of tenant networks live in `BASE | vni` (VNI is 24 bits):
/// `0x57` ("W") in the top byte keeps them clear of the main/local tables (254/255), of weft's reap group
/// (`0x7765_6674`) and of any small id another tool picks.
pub const TENANT_ID_BASE: u32 = 0x5700_0000;

/// Which namespaces a network serves: listed by name, or selected by labels (all pairs must match), or both
/// (either way selects).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl NamespaceSelector {
    /// Whether the namespace `name` with `labels` is selected. An empty selector selects nothing (a network
    /// never captures every namespace by omission).
    pub fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.names.iter().any(|n| n == name)
            || (!self.match_labels.is_empty()
                && self.match_labels.iter().all(|(k, v)| labels.get(k).is_some_and(|l| l == v)))
    }
}

fn default_subnet_len() -> u8 {
    24
}
fn default_subnet_len6() -> u8 {
    80
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantNetwork {
    /// DNS-1123 label, at most 32 characters; not `default`.
    pub name: String,
    /// IPv4 CIDR of the network (required: the default network is IPv4 or dual-stack too).
    pub cidr: Ipv4Net,
    #[serde(default = "default_subnet_len")]
    pub subnet_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Net>,
    #[serde(default = "default_subnet_len6")]
    pub subnet_len6: u8,
    /// 1..=16777215, distinct from the default network's VNI and from every other network's.
    pub vni: u32,
    #[serde(default)]
    pub namespaces: NamespaceSelector,
    /// Masquerade traffic leaving the cluster through the node (default true).
    #[serde(default = "default_true")]
    pub masquerade: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("network name {0:?} must be a DNS-1123 label of at most 32 characters")]
    Name(String),
    #[error("network name \"default\" is reserved for the cluster's default network")]
    Reserved,
    #[error("network {net}: VNI {vni} is out of range (1..=16777215)")]
    Vni { net: String, vni: u32 },
    #[error("network {net}: CIDR {cidr} is not usable for pods ({why})")]
    Cidr { net: String, cidr: String, why: &'static str },
    #[error("network {net}: subnetLen {len} must be longer than /{prefix} and at most /{max}")]
    SubnetLen { net: String, len: u8, prefix: u8, max: u8 },
    #[error("network {net}: its CIDR overlaps the default cluster CIDR {default}")]
    OverlapsDefault { net: String, default: String },
    #[error("network {net}: VNI {vni} is already used by {other}")]
    VniTaken { net: String, vni: u32, other: String },
    #[error(
        "network {net}: masquerade is off, and its CIDRs overlap those of {other}, whose masquerade is off too \
         (their pods' connections to the outside would share reply addresses)"
    )]
    UnmasqueradedOverlap { net: String, other: String },
    #[error("network {net}: namespaces: {why}")]
    Selector { net: String, why: String },
    #[error("network {net}: the object is {bytes} bytes, more than {max}")]
    TooLarge { net: String, bytes: usize, max: usize },
}

/// At most this many namespaces listed by name in one network (a label selector serves more).
pub const MAX_NAMES: usize = 256;
/// At most this many `matchLabels` pairs in one network.
pub const MAX_LABELS: usize = 16;
/// At most this many bytes of JSON per network object. Every agent writes the namespaces of every network it
/// serves into the node file, which the plugin reads up to `node_file::MAX_BYTES`: unbounded objects would let
/// whoever can create one Network object blind the plugin for every pod on every node.
pub const MAX_OBJECT_BYTES: usize = 32 * 1024;

/// The kernel ids of one tenant network on every node, derived from its VNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkIds {
    /// Route table holding the network's routes (its pods, its peers' subnets).
    pub table: u32,
    /// Link group of the host veths of the network's pods (`ip link set group`): how the firewall and the
    /// routing rules tell a tenant pod's packets apart without one rule per pod.
    pub group: u32,
    /// The network's VXLAN device (`wn<vni>`, at most 10 characters).
    pub device: String,
}

impl NetworkIds {
    pub fn of(vni: u32) -> NetworkIds {
        let id = TENANT_ID_BASE | (vni & 0xff_ffff);
        NetworkIds { table: id, group: id, device: format!("wn{}", vni & 0xff_ffff) }
    }
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 32 && is_dns1123_label(s)
}

/// A Kubernetes namespace name: DNS-1123 label of at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.len() <= 63 && alnum(b[0]) && alnum(b[b.len() - 1]) && b.iter().all(|c| alnum(*c) || *c == b'-')
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63: a label key's name part, and a non-empty value.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS-1123 subdomain of at most 253 characters.
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        None => is_qualified_part(s),
        Some((prefix, name)) => {
            prefix.len() <= 253 && prefix.split('.').all(is_dns1123_label) && is_qualified_part(name)
        }
    }
}

/// A Kubernetes label value: empty, or a qualified name part.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_part(s)
}

impl NamespaceSelector {
    /// Names and labels as the API server allows them, and at most [`MAX_NAMES`] / [`MAX_LABELS`].
    fn check(&self) -> Result<(), String> {
        // Hostile input is cut short in messages.
        let short = |s: &str| s.chars().take(70).collect::<String>();
        if self.names.len() > MAX_NAMES {
            return Err(format!("{} names listed, at most {MAX_NAMES}", self.names.len()));
        }
        if let Some(n) = self.names.iter().find(|n| !is_dns1123_label(n)) {
            return Err(format!("name {:?} is not a DNS-1123 label of at most 63 characters", short(n)));
        }
        if self.match_labels.len() > MAX_LABELS {
            return Err(format!("{} matchLabels, at most {MAX_LABELS}", self.match_labels.len()));
        }
        for (k, v) in &self.match_labels {
            if !is_label_key(k) {
                return Err(format!("label key {:?} is not a Kubernetes label key", short(k)));
            }
            if !is_label_value(v) {
                return Err(format!("label value {:?} (key {}) is not a Kubernetes label value", short(v), short(k)));
            }
        }
        Ok(())
    }
}

fn v4_unusable(c: Ipv4Net) -> Option<&'static str> {
    let a: Ipv4Addr = c.network();
    if c.prefix_len() < 8 {
        Some("shorter than /8")
    } else if a.is_loopback() {
        Some("loopback")
    } else if a.is_link_local() {
        Some("link-local")
    } else if a.is_multicast() || a.is_broadcast() || u32::from(a) >= 0xf000_0000 {
        Some("multicast or reserved")
    } else if a.is_unspecified() {
        Some("0.0.0.0/8")
    } else {
        None
    }
}

fn v6_unusable(c: Ipv6Net) -> Option<&'static str> {
    let seg0 = c.network().segments()[0];
    if c.prefix_len() < 16 {
        Some("shorter than /16")
    } else if c.network().is_loopback() || c.network().is_unspecified() {
        Some("loopback or unspecified")
    } else if seg0 & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if seg0 & 0xff00 == 0xff00 {
        Some("multicast")
    } else {
        None
    }
}

impl TenantNetwork {
    /// Checks the object on its own (hostile input: anyone with store access writes it).
    pub fn validate(&self) -> Result<(), TenantError> {
        if self.name == DEFAULT_NETWORK {
            return Err(TenantError::Reserved);
        }
        if !is_dns_label(&self.name) {
            return Err(TenantError::Name(self.name.clone()));
        }
        let net = || self.name.clone();
        self.namespaces.check().map_err(|why| TenantError::Selector { net: net(), why })?;
        let bytes = serde_json::to_vec(self).map_or(usize::MAX, |v| v.len());
        if bytes > MAX_OBJECT_BYTES {
            return Err(TenantError::TooLarge { net: net(), bytes, max: MAX_OBJECT_BYTES });
        }
        if self.vni == 0 || self.vni > 0xff_ffff {
            return Err(TenantError::Vni { net: net(), vni: self.vni });
        }
        if self.cidr != self.cidr.trunc() {
            return Err(TenantError::Cidr { net: net(), cidr: self.cidr.to_string(), why: "host bits set" });
        }
        if let Some(why) = v4_unusable(self.cidr) {
            return Err(TenantError::Cidr { net: net(), cidr: self.cidr.to_string(), why });
        }
        if self.subnet_len <= self.cidr.prefix_len() || self.subnet_len > 30 {
            return Err(TenantError::SubnetLen {
                net: net(),
                len: self.subnet_len,
                prefix: self.cidr.prefix_len(),
                max: 30,
            });
        }
        if let Some(c6) = self.cidr6 {
            if c6 != c6.trunc() {
                return Err(TenantError::Cidr { net: net(), cidr: c6.to_string(), why: "host bits set" });
            }
            if let Some(why) = v6_unusable(c6) {
                return Err(TenantError::Cidr { net: net(), cidr: c6.to_string(), why });
            }
            if self.subnet_len6 <= c6.prefix_len() || self.subnet_len6 > 120 {
                return Err(TenantError::SubnetLen {
                    net: net(),
                    len: self.subnet_len6,
                    prefix: c6.prefix_len(),
                    max: 120,
                });
            }
        }
        Ok(())
    }

    pub fn ids(&self) -> NetworkIds {
        NetworkIds::of(self.vni)
    }

    /// Number of node subnets the IPv4 CIDR holds.
    pub fn subnet_count(&self) -> u64 {
        1u64 << (self.subnet_len - self.cidr.prefix_len()).min(63)
    }

    /// The node subnets of the node whose default-network lease has index `index` (see the module comment), or
    /// None when the network has no subnet with that index.
    pub fn subnet_for(&self, index: u64) -> Option<(Ipv4Net, Option<Ipv6Net>)> {
        if index >= self.subnet_count() {
            return None;
        }
        let step = 1u64 << (32 - u32::from(self.subnet_len));
        let addr = u64::from(u32::from(self.cidr.network())) + index * step;
        let v4 = Ipv4Net::new(Ipv4Addr::from(u32::try_from(addr).ok()?), self.subnet_len).ok()?;
        let v6 = match self.cidr6 {
            None => None,
            Some(c6) => {
                let step = 1u128.checked_shl(128 - u32::from(self.subnet_len6))?;
                let a = u128::from(c6.network()).checked_add(step.checked_mul(u128::from(index))?)?;
                let n = Ipv6Net::new(a.into(), self.subnet_len6).ok()?;
                Some(c6.contains(&n).then_some(n)?)
            }
        };
        Some((v4, v6))
    }

    /// Whether `ip` is inside the network's CIDRs.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.cidr.contains(&a),
            IpAddr::V6(a) => self.cidr6.is_some_and(|c| c.contains(&a)),
        }
    }
}

/// One node's view of one network, as its agent publishes it (store kind `network-status`, key
/// `network/node`; in Kubernetes mode `status.nodes.<node>` of the Network object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkNodeStatus {
    /// The node's datapath for the network is programmed and its pods can get addresses.
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    /// Addresses held by pods on this node.
    pub used: u32,
    /// Addresses the node's subnet offers pods.
    pub capacity: u32,
    /// Why not ready, or what is wrong (a namespace claimed by two networks, a deleted network draining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Checks a set of networks together: each on its own, and no VNI used twice or equal to the default
/// network's. `nets` comes **oldest first** (the store's creation order, see `weft_store::ObjectEntry`); of
/// two networks claiming one VNI the older keeps it, and the result keeps that order, so a namespace selected
/// by two networks goes to the older too ([`network_of`]). Not by name: whoever may create a Network object
/// could otherwise take a running network's VNI or namespaces with a name that sorts first. Returns the
/// networks that may be programmed and one error per refused network.
pub fn admit_networks(
    nets: impl IntoIterator<Item = TenantNetwork>,
    default_vni: u32,
) -> (Vec<TenantNetwork>, Vec<TenantError>) {
    let all: Vec<TenantNetwork> = nets.into_iter().collect();
    let mut ok: Vec<TenantNetwork> = Vec::new();
    let mut errs = Vec::new();
    for n in all {
        if let Err(e) = n.validate() {
            errs.push(e);
            continue;
        }
        if n.vni == default_vni {
            errs.push(TenantError::VniTaken { net: n.name.clone(), vni: n.vni, other: DEFAULT_NETWORK.into() });
            continue;
        }
        if let Some(o) = ok.iter().find(|o| o.vni == n.vni) {
            errs.push(TenantError::VniTaken { net: n.name.clone(), vni: n.vni, other: o.name.clone() });
            continue;
        }
        ok.push(n);
    }
    (ok, errs)
}

/// What creating `new` beside the admitted networks `existing` must be refused for, beyond what the agents
/// refuse: two overlapping networks that both turn masquerade off. Without masquerade a pod's connection to the
/// outside keeps the pod's address and its replies are found in conntrack's zone 0 (docs/networks.md), so the
/// two networks would share reply tuples (a clash drops the newer connection; a reply is never delivered to the
/// other network), and the outside cannot route one address to two networks anyway. Checked when a network is
/// created (`weftctl network create`, the lab), not by the agents: refusing at admission would cut off a
/// network that already runs (after an upgrade, or when the older one is edited).
pub fn creation_conflict(existing: &[TenantNetwork], new: &TenantNetwork) -> Option<TenantError> {
    if new.masquerade {
        return None;
    }
    let o = existing.iter().find(|o| o.name != new.name && !o.masquerade && overlaps(o, new))?;
    Some(TenantError::UnmasqueradedOverlap { net: new.name.clone(), other: o.name.clone() })
}

/// Whether two networks have an address in common (IPv4, or IPv6 when both have IPv6 CIDRs).
fn overlaps(a: &TenantNetwork, b: &TenantNetwork) -> bool {
    overlaps4(a.cidr, b.cidr) || matches!((a.cidr6, b.cidr6), (Some(x), Some(y)) if overlaps6(x, y))
}

fn overlaps4(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn overlaps6(a: Ipv6Net, b: Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// [`admit_networks`] against the cluster's default network: also refuses a network whose CIDRs overlap the
/// default cluster CIDRs. Equal addresses in a tenant network and the default one would share conntrack's zone 0
/// reply lookups (a tenant pod could answer for a default pod in connections the node opened) and make the
/// node's own routes ambiguous; tenant networks may overlap each other, never the default network.
pub fn admit_networks_in(
    nets: impl IntoIterator<Item = TenantNetwork>,
    default: &crate::NetworkConfig,
) -> (Vec<TenantNetwork>, Vec<TenantError>) {
    let (ok, mut errs) = admit_networks(nets, default.backend.vni);
    let ok = ok
        .into_iter()
        .filter(|n| {
            let hit = if overlaps4(n.cidr, default.cluster_cidr) {
                Some(default.cluster_cidr.to_string())
            } else {
                match (n.cidr6, default.cluster_cidr6) {
                    (Some(a), Some(b)) if overlaps6(a, b) => Some(b.to_string()),
                    _ => None,
                }
            };
            match hit {
                Some(d) => {
                    errs.push(TenantError::OverlapsDefault { net: n.name.clone(), default: d });
                    false
                }
                None => true,
            }
        })
        .collect();
    (ok, errs)
}

/// The network a namespace's pods belong to: the first admitted network (the oldest, in admission order) that
/// selects it, else None (the default network). The second network selecting the same namespace is reported by the caller.
pub fn network_of<'a>(
    nets: &'a [TenantNetwork],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a TenantNetwork> {
    nets.iter().find(|n| n.namespaces.selects(namespace, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, cidr: &str, vni: u32) -> TenantNetwork {
        serde_json::from_value(serde_json::json!({"name": name, "cidr": cidr, "vni": vni,
            "namespaces": {"names": ["a"]}}))
        .unwrap()
    }

    #[test]
    fn defaults_subnets_and_ids() {
        let mut n = net("blue", "10.50.0.0/16", 100);
        n.cidr6 = Some("fd00:50::/48".parse().unwrap());
        n.validate().unwrap();
        assert_eq!((n.subnet_len, n.subnet_len6, n.masquerade), (24, 80, true));
        let (v4, v6) = n.subnet_for(3).unwrap();
        assert_eq!(v4.to_string(), "10.50.3.0/24");
        assert_eq!(v6.unwrap().to_string(), "fd00:50:0:0:3::/80");
        assert!(n.subnet_for(256).is_none());
        let ids = n.ids();
        assert_eq!((ids.table, ids.group, ids.device.as_str()), (0x5700_0064, 0x5700_0064, "wn100"));
        assert_ne!(ids.table, 254);
        assert!(n.contains("10.50.9.9".parse().unwrap()) && !n.contains("10.51.0.1".parse().unwrap()));
    }

    #[test]
    fn hostile_objects_are_refused_with_a_reason() {
        let bad = [
            (net("default", "10.50.0.0/16", 100), "reserved"),
            (net("Blue", "10.50.0.0/16", 100), "DNS-1123"),
            (net("blue", "10.50.0.0/16", 0), "VNI 0"),
            (net("blue", "10.50.0.0/16", 1 << 24), "out of range"),
            (net("blue", "127.0.0.0/16", 100), "loopback"),
            (net("blue", "169.254.0.0/16", 100), "link-local"),
            (net("blue", "0.0.0.0/0", 100), "shorter than /8"),
            (net("blue", "224.0.0.0/16", 100), "multicast"),
            (net("blue", "10.50.0.1/16", 100), "host bits"),
        ];
        for (n, why) in bad {
            let e = n.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{n:?}: {e}");
        }
        let mut n = net("blue", "10.50.0.0/16", 100);
        n.subnet_len = 16;
        assert!(matches!(n.validate(), Err(TenantError::SubnetLen { .. })));
        n.subnet_len = 24;
        n.cidr6 = Some("fe80::/64".parse().unwrap());
        assert!(n.validate().unwrap_err().to_string().contains("link-local"));
        let unknown = serde_json::from_str::<TenantNetwork>(r#"{"name":"x","cidr":"10.0.0.0/16","vni":5,"table":254}"#);
        assert!(unknown.is_err(), "unknown fields (a table id) are refused");
    }

    /// The attack: a running network `red` (created first) holds VNI 7 and namespace `a`; someone creates
    /// `aaa` (a name that sorts first) with the same VNI and namespace. Decided by name, as before, `aaa` took
    /// both; decided by age, the older `red` keeps them and `aaa` is refused.
    #[test]
    fn admission_keeps_one_network_per_vni_and_the_oldest_wins() {
        let oldest_first =
            [net("red", "10.60.0.0/16", 7), net("blue", "10.50.0.0/16", 7), net("green", "10.50.0.0/16", 1)];
        let (ok, errs) = admit_networks(oldest_first, 1);
        assert_eq!(ok.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["red"]);
        assert_eq!(errs.len(), 2);
        assert!(errs
            .iter()
            .any(|e| matches!(e, TenantError::VniTaken { net, other, .. } if net == "blue" && other == "red")));
        assert!(errs.iter().any(|e| matches!(e, TenantError::VniTaken { other, .. } if other == "default")));

        let (ok, errs) = admit_networks([net("red", "10.60.0.0/16", 7), net("aaa", "10.70.0.0/16", 7)], 1);
        assert_eq!(ok.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["red"], "{errs:?}");
        // A newer network selecting an older one's namespace does not get it either, whatever its name.
        let (ok, _) = admit_networks([net("red", "10.60.0.0/16", 7), net("aaa", "10.70.0.0/16", 8)], 1);
        assert_eq!(network_of(&ok, "a", &BTreeMap::new()).map(|n| n.name.as_str()), Some("red"));
        let (ok, _) = admit_networks([net("aaa", "10.70.0.0/16", 8), net("red", "10.60.0.0/16", 7)], 1);
        assert_eq!(network_of(&ok, "a", &BTreeMap::new()).map(|n| n.name.as_str()), Some("aaa"));
    }

    /// Two overlapping networks may not both turn masquerade off when one is created; a masqueraded one may
    /// overlap anything. The agents still admit such a pair (it may already run): only creation refuses it.
    #[test]
    fn creating_an_overlapping_network_without_masquerade_is_refused() {
        let plain = |name: &str, cidr: &str, vni: u32| {
            let mut n = net(name, cidr, vni);
            n.masquerade = false;
            n
        };
        let blue = plain("blue", "10.60.0.0/16", 100);
        let red = net("red", "10.60.0.0/16", 103);
        let existing = [blue.clone(), red.clone()];
        let e = creation_conflict(&existing, &plain("green", "10.60.128.0/17", 101)).expect("refused");
        assert!(matches!(&e, TenantError::UnmasqueradedOverlap { net, other } if net == "green" && other == "blue"));
        assert!(e.to_string().contains("masquerade is off"), "{e}");
        assert_eq!(creation_conflict(&existing, &plain("teal", "10.61.0.0/16", 102)), None, "no overlap");
        assert_eq!(creation_conflict(&existing, &net("green", "10.60.0.0/16", 101)), None, "masqueraded");
        assert_eq!(creation_conflict(&[red], &plain("green", "10.60.0.0/16", 101)), None, "the other masquerades");
        // IPv6 counts too.
        let mut a = plain("a6", "10.70.0.0/16", 110);
        a.cidr6 = Some("fd00:70::/48".parse().unwrap());
        let mut b = plain("b6", "10.71.0.0/16", 111);
        b.cidr6 = Some("fd00:70:0:1::/64".parse().unwrap());
        assert!(creation_conflict(&[a.clone()], &b).is_some());
        // Agents admit both (refusing would cut a running network off).
        let (ok, errs) = admit_networks([a, b], 1);
        assert_eq!((ok.len(), errs.len()), (2, 0), "{errs:?}");
    }

    /// Each of these used to be admitted, and every agent wrote its names into the node file: a few such objects
    /// grew the file past the plugin's 1 MiB cap, and then no pod on any node could be created.
    #[test]
    fn oversized_selectors_and_bad_names_or_labels_are_refused() {
        let with = |f: &dyn Fn(&mut NamespaceSelector)| {
            let mut n = net("blue", "10.50.0.0/16", 100);
            f(&mut n.namespaces);
            n.validate()
        };
        let long = "a".repeat(63);
        assert!(with(&|s| s.names = vec![long.clone(); MAX_NAMES]).is_ok(), "the bounds themselves are valid");
        let mut big = BTreeMap::new();
        for i in 0..MAX_LABELS {
            big.insert(format!("{}ex/{i:0>61}", format!("{}.", "d".repeat(60)).repeat(4)), "v".repeat(63));
        }
        assert!(with(&|s| s.match_labels = big.clone()).is_ok());
        type Edit<'a> = &'a dyn Fn(&mut NamespaceSelector);
        let bad: [(Edit, &str); 9] = [
            (&|s| s.names = vec!["a".into(); MAX_NAMES + 1], "257 names"),
            (&|s| s.names = vec!["a".repeat(64)], "not a DNS-1123 label"),
            (&|s| s.names = vec!["Team".into()], "not a DNS-1123 label"),
            (&|s| s.names = vec!["a\"\n".into()], "not a DNS-1123 label"),
            (
                &|s| s.match_labels = (0..=MAX_LABELS).map(|i| (format!("k{i}"), String::new())).collect(),
                "17 matchLabels",
            ),
            (&|s| s.match_labels = [("k".repeat(64), "v".into())].into(), "label key"),
            (&|s| s.match_labels = [("-k".into(), "v".into())].into(), "label key"),
            (
                &|s| {
                    s.match_labels = [(format!("{}ex/k", format!("{}.", "d".repeat(60)).repeat(5)), "v".into())].into()
                },
                "label key",
            ),
            (&|s| s.match_labels = [("k".into(), "v v".into())].into(), "label value"),
        ];
        for (f, why) in bad {
            let e = with(f).unwrap_err();
            assert!(matches!(e, TenantError::Selector { .. }) && e.to_string().contains(why), "{why}: {e}");
            assert!(e.to_string().len() < 300, "hostile input is cut short in the message: {e}");
        }
        assert!(with(&|s| s.match_labels = [("k".into(), String::new())].into()).is_ok(), "empty value is valid");
        // The whole object is bounded too, and one refused object leaves the others admitted.
        let mut huge = net("huge", "10.60.0.0/16", 8);
        huge.namespaces.names = vec!["n".repeat(63); 10_000];
        let (ok, errs) = admit_networks([huge, net("blue", "10.50.0.0/16", 100)], 1);
        assert_eq!(ok.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["blue"]);
        assert!(matches!(&errs[..], [TenantError::Selector { net, .. }] if net == "huge"), "{errs:?}");
        const { assert!(MAX_OBJECT_BYTES * 8 < crate::node_file::MAX_BYTES, "one object alone fits the node file") };
    }

    #[test]
    fn tenant_networks_may_overlap_each_other_but_not_the_default_network() {
        let cfg: crate::NetworkConfig =
            serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16","clusterCidr6":"fd00:10:244::/48"}"#).unwrap();
        let mut v6 = net("v6", "10.70.0.0/16", 9);
        v6.cidr6 = Some("fd00:10::/32".parse().unwrap());
        let (ok, errs) = admit_networks_in(
            [net("a", "10.50.0.0/16", 5), net("b", "10.50.0.0/16", 6), net("wide", "10.0.0.0/8", 7), v6],
            &cfg,
        );
        assert_eq!(ok.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().all(|e| matches!(e, TenantError::OverlapsDefault { .. })));
    }

    #[test]
    fn selectors_by_name_and_labels() {
        let mut n = net("blue", "10.50.0.0/16", 100);
        n.namespaces.match_labels.insert("tenant".into(), "blue".into());
        let labels: BTreeMap<String, String> = [("tenant".to_string(), "blue".to_string())].into();
        assert!(n.namespaces.selects("a", &BTreeMap::new()));
        assert!(n.namespaces.selects("zzz", &labels));
        assert!(!n.namespaces.selects("zzz", &BTreeMap::new()));
        assert!(!NamespaceSelector::default().selects("a", &labels), "empty selects nothing");
        let nets = [n];
        assert_eq!(network_of(&nets, "a", &BTreeMap::new()).map(|n| n.name.as_str()), Some("blue"));
        assert!(network_of(&nets, "b", &BTreeMap::new()).is_none());
    }
}
