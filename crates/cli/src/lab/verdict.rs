//! What policy says about a ping, so the matrix can tell "denied by policy x/deny-all" (expected silence) from a
//! broken pair (silence that policy would allow).
//!
//! The answer comes from `weft_policy::explain_ips`, the code behind `weftctl policy explain`, on one resolved
//! model for the whole matrix. A ping is ICMP, and NetworkPolicy ports name L4 ports: only a rule without `ports`
//! admits ICMP. So explain is asked about a TCP probe (a denial of that is a denial of everything, with the same
//! isolating policies), and where it names a rule that allows the probe through a port, the same resolved rules
//! are searched for one without ports.
use std::net::IpAddr;
use weft_policy::eval::{Direction, Resolved};
use weft_policy::{explain_ips, DirectionVerdict, Model, PolicyRef, Protocol};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Allowed,
    /// The policies that isolate the pair in the deciding direction (egress of the source, else ingress of the
    /// destination), in explain's order.
    Denied(Vec<PolicyRef>),
}

/// Any port does: the probe only separates "denied whatever the port" from "allowed by some rule".
const PROBE_PORT: u16 = 1;

pub struct PolicyView<'m> {
    resolved: Resolved<'m>,
}

impl<'m> PolicyView<'m> {
    pub fn new(model: &'m Model) -> Self {
        PolicyView { resolved: Resolved::new(model) }
    }

    /// Would an ICMP echo request from `src` reach `dst`?
    pub fn ping(&self, src: IpAddr, dst: IpAddr) -> Expect {
        let v = explain_ips(&self.resolved, src, dst, PROBE_PORT, Protocol::Tcp);
        for (dir, verdict, subject, peer) in
            [(Direction::Egress, &v.egress, src, dst), (Direction::Ingress, &v.ingress, dst, src)]
        {
            match verdict {
                DirectionVerdict::NotIsolated | DirectionVerdict::Allowed { port: None, .. } => {}
                DirectionVerdict::Denied { isolating_policies } => return Expect::Denied(isolating_policies.clone()),
                DirectionVerdict::Allowed { port: Some(_), .. } => {
                    if let Some(isolating) = self.no_portless_rule(dir, subject, peer) {
                        return Expect::Denied(isolating);
                    }
                }
            }
        }
        Expect::Allowed
    }

    /// `None` when a policy selecting `subject` has a rule without ports whose peers include `peer`; else the
    /// policies that isolate `subject` in `dir`.
    fn no_portless_rule(&self, dir: Direction, subject: IpAddr, peer: IpAddr) -> Option<Vec<PolicyRef>> {
        let r = &self.resolved;
        let owners = r.pods_with_ip(subject);
        let mut isolating = vec![];
        for p in &r.policies {
            let Some(rules) = p.rules(dir) else { continue };
            if !owners.iter().any(|o| p.selected.binary_search(o).is_ok()) {
                continue;
            }
            if rules.iter().any(|rule| rule.ports.is_none() && r.matching_peer(rule, peer).is_some()) {
                return None;
            }
            isolating.push(p.reference.clone());
        }
        Some(isolating)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::{parse_policies_yaml, Namespace, Pod};

    fn model(yaml: &str) -> Model {
        let pod = |ns: &str, name: &str, ip: &str| Pod {
            namespace: ns.into(),
            name: name.into(),
            labels: [("pod".to_string(), name.to_string())].into(),
            ips: vec![ip.parse().unwrap()],
            node: "node1".into(),
            ..Default::default()
        };
        let ns = |n: &str| Namespace { name: n.into(), labels: [("ns".to_string(), n.to_string())].into() };
        Model {
            pods: vec![pod("x", "a", "10.0.0.1"), pod("x", "b", "10.0.0.2"), pod("y", "a", "10.0.0.3")],
            namespaces: vec![ns("x"), ns("y")],
            policies: if yaml.is_empty() { vec![] } else { parse_policies_yaml(yaml).unwrap() },
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_policy_allows_everything() {
        let m = model("");
        assert_eq!(PolicyView::new(&m).ping(ip("10.0.0.1"), ip("10.0.0.2")), Expect::Allowed);
    }

    #[test]
    fn deny_all_names_the_policy() {
        let m = model("kind: NetworkPolicy\nmetadata: {name: deny-all, namespace: x}\nspec: {podSelector: {}}\n");
        let v = PolicyView::new(&m);
        let want = Expect::Denied(vec![PolicyRef { namespace: "x".into(), name: "deny-all".into() }]);
        assert_eq!(v.ping(ip("10.0.0.3"), ip("10.0.0.1")), want);
        // Egress of x is not isolated by an ingress-only policy; y is not selected.
        assert_eq!(v.ping(ip("10.0.0.1"), ip("10.0.0.3")), Expect::Allowed);
    }

    #[test]
    fn a_port_rule_does_not_admit_ping_but_a_portless_rule_does() {
        let ports = "kind: NetworkPolicy\nmetadata: {name: web, namespace: x}\nspec:\n  podSelector: {}\n  \
                     ingress:\n  - ports: [{port: 1, protocol: TCP}]\n";
        let m = model(ports);
        let v = PolicyView::new(&m);
        assert!(matches!(v.ping(ip("10.0.0.3"), ip("10.0.0.1")), Expect::Denied(p) if p[0].name == "web"));
        let both = format!(
            "{ports}---\nkind: NetworkPolicy\nmetadata: {{name: from-y, namespace: x}}\nspec:\n  podSelector: {{}}\n  \
             ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]\n"
        );
        let m = model(&both);
        let v = PolicyView::new(&m);
        assert_eq!(v.ping(ip("10.0.0.3"), ip("10.0.0.1")), Expect::Allowed);
        assert!(matches!(v.ping(ip("10.0.0.2"), ip("10.0.0.1")), Expect::Denied(_)));
    }
}
