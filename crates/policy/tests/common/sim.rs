//! A packet simulator that interprets a compiled `Ruleset` the way the kernel runs an nft table: the forward base
//! chain, rules in order, jump (push a return point) / goto (replace the frame) / implicit return, verdicts ending
//! evaluation, counters, and set lookups (addresses, ranges, `addr . port` pairs). It knows nothing about
//! policies, so agreeing with `explain` shows the rendered chains and sets mean what the evaluator meant.
//!
//! Family rule of nft's inet tables: `ip saddr ...` carries an implicit `meta nfproto ipv4`, so a match on the
//! other family fails even when negated.
//!
//! Networks: a packet carries the link groups of its input and output devices (a pod's host veth is in its
//! network's group, every other device in group 0), and the cluster walk resolves addresses inside one network.

use std::collections::HashMap;
use std::net::IpAddr;

use weft_policy::eval::Resolved;
use weft_policy::model::{Model, Protocol};
use weft_policy::nft::{AddrDir, CtState, Element, Family, Match, Ruleset, Set, SetKind, Verdict};

#[derive(Clone, Debug)]
pub struct Packet {
    pub ct: Option<CtState>,
    pub iif: String,
    pub oif: String,
    pub iifgroup: u32,
    pub oifgroup: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub dport: u16,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: bool,
    pub counters: Vec<String>,
}

pub fn run(rs: &Ruleset, pkt: &Packet) -> Outcome {
    let sets: HashMap<&str, &Set> = rs.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let chains: HashMap<&str, usize> = rs.chains.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
    let base = rs.chains.iter().position(|c| c.hook.as_ref().is_some_and(|h| h.hook == "forward"));
    let mut counters = Vec::new();
    let Some(base) = base else { return Outcome { accepted: true, counters } };
    // (chain, next rule) frames; the kernel allows 16 nested jumps.
    let mut stack: Vec<(usize, usize)> = vec![(base, 0)];
    while let Some((chain, pos)) = stack.pop() {
        let rules = &rs.chains[chain].rules;
        if pos >= rules.len() {
            continue; // implicit return to the frame below; off the base chain = policy accept
        }
        stack.push((chain, pos + 1));
        let rule = &rules[pos];
        if !rule.matches.iter().all(|m| matches(m, pkt, &sets)) {
            continue;
        }
        if let Some(c) = &rule.counter {
            assert!(rs.counters.iter().any(|k| &k.name == c), "rule uses undeclared counter {c}");
            counters.push(c.clone());
        }
        let target = |name: &str| *chains.get(name).unwrap_or_else(|| panic!("jump to missing chain {name}"));
        match &rule.verdict {
            None => {}
            Some(Verdict::Accept) => return Outcome { accepted: true, counters },
            Some(Verdict::Drop) => return Outcome { accepted: false, counters },
            Some(Verdict::Jump(c)) => stack.push((target(c), 0)),
            Some(Verdict::Goto(c)) => {
                stack.pop();
                stack.push((target(c), 0));
            }
        }
        assert!(stack.len() <= 17, "jump stack too deep");
    }
    Outcome { accepted: true, counters }
}

fn family(ip: IpAddr) -> Family {
    Family::of(ip)
}

fn matches(m: &Match, p: &Packet, sets: &HashMap<&str, &Set>) -> bool {
    let lookup = |name: &str| *sets.get(name).unwrap_or_else(|| panic!("rule uses undeclared set {name}"));
    match m {
        Match::CtState(states) => p.ct.is_some_and(|s| states.contains(&s)),
        Match::IifPrefix(pre) => p.iif.starts_with(pre.as_str()),
        Match::OifPrefix(pre) => p.oif.starts_with(pre.as_str()),
        Match::IifNotPrefix(pre) => !p.iif.starts_with(pre.as_str()),
        Match::OifNotPrefix(pre) => !p.oif.starts_with(pre.as_str()),
        Match::NfProto(f) => family(p.src) == *f,
        Match::Addr { dir, family: f, set, negate } => {
            let ip = if *dir == AddrDir::Src { p.src } else { p.dst };
            if family(ip) != *f {
                return false;
            }
            let s = lookup(set);
            let hit = match s.kind {
                SetKind::Addr(k) => {
                    assert_eq!(k, *f, "set {set} of the wrong family");
                    s.elements.contains(&Element::Addr(ip))
                }
                SetKind::Ranges(k) => {
                    assert_eq!(k, *f, "set {set} of the wrong family");
                    s.elements.iter().any(|e| matches!(e, Element::Range(r) if r.contains(ip)))
                }
                other => panic!("address match on {other:?} set {set}"),
            };
            hit != *negate
        }
        Match::GroupAddr { dir, family: f, set, negate } => {
            let (ip, group) = if *dir == AddrDir::Src { (p.src, p.iifgroup) } else { (p.dst, p.oifgroup) };
            if family(ip) != *f {
                return false;
            }
            let s = lookup(set);
            assert_eq!(s.kind, SetKind::GroupAddr(*f), "set {set} is not a group . address set of this family");
            s.elements.contains(&Element::GroupAddr(group, ip)) != *negate
        }
        Match::L4Proto(proto) => p.proto == *proto,
        Match::Dport(lo, hi) => (*lo..=*hi).contains(&p.dport),
        Match::ProtoDport { set } => {
            let s = lookup(set);
            assert_eq!(s.kind, SetKind::ProtoPorts, "set {set} is not a proto.port set");
            s.elements.iter().any(
                |e| matches!(e, Element::ProtoPorts(pr, lo, hi) if *pr == p.proto && (*lo..=*hi).contains(&p.dport)),
            )
        }
        Match::DaddrDport { family: f, set } => {
            let s = lookup(set);
            assert_eq!(s.kind, SetKind::AddrPort(*f), "set {set} is not an addr.port set of this family");
            family(p.dst) == *f && s.elements.contains(&Element::AddrPort(p.dst, p.dport))
        }
    }
}

/// Host-side interface of the pod of network `net` (index into `Resolved::networks`) owning `ip`: its name as
/// the CNI plugin would give it, its node and its link group.
pub fn iface(r: &Resolved<'_>, net: usize, ip: IpAddr) -> Option<(String, String, u32)> {
    let i = *r.pods_with_ip_in(net, ip).first()?;
    let p = &r.model.pods[i];
    Some((p.host_iface.clone().unwrap_or_else(|| format!("wf{i:06x}")), p.node.clone(), r.networks[net].group))
}

/// A new connection through the cluster: the source pod's node (egress side) and, if different, the destination
/// pod's node (ingress side). Non-pod ends enter/leave through the uplink `eth0`. One outcome per node crossed,
/// in path order; evaluation stops at the first drop, as the packet would.
pub fn cluster_run(
    model: &Model,
    rulesets: &HashMap<String, Ruleset>,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    dport: u16,
) -> Vec<Outcome> {
    cluster_run_in(&Resolved::new(model), rulesets, 0, src, dst, proto, dport)
}

/// `cluster_run` inside network `net`: both addresses are that network's. Between nodes the packet travels
/// through the uplink (`eth0`, group 0), as through a network's VXLAN device.
pub fn cluster_run_in(
    r: &Resolved<'_>,
    rulesets: &HashMap<String, Ruleset>,
    net: usize,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    dport: u16,
) -> Vec<Outcome> {
    let s = iface(r, net, src);
    let d = iface(r, net, dst);
    let packet = |iif: &str, iifgroup: u32, oif: &str, oifgroup: u32| Packet {
        ct: None,
        iif: iif.into(),
        oif: oif.into(),
        iifgroup,
        oifgroup,
        src,
        dst,
        proto,
        dport,
    };
    let mut hops = Vec::new();
    if let Some((s_if, s_node, s_group)) = &s {
        let (oif, oifgroup) = match &d {
            Some((d_if, d_node, d_group)) if d_node == s_node => (d_if.clone(), *d_group),
            _ => ("eth0".into(), 0),
        };
        hops.push(run(&rulesets[s_node], &packet(s_if, *s_group, &oif, oifgroup)));
        if !hops[0].accepted {
            return hops;
        }
    }
    if let Some((d_if, d_node, d_group)) = &d {
        if s.as_ref().is_none_or(|(_, s_node, _)| s_node != d_node) {
            hops.push(run(&rulesets[d_node], &packet("eth0", 0, d_if, *d_group)));
        }
    }
    hops
}

pub fn cluster_allows(
    model: &Model,
    rulesets: &HashMap<String, Ruleset>,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    dport: u16,
) -> bool {
    cluster_run(model, rulesets, src, dst, proto, dport).iter().all(|o| o.accepted)
}
