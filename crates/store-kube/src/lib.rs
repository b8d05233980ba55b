//! weft's store on the Kubernetes API: the third implementation of `weft_store::Store`, for weft running as a
//! DaemonSet. The API server is the source of truth; weft keeps no database of its own.
//!
//! A separate crate (not a module of weft-store) so that kube-rs and k8s-openapi stay out of the CNI plugin's
//! and the lab's build.
//!
//! # Mapping
//! | Store                      | Kubernetes                                                                    |
//! |----------------------------|-------------------------------------------------------------------------------|
//! | network config             | ConfigMap `weft-system/weft-config`, key `network.json`; init creates it if absent (create is atomic: first writer wins) |
//! | a node's lease             | its Node: subnet from `spec.podCIDR(s)`, else weft's own claim; node IP, backend data, times as `weft.dev/*` annotations ([`node`]) |
//! | own allocation             | one `coordination.k8s.io` Lease per subnet in `weft-system`, created atomically ([`alloc`]) |
//! | leases / watch_leases      | list / watch Nodes (and claims); Nodes without weft annotations are not leases; a weft-allocated subnet counts only with its Node's claim |
//! | release                    | remove the weft annotations, delete the node's claims                         |
//! | expiry                     | none: Nodes do not expire. A lease ends on release or Node deletion           |
//! | renew                      | check the Node still has the lease; write only if attributes changed or `renewed-at` is older than [`store::REFRESH`] (5 min) |
//! | Endpoint / Namespace / Policy objects | Pods / Namespaces / NetworkPolicies, list and watch ([`objects`]) |
//! | Network / NetworkStatus objects | Networks (`networks.weft.dev`, the CRD): spec as the network, `status.nodes.<node>` per node ([`network`]) |
//! | put_object / delete_object | NetworkStatus: merge patch of the Network's status subresource; every other kind is refused: read-only, the API server is the source of truth |
//! | Revision                   | the list's resourceVersion ([`rv`] for non-numeric ones)                      |
//! | Reset                      | 410 Gone on a watch ([`watch`])                                               |
//!
//! Contract differences, on purpose: leases never expire by TTL (a TTL test does not apply; `expires_at_ms`
//! is published for information only); a node must exist as a Node before it can acquire (the kubelet
//! registers it); objects cannot be written through the store, except each node's network status; a watch of
//! network statuses must start from a revision this store instance listed them at (else it gets `Reset` at once:
//! a MODIFIED Network does not say which node entries it held before), and so must a lease watch (other than from 0):
//! it resumes from the Nodes and claims that list judged with.
//!
//! Errors: an unreachable API server (or 429/5xx) is `StoreError::Unavailable` naming the URL; a 403 is
//! `StoreError::Other` naming the verb and resource RBAC must grant; misconfiguration (podCIDR outside the
//! cluster CIDR, unknown Node, missing namespace) is `StoreError::Other` with what to fix.
//!
//! # Layout
//! - [`calls`]: the only place API calls are made, and [`API_CALLS`], the list RBAC must grant.
//! - [`store`]: [`KubeStore`], the trait methods. [`alloc`]: own allocation; `claimed`: Nodes' leases checked
//!   against their claims, and the merged Node + claim watch. [`node`], [`objects`]: pure
//!   conversions; [`network`]: the Network CRD type and its conversions. [`watch`]: watch event mapping. [`rv`]: resourceVersions. [`url`]: store URLs.
//! - [`fake`]: a fake API server for tests and the lab (and the `weft-fake-apiserver` binary).
#![forbid(unsafe_code)]

pub mod alloc;
pub mod calls;
mod claimed;
pub mod error;
pub mod fake;
pub mod network;
pub mod node;
pub mod objects;
mod rv;
pub mod store;
pub mod url;
mod watch;

pub use calls::{ApiCall, API_CALLS, SYSTEM_NAMESPACE};
pub use error::KubeError;
pub use store::{KubeStore, CONFIG_KEY, CONFIG_MAP};
pub use url::KubeUrl;

use std::sync::Arc;
use weft_store::{Store, StoreError};

/// True for the URLs this crate serves (`kube://`, `kube+http://`): what a binary checks before dispatching.
pub fn handles(url: &str) -> bool {
    url.starts_with("kube://") || url.starts_with("kube+http://") || url.starts_with("kube+https://")
}

/// Opens the Kubernetes store a `kube://` or `kube+http://HOST:PORT` URL names.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(KubeStore::connect(url).await?))
}
