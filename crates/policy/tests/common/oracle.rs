//! A deliberately naive reading of the Kubernetes NetworkPolicy spec, straight from the manifest types and
//! written without the crate's evaluator or selector code, as an independent reference for `explain`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_policy::model::{
    LabelSelector, Model, NetworkPolicy, Operator, Pod, PolicyPeer, PolicyPort, PolicyType, PortRef, Protocol,
};

fn sel_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    for (k, v) in &sel.match_labels {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in &sel.match_expressions {
        let ok = match (e.operator, labels.get(&e.key)) {
            (Operator::In, Some(v)) => e.values.contains(v),
            (Operator::In, None) => false,
            (Operator::NotIn, Some(v)) => !e.values.contains(v),
            (Operator::NotIn, None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn ns_labels(model: &Model, ns: &str) -> BTreeMap<String, String> {
    let mut labels = model.namespaces.iter().find(|n| n.name == ns).map(|n| n.labels.clone()).unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), ns.into());
    labels
}

fn pod_of(model: &Model, ip: IpAddr) -> Option<&Pod> {
    model.pods.iter().find(|p| p.ips.contains(&ip))
}

fn types(p: &NetworkPolicy) -> (bool, bool) {
    let t = &p.spec.policy_types;
    if t.is_empty() {
        (true, !p.spec.egress.is_empty())
    } else {
        (t.contains(&PolicyType::Ingress), t.contains(&PolicyType::Egress))
    }
}

fn selects(p: &NetworkPolicy, pod: &Pod) -> bool {
    pod.namespace == p.namespace() && sel_matches(&p.spec.pod_selector, &pod.labels)
}

fn peer_ok(model: &Model, policy_ns: &str, peer: &PolicyPeer, ip: IpAddr) -> bool {
    if let Some(b) = &peer.ip_block {
        return b.cidr.trunc().contains(&ip) && !b.except.iter().any(|e| e.trunc().contains(&ip));
    }
    let Some(pod) = pod_of(model, ip) else { return false };
    let ns_ok = match &peer.namespace_selector {
        Some(ns_sel) => sel_matches(ns_sel, &ns_labels(model, &pod.namespace)),
        None => pod.namespace == policy_ns,
    };
    let pod_ok = peer.pod_selector.as_ref().is_none_or(|s| sel_matches(s, &pod.labels));
    ns_ok && pod_ok
}

fn port_ok(ports: &[PolicyPort], dst_pod: Option<&Pod>, proto: Protocol, port: u16) -> bool {
    ports.is_empty()
        || ports.iter().any(|pp| {
            pp.protocol.unwrap_or(Protocol::Tcp) == proto
                && match &pp.port {
                    None => true,
                    Some(PortRef::Number(n)) => {
                        let end = pp.end_port.unwrap_or(*n);
                        *n <= port as i64 && port as i64 <= end
                    }
                    Some(PortRef::Name(name)) => dst_pod.is_some_and(|d| {
                        d.ports.iter().any(|cp| &cp.name == name && cp.protocol == proto && cp.port == port)
                    }),
                }
        })
}

/// The cluster as network `net` alone sees it (`default` included): its namespaces' pods, namespace objects and
/// policies, everything else gone. A namespace's network is the first network listing it, as documented.
pub fn network_alone(model: &Model, net: &str) -> Model {
    let net_of = |ns: &str| {
        model.networks.iter().find(|n| n.namespaces.iter().any(|x| x == ns)).map_or("default", |n| n.name.as_str())
    };
    Model {
        pods: model.pods.iter().filter(|p| net_of(&p.namespace) == net).cloned().collect(),
        namespaces: model.namespaces.iter().filter(|n| net_of(&n.name) == net).cloned().collect(),
        policies: model.policies.iter().filter(|p| net_of(p.namespace()) == net).cloned().collect(),
        networks: vec![],
    }
}

/// (egress allowed, ingress allowed) and the (policy index in namespace/name order, rule) pairs allowing each.
pub struct Answer {
    pub egress: bool,
    pub ingress: bool,
    pub egress_by: Vec<(String, usize)>,
    pub ingress_by: Vec<(String, usize)>,
}

pub fn evaluate(model: &Model, src: IpAddr, dst: IpAddr, proto: Protocol, port: u16) -> Answer {
    let src_pod = pod_of(model, src);
    let dst_pod = pod_of(model, dst);
    let (mut eg_isolated, mut in_isolated) = (false, false);
    let (mut egress_by, mut ingress_by) = (Vec::new(), Vec::new());
    for p in &model.policies {
        let (ing, egr) = types(p);
        let key = format!("{}/{}", p.namespace(), p.metadata.name);
        if egr && src_pod.is_some_and(|s| selects(p, s)) {
            eg_isolated = true;
            for (i, r) in p.spec.egress.iter().enumerate() {
                let peers = r.to.is_empty() || r.to.iter().any(|peer| peer_ok(model, p.namespace(), peer, dst));
                if peers && port_ok(&r.ports, dst_pod, proto, port) {
                    egress_by.push((key.clone(), i));
                }
            }
        }
        if ing && dst_pod.is_some_and(|d| selects(p, d)) {
            in_isolated = true;
            for (i, r) in p.spec.ingress.iter().enumerate() {
                let peers = r.from.is_empty() || r.from.iter().any(|peer| peer_ok(model, p.namespace(), peer, src));
                if peers && port_ok(&r.ports, dst_pod, proto, port) {
                    ingress_by.push((key.clone(), i));
                }
            }
        }
    }
    Answer {
        egress: !eg_isolated || !egress_by.is_empty(),
        ingress: !in_isolated || !ingress_by.is_empty(),
        egress_by,
        ingress_by,
    }
}
