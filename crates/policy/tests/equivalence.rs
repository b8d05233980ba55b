//! The key correctness property: for random small clusters (2 nodes, 3 namespaces, dual-stack pods with named
//! ports, policies using every selector, peer and port form), every new connection between every pair of
//! addresses (pods and outside addresses), on a spread of ports and all three protocols, gets the same answer from
//!   1. the packet simulator running the compiled per-node rulesets (`common::sim`),
//!   2. `explain`, per direction, and
//!   3. a naive reading of the spec (`common::oracle`), which also checks the policy/rule `explain` names.
//!
//! Drop counters are checked too: a denied packet increments the per-policy counter of exactly the policies
//! `explain` lists as isolating. Established packets always pass, and unknown pod addresses are dropped.
//! Incremental updates: a random sequence of policy sets (policies added, changed and removed, pods leaving),
//! applied with `plan` to the table of the previous step by a kernel-like interpreter (`common::apply`), yields
//! exactly the table a full compile gives, and that table gives the same verdicts.
//!
//! Networks: each namespace is on the default network or on one of two tenant networks, and pod addresses are
//! numbered per network, so pods of different networks share addresses. Every question is asked inside one
//! network (addresses of other networks' pods are outside addresses there) and must get the answer the oracle
//! gives for that network alone — the cluster cut down to the network's namespaces, pods and policies — from
//! the one table per node that holds every network's rules. The incremental steps also move namespaces
//! between networks.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use proptest::prelude::*;
use proptest::sample::select;
use weft_policy::eval::Resolved;
use weft_policy::model::*;
use weft_policy::nft::{CounterKind, CtState, Ruleset};
use weft_policy::{explain_in, Direction, DirectionVerdict};

use common::sim::{self, Packet};

const KEYS: [&str; 3] = ["app", "tier", "env"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const NAMESPACES: [&str; 3] = ["ns1", "ns2", "ns3"];
const PORT_NAMES: [&str; 4] = ["http", "dns", "metrics", "nope"];
const NUMBERS: [i64; 6] = [53, 80, 443, 8080, 9000, 9090];
/// Tenant networks (name, link group) a namespace may be on besides the default network.
const NETWORKS: [(&str, u32); 2] = [("blue", 0x5700_0064), ("red", 0x5700_00c8)];
const PROBE_PORTS: [u16; 8] = [53, 80, 81, 443, 8080, 9000, 9005, 9090];
const OUTSIDE: [&str; 6] = ["192.168.1.5", "192.168.2.5", "10.9.0.1", "8.8.8.8", "fd00::100", "2001:db8::1"];
/// (cidr, excepts): every except lies strictly inside its cidr, as validation demands.
const BLOCKS: [(&str, &[&str]); 7] = [
    ("10.0.0.0/24", &["10.0.0.4/30", "10.0.0.2/32"]),
    ("10.0.0.0/8", &[]),
    ("192.168.0.0/16", &["192.168.1.0/24"]),
    ("0.0.0.0/0", &["10.0.0.0/8"]),
    ("fd00::/64", &["fd00::4/126"]),
    ("::/0", &[]),
    ("10.0.0.6/31", &[]),
];

fn labels(max: usize) -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        select(&KEYS[..]).prop_map(String::from),
        select(&VALUES[..]).prop_map(String::from),
        0..max,
    )
}

fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
    let ops = vec![Operator::In, Operator::NotIn, Operator::Exists, Operator::DoesNotExist];
    (select(&KEYS[..]), select(ops), prop::collection::btree_set(select(&VALUES[..]), 1..3)).prop_map(
        |(key, operator, values)| LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: match operator {
                Operator::In | Operator::NotIn => values.into_iter().map(String::from).collect(),
                _ => vec![],
            },
        },
    )
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    (labels(2), prop::collection::vec(requirement(), 0..2))
        .prop_map(|(match_labels, match_expressions)| LabelSelector { match_labels, match_expressions })
}

fn peer() -> impl Strategy<Value = PolicyPeer> {
    prop_oneof![
        selector().prop_map(|s| PolicyPeer { pod_selector: Some(s), ..Default::default() }),
        selector().prop_map(|s| PolicyPeer { namespace_selector: Some(s), ..Default::default() }),
        (selector(), selector()).prop_map(|(p, n)| PolicyPeer {
            pod_selector: Some(p),
            namespace_selector: Some(n),
            ..Default::default()
        }),
        (0..BLOCKS.len(), prop::collection::vec(any::<bool>(), 2)).prop_map(|(i, keep)| {
            let (cidr, except) = BLOCKS[i];
            let except = except.iter().zip(keep).filter(|(_, k)| *k).map(|(e, _)| e.parse().unwrap()).collect();
            PolicyPeer { ip_block: Some(IpBlock { cidr: cidr.parse().unwrap(), except }), ..Default::default() }
        }),
    ]
}

fn port() -> impl Strategy<Value = PolicyPort> {
    let protocol = prop::option::of(select(&Protocol::ALL[..]));
    let number = (select(&NUMBERS[..]), prop::option::of(select(&[0i64, 5, 100][..])))
        .prop_map(|(n, end)| (Some(PortRef::Number(n)), end.map(|e| n + e)));
    let named = select(&PORT_NAMES[..]).prop_map(|n| (Some(PortRef::Name(n.into())), None));
    let port = prop_oneof![Just((None, None)), number, named];
    (protocol, port).prop_map(|(protocol, (port, end_port))| PolicyPort { protocol, port, end_port })
}

fn rule() -> impl Strategy<Value = (Vec<PolicyPeer>, Vec<PolicyPort>)> {
    (prop::collection::vec(peer(), 0..3), prop::collection::vec(port(), 0..3))
}

fn policy(index: usize) -> impl Strategy<Value = NetworkPolicy> {
    let types = select(vec![
        vec![],
        vec![PolicyType::Ingress],
        vec![PolicyType::Egress],
        vec![PolicyType::Ingress, PolicyType::Egress],
    ]);
    (
        select(&NAMESPACES[..]),
        selector(),
        types,
        prop::collection::vec(rule(), 0..3),
        prop::collection::vec(rule(), 0..3),
    )
        .prop_map(move |(ns, pod_selector, policy_types, ingress, egress)| NetworkPolicy {
            metadata: ObjectMeta { name: format!("pol{index}"), namespace: Some(ns.into()) },
            spec: NetworkPolicySpec {
                pod_selector,
                policy_types,
                ingress: ingress.into_iter().map(|(from, ports)| IngressRule { from, ports }).collect(),
                egress: egress.into_iter().map(|(to, ports)| EgressRule { to, ports }).collect(),
            },
            ..Default::default()
        })
}

fn container_ports() -> impl Strategy<Value = Vec<NamedPort>> {
    let http = (select(&[80u16, 8080][..]), select(&[Protocol::Tcp, Protocol::Udp][..]));
    let dns = select(&[Protocol::Udp, Protocol::Tcp][..]);
    let metrics = select(&[Protocol::Tcp, Protocol::Sctp][..]);
    (prop::option::of(http), prop::option::of(dns), prop::option::of(metrics)).prop_map(|(h, d, m)| {
        let mut out = Vec::new();
        if let Some((port, protocol)) = h {
            out.push(NamedPort { name: "http".into(), port, protocol });
        }
        if let Some(protocol) = d {
            out.push(NamedPort { name: "dns".into(), port: 53, protocol });
        }
        if let Some(protocol) = m {
            out.push(NamedPort { name: "metrics".into(), port: 9090, protocol });
        }
        out
    })
}

/// The network (index: 0 default, then `NETWORKS`) of each of `NAMESPACES`.
fn placement() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=NETWORKS.len(), NAMESPACES.len())
}

fn networks_of(placement: &[usize]) -> Vec<Network> {
    NETWORKS
        .iter()
        .enumerate()
        .map(|(k, (name, group))| Network {
            name: name.to_string(),
            group: *group,
            namespaces: NAMESPACES
                .iter()
                .zip(placement)
                .filter(|(_, n)| **n == k + 1)
                .map(|(ns, _)| ns.to_string())
                .collect(),
        })
        .collect()
}

fn model() -> impl Strategy<Value = Model> {
    let pod = (select(&NAMESPACES[..]), labels(3), select(&["n1", "n2"][..]), any::<bool>(), container_ports());
    let pods = prop::collection::vec(pod, 1..8);
    let namespaces = (labels(3), labels(3));
    let policies = (0usize..5).prop_flat_map(|n| (0..n).map(policy).collect::<Vec<_>>());
    (pods, namespaces, policies, placement()).prop_map(|(pods, (l1, l2), policies, placement)| Model {
        // Addresses are numbered per network: pods of different networks share them.
        pods: pods
            .into_iter()
            .enumerate()
            .scan([0usize; NETWORKS.len() + 1], |next, (i, (ns, labels, node, dual, ports))| {
                let net = placement[NAMESPACES.iter().position(|n| *n == ns).unwrap()];
                next[net] += 1;
                let k = next[net] + 1;
                let mut ips: Vec<IpAddr> = vec![format!("10.0.0.{k}").parse().unwrap()];
                if dual {
                    ips.push(format!("fd00::{k}").parse().unwrap());
                }
                Some(Pod {
                    namespace: ns.into(),
                    name: format!("p{i}"),
                    labels,
                    ips,
                    node: node.into(),
                    ports,
                    host_iface: None,
                })
            })
            .collect(),
        // ns3 has no namespace object: only its implied name label.
        namespaces: vec![Namespace { name: "ns1".into(), labels: l1 }, Namespace { name: "ns2".into(), labels: l2 }],
        policies,
        networks: networks_of(&placement),
    })
}

/// Network indexes (as `Resolved::networks` numbers them) with at least one pod.
fn used_networks(r: &Resolved<'_>) -> BTreeSet<usize> {
    r.pod_network.iter().copied().collect()
}

/// Every pod address of every network (inside one network, another network's are outside addresses) and the
/// outside ones, once each.
fn addresses(model: &Model) -> Vec<IpAddr> {
    let mut out: BTreeSet<IpAddr> = model.pods.iter().flat_map(|p| p.ips.iter().copied()).collect();
    out.extend(OUTSIDE.iter().map(|s| s.parse::<IpAddr>().unwrap()));
    out.into_iter().collect()
}

fn rulesets(model: &Model) -> HashMap<String, Ruleset> {
    ["n1", "n2"].iter().map(|n| (n.to_string(), weft_policy::compile(model, n, &Default::default()))).collect()
}

/// Policies whose drop counter of `dir` the simulated packet incremented.
fn counted_policies(rs: &Ruleset, counters: &[String], dir: Direction) -> BTreeSet<String> {
    counters
        .iter()
        .filter_map(|name| rs.counters.iter().find(|c| &c.name == name))
        .filter_map(|c| match &c.counts {
            CounterKind::DroppedForPolicy(d, p) if *d == dir => Some(p.to_string()),
            _ => None,
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn check_connection(
    model: &Model,
    r: &Resolved<'_>,
    rs: &HashMap<String, Ruleset>,
    net: usize,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
) {
    let what = format!("{src} -> {dst} {proto}/{port} in network {}", r.networks[net].name);
    let v = explain_in(r, net, src, dst, port, proto);
    assert_eq!(v.network, r.networks[net].name);
    let hops = sim::cluster_run_in(r, rs, net, src, dst, proto, port);
    let sim_ok = hops.iter().all(|o| o.accepted);
    assert_eq!(v.allowed, sim_ok, "explain vs compiled rules, {what}: {v:?} {hops:?}");
    let alone = common::oracle::network_alone(model, &r.networks[net].name);
    let o = common::oracle::evaluate(&alone, src, dst, proto, port);
    assert_eq!(v.egress.allows(), o.egress, "egress vs oracle, {what}: {v:?}");
    assert_eq!(v.ingress.allows(), o.ingress, "ingress vs oracle, {what}: {v:?}");
    for (dv, by) in [(&v.egress, &o.egress_by), (&v.ingress, &o.ingress_by)] {
        if let DirectionVerdict::Allowed { by: p, rule, .. } = dv {
            assert!(by.contains(&(p.to_string(), *rule)), "explain names {p} rule {rule}, oracle {by:?}, {what}");
        }
    }
    if !sim_ok {
        // The dropping hop counted the drop against exactly the isolating policies of the failing direction.
        let (dir, dv, node_ip) = if !v.egress.allows() {
            (Direction::Egress, &v.egress, src)
        } else {
            (Direction::Ingress, &v.ingress, dst)
        };
        let owner = *r.pods_with_ip_in(net, node_ip).first().expect("a denied end is a pod");
        let node = &model.pods[owner].node;
        let DirectionVerdict::Denied { isolating_policies } = dv else { unreachable!() };
        let expected: BTreeSet<String> = isolating_policies.iter().map(|p| p.to_string()).collect();
        let last = hops.last().unwrap();
        assert_eq!(counted_policies(&rs[node], &last.counters, dir), expected, "drop counters, {what}");
    }
}

fn policy_set() -> impl Strategy<Value = Vec<NetworkPolicy>> {
    (0usize..5).prop_flat_map(|n| (0..n).map(policy).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn incremental_plans_equal_a_full_compile(
        model in model(),
        steps in prop::collection::vec((policy_set(), any::<bool>(), any::<bool>()), 1..5),
    ) {
        let opts = weft_policy::CompileOptions::default();
        let mut current = model.clone();
        let mut kernel: HashMap<String, common::apply::Table> =
            ["n1", "n2"].iter().map(|n| (n.to_string(), common::apply::Table::of(&weft_policy::compile(&current, n, &opts)))).collect();
        for (policies, drop_pod, swap) in steps {
            let old = current.clone();
            current.policies = policies;
            if drop_pod && current.pods.len() > 1 {
                current.pods.pop();
            }
            if swap {
                // The two tenant networks trade namespaces: their pods change group and peer sets, and
                // addresses stay unique inside each network.
                let (a, b) = (current.networks[0].namespaces.clone(), current.networks[1].namespaces.clone());
                current.networks[0].namespaces = b;
                current.networks[1].namespaces = a;
            }
            let mut incremental = HashMap::new();
            for node in ["n1", "n2"] {
                let before = weft_policy::compile(&old, node, &opts);
                let after = weft_policy::compile(&current, node, &opts);
                let plan = weft_policy::plan(&before, &after).expect("policy and pod changes apply in place");
                let t = kernel.get_mut(node).unwrap();
                prop_assert_eq!(&common::apply::Table::of(&before), &*t);
                if let Err(e) = common::apply::apply(t, &plan) {
                    return Err(TestCaseError::fail(format!("{node}: the kernel would refuse the plan: {e}\n{}", plan.render())));
                }
                prop_assert_eq!(&*t, &common::apply::Table::of(&after), "{}: incremental vs full", node);
                incremental.insert(node.to_string(), t.to_ruleset(&after.table));
            }
            // The same verdicts from the incrementally built tables (a sample: all pod pairs, two ports).
            let r = Resolved::new(&current);
            for net in used_networks(&r) {
                let pod_ips: Vec<IpAddr> = current
                    .pods
                    .iter()
                    .zip(&r.pod_network)
                    .filter(|(_, n)| **n == net)
                    .flat_map(|(p, _)| p.ips.iter().copied())
                    .collect();
                for &src in &pod_ips {
                    for &dst in &pod_ips {
                        if src != dst && src.is_ipv4() == dst.is_ipv4() {
                            for port in [80, 9090] {
                                check_connection(&current, &r, &incremental, net, src, dst, Protocol::Tcp, port);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn compiled_rules_explain_and_spec_agree(model in model()) {
        for p in &model.policies {
            p.validate().expect("generated policies are valid");
        }
        let r = Resolved::new(&model);
        let rs = rulesets(&model);
        let addrs = addresses(&model);
        for net in used_networks(&r) {
            let is_pod = |ip: IpAddr| !r.pods_with_ip_in(net, ip).is_empty();
            for &src in &addrs {
                for &dst in &addrs {
                    if src == dst || src.is_ipv4() != dst.is_ipv4() || !(is_pod(src) || is_pod(dst)) {
                        continue;
                    }
                    for proto in Protocol::ALL {
                        for port in PROBE_PORTS {
                            check_connection(&model, &r, &rs, net, src, dst, proto, port);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn established_always_passes_and_unknown_pods_are_dropped(model in model()) {
        let rs = rulesets(&model);
        let r = Resolved::new(&model);
        for (i, pod) in model.pods.iter().enumerate() {
            let group = r.networks[r.pod_network[i]].group;
            // A group no pod of this address is in: the same address on another network's veth.
            let other_group = [0u32, NETWORKS[0].1, NETWORKS[1].1]
                .into_iter()
                .find(|g| !r.pod_network.iter().zip(&model.pods).any(|(n, p)| r.networks[*n].group == *g && p.ips.iter().any(|a| pod.ips.contains(a)) && p.node == pod.node));
            for &ip in &pod.ips {
                let other: IpAddr = if ip.is_ipv4() { "10.0.0.250".parse().unwrap() } else { "fd00::250".parse().unwrap() };
                let reply = Packet { ct: Some(CtState::Established), iif: "eth0".into(), oif: "wf000000".into(), iifgroup: 0, oifgroup: group, src: other, dst: ip, proto: Protocol::Tcp, dport: 1 };
                prop_assert!(sim::run(&rs[&pod.node], &reply).accepted);
                // An address no pod of the model has, on a pod interface: a pod the agent has not compiled yet.
                let new_pod = Packet { ct: None, iif: "wf0000ff".into(), oif: "eth0".into(), iifgroup: group, oifgroup: 0, src: other, dst: ip, proto: Protocol::Tcp, dport: 1 };
                let out = sim::run(&rs[&pod.node], &new_pod);
                prop_assert!(!out.accepted);
                prop_assert_eq!(out.counters, vec!["drop_unready".to_string()]);
                let to_new_pod = Packet { iif: "eth0".into(), oif: "wf0000ff".into(), iifgroup: 0, oifgroup: group, src: ip, dst: other, ..new_pod.clone() };
                prop_assert!(!sim::run(&rs[&pod.node], &to_new_pod).accepted);
                // The pod's own address from a veth of another network is not that pod: unready as well.
                if let Some(g) = other_group {
                    let spoof = Packet { iifgroup: g, src: ip, dst: other, ..new_pod.clone() };
                    let out = sim::run(&rs[&pod.node], &spoof);
                    prop_assert!(!out.accepted, "{ip} from group {g:#x}");
                    prop_assert_eq!(out.counters, vec!["drop_unready".to_string()]);
                }
            }
        }
    }
}
