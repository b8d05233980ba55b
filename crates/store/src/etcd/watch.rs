//! etcd watches turned into [`WatchEvent`]s.
//!
//! A watch starts at `after + 1`, so a consumer that listed at revision R and watches after R misses nothing
//! and sees nothing twice. Deletes are asked for with their previous value (`prev_kv`): a lease key is named
//! by subnet, but a lease delete event must name the node, which only the old value knows. An expired etcd
//! lease deletes its key with a normal delete event, so expiry reaches watchers the same way as a release.
//!
//! Endings: compaction past the start revision → `Reset` (relist, then watch from the new snapshot); a broken
//! connection or a server that closed the stream → one `Err(Unavailable)`, then the stream ends. Either way
//! the consumer watches again from its snapshot revision once the store answers; replaying from there is
//! harmless because consumers are level-triggered.
use super::{keys, parse, Inner};
use crate::{Created, LeaseEntry, Object, ObjectEntry, ObjectKind, Revision, StoreError, WatchEvent, WatchStream};
use etcd_client::{Event, EventType, WatchOptions, WatchRequestSender, WatchResponseStream};
use futures::StreamExt;
use std::collections::VecDeque;
use weft_types::Lease;

type Decode<T> = Box<dyn Fn(&Event) -> Result<WatchEvent<T>, StoreError> + Send>;

struct State<T> {
    /// Kept only so the request half stays open: dropping it would end the watch from our side.
    _sender: WatchRequestSender,
    responses: WatchResponseStream,
    decode: Decode<T>,
    pending: VecDeque<Result<WatchEvent<T>, StoreError>>,
    done: bool,
}

pub(super) async fn leases(s: &Inner, after: Revision) -> Result<WatchStream<Lease>, StoreError> {
    let decode: Decode<Lease> = Box::new(|ev: &Event| {
        let kv = match ev.event_type() {
            EventType::Put => ev.kv(),
            // Without the old value we cannot name the node: have the consumer relist instead.
            EventType::Delete => ev.prev_kv(),
        };
        match (ev.event_type(), parse::<Lease>(value(kv), "lease")) {
            (EventType::Put, Ok(l)) => Ok(WatchEvent::Put(l)),
            (EventType::Delete, Ok(l)) => Ok(WatchEvent::Delete(l.node)),
            // An undecodable value names no node either: a relist leaves it out and keeps every other lease.
            (_, Err(e)) => {
                tracing::warn!(key = %key_of(ev), error = %e, "undecodable lease in a watch event; relisting");
                Ok(WatchEvent::Reset)
            }
        }
    });
    start(s, s.keys.leases(), after, decode).await
}

/// Leases as entries: keyed by the etcd key, so a delete needs no old value and a bad value is an entry.
pub(super) async fn lease_entries(s: &Inner, after: Revision) -> Result<WatchStream<LeaseEntry>, StoreError> {
    let keys = s.keys.clone();
    let decode: Decode<LeaseEntry> = Box::new(move |ev: &Event| {
        let kv = ev.kv().ok_or_else(|| StoreError::Corrupt("watch event without key".into()))?;
        match ev.event_type() {
            EventType::Put => Ok(WatchEvent::Put(super::lease::stored(&keys, kv).entry())),
            EventType::Delete => Ok(WatchEvent::Delete(String::from_utf8_lossy(kv.key()).into_owned())),
        }
    });
    start(s, s.keys.leases(), after, decode).await
}

fn key_of(ev: &Event) -> String {
    ev.kv().map_or_else(String::new, |kv| String::from_utf8_lossy(kv.key()).into_owned())
}

pub(super) async fn objects(s: &Inner, kind: ObjectKind, after: Revision) -> Result<WatchStream<Object>, StoreError> {
    let entries = object_entries(s, kind, after).await?;
    Ok(Box::pin(entries.map(|ev| {
        ev.map(|ev| match ev {
            WatchEvent::Put(e) => WatchEvent::Put(e.into_object()),
            WatchEvent::Delete(k) => WatchEvent::Delete(k),
            WatchEvent::Reset => WatchEvent::Reset,
        })
    })))
}

/// Creation order of an object: etcd's `create_revision` (kept by every update, new after a delete).
pub(super) fn created(key: &str, kv: &etcd_client::KeyValue) -> Created {
    Created(kv.create_revision(), key.to_string())
}

pub(super) async fn object_entries(
    s: &Inner,
    kind: ObjectKind,
    after: Revision,
) -> Result<WatchStream<ObjectEntry>, StoreError> {
    let dir = s.keys.objects(kind);
    let d = dir.clone();
    let decode: Decode<ObjectEntry> = Box::new(move |ev: &Event| {
        let kv = ev.kv().ok_or_else(|| StoreError::Corrupt("watch event without key".into()))?;
        let key = keys::strip(&d, kv.key()).ok_or_else(|| StoreError::Corrupt("watch event outside prefix".into()))?;
        match ev.event_type() {
            EventType::Put => match serde_json::from_slice(kv.value()) {
                Ok(value) => {
                    Ok(WatchEvent::Put(ObjectEntry { key: key.to_string(), created: created(key, kv), value }))
                }
                // Whatever the key held before is no longer what the store says: drop it, keep the rest.
                Err(e) => {
                    tracing::warn!(key = %key_of(ev), error = %e, "undecodable object in a watch event; dropping it");
                    Ok(WatchEvent::Delete(key.to_string()))
                }
            },
            EventType::Delete => Ok(WatchEvent::Delete(key.to_string())),
        }
    });
    start(s, dir, after, decode).await
}

fn value(kv: Option<&etcd_client::KeyValue>) -> &[u8] {
    kv.map_or(&[], |kv| kv.value())
}

async fn start<T: Send + 'static>(
    s: &Inner,
    dir: String,
    after: Revision,
    decode: Decode<T>,
) -> Result<WatchStream<T>, StoreError> {
    let from = i64::try_from(after).unwrap_or(i64::MAX - 1) + 1;
    let opts = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from);
    let stream = s.call(|mut c| async move { c.watch(dir, Some(opts)).await }).await?;
    let (sender, responses) = stream.split();
    let state = State { _sender: sender, responses, decode, pending: VecDeque::new(), done: false };
    Ok(Box::pin(futures::stream::unfold(state, |mut st| async move { st.next().await.map(|ev| (ev, st)) })))
}

impl<T> State<T> {
    async fn next(&mut self) -> Option<Result<WatchEvent<T>, StoreError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                if matches!(ev, Ok(WatchEvent::Reset)) {
                    // Whatever followed is moot: the consumer relists and watches anew.
                    self.pending.clear();
                    self.done = true;
                }
                return Some(ev);
            }
            if self.done {
                return None;
            }
            match self.responses.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        self.pending.push_back(Ok(WatchEvent::Reset));
                        self.done = true;
                    } else if resp.canceled() {
                        let why = resp.cancel_reason().to_string();
                        self.pending.push_back(Err(StoreError::Unavailable(format!("etcd canceled the watch: {why}"))));
                        self.done = true;
                    } else {
                        let events = resp.events().iter().map(|ev| (self.decode)(ev));
                        self.pending.extend(events);
                    }
                }
                Ok(None) => {
                    self.pending.push_back(Err(StoreError::Unavailable("etcd closed the watch stream".into())));
                    self.done = true;
                }
                Err(e) => {
                    self.pending.push_back(Err(StoreError::Unavailable(format!("etcd watch: {e}"))));
                    self.done = true;
                }
            }
        }
    }
}
