//! The one evaluation of policies against the model that both the compiler and `explain` build on.
//!
//! Design: resolving turns every selector into concrete data once — which pods each policy selects, which
//! addresses each peer covers (pod IPs of a selection, or `ipBlock` ranges), which `(address, port)` pairs each
//! named port stands for. The compiler renders exactly these as nft set elements and the rules as nft rules;
//! `explain` answers with membership tests on the same data. Selector semantics therefore live in one place and
//! the two cannot disagree on them; the property test checks the remaining part (rule rendering) by running a
//! packet simulator over the compiled ruleset against `explain`.
//!
//! Identical peer selections (same namespace scope and selectors) and identical ip blocks are shared, so a
//! selector used by many policies costs one set. Named ports are keyed by (protocol, name) and hold every pod of
//! the model declaring that name: for ingress the destination is the selected pod, for egress any destination
//! pod, and in both cases the port must be the destination pod's, which the `(daddr, dport)` pair expresses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::model::{
    IpBlock, LabelSelector, Model, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRef, PortRef, Protocol,
    NAMESPACE_NAME_LABEL,
};
use crate::ranges::{block_ranges, AddrRange};
use crate::validate::valid_port_name;

/// Policies resolved against a model. Policies are ordered by `namespace/name`, so indexes (and the nft names
/// derived from them) depend only on the set of policies, never on pods.
pub struct Resolved<'m> {
    pub model: &'m Model,
    pub policies: Vec<ResolvedPolicy<'m>>,
    pub selections: Vec<Selection>,
    pub blocks: Vec<Block>,
    pub named: Vec<NamedPorts>,
    by_ip: HashMap<IpAddr, Vec<usize>>,
}

pub struct ResolvedPolicy<'m> {
    pub policy: &'m NetworkPolicy,
    pub reference: PolicyRef,
    /// Indexes into `model.pods` of the pods the policy applies to (cluster-wide; the compiler filters by node).
    pub selected: Vec<usize>,
    /// `Some` when the policy isolates the direction (its policyTypes include it), even with no rules.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl ResolvedPolicy<'_> {
    pub fn rules(&self, dir: Direction) -> Option<&[Rule]> {
        match dir {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// One ingress or egress rule. `None` means "any" (empty `from`/`to`, or no `ports`). Entries keep the index of
/// the manifest's list; an entry validation would reject is `None` and matches nothing (fail closed).
pub struct Rule {
    pub peers: Option<Vec<Option<Peer>>>,
    pub ports: Option<Vec<Option<PortMatch>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Index into `Resolved::selections`.
    Pods(usize),
    /// Index into `Resolved::blocks`.
    Block(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// A protocol with no port: every port of it.
    Protocol(Protocol),
    Range {
        proto: Protocol,
        lo: u16,
        hi: u16,
    },
    /// Index into `Resolved::named`.
    Named(usize),
}

/// Pods picked by a peer's selectors: their addresses are what the peer matches.
pub struct Selection {
    pub key: SelectionKey,
    pub pods: Vec<usize>,
    pub ips: BTreeSet<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SelectionKey {
    /// `podSelector` alone: pods of the policy's namespace.
    InNamespace { namespace: String, pods: LabelSelector },
    /// `namespaceSelector`, with or without `podSelector` (absent = all pods of the matching namespaces).
    Across { namespaces: LabelSelector, pods: LabelSelector },
}

pub struct Block {
    pub block: IpBlock,
    pub ranges: Vec<AddrRange>,
}

/// Every `(pod address, port number)` whose pod declares a container port of this name and protocol.
pub struct NamedPorts {
    pub proto: Protocol,
    pub name: String,
    pub entries: BTreeSet<(IpAddr, u16)>,
}

impl<'m> Resolved<'m> {
    pub fn new(model: &'m Model) -> Self {
        let mut by_ns: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_ip: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        for (i, pod) in model.pods.iter().enumerate() {
            by_ns.entry(pod.namespace.as_str()).or_default().push(i);
            for ip in &pod.ips {
                by_ip.entry(*ip).or_default().push(i);
            }
        }
        let ns_labels = namespace_labels(model, &by_ns);
        let mut order: Vec<&NetworkPolicy> = model.policies.iter().collect();
        order.sort_by_key(|p| p.reference());
        let mut b = Builder {
            model,
            by_ns,
            ns_labels,
            sel_ids: BTreeMap::new(),
            block_ids: BTreeMap::new(),
            named_ids: BTreeMap::new(),
            selections: Vec::new(),
            blocks: Vec::new(),
            named: Vec::new(),
        };
        let policies = order.into_iter().map(|p| b.policy(p)).collect();
        Resolved { model, policies, selections: b.selections, blocks: b.blocks, named: b.named, by_ip }
    }

    /// Pods (indexes into `model.pods`) owning an address.
    pub fn pods_with_ip(&self, ip: IpAddr) -> &[usize] {
        self.by_ip.get(&ip).map_or(&[], Vec::as_slice)
    }

    pub fn peer_contains(&self, peer: Peer, ip: IpAddr) -> bool {
        match peer {
            Peer::Pods(s) => self.selections[s].ips.contains(&ip),
            Peer::Block(b) => self.blocks[b].ranges.iter().any(|r| r.contains(ip)),
        }
    }

    /// Whether a port entry admits `proto`/`port` sent to `dst` (named ports resolve on the pod owning `dst`).
    pub fn port_matches(&self, m: PortMatch, dst: IpAddr, proto: Protocol, port: u16) -> bool {
        match m {
            PortMatch::Protocol(p) => p == proto,
            PortMatch::Range { proto: p, lo, hi } => p == proto && (lo..=hi).contains(&port),
            PortMatch::Named(n) => self.named[n].proto == proto && self.named[n].entries.contains(&(dst, port)),
        }
    }

    /// Which peer of `rule` covers `ip`: `Some(None)` when the rule has no peers (everyone).
    pub fn matching_peer(&self, rule: &Rule, ip: IpAddr) -> Option<Option<usize>> {
        match &rule.peers {
            None => Some(None),
            Some(peers) => peers.iter().position(|p| p.is_some_and(|p| self.peer_contains(p, ip))).map(Some),
        }
    }

    pub fn matching_port(&self, rule: &Rule, dst: IpAddr, proto: Protocol, port: u16) -> Option<Option<usize>> {
        match &rule.ports {
            None => Some(None),
            Some(ports) => {
                ports.iter().position(|m| m.is_some_and(|m| self.port_matches(m, dst, proto, port))).map(Some)
            }
        }
    }
}

/// Namespace labels with the implied `kubernetes.io/metadata.name`, also for namespaces only pods mention.
fn namespace_labels<'m>(
    model: &'m Model,
    by_ns: &HashMap<&'m str, Vec<usize>>,
) -> BTreeMap<&'m str, BTreeMap<String, String>> {
    let mut out: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for ns in by_ns.keys() {
        out.entry(ns).or_default();
    }
    for ns in &model.namespaces {
        out.entry(ns.name.as_str()).or_default().extend(ns.labels.clone());
    }
    for (name, labels) in out.iter_mut() {
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    }
    out
}

struct Builder<'m> {
    model: &'m Model,
    by_ns: HashMap<&'m str, Vec<usize>>,
    ns_labels: BTreeMap<&'m str, BTreeMap<String, String>>,
    sel_ids: BTreeMap<SelectionKey, usize>,
    block_ids: BTreeMap<IpBlock, usize>,
    named_ids: BTreeMap<(Protocol, String), usize>,
    selections: Vec<Selection>,
    blocks: Vec<Block>,
    named: Vec<NamedPorts>,
}

impl<'m> Builder<'m> {
    fn policy(&mut self, p: &'m NetworkPolicy) -> ResolvedPolicy<'m> {
        let ns = p.namespace();
        let selected =
            self.pods_of(&SelectionKey::InNamespace { namespace: ns.into(), pods: p.spec.pod_selector.clone() });
        let ingress =
            p.affects_ingress().then(|| p.spec.ingress.iter().map(|r| self.rule(ns, &r.from, &r.ports)).collect());
        let egress = p.affects_egress().then(|| p.spec.egress.iter().map(|r| self.rule(ns, &r.to, &r.ports)).collect());
        ResolvedPolicy { policy: p, reference: p.reference(), selected, ingress, egress }
    }

    fn rule(&mut self, ns: &str, peers: &[PolicyPeer], ports: &[PolicyPort]) -> Rule {
        let peers = (!peers.is_empty()).then(|| peers.iter().map(|p| self.peer(ns, p)).collect());
        let ports = (!ports.is_empty()).then(|| ports.iter().map(|p| self.port(p)).collect());
        Rule { peers, ports }
    }

    /// `None` for a peer validation rejects (neither ipBlock nor selector, or both): it matches nothing.
    fn peer(&mut self, ns: &str, peer: &PolicyPeer) -> Option<Peer> {
        let key = match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
            (Some(block), None, None) => return Some(Peer::Block(self.block(block))),
            (None, Some(pods), None) => SelectionKey::InNamespace { namespace: ns.into(), pods: pods.clone() },
            (None, pods, Some(nss)) => {
                SelectionKey::Across { namespaces: nss.clone(), pods: pods.clone().unwrap_or_default() }
            }
            _ => return None,
        };
        if let Some(id) = self.sel_ids.get(&key) {
            return Some(Peer::Pods(*id));
        }
        let pods = self.pods_of(&key);
        let ips = pods.iter().flat_map(|&i| self.model.pods[i].ips.iter().copied()).collect();
        self.selections.push(Selection { key: key.clone(), pods, ips });
        let id = self.selections.len() - 1;
        self.sel_ids.insert(key, id);
        Some(Peer::Pods(id))
    }

    fn block(&mut self, block: &IpBlock) -> usize {
        if let Some(id) = self.block_ids.get(block) {
            return *id;
        }
        let ranges = block_ranges(&block.cidr, &block.except);
        self.blocks.push(Block { block: block.clone(), ranges });
        let id = self.blocks.len() - 1;
        self.block_ids.insert(block.clone(), id);
        id
    }

    /// `None` for an entry validation rejects (out-of-range numbers, bad names): it matches nothing.
    fn port(&mut self, port: &PolicyPort) -> Option<PortMatch> {
        let proto = port.protocol();
        let in_range = |n: i64| u16::try_from(n).ok().filter(|n| *n != 0);
        match (&port.port, port.end_port) {
            (None, None) => Some(PortMatch::Protocol(proto)),
            (Some(PortRef::Number(n)), end) => {
                let lo = in_range(*n)?;
                let hi = match end {
                    Some(e) => in_range(e).filter(|hi| *hi >= lo)?,
                    None => lo,
                };
                Some(PortMatch::Range { proto, lo, hi })
            }
            (Some(PortRef::Name(name)), None) if valid_port_name(name) => {
                Some(PortMatch::Named(self.named(proto, name)))
            }
            _ => None,
        }
    }

    fn named(&mut self, proto: Protocol, name: &str) -> usize {
        if let Some(id) = self.named_ids.get(&(proto, name.to_string())) {
            return *id;
        }
        let entries = self
            .model
            .pods
            .iter()
            .flat_map(|pod| {
                let ports: Vec<u16> =
                    pod.ports.iter().filter(|p| p.name == name && p.protocol == proto).map(|p| p.port).collect();
                pod.ips.iter().flat_map(move |ip| ports.clone().into_iter().map(move |port| (*ip, port)))
            })
            .collect();
        self.named.push(NamedPorts { proto, name: name.to_string(), entries });
        self.named_ids.insert((proto, name.to_string()), self.named.len() - 1);
        self.named.len() - 1
    }

    fn pods_of(&self, key: &SelectionKey) -> Vec<usize> {
        let in_ns = |ns: &str, sel: &LabelSelector| -> Vec<usize> {
            let pods = self.by_ns.get(ns).map_or(&[][..], Vec::as_slice);
            pods.iter().copied().filter(|&i| sel.matches(&self.model.pods[i].labels)).collect()
        };
        match key {
            SelectionKey::InNamespace { namespace, pods } => in_ns(namespace, pods),
            SelectionKey::Across { namespaces, pods } => {
                let mut out: Vec<usize> = self
                    .ns_labels
                    .iter()
                    .filter(|(_, labels)| namespaces.matches(labels))
                    .flat_map(|(ns, _)| in_ns(ns, pods))
                    .collect();
                out.sort_unstable();
                out
            }
        }
    }
}
