//! `explain`: would this connection be allowed, and which policy and rule decide it?
//!
//! It answers from the same resolved data (`eval.rs`) the compiler renders into sets, with the same order of
//! checks as the compiled chains: the source's egress, then the destination's ingress. Endpoints are addresses in
//! the end, like the dataplane sees them: a pod endpoint is replaced by its address of the right family, and an
//! address owned by a pod is treated as that pod.
//!
//! Networks: a question is asked inside one network (addresses mean something only together with a network, since
//! two networks may use the same CIDR). A pod endpoint brings its network; a bare address is read in the network
//! of the other end (the default network when both are addresses, or [`explain_in`] names one). Two pods of
//! different networks are never connected — routing and the isolation firewall keep networks apart whatever the
//! policies say — so that question is refused with [`ExplainError::DifferentNetworks`] instead of a verdict.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::eval::{Direction, Resolved, DEFAULT_NET};
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
    /// The network both ends are on (`default` for the cluster's default network).
    pub network: String,
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
    #[error("{from} is on network {from_net}, {to} on network {to_net}: different networks: never connected")]
    DifferentNetworks { from: String, from_net: String, to: String, to_net: String },
    #[error("no network {0:?} in the model")]
    UnknownNetwork(String),
}

/// Explains a new connection `from` → `to` on `proto`/`port`.
pub fn explain(
    model: &Model,
    from: &Endpoint,
    to: &Endpoint,
    port: u16,
    proto: Protocol,
) -> Result<Verdict, ExplainError> {
    explain_endpoints(model, None, from, to, port, proto)
}

/// [`explain`] with bare addresses read in `network` (by name) when no pod endpoint says otherwise; a pod
/// endpoint on another network is refused like two pods on different networks.
pub fn explain_endpoints(
    model: &Model,
    network: Option<&str>,
    from: &Endpoint,
    to: &Endpoint,
    port: u16,
    proto: Protocol,
) -> Result<Verdict, ExplainError> {
    let r = Resolved::new(model);
    let asked = match network {
        None => None,
        Some(n) => Some(r.network_index(n).ok_or_else(|| ExplainError::UnknownNetwork(n.to_string()))?),
    };
    let (from_ips, from_net) = addresses(&r, from)?;
    let (to_ips, to_net) = addresses(&r, to)?;
    let label = |e: &Endpoint| match e {
        Endpoint::Pod { namespace, name } => format!("{namespace}/{name}"),
        Endpoint::Ip(ip) => ip.to_string(),
    };
    let (from_net, to_net) = (from_net.or(asked), to_net.or(asked));
    if let (Some(a), Some(b)) = (from_net, to_net) {
        if a != b {
            let name = |n: usize| r.networks[n].name.clone();
            let (from, to) = (label(from), label(to));
            return Err(ExplainError::DifferentNetworks { from, from_net: name(a), to, to_net: name(b) });
        }
    }
    let net = from_net.or(to_net).unwrap_or(DEFAULT_NET);
    // Prefer IPv4 when both families are possible, as most clients would.
    let mut pairs = from_ips.iter().flat_map(|s| to_ips.iter().map(move |d| (*s, *d)));
    let (src, dst) = pairs.find(|(s, d)| s.is_ipv4() == d.is_ipv4()).ok_or(ExplainError::NoCommonFamily)?;
    Ok(explain_in(&r, net, src, dst, port, proto))
}

/// The address form, on an already resolved model (for answering many questions about one model), in the
/// default network.
pub fn explain_ips(r: &Resolved<'_>, src: IpAddr, dst: IpAddr, port: u16, proto: Protocol) -> Verdict {
    explain_in(r, DEFAULT_NET, src, dst, port, proto)
}

/// The address form inside network `net` (index into `Resolved::networks`): `src` and `dst` are addresses of
/// that network, so a pod of another network with an equal address is never taken for either end.
pub fn explain_in(r: &Resolved<'_>, net: usize, src: IpAddr, dst: IpAddr, port: u16, proto: Protocol) -> Verdict {
    let egress = direction(r, Direction::Egress, net, src, dst, dst, proto, port);
    let ingress = direction(r, Direction::Ingress, net, dst, src, dst, proto, port);
    let network = r.networks.get(net).map_or_else(String::new, |n| n.name.clone());
    Verdict { allowed: egress.allows() && ingress.allows(), network, src, dst, ingress, egress }
}

/// A pod's addresses (IPv4 first) and its network, or a bare address (network unknown).
fn addresses(r: &Resolved<'_>, e: &Endpoint) -> Result<(Vec<IpAddr>, Option<usize>), ExplainError> {
    match e {
        Endpoint::Ip(ip) => Ok((vec![*ip], None)),
        Endpoint::Pod { namespace, name } => {
            let i = r
                .model
                .pods
                .iter()
                .position(|p| &p.namespace == namespace && &p.name == name)
                .ok_or_else(|| ExplainError::UnknownPod { namespace: namespace.clone(), name: name.clone() })?;
            let mut ips = r.model.pods[i].ips.clone();
            ips.sort_by_key(|ip| !ip.is_ipv4());
            if ips.is_empty() {
                return Err(ExplainError::NoAddress(format!("{namespace}/{name}")));
            }
            Ok((ips, Some(r.pod_network[i])))
        }
    }
}

/// `subject` is the pod whose policies apply (source for egress, destination for ingress), `peer` the other end;
/// named ports always resolve on `dst`.
#[allow(clippy::too_many_arguments)]
fn direction(
    r: &Resolved<'_>,
    dir: Direction,
    net: usize,
    subject: IpAddr,
    peer: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
) -> DirectionVerdict {
    let owners = r.pods_with_ip_in(net, subject);
    let mut isolating = Vec::new();
    for p in &r.policies {
        let Some(rules) = p.rules(dir) else { continue };
        if p.network != net {
            continue;
        }
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
