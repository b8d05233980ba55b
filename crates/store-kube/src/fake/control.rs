//! Controls for tests, the lab and the binary's `/admin/*` endpoints: seed and change objects as a kubectl
//! user or a kubelet would (ADDED/MODIFIED/DELETED events follow), and break things on purpose (compaction,
//! closed watches, RBAC denials).
use super::resources;
use super::state::{ApiError, Cluster, EventType, RequestRecord};
use serde_json::{json, Value};

impl Cluster {
    /// Creates the object, or replaces it (keeping its uid) if it exists: what `kubectl apply` looks like to
    /// watchers (ADDED or MODIFIED).
    pub fn apply(&self, obj: Value) -> Result<Value, ApiError> {
        let res = resources::of_object(&obj)
            .ok_or_else(|| ApiError::new(400, "BadRequest", "fake apiserver: unknown apiVersion/kind"))?;
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let ns = res
            .namespaced
            .then(|| obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string());
        let mut g = self.lock();
        let key = (res, ns.clone().unwrap_or_default(), name);
        if let Some(cur) = g.objects.get(&key).cloned() {
            let mut next = obj;
            for f in ["uid", "creationTimestamp", "namespace"] {
                next["metadata"][f] = cur["metadata"][f].clone();
            }
            if res.kind == "Namespace" {
                next["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(key.2);
            }
            if res.status_subresource {
                // kubectl apply writes the main resource, which leaves the status alone.
                next = super::state::keep_status_of(&next, &cur);
                super::state::bump_generation(&cur, &mut next);
            }
            return Ok(self.commit(&mut g, key, EventType::Modified, next));
        }
        drop(g);
        self.create(res, ns.as_deref(), obj)
    }

    /// Deletes an object by kind (`Node`, `Pod`...), namespace (ignored for cluster-scoped kinds) and name.
    pub fn remove(&self, kind: &str, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let res = resources::RESOURCES
            .iter()
            .copied()
            .find(|r| r.kind == kind)
            .ok_or_else(|| ApiError::new(400, "BadRequest", format!("fake apiserver: unknown kind {kind}")))?;
        let ns = res.namespaced.then(|| ns.unwrap_or("default"));
        self.delete(res, ns, name, None)
    }

    /// Adds (or replaces) a Node, with `spec.podCIDR(s)` when the cluster allocates them.
    pub fn add_node(&self, name: &str, pod_cidrs: &[&str]) -> Value {
        let mut spec = json!({});
        if let Some(first) = pod_cidrs.first() {
            spec = json!({"podCIDR": first, "podCIDRs": pod_cidrs});
        }
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": spec,
            "status": {"addresses": [{"type": "Hostname", "address": name}]}});
        self.apply(node).expect("a node is always valid")
    }

    /// Drops all history: every watch from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut g = self.lock();
        g.compacted = g.rv;
        g.history.clear();
    }

    /// Ends every open watch stream (cleanly, as a server-side timeout or an API server restart does).
    pub fn close_watches(&self) {
        self.closing.send_modify(|g| *g += 1);
    }

    /// From now on `verb` on `group`/`resource` answers 403 Forbidden, as a missing RBAC rule would.
    pub fn deny(&self, group: &str, resource: &str, verb: &str) {
        self.lock().denied.insert((group.into(), resource.into(), verb.into()));
    }

    /// Undoes every [`Cluster::deny`].
    pub fn allow_all(&self) {
        self.lock().denied.clear();
    }

    /// Every request served so far (what RBAC would have to allow).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }
}
