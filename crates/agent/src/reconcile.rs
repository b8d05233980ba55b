//! The overlay reconciler: desired state (from leases, through the backend) vs actual state (from the kernel) →
//! apply only the difference.
//!
//! It is level-triggered: it is never told *what* changed, only that something may have, so a missed event,
//! a restart or an entry deleted by hand all converge the same way. A pass with an empty diff touches nothing,
//! which is why an agent restart does not disturb a single packet.
use crate::backend::{Backend, BackendError, LocalNode};
use crate::desired::desired_state;
use std::sync::Arc;
use weft_dataplane::diff::diff;
use weft_dataplane::{ApplyReport, Dataplane, Op, OverlayState};
use weft_types::{BackendData, Lease, NetworkConfig};

pub struct Reconciler {
    dp: Arc<dyn Dataplane>,
    cfg: NetworkConfig,
    pub local: LocalNode,
    backend: Box<dyn Backend>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub ops: Vec<Op>,
    pub report: ApplyReport,
    pub skipped: Vec<String>,
    pub desired: OverlayState,
    /// What the backend publishes after this pass (its device may have been recreated with a new identity).
    pub data: BackendData,
    /// The backend device's ifindex this pass.
    pub device: Option<u32>,
}

impl Reconciler {
    pub fn new(dp: Arc<dyn Dataplane>, cfg: NetworkConfig, local: LocalNode, backend: Box<dyn Backend>) -> Self {
        Self { dp, cfg, local, backend }
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The node's subnets changed (lease lost and another acquired): the device carries the new gateways.
    pub fn set_subnets(&mut self, subnet: ipnet::Ipv4Net, subnet6: Option<ipnet::Ipv6Net>) {
        self.backend.set_subnets(subnet, subnet6);
    }

    /// One pass over `peers` (other nodes' leases): device, then entries, then the backend's own peer list.
    pub async fn reconcile<'a>(
        &mut self,
        peers: impl IntoIterator<Item = &'a Lease, IntoIter: Send> + Send,
    ) -> Result<Outcome, BackendError> {
        let peers = peers.into_iter();
        let data = self.backend.ensure_device(self.dp.as_ref()).await?;
        let d = desired_state(&self.cfg, self.backend.as_ref(), &self.local, peers);
        let actual = self.dp.read_state(&self.backend.scope()).await?;
        let ops = diff(&d.state, &actual);
        let report = if ops.is_empty() { ApplyReport::default() } else { self.dp.apply(&ops).await? };
        self.backend.sync_peers(&d.programmed).await?;
        let device = self.backend.device_ifindex();
        Ok(Outcome { ops, report, skipped: d.skipped, desired: d.state, data, device })
    }

    /// Removes every entry this agent programmed and the backend's device (uninstall).
    pub async fn teardown(&mut self) -> Result<(), BackendError> {
        let actual = self.dp.read_state(&self.backend.scope()).await?;
        let ops = diff(&OverlayState::default(), &actual);
        if !ops.is_empty() {
            self.dp.apply(&ops).await?;
        }
        self.backend.stop().await;
        self.backend.teardown(self.dp.as_ref()).await
    }

    /// Ends what the backend runs itself (agent exit without uninstall).
    pub async fn stop(&mut self) {
        self.backend.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{build, Setup};
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
            backend_data: BackendData::Vxlan { vtep_mac: format!("02:00:00:00:00:{i:02x}") },
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
        let local = LocalNode { name: "n1".into(), node_ip: "172.30.1.1".parse().unwrap(), underlay };
        let c = cfg();
        let setup = Setup {
            config: &c.backend,
            local: &local,
            device: "weft.1",
            state_dir: std::path::Path::new("/x"),
            uapi_dir: None,
            key_rotation: None,
        };
        let mut backend = build(&setup).unwrap();
        backend.set_subnets("10.244.1.0/24".parse().unwrap(), None);
        Reconciler::new(fake, c, local, backend)
    }

    fn peers(ids: &[u8]) -> Vec<Lease> {
        ids.iter().map(|&i| lease(i)).collect()
    }

    #[tokio::test]
    async fn second_pass_and_restart_apply_nothing() {
        let (fake, mut rec) = setup();
        let out = rec.reconcile(&peers(&[2, 3, 4])).await.unwrap();
        assert_eq!(out.report.applied, 12, "neigh+fdb+nexthop+route per peer");
        let mac = weft_dataplane::format_mac(&fake.link("weft.1").unwrap().mac);
        assert_eq!(out.data, BackendData::Vxlan { vtep_mac: mac });
        let out = rec.reconcile(&peers(&[2, 3, 4])).await.unwrap();
        assert!(out.ops.is_empty());
        // A restarted agent (new reconciler, same kernel) finds nothing to do: traffic is not disturbed.
        fake.take_applied();
        let mut restarted = reconciler(fake.clone(), fake.link("eth0").unwrap().ifindex);
        let out = restarted.reconcile(&peers(&[2, 3, 4])).await.unwrap();
        assert!(out.ops.is_empty(), "restart applied {:?}", out.ops);
        assert_eq!(fake.vxlan_creations(), 1, "restart must not recreate the device");
        assert!(fake.take_applied().is_empty());
    }

    #[tokio::test]
    async fn removed_peer_only_deletes_its_entries() {
        let (fake, mut rec) = setup();
        rec.reconcile(&peers(&[2, 3])).await.unwrap();
        fake.take_applied();
        let out = rec.reconcile(&peers(&[2])).await.unwrap();
        assert_eq!(out.ops.len(), 4);
        assert!(out
            .ops
            .iter()
            .all(|o| matches!(o, Op::DelRoute(_) | Op::DelNexthop(_) | Op::DelNeigh(_) | Op::DelFdb(_))));
        assert!(matches!(out.ops[0], Op::DelRoute(_)), "route goes first, before what it points at");
        assert_eq!(fake.state().routes.len(), 1);
    }

    #[tokio::test]
    async fn drift_is_repaired_exactly() {
        let (fake, mut rec) = setup();
        let first = rec.reconcile(&peers(&[2, 3])).await.unwrap();
        let victim: ipnet::IpNet = "10.244.3.0/24".parse().unwrap();
        fake.tamper(|s| {
            s.routes.remove(&victim);
        });
        let out = rec.reconcile(&peers(&[2, 3])).await.unwrap();
        assert_eq!(out.ops.len(), 1);
        assert!(matches!(&out.ops[0], Op::AddRoute(r) if r.dst == victim));

        // The device deleted behind our back: recreated, and every entry on it restored.
        fake.remove_link_behind_back("weft.1");
        let out = rec.reconcile(&peers(&[2, 3])).await.unwrap();
        assert_eq!(fake.vxlan_creations(), 2);
        assert_eq!(out.report.applied, 8);
        assert_eq!(fake.state().routes.len(), 2);
        assert_ne!(out.device, first.device, "a recreated device has a new ifindex");
    }

    #[tokio::test]
    async fn refused_ops_are_reported_and_retried() {
        let (fake, mut rec) = setup();
        fake.fail_ops_matching(|o| matches!(o, Op::AddFdb(_)));
        let out = rec.reconcile(&peers(&[2])).await.unwrap();
        assert_eq!(out.report.failed.len(), 1);
        fake.clear_failures();
        let out = rec.reconcile(&peers(&[2])).await.unwrap();
        assert_eq!(out.ops.len(), 1, "only the refused FDB entry is retried: {:?}", out.ops);
    }

    #[tokio::test]
    async fn skipped_peers_are_reported() {
        let (_fake, mut rec) = setup();
        let mut bad = lease(5);
        bad.backend_data = BackendData::Vxlan { vtep_mac: "ff:ff:ff:ff:ff:ff".into() };
        let mut list = peers(&[2]);
        list.push(bad);
        let out = rec.reconcile(&list).await.unwrap();
        assert_eq!(out.skipped, vec!["n5: VTEP MAC ff:ff:ff:ff:ff:ff is not a unicast address".to_string()]);
        assert_eq!(out.desired.routes.len(), 1);
    }

    #[tokio::test]
    async fn teardown_removes_everything() {
        let (fake, mut rec) = setup();
        rec.reconcile(&peers(&[2, 3])).await.unwrap();
        rec.teardown().await.unwrap();
        assert!(fake.state().is_empty());
        assert!(fake.link("weft.1").is_none());
    }
}
