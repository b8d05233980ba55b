//! Kubernetes watch events → store watch events, for Nodes (leases), for Pods, Namespaces and Policies, and for
//! Networks and their per-node statuses.
//!
//! Why kube's raw `Api::watch` and not `kube::runtime::watcher`/reflector: the store contract hands the
//! consumer the relist ("Reset, then list again"), and the watcher hides exactly that by relisting itself.
//! Here the semantics map one to one:
//! - ADDED/MODIFIED of an object the store shows → `Put`, unless what the store shows of it did not change
//!   (kubelet status updates on a Node, container restarts in a Pod: most MODIFIED events are such noise, and
//!   every agent would otherwise reconcile on each). MODIFIED of one it does not show (a Node whose weft
//!   annotations were removed, a pod that finished) → `Delete`, once. DELETED → `Delete` if it was shown.
//! - An object that is several entries (a Network: one status per node) is diffed entry by entry: `Put`s of
//!   the changed ones, `Delete`s of the gone ones. The stream starts from the consumer's snapshot of them (a
//!   MODIFIED event does not say what the object held before); see `KubeStore::watch_objects`.
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
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use weft_store::{StoreError, WatchEvent, WatchStream};

pub(crate) type OneFn<K, T> = Box<dyn Fn(&K) -> (String, Option<T>) + Send + Sync>;
pub(crate) type ManyFn<K, T> = Box<dyn Fn(&K) -> Vec<(String, T)> + Send + Sync>;

/// How Kubernetes objects become the store's entries.
pub(crate) enum Convert<K, T> {
    /// Each object is at most one entry: its key, and its value if the store shows it (Nodes, Pods...).
    One(OneFn<K, T>),
    /// Each object is any number of entries (a Network's per-node statuses). What such an object showed
    /// before this stream saw it cannot be told from a MODIFIED event (the event has only the new object), so
    /// the stream starts from a [`Seed`]: what the consumer's snapshot held per object.
    Many(ManyFn<K, T>),
}

/// Per object (its `namespace/name`): the keys it shows and a digest of each value.
pub(crate) type Seed = HashMap<String, BTreeMap<String, u64>>;

pub(crate) fn spawn<K: Object, T: Serialize + Send + 'static>(
    calls: Calls<K>,
    resource_version: String,
    first: EventStream<K>,
    convert: Convert<K, T>,
    seed: Seed,
) -> WatchStream<T> {
    let (tx, rx) = mpsc::channel(256);
    let shown = seed.into_iter().map(|(o, m)| (o, m.into_iter().map(|(k, d)| (k, Some(d))).collect())).collect();
    let w = Watch { calls, rv: resource_version, convert, shown, tx };
    tokio::spawn(w.run(first));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) }).boxed()
}

struct Watch<K, T> {
    calls: Calls<K>,
    /// Resume point: the resourceVersion of the last event (or bookmark) seen.
    rv: String,
    convert: Convert<K, T>,
    /// Per object seen on this stream: the keys it shows, each with a hash of what was last shown (None: a
    /// value the consumer may hold but this stream never saw). An object that shows nothing has an empty
    /// map. Hashes, not copies: a watch of 100k pods should not hold a second copy of every pod.
    shown: HashMap<String, BTreeMap<String, Option<u64>>>,
    tx: mpsc::Sender<Result<WatchEvent<T>, StoreError>>,
}

enum Step<T> {
    Emit(Vec<WatchEvent<T>>),
    End(Result<WatchEvent<T>, StoreError>),
}

fn rv_of<K: kube::Resource>(o: &K) -> Option<String> {
    o.meta().resource_version.clone()
}

/// An object's identity on the stream.
pub(crate) fn object_id<K: kube::Resource>(o: &K) -> String {
    let m = o.meta();
    format!("{}/{}", m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default())
}

pub(crate) fn digest<T: Serialize>(v: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(v).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl<K: Object, T: Serialize + Send + 'static> Watch<K, T> {
    fn entries(&self, o: &K) -> Vec<(String, T)> {
        match &self.convert {
            Convert::One(f) => {
                let (key, value) = f(o);
                value.map(|v| (key, v)).into_iter().collect()
            }
            Convert::Many(f) => f(o),
        }
    }

    /// What an object not seen on this stream may have shown the consumer. None: unknowable (then the
    /// consumer must relist). `deleted`: the event is a DELETED, whose object is the last state.
    fn unseen(&self, o: &K, deleted: bool) -> Option<BTreeMap<String, Option<u64>>> {
        match &self.convert {
            // One entry per object: its key is the only thing it can have shown. A deleted object that shows
            // nothing showed nothing (a deleted host-network pod is no news); a MODIFIED one may have.
            Convert::One(f) => {
                let (key, value) = f(o);
                let maybe = !deleted || value.is_some();
                Some(if maybe { BTreeMap::from([(key, None)]) } else { BTreeMap::new() })
            }
            // No event since the snapshot means the DELETED object's last state is what the consumer holds.
            Convert::Many(f) if deleted => Some(f(o).into_iter().map(|(k, _)| (k, None)).collect()),
            Convert::Many(_) => None,
        }
    }

    /// An object appeared, changed or went (`now` empty): the Puts and Deletes that bring the consumer from
    /// what the object showed before to what it shows now.
    fn change(&mut self, o: &K, before: Option<BTreeMap<String, Option<u64>>>, now: Vec<(String, T)>) -> Step<T> {
        let Some(mut before) = before else {
            return Step::End(Ok(WatchEvent::Reset));
        };
        let mut out = Vec::new();
        let mut after = BTreeMap::new();
        for (key, v) in now {
            let d = digest(&v);
            if before.remove(&key) != Some(Some(d)) {
                out.push(WatchEvent::Put(v));
            }
            after.insert(key, Some(d));
        }
        out.extend(before.into_keys().map(WatchEvent::Delete));
        self.shown.insert(object_id(o), after);
        Step::Emit(out)
    }

    fn put(&mut self, o: &K, modified: bool) -> Step<T> {
        self.rv = rv_of(o).unwrap_or_else(|| self.rv.clone());
        let before = match self.shown.get(&object_id(o)) {
            Some(m) => Some(m.clone()),
            // A new object showed nothing before.
            None if !modified => Some(BTreeMap::new()),
            None => self.unseen(o, false),
        };
        let now = self.entries(o);
        self.change(o, before, now)
    }

    fn step(&mut self, ev: Result<KubeEvent<K>, crate::error::KubeError>) -> Step<T> {
        match ev {
            Ok(KubeEvent::Added(o)) => self.put(&o, false),
            Ok(KubeEvent::Modified(o)) => self.put(&o, true),
            Ok(KubeEvent::Deleted(o)) => {
                self.rv = rv_of(&o).unwrap_or_else(|| self.rv.clone());
                let before = match self.shown.get(&object_id(&o)) {
                    Some(m) => Some(m.clone()),
                    None => self.unseen(&o, true),
                };
                let step = self.change(&o, before, Vec::new());
                self.shown.remove(&object_id(&o));
                step
            }
            Ok(KubeEvent::Bookmark(b)) => {
                self.rv = b.metadata.resource_version;
                Step::Emit(vec![])
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
                    Step::Emit(events) => {
                        for e in events {
                            if self.tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                    }
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
