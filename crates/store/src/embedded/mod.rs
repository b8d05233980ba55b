//! The embedded store: one SQLite file, no server. It is the default because a single-node cluster or a lab
//! of many agents on one host should not need etcd; several agents (processes) share the file safely.
//!
//! Each [`EmbeddedStore`] owns one connection behind a mutex and runs every SQLite call on tokio's blocking
//! pool (`spawn_blocking`), so a writer waiting on another process's lock never stalls the async runtime. The
//! operations themselves live in `tx` as synchronous one-transaction functions; watching is polling of the
//! change log (`watch`). Time comes from an injected [`Clock`] so TTL tests need not sleep.
mod schema;
mod tx;
mod watch;

use crate::clock::{Clock, SystemClock};
use crate::{LeaseEntry, Object, ObjectEntry, ObjectKind, Revision, Snapshot, Store, StoreError, WatchStream};
use async_trait::async_trait;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tx::Ctx;
use weft_types::{Lease, LeaseRequest, NetworkConfig};

/// Tuning of the embedded store; `Default` is what an agent wants.
#[derive(Clone)]
pub struct EmbeddedOptions {
    pub clock: Arc<dyn Clock>,
    /// How often a watcher looks at the change log.
    pub poll_interval: Duration,
    /// How long a writer waits for another process's write lock before reporting `Unavailable`.
    pub busy_timeout: Duration,
    /// Change log rows kept; a watcher further behind gets `Reset`.
    pub changelog_keep: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            poll_interval: Duration::from_millis(100),
            busy_timeout: Duration::from_secs(30),
            changelog_keep: 10_000,
        }
    }
}

impl std::fmt::Debug for EmbeddedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedOptions")
            .field("poll_interval", &self.poll_interval)
            .field("busy_timeout", &self.busy_timeout)
            .field("changelog_keep", &self.changelog_keep)
            .finish_non_exhaustive()
    }
}

/// A store in a local SQLite file.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// A std mutex: it is only ever held on a blocking thread, never across an await.
    conn: Mutex<Connection>,
    opts: EmbeddedOptions,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database at `path` with default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, EmbeddedOptions::default()).await
    }

    pub async fn open_with(path: impl AsRef<Path>, opts: EmbeddedOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let (p, busy) = (path.clone(), opts.busy_timeout);
        let conn = tokio::task::spawn_blocking(move || schema::open(&p, busy))
            .await
            .map_err(|e| StoreError::Other(format!("open task: {e}")))?
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        Ok(Self { inner: Arc::new(Inner { conn: Mutex::new(conn), opts, path }) })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Trims the change log to its newest `keep` rows now; watchers behind that get `Reset`.
    pub async fn trim_changelog(&self, keep: u64) -> Result<(), StoreError> {
        self.run(move |c, _| tx::trim_now(c, keep)).await
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, Ctx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.inner.clone().run(f).await
    }
}

impl Inner {
    fn ctx(&self) -> Ctx {
        Ctx { now_ms: self.opts.clock.now_ms(), keep: self.opts.changelog_keep }
    }

    async fn run<T: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&mut Connection, Ctx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(move || {
            // A panic in another call poisons the mutex but leaves the connection usable: SQLite rolled back.
            let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            let ctx = self.ctx();
            f(&mut conn, ctx)
        })
        .await
        .map_err(|e| StoreError::Other(format!("store task: {e}")))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn network_config(&self) -> Result<NetworkConfig, StoreError> {
        self.run(|c, _| tx::network_config(c)).await
    }

    async fn init_network_config(&self, cfg: &NetworkConfig) -> Result<NetworkConfig, StoreError> {
        let cfg = cfg.clone();
        self.run(move |c, _| tx::init_network_config(c, &cfg)).await
    }

    async fn acquire(&self, req: &LeaseRequest) -> Result<Lease, StoreError> {
        let req = req.clone();
        self.run(move |c, ctx| tx::acquire(c, ctx, &req)).await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let lease = lease.clone();
        self.run(move |c, ctx| tx::renew(c, ctx, &lease, ttl)).await
    }

    async fn release(&self, node: &str) -> Result<(), StoreError> {
        let node = node.to_string();
        self.run(move |c, ctx| tx::release(c, ctx, &node)).await
    }

    async fn leases(&self) -> Result<Snapshot<Lease>, StoreError> {
        self.run(tx::leases).await
    }

    async fn watch_leases(&self, after: Revision) -> Result<WatchStream<Lease>, StoreError> {
        Ok(watch::leases(self.inner.clone(), after))
    }

    async fn lease_entries(&self) -> Result<Snapshot<LeaseEntry>, StoreError> {
        self.run(tx::lease_entries).await
    }

    async fn watch_lease_entries(&self, after: Revision) -> Result<WatchStream<LeaseEntry>, StoreError> {
        Ok(watch::lease_entries(self.inner.clone(), after))
    }

    async fn put_object(&self, kind: ObjectKind, key: &str, value: &serde_json::Value) -> Result<Revision, StoreError> {
        let (key, value) = (key.to_string(), value.clone());
        self.run(move |c, ctx| tx::put_object(c, ctx, kind.as_str(), &key, &value)).await
    }

    async fn delete_object(&self, kind: ObjectKind, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.run(move |c, ctx| tx::delete_object(c, ctx, kind.as_str(), &key)).await
    }

    async fn objects(&self, kind: ObjectKind) -> Result<Snapshot<Object>, StoreError> {
        self.run(move |c, _| tx::objects(c, kind.as_str())).await
    }

    async fn watch_objects(&self, kind: ObjectKind, after: Revision) -> Result<WatchStream<Object>, StoreError> {
        Ok(watch::objects(self.inner.clone(), kind, after))
    }

    async fn object_entries(&self, kind: ObjectKind) -> Result<Snapshot<ObjectEntry>, StoreError> {
        self.run(move |c, _| tx::object_entries(c, kind.as_str())).await
    }

    async fn watch_object_entries(
        &self,
        kind: ObjectKind,
        after: Revision,
    ) -> Result<WatchStream<ObjectEntry>, StoreError> {
        Ok(watch::object_entries(self.inner.clone(), kind, after))
    }
}
