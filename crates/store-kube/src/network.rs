//! Tenant networks as the custom resource `networks.weft.dev` (deploy/weft.yaml has the CRD), with no I/O.
//!
//! | store                              | Kubernetes                                                         |
//! |------------------------------------|--------------------------------------------------------------------|
//! | `Network` object, key NAME         | Network NAME (cluster-scoped): `metadata.name` + `spec` = the `TenantNetwork` |
//! | `NetworkStatus` object, key NET/NODE | `status.nodes.NODE` of Network NET (`NetworkNodeStatus`)        |
//! | put `NetworkStatus`                | JSON merge patch of the Network's `status` subresource             |
//! | delete `NetworkStatus`             | the same patch with `status.nodes.NODE: null`                      |
//!
//! The type keeps `spec` and `status` as plain JSON: a list decodes whatever one object holds, and each
//! object is then converted on its own, so a malformed Network (or one malformed node entry) is skipped with
//! a warning naming its key instead of failing the list for everyone.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use weft_types::tenant::{NetworkNodeStatus, TenantNetwork};

pub const GROUP: &str = "weft.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "Network";
pub const PLURAL: &str = "networks";

/// A `networks.weft.dev` object as the API serves it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Network {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub status: Value,
}

impl kube::Resource for Network {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Network {
    pub fn name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }

    /// The tenant network this object describes: `spec` with `name` = `metadata.name` (a `name` inside the
    /// spec is not the object's: the API server prunes it, and here metadata wins too).
    pub fn tenant(&self) -> Result<TenantNetwork, String> {
        let name = self.name();
        let mut spec = match &self.spec {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => return Err(format!("Network {name}: spec is not an object: {other}")),
        };
        spec.insert("name".into(), json!(name));
        serde_json::from_value(Value::Object(spec)).map_err(|e| format!("Network {name}: spec: {e}"))
    }

    /// The per-node statuses, as `(NET/NODE, NetworkNodeStatus JSON)` sorted by key. An entry that does not
    /// decode is left out with a warning naming its key; the other nodes' entries are kept.
    pub fn statuses(&self) -> Vec<(String, Value)> {
        let name = self.name();
        let Some(nodes) = self.status.get("nodes").and_then(Value::as_object) else { return vec![] };
        let mut out: Vec<(String, Value)> = nodes
            .iter()
            .filter_map(|(node, v)| {
                let key = format!("{name}/{node}");
                match serde_json::from_value::<NetworkNodeStatus>(v.clone()) {
                    Ok(s) => Some((key, serde_json::to_value(s).expect("status serializes"))),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "skipping an undecodable network status entry");
                        None
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl crate::objects::AsObject for Network {
    fn key(&self) -> String {
        self.name()
    }

    /// The `TenantNetwork` JSON, or None (skipped, with a warning naming it) when the object does not decode.
    fn value(&self) -> Option<Value> {
        match self.tenant() {
            Ok(t) => Some(serde_json::to_value(t).expect("a tenant network serializes")),
            Err(e) => {
                tracing::warn!(key = %self.name(), error = %e, "skipping an undecodable Network");
                None
            }
        }
    }
}

/// The Network as a store entry with its creation order (`creationTimestamp` in seconds, set by the API server
/// and immutable, then the name), or None when it does not decode.
pub fn entry_of(n: &Network) -> Option<weft_store::ObjectEntry> {
    use crate::objects::AsObject;
    let created = n.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second());
    Some(weft_store::ObjectEntry { key: n.key(), created: weft_store::Created(created, n.name()), value: n.value()? })
}

/// The Kubernetes object for a tenant network: what `kubectl apply` (or the lab's fake) takes.
pub fn object_of(net: &TenantNetwork) -> Value {
    let mut spec = serde_json::to_value(net).expect("a tenant network serializes");
    if let Some(m) = spec.as_object_mut() {
        m.remove("name");
    }
    json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND, "metadata": {"name": net.name}, "spec": spec})
}

/// `NET/NODE` → (NET, NODE), both checked as the API server checks names (they become URL path segments and
/// a map key), so a hostile key cannot address another object.
pub fn split_status_key(key: &str) -> Result<(&str, &str), String> {
    let bad = || format!("network status key {key:?} must be NETWORK/NODE (a DNS-1123 label and subdomain)");
    let (net, node) = key.split_once('/').ok_or_else(bad)?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !label(net) || node.len() > 253 || !node.split('.').all(label) {
        return Err(bad());
    }
    Ok((net, node))
}

/// The merge patch that makes `status.nodes.NODE` exactly `status` (or removes it, None). A merge patch merges
/// nested maps, so every field the new value leaves out is sent as `null`: an old `reason` must not survive a
/// status that no longer has one.
pub fn status_patch(node: &str, status: Option<&NetworkNodeStatus>) -> Value {
    let entry = match status {
        None => Value::Null,
        Some(s) => {
            let mut v = serde_json::to_value(s).expect("status serializes");
            let m = v.as_object_mut().expect("an object");
            for f in ["subnet", "subnet6", "reason"] {
                m.entry(f).or_insert(Value::Null);
            }
            v
        }
    };
    json!({"status": {"nodes": {node: entry}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(v: Value) -> Network {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_object_round_trips_to_the_tenant_network() {
        let t: TenantNetwork = serde_json::from_value(json!({"name": "blue", "cidr": "10.50.0.0/16", "vni": 100,
            "namespaces": {"names": ["a"]}}))
        .unwrap();
        let o = object_of(&t);
        assert_eq!(o["apiVersion"], "weft.dev/v1alpha1");
        assert!(o["spec"].get("name").is_none(), "the name is metadata.name");
        assert_eq!(net(o).tenant().unwrap(), t);
        let named =
            net(json!({"metadata": {"name": "blue"}, "spec": {"name": "red", "cidr": "10.50.0.0/16", "vni": 1}}));
        assert_eq!(named.tenant().unwrap().name, "blue", "metadata wins");
    }

    #[test]
    fn malformed_specs_and_status_entries_are_errors_by_key() {
        for spec in
            [json!("x"), json!({"cidr": "nope", "vni": 1}), json!({"cidr": "10.0.0.0/8", "vni": 1, "table": 254})]
        {
            let e = net(json!({"metadata": {"name": "bad"}, "spec": spec})).tenant().unwrap_err();
            assert!(e.starts_with("Network bad"), "{e}");
        }
        let n = net(json!({"metadata": {"name": "blue"}, "status": {"nodes": {
            "n2": {"ready": true, "used": 1, "capacity": 253, "subnet": "10.50.2.0/24"},
            "n1": {"ready": "yes"},
            "n0": {"ready": false, "used": 0, "capacity": 0, "reason": "no subnet"}}}}));
        let s = n.statuses();
        assert_eq!(s.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["blue/n0", "blue/n2"]);
        assert_eq!(s[1].1["subnet"], "10.50.2.0/24");
        assert!(net(json!({"metadata": {"name": "x"}})).statuses().is_empty());
    }

    #[test]
    fn status_keys_and_patches() {
        assert_eq!(split_status_key("blue/node-1.example").unwrap(), ("blue", "node-1.example"));
        for bad in ["blue", "/n1", "blue/", "Blue/n1", "blue/n1/x", "blue/../x", "blue/a..b", "b%2f/n"] {
            assert!(split_status_key(bad).is_err(), "{bad}");
        }
        let s = NetworkNodeStatus { ready: true, used: 2, capacity: 253, ..Default::default() };
        let mut obj = json!({"status": {"nodes": {"n1": {"ready": false, "used": 0, "capacity": 253,
            "reason": "starting"}, "n2": {"ready": true, "used": 0, "capacity": 1}}}});
        crate::fake::patch::merge(&mut obj, &status_patch("n1", Some(&s)));
        assert_eq!(obj["status"]["nodes"]["n1"], json!({"ready": true, "used": 2, "capacity": 253}));
        assert_eq!(obj["status"]["nodes"]["n2"]["capacity"], 1, "other nodes are left alone");
        crate::fake::patch::merge(&mut obj, &status_patch("n1", None));
        assert!(obj["status"]["nodes"].get("n1").is_none());
    }
}
