//! Semantic validation of a parsed policy, mirroring the API server's rules for NetworkPolicy that serde types
//! cannot express. Parsing calls it; the store should only hold policies that passed it.
//!
//! The evaluator does not rely on validation: a value that slips through (say a port of 0 from a hand-edited store
//! entry) matches nothing, so an invalid rule fails closed instead of opening traffic.

use crate::error::{PolicyError, Problem};
use crate::k8s_names::{self, NameError};
use crate::model::{LabelSelector, Namespace, NetworkPolicy, Operator, Pod, PolicyPeer, PolicyPort, PortRef};

impl NetworkPolicy {
    /// Checks the rules the API server enforces on `networking.k8s.io/v1` NetworkPolicy.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid = |problem| PolicyError::Invalid { policy: self.reference().to_string(), problem };
        if self.metadata.name.is_empty() {
            return Err(invalid(Problem::MissingName));
        }
        let bad_name = |at: &'static str| move |source| Problem::BadName { at: at.to_string(), source };
        k8s_names::policy_name(&self.metadata.name).map_err(bad_name("metadata.name")).map_err(invalid)?;
        if let Some(ns) = self.metadata.namespace.as_deref().filter(|ns| !ns.is_empty()) {
            k8s_names::namespace_name(ns).map_err(bad_name("metadata.namespace")).map_err(invalid)?;
        }
        check_selector(&self.spec.pod_selector, "spec.podSelector").map_err(invalid)?;
        for (i, rule) in self.spec.ingress.iter().enumerate() {
            check_rule(&rule.from, &rule.ports, &format!("spec.ingress[{i}]"), "from").map_err(invalid)?;
        }
        for (i, rule) in self.spec.egress.iter().enumerate() {
            check_rule(&rule.to, &rule.ports, &format!("spec.egress[{i}]"), "to").map_err(invalid)?;
        }
        Ok(())
    }
}

fn check_rule(peers: &[PolicyPeer], ports: &[PolicyPort], at: &str, peer_field: &str) -> Result<(), Problem> {
    for (i, peer) in peers.iter().enumerate() {
        check_peer(peer, &format!("{at}.{peer_field}[{i}]"))?;
    }
    for (i, port) in ports.iter().enumerate() {
        check_port(port, &format!("{at}.ports[{i}]"))?;
    }
    Ok(())
}

fn check_peer(peer: &PolicyPeer, at: &str) -> Result<(), Problem> {
    let has_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
    match &peer.ip_block {
        Some(_) if has_selector => Err(Problem::IpBlockWithSelector { at: at.to_string() }),
        Some(block) => {
            let cidr = block.cidr.trunc();
            for except in &block.except {
                // Kubernetes requires each except to be a strict subset of the cidr.
                if !cidr.contains(except) || except.prefix_len() <= cidr.prefix_len() {
                    return Err(Problem::ExceptOutsideCidr { at: at.to_string(), cidr: block.cidr, except: *except });
                }
            }
            Ok(())
        }
        None if !has_selector => Err(Problem::EmptyPeer { at: at.to_string() }),
        None => {
            if let Some(sel) = &peer.pod_selector {
                check_selector(sel, &format!("{at}.podSelector"))?;
            }
            if let Some(sel) = &peer.namespace_selector {
                check_selector(sel, &format!("{at}.namespaceSelector"))?;
            }
            Ok(())
        }
    }
}

fn check_port(port: &PolicyPort, at: &str) -> Result<(), Problem> {
    let at_s = || at.to_string();
    match (&port.port, port.end_port) {
        (Some(PortRef::Number(p)), end) => {
            if !(1..=65535).contains(p) {
                return Err(Problem::PortOutOfRange { at: at_s(), value: *p });
            }
            if let Some(e) = end {
                if !(1..=65535).contains(&e) {
                    return Err(Problem::EndPortOutOfRange { at: at_s(), value: e });
                }
                if e < *p {
                    return Err(Problem::EndPortBelowPort { at: at_s(), port: *p, end_port: e });
                }
            }
            Ok(())
        }
        (_, Some(_)) => Err(Problem::EndPortWithoutNumericPort { at: at_s() }),
        (Some(PortRef::Name(name)), None) if !valid_port_name(name) => {
            Err(Problem::BadPortName { at: at_s(), name: name.clone() })
        }
        _ => Ok(()),
    }
}

/// IANA service name rules Kubernetes applies to named ports (`IsValidPortName`).
pub(crate) fn valid_port_name(name: &str) -> bool {
    k8s_names::port_name("port name", name).is_ok()
}

impl Pod {
    /// The pod's namespace, name, labels and container port names, as the API server checks them. A pod that
    /// fails is left out of the model by the agent (with a log naming it), never compiled into a table.
    pub fn validate(&self) -> Result<(), NameError> {
        k8s_names::namespace_name(&self.namespace)?;
        k8s_names::pod_name(&self.name)?;
        k8s_names::labels(&self.labels)?;
        for p in &self.ports {
            k8s_names::port_name("container port name", &p.name)?;
        }
        Ok(())
    }
}

impl Namespace {
    pub fn validate(&self) -> Result<(), NameError> {
        k8s_names::namespace_name(&self.name)?;
        k8s_names::labels(&self.labels)
    }
}

fn check_selector(sel: &LabelSelector, at: &str) -> Result<(), Problem> {
    if sel.match_labels.keys().any(String::is_empty) {
        return Err(Problem::EmptyLabelKey { at: at.to_string() });
    }
    let bad = |source| Problem::BadName { at: format!("{at}.matchLabels"), source };
    k8s_names::labels(&sel.match_labels).map_err(bad)?;
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let bad = |source| Problem::BadName { at: format!("{at}.matchExpressions[{i}]"), source };
        if !req.key.is_empty() {
            k8s_names::qualified_name("label key", &req.key).map_err(bad)?;
        }
        for v in &req.values {
            k8s_names::label_value("label value", v).map_err(bad)?;
        }
    }
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let at = format!("{at}.matchExpressions[{i}]");
        if req.key.is_empty() {
            return Err(Problem::EmptyLabelKey { at });
        }
        let why = match req.operator {
            Operator::In | Operator::NotIn if req.values.is_empty() => "needs at least one value",
            Operator::Exists | Operator::DoesNotExist if !req.values.is_empty() => "must not have values",
            _ => continue,
        };
        return Err(Problem::BadRequirement { at, key: req.key.clone(), operator: req.operator, why });
    }
    Ok(())
}
