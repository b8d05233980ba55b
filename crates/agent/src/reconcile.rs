//! The reconciler: desired state (from leases) vs actual state (from the kernel) → apply only the difference.
//!
//! It is level-triggered: it is never told *what* changed, only that something may have, so a missed event,
//! a restart or an entry deleted by hand all converge the same way. A pass with an empty diff touches nothing,
//! which is why an agent restart does not disturb a single packet.
use crate::desired::{desired_state, LocalNode};
use crate::firewall::{self, FirewallSpec};
use std::sync::Arc;
use weft_dataplane::diff::diff;
use weft_dataplane::{ApplyReport, Dataplane, DataplaneError, Op, OverlayState, Scope, VtepInfo, VxlanSpec};
use weft_types::{Lease, NetworkConfig};

pub struct Reconciler {
    dp: Arc<dyn Dataplane>,
    cfg: NetworkConfig,
    pub local: LocalNode,
    vxlan: Option<VxlanSpec>,
    firewall: FirewallSpec,
    applied_firewall: Option<String>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub ops: Vec<Op>,
    pub report: ApplyReport,
    pub skipped: Vec<String>,
    pub desired: OverlayState,
    pub vtep: Option<VtepInfo>,
    pub firewall_applied: bool,
}

impl Reconciler {
    pub fn new(
        dp: Arc<dyn Dataplane>,
        cfg: NetworkConfig,
        local: LocalNode,
        vxlan: Option<VxlanSpec>,
        firewall: FirewallSpec,
    ) -> Self {
        Self { dp, cfg, local, vxlan, firewall, applied_firewall: None }
    }

    /// One pass. `full` re-applies the firewall table even if we believe it is in place (periodic resync:
    /// someone may have flushed it).
    pub async fn reconcile(&mut self, me: &Lease, peers: &[Lease], full: bool) -> Result<Outcome, DataplaneError> {
        let mut out = Outcome::default();
        if let Some(spec) = &self.vxlan {
            let v = self.dp.ensure_vxlan(spec).await?;
            self.local.vxlan_ifindex = Some(v.ifindex);
            out.vtep = Some(v);
        }
        let (desired, skipped) = desired_state(&self.cfg, &self.local, peers.iter().filter(|p| p.node != me.node));
        let actual = self.dp.read_state(&Scope { vxlan_ifindex: self.local.vxlan_ifindex }).await?;
        out.ops = diff(&desired, &actual);
        if !out.ops.is_empty() {
            out.report = self.dp.apply(&out.ops).await?;
        }
        out.skipped = skipped;
        out.desired = desired;

        let mut fw = self.firewall.clone();
        fw.node_ips = peers.iter().map(|p| p.node_ip).chain(std::iter::once(me.node_ip)).collect();
        fw.node_ips.sort();
        fw.node_ips.dedup();
        let text = firewall::render(&fw);
        if full || self.applied_firewall.as_deref() != Some(text.as_str()) {
            self.dp.apply_nft(firewall::FAMILY, firewall::TABLE, &text).await?;
            self.applied_firewall = Some(text);
            out.firewall_applied = true;
        }
        Ok(out)
    }

    /// Removes everything this agent programmed (uninstall).
    pub async fn teardown(&mut self) -> Result<(), DataplaneError> {
        let actual = self.dp.read_state(&Scope { vxlan_ifindex: self.local.vxlan_ifindex }).await?;
        let ops = diff(&OverlayState::default(), &actual);
        if !ops.is_empty() {
            self.dp.apply(&ops).await?;
        }
        if let Some(spec) = &self.vxlan {
            self.dp.delete_link(&spec.name).await?;
        }
        self.dp.delete_nft(firewall::FAMILY, firewall::TABLE).await
    }
}
