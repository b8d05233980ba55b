//! Errors of this crate. Parsing errors say which document failed; validation errors say which policy and what
//! Kubernetes rule it breaks, so `weftctl` can print them as they are.

use ipnet::IpNet;

use crate::k8s_names::NameError;
use crate::model::Operator;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// YAML syntax or a field of the wrong type (serde's message carries the field path and position).
    #[error("document {doc}: {source}")]
    Yaml { doc: usize, source: serde_yaml::Error },
    #[error("document {doc}: {source}")]
    Json { doc: usize, source: serde_json::Error },
    #[error("document {doc}: kind {kind:?} apiVersion {api_version:?} is not a networking.k8s.io/v1 NetworkPolicy")]
    WrongKind { doc: usize, kind: String, api_version: String },
    #[error("policy {policy}: {problem}")]
    Invalid { policy: String, problem: Problem },
}

/// A Kubernetes validation rule a policy breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("metadata.name is empty")]
    MissingName,
    #[error("{at}: port {value} is outside 1..=65535")]
    PortOutOfRange { at: String, value: i64 },
    #[error("{at}: endPort {value} is outside 1..=65535")]
    EndPortOutOfRange { at: String, value: i64 },
    #[error("{at}: endPort needs a numeric port")]
    EndPortWithoutNumericPort { at: String },
    #[error("{at}: endPort {end_port} is below port {port}")]
    EndPortBelowPort { at: String, port: i64, end_port: i64 },
    #[error("{at}: {name:?} is not a valid port name (1-15 lowercase letters, digits, '-', with a letter)")]
    BadPortName { at: String, name: String },
    #[error("{at}: except {except} is not inside cidr {cidr}")]
    ExceptOutsideCidr { at: String, cidr: IpNet, except: IpNet },
    #[error("{at}: a peer needs ipBlock or a pod/namespace selector")]
    EmptyPeer { at: String },
    #[error("{at}: ipBlock cannot be combined with podSelector or namespaceSelector")]
    IpBlockWithSelector { at: String },
    #[error("{at}: operator {operator:?} on key {key:?} {why}")]
    BadRequirement { at: String, key: String, operator: Operator, why: &'static str },
    #[error("{at}: label key is empty")]
    EmptyLabelKey { at: String },
    /// A name, label or port name the API server would reject (`k8s_names`).
    #[error("{at}: {source}")]
    BadName { at: String, source: NameError },
}
