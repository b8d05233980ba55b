//! Kubernetes watch events → store watch events, for Nodes (leases) and for Pods, Namespaces and Policies.
//!
//! Why kube's raw `Api::watch` and not `kube::runtime::watcher`/reflector: the store contract hands the
//! consumer the relist ("Reset, then list again"), and the watcher hides exactly that by relisting itself.
//! Here the semantics map one to one:
//! - ADDED/MODIFIED of an object the store shows → `Put`, unless what the store shows of it did not change
//!   (kubelet status updates on a Node, container restarts in a Pod: most MODIFIED events are such noise, and
//!   every agent would otherwise reconcile on each). MODIFIED of one it does not show (a Node whose weft
//!   annotations were removed, a pod that finished) → `Delete`, once. DELETED → `Delete` if it was shown.
//! - BOOKMARK → nothing for the consumer, but the resume point moves forward.
//! - The server ending the watch (its timeout, an API server restart) → watch again from the last
//!   resourceVersion seen, invisibly to the consumer: history is still there.
//! - 410 Gone (as an ERROR event, or on re-watch) → `Reset`, and the stream ends: the consumer relists.
//! - Transport errors → `Err(Unavailable)`, and the stream ends.
//!
//! Each watch runs as a task feeding a bounded channel; it stops when the consumer drops the stream.
use crate::calls::{Calls, EventStream, Object};
use futures::StreamExt;
use kube::core::WatchEvent as KubeEvent;
use serde::Serialize;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use weft_store::{StoreError, WatchEvent, WatchStream};

/// Turns one Kubernetes object into the store's view of it: its key, and its value if the store shows it.
pub(crate) type Convert<K, T> = Box<dyn Fn(&K) -> (String, Option<T>) + Send + Sync>;

pub(crate) fn spawn<K: Object, T: Serialize + Send + 'static>(
    calls: Calls<K>,
    resource_version: String,
    first: EventStream<K>,
    convert: Convert<K, T>,
) -> WatchStream<T> {
    let (tx, rx) = mpsc::channel(256);
    let w = Watch { calls, rv: resource_version, convert, shown: HashMap::new(), tx };
    tokio::spawn(w.run(first));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) }).boxed()
}

struct Watch<K, T> {
    calls: Calls<K>,
    /// Resume point: the resourceVersion of the last event (or bookmark) seen.
    rv: String,
    convert: Convert<K, T>,
    /// Per key seen on this stream: a hash of what was last shown (Put), or None if it is not shown. A hash,
    /// not a copy: a watch of 100k pods should not hold a second copy of every pod.
    shown: HashMap<String, Option<u64>>,
    tx: mpsc::Sender<Result<WatchEvent<T>, StoreError>>,
}

enum Step<T> {
    Emit(WatchEvent<T>),
    Quiet,
    End(Result<WatchEvent<T>, StoreError>),
}

fn rv_of<K: kube::Resource>(o: &K) -> Option<String> {
    o.meta().resource_version.clone()
}

fn digest<T: Serialize>(v: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(v).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl<K: Object, T: Serialize + Send + 'static> Watch<K, T> {
    /// An object appeared or changed. One that is not shown becomes a Delete only if it may have been shown
    /// before: a new Node without weft annotations is nothing to report.
    fn put(&mut self, o: &K, modified: bool) -> Step<T> {
        self.rv = rv_of(o).unwrap_or_else(|| self.rv.clone());
        let (key, value) = (self.convert)(o);
        match value {
            Some(v) => {
                let d = digest(&v);
                match self.shown.insert(key, Some(d)) {
                    Some(Some(before)) if before == d => Step::Quiet,
                    _ => Step::Emit(WatchEvent::Put(v)),
                }
            }
            None => match self.shown.insert(key.clone(), None) {
                Some(None) => Step::Quiet,
                None if !modified => Step::Quiet,
                _ => Step::Emit(WatchEvent::Delete(key)),
            },
        }
    }

    fn step(&mut self, ev: Result<KubeEvent<K>, crate::error::KubeError>) -> Step<T> {
        match ev {
            Ok(KubeEvent::Added(o)) => self.put(&o, false),
            Ok(KubeEvent::Modified(o)) => self.put(&o, true),
            Ok(KubeEvent::Deleted(o)) => {
                self.rv = rv_of(&o).unwrap_or_else(|| self.rv.clone());
                let (key, value) = (self.convert)(&o);
                let was = self.shown.remove(&key);
                if value.is_some() || matches!(was, Some(Some(_))) {
                    Step::Emit(WatchEvent::Delete(key))
                } else {
                    Step::Quiet
                }
            }
            Ok(KubeEvent::Bookmark(b)) => {
                self.rv = b.metadata.resource_version;
                Step::Quiet
            }
            Ok(KubeEvent::Error(s)) if s.code == 410 => Step::End(Ok(WatchEvent::Reset)),
            Ok(KubeEvent::Error(s)) => Step::End(Err(StoreError::Other(format!(
                "watch of {} failed: HTTP {} {}: {}",
                K::plural(&()),
                s.code,
                s.reason,
                s.message
            )))),
            Err(e) => Step::End(Err(e.into())),
        }
    }

    async fn run(mut self, first: EventStream<K>) {
        let mut stream = first;
        loop {
            let opened = Instant::now();
            loop {
                let ev = tokio::select! {
                    ev = stream.next() => ev,
                    _ = self.tx.closed() => return,
                };
                let Some(ev) = ev else { break };
                match self.step(ev) {
                    Step::Emit(e) => {
                        if self.tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    Step::Quiet => {}
                    Step::End(last) => {
                        let _ = self.tx.send(last).await;
                        return;
                    }
                }
            }
            // The server ended the watch. Resume from where we are; never spin on a server that closes at once.
            if opened.elapsed() < Duration::from_millis(500) {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = self.tx.closed() => return,
                }
            }
            tracing::debug!(resource = %K::plural(&()), rv = %self.rv, "watch ended by the server; resuming");
            match self.calls.watch(&self.rv).await {
                Ok(s) => stream = s,
                Err(e) => {
                    let last = if e.code() == Some(410) { Ok(WatchEvent::Reset) } else { Err(e.into()) };
                    let _ = self.tx.send(last).await;
                    return;
                }
            }
        }
    }
}
