//! Applies a `Plan` to a ruleset the way the kernel applies an nft transaction, refusing what the kernel refuses:
//! objects added twice, elements deleted that are not there, overlapping intervals, rules naming sets, counters
//! or chains that do not exist, and deleting a set, counter or chain that a rule still uses (or a chain that still
//! has rules). It knows nothing of how `plan` orders its commands, so the property test can check that the order
//! is one the kernel accepts and that the result is the full compile.

use std::collections::BTreeMap;

use weft_policy::nft::{Chain, Counter, Element, Match, Rule, Ruleset, Set, SetKind, Verdict};
use weft_policy::{Command, Plan};

/// The table as maps by name (creation order is not state); chains keep their rule order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub counters: BTreeMap<String, Counter>,
    pub sets: BTreeMap<String, Set>,
    pub chains: BTreeMap<String, Chain>,
}

impl Table {
    pub fn of(rs: &Ruleset) -> Table {
        Table {
            counters: rs.counters.iter().map(|c| (c.name.clone(), c.clone())).collect(),
            sets: rs.sets.iter().map(|s| (s.name.clone(), s.clone())).collect(),
            chains: rs.chains.iter().map(|c| (c.name.clone(), c.clone())).collect(),
        }
    }

    pub fn to_ruleset(&self, table: &str) -> Ruleset {
        Ruleset {
            table: table.into(),
            counters: self.counters.values().cloned().collect(),
            sets: self.sets.values().cloned().collect(),
            chains: self.chains.values().cloned().collect(),
        }
    }

    fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.chains.values().flat_map(|c| c.rules.iter())
    }

    fn check_rule(&self, r: &Rule) -> Result<(), String> {
        for m in &r.matches {
            let set = match m {
                Match::Addr { set, .. }
                | Match::GroupAddr { set, .. }
                | Match::ProtoDport { set }
                | Match::DaddrDport { set, .. } => set,
                _ => continue,
            };
            if !self.sets.contains_key(set) {
                return Err(format!("rule uses missing set {set}"));
            }
        }
        if let Some(c) = r.counter.as_ref().filter(|c| !self.counters.contains_key(*c)) {
            return Err(format!("rule uses missing counter {c}"));
        }
        if let Some(Verdict::Jump(c) | Verdict::Goto(c)) = &r.verdict {
            if !self.chains.contains_key(c) {
                return Err(format!("rule jumps to missing chain {c}"));
            }
        }
        Ok(())
    }
}

fn overlaps(s: &Set, e: &Element) -> bool {
    let Element::Range(r) = e else { return false };
    s.elements.iter().any(|o| matches!(o, Element::Range(x) if x.start <= r.end && r.start <= x.end))
}

pub fn apply(table: &mut Table, plan: &Plan) -> Result<(), String> {
    let t = table;
    for c in &plan.commands {
        match c {
            Command::AddCounter(k) => {
                if t.counters.insert(k.name.clone(), k.clone()).is_some() {
                    return Err(format!("counter {} exists", k.name));
                }
            }
            Command::AddSet(s) => {
                if t.sets.contains_key(&s.name) {
                    return Err(format!("set {} exists", s.name));
                }
                let mut empty = Set { elements: Default::default(), ..s.clone() };
                for e in &s.elements {
                    if s.kind == SetKind::Ranges(weft_policy::nft::Family::of(range_start(e))) && overlaps(&empty, e) {
                        return Err(format!("set {}: overlapping interval {e}", s.name));
                    }
                    empty.elements.insert(*e);
                }
                t.sets.insert(s.name.clone(), empty);
            }
            Command::AddChain { name, hook, comment } => {
                let chain = Chain { name: name.clone(), hook: hook.clone(), comment: comment.clone(), rules: vec![] };
                if t.chains.insert(name.clone(), chain).is_some() {
                    return Err(format!("chain {name} exists"));
                }
            }
            Command::DeleteElements { set, elements } => {
                let s = t.sets.get_mut(set).ok_or(format!("delete element: no set {set}"))?;
                for e in elements {
                    if !s.elements.remove(e) {
                        return Err(format!("set {set}: deleting missing element {e}"));
                    }
                }
            }
            Command::AddElements { set, elements } => {
                let s = t.sets.get_mut(set).ok_or(format!("add element: no set {set}"))?;
                for e in elements {
                    if overlaps(s, e) || !s.elements.insert(*e) {
                        return Err(format!("set {set}: element {e} exists or overlaps"));
                    }
                }
            }
            Command::FlushChain(c) => t.chains.get_mut(c).ok_or(format!("flush: no chain {c}"))?.rules.clear(),
            Command::AddRule { chain, rule } => {
                t.check_rule(rule)?;
                t.chains.get_mut(chain).ok_or(format!("add rule: no chain {chain}"))?.rules.push(rule.clone());
            }
            Command::DeleteChain(c) => {
                if !t.chains.get(c).ok_or(format!("delete: no chain {c}"))?.rules.is_empty() {
                    return Err(format!("chain {c} still has rules"));
                }
                if t.rules().any(|r| matches!(&r.verdict, Some(Verdict::Jump(x) | Verdict::Goto(x)) if x == c)) {
                    return Err(format!("chain {c} is still jumped to"));
                }
                t.chains.remove(c);
            }
            Command::DeleteSet(s) => {
                let used = t.rules().any(|r| {
                    r.matches.iter().any(|m| {
                        matches!(m, Match::Addr { set, .. } | Match::GroupAddr { set, .. } | Match::ProtoDport { set } | Match::DaddrDport { set, .. } if set == s)
                    })
                });
                if used {
                    return Err(format!("set {s} is still used"));
                }
                t.sets.remove(s).ok_or(format!("delete: no set {s}"))?;
            }
            Command::DeleteCounter(c) => {
                if t.rules().any(|r| r.counter.as_deref() == Some(c.as_str())) {
                    return Err(format!("counter {c} is still used"));
                }
                t.counters.remove(c).ok_or(format!("delete: no counter {c}"))?;
            }
        }
    }
    Ok(())
}

fn range_start(e: &Element) -> std::net::IpAddr {
    match e {
        Element::Range(r) => r.start,
        Element::Addr(ip) | Element::GroupAddr(_, ip) | Element::AddrPort(ip, _) => *ip,
        Element::ProtoPorts(..) => std::net::IpAddr::from([0, 0, 0, 0]),
    }
}
