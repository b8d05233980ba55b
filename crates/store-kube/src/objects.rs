//! Pods, Namespaces and NetworkPolicies as the policy model reads them from any store (see
//! `weft_policy::model`), with no I/O:
//! - Endpoint ← Pod: `{"namespace","name","labels","ips","node","ports":[{"name","port","protocol"}]}`, key
//!   `namespace/name`. Host-network pods are skipped (their address is the node's: policy does not apply to
//!   them), and so are finished pods (Succeeded/Failed): their IPs may already belong to a new pod. Only named
//!   container ports are listed: they exist to resolve named ports in policies.
//! - Namespace ← Namespace: `{"name","labels"}`, key name.
//! - Policy ← NetworkPolicy: the API object as is, minus `managedFields` (bookkeeping nobody reads), key
//!   `namespace/name`.
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How one Kubernetes type becomes a store object.
pub(crate) trait AsObject {
    /// The store key.
    fn key(&self) -> String;
    /// The store value, or None if the object is not one the store shows (a host-network pod).
    fn value(&self) -> Option<Value>;
}

fn ns_name(ns: &Option<String>, name: &Option<String>) -> String {
    format!("{}/{}", ns.as_deref().unwrap_or_default(), name.as_deref().unwrap_or_default())
}

impl AsObject for Pod {
    fn key(&self) -> String {
        ns_name(&self.metadata.namespace, &self.metadata.name)
    }

    fn value(&self) -> Option<Value> {
        let spec = self.spec.as_ref();
        if spec.and_then(|s| s.host_network) == Some(true) {
            return None;
        }
        let status = self.status.as_ref();
        if matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
            return None;
        }
        let mut ips: Vec<String> =
            status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| p.ip.clone()).collect();
        if ips.is_empty() {
            ips.extend(status.and_then(|s| s.pod_ip.clone()));
        }
        let ports: Vec<Value> = spec
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let name = p.name.as_ref()?;
                Some(json!({"name": name, "port": p.container_port,
                            "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())}))
            })
            .collect();
        Some(json!({
            "namespace": self.metadata.namespace.clone().unwrap_or_default(),
            "name": self.metadata.name.clone().unwrap_or_default(),
            "labels": self.metadata.labels.clone().unwrap_or_default(),
            "ips": ips,
            "node": spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            "ports": ports,
        }))
    }
}

impl AsObject for Namespace {
    fn key(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }

    fn value(&self) -> Option<Value> {
        let labels: BTreeMap<String, String> = self.metadata.labels.clone().unwrap_or_default();
        Some(json!({"name": self.key(), "labels": labels}))
    }
}

impl AsObject for NetworkPolicy {
    fn key(&self) -> String {
        ns_name(&self.metadata.namespace, &self.metadata.name)
    }

    fn value(&self) -> Option<Value> {
        let mut v = serde_json::to_value(self).ok()?;
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_become_endpoints() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "web", "name": "a", "labels": {"app": "a"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080}, {"containerPort": 9090},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]}
        }))
        .unwrap();
        assert_eq!(p.key(), "web/a");
        assert_eq!(
            p.value().unwrap(),
            json!({"namespace": "web", "name": "a", "labels": {"app": "a"}, "ips": ["10.244.1.5", "fd00::5"],
                   "node": "n1", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                                           {"name": "dns", "port": 53, "protocol": "UDP"}]})
        );
        let mut host = p.clone();
        host.spec.as_mut().unwrap().host_network = Some(true);
        assert_eq!(host.value(), None);
        let mut done = p.clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(done.value(), None);
        let pending: Pod = serde_json::from_value(json!({"metadata": {"namespace": "x", "name": "p"}})).unwrap();
        assert_eq!(pending.value().unwrap()["ips"], json!([]));
    }

    #[test]
    fn namespaces_and_policies() {
        let n: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "web", "labels": {"team": "a"}}})).unwrap();
        assert_eq!(n.value().unwrap(), json!({"name": "web", "labels": {"team": "a"}}));
        let np: NetworkPolicy = serde_json::from_value(json!({"apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy", "metadata": {"namespace": "web", "name": "deny", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}))
        .unwrap();
        let v = np.value().unwrap();
        assert_eq!(np.key(), "web/deny");
        assert_eq!(v["kind"], "NetworkPolicy");
        assert_eq!(v["spec"]["policyTypes"], json!(["Ingress"]));
        assert!(v["metadata"].get("managedFields").is_none());
    }
}
