//! The input model: our own serde mirror of `networking.k8s.io/v1` NetworkPolicy plus the pod and namespace facts
//! the compiler needs.
//!
//! Why own structs instead of `k8s-openapi`: this crate must stay small and pure, the store keeps these values as
//! JSON, and only the fields that change enforcement are modelled (unknown fields are ignored on input, so full
//! Kubernetes manifests parse). Field names follow the Kubernetes JSON spelling (`camelCase`), so a manifest or an
//! API object round-trips through serde unchanged.
//!
//! Typed fields reject garbage at the boundary (a bad CIDR fails deserialisation, an unknown protocol or operator
//! names the accepted values); the semantic checks serde cannot express live in `validate.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Namespace used when a policy's metadata has none, as `kubectl apply` would do with the default context.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A `networking.k8s.io/v1` NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    /// Kept so a serialised policy is a valid manifest again (parsing checks it).
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NetworkPolicySpec,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta::default(),
            spec: NetworkPolicySpec::default(),
        }
    }
}

fn api_version() -> String {
    "networking.k8s.io/v1".into()
}

fn kind() -> String {
    "NetworkPolicy".into()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Pods (in the policy's namespace) the policy applies to; empty selects every pod of the namespace.
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// Absent or empty: defaulted like the API server does, see [`NetworkPolicy::affects_ingress`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// Empty or absent: every source, including addresses outside the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<PolicyPeer>,
    /// Empty or absent: every port and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Empty or absent: every destination, including addresses outside the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<PolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
}

/// One `from`/`to` entry. Kubernetes requires either `ipBlock` alone or at least one of the selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    /// Host bits are allowed (`10.0.0.1/24` means `10.0.0.0/24`), as the Kubernetes parser allows them.
    #[serde(deserialize_with = "cidr::one")]
    pub cidr: IpNet,
    #[serde(default, deserialize_with = "cidr::many", skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<IpNet>,
}

/// CIDR parsing whose error names the offending text (ipnet's own error does not).
mod cidr {
    use ipnet::IpNet;
    use serde::{de::Error, Deserialize, Deserializer};

    fn parse<E: Error>(s: &str) -> Result<IpNet, E> {
        s.parse().map_err(|_| E::custom(format!("invalid CIDR {s:?} in ipBlock")))
    }

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        parse(&String::deserialize(d)?)
    }

    pub fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?.iter().map(|s| parse(s)).collect()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// Absent means TCP, as in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Absent: every port of the protocol. A string is a named container port of the destination pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// Inclusive end of a numeric port range; needs a numeric `port` not above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

impl PolicyPort {
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Tcp)
    }
}

/// Kubernetes `IntOrString` for ports. Numbers are kept wide so an out-of-range value reaches validation (with a
/// clear message) instead of failing inside serde's untagged-enum matching.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(i64),
    Name(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Keyword nft uses for `meta l4proto`.
    pub fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// Kubernetes `LabelSelector`: `matchLabels` and `matchExpressions` are AND-ed; an empty selector matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// `namespace/name` of a policy, used in verdicts, comments and counter mappings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl NetworkPolicy {
    /// The namespace, defaulted to [`DEFAULT_NAMESPACE`] when the manifest has none.
    pub fn namespace(&self) -> &str {
        match self.metadata.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => DEFAULT_NAMESPACE,
        }
    }

    pub fn reference(&self) -> PolicyRef {
        PolicyRef { namespace: self.namespace().to_string(), name: self.metadata.name.clone() }
    }

    /// API-server defaulting: without `policyTypes`, every policy affects ingress.
    pub fn affects_ingress(&self) -> bool {
        self.spec.policy_types.is_empty() || self.spec.policy_types.contains(&PolicyType::Ingress)
    }

    /// API-server defaulting: without `policyTypes`, a policy affects egress only if it has egress rules
    /// (`egress: []` does not count, exactly like `len(spec.Egress) != 0` upstream).
    pub fn affects_egress(&self) -> bool {
        if self.spec.policy_types.is_empty() {
            !self.spec.egress.is_empty()
        } else {
            self.spec.policy_types.contains(&PolicyType::Egress)
        }
    }
}

/// A pod as the agent knows it (from the store: key `namespace/name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// Node the pod runs on; the compiler programs only pods of its own node.
    #[serde(default)]
    pub node: String,
    /// Container ports, used to resolve named policy ports.
    #[serde(default)]
    pub ports: Vec<NamedPort>,
    /// Host side of the pod's veth (`wf…`), when known. Informational: enforcement keys on addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_iface: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Label the API server sets on every namespace (immutable, since Kubernetes 1.21); policies commonly select
/// namespaces by it, so it is implied even when the store's namespace object lacks it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Everything the compiler and `explain` look at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    #[serde(default)]
    pub policies: Vec<NetworkPolicy>,
    /// Tenant networks (issue 11) with the namespaces each serves; every other namespace is on the default
    /// network. Empty: one network, exactly as before networks existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
}

/// Name of the cluster's default network, the one every namespace no tenant network serves is on.
pub const DEFAULT_NETWORK: &str = "default";

/// A tenant network as policy sees it: the namespaces it serves (resolved by the agent from the network's
/// namespace selector, so this crate needs no selector of its own) and the link group of its pods' host veths
/// (`weft_types::tenant::NetworkIds::group`; the default network's pods are in group 0).
///
/// Why the model names namespaces and not each pod its network: a pod's network follows from its namespace
/// alone, so an endpoint object cannot claim another network, and all pods of a namespace agree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub name: String,
    pub group: u32,
    #[serde(default)]
    pub namespaces: Vec<String>,
}
