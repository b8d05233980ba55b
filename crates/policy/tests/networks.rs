//! Tenant networks (issue 11): two networks with the same addresses beside the default network. A policy's
//! selections, peers and named ports stay inside its namespace's network; this node's pods are matched by `link
//! group . address`; `explain` names the network and refuses questions across networks.

mod common;

use common::{ip, ns, pod, policies, with_ports};
use weft_policy::eval::Resolved;
use weft_policy::model::{Model, Network, Protocol::*};
use weft_policy::nft::Element;
use weft_policy::{compile, explain, explain_endpoints, explain_in, CompileOptions, Endpoint, ExplainError};

const BLUE: u32 = 0x5700_0064;
const RED: u32 = 0x5700_00c8;

/// Namespaces `a` (blue), `b` (red) and `d` (default); pod `web` and `db` in each, with the same addresses in
/// blue and red, all on node n1, plus a remote blue pod. The db pods name port `http`: 8080 in a, 9090 in b.
fn model(yaml: &str) -> Model {
    let mut pods = Vec::new();
    for (n, http) in [("a", 8080), ("b", 9090), ("d", 8080)] {
        pods.push(pod(n, "web", "n1", &["10.0.0.2"], &[("app", "web")]));
        pods.push(with_ports(pod(n, "db", "n1", &["10.0.0.3"], &[("app", "db")]), &[("http", http, Tcp)]));
    }
    // The default network's pods need their own addresses only among themselves.
    pods[4].ips = vec![ip("10.9.0.2")];
    pods[5].ips = vec![ip("10.9.0.3")];
    pods.push(pod("a", "far", "n2", &["10.0.1.2"], &[("app", "web")]));
    Model {
        pods,
        namespaces: vec![ns("a", &[("team", "t")]), ns("b", &[("team", "t")]), ns("d", &[("team", "t")])],
        policies: if yaml.is_empty() { vec![] } else { policies(yaml) },
        networks: vec![
            Network { name: "blue".into(), group: BLUE, namespaces: vec!["a".into()] },
            Network { name: "red".into(), group: RED, namespaces: vec!["b".into()] },
        ],
    }
}

const DB_FROM_TEAM: &str = r#"
    kind: NetworkPolicy
    metadata: {name: db, namespace: a}
    spec:
      podSelector: {matchLabels: {app: db}}
      ingress:
      - from: [{namespaceSelector: {matchLabels: {team: t}}, podSelector: {matchLabels: {app: web}}}]
        ports: [{port: http}]
"#;

fn pod_ep(ns: &str, name: &str) -> Endpoint {
    Endpoint::Pod { namespace: ns.into(), name: name.into() }
}

#[test]
fn a_policy_selects_and_names_only_pods_of_its_network() {
    let m = model(DB_FROM_TEAM);
    let r = Resolved::new(&m);
    let (blue, red) = (r.network_index("blue").unwrap(), r.network_index("red").unwrap());
    // Blue's db is isolated; red's db, same address, is not.
    let to_blue_db = explain_in(&r, blue, ip("10.0.0.2"), ip("10.0.0.3"), 8080, Tcp);
    assert!(to_blue_db.allowed && to_blue_db.network == "blue", "{to_blue_db:?}");
    let blue_9090 = explain_in(&r, blue, ip("10.0.0.2"), ip("10.0.0.3"), 9090, Tcp);
    assert!(!blue_9090.allowed, "the named port resolves on blue's db (8080), not red's (9090): {blue_9090:?}");
    let to_red_db = explain_in(&r, red, ip("10.0.0.9"), ip("10.0.0.3"), 80, Tcp);
    assert!(to_red_db.allowed, "the policy of namespace a never isolates red's pod: {to_red_db:?}");
    // The namespace selector matches b and d too (team=t), but only blue's pods are peers.
    let pe = r.selections.iter().find(|s| matches!(s.key, weft_policy::eval::SelectionKey::Across { .. })).unwrap();
    let names: Vec<String> = pe.pods.iter().map(|&i| format!("{}/{}", m.pods[i].namespace, m.pods[i].name)).collect();
    assert_eq!(names, ["a/web", "a/far"]);
    assert!(!explain_in(&r, blue, ip("10.9.0.2"), ip("10.0.0.3"), 8080, Tcp).allowed, "d/web's address is no peer");
}

#[test]
fn local_pods_are_group_and_address_and_rules_scope_by_group() {
    let m = model(DB_FROM_TEAM);
    let rs = compile(&m, "n1", &CompileOptions::default());
    let ready = &rs.set("ready_v4").unwrap().elements;
    for (g, a) in [(BLUE, "10.0.0.2"), (BLUE, "10.0.0.3"), (RED, "10.0.0.2"), (RED, "10.0.0.3"), (0, "10.9.0.2")] {
        assert!(ready.contains(&Element::GroupAddr(g, ip(a))), "ready holds {g:#x} . {a}");
    }
    assert_eq!(ready.len(), 6, "only this node's pods");
    let iso = &rs.set("iso_in_v4").unwrap().elements;
    assert_eq!(iso.iter().collect::<Vec<_>>(), [&Element::GroupAddr(BLUE, ip("10.0.0.3"))]);
    let text = rs.render();
    assert!(text.contains("type devgroup . ipv4_addr"), "{text}");
    assert!(text.contains("meta oifgroup . ip daddr != @iso_in_v4 accept"), "{text}");
    assert!(text.contains("meta iifgroup . ip saddr != @ready_v4"), "{text}");
    assert!(text.contains("oifname != \"wf*\" accept"), "ingress only for packets to a local pod: {text}");
    // Peer sets and named ports of a tenant network are its own.
    let np = rs.set("np_blue_tcp_http_v4").expect("blue's named port set");
    assert_eq!(np.elements.iter().collect::<Vec<_>>(), [&Element::AddrPort(ip("10.0.0.3"), 8080)]);
    assert!(text.contains("ip daddr . th dport @np_blue_tcp_http_v4"), "{text}");
    assert!(rs.set("np_tcp_http_v4").is_none(), "the default network's policies use no named port here");
}

/// A namespace moving to another network moves its pods' `group . address` elements; the policies of the
/// namespace get the new network's peer sets (their names carry the network), still in place.
#[test]
fn moving_a_namespace_to_another_network_is_an_update_in_place() {
    let policy = r#"
        kind: NetworkPolicy
        metadata: {name: db, namespace: a}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
    "#;
    let before = model(policy);
    let mut after = before.clone();
    after.networks[0].namespaces.clear();
    after.networks[1].namespaces.push("c".into());
    after.networks.push(Network { name: "green".into(), group: 0x5700_0001, namespaces: vec!["a".into()] });
    let opts = CompileOptions::default();
    let (old, new) = (compile(&before, "n1", &opts), compile(&after, "n1", &opts));
    let p = weft_policy::plan(&old, &new).expect("in place");
    let text = p.render();
    assert!(
        text.contains(&format!("add element inet weft-policy ready_v4 {{ {} . 10.0.0.2", 0x5700_0001u32)),
        "{text}"
    );
    assert!(text.contains(&format!("delete element inet weft-policy ready_v4 {{ {BLUE} . 10.0.0.2")), "{text}");
    // Dispatch rules do not change: only the policy's own chain (new peer set) and set elements.
    let flushed: Vec<&str> = text.lines().filter(|l| l.starts_with("flush chain")).collect();
    assert_eq!(flushed.len(), 1, "{text}");
    assert!(flushed[0].contains("in_p"), "{text}");
}

#[test]
fn explain_names_the_network_and_refuses_across_networks() {
    let m = model(DB_FROM_TEAM);
    let v = explain(&m, &pod_ep("a", "web"), &pod_ep("a", "db"), 8080, Tcp).unwrap();
    assert!(v.allowed && v.network == "blue");
    let v = explain(&m, &pod_ep("d", "web"), &pod_ep("d", "db"), 80, Tcp).unwrap();
    assert_eq!(v.network, "default");
    let e = explain(&m, &pod_ep("b", "web"), &pod_ep("a", "db"), 8080, Tcp).unwrap_err();
    assert!(
        matches!(&e, ExplainError::DifferentNetworks { from_net, to_net, .. } if from_net == "red" && to_net == "blue")
    );
    assert!(e.to_string().contains("different networks: never connected"), "{e}");
    // A bare address is read in the other end's network: 10.0.0.2 is blue's web here, not red's.
    let v = explain(&m, &Endpoint::Ip(ip("10.0.0.2")), &pod_ep("a", "db"), 8080, Tcp).unwrap();
    assert!(v.allowed && v.network == "blue", "{v:?}");
    let v = explain(&m, &Endpoint::Ip(ip("10.0.0.2")), &pod_ep("b", "db"), 8080, Tcp).unwrap();
    assert_eq!(v.network, "red");
    // Or in the network asked for; a pod of another network is then refused.
    let e = explain_endpoints(&m, Some("red"), &pod_ep("a", "web"), &Endpoint::Ip(ip("10.0.0.3")), 1, Tcp);
    assert!(matches!(e, Err(ExplainError::DifferentNetworks { .. })), "{e:?}");
    let e = explain_endpoints(&m, Some("nope"), &pod_ep("a", "web"), &pod_ep("a", "db"), 1, Tcp);
    assert!(matches!(e, Err(ExplainError::UnknownNetwork(_))));
}

#[test]
fn networks_that_would_blur_the_scope_are_ignored() {
    let mut m = model("");
    m.networks.push(Network { name: "zero".into(), group: 0, namespaces: vec!["d".into()] });
    m.networks.push(Network { name: "again".into(), group: BLUE, namespaces: vec!["d".into()] });
    m.networks.push(Network { name: "Bad Name".into(), group: 7, namespaces: vec!["d".into()] });
    m.networks.push(Network { name: "default".into(), group: 8, namespaces: vec!["d".into()] });
    m.networks.push(Network { name: "late".into(), group: 9, namespaces: vec!["a".into()] });
    let r = Resolved::new(&m);
    let names: Vec<&str> = r.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["default", "blue", "red", "late"]);
    let d = m.pods.iter().position(|p| p.namespace == "d").unwrap();
    let a = m.pods.iter().position(|p| p.namespace == "a").unwrap();
    assert_eq!(r.pod_network[d], 0, "d stays on the default network");
    assert_eq!(r.networks[r.pod_network[a]].name, "blue", "the first network listing a namespace keeps it");
    compile(&m, "n1", &CompileOptions::default());
}
