//! A fake Kubernetes API server, for tests and the lab: no Kubernetes API server can run on our machines.
//!
//! It is a fake, not an emulator. It speaks real Kubernetes JSON over plain HTTP (no TLS, no authentication)
//! for the calls weft makes, on Nodes, Namespaces, Pods, ConfigMaps, NetworkPolicies, coordination Leases and
//! weft's Networks (`networks.weft.dev`, with the `status` subresource of a CRD: status dropped on create, kept
//! by main-resource writes, the only thing `/status` patches change; `metadata.generation` counts spec changes):
//! get, list (with the list's resourceVersion), watch (resourceVersion replay, bookmarks, 410 Gone past the
//! kept history, server-side timeout), create (409 AlreadyExists), merge / strategic-merge (maps only) / JSON
//! patch (409 Conflict on a stale `metadata.resourceVersion`), delete (with resourceVersion/uid
//! preconditions). It also checks that a namespaced object's namespace exists, and records every request so a
//! test can compare what was called with what RBAC grants.
//!
//! What it does NOT do, so tests against it prove nothing about these: authentication and real RBAC evaluation
//! (only [`Cluster::deny`] to simulate a 403), admission (no NodeRestriction, no defaults beyond uid,
//! creationTimestamp and the namespace name label), validation of object schemas (a Network is not checked
//! against the CRD's OpenAPI schema; tests/manifests.rs checks the schema itself), label/field selectors,
//! pagination, PUT, server-side apply, subresources other than Networks' `/status`, garbage collection through
//! ownerReferences, watch caches (its resourceVersions are one exact global counter), HTTP/2, and the
//! controller manager's podCIDR allocation (a test sets `spec.podCIDR` itself, see [`Cluster::add_node`]).
//!
//! Layout: [`state`] holds the objects and history, [`http`] maps requests to it, [`patch`] the patch formats,
//! [`resources`] the served types.
mod control;
mod http;
pub mod patch;
pub mod resources;
pub mod state;

pub use state::{ApiError, Cluster, ClusterOptions, PatchKind, RequestRecord};

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct FakeOptions {
    pub cluster: ClusterOptions,
    /// How often a watch that asked for bookmarks gets one (a real server: about a minute).
    pub bookmark_interval: Duration,
    /// Upper bound on a watch's life whatever `timeoutSeconds` asks: makes clients resume often.
    pub max_watch: Option<Duration>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self { cluster: ClusterOptions::default(), bookmark_interval: Duration::from_secs(1), max_watch: None }
    }
}

/// A running fake API server. Dropping it stops accepting connections and ends open watches.
pub struct FakeApiServer {
    cluster: Arc<Cluster>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Serves a new empty cluster (namespaces `default` and `kube-system` only) on `addr` (port 0: any free).
    pub async fn start(addr: SocketAddr, opts: FakeOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Self::serve(listener, Cluster::new(opts.cluster.clone()), opts)
    }

    /// Serves `cluster` on an already bound listener (the caller chose the address).
    pub fn serve(listener: tokio::net::TcpListener, cluster: Arc<Cluster>, opts: FakeOptions) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let server = Arc::new(http::Server { cluster: cluster.clone(), opts });
        let app = axum::Router::new().fallback(http::handle).with_state(server);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "fake apiserver stopped");
            }
        });
        Ok(Self { cluster, addr, stop, task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store URL that points weft at this server: `kube+http://127.0.0.1:PORT`.
    pub fn store_url(&self) -> String {
        format!("kube+http://{}", self.addr)
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Stops listening and ends open watches; returns when the server task has finished.
    pub async fn stop(mut self) {
        self.cluster.close_watches();
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.cluster.close_watches();
        let _ = self.stop.send(true);
    }
}

/// Parses JSON or (multi-document) YAML into objects; a `kind: List` (or any document with `items`) is
/// unpacked, so `kubectl get -o yaml` output seeds a cluster as is.
pub fn parse_documents(bytes: &[u8]) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_slice(bytes) {
        let v = Value::deserialize(doc).map_err(|e| format!("not JSON or YAML: {e}"))?;
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("items").is_some_and(Value::is_array) => {
                out.extend(m["items"].as_array().into_iter().flatten().cloned());
            }
            Value::Object(_) => out.push(v),
            other => return Err(format!("expected an object, got {other}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_from_yaml_lists_and_json() {
        let y = b"apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: b}}\n";
        let d = parse_documents(y).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1]["metadata"]["name"], "b");
        assert_eq!(parse_documents(br#"{"kind":"Node"}"#).unwrap().len(), 1);
        assert!(parse_documents(b"- 1\n- 2\n").is_err());
    }
}
