//! Every Kubernetes API call weft makes goes through [`Calls`], and [`API_CALLS`] lists them all.
//!
//! Why: RBAC in deploy/weft.yaml must grant exactly what the code calls, no more (least privilege) and no less
//! (a missing verb is a 403 in production only). The list is kept honest three ways: `Calls` derives the
//! resource from the Rust type and the verb from the method, and refuses (with [`KubeError::Undeclared`]) any
//! call not in the list; the manifest test compares the list with the ClusterRole and Role rules; and a test
//! drives every store operation against the fake API server and compares the requests it saw with the list.
//!
//! `kube::Api` is used nowhere else in the crate.
use crate::error::KubeError;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, GetParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchParams};
use kube::core::{ObjectList, WatchEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// The namespace weft's own objects live in (its ConfigMap and subnet claims), as deploy/weft.yaml creates it.
pub const SYSTEM_NAMESPACE: &str = "weft-system";

/// One permission weft needs: `namespace` None is cluster-wide (the ClusterRole), `Some` is a Role there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiCall {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub namespace: Option<&'static str>,
}

impl ApiCall {
    /// The admission operation a write becomes (`patch` is an UPDATE), None for reads. Every write is one the
    /// ValidatingAdmissionPolicy in deploy/weft.yaml limits to the agent's own node: RBAC grants the verb on
    /// every object of the kind, the policy narrows it to the caller's Node and claims (tests/admission.rs).
    pub const fn admission_operation(&self) -> Option<&'static str> {
        match self.verb.as_bytes() {
            b"patch" | b"update" => Some("UPDATE"),
            b"create" => Some("CREATE"),
            b"delete" => Some("DELETE"),
            _ => None,
        }
    }
}

const fn cluster(group: &'static str, resource: &'static str, verb: &'static str) -> ApiCall {
    ApiCall { group, resource, verb, namespace: None }
}

const fn system(group: &'static str, resource: &'static str, verb: &'static str) -> ApiCall {
    ApiCall { group, resource, verb, namespace: Some(SYSTEM_NAMESPACE) }
}

/// Every call the Kubernetes store makes. Nodes: read all (peers, taken subnets), patch (own annotations).
/// Pods, Namespaces, NetworkPolicies: list and watch for the policy model. Networks (weft.dev): list and watch;
/// the one write is a merge patch of the status subresource (each agent's `status.nodes.<node>`). ConfigMap: the network config.
/// coordination Leases: per-subnet claims, the compare-and-swap of weft's own allocation, read (list, watch,
/// get) by every agent to check that a Node's weft-allocated subnet is its own. RBAC grants each write
/// on every object of its kind; the admission policy keeps it to the agent's own Node and claims.
pub const API_CALLS: &[ApiCall] = &[
    cluster("", "nodes", "get"),
    cluster("", "nodes", "list"),
    cluster("", "nodes", "watch"),
    cluster("", "nodes", "patch"),
    cluster("", "pods", "list"),
    cluster("", "pods", "watch"),
    cluster("", "namespaces", "list"),
    cluster("", "namespaces", "watch"),
    cluster("networking.k8s.io", "networkpolicies", "list"),
    cluster("networking.k8s.io", "networkpolicies", "watch"),
    cluster("weft.dev", "networks", "list"),
    cluster("weft.dev", "networks", "watch"),
    cluster("weft.dev", "networks/status", "patch"),
    system("", "configmaps", "get"),
    system("", "configmaps", "create"),
    system("coordination.k8s.io", "leases", "get"),
    system("coordination.k8s.io", "leases", "list"),
    system("coordination.k8s.io", "leases", "watch"),
    system("coordination.k8s.io", "leases", "create"),
    system("coordination.k8s.io", "leases", "delete"),
];

/// A connected client and what error messages need (the API URL).
#[derive(Clone)]
pub(crate) struct Kube {
    pub client: kube::Client,
    pub url: Arc<str>,
    /// Bound on every call but a watch's stream (a hung API server must not hang the agent).
    pub op_timeout: Duration,
}

pub(crate) trait Object:
    kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
}
impl<K> Object for K where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
}

impl Kube {
    /// Calls on a cluster-scoped resource, or on a namespaced one across all namespaces.
    pub fn cluster<K: Object>(&self) -> Calls<K> {
        Calls { api: Api::all(self.client.clone()), ns: None, kube: self.clone() }
    }

    /// Calls in weft's own namespace.
    pub fn system<K: Object + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>>(&self) -> Calls<K> {
        Calls {
            api: Api::namespaced(self.client.clone(), SYSTEM_NAMESPACE),
            ns: Some(SYSTEM_NAMESPACE),
            kube: self.clone(),
        }
    }
}

pub(crate) struct Calls<K> {
    api: Api<K>,
    ns: Option<&'static str>,
    kube: Kube,
}

pub(crate) type EventStream<K> = futures::stream::BoxStream<'static, Result<WatchEvent<K>, KubeError>>;

impl<K: Object> Calls<K> {
    fn resource() -> String {
        let (g, p) = (K::group(&()), K::plural(&()));
        if g.is_empty() {
            p.into_owned()
        } else {
            format!("{p}.{g}")
        }
    }

    fn scope(&self) -> String {
        self.ns.map_or_else(|| "at the cluster scope".to_string(), |n| format!("in namespace {n}"))
    }

    /// `subresource`: `Some("status")` for `networks/status`, as RBAC names it.
    fn check_sub(&self, verb: &'static str, subresource: Option<&str>) -> Result<(), KubeError> {
        let g = K::group(&());
        let p = match subresource {
            Some(sub) => format!("{}/{sub}", K::plural(&())),
            None => K::plural(&()).into_owned(),
        };
        let declared =
            API_CALLS.iter().any(|c| c.group == g && c.resource == p && c.verb == verb && c.namespace == self.ns);
        if declared {
            Ok(())
        } else {
            Err(KubeError::Undeclared { verb, resource: Self::resource() })
        }
    }

    fn err(&self, verb: &'static str, e: kube::Error) -> KubeError {
        KubeError::from_kube(e, &self.kube.url, verb, &Self::resource(), &self.scope())
    }

    async fn run<T>(
        &self,
        verb: &'static str,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeError> {
        self.run_sub(verb, None, f).await
    }

    async fn run_sub<T>(
        &self,
        verb: &'static str,
        subresource: Option<&str>,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeError> {
        self.check_sub(verb, subresource)?;
        match tokio::time::timeout(self.kube.op_timeout, f).await {
            Ok(r) => r.map_err(|e| self.err(verb, e)),
            Err(_) => Err(KubeError::Unreachable {
                url: self.kube.url.to_string(),
                verb,
                resource: Self::resource(),
                detail: format!("no answer within {:?}", self.kube.op_timeout),
            }),
        }
    }

    /// None if the object does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<K>, KubeError> {
        match self.run("get", self.api.get(name)).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Like [`Calls::get`], but served from the API server's watch cache (`resourceVersion=0`): possibly a
    /// moment behind, and no etcd read. For frequent checks (renewals) where slightly stale is fine.
    pub async fn get_cached(&self, name: &str) -> Result<Option<K>, KubeError> {
        match self.run("get", self.api.get_with(name, &GetParams::any())).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The whole collection, current (no resourceVersion: a quorum read on a real server).
    pub async fn list(&self) -> Result<ObjectList<K>, KubeError> {
        self.run("list", self.api.list(&ListParams::default())).await
    }

    /// JSON merge patch (RFC 7386): maps merge, `null` removes a key, everything not named is left alone.
    pub async fn merge_patch(&self, name: &str, patch: &serde_json::Value) -> Result<K, KubeError> {
        self.run("patch", self.api.patch(name, &PatchParams::default(), &Patch::Merge(patch))).await
    }

    /// JSON merge patch of the `status` subresource (only `status` changes, whatever the patch says).
    pub async fn merge_patch_status(&self, name: &str, patch: &serde_json::Value) -> Result<K, KubeError> {
        let (pp, patch) = (PatchParams::default(), Patch::Merge(patch));
        self.run_sub("patch", Some("status"), self.api.patch_status(name, &pp, &patch)).await
    }

    pub async fn create(&self, obj: &K) -> Result<K, KubeError> {
        self.run("create", self.api.create(&PostParams::default(), obj)).await
    }

    /// Deletes only if the object is still at `resource_version` (409 otherwise); 404 if already gone.
    pub async fn delete_at(&self, name: &str, resource_version: Option<String>) -> Result<(), KubeError> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions { resource_version, uid: None }),
            ..DeleteParams::default()
        };
        self.run("delete", self.api.delete(name, &dp)).await.map(|_| ())
    }

    /// Watch events after `resource_version`, with bookmarks. Only opening the stream is bounded in time.
    pub async fn watch(&self, resource_version: &str) -> Result<EventStream<K>, KubeError> {
        // Bookmarks are on by default: they move the resume point forward without any change to report.
        let wp = WatchParams::default();
        let stream = self.run("watch", self.api.watch(&wp, resource_version)).await?;
        let (url, resource, scope) = (self.kube.url.clone(), Self::resource(), self.scope());
        Ok(stream.map(move |r| r.map_err(|e| KubeError::from_kube(e, &url, "watch", &resource, &scope))).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_map_to_admission_operations_and_reads_to_none() {
        let op = |verb| ApiCall { group: "", resource: "nodes", verb, namespace: None }.admission_operation();
        assert_eq!(op("patch"), Some("UPDATE"));
        assert_eq!(op("create"), Some("CREATE"));
        assert_eq!(op("delete"), Some("DELETE"));
        for read in ["get", "list", "watch"] {
            assert_eq!(op(read), None);
        }
        // Every verb weft uses is one of the above: a new verb must be classified before it can be declared.
        for c in API_CALLS {
            assert!(["get", "list", "watch", "patch", "create", "delete"].contains(&c.verb), "{c:?}");
        }
    }
}
