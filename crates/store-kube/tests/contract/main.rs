//! The store contract for the Kubernetes store, run against the fake API server (one per test, on a free
//! loopback port, so tests run in parallel). The cases mirror weft-store's contract suite where the contract
//! applies; what differs on purpose (no TTL expiry, read-only objects, Nodes must exist) is in the crate docs.
//!
//! The fake is not a real API server: these tests prove the store against real Kubernetes JSON and the
//! semantics the fake implements (see `weft_store_kube::fake`), not against kube-apiserver itself.
//!
//! Run: `cargo test -p weft-store-kube --test contract`.
mod claims;
mod errors;
mod leases;
mod networks;
mod objects;
mod rbac;
mod watch;

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use weft_store::{Store, WatchEvent, WatchStream};
use weft_store_kube::fake::{FakeApiServer, FakeOptions};
use weft_store_kube::KubeStore;
use weft_types::{LeaseRequest, NetworkConfig};

pub const LONG: Duration = Duration::from_secs(60);

pub struct Kit {
    pub server: FakeApiServer,
}

impl Kit {
    /// A fake cluster with the `weft-system` namespace (as deploy/weft.yaml creates it) and fast bookmarks.
    pub async fn start() -> Kit {
        let opts = FakeOptions { bookmark_interval: Duration::from_millis(100), ..FakeOptions::default() };
        let server = FakeApiServer::start("127.0.0.1:0".parse().unwrap(), opts).await.expect("fake apiserver");
        server
            .cluster()
            .apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "weft-system"}}))
            .unwrap();
        Kit { server }
    }

    /// Same, with the network config already stored.
    pub async fn with_config(cidr: &str, len: u8) -> Kit {
        let k = Kit::start().await;
        k.store().await.init_network_config(&config(cidr, len)).await.expect("init config");
        k
    }

    /// A new store instance, as another agent would open it.
    pub async fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.kube_store().await)
    }

    pub async fn kube_store(&self) -> KubeStore {
        KubeStore::connect(&self.server.store_url()).await.expect("connect")
    }

    /// Registers Nodes as kubelets would, without podCIDRs (the cluster does not allocate).
    pub fn nodes(&self, names: &[&str]) {
        for n in names {
            self.server.cluster().add_node(n, &[]);
        }
    }

    pub fn annotations(&self, node: &str) -> serde_json::Value {
        let nodes = weft_store_kube::fake::resources::by_plural("", "v1", "nodes").unwrap();
        self.server.cluster().get(nodes, None, node).unwrap()["metadata"]["annotations"].clone()
    }

    /// The weft subnet claims in weft-system: (name, holder).
    pub fn claims(&self) -> Vec<(String, String)> {
        let leases = weft_store_kube::fake::resources::by_plural("coordination.k8s.io", "v1", "leases").unwrap();
        let (items, _) = self.server.cluster().list(leases, Some("weft-system"));
        items
            .iter()
            .map(|l| {
                let name = l["metadata"]["name"].as_str().unwrap().to_string();
                (name, l["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }
}

pub fn config(cidr: &str, len: u8) -> NetworkConfig {
    serde_json::from_value(json!({"clusterCidr": cidr, "subnetLen": len, "clusterCidr6": "fd00:10:244::/48"}))
        .expect("config")
}

pub fn req(node: &str) -> LeaseRequest {
    LeaseRequest {
        node: node.to_string(),
        node_ip: "192.0.2.1".parse().unwrap(),
        backend_data: weft_types::BackendData::Vxlan { vtep_mac: "02:00:00:00:00:01".into() },
        ttl: LONG,
        hint: None,
    }
}

/// The next event, failing the test if none comes within 10 s or the stream errors or ends.
pub async fn next<T: std::fmt::Debug>(w: &mut WatchStream<T>) -> WatchEvent<T> {
    use futures::StreamExt;
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch error: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10 s"),
    }
}

/// Asserts that no event arrives within `d`.
pub async fn quiet<T: std::fmt::Debug>(w: &mut WatchStream<T>, d: Duration) {
    use futures::StreamExt;
    if let Ok(ev) = tokio::time::timeout(d, w.next()).await {
        panic!("expected no event, got {ev:?}");
    }
}
