//! Holding the node's lease: acquire at start, renew every third of the TTL, take it again if lost.
//!
//! Renewal failures while the store is away are retried quickly and do not touch the dataplane: pods keep
//! their addresses and routes. If the lease lapsed and another node took the subnet (only possible after a
//! store outage longer than the TTL), we acquire a new one and say so loudly: pods created before keep their
//! old addresses until they restart, exactly as with Flannel.
use crate::metrics::Metrics;
use crate::peers::sleep_or_shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_store::{Store, StoreError};
use weft_types::{BackendData, Lease, LeaseRequest};

/// Acquires, retrying while the store is unavailable (a node that boots before its store is a normal event) and,
/// more slowly, while the cluster is misconfigured (no pod CIDR, a CIDR outside the cluster network, no free
/// subnet): those are reported through `report` (log line, not-ready status with the reason) and retried,
/// because an operator fixing the config should not have to restart anything, and a crash loop hides the reason.
pub async fn acquire(
    store: &dyn Store,
    req: &LeaseRequest,
    shutdown: &mut watch::Receiver<bool>,
    report: impl Fn(&StoreError),
) -> Result<Lease, StoreError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let err = match store.acquire(req).await {
            Ok(l) => return Ok(l),
            Err(e) => e,
        };
        let wait = match &err {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "store unavailable; retrying lease acquisition");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                backoff
            }
            e => {
                tracing::error!(error = %e, "cannot acquire a subnet lease; not ready, retrying in 10 s");
                Duration::from_secs(10)
            }
        };
        report(&err);
        sleep_or_shutdown(wait, shutdown).await;
        if *shutdown.borrow() {
            return Err(err);
        }
    }
}

pub struct Keeper {
    pub store: Arc<dyn Store>,
    pub req: LeaseRequest,
    pub metrics: Arc<Metrics>,
}

impl Keeper {
    /// Renews `lease` until shutdown; publishes every new version of it on `tx`. Backend data updates (a VTEP
    /// recreated with a new MAC) arrive on `backend` and are published with an immediate renewal.
    pub async fn run(
        self,
        mut lease: Lease,
        tx: watch::Sender<Lease>,
        mut backend: watch::Receiver<BackendData>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let period = self.req.ttl / 3;
        let mut wait = period;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = backend.changed() => {
                    if r.is_err() { return; }
                    lease.backend_data = backend.borrow().clone();
                }
                _ = shutdown.changed() => return,
            }
            match self.store.renew(&lease, self.req.ttl).await {
                Ok(l) => {
                    self.metrics.lease_renewals.inc();
                    self.metrics.store_up.set(1);
                    lease = l;
                    tx.send_replace(lease.clone());
                    wait = period;
                }
                Err(StoreError::LeaseLost(_)) => {
                    self.metrics.lease_renew_failures.inc();
                    tracing::error!(subnet = %lease.subnet, "lease lost; acquiring again");
                    let mut req = self.req.clone();
                    req.hint = Some(lease.subnet);
                    req.backend_data = lease.backend_data.clone();
                    match self.store.acquire(&req).await {
                        Ok(l) => {
                            if l.subnet != lease.subnet {
                                tracing::error!(old = %lease.subnet, new = %l.subnet,
                                    "subnet changed: pods created before keep addresses of the old subnet");
                            }
                            lease = l;
                            tx.send_replace(lease.clone());
                            wait = period;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "re-acquiring the lease failed");
                            wait = Duration::from_secs(1);
                        }
                    }
                }
                Err(e) => {
                    self.metrics.lease_renew_failures.inc();
                    self.metrics.store_up.set(0);
                    tracing::warn!(error = %e, "lease renewal failed; dataplane unchanged, retrying");
                    wait = Duration::from_secs(1).min(period);
                }
            }
        }
    }
}
