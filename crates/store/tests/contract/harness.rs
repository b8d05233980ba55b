//! What a contract case needs from a backend, so each case is written once: fresh store instances (as many
//! agents would open), a way to let time pass (the embedded store's manual clock, or real sleeping for etcd,
//! whose server owns TTLs), and compaction of history.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weft_e2e::{Etcd, TempDir};
use weft_store::{EmbeddedOptions, EmbeddedStore, EtcdOptions, EtcdStore, ManualClock, Store, WatchEvent, WatchStream};
use weft_types::{LeaseRequest, NetworkConfig};

pub enum Backend {
    Embedded { _dir: TempDir, db: PathBuf, clock: ManualClock },
    Etcd(Etcd),
}

pub struct Harness {
    pub backend: Backend,
}

impl Harness {
    pub fn embedded() -> Self {
        let dir = TempDir::new("store");
        let db = dir.path().join("weft.db");
        Harness { backend: Backend::Embedded { _dir: dir, db, clock: ManualClock::new() } }
    }

    pub fn etcd() -> Self {
        Harness { backend: Backend::Etcd(Etcd::start()) }
    }

    /// A new store instance on the same backend, as another agent would open it.
    pub async fn store(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Embedded { db, clock, .. } => Arc::new(self.embedded_store(db, clock).await),
            Backend::Etcd(e) => Arc::new(etcd_store(e).await),
        }
    }

    async fn embedded_store(&self, db: &PathBuf, clock: &ManualClock) -> EmbeddedStore {
        let opts = EmbeddedOptions {
            clock: Arc::new(clock.clone()),
            poll_interval: Duration::from_millis(20),
            ..EmbeddedOptions::default()
        };
        EmbeddedStore::open_with(db, opts).await.expect("open embedded store")
    }

    /// A TTL short enough to wait out: etcd's minimum is about 2 s; the embedded clock jumps anyway.
    pub fn short_ttl(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Lets `d` pass for lease expiry purposes.
    pub async fn pass_time(&self, d: Duration) {
        match &self.backend {
            Backend::Embedded { clock, .. } => clock.advance(d),
            Backend::Etcd(_) => tokio::time::sleep(d).await,
        }
    }

    /// Drops all history up to now.
    pub async fn compact(&self) {
        match &self.backend {
            Backend::Embedded { db, clock, .. } => {
                self.embedded_store(db, clock).await.trim_changelog(0).await.expect("trim");
            }
            Backend::Etcd(e) => {
                let mut c = etcd_store(e).await.client().await.expect("client");
                let rev = c.get("x", None).await.expect("get").header().expect("header").revision();
                c.compact(rev, None).await.expect("compact");
            }
        }
    }
}

pub async fn etcd_store(e: &Etcd) -> EtcdStore {
    let opts = EtcdOptions { op_timeout: Duration::from_secs(2), ..EtcdOptions::default() };
    EtcdStore::connect(vec![e.endpoint()], opts).await.expect("connect etcd")
}

pub fn config(cidr: &str, len: u8) -> NetworkConfig {
    serde_json::from_value(
        serde_json::json!({"clusterCidr": cidr, "subnetLen": len, "clusterCidr6": "fd00:10:244::/48"}),
    )
    .expect("config")
}

pub fn req(node: &str, ttl: Duration) -> LeaseRequest {
    LeaseRequest {
        node: node.to_string(),
        node_ip: "192.0.2.1".parse().unwrap(),
        backend_data: weft_types::BackendData::Vxlan { vtep_mac: "02:00:00:00:00:01".into() },
        ttl,
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

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}
