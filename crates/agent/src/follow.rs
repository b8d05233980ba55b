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
        replace(&tx, snap.items.into_iter().map(|i| (src.key(&i), i)).collect(), same);
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
                Some(Ok(WatchEvent::Put(item))) => upsert(&tx, src.key(&item), item, same),
                Some(Ok(WatchEvent::Delete(key))) => remove(&tx, &key),
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
        }
    }
}

// The published map is the only copy (at 10 000 peers a second one costs megabytes): events update it in place
// (`Arc::make_mut` copies it only while a consumer still holds the previous version), and consumers are woken
// only on real changes. Lease renewals change nothing but the expiry time: stored, but nobody is woken.

/// A fresh list: replaces the map if anything differs; the first list always wakes consumers, even when empty.
fn replace<T: Clone>(tx: &watch::Sender<Listed<T>>, map: BTreeMap<String, T>, same: fn(&T, &T) -> bool) {
    tx.send_if_modified(|cur| {
        let changed = match cur.as_deref() {
            None => true,
            Some(c) => {
                c.len() != map.len() || c.iter().zip(map.iter()).any(|((ka, a), (kb, b))| ka != kb || !same(a, b))
            }
        };
        *cur = Some(Arc::new(map));
        changed
    });
}

fn upsert<T: Clone>(tx: &watch::Sender<Listed<T>>, key: String, item: T, same: fn(&T, &T) -> bool) {
    tx.send_if_modified(|cur| {
        let map = cur.get_or_insert_with(Default::default);
        let changed = map.get(&key).is_none_or(|old| !same(old, &item));
        Arc::make_mut(map).insert(key, item);
        changed
    });
}

fn remove<T: Clone>(tx: &watch::Sender<Listed<T>>, key: &str) {
    tx.send_if_modified(|cur| match cur {
        Some(map) if map.contains_key(key) => {
            Arc::make_mut(map).remove(key);
            true
        }
        _ => false,
    });
}

pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (value, version): versions differ on "renewals", which `same` ignores.
    type Item = (u32, u32);
    fn same(a: &Item, b: &Item) -> bool {
        a.0 == b.0
    }

    #[test]
    fn consumers_wake_on_real_changes_only_and_see_renewals() {
        let (tx, mut rx) = watch::channel::<Listed<Item>>(None);
        replace(&tx, BTreeMap::new(), same);
        assert!(rx.has_changed().unwrap(), "the first list wakes, even when empty");
        rx.borrow_and_update();
        upsert(&tx, "a".into(), (1, 0), same);
        assert!(rx.has_changed().unwrap());
        let held = rx.borrow_and_update().clone().unwrap();
        upsert(&tx, "a".into(), (1, 1), same);
        assert!(!rx.has_changed().unwrap(), "a renewal wakes nobody");
        assert_eq!(rx.borrow().as_ref().unwrap()["a"], (1, 1), "but is stored");
        assert_eq!(held["a"], (1, 0), "a consumer's version is never changed under it");
        remove(&tx, "missing");
        assert!(!rx.has_changed().unwrap());
        remove(&tx, "a");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        replace(&tx, BTreeMap::new(), same);
        assert!(!rx.has_changed().unwrap(), "an identical relist wakes nobody");
        replace(&tx, BTreeMap::from([("b".to_string(), (2, 0))]), same);
        assert!(rx.has_changed().unwrap());
    }
}
