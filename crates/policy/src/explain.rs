//! `explain`: would this connection be allowed, and which policy and rule decide it?
//!
//! It answers from the same resolved data (`eval.rs`) the compiler renders into sets, with the same order of
//! checks as the compiled chains: the source's egress, then the destination's ingress. Endpoints are addresses in
//! the end, like the dataplane sees them: a pod endpoint is replaced by its address of the right family, and an
//! address owned by a pod is treated as that pod.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::eval::{Direction, Resolved};
use crate::model::{Model, PolicyRef, Protocol};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoint {
    Pod { namespace: String, name: String },
    Ip(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub allowed: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The destination pod's ingress decision.
    pub ingress: DirectionVerdict,
    /// The source pod's egress decision.
    pub egress: DirectionVerdict,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DirectionVerdict {
    /// No policy of this direction selects the pod (or the endpoint is not a pod): everything passes.
    NotIsolated,
    /// The first rule (policy order `namespace/name`, then rule order) that allows it. `peer`/`port` are indexes
    /// into the rule's `from`/`to` and `ports`; `None` when the rule has no such list (everything).
    Allowed { by: PolicyRef, rule: usize, peer: Option<usize>, port: Option<usize> },
    /// Isolated, and no rule of these policies allows it.
    Denied { isolating_policies: Vec<PolicyRef> },
}

impl DirectionVerdict {
    pub fn allows(&self) -> bool {
        !matches!(self, DirectionVerdict::Denied { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("pod {namespace}/{name} is not in the model")]
    UnknownPod { namespace: String, name: String },
    #[error("pod {0} has no address")]
    NoAddress(String),
    #[error("the endpoints have no address family in common")]
    NoCommonFamily,
}

/// Explains a new connection `from` → `to` on `proto`/`port`.
pub fn explain(
    model: &Model,
    from: &Endpoint,
    to: &Endpoint,
    port: u16,
    proto: Protocol,
) -> Result<Verdict, ExplainError> {
    let from_ips = addresses(model, from)?;
    let to_ips = addresses(model, to)?;
    // Prefer IPv4 when both families are possible, as most clients would.
    let mut pairs = from_ips.iter().flat_map(|s| to_ips.iter().map(move |d| (*s, *d)));
    let (src, dst) = pairs.find(|(s, d)| s.is_ipv4() == d.is_ipv4()).ok_or(ExplainError::NoCommonFamily)?;
    Ok(explain_ips(&Resolved::new(model), src, dst, port, proto))
}

/// The address form, on an already resolved model (for answering many questions about one model).
pub fn explain_ips(r: &Resolved<'_>, src: IpAddr, dst: IpAddr, port: u16, proto: Protocol) -> Verdict {
    let egress = direction(r, Direction::Egress, src, dst, dst, proto, port);
    let ingress = direction(r, Direction::Ingress, dst, src, dst, proto, port);
    Verdict { allowed: egress.allows() && ingress.allows(), src, dst, ingress, egress }
}

fn addresses(model: &Model, e: &Endpoint) -> Result<Vec<IpAddr>, ExplainError> {
    match e {
        Endpoint::Ip(ip) => Ok(vec![*ip]),
        Endpoint::Pod { namespace, name } => {
            let pod = model
                .pods
                .iter()
                .find(|p| &p.namespace == namespace && &p.name == name)
                .ok_or_else(|| ExplainError::UnknownPod { namespace: namespace.clone(), name: name.clone() })?;
            let mut ips = pod.ips.clone();
            ips.sort_by_key(|ip| !ip.is_ipv4());
            if ips.is_empty() {
                return Err(ExplainError::NoAddress(format!("{namespace}/{name}")));
            }
            Ok(ips)
        }
    }
}

/// `subject` is the pod whose policies apply (source for egress, destination for ingress), `peer` the other end;
/// named ports always resolve on `dst`.
fn direction(
    r: &Resolved<'_>,
    dir: Direction,
    subject: IpAddr,
    peer: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
) -> DirectionVerdict {
    let owners = r.pods_with_ip(subject);
    let mut isolating = Vec::new();
    for p in &r.policies {
        let Some(rules) = p.rules(dir) else { continue };
        if !owners.iter().any(|o| p.selected.binary_search(o).is_ok()) {
            continue;
        }
        for (ri, rule) in rules.iter().enumerate() {
            let Some(peer_idx) = r.matching_peer(rule, peer) else { continue };
            let Some(port_idx) = r.matching_port(rule, dst, proto, port) else { continue };
            return DirectionVerdict::Allowed { by: p.reference.clone(), rule: ri, peer: peer_idx, port: port_idx };
        }
        isolating.push(p.reference.clone());
    }
    if isolating.is_empty() {
        DirectionVerdict::NotIsolated
    } else {
        DirectionVerdict::Denied { isolating_policies: isolating }
    }
}
