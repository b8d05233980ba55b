//! Reading policies from manifests: YAML with several `---` documents (JSON is YAML too), or JSON proper; a
//! `kind: List` / `NetworkPolicyList` (what `kubectl get -o yaml` prints) is unpacked into its items.
//!
//! The kind is checked before the body is deserialised so that, say, a Deployment in the same file gives
//! "is not a NetworkPolicy" instead of a confusing missing-field error. Every policy is validated.

use crate::error::PolicyError;
use crate::model::NetworkPolicy;

const API_VERSION: &str = "networking.k8s.io/v1";

/// Parses every document of a YAML (or JSON) text; empty documents are skipped.
pub fn parse_policies_yaml(text: &str) -> Result<Vec<NetworkPolicy>, PolicyError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc_no = i + 1;
        let value = serde_yaml::Value::deserialize(doc).map_err(|source| PolicyError::Yaml { doc: doc_no, source })?;
        collect_yaml(value, doc_no, &mut out)?;
    }
    Ok(out)
}

fn collect_yaml(value: serde_yaml::Value, doc: usize, out: &mut Vec<NetworkPolicy>) -> Result<(), PolicyError> {
    if value.is_null() {
        return Ok(());
    }
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let (kind, api_version) = (field("kind"), field("apiVersion"));
    if is_list(&kind) {
        let items = value.get("items").and_then(|v| v.as_sequence()).cloned().unwrap_or_default();
        for item in items {
            collect_yaml(item, doc, out)?;
        }
        return Ok(());
    }
    check_kind(doc, kind, api_version)?;
    let policy: NetworkPolicy = serde_yaml::from_value(value).map_err(|source| PolicyError::Yaml { doc, source })?;
    policy.validate()?;
    out.push(policy);
    Ok(())
}

/// Parses JSON: one object, an array of objects, or a List object.
pub fn parse_policies_json(text: &str) -> Result<Vec<NetworkPolicy>, PolicyError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|source| PolicyError::Json { doc: 1, source })?;
    let mut out = Vec::new();
    match value {
        serde_json::Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                collect_json(item, i + 1, &mut out)?;
            }
        }
        other => collect_json(other, 1, &mut out)?,
    }
    Ok(out)
}

fn collect_json(value: serde_json::Value, doc: usize, out: &mut Vec<NetworkPolicy>) -> Result<(), PolicyError> {
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let (kind, api_version) = (field("kind"), field("apiVersion"));
    if is_list(&kind) {
        let items = value.get("items").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        for item in items {
            collect_json(item, doc, out)?;
        }
        return Ok(());
    }
    check_kind(doc, kind, api_version)?;
    let policy: NetworkPolicy = serde_json::from_value(value).map_err(|source| PolicyError::Json { doc, source })?;
    policy.validate()?;
    out.push(policy);
    Ok(())
}

fn is_list(kind: &str) -> bool {
    kind == "List" || kind == "NetworkPolicyList"
}

fn check_kind(doc: usize, kind: String, api_version: String) -> Result<(), PolicyError> {
    // apiVersion may be omitted in hand-written snippets; when present it must be the v1 group.
    if kind == "NetworkPolicy" && (api_version.is_empty() || api_version == API_VERSION) {
        Ok(())
    } else {
        Err(PolicyError::WrongKind { doc, kind, api_version })
    }
}
