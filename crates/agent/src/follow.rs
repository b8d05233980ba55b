//! Following a kind of store object: list, then watch from the list's revision, relist on reset or error.
//!
//! One loop for leases and for policy objects alike: no change between list and watch is lost, a compacted
//! history (`Reset`) or a broken stream (store down) means relist with backoff, and while the store is away the
//! last known set stays published, so the dataplane keeps working on what it knew.
use crate::metrics::Metrics;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_store::{Revision, Snapshot, StoreError, WatchEvent, WatchStream};

pub type Map<T> = Arc<BTreeMap<String, T>>;

/// `None` until the first list succeeded: consumers must not mistake "not listed yet" for "empty" (a restarted
/// agent would otherwise delete every peer's routes, or compile an empty policy table, before the store answers).
pub type Listed<T> = Option<Map<T>>;

/// How to list and watch one kind, and how to key its items.
pub trait Source<T>: Send + Sync {
    fn list(&self) -> BoxFuture<'_, Result<Snapshot<T>, StoreError>>;
    fn watch(&self, after: Revision) -> BoxFuture<'_, Result<WatchStream<T>, StoreError>>;
    fn key(&self, item: &T) -> String;
    fn what(&self) -> &'static str;
}

/// Runs until shutdown, publishing the current map on `tx` whenever it changes (per `same`).
pub async fn follow<T: Clone + Send + Sync + 'static>(
    src: impl Source<T>,
    tx: watch::Sender<Listed<T>>,
    same: fn(&T, &T) -> bool,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let snap = match src.list().await {
            Ok(s) => s,
            Err(e) => {
                metrics.store_up.set(0);
                tracing::warn!(error = %e, what = src.what(), "listing failed; keeping the last known set");
                sleep_or_shutdown(backoff, &mut shutdown).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        metrics.store_up.set(1);
        backoff = Duration::from_millis(100);
        let mut map: BTreeMap<String, T> = snap.items.into_iter().map(|i| (src.key(&i), i)).collect();
        publish(&tx, &map, same);
        let mut stream = match src.watch(snap.revision).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, what = src.what(), "watch failed; will relist");
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
                Some(Ok(WatchEvent::Put(item))) => {
                    map.insert(src.key(&item), item);
                }
                Some(Ok(WatchEvent::Delete(key))) => {
                    map.remove(&key);
                }
                Some(Ok(WatchEvent::Reset)) => {
                    tracing::info!(what = src.what(), "history lost (compaction): relisting");
                    break;
                }
                Some(Err(e)) => {
                    metrics.store_up.set(0);
                    tracing::warn!(error = %e, what = src.what(), "watch broke; relisting");
                    sleep_or_shutdown(backoff, &mut shutdown).await;
                    break;
                }
                None => break,
            }
            publish(&tx, &map, same);
        }
    }
}

fn publish<T: Clone>(tx: &watch::Sender<Listed<T>>, map: &BTreeMap<String, T>, same: fn(&T, &T) -> bool) {
    // Only wake consumers on real changes (lease renewals change nothing but the expiry time); the first list
    // always wakes them, even when empty.
    let changed = match &*tx.borrow() {
        None => true,
        Some(cur) => {
            cur.len() != map.len() || cur.iter().zip(map.iter()).any(|((ka, a), (kb, b))| ka != kb || !same(a, b))
        }
    };
    if changed {
        tx.send_replace(Some(Arc::new(map.clone())));
    }
}

pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}
