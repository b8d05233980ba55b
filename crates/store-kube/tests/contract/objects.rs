//! Pods, Namespaces and NetworkPolicies as store objects: list, watch, and the read-only rule.
use crate::{next, quiet, Kit};
use serde_json::{json, Value};
use std::time::Duration;
use weft_store::{ObjectKind, StoreError, WatchEvent};

fn pod(ns: &str, name: &str, ip: &str, host_network: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns, "name": name, "labels": {"app": name}},
           "spec": {"nodeName": "n1", "hostNetwork": host_network,
                    "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn endpoint(ns: &str, name: &str, ip: &str) -> Value {
    json!({"namespace": ns, "name": name, "labels": {"app": name}, "ips": [ip], "node": "n1",
           "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_endpoints_host_network_ones_are_not() {
    let k = Kit::start().await;
    let c = k.server.cluster();
    c.apply(pod("default", "a", "10.244.1.5", false)).unwrap();
    c.apply(pod("kube-system", "proxy", "192.0.2.1", true)).unwrap();
    let s = k.store().await;
    let snap = s.objects(ObjectKind::Endpoint).await.unwrap();
    assert_eq!(snap.items, vec![("default/a".to_string(), endpoint("default", "a", "10.244.1.5"))]);
    let mut w = s.watch_objects(ObjectKind::Endpoint, snap.revision).await.unwrap();
    let mut pw = s.watch_objects(ObjectKind::Policy, snap.revision).await.unwrap();
    c.apply(pod("default", "b", "10.244.1.6", false)).unwrap();
    c.apply(pod("kube-system", "other-host-pod", "192.0.2.2", true)).unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Put(("default/b".into(), endpoint("default", "b", "10.244.1.6"))));
    // A pod that finished no longer owns its IP.
    let mut done = pod("default", "a", "10.244.1.5", false);
    done["status"]["phase"] = json!("Succeeded");
    c.apply(done).unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("default/a".into()));
    c.remove("Pod", Some("default"), "b").unwrap();
    assert_eq!(next(&mut w).await, WatchEvent::Delete("default/b".into()));
    c.remove("Pod", Some("default"), "a").unwrap();
    quiet(&mut w, Duration::from_millis(300)).await;
    quiet(&mut pw, Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_policies_list_and_watch() {
    let k = Kit::start().await;
    let c = k.server.cluster();
    let s = k.store().await;
    let ns = s.objects(ObjectKind::Namespace).await.unwrap();
    let names: Vec<&str> = ns.items.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["default", "kube-system", "weft-system"]);
    assert_eq!(ns.items[0].1, json!({"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}));
    let mut nw = s.watch_objects(ObjectKind::Namespace, ns.revision).await.unwrap();
    let mut pw = s.watch_objects(ObjectKind::Policy, ns.revision).await.unwrap();
    c.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web", "labels": {"team": "a"}}}))
        .unwrap();
    assert_eq!(
        next(&mut nw).await,
        WatchEvent::Put((
            "web".into(),
            json!({"name": "web", "labels": {"team": "a", "kubernetes.io/metadata.name": "web"}})
        ))
    );
    let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "web", "name": "deny-all"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
    c.apply(np).unwrap();
    match next(&mut pw).await {
        WatchEvent::Put((key, v)) => {
            assert_eq!(key, "web/deny-all");
            assert_eq!(v["apiVersion"], "networking.k8s.io/v1");
            assert_eq!(v["spec"], json!({"podSelector": {}, "policyTypes": ["Ingress"]}));
        }
        other => panic!("expected a Put, got {other:?}"),
    }
    let listed = s.objects(ObjectKind::Policy).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    c.remove("NetworkPolicy", Some("web"), "deny-all").unwrap();
    assert_eq!(next(&mut pw).await, WatchEvent::Delete("web/deny-all".into()));
    quiet(&mut nw, Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_read_only() {
    let k = Kit::start().await;
    let s = k.store().await;
    for r in [
        s.put_object(ObjectKind::Endpoint, "default/a", &json!({})).await.map(|_| ()),
        s.delete_object(ObjectKind::Policy, "default/p").await,
    ] {
        match r {
            Err(StoreError::Other(m)) => assert!(m.contains("read-only in Kubernetes mode"), "{m}"),
            other => panic!("expected read-only, got {other:?}"),
        }
    }
}
