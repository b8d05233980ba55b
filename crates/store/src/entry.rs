//! A lease as the store holds it: the value, plus where it is stored and when it was created. Admission
//! ([`crate::admit`]) needs both: a value must agree with its key (a lease keyed by subnet A cannot claim B),
//! and of two leases that overlap the older one wins, which only the store can tell.
//!
//! An entry whose value does not decode is still an entry (`lease` is `Err`): the consumer skips it and reports
//! its key, and a watch can replace a good value by a bad one without the consumer keeping the stale good one.
use ipnet::Ipv4Net;
use weft_types::Lease;

/// Creation order of a stored lease or object; lower is older. Each store fills it with what it has:
/// etcd `(create_revision, key)`, SQLite `(rowid, key)`, Kubernetes `(creationTimestamp in s, name)`. An update
/// keeps it; only a delete and a new create makes an object younger.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Created(pub i64, pub String);

/// (Serialize only so that watchers can fingerprint what they last delivered.)
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LeaseEntry {
    /// Where the lease is stored (etcd key, SQLite node column, Kubernetes Node name): what an operator deletes
    /// to get rid of it, and what a watch's `Delete` names.
    pub key: String,
    /// The subnet the key itself names, where a store keys leases by subnet (etcd, SQLite).
    pub key_subnet: Option<Ipv4Net>,
    /// The node the key itself names, where a store keys leases by node (SQLite, Kubernetes).
    pub key_node: Option<String>,
    pub created: Created,
    /// The decoded value, or why it did not decode.
    pub lease: Result<Lease, String>,
}

impl LeaseEntry {
    /// An entry for a store that keys leases by node name and has no creation order of its own.
    pub fn by_node(lease: Lease) -> Self {
        Self {
            key: lease.node.clone(),
            key_subnet: None,
            key_node: Some(lease.node.clone()),
            created: Created(0, lease.node.clone()),
            lease: Ok(lease),
        }
    }
}

/// A stored item that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub key: String,
    pub reason: String,
}

/// A stored object with its creation order: what tenant-network admission needs, where the oldest of two
/// conflicting networks wins (a newer object must not take a running network's VNI or namespaces, whatever its
/// name). (Serialize only so that watchers can fingerprint what they last delivered.)
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ObjectEntry {
    pub key: String,
    pub created: Created,
    pub value: serde_json::Value,
}

impl ObjectEntry {
    /// An entry for a store with no creation order of its own: ordered by key.
    pub fn by_key((key, value): crate::Object) -> Self {
        Self { created: Created(0, key.clone()), key, value }
    }

    pub fn into_object(self) -> crate::Object {
        (self.key, self.value)
    }
}
