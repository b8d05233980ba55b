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
//!
//! Networks (issue 11): every pod is on the network of its namespace (`Model::networks`, else the default
//! network). Everything resolved here is per network: a policy selects pods of its own namespace (one network),
//! peer selections pick only pods of the policy's network (a `namespaceSelector` never reaches a namespace of
//! another network), named ports resolve on the destination's network, and an address names a pod only together
//! with a network. Two networks may therefore hold equal addresses without ever matching each other's policies.
//! ipBlocks stay plain address ranges: what they match is the address as seen inside the policy's network
//! (traffic of another network never reaches a pod's rules; routing and the isolation firewall stop it first).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::model::{
    IpBlock, LabelSelector, Model, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRef, PortRef, Protocol,
    DEFAULT_NETWORK, NAMESPACE_NAME_LABEL,
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
    /// Index 0 is the default network (group 0), then the usable entries of `model.networks` in model order.
    pub networks: Vec<NetworkScope>,
    /// Per pod (index into `model.pods`): its network (index into `networks`).
    pub pod_network: Vec<usize>,
    by_ip: HashMap<(usize, IpAddr), Vec<usize>>,
}

/// A network as the compiler scopes rules: its name and its pods' host-veth link group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkScope {
    pub name: String,
    pub group: u32,
}

/// The default network's index in `Resolved::networks`.
pub const DEFAULT_NET: usize = 0;

pub struct ResolvedPolicy<'m> {
    pub policy: &'m NetworkPolicy,
    pub reference: PolicyRef,
    /// The network of the policy's namespace: the only one whose pods it selects and whose pods its peers name.
    pub network: usize,
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
    /// Only pods of this network are picked.
    pub network: usize,
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
    /// Pods of this network only: a named port resolves on the destination as its own network sees it.
    pub network: usize,
    pub proto: Protocol,
    pub name: String,
    pub entries: BTreeSet<(IpAddr, u16)>,
}

impl<'m> Resolved<'m> {
    pub fn new(model: &'m Model) -> Self {
        let (networks, ns_net) = networks(model);
        let net_of = |ns: &str| ns_net.get(ns).copied().unwrap_or(DEFAULT_NET);
        let mut by_ns: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_ip: HashMap<(usize, IpAddr), Vec<usize>> = HashMap::new();
        let mut pod_network = Vec::with_capacity(model.pods.len());
        for (i, pod) in model.pods.iter().enumerate() {
            let net = net_of(&pod.namespace);
            pod_network.push(net);
            by_ns.entry(pod.namespace.as_str()).or_default().push(i);
            for ip in &pod.ips {
                by_ip.entry((net, *ip)).or_default().push(i);
            }
        }
        let ns_labels = namespace_labels(model, &by_ns);
        let ns_network = ns_labels.keys().map(|ns| (*ns, net_of(ns))).collect();
        let mut order: Vec<&NetworkPolicy> = model.policies.iter().collect();
        order.sort_by_key(|p| p.reference());
        let mut b = Builder {
            model,
            by_ns,
            ns_labels,
            ns_network,
            pod_network,
            sel_ids: BTreeMap::new(),
            block_ids: BTreeMap::new(),
            named_ids: BTreeMap::new(),
            selections: Vec::new(),
            blocks: Vec::new(),
            named: Vec::new(),
        };
        let policies = order.into_iter().map(|p| b.policy(p)).collect();
        let (selections, blocks, named, pod_network) = (b.selections, b.blocks, b.named, b.pod_network);
        Resolved { model, policies, selections, blocks, named, networks, pod_network, by_ip }
    }

    /// Pods (indexes into `model.pods`) of the default network owning an address.
    pub fn pods_with_ip(&self, ip: IpAddr) -> &[usize] {
        self.pods_with_ip_in(DEFAULT_NET, ip)
    }

    /// Pods of network `net` (index into `networks`) owning an address.
    pub fn pods_with_ip_in(&self, net: usize, ip: IpAddr) -> &[usize] {
        self.by_ip.get(&(net, ip)).map_or(&[], Vec::as_slice)
    }

    /// Index of the network called `name` (`default` included).
    pub fn network_index(&self, name: &str) -> Option<usize> {
        self.networks.iter().position(|n| n.name == name)
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

/// The usable networks (default first) and the network of every namespace a tenant network lists. Entries that
/// would blur the scoping are skipped: the name `default`, group 0 (the default network's), a name or group
/// already taken, a name that is no DNS label. A namespace two networks list stays with the first (the agent never builds such a model).
fn networks(model: &Model) -> (Vec<NetworkScope>, HashMap<&str, usize>) {
    let mut nets = vec![NetworkScope { name: DEFAULT_NETWORK.into(), group: 0 }];
    let mut ns_net: HashMap<&str, usize> = HashMap::new();
    for n in &model.networks {
        if n.group == 0 || !dns_label(&n.name) || nets.iter().any(|o| o.name == n.name || o.group == n.group) {
            continue;
        }
        nets.push(NetworkScope { name: n.name.clone(), group: n.group });
        for ns in &n.namespaces {
            ns_net.entry(ns.as_str()).or_insert(nets.len() - 1);
        }
    }
    (nets, ns_net)
}

/// Network names end up in nft set names: DNS-1123 labels of at most 32 characters, as tenant networks are.
fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=32).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
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
    ns_network: HashMap<&'m str, usize>,
    pod_network: Vec<usize>,
    sel_ids: BTreeMap<(usize, SelectionKey), usize>,
    block_ids: BTreeMap<IpBlock, usize>,
    named_ids: BTreeMap<(usize, Protocol, String), usize>,
    selections: Vec<Selection>,
    blocks: Vec<Block>,
    named: Vec<NamedPorts>,
}

impl<'m> Builder<'m> {
    fn policy(&mut self, p: &'m NetworkPolicy) -> ResolvedPolicy<'m> {
        let ns = p.namespace();
        let net = self.network_of(ns);
        let key = SelectionKey::InNamespace { namespace: ns.into(), pods: p.spec.pod_selector.clone() };
        let selected = self.pods_of(net, &key);
        let ingress =
            p.affects_ingress().then(|| p.spec.ingress.iter().map(|r| self.rule(net, ns, &r.from, &r.ports)).collect());
        let egress =
            p.affects_egress().then(|| p.spec.egress.iter().map(|r| self.rule(net, ns, &r.to, &r.ports)).collect());
        ResolvedPolicy { policy: p, reference: p.reference(), network: net, selected, ingress, egress }
    }

    fn network_of(&self, ns: &str) -> usize {
        self.ns_network.get(ns).copied().unwrap_or(DEFAULT_NET)
    }

    fn rule(&mut self, net: usize, ns: &str, peers: &[PolicyPeer], ports: &[PolicyPort]) -> Rule {
        let peers = (!peers.is_empty()).then(|| peers.iter().map(|p| self.peer(net, ns, p)).collect());
        let ports = (!ports.is_empty()).then(|| ports.iter().map(|p| self.port(net, p)).collect());
        Rule { peers, ports }
    }

    /// `None` for a peer validation rejects (neither ipBlock nor selector, or both): it matches nothing.
    fn peer(&mut self, net: usize, ns: &str, peer: &PolicyPeer) -> Option<Peer> {
        let key = match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
            (Some(block), None, None) => return Some(Peer::Block(self.block(block))),
            (None, Some(pods), None) => SelectionKey::InNamespace { namespace: ns.into(), pods: pods.clone() },
            (None, pods, Some(nss)) => {
                SelectionKey::Across { namespaces: nss.clone(), pods: pods.clone().unwrap_or_default() }
            }
            _ => return None,
        };
        let id_key = (net, key);
        if let Some(id) = self.sel_ids.get(&id_key) {
            return Some(Peer::Pods(*id));
        }
        let pods = self.pods_of(net, &id_key.1);
        let ips = pods.iter().flat_map(|&i| self.model.pods[i].ips.iter().copied()).collect();
        self.selections.push(Selection { key: id_key.1.clone(), network: net, pods, ips });
        let id = self.selections.len() - 1;
        self.sel_ids.insert(id_key, id);
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
    fn port(&mut self, net: usize, port: &PolicyPort) -> Option<PortMatch> {
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
                Some(PortMatch::Named(self.named(net, proto, name)))
            }
            _ => None,
        }
    }

    fn named(&mut self, net: usize, proto: Protocol, name: &str) -> usize {
        if let Some(id) = self.named_ids.get(&(net, proto, name.to_string())) {
            return *id;
        }
        let entries = self
            .model
            .pods
            .iter()
            .zip(&self.pod_network)
            .filter(|(_, n)| **n == net)
            .flat_map(|(pod, _)| {
                let ports: Vec<u16> =
                    pod.ports.iter().filter(|p| p.name == name && p.protocol == proto).map(|p| p.port).collect();
                pod.ips.iter().flat_map(move |ip| ports.clone().into_iter().map(move |port| (*ip, port)))
            })
            .collect();
        self.named.push(NamedPorts { network: net, proto, name: name.to_string(), entries });
        self.named_ids.insert((net, proto, name.to_string()), self.named.len() - 1);
        self.named.len() - 1
    }

    /// Pods of network `net` the key picks (a namespace's pods are all on the namespace's network).
    fn pods_of(&self, net: usize, key: &SelectionKey) -> Vec<usize> {
        let in_ns = |ns: &str, sel: &LabelSelector| -> Vec<usize> {
            let pods = self.by_ns.get(ns).map_or(&[][..], Vec::as_slice);
            pods.iter().copied().filter(|&i| sel.matches(&self.model.pods[i].labels)).collect()
        };
        match key {
            SelectionKey::InNamespace { namespace, pods } if self.network_of(namespace) == net => {
                in_ns(namespace, pods)
            }
            SelectionKey::InNamespace { .. } => Vec::new(),
            SelectionKey::Across { namespaces, pods } => {
                let mut out: Vec<usize> = self
                    .ns_labels
                    .iter()
                    .filter(|(ns, labels)| self.network_of(ns) == net && namespaces.matches(labels))
                    .flat_map(|(ns, _)| in_ns(ns, pods))
                    .collect();
                out.sort_unstable();
                out
            }
        }
    }
}
