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

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use proptest::prelude::*;
use proptest::sample::select;
use weft_policy::eval::Resolved;
use weft_policy::model::*;
use weft_policy::nft::{CounterKind, CtState, Ruleset};
use weft_policy::{explain_ips, Direction, DirectionVerdict};

use common::sim::{self, Packet};

const KEYS: [&str; 3] = ["app", "tier", "env"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const NAMESPACES: [&str; 3] = ["ns1", "ns2", "ns3"];
const PORT_NAMES: [&str; 4] = ["http", "dns", "metrics", "nope"];
const NUMBERS: [i64; 6] = [53, 80, 443, 8080, 9000, 9090];
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

fn model() -> impl Strategy<Value = Model> {
    let pod = (select(&NAMESPACES[..]), labels(3), select(&["n1", "n2"][..]), any::<bool>(), container_ports());
    let pods = prop::collection::vec(pod, 1..7);
    let namespaces = (labels(3), labels(3));
    let policies = (0usize..5).prop_flat_map(|n| (0..n).map(policy).collect::<Vec<_>>());
    (pods, namespaces, policies).prop_map(|(pods, (l1, l2), policies)| Model {
        pods: pods
            .into_iter()
            .enumerate()
            .map(|(i, (ns, labels, node, dual, ports))| {
                let mut ips: Vec<IpAddr> = vec![format!("10.0.0.{}", i + 2).parse().unwrap()];
                if dual {
                    ips.push(format!("fd00::{}", i + 2).parse().unwrap());
                }
                Pod {
                    namespace: ns.into(),
                    name: format!("p{i}"),
                    labels,
                    ips,
                    node: node.into(),
                    ports,
                    host_iface: None,
                }
            })
            .collect(),
        // ns3 has no namespace object: only its implied name label.
        namespaces: vec![Namespace { name: "ns1".into(), labels: l1 }, Namespace { name: "ns2".into(), labels: l2 }],
        policies,
    })
}

fn addresses(model: &Model) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = model.pods.iter().flat_map(|p| p.ips.iter().copied()).collect();
    out.extend(OUTSIDE.iter().map(|s| s.parse::<IpAddr>().unwrap()));
    out
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

fn check_connection(
    model: &Model,
    r: &Resolved<'_>,
    rs: &HashMap<String, Ruleset>,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
) {
    let what = format!("{src} -> {dst} {proto}/{port}");
    let v = explain_ips(r, src, dst, port, proto);
    let hops = sim::cluster_run(model, rs, src, dst, proto, port);
    let sim_ok = hops.iter().all(|o| o.accepted);
    assert_eq!(v.allowed, sim_ok, "explain vs compiled rules, {what}: {v:?} {hops:?}");
    let o = common::oracle::evaluate(model, src, dst, proto, port);
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
        let node = &model.pods.iter().find(|p| p.ips.contains(&node_ip)).expect("a denied end is a pod").node;
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
        steps in prop::collection::vec((policy_set(), any::<bool>()), 1..5),
    ) {
        let opts = weft_policy::CompileOptions::default();
        let mut current = model.clone();
        let mut kernel: HashMap<String, common::apply::Table> =
            ["n1", "n2"].iter().map(|n| (n.to_string(), common::apply::Table::of(&weft_policy::compile(&current, n, &opts)))).collect();
        for (policies, drop_pod) in steps {
            let old = current.clone();
            current.policies = policies;
            if drop_pod && current.pods.len() > 1 {
                current.pods.pop();
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
            let pod_ips: Vec<IpAddr> = current.pods.iter().flat_map(|p| p.ips.iter().copied()).collect();
            for &src in &pod_ips {
                for &dst in &pod_ips {
                    if src != dst && src.is_ipv4() == dst.is_ipv4() {
                        for port in [80, 9090] {
                            check_connection(&current, &r, &incremental, src, dst, Protocol::Tcp, port);
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
        let pod_ips: BTreeSet<IpAddr> = model.pods.iter().flat_map(|p| p.ips.iter().copied()).collect();
        for &src in &addrs {
            for &dst in &addrs {
                if src == dst || src.is_ipv4() != dst.is_ipv4() || !(pod_ips.contains(&src) || pod_ips.contains(&dst)) {
                    continue;
                }
                for proto in Protocol::ALL {
                    for port in PROBE_PORTS {
                        check_connection(&model, &r, &rs, src, dst, proto, port);
                    }
                }
            }
        }
    }

    #[test]
    fn established_always_passes_and_unknown_pods_are_dropped(model in model()) {
        let rs = rulesets(&model);
        for pod in &model.pods {
            for &ip in &pod.ips {
                let other: IpAddr = if ip.is_ipv4() { "10.0.0.250".parse().unwrap() } else { "fd00::250".parse().unwrap() };
                let reply = Packet { ct: Some(CtState::Established), iif: "eth0".into(), oif: "wf000000".into(), src: other, dst: ip, proto: Protocol::Tcp, dport: 1 };
                prop_assert!(sim::run(&rs[&pod.node], &reply).accepted);
                // An address no pod of the model has, on a pod interface: a pod the agent has not compiled yet.
                let new_pod = Packet { ct: None, iif: "wf0000ff".into(), oif: "eth0".into(), src: other, dst: ip, proto: Protocol::Tcp, dport: 1 };
                let out = sim::run(&rs[&pod.node], &new_pod);
                prop_assert!(!out.accepted);
                prop_assert_eq!(out.counters, vec!["drop_unready".to_string()]);
                let to_new_pod = Packet { iif: "eth0".into(), oif: "wf0000ff".into(), src: ip, dst: other, ..new_pod };
                prop_assert!(!sim::run(&rs[&pod.node], &to_new_pod).accepted);
            }
        }
    }
}
