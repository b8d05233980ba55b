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
        let map: BTreeMap<String, T> = snap.items.into_iter().map(|i| (src.key(&i), i)).collect();
        publish(&tx, map, same);
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
                    let key = src.key(&item);
                    // A renewal (same but for the expiry) changes nothing consumers use: skipping it also spares a
                    // copy of the map while a consumer holds it.
                    if !tx.borrow().as_ref().and_then(|m| m.get(&key)).is_some_and(|old| same(old, &item)) {
                        update(&tx, |m| {
                            m.insert(key, item);
                            true
                        });
                    }
                }
                Some(Ok(WatchEvent::Delete(key))) => {
                    update(&tx, |m| m.remove(&key).is_some());
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
        }
    }
}

/// Publishes a fresh list. Only wakes consumers on real changes (lease renewals change nothing but the expiry
/// time); the first list always wakes them, even when empty.
fn publish<T: Clone>(tx: &watch::Sender<Listed<T>>, map: BTreeMap<String, T>, same: fn(&T, &T) -> bool) {
    tx.send_if_modified(|cur| {
        let changed = match cur {
            None => true,
            Some(cur) => {
                cur.len() != map.len() || cur.iter().zip(map.iter()).any(|((ka, a), (kb, b))| ka != kb || !same(a, b))
            }
        };
        *cur = Some(Arc::new(map));
        changed
    });
}

/// Applies one watch event to the published map in place; `apply` says whether consumers must be woken.
///
/// The published map is the only copy: with 10 000 peers a second, private copy of every lease cost ~8 MiB
/// (see docs-notes/mem.md). `Arc::make_mut` copies it only while a consumer still holds the previous version
/// (a reconcile pass in progress), and that copy is dropped as soon as the consumer lets go.
fn update<T: Clone>(tx: &watch::Sender<Listed<T>>, apply: impl FnOnce(&mut BTreeMap<String, T>) -> bool) {
    tx.send_if_modified(|cur| apply(Arc::make_mut(cur.get_or_insert_with(Default::default))));
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

    fn same(a: &u32, b: &u32) -> bool {
        a / 10 == b / 10
    }

    #[test]
    fn publish_wakes_on_changes_only_and_updates_keep_held_versions_intact() {
        let (tx, mut rx) = watch::channel::<Listed<u32>>(None);
        publish(&tx, BTreeMap::new(), same);
        assert!(rx.has_changed().unwrap(), "the first list wakes consumers even when empty");
        rx.borrow_and_update();
        publish(&tx, BTreeMap::from([("a".to_string(), 10)]), same);
        assert!(rx.has_changed().unwrap());
        let held = rx.borrow_and_update().clone().unwrap();
        publish(&tx, BTreeMap::from([("a".to_string(), 11)]), same);
        assert!(!rx.has_changed().unwrap(), "a change `same` ignores wakes nobody");

        update(&tx, |m| {
            m.insert("b".into(), 20);
            true
        });
        assert!(rx.has_changed().unwrap());
        let now = rx.borrow_and_update().clone().unwrap();
        assert_eq!(now.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(held.keys().collect::<Vec<_>>(), ["a"], "a consumer's version never changes under it");

        drop((held, now));
        update(&tx, |m| m.remove("missing").is_some());
        assert!(!rx.has_changed().unwrap(), "deleting an unknown key wakes nobody");
        update(&tx, |m| m.remove("a").is_some());
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().keys().collect::<Vec<_>>(), ["b"]);
    }
}
