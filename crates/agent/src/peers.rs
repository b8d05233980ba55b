//! Watches the store for other nodes' leases and publishes the current set.
//!
//! List, then watch from the list's revision, so no change between the two is lost. On `Reset` (history
//! compacted) or a broken stream (store down), relist with backoff. While the store is away the last known set
//! stays published: the dataplane keeps working on what it knew.
use crate::metrics::Metrics;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_store::{Store, WatchEvent};
use weft_types::Lease;

pub type PeerMap = Arc<BTreeMap<String, Lease>>;

pub async fn watch_peers(
    store: Arc<dyn Store>,
    tx: watch::Sender<PeerMap>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let snap = match store.leases().await {
            Ok(s) => s,
            Err(e) => {
                metrics.store_up.set(0);
                tracing::warn!(error = %e, "listing leases failed; keeping the last known peers");
                sleep_or_shutdown(backoff, &mut shutdown).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        metrics.store_up.set(1);
        backoff = Duration::from_millis(100);
        let mut map: BTreeMap<String, Lease> = snap.items.into_iter().map(|l| (l.node.clone(), l)).collect();
        publish(&tx, &map);
        let mut stream = match store.watch_leases(snap.revision).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "watching leases failed; will relist");
                sleep_or_shutdown(backoff, &mut shutdown).await;
                continue;
            }
        };
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = shutdown.changed() => return,
            };
            match ev {
                Some(Ok(WatchEvent::Put(l))) => {
                    map.insert(l.node.clone(), l);
                }
                Some(Ok(WatchEvent::Delete(node))) => {
                    map.remove(&node);
                }
                Some(Ok(WatchEvent::Reset)) => {
                    tracing::info!("lease history lost (compaction): relisting");
                    break;
                }
                Some(Err(e)) => {
                    metrics.store_up.set(0);
                    tracing::warn!(error = %e, "lease watch broke; relisting");
                    sleep_or_shutdown(backoff, &mut shutdown).await;
                    break;
                }
                None => break,
            }
            publish(&tx, &map);
        }
    }
}

fn publish(tx: &watch::Sender<PeerMap>, map: &BTreeMap<String, Lease>) {
    // Only wake the reconciler when the set really changed; renewals change expiry times only.
    let changed = {
        let cur = tx.borrow();
        cur.len() != map.len()
            || cur.iter().zip(map.iter()).any(|((_, a), (_, b))| {
                a.node != b.node
                    || a.subnet != b.subnet
                    || a.subnet6 != b.subnet6
                    || a.node_ip != b.node_ip
                    || a.backend_data != b.backend_data
            })
    };
    if changed {
        tx.send_replace(Arc::new(map.clone()));
    }
}

pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}
