//! The reference model: Kubernetes NetworkPolicy semantics, written from the API documentation, small enough to
//! check by eye. The truth-table tests compute every expected cell with it.
//!
//! Why its own model instead of weft-policy's `explain`: the tests must be able to disagree with weft. This file
//! shares no code with weft-policy: it reads the manifests as plain JSON values and decides with the rules of
//! the `networking.k8s.io/v1` reference, nothing else. Choices Kubernetes leaves open follow weft's documented
//! ones: ipBlock matches pod addresses too, and a pod always reaches itself (traffic that never leaves the pod).
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub type Labels = BTreeMap<String, String>;

/// Which of a pod's addresses a connection uses (ipBlock peers only match their own family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ip: Ipv4Addr,
    /// Set in dual-stack labs.
    pub ip6: Option<Ipv6Addr>,
    pub node: String,
    /// Container ports: (name, port, protocol).
    pub ports: Vec<(String, u16, String)>,
}

impl Pod {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn addr(&self, f: Family) -> Option<IpAddr> {
        match f {
            Family::V4 => Some(self.ip.into()),
            Family::V6 => self.ip6.map(IpAddr::from),
        }
    }
}

#[derive(Default, Debug)]
pub struct World {
    pub namespaces: BTreeMap<String, Labels>,
    /// `namespace/name` → manifest.
    pub policies: BTreeMap<String, Value>,
}

/// Multi-document YAML → JSON values (empty documents skipped).
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("scenario YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn policy_key(p: &Value) -> String {
    let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
    format!("{ns}/{}", p["metadata"]["name"].as_str().expect("policy has a name"))
}

impl World {
    /// `kubectl apply`: create or replace by namespace/name.
    pub fn apply(&mut self, yaml: &str) {
        for p in documents(yaml) {
            self.policies.insert(policy_key(&p), p);
        }
    }

    pub fn delete(&mut self, key: &str) {
        assert!(self.policies.remove(key).is_some(), "model has no policy {key}");
    }

    /// Would a connection from `src` to `dst` on `port`/`proto` ("TCP", "UDP") over family `f` be allowed?
    pub fn allowed(&self, src: &Pod, dst: &Pod, port: u16, proto: &str, f: Family) -> bool {
        if src.key() == dst.key() {
            return true;
        }
        let c = Conn { src, dst, port, proto, family: f };
        self.direction_allows(&c, "Egress") && self.direction_allows(&c, "Ingress")
    }

    /// One side of the connection: the source's egress or the destination's ingress. A pod no policy of this
    /// direction selects is not isolated; an isolated pod needs one rule of one selecting policy to allow it.
    fn direction_allows(&self, c: &Conn, dir: &str) -> bool {
        let (subject, peer) = if dir == "Ingress" { (c.dst, c.src) } else { (c.src, c.dst) };
        let mut isolated = false;
        for p in self.policies.values() {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
            if ns != subject.namespace || !selects(&p["spec"]["podSelector"], &subject.labels) {
                continue;
            }
            if !policy_types(p).iter().any(|t| t == dir) {
                continue;
            }
            isolated = true;
            let (rules, peers_field) = if dir == "Ingress" { ("ingress", "from") } else { ("egress", "to") };
            for rule in p["spec"][rules].as_array().into_iter().flatten() {
                let peers = rule[peers_field].as_array().filter(|a| !a.is_empty());
                let peer_ok = peers.is_none_or(|ps| ps.iter().any(|pe| self.peer_matches(pe, ns, peer, c.family)));
                let ports = rule["ports"].as_array().filter(|a| !a.is_empty());
                let port_ok = ports.is_none_or(|ps| ps.iter().any(|pp| port_matches(pp, c.dst, c.port, c.proto)));
                if peer_ok && port_ok {
                    return true;
                }
            }
        }
        !isolated
    }

    fn peer_matches(&self, peer: &Value, policy_ns: &str, pod: &Pod, f: Family) -> bool {
        if let Some(block) = peer.get("ipBlock") {
            let Some(ip) = pod.addr(f) else { return false };
            let cidr = block["cidr"].as_str().expect("cidr");
            let mut except = block["except"].as_array().into_iter().flatten().filter_map(Value::as_str);
            return in_cidr(ip, cidr) && !except.any(|e| in_cidr(ip, e));
        }
        let ns_ok = match peer.get("namespaceSelector") {
            // Without a namespace selector, pod selectors pick from the policy's own namespace.
            None => pod.namespace == policy_ns,
            Some(sel) => selects(sel, &self.namespace_labels(&pod.namespace)),
        };
        let pod_ok = peer.get("podSelector").is_none_or(|sel| selects(sel, &pod.labels));
        ns_ok && pod_ok
    }

    fn namespace_labels(&self, ns: &str) -> Labels {
        let mut l = self.namespaces.get(ns).cloned().unwrap_or_default();
        l.insert("kubernetes.io/metadata.name".into(), ns.into());
        l
    }
}

/// One connection attempt.
struct Conn<'a> {
    src: &'a Pod,
    dst: &'a Pod,
    port: u16,
    proto: &'a str,
    family: Family,
}

/// API-server defaulting: no policyTypes → Ingress, plus Egress when there are egress rules.
fn policy_types(p: &Value) -> Vec<String> {
    match p["spec"]["policyTypes"].as_array().filter(|a| !a.is_empty()) {
        Some(types) => types.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        None => {
            let mut t = vec!["Ingress".to_string()];
            if p["spec"]["egress"].as_array().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".into());
            }
            t
        }
    }
}

/// A label selector: matchLabels and matchExpressions AND-ed; empty (or `{}`) selects everything.
pub fn selects(sel: &Value, labels: &Labels) -> bool {
    let labels_ok = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let exprs_ok = sel["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        let key = e["key"].as_str().expect("key");
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let have = labels.get(key).map(String::as_str);
        match e["operator"].as_str().expect("operator") {
            "In" => have.is_some_and(|v| values.contains(&v)),
            "NotIn" => have.is_none_or(|v| !values.contains(&v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            op => panic!("unknown operator {op}"),
        }
    });
    labels_ok && exprs_ok
}

/// A `ports` entry: protocol (default TCP) and, when given, a number, a range up to endPort, or a named port of
/// the destination pod (resolved per destination, with the entry's protocol).
fn port_matches(pp: &Value, dst: &Pod, port: u16, proto: &str) -> bool {
    let want = pp["protocol"].as_str().unwrap_or("TCP");
    if want != proto {
        return false;
    }
    match &pp["port"] {
        Value::Null => true,
        Value::Number(n) => {
            let lo = n.as_u64().expect("port number");
            let hi = pp["endPort"].as_u64().unwrap_or(lo);
            (lo..=hi).contains(&u64::from(port))
        }
        Value::String(name) => dst.ports.iter().any(|(n, p, pr)| n == name && *p == port && pr == proto),
        other => panic!("bad port {other}"),
    }
}

/// CIDR membership (host bits in the CIDR ignored, as Kubernetes does); families never match each other.
pub fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').expect("CIDR has a /");
    let net: IpAddr = net.parse().expect("CIDR address");
    let len: u32 = len.parse().expect("prefix length");
    let (a, b, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = bits - len;
    len == 0 || (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Family::V4;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ip: [u8; 4]) -> Pod {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let ports = vec![("http".into(), 80, "TCP".into())];
        Pod { namespace: ns.into(), name: name.into(), labels, ip: ip.into(), ip6: None, node: "n".into(), ports }
    }

    #[test]
    fn reference_model_follows_the_kubernetes_examples() {
        let mut w = World::default();
        w.namespaces.insert("x".into(), [("ns".to_string(), "x".to_string())].into());
        w.namespaces.insert("y".into(), [("ns".to_string(), "y".to_string())].into());
        let xa = pod("x", "a", &[("pod", "a")], [10, 0, 0, 1]);
        let xb = pod("x", "b", &[("pod", "b")], [10, 0, 0, 2]);
        let ya = pod("y", "a", &[("pod", "a")], [10, 0, 1, 1]);
        assert!(w.allowed(&ya, &xa, 80, "TCP", V4), "no policy: open");
        w.apply("metadata: {name: p, namespace: x}\nspec: {podSelector: {matchLabels: {pod: a}}}");
        assert!(!w.allowed(&ya, &xa, 80, "TCP", V4) && w.allowed(&ya, &xb, 80, "TCP", V4), "isolates only pod a");
        assert!(w.allowed(&xa, &xa, 80, "TCP", V4), "self");
        w.apply(concat!(
            "metadata: {name: q, namespace: x}\n",
            "spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, ",
            "podSelector: {matchExpressions: [{key: pod, operator: In, values: [a]}]}}], ports: [{port: http}]}]}"
        ));
        assert!(
            w.allowed(&ya, &xa, 80, "TCP", V4)
                && !w.allowed(&ya, &xa, 80, "UDP", V4)
                && !w.allowed(&xb, &xa, 80, "TCP", V4)
        );
        w.apply("metadata: {name: e, namespace: y}\nspec: {podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.2/32]}}]}]}");
        assert!(w.allowed(&ya, &xa, 80, "TCP", V4) && !w.allowed(&ya, &xb, 80, "TCP", V4), "egress ipBlock except");
        w.delete("y/e");
        assert!(w.allowed(&ya, &xb, 80, "TCP", V4));
        // ipBlock matches its own family only.
        let mut ya6 = ya.clone();
        ya6.ip6 = Some("fd00::1".parse().unwrap());
        let mut xb6 = xb.clone();
        xb6.ip6 = Some("fd00::2".parse().unwrap());
        w.apply("metadata: {name: v4, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}}]}]}");
        assert!(w.allowed(&ya6, &xb6, 80, "UDP", V4) && !w.allowed(&ya6, &xb6, 80, "UDP", Family::V6));
        assert!(in_cidr("fd00::1".parse().unwrap(), "fd00::/64") && !in_cidr("fd01::1".parse().unwrap(), "fd00::/16"));
        assert!(in_cidr("1.2.3.4".parse().unwrap(), "0.0.0.0/0") && !in_cidr("1.2.3.4".parse().unwrap(), "::/0"));
    }
}
