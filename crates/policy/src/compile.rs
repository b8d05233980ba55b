//! Compiling the resolved policies into one nftables table for one node.
//!
//! Table layout (`inet`, so IPv4 and IPv6 share it; every address set exists as `_v4` and `_v6`; `<P>` is a
//! policy's stable id, see `naming.rs`):
//! - `forward` (base chain, hook forward): `ct state established,related accept`, `ct state invalid drop`, then
//!   optionally drop packets from/to pod interfaces (`iifname/oifname "wf*"`) whose address is not in `@ready`,
//!   then `jump egress`.
//! - `egress`: source not in `@iso_out` → `goto ingress`; otherwise `jump out_sel<K>` for each of 16 buckets,
//!   then `jump out_cnt<K>` for each bucket, then count (`drop_out`) and drop. Bucket `out_sel<K>` holds
//!   `ip saddr @sel_<P> jump out_<P>` for the egress policies hashed to it, `out_cnt<K>` their counting rules
//!   (`drop_out_<P>`). A match in `out_<P>` does `goto ingress`: allowed egress must still pass the destination's
//!   ingress. The order of policies does not matter (any allow wins), so a bucket can be refilled alone.
//! - `ingress`: destination not in `@iso_in` → accept; the same bucket dispatch to `in_<P>`; count and drop.
//! - `in_<P>` / `out_<P>`: one rule per (peer group, port group) of each policy rule, matching `@pe<S>` (pod IPs of
//!   a shared selection), `@bk<K>` (every ipBlock of the rule merged into one interval set per family: `cidr`
//!   minus `except`, then the union, see `ranges.rs`; shared by rules with the same ranges), `@pt<K>` (`proto . port` ranges, when a
//!   rule lists several numeric ports) and `@np_<proto>_<name>` (`address . port` of a named port).
//!
//! Why dispatch by per-policy selection sets instead of per-pod chains: rules then depend only on the policies,
//! never on pods, so pod churn changes set elements only and the rule count stays O(policies × rules). Why stable
//! names and buckets: one policy added, changed or removed then touches its own chain, sets and counters and one
//! bucket of ~1/16 of the dispatch rules (`plan` in diff.rs), instead of reloading a table whose full load costs
//! seconds of kernel time at 1 000 policies. Why one interval set per rule for ipBlocks: a policy with 5 000
//! ipBlocks used to be 5 000 sets, and every nft command on the table paid for caching them.
//!
//! Networks (issue 11): sets naming this node's pods — `@ready`, `@iso_in/out`, `@sel_<P>` — hold `link group .
//! address` pairs and are matched as `meta oifgroup . ip daddr` (the packet leaves to a pod's host veth: ingress)
//! or `meta iifgroup . ip saddr` (it comes from one: egress). The CNI plugin creates every tenant pod's host veth
//! in its network's link group (the default network's pods are in group 0), so a rule of a pod of network N
//! never matches a pod of another network with the same address, and moving a namespace to another network
//! changes elements, not dispatch rules. Only packets that really come from (`iifname "wf*"`) or go to (`oifname "wf*"`) a
//! local pod are dispatched: group 0 is also every other device's group (the uplink, VXLAN devices), and a
//! tenant packet leaving through its network's VXLAN device must not be taken for the default-network pod that
//! happens to have its destination address. Peer sets (`@pe`, `@np`) are per network, since a selector or a named
//! port only ever names pods of the policy's network; ipBlock sets stay shared address ranges.
//!
//! Traffic the host originates or receives (kubelet probes, pod → node) goes through output/input, which this
//! table leaves alone: node ↔ local pod traffic is always allowed, as Kubernetes expects for probes. Egress
//! policy therefore does not restrict pod → own node (Kubernetes leaves it undefined). ipBlock peers match by
//! address, pod addresses included (as Calico does).

use std::collections::{BTreeMap, BTreeSet};

use crate::eval::{Direction, Peer, PortMatch, Resolved, Rule as EvalRule, SelectionKey, DEFAULT_NET};
use crate::model::{LabelSelector, Model, Operator, Protocol};
use crate::naming::{fnv64, Names};
use crate::nft::{
    AddrDir, Chain, Counter, CounterKind, CtState, Element, Family, Hook, Match, Rule, Ruleset, Set, SetKind, Verdict,
};
use crate::ranges::{union, AddrRange};

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// nft table name (letters, digits, `_`, `-`; other characters become `_`).
    pub table: String,
    /// Add `log prefix "weft-drop ..."` to the drop rules.
    pub log_drops: bool,
    /// Drop forwarded traffic from/to pod interfaces whose address is not in `@ready` (pods the agent has not
    /// compiled yet), so no pod starts unprotected.
    pub default_deny_new_pods: bool,
    /// Host-side pod interface prefix the CNI plugin uses (`wf` + hex).
    pub pod_iface_prefix: String,
    /// Priority of the forward base chain (0 = `filter`).
    pub priority: i32,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            table: "weft-policy".into(),
            log_drops: false,
            default_deny_new_pods: true,
            pod_iface_prefix: "wf".into(),
            priority: 0,
        }
    }
}

/// Dispatch buckets per direction: a policy change refills one bucket (about 1/16 of the dispatch rules); a packet
/// of an isolated pod pays 32 extra jumps on its first packet only (established traffic is accepted first).
pub const BUCKETS: usize = 16;

/// Compiles the policies for the pods of `node` into one table (see the module comment for the layout).
pub fn compile(model: &Model, node: &str, opts: &CompileOptions) -> Ruleset {
    let r = Resolved::new(model);
    let mut names = Names::default();
    let ids: Vec<(String, usize)> = r
        .policies
        .iter()
        .map(|p| {
            let key = p.reference.to_string();
            (names.name("p", &key), (fnv64(&key) % BUCKETS as u64) as usize)
        })
        .collect();
    let selections = r
        .selections
        .iter()
        .map(|s| {
            // The default network keeps the names it had before networks existed.
            let key = match s.network {
                DEFAULT_NET => format!("{:?}", s.key),
                n => format!("{}:{:?}", r.networks[n].name, s.key),
            };
            names.name("pe", &key)
        })
        .collect();
    let mut c = Compiler {
        r: &r,
        node,
        opts,
        ids,
        selections,
        names,
        sets: Vec::new(),
        counters: Vec::new(),
        chains: Vec::new(),
        port_sets: BTreeMap::new(),
        block_sets: BTreeMap::new(),
    };
    c.declare_sets();
    let unready = c.unready_rules();
    c.direction(Direction::Ingress);
    c.direction(Direction::Egress);
    let mut forward = vec![
        rule(vec![Match::CtState(vec![CtState::Established, CtState::Related])], Verdict::Accept),
        rule(vec![Match::CtState(vec![CtState::Invalid])], Verdict::Drop),
    ];
    forward.extend(unready);
    forward.push(rule(vec![], Verdict::Jump("egress".into())));
    let hook = Some(Hook { hook: "forward".into(), priority: opts.priority });
    c.chains.push(Chain { name: "forward".into(), hook, comment: Some("weft NetworkPolicy".into()), rules: forward });
    Ruleset { table: sanitize_table(&opts.table), counters: c.counters, sets: c.sets, chains: c.chains }
}

struct Compiler<'a, 'm> {
    r: &'a Resolved<'m>,
    node: &'a str,
    opts: &'a CompileOptions,
    /// Per policy (in `r.policies` order): its stable id and its dispatch bucket.
    ids: Vec<(String, usize)>,
    /// Per selection: the base name of its address sets.
    selections: Vec<String>,
    names: Names,
    sets: Vec<Set>,
    counters: Vec<Counter>,
    chains: Vec<Chain>,
    port_sets: BTreeMap<Vec<(Protocol, u16, u16)>, String>,
    block_sets: BTreeMap<Vec<AddrRange>, String>,
}

impl Compiler<'_, '_> {
    /// `group . address` of the pods of this node among `pods`: the group of their network's host veths.
    fn local_pods<'p>(&self, pods: impl IntoIterator<Item = &'p usize>) -> Vec<Element> {
        let (r, model) = (self.r, self.r.model);
        pods.into_iter()
            .filter(|&&i| model.pods[i].node == self.node)
            .flat_map(|&i| {
                let group = r.networks[r.pod_network[i]].group;
                model.pods[i].ips.iter().map(move |ip| Element::GroupAddr(group, *ip))
            })
            .collect()
    }

    /// One `_v4` and one `_v6` set, always both, so structure never depends on pods: `elements` are all
    /// `Addr` (a peer set) or all `GroupAddr` (this node's pods, `group_addr`).
    fn addr_sets(&mut self, base: &str, elements: Vec<Element>, group_addr: bool, comment: Option<String>) {
        let mut by_family: BTreeMap<Family, BTreeSet<Element>> = BTreeMap::new();
        for e in elements {
            let (Element::Addr(ip) | Element::GroupAddr(_, ip)) = e else { continue };
            by_family.entry(Family::of(ip)).or_default().insert(e);
        }
        for f in FAMILIES {
            let elements = by_family.remove(&f).unwrap_or_default();
            let name = format!("{base}_{}", f.suffix());
            let kind = if group_addr { SetKind::GroupAddr(f) } else { SetKind::Addr(f) };
            self.sets.push(Set { name, kind, comment: comment.clone(), elements });
        }
    }

    fn declare_sets(&mut self) {
        let r = self.r;
        if self.opts.default_deny_new_pods {
            let ready = self.local_pods(&(0..r.model.pods.len()).collect::<Vec<_>>());
            self.addr_sets("ready", ready, true, Some("pods the agent has programmed".into()));
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            let isolated: Vec<usize> =
                r.policies.iter().filter(|p| p.rules(dir).is_some()).flat_map(|p| p.selected.iter().copied()).collect();
            let pods = self.local_pods(&isolated);
            let comment = Some(format!("pods isolated for {}", long(dir)));
            self.addr_sets(&format!("iso_{}", short(dir)), pods, true, comment);
        }
        for (i, p) in r.policies.iter().enumerate() {
            let pods = self.local_pods(&p.selected);
            let base = format!("sel_{}", self.ids[i].0);
            self.addr_sets(&base, pods, true, Some(format!("pods selected by {}", p.reference)));
        }
        for (i, s) in r.selections.iter().enumerate() {
            let base = self.selections[i].clone();
            let ips = s.ips.iter().map(|ip| Element::Addr(*ip)).collect();
            let comment = match s.network {
                DEFAULT_NET => describe_selection(&s.key),
                n => format!("{} (network {})", describe_selection(&s.key), r.networks[n].name),
            };
            self.addr_sets(&base, ips, false, Some(comment));
        }
        for n in &r.named {
            for f in FAMILIES {
                let elements =
                    n.entries.iter().filter(|(ip, _)| Family::of(*ip) == f).map(|(ip, p)| Element::AddrPort(*ip, *p));
                let comment = match n.network {
                    DEFAULT_NET => format!("named port {}/{}", n.proto, n.name),
                    net => format!("named port {}/{} (network {})", n.proto, n.name, r.networks[net].name),
                };
                let name = named_set(self.network_tag(n.network), n.proto, &n.name, f);
                let kind = SetKind::AddrPort(f);
                self.sets.push(Set { name, kind, comment: Some(comment), elements: elements.collect() });
            }
        }
    }

    /// `None` for the default network (its set names are as before networks existed), else the network's name.
    fn network_tag(&self, net: usize) -> Option<&str> {
        (net != DEFAULT_NET).then(|| self.r.networks[net].name.as_str())
    }

    fn unready_rules(&mut self) -> Vec<Rule> {
        if !self.opts.default_deny_new_pods {
            return Vec::new();
        }
        self.counters.push(Counter { name: "drop_unready".into(), counts: CounterKind::DroppedUnready });
        let prefix = &self.opts.pod_iface_prefix;
        let mut rules = Vec::new();
        for (iface, dir) in
            [(Match::IifPrefix(prefix.clone()), AddrDir::Src), (Match::OifPrefix(prefix.clone()), AddrDir::Dst)]
        {
            for f in FAMILIES {
                let set = format!("ready_{}", f.suffix());
                let m = vec![iface.clone(), Match::NfProto(f), Match::GroupAddr { dir, family: f, set, negate: true }];
                rules.push(self.drop_rule(m, "drop_unready", "unready"));
            }
        }
        rules
    }

    fn drop_rule(&self, matches: Vec<Match>, counter: &str, what: &str) -> Rule {
        Rule {
            matches,
            log_prefix: self.opts.log_drops.then(|| format!("weft-drop {what}: ")),
            counter: Some(counter.into()),
            verdict: Some(Verdict::Drop),
            comment: None,
        }
    }

    /// The dispatch chain of a direction, its buckets and the per-policy chains they jump to.
    fn direction(&mut self, dir: Direction) {
        let r = self.r;
        let (s, addr_dir) = (short(dir), if dir == Direction::Ingress { AddrDir::Dst } else { AddrDir::Src });
        // Allowed egress continues with the destination's ingress; allowed ingress is final.
        let allow = if dir == Direction::Ingress { Verdict::Accept } else { Verdict::Goto("ingress".into()) };
        // Only a packet from (egress) or to (ingress) a local pod's veth has a local pod on this side.
        let prefix = self.opts.pod_iface_prefix.clone();
        let not_pod = if dir == Direction::Ingress { Match::OifNotPrefix(prefix) } else { Match::IifNotPrefix(prefix) };
        let mut dispatch = vec![rule(vec![not_pod], allow.clone())];
        for f in FAMILIES {
            let not_isolated =
                Match::GroupAddr { dir: addr_dir, family: f, set: format!("iso_{s}_{}", f.suffix()), negate: true };
            dispatch.push(rule(vec![Match::NfProto(f), not_isolated], allow.clone()));
        }
        let mut jumps: Vec<Vec<Rule>> = vec![Vec::new(); BUCKETS];
        let mut counting: Vec<Vec<Rule>> = vec![Vec::new(); BUCKETS];
        for (i, p) in r.policies.iter().enumerate() {
            let Some(rules) = p.rules(dir) else { continue };
            let (id, bucket) = self.ids[i].clone();
            let counter = format!("drop_{s}_{id}");
            self.counters.push(Counter {
                name: counter.clone(),
                counts: CounterKind::DroppedForPolicy(dir, p.reference.clone()),
            });
            for f in FAMILIES {
                let selected = Match::GroupAddr {
                    dir: addr_dir,
                    family: f,
                    set: format!("sel_{id}_{}", f.suffix()),
                    negate: false,
                };
                counting[bucket].push(Rule {
                    matches: vec![selected.clone()],
                    counter: Some(counter.clone()),
                    ..Rule::default()
                });
                if !rules.is_empty() {
                    jumps[bucket].push(rule(vec![selected], Verdict::Jump(format!("{s}_{id}"))));
                }
            }
            if rules.is_empty() {
                continue;
            }
            let mut body = Vec::new();
            for (ri, er) in rules.iter().enumerate() {
                let what = format!("{} {}[{ri}]", p.reference, long(dir));
                for matches in self.rule_matches(er, dir) {
                    body.push(Rule {
                        matches,
                        verdict: Some(allow.clone()),
                        comment: Some(what.clone()),
                        ..Rule::default()
                    });
                }
            }
            self.chains.push(Chain {
                name: format!("{s}_{id}"),
                hook: None,
                comment: Some(p.reference.to_string()),
                rules: body,
            });
        }
        for (kind, buckets) in [("sel", jumps), ("cnt", counting)] {
            for (k, rules) in buckets.into_iter().enumerate() {
                let name = format!("{s}_{kind}{k}");
                dispatch.push(rule(vec![], Verdict::Jump(name.clone())));
                self.chains.push(Chain { name, hook: None, comment: None, rules });
            }
        }
        let total = format!("drop_{s}");
        self.counters.push(Counter { name: total.clone(), counts: CounterKind::Dropped(dir) });
        dispatch.push(self.drop_rule(vec![], &total, s));
        self.chains.push(Chain { name: long(dir).into(), hook: None, comment: None, rules: dispatch });
    }

    /// The match lists of one policy rule: every peer group × every port group, skipping combinations of two
    /// families. Peer groups: each pod selection, and all ipBlocks of the rule merged into one interval set per
    /// family (`bk<hash>_v4/_v6`, created here; a family whose union is empty gets no set and no rule).
    fn rule_matches(&mut self, er: &EvalRule, dir: Direction) -> Vec<Vec<Match>> {
        let peer_dir = if dir == Direction::Ingress { AddrDir::Src } else { AddrDir::Dst };
        let peers: Vec<(Option<Family>, Vec<Match>)> = match &er.peers {
            None => vec![(None, vec![])],
            Some(peers) => {
                let mut out = Vec::new();
                let mut blocks: BTreeMap<Family, Vec<AddrRange>> = BTreeMap::new();
                for p in peers.iter().flatten() {
                    match *p {
                        Peer::Pods(sel) => {
                            for f in FAMILIES {
                                let set = format!("{}_{}", self.selections[sel], f.suffix());
                                out.push((Some(f), vec![addr(peer_dir, f, set)]));
                            }
                        }
                        Peer::Block(b) => {
                            let block = &self.r.blocks[b];
                            let f = Family::of(block.block.cidr.addr());
                            blocks.entry(f).or_default().extend(block.ranges.iter().copied());
                        }
                    }
                }
                for (f, ranges) in blocks {
                    let ranges = union(ranges);
                    if ranges.is_empty() {
                        continue;
                    }
                    let name = self.block_set(f, ranges);
                    out.push((Some(f), vec![addr(peer_dir, f, name)]));
                }
                out
            }
        };
        let ports = match &er.ports {
            None => vec![(None, vec![])],
            Some(ports) => self.port_groups(ports),
        };
        let mut out = Vec::new();
        for (pf, pm) in &peers {
            for (qf, qm) in &ports {
                if pf.is_some() && qf.is_some() && pf != qf {
                    continue;
                }
                out.push(pm.iter().chain(qm).cloned().collect());
            }
        }
        out
    }

    /// Port entries as match lists: all numeric ranges and bare protocols of the rule in one match (inline when
    /// there is a single one, else a shared `proto . port` interval set), and each named port as a per-family
    /// `daddr . dport` lookup.
    fn port_groups(&mut self, ports: &[Option<PortMatch>]) -> Vec<(Option<Family>, Vec<Match>)> {
        let mut ranges: BTreeMap<Protocol, Vec<(u16, u16)>> = BTreeMap::new();
        let mut named = BTreeSet::new();
        for p in ports.iter().flatten() {
            match *p {
                // Every TCP/UDP/SCTP packet has a port, so "the whole protocol" is the full port range.
                PortMatch::Protocol(proto) => ranges.entry(proto).or_default().push((0, u16::MAX)),
                PortMatch::Range { proto, lo, hi } => ranges.entry(proto).or_default().push((lo, hi)),
                PortMatch::Named(n) => {
                    named.insert(n);
                }
            }
        }
        let entries: Vec<(Protocol, u16, u16)> =
            ranges.iter().flat_map(|(p, r)| merge(r).into_iter().map(move |(lo, hi)| (*p, lo, hi))).collect();
        let mut out = Vec::new();
        match entries.as_slice() {
            [] => {}
            [(proto, 0, u16::MAX)] => out.push((None, vec![Match::L4Proto(*proto)])),
            [(proto, lo, hi)] => out.push((None, vec![Match::L4Proto(*proto), Match::Dport(*lo, *hi)])),
            _ => out.push((None, vec![Match::ProtoDport { set: self.port_set(entries) }])),
        }
        for n in named {
            let np = &self.r.named[n];
            for f in FAMILIES {
                let set = named_set(self.network_tag(np.network), np.proto, &np.name, f);
                let lookup = Match::DaddrDport { family: f, set };
                out.push((Some(f), vec![Match::L4Proto(np.proto), lookup]));
            }
        }
        out
    }

    /// The interval set holding exactly these merged ranges, shared by every rule with the same ipBlocks. Shared
    /// and not one per rule because nft 1.0.6 fetches the elements of every interval set of the table before any
    /// element command: their number, not their size, is what pod churn pays for.
    fn block_set(&mut self, f: Family, ranges: Vec<AddrRange>) -> String {
        if let Some(name) = self.block_sets.get(&ranges) {
            return name.clone();
        }
        let name = format!("{}_{}", self.names.name("bk", &format!("{ranges:?}")), f.suffix());
        let comment = Some(format!("ipBlocks: {} ranges from {}", ranges.len(), ranges[0]));
        let elements = ranges.iter().map(|r| Element::Range(*r)).collect();
        self.sets.push(Set { name: name.clone(), kind: SetKind::Ranges(f), comment, elements });
        self.block_sets.insert(ranges, name.clone());
        name
    }

    /// The `proto . port` set holding exactly these entries, shared by every rule with the same list.
    fn port_set(&mut self, entries: Vec<(Protocol, u16, u16)>) -> String {
        if let Some(name) = self.port_sets.get(&entries) {
            return name.clone();
        }
        let name = self.names.name("pt", &format!("{entries:?}"));
        let elements = entries.iter().map(|&(p, lo, hi)| Element::ProtoPorts(p, lo, hi)).collect();
        self.sets.push(Set { name: name.clone(), kind: SetKind::ProtoPorts, comment: None, elements });
        self.port_sets.insert(entries, name.clone());
        name
    }
}

/// Named-port sets are named after the port (IANA names are valid nft identifiers), so they never shift; a
/// tenant network's after the network too (DNS labels: no `_`, so the two forms never collide).
fn named_set(network: Option<&str>, proto: Protocol, name: &str, f: Family) -> String {
    match network {
        None => format!("np_{}_{name}_{}", proto.nft_name(), f.suffix()),
        Some(net) => format!("np_{net}_{}_{name}_{}", proto.nft_name(), f.suffix()),
    }
}

/// Sorted, coalesced ranges: nft rejects overlapping intervals in one set.
fn merge(ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in sorted {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn addr(dir: AddrDir, family: Family, set: String) -> Match {
    Match::Addr { dir, family, set, negate: false }
}

fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule { matches, verdict: Some(verdict), ..Rule::default() }
}

fn short(dir: Direction) -> &'static str {
    if dir == Direction::Ingress {
        "in"
    } else {
        "out"
    }
}

fn long(dir: Direction) -> &'static str {
    if dir == Direction::Ingress {
        "ingress"
    } else {
        "egress"
    }
}

fn sanitize_table(name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if clean.starts_with(|c: char| c.is_ascii_alphabetic()) {
        clean
    } else {
        format!("t{clean}")
    }
}

fn describe_selection(key: &SelectionKey) -> String {
    match key {
        SelectionKey::InNamespace { namespace, pods } => format!("pods {} in {namespace}", describe(pods)),
        SelectionKey::Across { namespaces, pods } => {
            format!("pods {} in namespaces {}", describe(pods), describe(namespaces))
        }
    }
}

fn describe(sel: &LabelSelector) -> String {
    if sel.is_empty() {
        return "*".into();
    }
    let mut parts: Vec<String> = sel.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in &sel.match_expressions {
        parts.push(match e.operator {
            Operator::In => format!("{} in ({})", e.key, e.values.join(",")),
            Operator::NotIn => format!("{} notin ({})", e.key, e.values.join(",")),
            Operator::Exists => e.key.clone(),
            Operator::DoesNotExist => format!("!{}", e.key),
        });
    }
    parts.join(",")
}
