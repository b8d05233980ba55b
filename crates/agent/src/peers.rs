//! Other nodes' leases: followed from the store as entries (see [`crate::follow`]), then admitted
//! ([`weft_store::admit`]) before anything reaches the dataplane.
//!
//! Two stages, so the store loop stays the generic one: `follow` keeps the map of stored entries (by store
//! key, undecodable ones included), and the admission loop here turns it, with this node's current lease and
//! the cluster config, into the peer map the reconciler programs. Admission runs again whenever the entries or
//! the local lease change. Refusals are reported where an operator looks: a warning per refused key each time
//! its reason changes, `rejectedPeers` in the status, and the `weft_peers_rejected` gauge.
use crate::follow::{follow, Listed, Map, Source};
use crate::metrics::Metrics;
use crate::status::{RejectedPeer, SharedStatus};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::watch;
use weft_store::{admit, LeaseEntry, Revision, Rules, Snapshot, Store, StoreError, WatchStream};
use weft_types::{Lease, NetworkConfig};

/// Admitted leases by node name (the local node's own lease included when listed).
pub type PeerMap = Map<Lease>;

struct Entries(Arc<dyn Store>);

impl Source<LeaseEntry> for Entries {
    fn list(&self) -> BoxFuture<'_, Result<Snapshot<LeaseEntry>, StoreError>> {
        self.0.lease_entries()
    }
    fn watch(&self, after: Revision) -> BoxFuture<'_, Result<WatchStream<LeaseEntry>, StoreError>> {
        self.0.watch_lease_entries(after)
    }
    fn key(&self, e: &LeaseEntry) -> String {
        e.key.clone()
    }
    fn what(&self) -> &'static str {
        "leases"
    }
}

/// Renewals only move the expiry time: not a change worth a reconcile.
fn same(a: &Lease, b: &Lease) -> bool {
    a.node == b.node
        && a.subnet == b.subnet
        && a.subnet6 == b.subnet6
        && a.node_ip == b.node_ip
        && a.backend_data == b.backend_data
}

fn same_entry(a: &LeaseEntry, b: &LeaseEntry) -> bool {
    let lease = match (&a.lease, &b.lease) {
        (Ok(x), Ok(y)) => same(x, y),
        (Err(x), Err(y)) => x == y,
        _ => false,
    };
    lease && a.key == b.key && a.key_subnet == b.key_subnet && a.key_node == b.key_node && a.created == b.created
}

/// What the peer follower needs besides the store.
pub struct PeerFollower {
    pub store: Arc<dyn Store>,
    pub cfg: NetworkConfig,
    /// This node's current lease (it changes when the lease is lost and another subnet acquired).
    pub me: watch::Receiver<Lease>,
    pub status: SharedStatus,
    pub metrics: Arc<Metrics>,
}

pub async fn watch_peers(f: PeerFollower, tx: watch::Sender<Listed<Lease>>, mut shutdown: watch::Receiver<bool>) {
    let (entries_tx, mut entries_rx) = watch::channel::<Listed<LeaseEntry>>(None);
    let follower =
        tokio::spawn(follow(Entries(f.store.clone()), entries_tx, same_entry, f.metrics.clone(), shutdown.clone()));
    let mut me = f.me;
    let mut reported: HashMap<String, String> = HashMap::new();
    loop {
        let entries = entries_rx.borrow_and_update().clone();
        if let Some(entries) = entries {
            let local = me.borrow_and_update().clone();
            let peers = admitted(&f.cfg, &local, &entries, &f.status, &f.metrics, &mut reported);
            publish(&tx, peers);
        }
        tokio::select! {
            r = entries_rx.changed() => if r.is_err() { break },
            r = me.changed() => if r.is_err() { break },
            _ = shutdown.wait_for(|v| *v) => break,
        }
    }
    let _ = follower.await;
}

/// Runs admission, reports refusals, and returns the admitted leases by node.
fn admitted(
    cfg: &NetworkConfig,
    local: &Lease,
    entries: &BTreeMap<String, LeaseEntry>,
    status: &SharedStatus,
    metrics: &Metrics,
    reported: &mut HashMap<String, String>,
) -> BTreeMap<String, Lease> {
    let a = admit(Rules::new(cfg, Some(local)), entries.values());
    let mut now = HashMap::new();
    for r in &a.refused {
        let reason = r.reason.to_string();
        if reported.get(&r.key) != Some(&reason) {
            tracing::warn!(key = %r.key, node = ?r.node, %reason, "refusing a lease: not programmed");
        }
        now.insert(r.key.clone(), reason);
    }
    for key in reported.keys().filter(|k| !now.contains_key(*k)) {
        tracing::info!(%key, "a previously refused lease is gone or admitted now");
    }
    *reported = now;
    metrics.peers_rejected.set(a.refused.len() as i64);
    status.write().expect("status lock").rejected_peers = a
        .refused
        .iter()
        .map(|r| RejectedPeer { key: r.key.clone(), node: r.node.clone(), reason: r.reason.to_string() })
        .collect();
    a.admitted.into_iter().map(|(_, l)| (l.node.clone(), l)).collect()
}

fn publish(tx: &watch::Sender<Listed<Lease>>, map: BTreeMap<String, Lease>) {
    let changed = match &*tx.borrow() {
        None => true,
        Some(cur) => {
            cur.len() != map.len() || cur.iter().zip(map.iter()).any(|((ka, a), (kb, b))| ka != kb || !same(a, b))
        }
    };
    if changed {
        tx.send_replace(Some(Arc::new(map)));
    }
}

pub use crate::follow::sleep_or_shutdown;

#[cfg(test)]
mod tests {
    use super::*;
    use weft_store::Created;

    #[test]
    fn refusals_reach_status_and_metrics_and_the_rest_is_admitted() {
        let cfg: NetworkConfig = serde_json::from_value(serde_json::json!({"clusterCidr": "10.244.0.0/16"})).unwrap();
        let lease = |node: &str, i: u64| Lease {
            node: node.into(),
            subnet: cfg.subnet(i).unwrap(),
            subnet6: None,
            node_ip: "192.0.2.9".parse().unwrap(),
            backend_data: weft_types::BackendData::HostGw,
            expires_at_ms: 0,
        };
        let me = lease("me", 1);
        let mut entries = BTreeMap::new();
        for (i, l) in [lease("me", 1), lease("peer", 2), lease("rogue", 1)].into_iter().enumerate() {
            let mut e = LeaseEntry::by_node(l);
            e.created = Created(i as i64, e.key.clone());
            entries.insert(e.key.clone(), e);
        }
        let bad = LeaseEntry { lease: Err("expected value".into()), ..LeaseEntry::by_node(lease("junk", 3)) };
        entries.insert("junk".into(), bad);
        let status = SharedStatus::default();
        let metrics = Metrics::default();
        let mut reported = HashMap::new();
        let peers = admitted(&cfg, &me, &entries, &status, &metrics, &mut reported);
        assert_eq!(peers.keys().collect::<Vec<_>>(), ["me", "peer"]);
        assert_eq!(metrics.peers_rejected.get(), 2);
        let st = status.read().unwrap();
        let keys: Vec<_> = st.rejected_peers.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["junk", "rogue"]);
        assert!(st.rejected_peers[1].reason.contains("local node's subnet"), "{:?}", st.rejected_peers);
        assert!(metrics.encode().contains("weft_peers_rejected 2"));
    }
}
