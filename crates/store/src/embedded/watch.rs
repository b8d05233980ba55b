//! Watching the embedded store: poll the change log.
//!
//! SQLite has no cross-process notification, and the writers may be other processes, so a watcher polls:
//! every `poll_interval` it reads `sqlite_sequence` (one row) and only when the head moved does it read the
//! new change log rows of its kind. Rows carry the value after the change, so a watcher replays exactly what
//! happened, in order, like an etcd watch. Lease watchers also sweep expired leases when one is due: with no
//! writer around, an expired lease would otherwise never produce its delete event.
//!
//! A watcher whose revision was trimmed from the log gets `Reset` and the stream ends; the consumer relists.
use super::tx::{self, Change, Changes};
use super::Inner;
use crate::{Created, LeaseEntry, Object, ObjectEntry, ObjectKind, Revision, StoreError, WatchEvent, WatchStream};
use std::collections::VecDeque;
use std::sync::Arc;
use weft_types::Lease;

/// Rows read per poll; a watcher far behind catches up over several polls without pausing.
const PAGE: usize = 1000;

type Decode<T> = fn(Change) -> Result<WatchEvent<T>, StoreError>;

struct Poller<T> {
    inner: Arc<Inner>,
    kind: &'static str,
    after: Revision,
    sweep: bool,
    decode: Decode<T>,
    pending: VecDeque<Result<WatchEvent<T>, StoreError>>,
    /// True until the first poll, which runs at once.
    first: bool,
    done: bool,
}

pub(super) fn leases(inner: Arc<Inner>, after: Revision) -> WatchStream<Lease> {
    stream(Poller::new(inner, tx::LEASES, after, true, decode_lease))
}

pub(super) fn lease_entries(inner: Arc<Inner>, after: Revision) -> WatchStream<LeaseEntry> {
    stream(Poller::new(inner, tx::LEASES, after, true, decode_entry))
}

pub(super) fn objects(inner: Arc<Inner>, kind: ObjectKind, after: Revision) -> WatchStream<Object> {
    stream(Poller::new(inner, kind.as_str(), after, false, decode_object))
}

pub(super) fn object_entries(inner: Arc<Inner>, kind: ObjectKind, after: Revision) -> WatchStream<ObjectEntry> {
    stream(Poller::new(inner, kind.as_str(), after, false, decode_object_entry))
}

fn decode_lease((node, value, _): Change) -> Result<WatchEvent<Lease>, StoreError> {
    match value {
        None => Ok(WatchEvent::Delete(node)),
        Some(v) => match serde_json::from_str(&v) {
            Ok(l) => Ok(WatchEvent::Put(l)),
            // The node it names is not known for sure: a relist leaves the row out and keeps every other lease.
            Err(e) => {
                tracing::warn!(key = %node, error = %e, "undecodable lease in the change log; relisting");
                Ok(WatchEvent::Reset)
            }
        },
    }
}

fn decode_entry((node, value, row): Change) -> Result<WatchEvent<LeaseEntry>, StoreError> {
    match (value, row) {
        (Some(v), Some((rowid, subnet))) => Ok(WatchEvent::Put(tx::lease_entry(rowid, subnet, node, &v))),
        // Put of a row deleted since: its delete follows in the log.
        (Some(_), None) => Ok(WatchEvent::Delete(node)),
        (None, _) => Ok(WatchEvent::Delete(node)),
    }
}

fn decode_object((key, value, _): Change) -> Result<WatchEvent<Object>, StoreError> {
    match value {
        None => Ok(WatchEvent::Delete(key)),
        Some(v) => match serde_json::from_str(&v) {
            Ok(v) => Ok(WatchEvent::Put((key, v))),
            // Whatever the key held before is not what the store says now: drop it, keep the rest.
            Err(e) => {
                tracing::warn!(%key, error = %e, "undecodable object in the change log; dropping it");
                Ok(WatchEvent::Delete(key))
            }
        },
    }
}

fn decode_object_entry((key, value, row): Change) -> Result<WatchEvent<ObjectEntry>, StoreError> {
    match (decode_object((key, value, None))?, row) {
        (WatchEvent::Put((key, value)), Some((rowid, _))) => {
            Ok(WatchEvent::Put(ObjectEntry { created: Created(rowid, key.clone()), key, value }))
        }
        // Put of a row deleted since: its delete follows in the log.
        (WatchEvent::Put((key, _)), None) => Ok(WatchEvent::Delete(key)),
        (WatchEvent::Delete(key), _) => Ok(WatchEvent::Delete(key)),
        (WatchEvent::Reset, _) => Ok(WatchEvent::Reset),
    }
}

impl<T: Send + 'static> Poller<T> {
    fn new(inner: Arc<Inner>, kind: &'static str, after: Revision, sweep: bool, decode: Decode<T>) -> Self {
        Self { inner, kind, after, sweep, decode, pending: VecDeque::new(), first: true, done: false }
    }

    async fn next(&mut self) -> Option<Result<WatchEvent<T>, StoreError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.done {
                return None;
            }
            if !std::mem::take(&mut self.first) {
                tokio::time::sleep(self.inner.opts.poll_interval).await;
            }
            let (kind, after, sweep) = (self.kind, self.after, self.sweep);
            let polled = self
                .inner
                .clone()
                .run(move |c, ctx| {
                    if sweep {
                        // Best effort: if another process holds the write lock, the next poll sweeps.
                        let _ = tx::sweep_if_due(c, ctx);
                    }
                    tx::changes(c, kind, after, PAGE)
                })
                .await;
            match polled {
                Ok(Changes::Rows { head, rows }) => {
                    self.after = head;
                    self.pending.extend(rows.into_iter().map(self.decode));
                }
                Ok(Changes::Reset) => {
                    self.pending.push_back(Ok(WatchEvent::Reset));
                    self.done = true;
                }
                // Busy: another process is writing; look again next time.
                Err(StoreError::Unavailable(_)) => {}
                Err(e) => {
                    self.pending.push_back(Err(e));
                    self.done = true;
                }
            }
        }
    }
}

fn stream<T: Send + 'static>(poller: Poller<T>) -> WatchStream<T> {
    Box::pin(futures::stream::unfold(poller, |mut p| async move { p.next().await.map(|ev| (ev, p)) }))
}
