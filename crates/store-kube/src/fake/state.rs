//! The fake cluster's state: objects as plain JSON, one global resourceVersion counter (like the etcd revision
//! behind a real API server, shared by every resource type), and a bounded history of change events that
//! watches replay. Dropping history (the bound, or [`Cluster::compact`]) is what makes a too-old
//! resourceVersion answer 410 Gone, the case a client must survive by relisting.
//!
//! Why JSON and not k8s-openapi types: the fake must serve exactly what a client sent (unknown fields and all)
//! and the HTTP layer speaks JSON anyway; typed parsing belongs to the client under test.
//!
//! A std `Mutex` guards everything: no lock is held across an await, and every operation is short.
use super::patch::{self, PatchError};
use super::resources::{self, Resource};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Change events kept for watches; older resourceVersions get 410 Gone.
    pub history: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self { history: 10_000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub resource: Resource,
    pub namespace: String,
    pub kind: EventType,
    pub object: Value,
}

/// A failed API call, rendered by the HTTP layer as a `kind: Status` body with this code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into() }
    }

    fn not_found(res: Resource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(res)))
    }

    pub fn status_json(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code})
    }
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> Self {
        match e {
            PatchError::BadRequest(m) => ApiError::new(400, "BadRequest", m),
            PatchError::Invalid(m) => ApiError::new(422, "Invalid", m),
        }
    }
}

/// `base` with the `status` of `from` (or none, if `from` has none).
pub(super) fn keep_status_of(base: &Value, from: &Value) -> Value {
    let mut out = base.clone();
    if let Some(o) = out.as_object_mut() {
        match from.get("status") {
            Some(st) => o.insert("status".into(), st.clone()),
            None => o.remove("status"),
        };
    }
    out
}

/// `metadata.generation` + 1 when the spec changed, as the API server counts for resources with a status
/// subresource.
pub(super) fn bump_generation(cur: &Value, next: &mut Value) {
    if cur.get("spec") != next.get("spec") {
        let g = cur.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        next["metadata"]["generation"] = json!(g + 1);
    } else {
        next["metadata"]["generation"] = cur["metadata"]["generation"].clone();
    }
}

/// `nodes` or `leases.coordination.k8s.io`, as the API server names a resource in messages.
pub fn qualified(res: Resource) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestRecord {
    pub group: String,
    pub resource: String,
    pub verb: String,
    /// None for cluster-scoped calls and for namespaced collections across all namespaces.
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
    Json,
}

pub(super) type Key = (Resource, String, String);

#[derive(Default)]
pub(super) struct Inner {
    pub(super) rv: u64,
    pub(super) uid: u64,
    pub(super) objects: BTreeMap<Key, Value>,
    pub(super) history: VecDeque<Event>,
    /// Events at or below this resourceVersion are gone.
    pub(super) compacted: u64,
    pub(super) denied: HashSet<(String, String, String)>,
    pub(super) requests: Vec<RequestRecord>,
}

pub struct Cluster {
    inner: Mutex<Inner>,
    opts: ClusterOptions,
    changed: watch::Sender<u64>,
    pub(super) closing: watch::Sender<u64>,
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::from_second(secs as i64).map(|t| t.to_string()).unwrap_or_default()
}

impl Cluster {
    /// A cluster with the namespaces every real cluster has (`default`, `kube-system`).
    pub fn new(opts: ClusterOptions) -> Arc<Self> {
        let c = Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            opts,
            changed: watch::channel(0).0,
            closing: watch::channel(0).0,
        });
        for ns in ["default", "kube-system"] {
            c.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).expect("namespace");
        }
        c
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, res: Resource, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = (res, ns.unwrap_or_default().to_string(), name.to_string());
        self.lock().objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Objects of `res` (in `ns`, or everywhere) and the resourceVersion they are current at.
    pub fn list(&self, res: Resource, ns: Option<&str>) -> (Vec<Value>, u64) {
        let g = self.lock();
        let items = g
            .objects
            .iter()
            .filter(|((r, n, _), _)| *r == res && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect();
        (items, g.rv)
    }

    pub fn create(&self, res: Resource, ns: Option<&str>, mut obj: Value) -> Result<Value, ApiError> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::new(422, "Invalid", "metadata.name: Required value"))?
            .to_string();
        let ns = if res.namespaced {
            let ns = ns.or_else(|| obj.pointer("/metadata/namespace").and_then(Value::as_str)).unwrap_or("default");
            Some(ns.to_string())
        } else {
            None
        };
        let mut g = self.lock();
        if let Some(ns) = &ns {
            let ns_res = resources::by_plural("", "v1", "namespaces").expect("namespaces");
            if !g.objects.contains_key(&(ns_res, String::new(), ns.clone())) {
                return Err(ApiError::not_found(ns_res, ns));
            }
        }
        let key = (res, ns.clone().unwrap_or_default(), name.clone());
        if g.objects.contains_key(&key) {
            return Err(ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(res))));
        }
        g.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", g.uid);
        let m = &mut obj["metadata"];
        m["uid"] = json!(uid);
        m["creationTimestamp"] = json!(now_rfc3339());
        if let Some(ns) = &ns {
            m["namespace"] = json!(ns);
        }
        if res.kind == "Namespace" {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["status"] = json!({"phase": "Active"});
        }
        if res.status_subresource {
            // A CRD with a status subresource ignores `status` on create; generation counts spec changes.
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
            obj["metadata"]["generation"] = json!(1);
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        Ok(self.commit(&mut g, key, EventType::Added, obj))
    }

    pub fn patch(
        &self,
        res: Resource,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.patch_part(res, ns, name, kind, body, false)
    }

    /// A patch of the `status` subresource: only `status` changes, whatever else the patch says (404 for a
    /// resource that has no status subresource here).
    pub fn patch_status(
        &self,
        res: Resource,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
    ) -> Result<Value, ApiError> {
        if !res.status_subresource {
            return Err(ApiError::new(404, "NotFound", "fake apiserver: this resource has no status subresource"));
        }
        self.patch_part(res, ns, name, kind, body, true)
    }

    fn patch_part(
        &self,
        res: Resource,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let key = (res, ns.unwrap_or_default().to_string(), name.to_string());
        let mut g = self.lock();
        let cur = g.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(res, name))?;
        // Optimistic concurrency: a patch that names a resourceVersion applies only to that version.
        if let Some(want) = body.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            if Some(want) != cur.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply \
                         your changes to the latest version and try again",
                        qualified(res)
                    ),
                ));
            }
        }
        let mut next = cur.clone();
        match kind {
            PatchKind::Merge => patch::merge(&mut next, body),
            PatchKind::Strategic => patch::strategic(&mut next, body)?,
            PatchKind::Json => patch::json_patch(&mut next, body)?,
        }
        // Identity is not patchable.
        for f in ["name", "namespace", "uid", "creationTimestamp", "resourceVersion"] {
            next["metadata"][f] = cur["metadata"][f].clone();
        }
        next["apiVersion"] = cur["apiVersion"].clone();
        next["kind"] = cur["kind"].clone();
        if status {
            next = keep_status_of(&cur, &next);
        } else if res.status_subresource {
            next = keep_status_of(&next, &cur);
            bump_generation(&cur, &mut next);
        }
        if next == cur {
            // The real server neither bumps the version nor emits an event for a no-op patch.
            return Ok(cur);
        }
        Ok(self.commit(&mut g, key, EventType::Modified, next))
    }

    /// Deletes; `preconditions` is DeleteOptions.preconditions (`resourceVersion`, `uid`).
    pub fn delete(
        &self,
        res: Resource,
        ns: Option<&str>,
        name: &str,
        preconditions: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let key = (res, ns.unwrap_or_default().to_string(), name.to_string());
        let mut g = self.lock();
        let cur = g.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(res, name))?;
        for field in ["resourceVersion", "uid"] {
            if let Some(want) = preconditions.and_then(|p| p.get(field)).and_then(Value::as_str) {
                let have = cur["metadata"][field].as_str().unwrap_or_default();
                if want != have {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {field} in \
                             precondition: {want}, {field} in object meta: {have}",
                            qualified(res)
                        ),
                    ));
                }
            }
        }
        g.objects.remove(&key);
        Ok(self.commit(&mut g, key, EventType::Deleted, cur))
    }

    /// Assigns the next resourceVersion, stores (or forgets) the object, records the event, wakes watches.
    pub(super) fn commit(&self, g: &mut Inner, key: Key, kind: EventType, mut obj: Value) -> Value {
        g.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(g.rv.to_string());
        if kind != EventType::Deleted {
            g.objects.insert(key.clone(), obj.clone());
        }
        g.history.push_back(Event { rv: g.rv, resource: key.0, namespace: key.1, kind, object: obj.clone() });
        while g.history.len() > self.opts.history {
            if let Some(old) = g.history.pop_front() {
                g.compacted = old.rv;
            }
        }
        self.changed.send_replace(g.rv);
        obj
    }

    /// Events of `res` (in `ns`, or all) after `after`, and the version they bring a watcher to. Err(410) when
    /// history no longer reaches back to `after`.
    pub(crate) fn events_after(
        &self,
        res: Resource,
        ns: Option<&str>,
        after: u64,
    ) -> Result<(Vec<Event>, u64), ApiError> {
        let g = self.lock();
        if after < g.compacted {
            return Err(ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {after} ({})", g.compacted + 1),
            ));
        }
        let evs = g
            .history
            .iter()
            .filter(|e| e.rv > after && e.resource == res && ns.is_none_or(|ns| ns == e.namespace))
            .cloned()
            .collect();
        Ok((evs, g.rv.max(after)))
    }

    pub(crate) fn subscribe(&self) -> (watch::Receiver<u64>, watch::Receiver<u64>) {
        (self.changed.subscribe(), self.closing.subscribe())
    }

    /// Records a request and answers 403 if that verb on that resource was denied with [`Cluster::deny`].
    /// `subresource`: `Some("status")` for `networks/status`, which RBAC names as its own resource.
    pub(crate) fn authorize(
        &self,
        res: Resource,
        subresource: Option<&str>,
        verb: &str,
        ns: Option<&str>,
    ) -> Result<(), ApiError> {
        let resource = match subresource {
            Some(sub) => format!("{}/{sub}", res.plural),
            None => res.plural.to_string(),
        };
        let mut g = self.lock();
        g.requests.push(RequestRecord {
            group: res.group.into(),
            resource: resource.clone(),
            verb: verb.into(),
            namespace: ns.map(str::to_string),
        });
        if g.denied.contains(&(res.group.to_string(), resource.clone(), verb.to_string())) {
            let scope = ns.map_or("at the cluster scope".to_string(), |n| format!("in the namespace \"{n}\""));
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{} is forbidden: User \"system:serviceaccount:weft-system:weft\" cannot {verb} resource \
                     \"{}\" in API group \"{}\" {scope}",
                    qualified(res),
                    resource,
                    res.group
                ),
            ));
        }
        Ok(())
    }
}
