//! Kubernetes semantics, scenario by scenario. Every connection check goes through `common::allowed`, which
//! asserts that `explain`, the packet simulator over the compiled per-node rulesets and the naive spec oracle
//! agree, then the test asserts the expected answer.

mod common;

use common::{allowed, ns, pod, policies, with_ports};
use weft_policy::model::{Model, Protocol::*};
use weft_policy::{explain, DirectionVerdict, Endpoint, ExplainError};

/// shop/web-a (n1, http=8080), shop/web-b (n2, http=9090), shop/db (n1), ops/mon (n2, namespace team=ops),
/// dev/tool (n1), plus a dual-stack pod.
fn base() -> Model {
    Model {
        pods: vec![
            with_ports(pod("shop", "web-a", "n1", &["10.1.0.2"], &[("app", "web")]), &[("http", 8080, Tcp)]),
            with_ports(pod("shop", "web-b", "n2", &["10.2.0.2"], &[("app", "web")]), &[("http", 9090, Tcp)]),
            with_ports(pod("shop", "db", "n1", &["10.1.0.3", "fd00::3"], &[("app", "db")]), &[("pg", 5432, Tcp)]),
            pod("ops", "mon", "n2", &["10.2.0.9", "fd00::9"], &[("app", "prom")]),
            pod("dev", "tool", "n1", &["10.1.0.7"], &[("app", "prom")]),
        ],
        namespaces: vec![ns("ops", &[("team", "ops")]), ns("shop", &[("team", "shop")]), ns("dev", &[])],
        policies: vec![],
        networks: vec![],
    }
}

fn with(yaml: &str) -> Model {
    let mut m = base();
    m.policies = policies(yaml);
    m
}

#[test]
fn unselected_pods_are_not_isolated() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
        "#,
    );
    assert!(!allowed(&m, "10.1.0.2", "10.1.0.3", Tcp, 5432), "db is isolated with no rules: deny all ingress");
    assert!(allowed(&m, "10.1.0.3", "10.1.0.2", Tcp, 80), "web is selected by nothing");
    assert!(allowed(&m, "10.1.0.3", "8.8.8.8", Udp, 53), "db's egress is not isolated by an ingress policy");
    assert!(allowed(&m, "192.0.2.1", "10.2.0.9", Tcp, 1), "outside → unselected pod");
}

#[test]
fn ingress_and_egress_are_independent_and_union_of_policies() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: a, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          policyTypes: [Egress]
          ingress: [{}]
        ---
        kind: NetworkPolicy
        metadata: {name: b, namespace: shop}
        spec:
          podSelector: {}
          ingress:
          - ports: [{port: 80}]
        ---
        kind: NetworkPolicy
        metadata: {name: c, namespace: shop}
        spec:
          podSelector: {}
          ingress:
          - ports: [{port: 443}]
        "#,
    );
    assert!(!allowed(&m, "10.1.0.2", "10.1.0.3", Tcp, 5432), "web's egress is isolated with no rules");
    assert!(!allowed(&m, "10.2.0.9", "10.1.0.2", Tcp, 22));
    assert!(allowed(&m, "10.2.0.9", "10.1.0.2", Tcp, 80), "policy b");
    assert!(allowed(&m, "10.2.0.9", "10.1.0.2", Tcp, 443), "policy c: the union of both");
    assert!(allowed(&m, "10.1.0.3", "8.8.8.8", Tcp, 443), "db egress not isolated");
}

#[test]
fn pod_namespace_and_combined_selectors() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - from: [{podSelector: {matchLabels: {app: web}}}]
          - from: [{namespaceSelector: {matchLabels: {team: ops}}, podSelector: {matchLabels: {app: prom}}}]
        "#,
    );
    assert!(allowed(&m, "10.1.0.2", "10.1.0.3", Tcp, 5432), "web in the policy's namespace");
    assert!(allowed(&m, "10.2.0.2", "10.1.0.3", Tcp, 5432), "cross-node web");
    assert!(allowed(&m, "10.2.0.9", "10.1.0.3", Tcp, 5432), "prom in a team=ops namespace");
    assert!(!allowed(&m, "10.1.0.7", "10.1.0.3", Tcp, 5432), "prom, but dev is not team=ops");
    assert!(allowed(&m, "fd00::9", "fd00::3", Tcp, 5432), "IPv6 addresses of the same pods");
    assert!(!allowed(&m, "192.0.2.1", "10.1.0.3", Tcp, 5432), "outside the cluster");
}

#[test]
fn namespace_name_label_is_implied_and_empty_selectors_mean_all() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}}]
          - from: [{podSelector: {}}]
            ports: [{port: 1}]
          - from: [{namespaceSelector: {}}]
            ports: [{port: 2}]
        "#,
    );
    assert!(allowed(&m, "10.1.0.7", "10.1.0.3", Udp, 9), "dev by its implied name label");
    assert!(!allowed(&m, "10.2.0.9", "10.1.0.3", Tcp, 1), "podSelector {{}} is the policy's namespace only");
    assert!(allowed(&m, "10.1.0.2", "10.1.0.3", Tcp, 1));
    assert!(allowed(&m, "10.2.0.9", "10.1.0.3", Tcp, 2), "namespaceSelector {{}} is every namespace");
    assert!(!allowed(&m, "192.0.2.1", "10.1.0.3", Tcp, 2), "...but only pods");
}

#[test]
fn ip_block_with_except_and_pod_addresses() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.2.0.0/16]}}, {ipBlock: {cidr: 'fd00::/64'}}]
        "#,
    );
    assert!(allowed(&m, "10.9.9.9", "10.1.0.3", Tcp, 1), "outside address in the block");
    assert!(allowed(&m, "10.1.0.2", "10.1.0.3", Tcp, 1), "pod addresses match ipBlock too (Calico-like)");
    assert!(!allowed(&m, "10.2.0.9", "10.1.0.3", Tcp, 1), "excepted");
    assert!(!allowed(&m, "11.0.0.1", "10.1.0.3", Tcp, 1), "outside the block");
    assert!(allowed(&m, "fd00::9", "fd00::3", Sctp, 7), "IPv6 block");
}

#[test]
fn ports_protocols_ranges() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - ports: [{port: 5432}, {protocol: UDP, port: 9000, endPort: 9010}, {protocol: SCTP}]
        "#,
    );
    assert!(allowed(&m, "10.1.0.2", "10.1.0.3", Tcp, 5432));
    assert!(!allowed(&m, "10.1.0.2", "10.1.0.3", Udp, 5432), "protocol defaults to TCP only");
    assert!(allowed(&m, "10.1.0.2", "10.1.0.3", Udp, 9000));
    assert!(allowed(&m, "10.1.0.2", "10.1.0.3", Udp, 9010), "endPort is inclusive");
    assert!(!allowed(&m, "10.1.0.2", "10.1.0.3", Udp, 9011));
    assert!(!allowed(&m, "10.1.0.2", "10.1.0.3", Tcp, 9005), "range is UDP only");
    assert!(allowed(&m, "10.1.0.2", "10.1.0.3", Sctp, 1), "protocol without port: all its ports");
    assert!(allowed(&m, "192.0.2.1", "10.1.0.3", Sctp, 65535), "no from: everyone, outside included");
}

#[test]
fn named_ports_resolve_on_each_destination_pod() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: web, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress:
          - ports: [{port: http}]
        "#,
    );
    assert!(allowed(&m, "10.2.0.9", "10.1.0.2", Tcp, 8080), "web-a declares http=8080");
    assert!(!allowed(&m, "10.2.0.9", "10.1.0.2", Tcp, 9090), "9090 is web-b's http, not web-a's");
    assert!(allowed(&m, "10.2.0.9", "10.2.0.2", Tcp, 9090));
    assert!(!allowed(&m, "10.2.0.9", "10.2.0.2", Udp, 9090), "named port protocol must match");
}

#[test]
fn egress_named_ports_match_only_pods_declaring_them() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: out, namespace: dev}
        spec:
          podSelector: {}
          egress:
          - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
            ports: [{port: http}]
        "#,
    );
    assert!(allowed(&m, "10.1.0.7", "10.1.0.2", Tcp, 8080), "same node, web-a's http");
    assert!(allowed(&m, "10.1.0.7", "10.2.0.2", Tcp, 9090), "cross node, web-b's http");
    assert!(!allowed(&m, "10.1.0.7", "10.2.0.2", Tcp, 8080));
    assert!(!allowed(&m, "10.1.0.7", "8.8.8.8", Tcp, 8080), "an outside address declares no named port");
}

#[test]
fn egress_then_ingress_both_must_allow() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: out, namespace: dev}
        spec:
          podSelector: {}
          egress:
          - to: [{namespaceSelector: {}}]
        ---
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - from: [{podSelector: {}}]
        "#,
    );
    assert!(!allowed(&m, "10.1.0.7", "10.1.0.3", Tcp, 5432), "egress allows, db's ingress does not (same node)");
    assert!(allowed(&m, "10.1.0.7", "10.2.0.9", Tcp, 1), "egress allows, mon not isolated (cross node)");
    assert!(!allowed(&m, "10.1.0.7", "192.0.2.1", Tcp, 443), "egress only to pods");
    assert!(allowed(&m, "10.1.0.2", "10.1.0.3", Tcp, 5432));
}

#[test]
fn explain_names_policy_rule_peer_and_port() {
    let m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - from: [{ipBlock: {cidr: 192.0.2.0/24}}]
          - from: [{podSelector: {matchLabels: {app: x}}}, {podSelector: {matchLabels: {app: web}}}]
            ports: [{port: 1}, {port: pg}]
        "#,
    );
    let web = Endpoint::Pod { namespace: "shop".into(), name: "web-a".into() };
    let db = Endpoint::Pod { namespace: "shop".into(), name: "db".into() };
    let v = explain(&m, &web, &db, 5432, Tcp).unwrap();
    assert!(v.allowed);
    assert_eq!(v.egress, DirectionVerdict::NotIsolated);
    match &v.ingress {
        DirectionVerdict::Allowed { by, rule, peer, port } => {
            assert_eq!(by.to_string(), "shop/db");
            assert_eq!((*rule, *peer, *port), (1, Some(1), Some(1)));
        }
        other => panic!("{other:?}"),
    }
    let v = explain(&m, &web, &db, 22, Tcp).unwrap();
    assert!(!v.allowed);
    match &v.ingress {
        DirectionVerdict::Denied { isolating_policies } => assert_eq!(isolating_policies[0].to_string(), "shop/db"),
        other => panic!("{other:?}"),
    }
    let v = explain(&m, &Endpoint::Ip("192.0.2.5".parse().unwrap()), &db, 9, Udp).unwrap();
    assert!(matches!(v.ingress, DirectionVerdict::Allowed { rule: 0, peer: Some(0), port: None, .. }), "{v:?}");
    let mon = Endpoint::Pod { namespace: "ops".into(), name: "mon".into() };
    let v6 = explain(&m, &mon, &Endpoint::Ip("fd00::3".parse().unwrap()), 1, Tcp).unwrap();
    assert_eq!(v6.src, "fd00::9".parse::<std::net::IpAddr>().unwrap(), "the pod address of the peer's family");
    let missing = Endpoint::Pod { namespace: "shop".into(), name: "nope".into() };
    assert!(matches!(explain(&m, &missing, &db, 1, Tcp), Err(ExplainError::UnknownPod { .. })));
    let web_v6_only = Endpoint::Ip("fd00::1".parse().unwrap());
    assert_eq!(explain(&m, &web, &web_v6_only, 1, Tcp), Err(ExplainError::NoCommonFamily));
}

#[test]
fn invalid_entries_that_skip_validation_fail_closed() {
    // Built directly (as a corrupt store entry would arrive), bypassing parse-time validation.
    let mut m = with(
        r#"
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - ports: [{port: 5432}]
          - from: [{podSelector: {}}]
        "#,
    );
    let rules = &mut m.policies[0].spec.ingress;
    rules[0].ports[0].port = Some(weft_policy::model::PortRef::Number(0));
    rules[1].from[0].ip_block =
        Some(weft_policy::model::IpBlock { cidr: "0.0.0.0/0".parse().unwrap(), except: vec![] });
    assert!(m.policies[0].validate().is_err());
    assert!(
        !common::allowed_outside_spec(&m, "10.1.0.2", "10.1.0.3", Tcp, 5432),
        "port 0 matches nothing, the pod stays isolated"
    );
    assert!(!common::allowed_outside_spec(&m, "10.1.0.2", "10.1.0.3", Tcp, 0));
    assert!(
        !common::allowed_outside_spec(&m, "10.1.0.2", "10.1.0.3", Tcp, 80),
        "a peer mixing ipBlock and selectors matches nothing"
    );
}

#[test]
fn store_json_round_trips() {
    let m = with("kind: NetworkPolicy\nmetadata: {name: db, namespace: shop}\nspec:\n  podSelector: {}\n");
    let json = serde_json::to_string(&m).unwrap();
    let back: Model = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    let pod: weft_policy::model::Pod = serde_json::from_str(
        r#"{"namespace":"a","name":"b","ips":["10.0.0.1"],"node":"n","ports":[{"name":"http","port":80}]}"#,
    )
    .unwrap();
    assert_eq!(pod.ports[0].protocol, Tcp, "container port protocol defaults to TCP");
}
