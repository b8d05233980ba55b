//! The compiled ruleset in structured form, and its rendering to nft syntax.
//!
//! Why a structure and not just text: `diff_sets` compares structure and elements separately (pod churn only
//! touches elements), tests count rules and elements, and the property test interprets this structure as a packet
//! simulator. Only the small subset of nft the compiler needs is modelled, so every `Match` has exactly one
//! rendering and one simulated meaning. Rendering targets nft 1.0.6 (Debian 12) and was checked against it.

use std::collections::BTreeSet;
use std::fmt::{self, Write};
use std::net::IpAddr;

use crate::eval::Direction;
use crate::model::{PolicyRef, Protocol};
use crate::ranges::AddrRange;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// Table name; the family is always `inet` so one table covers IPv4 and IPv6.
    pub table: String,
    pub counters: Vec<Counter>,
    pub sets: Vec<Set>,
    /// In dependency order: a chain only jumps to chains listed before it.
    pub chains: Vec<Chain>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    fn payload(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub kind: SetKind,
    pub comment: Option<String>,
    pub elements: BTreeSet<Element>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// Plain addresses (pod IPs): a hash set.
    Addr(Family),
    /// `link group . address` of this node's pods (`devgroup . ipv4_addr`): the group of the pod's host veth
    /// names its network, so equal addresses of two networks are two elements.
    GroupAddr(Family),
    /// Disjoint address ranges (`flags interval`), for ipBlocks.
    Ranges(Family),
    /// `address . port` pairs, for named ports.
    AddrPort(Family),
    /// `protocol . port range` (`flags interval`), for a rule's numeric ports. A named set instead of an inline
    /// anonymous one because the kernel names anonymous sets by scanning the table's sets, which made loading
    /// 15 000 rules with `{ ... }` port lists take ~30 s (0.7 s with named sets).
    ProtoPorts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    Addr(IpAddr),
    /// A pod address in the network whose host veths are in this link group.
    GroupAddr(u32, IpAddr),
    Range(AddrRange),
    AddrPort(IpAddr, u16),
    /// Inclusive port range of one protocol.
    ProtoPorts(Protocol, u16, u16),
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Addr(ip) => write!(f, "{ip}"),
            Element::GroupAddr(g, ip) => write!(f, "{g} . {ip}"),
            Element::Range(r) => write!(f, "{r}"),
            Element::AddrPort(ip, port) => write!(f, "{ip} . {port}"),
            Element::ProtoPorts(p, lo, hi) if lo == hi => write!(f, "{} . {lo}", p.nft_name()),
            Element::ProtoPorts(p, lo, hi) => write!(f, "{} . {lo}-{hi}", p.nft_name()),
        }
    }
}

/// A named counter and what it counts, so the agent can export per-policy drop metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub name: String,
    pub counts: CounterKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// Every packet dropped in this direction because no policy allowed it.
    Dropped(Direction),
    /// Packets dropped in this direction for pods this policy selects. A drop happens after the union of all
    /// selecting policies said no, so one drop increments the counter of every policy selecting the pod.
    DroppedForPolicy(Direction, PolicyRef),
    /// Packets to/from a pod interface whose address the agent has not programmed yet.
    DroppedUnready,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub comment: Option<String>,
    pub rules: Vec<Rule>,
}

/// A base chain: `type filter hook <hook> priority <priority>; policy accept;`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub hook: String,
    pub priority: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// All must hold.
    pub matches: Vec<Match>,
    pub log_prefix: Option<String>,
    /// Name of a counter object to increment.
    pub counter: Option<String>,
    /// `None`: evaluation continues with the next rule (a counting rule).
    pub verdict: Option<Verdict>,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// `ct state established,related` etc.
    CtState(Vec<CtState>),
    /// `iifname "<prefix>*"`
    IifPrefix(String),
    /// `oifname "<prefix>*"`
    OifPrefix(String),
    /// `iifname != "<prefix>*"`
    IifNotPrefix(String),
    /// `oifname != "<prefix>*"`
    OifNotPrefix(String),
    /// `meta nfproto ipv4|ipv6`
    NfProto(Family),
    /// `ip saddr @set`, `ip6 daddr != @set`: like nft, never matches a packet of the other family, negated or not.
    Addr { dir: AddrDir, family: Family, set: String, negate: bool },
    /// `meta iifgroup . ip saddr @set` (source: the packet came from a local pod's veth) or `meta oifgroup . ip
    /// daddr @set` (destination: it leaves to one); the same family rule as `Addr`.
    GroupAddr { dir: AddrDir, family: Family, set: String, negate: bool },
    /// `meta l4proto tcp`
    L4Proto(Protocol),
    /// `th dport 80` or `th dport 8000-8080` (inclusive).
    Dport(u16, u16),
    /// `meta l4proto . th dport @set`
    ProtoDport { set: String },
    /// `ip daddr . th dport @set`
    DaddrDport { family: Family, set: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrDir {
    Src,
    Dst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtState {
    Established,
    Related,
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
}

impl Ruleset {
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    pub fn element_count(&self) -> usize {
        self.sets.iter().map(|s| s.elements.len()).sum()
    }

    /// The table as one `table inet NAME { ... }` block.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * (self.rule_count() + self.element_count()) + 256);
        let _ = self.write_to(&mut out);
        out
    }

    /// A script for `nft -f` that replaces the table atomically (one transaction): the `add` makes the `delete`
    /// safe when the table does not exist yet (nft 1.0.6 has no `destroy`).
    pub fn render_replace(&self) -> String {
        format!("add table inet {t}\ndelete table inet {t}\n{}", self.render(), t = self.table)
    }

    fn write_to(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "table inet {} {{", self.table)?;
        for c in &self.counters {
            c.write_to(out)?;
        }
        for s in &self.sets {
            s.write_to(out)?;
        }
        for c in &self.chains {
            c.write_to(out, true)?;
        }
        out.push_str("}\n");
        Ok(())
    }
}

impl Counter {
    /// The declaration inside a `table { }` block.
    pub(crate) fn write_to(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "\tcounter {} {{\n\t\tcomment {}\n\t}}", self.name, quote(&self.counts.to_string()))
    }
}

impl Set {
    /// The declaration (with its elements) inside a `table { }` block.
    pub(crate) fn write_to(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "\tset {} {{", self.name)?;
        match self.kind {
            SetKind::Addr(f) => writeln!(out, "\t\ttype {}", f.addr_type())?,
            SetKind::GroupAddr(f) => writeln!(out, "\t\ttype devgroup . {}", f.addr_type())?,
            SetKind::Ranges(f) => writeln!(out, "\t\ttype {}\n\t\tflags interval", f.addr_type())?,
            SetKind::AddrPort(f) => writeln!(out, "\t\ttype {} . inet_service", f.addr_type())?,
            SetKind::ProtoPorts => writeln!(out, "\t\ttype inet_proto . inet_service\n\t\tflags interval")?,
        }
        if let Some(c) = &self.comment {
            writeln!(out, "\t\tcomment {}", quote(c))?;
        }
        if !self.elements.is_empty() {
            out.push_str("\t\telements = { ");
            join(out, self.elements.iter(), ",\n\t\t\t")?;
            out.push_str(" }\n");
        }
        out.push_str("\t}\n");
        Ok(())
    }
}

impl Chain {
    /// The declaration inside a `table { }` block, with its rules or (for an incremental update, whose rules
    /// follow as `add rule` commands) without.
    pub(crate) fn write_to(&self, out: &mut String, with_rules: bool) -> fmt::Result {
        writeln!(out, "\tchain {} {{", self.name)?;
        if let Some(h) = &self.hook {
            let prio = if h.priority == 0 { "filter".to_string() } else { h.priority.to_string() };
            writeln!(out, "\t\ttype filter hook {} priority {prio}; policy accept;", h.hook)?;
        }
        if let Some(comment) = &self.comment {
            writeln!(out, "\t\tcomment {}", quote(comment))?;
        }
        if with_rules {
            for r in &self.rules {
                out.push_str("\t\t");
                r.write_to(out)?;
                out.push('\n');
            }
        }
        out.push_str("\t}\n");
        Ok(())
    }
}

impl Rule {
    pub(crate) fn write_to(&self, out: &mut String) -> fmt::Result {
        let mut parts: Vec<String> = self.matches.iter().map(Match::to_string).collect();
        if let Some(p) = &self.log_prefix {
            parts.push(format!("log prefix {}", quote(p)));
        }
        if let Some(c) = &self.counter {
            parts.push(format!("counter name {c}"));
        }
        match &self.verdict {
            Some(Verdict::Accept) => parts.push("accept".into()),
            Some(Verdict::Drop) => parts.push("drop".into()),
            Some(Verdict::Jump(c)) => parts.push(format!("jump {c}")),
            Some(Verdict::Goto(c)) => parts.push(format!("goto {c}")),
            None => {}
        }
        if let Some(c) = &self.comment {
            parts.push(format!("comment {}", quote(c)));
        }
        out.push_str(&parts.join(" "));
        Ok(())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write_to(&mut s)?;
        f.write_str(&s)
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::CtState(states) => {
                let names: Vec<&str> = states
                    .iter()
                    .map(|s| match s {
                        CtState::Established => "established",
                        CtState::Related => "related",
                        CtState::Invalid => "invalid",
                    })
                    .collect();
                write!(f, "ct state {}", names.join(","))
            }
            Match::IifPrefix(p) => write!(f, "iifname {}", quote(&format!("{p}*"))),
            Match::OifPrefix(p) => write!(f, "oifname {}", quote(&format!("{p}*"))),
            Match::IifNotPrefix(p) => write!(f, "iifname != {}", quote(&format!("{p}*"))),
            Match::OifNotPrefix(p) => write!(f, "oifname != {}", quote(&format!("{p}*"))),
            Match::NfProto(fam) => write!(f, "meta nfproto {}", if *fam == Family::V4 { "ipv4" } else { "ipv6" }),
            Match::Addr { dir, family, set, negate } => {
                let field = if *dir == AddrDir::Src { "saddr" } else { "daddr" };
                write!(f, "{} {field} {}@{set}", family.payload(), if *negate { "!= " } else { "" })
            }
            Match::GroupAddr { dir, family, set, negate } => {
                let (group, field) = if *dir == AddrDir::Src { ("iifgroup", "saddr") } else { ("oifgroup", "daddr") };
                let neg = if *negate { "!= " } else { "" };
                write!(f, "meta {group} . {} {field} {neg}@{set}", family.payload())
            }
            Match::L4Proto(p) => write!(f, "meta l4proto {}", p.nft_name()),
            Match::Dport(lo, hi) if lo == hi => write!(f, "th dport {lo}"),
            Match::Dport(lo, hi) => write!(f, "th dport {lo}-{hi}"),
            Match::ProtoDport { set } => write!(f, "meta l4proto . th dport @{set}"),
            Match::DaddrDport { family, set } => write!(f, "{} daddr . th dport @{set}", family.payload()),
        }
    }
}

impl fmt::Display for CounterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = |d: &Direction| if *d == Direction::Ingress { "ingress" } else { "egress" };
        match self {
            CounterKind::Dropped(d) => write!(f, "{} drops", dir(d)),
            CounterKind::DroppedForPolicy(d, p) => write!(f, "{} drops of pods selected by {p}", dir(d)),
            CounterKind::DroppedUnready => f.write_str("drops to/from pods not yet programmed"),
        }
    }
}

fn join<T: fmt::Display>(out: &mut String, items: impl Iterator<Item = T>, sep: &str) -> fmt::Result {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        write!(out, "{item}")?;
    }
    Ok(())
}

/// A quoted nft string. nft has no escapes inside quotes and limits comments to 128 bytes, so quotes and
/// backslashes are replaced and the text is cut at a character boundary.
pub fn quote(s: &str) -> String {
    let mut clean: String = s.chars().map(|c| if c == '"' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    if clean.len() > 127 {
        let mut cut = 127;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
    }
    format!("\"{clean}\"")
}
