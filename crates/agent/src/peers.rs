//! Other nodes' leases, followed from the store (see [`crate::follow`]).
use crate::follow::{follow, Listed, Map, Source};
use crate::metrics::Metrics;
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::watch;
use weft_store::{Revision, Snapshot, Store, StoreError, WatchStream};
use weft_types::Lease;

pub type PeerMap = Map<Lease>;

struct Leases(Arc<dyn Store>);

impl Source<Lease> for Leases {
    fn list(&self) -> BoxFuture<'_, Result<Snapshot<Lease>, StoreError>> {
        self.0.leases()
    }
    fn watch(&self, after: Revision) -> BoxFuture<'_, Result<WatchStream<Lease>, StoreError>> {
        self.0.watch_leases(after)
    }
    fn key(&self, l: &Lease) -> String {
        l.node.clone()
    }
    fn what(&self) -> &'static str {
        "leases"
    }
}

/// Renewals only move the expiry time: not a change worth a reconcile.
fn same(a: &Lease, b: &Lease) -> bool {
    a.subnet == b.subnet && a.subnet6 == b.subnet6 && a.node_ip == b.node_ip && a.backend_data == b.backend_data
}

pub async fn watch_peers(
    store: Arc<dyn Store>,
    tx: watch::Sender<Listed<Lease>>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    follow(Leases(store), tx, same, metrics, shutdown).await
}

pub use crate::follow::sleep_or_shutdown;
