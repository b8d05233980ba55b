//! The reconciler: desired state (from leases) vs actual state (from the kernel) → apply only the difference.
//!
//! It is level-triggered: it is never told *what* changed, only that something may have, so a missed event,
//! a restart or an entry deleted by hand all converge the same way. A pass with an empty diff touches nothing,
//! which is why an agent restart does not disturb a single packet.
use crate::desired::{desired_state, LocalNode};
use crate::firewall::{self, FirewallSpec};
use std::borrow::Borrow;
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

    /// One pass. `full` also checks that the firewall table is still in the kernel (periodic resync: someone may
    /// have deleted it) and loads it again if not.
    /// `peers` may be borrowed (`&[&Lease]`): the agent passes references into its peer map, not copies.
    pub async fn reconcile<L: Borrow<Lease>>(
        &mut self,
        me: &Lease,
        peers: &[L],
        full: bool,
    ) -> Result<Outcome, DataplaneError> {
        let peers = || peers.iter().map(Borrow::<Lease>::borrow);
        let mut out = Outcome::default();
        if let Some(spec) = &self.vxlan {
            let v = self.dp.ensure_vxlan(spec).await?;
            self.local.vxlan_ifindex = Some(v.ifindex);
            out.vtep = Some(v);
        }
        let (desired, skipped) = desired_state(&self.cfg, &self.local, peers().filter(|p| p.node != me.node));
        let actual = self.dp.read_state(&Scope { vxlan_ifindex: self.local.vxlan_ifindex }).await?;
        out.ops = diff(&desired, &actual);
        if !out.ops.is_empty() {
            out.report = self.dp.apply(&out.ops).await?;
        }
        out.skipped = skipped;
        out.desired = desired;

        let mut fw = self.firewall.clone();
        fw.node_ips = peers().map(|p| p.node_ip).chain(std::iter::once(me.node_ip)).collect();
        fw.node_ips.sort();
        fw.node_ips.dedup();
        let text = firewall::render(&fw);
        // A full (periodic) pass only checks the table is still there (its counters are): replacing it every
        // resync would cost an nft run each time for nothing.
        let missing =
            full && self.dp.nft_counters(firewall::FAMILY, firewall::TABLE).await.unwrap_or_default().is_empty();
        if missing || self.applied_firewall.as_deref() != Some(text.as_str()) {
            self.dp.apply_nft(firewall::FAMILY, firewall::TABLE, &text).await?;
            self.applied_firewall = Some(text);
            out.firewall_applied = true;
        }
        Ok(out)
    }

    /// Sets the gateway addresses the VXLAN device must carry (after a subnet change).
    pub fn set_vxlan_addresses(&mut self, (a4, a6): (Option<ipnet::IpNet>, Option<ipnet::IpNet>)) {
        if let Some(spec) = self.vxlan.as_mut() {
            spec.address = a4;
            spec.address6 = a6;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use weft_dataplane::fake::FakeDataplane;
    use weft_dataplane::UnderlayInfo;

    fn cfg() -> NetworkConfig {
        serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16"}"#).unwrap()
    }

    fn lease(i: u8) -> Lease {
        Lease {
            node: format!("n{i}"),
            subnet: format!("10.244.{i}.0/24").parse().unwrap(),
            subnet6: None,
            node_ip: format!("172.30.{i}.1").parse().unwrap(),
            backend_data: serde_json::json!({"v":1,"vtepMac":format!("02:00:00:00:00:{i:02x}")}),
            expires_at_ms: 0,
        }
    }

    fn setup() -> (Arc<FakeDataplane>, Reconciler) {
        let fake = Arc::new(FakeDataplane::new());
        let ifindex = fake.add_link("eth0", 1500, vec!["172.30.1.1/24".parse().unwrap()]);
        (fake.clone(), reconciler(fake, ifindex))
    }

    fn reconciler(fake: Arc<FakeDataplane>, ifindex: u32) -> Reconciler {
        let underlay =
            UnderlayInfo { ifindex, name: "eth0".into(), mtu: 1500, network: "172.30.1.1/24".parse().unwrap() };
        let spec = VxlanSpec {
            name: "weft.1".into(),
            vni: 1,
            port: 8472,
            local: "172.30.1.1".parse().unwrap(),
            underlay_ifindex: ifindex,
            mtu: 1450,
            address: Some("10.244.1.0/32".parse().unwrap()),
            address6: None,
        };
        let fw = FirewallSpec {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            cluster_cidr6: None,
            vxlan_port: Some(8472),
            node_ips: vec![],
            masquerade: true,
        };
        let local = LocalNode { name: "n1".into(), underlay, vxlan_ifindex: None };
        Reconciler::new(fake, cfg(), local, Some(spec), fw)
    }

    fn peers(ids: &[u8]) -> Vec<Lease> {
        ids.iter().map(|&i| lease(i)).collect()
    }

    #[tokio::test]
    async fn second_pass_and_restart_apply_nothing() {
        let (fake, mut rec) = setup();
        let me = lease(1);
        let out = rec.reconcile(&me, &peers(&[2, 3, 4]), false).await.unwrap();
        assert_eq!(out.report.applied, 12, "neigh+fdb+nexthop+route per peer");
        assert!(out.firewall_applied);
        let out = rec.reconcile(&me, &peers(&[2, 3, 4]), false).await.unwrap();
        assert!(out.ops.is_empty());
        assert!(!out.firewall_applied, "unchanged firewall is not re-applied");
        let out = rec.reconcile(&me, &peers(&[2, 3, 4]), true).await.unwrap();
        assert!(!out.firewall_applied, "a full pass does not reload a table that is in place");
        fake.delete_nft_behind_back("inet", "weft");
        let out = rec.reconcile(&me, &peers(&[2, 3, 4]), true).await.unwrap();
        assert!(out.firewall_applied, "a full pass reloads a deleted table");
        // A restarted agent (new reconciler, same kernel) finds nothing to do: traffic is not disturbed.
        fake.take_applied();
        let mut restarted = reconciler(fake.clone(), fake.link("eth0").unwrap().ifindex);
        let out = restarted.reconcile(&me, &peers(&[2, 3, 4]), true).await.unwrap();
        assert!(out.ops.is_empty(), "restart applied {:?}", out.ops);
        assert_eq!(fake.vxlan_creations(), 1, "restart must not recreate the device");
        assert!(fake.take_applied().is_empty());
    }

    #[tokio::test]
    async fn removed_peer_only_deletes_its_entries() {
        let (fake, mut rec) = setup();
        let me = lease(1);
        rec.reconcile(&me, &peers(&[2, 3]), false).await.unwrap();
        fake.take_applied();
        let out = rec.reconcile(&me, &peers(&[2]), false).await.unwrap();
        assert_eq!(out.ops.len(), 4);
        assert!(out
            .ops
            .iter()
            .all(|o| matches!(o, Op::DelRoute(_) | Op::DelNexthop(_) | Op::DelNeigh(_) | Op::DelFdb(_))));
        assert!(matches!(out.ops[0], Op::DelRoute(_)), "route goes first, before what it points at");
        assert_eq!(fake.state().routes.len(), 1);
        let fw = fake.nft_table("inet", "weft").unwrap();
        assert!(!fw.contains("172.30.3.1"), "removed node's IP may no longer send VXLAN");
    }

    #[tokio::test]
    async fn drift_is_repaired_exactly() {
        let (fake, mut rec) = setup();
        let me = lease(1);
        rec.reconcile(&me, &peers(&[2, 3]), false).await.unwrap();
        let victim: ipnet::IpNet = "10.244.3.0/24".parse().unwrap();
        fake.tamper(|s| {
            s.routes.remove(&victim);
        });
        let out = rec.reconcile(&me, &peers(&[2, 3]), true).await.unwrap();
        assert_eq!(out.ops.len(), 1);
        assert!(matches!(&out.ops[0], Op::AddRoute(r) if r.dst == victim));

        // The device deleted behind our back: recreated, and every entry on it restored.
        fake.remove_link_behind_back("weft.1");
        let out = rec.reconcile(&me, &peers(&[2, 3]), true).await.unwrap();
        assert_eq!(fake.vxlan_creations(), 2);
        assert_eq!(out.report.applied, 8);
        assert_eq!(fake.state().routes.len(), 2);
    }

    #[tokio::test]
    async fn refused_ops_are_reported_and_retried() {
        let (fake, mut rec) = setup();
        let me = lease(1);
        fake.fail_ops_matching(|o| matches!(o, Op::AddFdb(_)));
        let out = rec.reconcile(&me, &peers(&[2]), false).await.unwrap();
        assert_eq!(out.report.failed.len(), 1);
        fake.clear_failures();
        let out = rec.reconcile(&me, &peers(&[2]), true).await.unwrap();
        assert_eq!(out.ops.len(), 1, "only the refused FDB entry is retried: {:?}", out.ops);
    }

    #[tokio::test]
    async fn teardown_removes_everything() {
        let (fake, mut rec) = setup();
        rec.reconcile(&lease(1), &peers(&[2, 3]), false).await.unwrap();
        rec.teardown().await.unwrap();
        assert!(fake.state().is_empty());
        assert!(fake.link("weft.1").is_none());
        assert!(fake.nft_table("inet", "weft").is_none());
    }
}
