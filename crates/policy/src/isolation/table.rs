//! The isolation table in structured form, and its rendering to nft 1.0.6 syntax.
//!
//! Its own small model beside [`crate::nft::Ruleset`] because it needs what the policy table never does
//! (hook types other than filter, marks, conntrack zones, verdict maps keyed by link group, masquerade), and the
//! policy simulator matches every [`crate::nft::Match`] exhaustively. Every [`Expr`] has exactly one rendering,
//! checked against nft 1.0.6 by the unit tests (`nft --check`) and by `tests/isolation.rs` in the kernel.

use std::fmt::{self, Write};

use ipnet::IpNet;

use crate::nft::{quote, Family};

/// The top byte of the packet mark (and of nothing else): a tenant network's slot `S` is the mark `S << 24`.
pub const MARK_MASK: u32 = 0xff00_0000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Table name; the family is always `inet`.
    pub name: String,
    pub counters: Vec<Counter>,
    pub sets: Vec<Set>,
    /// Regular chains before the base chains that jump to them.
    pub chains: Vec<Chain>,
}

/// A named counter of dropped packets: of one network (`weft_network_isolation_dropped_packets{network}`), or
/// of tenant interfaces no admitted network owns (`network: None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub name: String,
    pub network: Option<String>,
}

/// What a set or map is keyed by: the expression looked up, which also fixes the declared key type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    IifGroup,
    IifName,
    OifGroup,
    OifName,
    /// `meta mark and 0xff000000`: the slot of a marked packet.
    Slot,
    SlotOifGroup,
    SlotOifName,
    /// `meta mark and 0xff000000 . ip saddr` (interval).
    SlotSaddr(Family),
    /// `ip daddr` (interval).
    Daddr(Family),
    /// `ct original zone`.
    OriginalZone,
}

impl Key {
    fn expr(self) -> String {
        let slot = format!("meta mark and {MARK_MASK:#010x}");
        match self {
            Key::IifGroup => "iifgroup".into(),
            Key::IifName => "iifname".into(),
            Key::OifGroup => "oifgroup".into(),
            Key::OifName => "oifname".into(),
            Key::Slot => slot,
            Key::SlotOifGroup => format!("{slot} . oifgroup"),
            Key::SlotOifName => format!("{slot} . oifname"),
            Key::SlotSaddr(f) => format!("{slot} . {} saddr", payload(f)),
            Key::Daddr(f) => format!("{} daddr", payload(f)),
            Key::OriginalZone => "ct original zone".into(),
        }
    }

    /// The `type ...` / `typeof ...` line(s) of the declaration.
    fn decl(self) -> String {
        let addr = |f: Family| if f == Family::V4 { "ipv4_addr" } else { "ipv6_addr" };
        match self {
            Key::IifGroup | Key::OifGroup => "type devgroup".into(),
            Key::IifName | Key::OifName => "type ifname".into(),
            Key::Slot => "type mark".into(),
            Key::SlotOifGroup => "type mark . devgroup".into(),
            Key::SlotOifName => "type mark . ifname".into(),
            Key::SlotSaddr(f) => format!("type mark . {}\n\t\tflags interval", addr(f)),
            Key::Daddr(f) => format!("type {}\n\t\tflags interval", addr(f)),
            Key::OriginalZone => "typeof ct original zone".into(),
        }
    }
}

fn payload(f: Family) -> &'static str {
    if f == Family::V4 {
        "ip"
    } else {
        "ip6"
    }
}

/// A named set (`goto: None` on every element) or verdict map (`goto: Some(chain)` on every element).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: Key,
    pub map: bool,
    pub elements: Vec<Element>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<Part>,
    pub goto: Option<String>,
}

/// One component of an element's key, in the order of the set's [`Key`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Mark(u32),
    Group(u32),
    Ifname(String),
    Net(IpNet),
    Zone(u16),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Mark(m) => write!(f, "{m:#010x}"),
            Part::Group(g) => write!(f, "{g:#010x}"),
            Part::Ifname(n) => f.write_str(&quote(n)),
            Part::Net(n) => write!(f, "{n}"),
            Part::Zone(z) => write!(f, "{z}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    Prerouting,
    Input,
    Forward,
    Postrouting,
}

/// A base chain: `type filter|nat hook <hook> priority <priority>; policy accept;`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    pub hook: HookKind,
    pub nat: bool,
    pub priority: i32,
}

/// The expressions of a rule, all in order (matches, then statements, then at most one verdict).
pub type Rule = Vec<Expr>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `KEY vmap @map`: a lookup that jumps to the element's chain, or matches nothing.
    Vmap(Key, String),
    /// `KEY @set` / `KEY != @set`.
    InSet(Key, String, bool),
    /// `meta iifgroup|oifgroup and 0xff000000 ==|!= BASE`: the interface is (not) in the tenant group range.
    TenantGroupRange {
        oif: bool,
        base: u32,
        negate: bool,
    },
    /// `iifname|oifname [!=] "wn*"`: a tenant VXLAN device.
    TunnelPrefix {
        oif: bool,
        prefix: String,
        negate: bool,
    },
    /// `meta mark and 0xff000000 != 0` (marked) or `== 0`.
    Marked(bool),
    /// `ip daddr NET` / `ip6 daddr NET`.
    DaddrIn(IpNet),
    /// `ct state established,related`.
    EstablishedOrRelated,
    /// `ct direction reply`.
    ReplyDirection,
    /// ICMPv6 a pod sends to link-scope multicast on its own (router solicitation, MLD, ND).
    LinkScopeIcmpv6,
    /// `meta mark set meta mark and 0x00ffffff or S<<24`: the low 24 bits are others' (kube-proxy's 0x4000).
    SetSlot(u8),
    /// `ct zone set S`: both directions in zone S.
    CtZone(u8),
    /// `ct original zone set S`: the original direction in zone S, replies (masqueraded) in zone 0.
    CtOriginalZone(u8),
    Counter(String),
    Masquerade,
    Accept,
    Drop,
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ifside = |oif: bool| if oif { "oif" } else { "iif" };
        match self {
            Expr::Vmap(k, m) => write!(f, "{} vmap @{m}", k.expr()),
            Expr::InSet(k, s, neg) => write!(f, "{} {}@{s}", k.expr(), if *neg { "!= " } else { "" }),
            Expr::TenantGroupRange { oif, base, negate } => {
                let op = if *negate { "!=" } else { "==" };
                write!(f, "meta {}group and {MARK_MASK:#010x} {op} {base:#010x}", ifside(*oif))
            }
            Expr::TunnelPrefix { oif, prefix, negate } => {
                let op = if *negate { "!= " } else { "" };
                write!(f, "{}name {op}{}", ifside(*oif), quote(&format!("{prefix}*")))
            }
            Expr::Marked(m) => write!(f, "meta mark and {MARK_MASK:#010x} {} 0", if *m { "!=" } else { "==" }),
            Expr::DaddrIn(n) => {
                let fam = if matches!(n, IpNet::V4(_)) { Family::V4 } else { Family::V6 };
                write!(f, "{} daddr {n}", payload(fam))
            }
            Expr::EstablishedOrRelated => f.write_str("ct state established,related"),
            Expr::ReplyDirection => f.write_str("ct direction reply"),
            Expr::LinkScopeIcmpv6 => f.write_str(
                "ip6 daddr ff02::/16 icmpv6 type { nd-router-solicit, nd-neighbor-solicit, mld-listener-report, \
                 mld2-listener-report }",
            ),
            Expr::SetSlot(s) => {
                write!(f, "meta mark set meta mark and {:#010x} or {:#010x}", !MARK_MASK, u32::from(*s) << 24)
            }
            Expr::CtZone(s) => write!(f, "ct zone set {s}"),
            Expr::CtOriginalZone(s) => write!(f, "ct original zone set {s}"),
            Expr::Counter(c) => write!(f, "counter name {c}"),
            Expr::Masquerade => f.write_str("masquerade"),
            Expr::Accept => f.write_str("accept"),
            Expr::Drop => f.write_str("drop"),
        }
    }
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    /// The network a counter counts drops for (None: not a network counter, or tenant interfaces of none).
    pub fn counter_network(&self, counter: &str) -> Option<&str> {
        self.counters.iter().find(|c| c.name == counter).and_then(|c| c.network.as_deref())
    }

    /// The table as one `table inet NAME { ... }` block.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(256 + 96 * self.rule_count());
        let _ = self.write_to(&mut out);
        out
    }

    /// A script for `nft -f` replacing the table in one transaction (`add` first: nft 1.0.6 has no `destroy`).
    pub fn render_replace(&self) -> String {
        format!("add table inet {t}\ndelete table inet {t}\n{}", self.render(), t = self.name)
    }

    fn write_to(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "table inet {} {{", self.name)?;
        for c in &self.counters {
            let what = match &c.network {
                Some(n) => format!("isolation drops of network {n}"),
                None => "isolation drops on tenant interfaces of no admitted network".into(),
            };
            writeln!(out, "\tcounter {} {{\n\t\tcomment {}\n\t}}", c.name, quote(&what))?;
        }
        for s in &self.sets {
            let kind = if s.map { "map" } else { "set" };
            let verdict = if s.map { " : verdict" } else { "" };
            writeln!(out, "\t{kind} {} {{\n\t\t{}{verdict}", s.name, s.key.decl())?;
            if !s.elements.is_empty() {
                out.push_str("\t\telements = { ");
                for (i, e) in s.elements.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n\t\t\t");
                    }
                    let parts: Vec<String> = e.key.iter().map(Part::to_string).collect();
                    out.push_str(&parts.join(" . "));
                    if let Some(c) = &e.goto {
                        write!(out, " : goto {c}")?;
                    }
                }
                out.push_str(" }\n");
            }
            out.push_str("\t}\n");
        }
        for c in &self.chains {
            writeln!(out, "\tchain {} {{", c.name)?;
            if let Some(h) = c.hook {
                let hook = match h.hook {
                    HookKind::Prerouting => "prerouting",
                    HookKind::Input => "input",
                    HookKind::Forward => "forward",
                    HookKind::Postrouting => "postrouting",
                };
                let ty = if h.nat { "nat" } else { "filter" };
                writeln!(out, "\t\ttype {ty} hook {hook} priority {}; policy accept;", h.priority)?;
            }
            for r in &c.rules {
                let parts: Vec<String> = r.iter().map(Expr::to_string).collect();
                writeln!(out, "\t\t{}", parts.join(" "))?;
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        Ok(())
    }
}
