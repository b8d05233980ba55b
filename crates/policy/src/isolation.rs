//! The isolation firewall of tenant networks: one nftables table `inet weft-net` per node, pure.
//!
//! Routing keeps a tenant network's packets in its own route table (ip rules on the mark), but routes are not a
//! boundary: a route added by hand, a default route, a forged source or the node's own addresses would still
//! connect networks. This table is the boundary, and it holds without any route being right:
//!
//! - **prerouting, priority -350** (before defragmentation's successor hooks, weft's anti-spoof at raw-10 and
//!   conntrack at -200): a packet from a tenant pod (`iifgroup G`) or the network's tunnel (`iifname wn<vni>`)
//!   gets the network's mark `S << 24` (top byte; the low 24 bits are kept for kube-proxy and others) and its
//!   conntrack zone: `ct zone set S` (both directions) when the destination is inside the network's CIDRs, so
//!   equal tuples of two overlapping networks never meet in one zone; otherwise `ct original zone set S`, so the
//!   reply of a masqueraded connection, which arrives from the outside in zone 0, is found. A packet from a
//!   tenant-range group or a `wn*` device of no admitted network is dropped.
//! - **prerouting, priority -150** (after conntrack): a reply from the outside carries no mark; the connection's
//!   original zone names its network, and the mark is restored from it so the reply is routed by the network's
//!   table (two networks' pods may have the same address). Only unmarked packets: a tenant packet never changes
//!   network.
//! - **forward, priority -5** (before NetworkPolicy): a marked packet leaves only to its own group or tunnel, or
//!   to a destination outside every weft CIDR through an interface that is no tenant's (the outside world);
//!   an unmarked packet never enters a tenant group or tunnel. Everything else is dropped and counted.
//! - **input, priority -5**: a marked packet to the node itself passes only as part of a connection the node
//!   opened (`ct state established,related`: replies to kubelet probes), plus the link-scope ICMPv6 a pod
//!   sends on its own; the rest is dropped and counted.
//! - **postrouting, srcnat**: marked traffic from the network's CIDR to a destination outside every weft CIDR is
//!   masqueraded (networks with `masquerade`).
//!
//! Dispatch is by verdict maps and sets keyed by group, device, mark slot and zone, so a packet costs a few
//! hash lookups whatever the number of networks. What nft 1.0.6 cannot take from a map (a mark value OR-ed
//! into the packet's mark, a zone) is a constant in one short chain per network (`pre_`, `restore_`,
//! `drop_`), about six rules per network.
//!
//! Drops are counted per network in `dropped_<name>` (the source network for marked packets, the destination
//! network for unmarked ones), `dropped__unknown` for tenant interfaces of no admitted network.

mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::nft::Family;
pub use table::{Chain, Counter, Element, Expr, Hook, HookKind, Key, Part, Rule, Set, Table, MARK_MASK};

pub const TABLE: &str = "weft-net";
/// Link groups (and route tables) of tenant networks are `BASE | vni` (`weft_types::tenant::TENANT_ID_BASE`;
/// weft-policy does not depend on weft-types, the agent's tests check the two are equal).
pub const TENANT_GROUP_BASE: u32 = 0x5700_0000;
/// Tenant VXLAN devices are `wn<vni>`.
pub const TUNNEL_PREFIX: &str = "wn";
/// Two underscores: a network's counter is `dropped_<name>` with `-` as `_`, and no DNS label starts with `-`, so
/// no network (not even one named `unknown`) can share this name.
pub const OTHER_COUNTER: &str = "dropped__unknown";

/// One admitted network on this node, with its node-local mark slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsolatedNetwork {
    pub name: String,
    pub vni: u32,
    /// Mark slot 1..=255: mark `slot << 24`, conntrack zone `slot`.
    pub slot: u8,
    /// Link group of its pods' host veths (`NetworkIds::group`).
    pub group: u32,
    /// Its VXLAN device (`NetworkIds::device`).
    pub device: String,
    pub cidr: Ipv4Net,
    pub cidr6: Option<Ipv6Net>,
    pub masquerade: bool,
}

impl IsolatedNetwork {
    pub fn mark(&self) -> u32 {
        u32::from(self.slot) << 24
    }

    fn cidrs(&self) -> impl Iterator<Item = IpNet> {
        std::iter::once(IpNet::V4(self.cidr)).chain(self.cidr6.map(IpNet::V6))
    }

    /// The name as it appears in chain and counter names: DNS labels have no `_`, so `-` → `_` is one-to-one.
    fn ident(&self) -> String {
        self.name.replace('-', "_")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsolationInput {
    pub networks: Vec<IsolatedNetwork>,
    pub default_cidr: Ipv4Net,
    pub default_cidr6: Option<Ipv6Net>,
    /// Every other weft CIDR (all admitted networks of the cluster, also those this node does not serve).
    pub weft_cidrs: Vec<IpNet>,
}

/// Why a network was left out of the table (its pods then match no rule that lets them out: their group is
/// in the tenant range, so prerouting drops their packets as `dropped__unknown`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsolationError {
    #[error("network {0:?}: not a DNS-1123 label of at most 32 characters")]
    Name(String),
    #[error("network {net}: mark slot 0 is the default network's")]
    SlotZero { net: String },
    #[error("network {net}: link group {group:#x} is outside the tenant range {TENANT_GROUP_BASE:#x}/8")]
    Group { net: String, group: u32 },
    #[error("network {net}: device {device:?} is not a tenant VXLAN device name (wn<vni>)")]
    Device { net: String, device: String },
    #[error("network {net}: {what} is already used by network {other}")]
    Taken { net: String, what: String, other: String },
}

/// The table, and the networks left out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    pub table: Table,
    pub refused: Vec<IsolationError>,
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=32).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn check(n: &IsolatedNetwork, ok: &[IsolatedNetwork]) -> Result<(), IsolationError> {
    let net = || n.name.clone();
    if !is_label(&n.name) {
        return Err(IsolationError::Name(n.name.clone()));
    }
    if n.slot == 0 {
        return Err(IsolationError::SlotZero { net: net() });
    }
    if n.group & MARK_MASK != TENANT_GROUP_BASE {
        return Err(IsolationError::Group { net: net(), group: n.group });
    }
    let digits = n.device.strip_prefix(TUNNEL_PREFIX).unwrap_or("");
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(IsolationError::Device { net: net(), device: n.device.clone() });
    }
    let taken =
        |what: String, other: &IsolatedNetwork| IsolationError::Taken { net: net(), what, other: other.name.clone() };
    for o in ok {
        if o.name == n.name {
            return Err(taken("the name".into(), o));
        }
        if o.slot == n.slot {
            return Err(taken(format!("mark slot {}", n.slot), o));
        }
        if o.group == n.group {
            return Err(taken(format!("link group {:#x}", n.group), o));
        }
        if o.device == n.device {
            return Err(taken(format!("device {}", n.device), o));
        }
    }
    Ok(())
}

/// Disjoint CIDRs covering `nets` of one family (nft interval sets refuse overlapping elements, and two tenant
/// networks may have the same CIDR).
fn merged(nets: impl Iterator<Item = IpNet>, family: Family) -> Vec<IpNet> {
    let of: Vec<IpNet> = nets.filter(|n| (family == Family::V4) == matches!(n, IpNet::V4(_))).collect();
    IpNet::aggregate(&of)
}

fn set(name: &str, key: Key, elements: Vec<Element>) -> Set {
    Set { name: name.into(), key, map: false, elements }
}

fn vmap(name: &str, key: Key, elements: Vec<Element>) -> Set {
    Set { name: name.into(), key, map: true, elements }
}

fn to(key: Vec<Part>, chain: String) -> Element {
    Element { key, goto: Some(chain) }
}

fn elem(key: Vec<Part>) -> Element {
    Element { key, goto: None }
}

fn base(name: &str, hook: HookKind, nat: bool, priority: i32, rules: Vec<Rule>) -> Chain {
    Chain { name: name.into(), hook: Some(Hook { hook, nat, priority }), rules }
}

/// Builds the table for `input` (see the module comment). Networks that fail the checks are left out and
/// reported; the others are unaffected.
pub fn isolation(input: &IsolationInput) -> Isolation {
    let mut nets: Vec<IsolatedNetwork> = input.networks.clone();
    nets.sort_by(|a, b| a.name.cmp(&b.name).then(a.slot.cmp(&b.slot)));
    let mut ok: Vec<IsolatedNetwork> = Vec::new();
    let mut refused = Vec::new();
    for n in nets {
        match check(&n, &ok) {
            Ok(()) => ok.push(n),
            Err(e) => refused.push(e),
        }
    }

    let all_cidrs: BTreeSet<IpNet> = std::iter::once(IpNet::V4(input.default_cidr))
        .chain(input.default_cidr6.map(IpNet::V6))
        .chain(input.weft_cidrs.iter().copied())
        .chain(ok.iter().flat_map(|n| n.cidrs()))
        .map(|c| c.trunc())
        .collect();
    let weft = |f: Family| merged(all_cidrs.iter().copied(), f).into_iter().map(|c| elem(vec![Part::Net(c)])).collect();

    let pre = |n: &IsolatedNetwork| format!("pre_{}", n.ident());
    let restore = |n: &IsolatedNetwork| format!("restore_{}", n.ident());
    let drop = |n: &IsolatedNetwork| format!("drop_{}", n.ident());
    let counter = |n: &IsolatedNetwork| format!("dropped_{}", n.ident());
    let each = |f: &dyn Fn(&IsolatedNetwork) -> Element| ok.iter().map(f).collect::<Vec<_>>();

    let mut counters: Vec<Counter> =
        ok.iter().map(|n| Counter { name: counter(n), network: Some(n.name.clone()) }).collect();
    counters.push(Counter { name: OTHER_COUNTER.into(), network: None });

    let masq = |f: Family| {
        ok.iter()
            .filter(|n| n.masquerade)
            .flat_map(|n| n.cidrs().map(move |c| (n.mark(), c)))
            .filter(|(_, c)| (f == Family::V4) == matches!(c, IpNet::V4(_)))
            .map(|(m, c)| elem(vec![Part::Mark(m), Part::Net(c)]))
            .collect::<Vec<_>>()
    };
    let sets = vec![
        set("weft_v4", Key::Daddr(Family::V4), weft(Family::V4)),
        set("weft_v6", Key::Daddr(Family::V6), weft(Family::V6)),
        vmap("pre_group", Key::IifGroup, each(&|n| to(vec![Part::Group(n.group)], pre(n)))),
        vmap("pre_device", Key::IifName, each(&|n| to(vec![Part::Ifname(n.device.clone())], pre(n)))),
        vmap("restore_zone", Key::OriginalZone, each(&|n| to(vec![Part::Zone(n.slot.into())], restore(n)))),
        set("own_group", Key::SlotOifGroup, each(&|n| elem(vec![Part::Mark(n.mark()), Part::Group(n.group)]))),
        set(
            "own_device",
            Key::SlotOifName,
            each(&|n| elem(vec![Part::Mark(n.mark()), Part::Ifname(n.device.clone())])),
        ),
        vmap("drop_slot", Key::Slot, each(&|n| to(vec![Part::Mark(n.mark())], drop(n)))),
        vmap("drop_group", Key::OifGroup, each(&|n| to(vec![Part::Group(n.group)], drop(n)))),
        vmap("drop_device", Key::OifName, each(&|n| to(vec![Part::Ifname(n.device.clone())], drop(n)))),
        set("masq_v4", Key::SlotSaddr(Family::V4), masq(Family::V4)),
        set("masq_v6", Key::SlotSaddr(Family::V6), masq(Family::V6)),
    ];

    let mut chains = Vec::new();
    for n in &ok {
        let mut rules: Vec<Rule> = vec![vec![Expr::SetSlot(n.slot)]];
        for c in n.cidrs() {
            rules.push(vec![Expr::DaddrIn(c), Expr::CtZone(n.slot), Expr::Accept]);
        }
        rules.push(vec![Expr::CtOriginalZone(n.slot)]);
        chains.push(Chain { name: pre(n), hook: None, rules });
        chains.push(Chain { name: restore(n), hook: None, rules: vec![vec![Expr::SetSlot(n.slot)]] });
        chains.push(Chain { name: drop(n), hook: None, rules: vec![vec![Expr::Counter(counter(n)), Expr::Drop]] });
    }
    chains.extend(base_chains());
    Isolation { table: Table { name: TABLE.into(), counters, sets, chains }, refused }
}

fn other_drop(rule: Expr) -> Rule {
    vec![rule, Expr::Counter(OTHER_COUNTER.into()), Expr::Drop]
}

fn base_chains() -> Vec<Chain> {
    let tenant_group = |oif, negate| Expr::TenantGroupRange { oif, base: TENANT_GROUP_BASE, negate };
    let tunnel = |oif, negate| Expr::TunnelPrefix { oif, prefix: TUNNEL_PREFIX.into(), negate };
    let outside = |f: Family| {
        let set = if f == Family::V4 { "weft_v4" } else { "weft_v6" };
        vec![
            Expr::Marked(true),
            tenant_group(true, true),
            tunnel(true, true),
            Expr::InSet(Key::Daddr(f), set.into(), true),
            Expr::Accept,
        ]
    };
    let masq = |f: Family| {
        let (m, w) = if f == Family::V4 { ("masq_v4", "weft_v4") } else { ("masq_v6", "weft_v6") };
        vec![
            Expr::InSet(Key::SlotSaddr(f), m.into(), false),
            Expr::InSet(Key::Daddr(f), w.into(), true),
            Expr::Masquerade,
        ]
    };
    vec![
        base(
            "prerouting",
            HookKind::Prerouting,
            false,
            -350,
            vec![
                vec![Expr::Vmap(Key::IifGroup, "pre_group".into())],
                vec![Expr::Vmap(Key::IifName, "pre_device".into())],
                other_drop(tenant_group(false, false)),
                other_drop(tunnel(false, false)),
            ],
        ),
        base(
            "restore",
            HookKind::Prerouting,
            false,
            -150,
            vec![vec![Expr::ReplyDirection, Expr::Marked(false), Expr::Vmap(Key::OriginalZone, "restore_zone".into())]],
        ),
        base(
            "forward",
            HookKind::Forward,
            false,
            -5,
            vec![
                vec![Expr::InSet(Key::SlotOifGroup, "own_group".into(), false), Expr::Accept],
                vec![Expr::InSet(Key::SlotOifName, "own_device".into(), false), Expr::Accept],
                outside(Family::V4),
                outside(Family::V6),
                vec![Expr::Vmap(Key::Slot, "drop_slot".into())],
                vec![Expr::Vmap(Key::OifGroup, "drop_group".into())],
                vec![Expr::Vmap(Key::OifName, "drop_device".into())],
                other_drop(tenant_group(true, false)),
                other_drop(tunnel(true, false)),
            ],
        ),
        base(
            "input",
            HookKind::Input,
            false,
            -5,
            vec![
                vec![Expr::Marked(true), Expr::EstablishedOrRelated, Expr::Accept],
                vec![Expr::Marked(true), Expr::LinkScopeIcmpv6, Expr::Accept],
                vec![Expr::Vmap(Key::Slot, "drop_slot".into())],
            ],
        ),
        base("postrouting", HookKind::Postrouting, true, 100, vec![masq(Family::V4), masq(Family::V6)]),
    ]
}
