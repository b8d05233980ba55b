//! The store: where node leases, pods (endpoints), namespaces and policies live.
//!
//! One trait, [`Store`], several implementations; the agent never knows which one it runs on, and one contract
//! test suite runs against each:
//! - `embedded` (default): a SQLite file several agents on one host share (the lab); watch by cheap polling
//!   of a change log.
//! - `etcd`: TTL leases with keep-alive, compare-and-swap allocation, watch resuming from its revision.
//!
//! Watch contract: a stream of [`WatchEvent`]s after a revision. When history is lost (etcd compaction, change
//! log trimmed, reconnect that cannot resume) the stream yields [`WatchEvent::Reset`] and the consumer relists.
//! Consumers are level-triggered anyway: an event only says "look again". After `Reset`, and after an
//! `Unavailable` error (etcd unreachable), the stream ends: watch again from your last snapshot's revision
//! (replaying from there is harmless) or relist after `Reset`. Events carry no revision, so resuming is always
//! from a snapshot.
//!
//! Stored rows are hostile input: a row that does not decode never fails a list or a watch. `leases()` and
//! `objects()` leave it out with a warning naming its key (an object watch reports it as a `Delete` of its key,
//! a lease watch as `Reset`); `lease_entries()` keeps it as an undecodable entry, so the consumer can report it.
//! What reaches the dataplane goes through [`admit()`] first.
//!
//! Layout:
//! - [`entry`](LeaseEntry): a lease with its key and creation order; [`admit`]: which leases may reach the
//!   dataplane (pure).
//! - [`alloc`]: the subnet choice (own lease, hint, free scan), pure and shared by both implementations.
//! - [`embedded`]: the SQLite store; [`clock`]: injected time for its TTLs.
//! - [`etcd`]: the etcd store.
//! - [`open()`]: a store from a URL (`embedded:///path.db`, `etcd://host:port`, `etcds://host:port`), what
//!   binaries call; [`open_with()`] adds etcd TLS files and credentials.
#![forbid(unsafe_code)]

pub mod admit;
pub mod alloc;
pub mod clock;
pub mod embedded;
mod entry;
pub mod etcd;
mod open;

pub use admit::{admit, Admission, Reason, Refusal, Rules};
pub use clock::{Clock, ManualClock, SystemClock};
pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use entry::{Created, LeaseEntry, ObjectEntry, Rejected};
pub use etcd::{EtcdOptions, EtcdSecurity, EtcdSecurityFiles, EtcdStore};
pub use open::{open, open_with, StoreUrl};

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::time::Duration;
use weft_types::{Lease, LeaseRequest, NetworkConfig};

pub type Revision = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A pod as policy sees it (namespace, name, labels, IPs, named ports, node). Key: `namespace/name`.
    Endpoint,
    /// A namespace and its labels. Key: name.
    Namespace,
    /// A Kubernetes NetworkPolicy (JSON as the API serves it). Key: `namespace/name`.
    Policy,
    /// A tenant network (`weft_types::TenantNetwork` JSON). Key: its name.
    Network,
    /// One node's view of one tenant network (`weft_types::tenant::NetworkNodeStatus`). Key: `network/node`.
    NetworkStatus,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Endpoint => "endpoints",
            ObjectKind::Namespace => "namespaces",
            ObjectKind::Policy => "policies",
            ObjectKind::Network => "networks",
            ObjectKind::NetworkStatus => "network-status",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<T> {
    pub items: Vec<T>,
    /// Watch from here to see every change after this snapshot.
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    Put(T),
    /// The key (node name for leases) that went away: deleted, released or expired.
    Delete(String),
    /// History was lost: relist, then watch from the new snapshot's revision.
    Reset,
}

pub type WatchStream<T> = BoxStream<'static, Result<WatchEvent<T>, StoreError>>;

/// A stored object: its key and its JSON value.
pub type Object = (String, serde_json::Value);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no cluster network config in the store")]
    NoNetworkConfig,
    #[error("no free subnet left in {0}")]
    Exhausted(String),
    #[error("lease of node {0} is gone (expired or taken over)")]
    LeaseLost(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Other(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn network_config(&self) -> Result<NetworkConfig, StoreError>;
    /// Sets the config if none is stored; returns the stored one (first writer wins, so agents agree).
    async fn init_network_config(&self, cfg: &NetworkConfig) -> Result<NetworkConfig, StoreError>;

    /// Acquires a subnet for `req.node`, atomically. A live lease of the same node is taken over with the same
    /// subnet (restart keeps the subnet); else `req.hint` if free; else a free subnet. Never two nodes, one subnet.
    async fn acquire(&self, req: &LeaseRequest) -> Result<Lease, StoreError>;
    /// Extends the lease by `ttl` and updates its published attributes; `LeaseLost` if it lapsed and was taken.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError>;
    /// Gives the subnet back now.
    async fn release(&self, node: &str) -> Result<(), StoreError>;
    /// Live (unexpired) leases that decode; an undecodable one is left out with a warning naming its key.
    async fn leases(&self) -> Result<Snapshot<Lease>, StoreError>;
    async fn watch_leases(&self, after: Revision) -> Result<WatchStream<Lease>, StoreError>;
    /// Live leases as stored, with their keys and creation order, undecodable ones included (as `Err`): what
    /// [`admit()`] needs. The default suits a store keyed by node name with no creation order of its own.
    async fn lease_entries(&self) -> Result<Snapshot<LeaseEntry>, StoreError> {
        let snap = self.leases().await?;
        Ok(Snapshot { items: snap.items.into_iter().map(LeaseEntry::by_node).collect(), revision: snap.revision })
    }
    /// Watch of [`Store::lease_entries`]: `Put` of an entry (maybe undecodable), `Delete` of its key.
    async fn watch_lease_entries(&self, after: Revision) -> Result<WatchStream<LeaseEntry>, StoreError> {
        use futures::StreamExt;
        let s = self.watch_leases(after).await?;
        Ok(s.map(|ev| {
            ev.map(|ev| match ev {
                WatchEvent::Put(l) => WatchEvent::Put(LeaseEntry::by_node(l)),
                WatchEvent::Delete(k) => WatchEvent::Delete(k),
                WatchEvent::Reset => WatchEvent::Reset,
            })
        })
        .boxed())
    }

    async fn put_object(&self, kind: ObjectKind, key: &str, value: &serde_json::Value) -> Result<Revision, StoreError>;
    /// Deleting a missing key succeeds.
    async fn delete_object(&self, kind: ObjectKind, key: &str) -> Result<(), StoreError>;
    async fn objects(&self, kind: ObjectKind) -> Result<Snapshot<Object>, StoreError>;
    async fn watch_objects(&self, kind: ObjectKind, after: Revision) -> Result<WatchStream<Object>, StoreError>;
    /// [`Store::objects`] with each object's creation order (in key order, like `objects`). The default (every
    /// object equally old, so ordered by key) suits a store with no creation order of its own; the embedded,
    /// etcd and Kubernetes stores override it.
    async fn object_entries(&self, kind: ObjectKind) -> Result<Snapshot<ObjectEntry>, StoreError> {
        let snap = self.objects(kind).await?;
        Ok(Snapshot { items: snap.items.into_iter().map(ObjectEntry::by_key).collect(), revision: snap.revision })
    }
    /// Watch of [`Store::object_entries`].
    async fn watch_object_entries(
        &self,
        kind: ObjectKind,
        after: Revision,
    ) -> Result<WatchStream<ObjectEntry>, StoreError> {
        use futures::StreamExt;
        let s = self.watch_objects(kind, after).await?;
        Ok(s.map(|ev| {
            ev.map(|ev| match ev {
                WatchEvent::Put(o) => WatchEvent::Put(ObjectEntry::by_key(o)),
                WatchEvent::Delete(k) => WatchEvent::Delete(k),
                WatchEvent::Reset => WatchEvent::Reset,
            })
        })
        .boxed())
    }
}
