//! Manifest parsing and validation.

use weft_policy::model::{PolicyType, PortRef, Protocol};
use weft_policy::{parse_policies_json, parse_policies_yaml, PolicyError, Problem};

const MULTI: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: team, operator: In, values: [a, b]}
      podSelector: {}
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.5.0/24]}
    ports:
    - port: 80
    - protocol: UDP
      port: 5000
      endPort: 5010
    - port: http
      protocol: SCTP
---
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: no-ns
spec:
  podSelector: {}
  egress:
  - {}
"#;

#[test]
fn multi_document_yaml_with_all_peer_and_port_forms() {
    let ps = parse_policies_yaml(MULTI).unwrap();
    assert_eq!(ps.len(), 2, "empty documents are skipped");
    let web = &ps[0];
    assert_eq!(web.namespace(), "shop");
    let rule = &web.spec.ingress[0];
    assert!(rule.from[0].namespace_selector.is_some() && rule.from[0].pod_selector.is_some());
    assert_eq!(rule.from[1].ip_block.as_ref().unwrap().except.len(), 1);
    assert_eq!(rule.ports[0].protocol(), Protocol::Tcp, "protocol defaults to TCP");
    assert_eq!(rule.ports[1].port, Some(PortRef::Number(5000)));
    assert_eq!(rule.ports[1].end_port, Some(5010));
    assert_eq!(rule.ports[2].port, Some(PortRef::Name("http".into())));
    assert_eq!(rule.ports[2].protocol(), Protocol::Sctp);
    assert_eq!(ps[1].namespace(), "default", "missing namespace means default");
}

#[test]
fn policy_types_default_like_the_api_server() {
    let ps = parse_policies_yaml(MULTI).unwrap();
    assert!(ps[0].affects_ingress() && !ps[0].affects_egress(), "no policyTypes, no egress rules: ingress only");
    assert!(ps[1].affects_ingress() && ps[1].affects_egress(), "egress rules present: both");
    let explicit = parse_policies_yaml(
        "kind: NetworkPolicy\nmetadata: {name: e}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n",
    )
    .unwrap();
    assert_eq!(explicit[0].spec.policy_types, [PolicyType::Egress]);
    assert!(!explicit[0].affects_ingress() && explicit[0].affects_egress(), "explicit types win over rules");
    let empty_egress = parse_policies_yaml("kind: NetworkPolicy\nmetadata: {name: e}\nspec:\n  egress: []\n").unwrap();
    assert!(!empty_egress[0].affects_egress(), "`egress: []` is no egress section, as upstream");
}

#[test]
fn json_object_array_and_list() {
    let one = r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"a","namespace":"x"},
        "spec":{"podSelector":{},"ingress":[{"ports":[{"port":"dns","protocol":"UDP"}]}]}}"#;
    let ps = parse_policies_json(one).unwrap();
    assert_eq!(ps[0].spec.ingress[0].ports[0].port, Some(PortRef::Name("dns".into())));
    assert_eq!(parse_policies_json(&format!("[{one},{one}]")).unwrap().len(), 2);
    let list = format!(r#"{{"apiVersion":"v1","kind":"List","items":[{one}]}}"#);
    assert_eq!(parse_policies_json(&list).unwrap().len(), 1);
    assert_eq!(parse_policies_yaml(&list).unwrap().len(), 1, "JSON is YAML too");
    let back = serde_json::to_string(&ps[0]).unwrap();
    assert_eq!(parse_policies_json(&back).unwrap(), ps, "serialisation round-trips");
}

#[test]
fn other_kinds_are_rejected_with_their_kind() {
    let text = format!("{MULTI}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n");
    let err = parse_policies_yaml(&text).unwrap_err();
    assert!(matches!(&err, PolicyError::WrongKind { doc: 4, kind, .. } if kind == "Deployment"), "{err}");
    assert!(err.to_string().contains("not a networking.k8s.io/v1 NetworkPolicy"));
    let v1beta = "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: x}\n";
    assert!(matches!(parse_policies_yaml(v1beta), Err(PolicyError::WrongKind { .. })));
}

fn problem(spec: &str) -> Problem {
    let text = format!("kind: NetworkPolicy\nmetadata: {{name: p, namespace: n}}\nspec:\n{spec}");
    match parse_policies_yaml(&text) {
        Err(PolicyError::Invalid { policy, problem }) => {
            assert_eq!(policy, "n/p");
            problem
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn port_validation() {
    let p = problem("  ingress:\n  - ports: [{port: 70000}]\n");
    assert!(matches!(p, Problem::PortOutOfRange { value: 70000, .. }), "{p}");
    let p = problem("  ingress:\n  - ports: [{port: http, endPort: 90}]\n");
    assert!(matches!(p, Problem::EndPortWithoutNumericPort { .. }), "{p}");
    let p = problem("  ingress:\n  - ports: [{endPort: 90}]\n");
    assert!(matches!(p, Problem::EndPortWithoutNumericPort { .. }), "{p}");
    let p = problem("  egress:\n  - ports: [{port: 100, endPort: 90}]\n");
    assert!(matches!(p, Problem::EndPortBelowPort { port: 100, end_port: 90, .. }), "{p}");
    assert!(p.to_string().contains("spec.egress[0].ports[0]"), "{p}");
    let p = problem("  ingress:\n  - ports: [{port: Not_A_Name}]\n");
    assert!(matches!(p, Problem::BadPortName { .. }), "{p}");
    let p = problem("  ingress:\n  - ports: [{port: \"8080\"}]\n");
    assert!(matches!(p, Problem::BadPortName { .. }), "a numeric string is not a port name: {p}");
}

#[test]
fn unknown_protocol_and_operator_name_the_accepted_values() {
    let text = "kind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - ports: [{protocol: ICMP, port: 1}]\n";
    let err = parse_policies_yaml(text).unwrap_err().to_string();
    assert!(err.contains("ICMP") && err.contains("TCP") && err.contains("SCTP"), "{err}");
    let text = "kind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector:\n    matchExpressions: [{key: a, operator: Equals, values: [x]}]\n";
    let err = parse_policies_yaml(text).unwrap_err().to_string();
    assert!(err.contains("Equals") && err.contains("NotIn") && err.contains("DoesNotExist"), "{err}");
}

#[test]
fn operator_value_rules() {
    let p = problem("  podSelector:\n    matchExpressions: [{key: a, operator: In, values: []}]\n");
    assert!(matches!(p, Problem::BadRequirement { .. }), "{p}");
    let p = problem("  podSelector:\n    matchExpressions: [{key: a, operator: Exists, values: [x]}]\n");
    assert!(matches!(p, Problem::BadRequirement { .. }), "{p}");
}

#[test]
fn cidr_and_peer_validation() {
    let text =
        "kind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]\n";
    let err = parse_policies_yaml(text).unwrap_err();
    assert!(matches!(err, PolicyError::Yaml { doc: 1, .. }), "{err}");
    assert!(err.to_string().contains("invalid CIDR \"10.0.0.0/33\""), "{err}");
    let p = problem("  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]\n");
    assert!(matches!(p, Problem::ExceptOutsideCidr { .. }), "{p}");
    let p = problem("  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16]}}]\n");
    assert!(matches!(p, Problem::ExceptOutsideCidr { .. }), "except must be strictly smaller: {p}");
    let p = problem("  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/16}, podSelector: {}}]\n");
    assert!(matches!(p, Problem::IpBlockWithSelector { .. }), "{p}");
    let p = problem("  ingress:\n  - from: [{}]\n");
    assert!(matches!(p, Problem::EmptyPeer { .. }), "{p}");
    let ok =
        "kind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.7/16}}]\n";
    assert!(parse_policies_yaml(ok).is_ok(), "host bits in a cidr are accepted, as Kubernetes does");
}

#[test]
fn missing_name_is_rejected() {
    let err = parse_policies_yaml("kind: NetworkPolicy\nspec: {}\n").unwrap_err();
    assert!(matches!(err, PolicyError::Invalid { problem: Problem::MissingName, .. }), "{err}");
}

/// Names, namespaces and labels the API server would reject (issue 8, item 9), from YAML and from JSON.
#[test]
fn names_and_labels_the_api_server_rejects_are_rejected() {
    let long = "a".repeat(300);
    for (name, ns) in [("a/b", "n"), ("Bad Name!", "n"), (long.as_str(), "n"), ("ok", "../../etc"), ("ok", "Caps")] {
        let text = format!("kind: NetworkPolicy\nmetadata: {{name: {name:?}, namespace: {ns:?}}}\nspec: {{}}\n");
        let err = parse_policies_yaml(&text).unwrap_err();
        let PolicyError::Invalid { problem: Problem::BadName { at, source }, .. } = &err else {
            panic!("{name:?} in {ns:?}: expected a name error, got {err:?}");
        };
        assert!(at == "metadata.name" || at == "metadata.namespace", "{at}");
        assert!(err.to_string().contains("is invalid: a lowercase RFC 1123"), "{err}");
        assert!(source.value.len() <= 80, "hostile values are cut in messages");
        let json = format!(r#"{{"kind": "NetworkPolicy", "metadata": {{"name": {name:?}, "namespace": {ns:?}}}}}"#);
        assert!(parse_policies_json(&json).is_err(), "{json}");
    }
    let p = problem("  podSelector: {matchLabels: {'bad key': x}}\n");
    assert!(matches!(&p, Problem::BadName { at, .. } if at == "spec.podSelector.matchLabels"), "{p}");
    let p = problem("  podSelector: {matchLabels: {app: 'has space'}}\n");
    assert!(matches!(&p, Problem::BadName { source, .. } if source.what == "label value"), "{p}");
    let p =
        problem("  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: 'a b', operator: Exists}]}}]}]\n");
    assert!(matches!(&p, Problem::BadName { at, .. } if at.ends_with("namespaceSelector.matchExpressions[0]")), "{p}");
    let p = problem("  podSelector: {matchExpressions: [{key: app, operator: In, values: ['x y']}]}\n");
    assert!(matches!(&p, Problem::BadName { .. }), "{p}");
    let ok = "kind: NetworkPolicy\nmetadata: {name: a.b-c, namespace: n-1}\nspec:\n  podSelector: {matchLabels: {'example.com/App_1': 'V.1', 'k': ''}}\n";
    assert!(parse_policies_yaml(ok).is_ok(), "prefixed keys, dots, capitals in values and empty values are valid");
}
