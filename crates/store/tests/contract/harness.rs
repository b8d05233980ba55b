//! What a contract case needs from a backend, so each case is written once: fresh store instances (as many
//! agents would open), a way to let time pass (the embedded store's manual clock, or real sleeping for etcd,
//! whose server owns TTLs), and compaction of history.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weft_e2e::{Etcd, TempDir};
use weft_store::{
    EmbeddedOptions, EmbeddedStore, EtcdOptions, EtcdStore, ManualClock, ObjectKind, Store, WatchEvent, WatchStream,
};
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

impl Harness {
    /// Writes a lease row behind the store's back, as an attacker with write access (or a broken writer)
    /// would: stored under `subnet`'s key, naming `node` where the store keys by node, with `value` verbatim.
    pub async fn write_raw_lease(&self, subnet: &str, node: &str, value: &str) {
        match &self.backend {
            Backend::Embedded { db, .. } => {
                let c = rusqlite::Connection::open(db).expect("open db");
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                c.execute(
                    "INSERT INTO leases (subnet, node, value, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![subnet, node, value, i64::MAX],
                )
                .expect("insert lease row");
                c.execute(
                    "INSERT INTO changelog (kind, key, op, value) VALUES ('leases', ?1, 'put', ?2)",
                    rusqlite::params![node, value],
                )
                .expect("insert change");
            }
            Backend::Etcd(e) => {
                let mut c = etcd_store(e).await.client().await.expect("client");
                c.put(format!("/weft/leases/{}", subnet.replace('/', "_")), value, None).await.expect("put");
            }
        }
    }

    /// Writes an object row behind the store's back, `value` verbatim.
    pub async fn write_raw_object(&self, kind: ObjectKind, key: &str, value: &str) {
        match &self.backend {
            Backend::Embedded { db, .. } => {
                let c = rusqlite::Connection::open(db).expect("open db");
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                c.execute(
                    "INSERT INTO changelog (kind, key, op, value) VALUES (?1, ?2, 'put', ?3)",
                    rusqlite::params![kind.as_str(), key, value],
                )
                .expect("insert change");
                let rev = c.last_insert_rowid();
                c.execute(
                    "INSERT INTO objects (kind, key, value, rev) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, rev = excluded.rev",
                    rusqlite::params![kind.as_str(), key, value, rev],
                )
                .expect("insert object");
            }
            Backend::Etcd(e) => {
                let mut c = etcd_store(e).await.client().await.expect("client");
                c.put(format!("/weft/objects/{}/{key}", kind.as_str()), value, None).await.expect("put");
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

fn node_mac(node: &str) -> String {
    let h = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let b = h.to_be_bytes();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[3], b[4], b[5], b[6], b[7])
}

pub fn req(node: &str, ttl: Duration) -> LeaseRequest {
    LeaseRequest {
        node: node.to_string(),
        node_ip: "192.0.2.1".parse().unwrap(),
        // One MAC per node, as real VTEPs have (admission refuses a copied one).
        backend_data: weft_types::BackendData::Vxlan { vtep_mac: node_mac(node) },
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
