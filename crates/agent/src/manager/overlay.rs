//! The overlay manager: the backend's device and every peer's routes, through the reconciler, plus what the
//! operator sees of them (status, metrics, drift).
//!
//! Drift means the kernel changed behind our back: the desired state is what it was after the last pass, yet the
//! diff is not empty, or the device was recreated (new ifindex). Which trigger woke the pass does not matter.
//! "What it was" is kept as a fingerprint of the desired state, not a copy (a copy is ~1 MiB per 5 000 peers).
//! When the device comes back with a new identity (VXLAN: a new MAC), the new backend data is handed to the lease
//! keeper, which publishes it at once.
use super::{Manager, ManagerError, Peers, View};
use crate::backend::vxlan::vtep_mac;
use crate::metrics::Metrics;
use crate::reconcile::{Outcome, Reconciler};
use crate::status::{now_ms, PeerStatus, Programmed, SharedStatus};
use async_trait::async_trait;
use ipnet::{Ipv4Net, Ipv6Net};
use std::sync::Arc;
use tokio::sync::watch;
use weft_dataplane::{format_mac, OverlayState};
use weft_types::{BackendData, Lease};

pub struct OverlayManager {
    rec: Reconciler,
    published: watch::Sender<BackendData>,
    status: SharedStatus,
    metrics: Arc<Metrics>,
    subnets: (Ipv4Net, Option<Ipv6Net>),
    last_desired: Option<u64>,
    last_device: Option<u32>,
}

impl OverlayManager {
    /// `published` carries the backend data the lease holds; `subnets` are the ones the reconciler's backend
    /// already knows.
    pub fn new(
        rec: Reconciler,
        published: watch::Sender<BackendData>,
        status: SharedStatus,
        metrics: Arc<Metrics>,
        subnets: (Ipv4Net, Option<Ipv6Net>),
    ) -> Self {
        Self { rec, published, status, metrics, subnets, last_desired: None, last_device: None }
    }
}

#[async_trait]
impl Manager for OverlayManager {
    fn name(&self) -> &'static str {
        "overlay"
    }

    async fn update(&mut self, view: &View<'_>) -> Result<(), ManagerError> {
        let me = view.me;
        if (me.subnet, me.subnet6) != self.subnets {
            // Lease lost and another subnet acquired: the device must carry the new gateway addresses.
            self.subnets = (me.subnet, me.subnet6);
            self.rec.set_subnets(me.subnet, me.subnet6);
        }
        // Peers not listed yet (store slow or away): leave the kernel exactly as it is.
        let Some(peers) = view.peers else { return Ok(()) };
        let out = self.rec.reconcile(peers.iter()).await?;
        if *self.published.borrow() != out.data {
            tracing::warn!(data = ?out.data, "backend data changed (device recreated or key rotated); publishing it");
            self.published.send_replace(out.data.clone());
        }
        let recreated = matches!((self.last_device, out.device), (Some(a), Some(b)) if a != b);
        let desired = fingerprint(&out.desired);
        let drift = recreated || (self.last_desired == Some(desired) && !out.ops.is_empty());
        self.last_device = out.device;
        self.record(me, peers, &out, drift);
        if !out.ops.is_empty() || !out.report.failed.is_empty() {
            tracing::info!(
                applied = out.report.applied,
                failed = out.report.failed.len(),
                peers = peers.len(),
                periodic = view.periodic,
                "dataplane reconciled"
            );
        }
        for (op, err) in &out.report.failed {
            tracing::warn!(?op, %err, "kernel refused a change; next resync retries");
        }
        self.last_desired = Some(desired);
        Ok(())
    }

    async fn stop(&mut self) {
        self.rec.stop().await;
    }

    async fn teardown(&mut self) -> Result<(), ManagerError> {
        Ok(self.rec.teardown().await?)
    }
}

/// A hash of every entry (std's SipHash with fixed keys: stable within the process, which is all drift needs).
fn fingerprint(st: &OverlayState) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (&st.neighs, &st.fdbs, &st.nexthops, &st.routes).hash(&mut h);
    h.finish()
}

impl OverlayManager {
    fn record(&self, me: &Lease, peers: Peers<'_>, out: &Outcome, drift: bool) {
        let (metrics, backend, local) = (&self.metrics, self.rec.backend(), &self.rec.local);
        metrics.peers.set(peers.len() as i64);
        metrics.ops_applied.inc_by(out.report.applied as u64);
        metrics.ops_failed.inc_by(out.report.failed.len() as u64);
        let mut st = self.status.write().expect("status lock");
        if drift {
            metrics.drift_repaired.inc_by(out.ops.len() as u64);
            st.last_drift = out.ops.iter().map(|o| format!("{o:?}")).collect();
            st.last_drift_at_ms = now_ms();
            tracing::warn!(entries = out.ops.len(), "resync found drift (entries changed behind our back); repaired");
        }
        st.subnet = Some(me.subnet.to_string());
        st.subnet6 = me.subnet6.map(|s| s.to_string());
        st.vtep_mac = vtep_mac(&me.backend_data).map(|m| format_mac(&m));
        st.lease_expires_at_ms = me.expires_at_ms;
        st.store_up = metrics.store_up.get() == 1;
        st.spoofed_dropped = metrics.spoofed_dropped.get() as u64;
        st.agent_port_rejected = metrics.agent_port_rejected.get() as u64;
        let stats = backend.peer_stats();
        metrics.set_tunnel_stats(&stats);
        st.tunnel_dropped = backend.device_drops();
        metrics.set_tunnel_drops(st.tunnel_dropped.as_ref());
        let tunnel: std::collections::BTreeMap<String, crate::status::TunnelPeerStatus> = stats
            .into_iter()
            .map(|s| {
                let t = crate::status::TunnelPeerStatus {
                    handshake_age_ms: s.handshake_age_ms,
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                    decrypt_failures: s.decrypt_failures,
                };
                (s.node, t)
            })
            .collect();
        st.peers = peers
            .iter()
            .map(|p| PeerStatus {
                tunnel: tunnel.get(&p.node).cloned(),
                node: p.node.clone(),
                subnet: p.subnet.to_string(),
                subnet6: p.subnet6.map(|s| s.to_string()),
                node_ip: p.node_ip.to_string(),
                vtep_mac: vtep_mac(&p.backend_data).map(|m| format_mac(&m)),
                path: backend.path_to(local, p).as_str().into(),
            })
            .collect();
        st.skipped_peers = out.skipped.clone();
        st.programmed = Programmed {
            routes: out.desired.routes.len(),
            nexthops: out.desired.nexthops.len(),
            neighbours: out.desired.neighs.len(),
            fdb: out.desired.fdbs.len(),
        };
        st.last_reconcile_at_ms = now_ms();
        st.last_error = out.report.failed.first().map(|(op, e)| format!("{op:?}: {e}"));
        st.ready = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_dataplane::{Route, RouteTarget};

    #[test]
    fn fingerprint_tells_states_apart() {
        let mut a = OverlayState::default();
        let empty = fingerprint(&a);
        a.add_route(Route { dst: "10.244.2.0/24".parse().unwrap(), target: RouteTarget::Nexthop(7) });
        let b = a.clone();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), empty);
        a.add_route(Route { dst: "10.244.2.0/24".parse().unwrap(), target: RouteTarget::Nexthop(8) });
        assert_ne!(fingerprint(&a), fingerprint(&b), "same key, new value");
    }
}
