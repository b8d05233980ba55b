//! Shared test helpers: model builders, the nft packet simulator (`sim`) and a naive spec oracle (`oracle`).
#![allow(dead_code)]

pub mod apply;
pub mod oracle;
pub mod sim;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use weft_policy::model::{Model, NamedPort, Namespace, NetworkPolicy, Pod, Protocol};
use weft_policy::{compile, parse_policies_yaml, CompileOptions, Ruleset};

pub fn pod(ns: &str, name: &str, node: &str, ips: &[&str], labels: &[(&str, &str)]) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        node: node.into(),
        ports: Vec::new(),
        host_iface: None,
    }
}

pub fn with_ports(mut p: Pod, ports: &[(&str, u16, Protocol)]) -> Pod {
    p.ports = ports
        .iter()
        .map(|(n, port, protocol)| NamedPort { name: n.to_string(), port: *port, protocol: *protocol })
        .collect();
    p
}

pub fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace { name: name.into(), labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
}

/// Parses test manifests written as indented raw strings (common indentation is removed first).
pub fn policies(yaml: &str) -> Vec<NetworkPolicy> {
    let indent = yaml.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min();
    let text: String = yaml.lines().map(|l| format!("{}\n", l.get(indent.unwrap_or(0)..).unwrap_or(""))).collect();
    parse_policies_yaml(&text).expect("test policy parses")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn nodes(model: &Model) -> BTreeSet<String> {
    model.pods.iter().map(|p| p.node.clone()).collect()
}

pub fn rulesets(model: &Model) -> HashMap<String, Ruleset> {
    nodes(model).into_iter().map(|n| (n.clone(), compile(model, &n, &CompileOptions::default()))).collect()
}

/// Allowed by the compiled rulesets of every node the connection crosses.
pub fn sim_allows(model: &Model, src: &str, dst: &str, proto: Protocol, port: u16) -> bool {
    sim::cluster_allows(model, &rulesets(model), ip(src), ip(dst), proto, port)
}

/// Every check the tests make on one connection: explain, the simulator over compiled rules, and the oracle
/// agree; returns the common answer.
pub fn allowed(model: &Model, src: &str, dst: &str, proto: Protocol, port: u16) -> bool {
    let r = weft_policy::eval::Resolved::new(model);
    let v = weft_policy::explain_ips(&r, ip(src), ip(dst), port, proto);
    let sim = sim_allows(model, src, dst, proto, port);
    let o = oracle::evaluate(model, ip(src), ip(dst), proto, port);
    assert_eq!(v.allowed, sim, "explain vs simulator for {src} -> {dst} {proto}/{port}: {v:?}");
    assert_eq!(v.allowed, o.egress && o.ingress, "explain vs oracle for {src} -> {dst} {proto}/{port}: {v:?}");
    v.allowed
}

/// `explain` and the simulator agree (for models outside the spec, where the oracle has no answer).
pub fn allowed_outside_spec(model: &Model, src: &str, dst: &str, proto: Protocol, port: u16) -> bool {
    let r = weft_policy::eval::Resolved::new(model);
    let v = weft_policy::explain_ips(&r, ip(src), ip(dst), port, proto);
    assert_eq!(v.allowed, sim_allows(model, src, dst, proto, port), "explain vs simulator: {v:?}");
    v.allowed
}
