//! Lease watches on Nodes: replay from a listed revision, live events, Delete on release and on Node deletion,
//! bookmarks, a server-closed watch resumed invisibly, and 410 Gone → Reset.
use crate::{next, quiet, req, Kit};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;
use weft_store::{ObjectKind, WatchEvent};
use weft_store_kube::fake::PatchKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_every_change_after_a_listed_revision() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["a", "b", "c"]);
    let s = k.store().await;
    let r0 = s.leases().await.unwrap().revision;
    // Changes between the list and the watch are not lost: the watch starts from the list's revision.
    let a = s.acquire(&req("a")).await.unwrap();
    let b = k.store().await.acquire(&req("b")).await.unwrap();
    let mut w = s.watch_leases(r0).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(a.clone()));
    assert_eq!(next(&mut w).await, WatchEvent::Put(b.clone()));
    let c = k.store().await.acquire(&req("c")).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(c.clone()));
    // A Node without weft annotations joining, or a change to other fields (the kubelet's status updates), is
    // no lease event.
    k.nodes(&["plain"]);
    let nodes = weft_store_kube::fake::resources::by_plural("", "v1", "nodes").unwrap();
    let status =
        json!({"metadata": {"labels": {"zone": "b"}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    k.server.cluster().patch(nodes, None, "c", PatchKind::Merge, &status).unwrap();
    quiet(&mut w, Duration::from_millis(300)).await;
    // Resuming from a later snapshot replays only what came after it.
    let snap = s.leases().await.unwrap();
    assert_eq!(snap.items.len(), 3);
    s.release("a").await.unwrap();
    let mut resumed = s.watch_leases(snap.revision).await.unwrap();
    assert_eq!(next(&mut resumed).await, WatchEvent::Delete("a".into()));
    // Deleting the Node ends its lease.
    k.server.cluster().remove("Node", None, "b").unwrap();
    assert_eq!(next(&mut resumed).await, WatchEvent::Delete("b".into()));
    quiet(&mut resumed, Duration::from_millis(300)).await;
    assert_eq!(next(&mut w).await, WatchEvent::Delete("a".into()));
    assert_eq!(next(&mut w).await, WatchEvent::Delete("b".into()));
    assert_eq!(s.leases().await.unwrap().items, vec![c]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_resource_version_resets_and_ends_the_stream() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["a", "b"]);
    let s = k.store().await;
    let r0 = s.leases().await.unwrap().revision;
    s.acquire(&req("a")).await.unwrap();
    k.server.cluster().compact();
    let mut w = s.watch_leases(r0).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Reset);
    assert!(w.next().await.is_none(), "the stream ends after Reset");
    // A watcher from a fresh snapshot works.
    let snap = s.leases().await.unwrap();
    assert_eq!(snap.items.len(), 1);
    let mut w = s.watch_leases(snap.revision).await.unwrap();
    let b = s.acquire(&req("b")).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(b));
    // Object watches reset the same way.
    let mut ow = s.watch_objects(ObjectKind::Policy, r0).await.unwrap();
    assert_eq!(next(&mut ow).await, WatchEvent::Reset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_the_server_closes_resumes_without_a_relist() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["a", "b"]);
    let s = k.store().await;
    let mut w = s.watch_leases(s.leases().await.unwrap().revision).await.unwrap();
    let a = s.acquire(&req("a")).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(a));
    // What an API server restart or its watch timeout looks like: the stream just ends.
    k.server.cluster().close_watches();
    let b = s.acquire(&req("b")).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(b), "the change made while the watch was down arrives");
    quiet(&mut w, Duration::from_millis(300)).await;
}

/// Bookmarks are invisible to the consumer but move the resume point: after other resources changed, history
/// was compacted and the watch was lost, a watch that saw bookmarks resumes where an old one would need a
/// relist. Without bookmarks this test gets a Reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_produce_no_events_but_move_the_resume_point() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    k.nodes(&["a"]);
    let s = k.store().await;
    let mut w = s.watch_leases(s.leases().await.unwrap().revision).await.unwrap();
    for i in 0..5 {
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "default", "name": format!("p{i}")}});
        k.server.cluster().apply(pod).unwrap();
    }
    // Several bookmark intervals (100 ms): bookmarks arrive, and none surfaces as an event.
    quiet(&mut w, Duration::from_millis(500)).await;
    k.server.cluster().compact();
    k.server.cluster().close_watches();
    let a = s.acquire(&req("a")).await.unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_gone_ends_a_watch_with_unavailable() {
    let k = Kit::with_config("10.244.0.0/16", 24).await;
    let s = k.store().await;
    let mut w = s.watch_leases(s.leases().await.unwrap().revision).await.unwrap();
    let url = k.server.http_url();
    k.server.stop().await;
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(weft_store::StoreError::Unavailable(m)))) => assert!(m.contains(&url), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(w.next().await.is_none(), "the stream ends after an error");
}
