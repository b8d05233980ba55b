//! The firewall manager: keeps the agent's `inet weft` table (rendered by `crate::firewall`) in the kernel.
//!
//! The table changes with the set of node IPs (only they may send to the backend's UDP port), so it is replaced
//! only when its text changes. A full pass compares the kernel's table with the fingerprint taken right after
//! our last change (`Dataplane::nft_fingerprint`): a table deleted, or a rule or element in it deleted or added
//! by hand, is loaded again, without replacing an intact table every resync. It also exports the counters.
//!
//! With the VXLAN backend the table also ties each node's tunnel packets to its own pod sources
//! (`firewall::vxlan_source`): rendered from the same leases on every pass, plus the tenant networks the networks
//! manager (which runs just before, in the same pass) publishes as served.
use super::{Manager, ManagerError, View};
use crate::firewall::{self, vxlan_source, FirewallSpec};
use crate::metrics::Metrics;
use crate::networks::desired::Served;
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::watch;
use weft_dataplane::Dataplane;
use weft_types::tenant::TenantNetwork;
use weft_types::{Lease, NetworkConfig};

/// What the inner-source check of the VXLAN port is computed from, besides the leases.
pub struct VxlanSources {
    /// The default network: its VNI and how a lease's index follows from its subnet.
    pub net: NetworkConfig,
    /// The tenant networks this node carries (`NetworksManager::served`).
    pub served: watch::Receiver<Arc<Vec<Served>>>,
}

pub struct FirewallManager {
    dp: Arc<dyn Dataplane>,
    spec: FirewallSpec,
    metrics: Arc<Metrics>,
    vxlan: Option<VxlanSources>,
    applied: Option<String>,
    /// What the last pass left out of the inner-source sets (logged when it changes).
    skipped: Vec<String>,
    /// The kernel's table right after our last apply (None: not known, e.g. after a restart).
    fingerprint: Option<u64>,
}

impl FirewallManager {
    /// `spec.node_ips` (and with `vxlan`, `spec.vxlan_sources`) is filled on every pass; `spec.vxlan_port` is the
    /// backend's UDP port. `vxlan` is Some with the VXLAN backend only.
    pub fn new(dp: Arc<dyn Dataplane>, spec: FirewallSpec, metrics: Arc<Metrics>, vxlan: Option<VxlanSources>) -> Self {
        Self { dp, spec, metrics, vxlan, applied: None, skipped: Vec::new(), fingerprint: None }
    }

    /// The inner sources the VXLAN port admits from `leases` (peers and our own).
    fn inner_sources<'a>(&mut self, leases: impl IntoIterator<Item = &'a Lease>) {
        let Some(vx) = &self.vxlan else {
            self.spec.vxlan_sources = None;
            return;
        };
        let tenants: Vec<TenantNetwork> = vx.served.borrow().iter().map(tenant_of).collect();
        let a = vxlan_source::allowed(&vx.net, leases, &tenants);
        if a.skipped != self.skipped {
            for why in &a.skipped {
                tracing::warn!(reason = %why, "VXLAN inner-source check: left out");
            }
            self.skipped = a.skipped;
        }
        self.spec.vxlan_sources = Some(a.sources);
    }
}

/// A served network as the subnet derivation needs it: the per-node subnet lengths are those of our own subnets
/// there (every node's subnets in a network have one length). Without our IPv6 subnet, no IPv6 sources are
/// admitted on it (fail closed).
fn tenant_of(s: &Served) -> TenantNetwork {
    TenantNetwork {
        name: s.name.clone(),
        cidr: s.cidr,
        subnet_len: s.subnet.prefix_len(),
        cidr6: s.cidr6.filter(|_| s.subnet6.is_some()),
        subnet_len6: s.subnet6.map_or(128, |n| n.prefix_len()),
        vni: s.vni,
        namespaces: Default::default(),
        masquerade: s.masquerade,
    }
}

#[async_trait]
impl Manager for FirewallManager {
    fn name(&self) -> &'static str {
        "firewall"
    }

    async fn update(&mut self, view: &View<'_>) -> Result<(), ManagerError> {
        let Some(peers) = view.peers else {
            // Peers not listed yet (store slow or away). A table left by the previous agent stays as it is (its
            // node IPs keep the tunnel open: a restart loses no packet). Without one (a fresh boot), pods the
            // kubelet re-creates must not run without the anti-spoofing and agent-port rules until the store
            // answers: install the table with only our own IP admitted to the tunnel port, fail closed.
            if self.applied.is_none() {
                let present =
                    self.dp.nft_counters(firewall::FAMILY, firewall::TABLE).await.is_ok_and(|c| !c.is_empty());
                if !present {
                    self.spec.node_ips = vec![view.me.node_ip];
                    self.inner_sources([view.me]);
                    let text = firewall::render(&self.spec);
                    self.apply(text).await?;
                }
            }
            return Ok(());
        };
        let mut ips: Vec<_> = peers.iter().map(|p| p.node_ip).chain(std::iter::once(view.me.node_ip)).collect();
        ips.sort();
        ips.dedup();
        self.spec.node_ips = ips;
        self.inner_sources(peers.iter().chain(std::iter::once(view.me)));
        let text = firewall::render(&self.spec);
        let mut stale = false;
        if view.full {
            let counters = self.dp.nft_counters(firewall::FAMILY, firewall::TABLE).await.unwrap_or_default();
            self.metrics.set_firewall_counters(&counters);
            stale =
                super::nft_drifted(&*self.dp, firewall::FAMILY, firewall::TABLE, self.fingerprint, &self.metrics).await;
        }
        if stale || self.applied.as_deref() != Some(text.as_str()) {
            self.apply(text).await?;
        }
        Ok(())
    }

    async fn teardown(&mut self) -> Result<(), ManagerError> {
        Ok(self.dp.delete_nft(firewall::FAMILY, firewall::TABLE).await?)
    }
}

impl FirewallManager {
    async fn apply(&mut self, text: String) -> Result<(), ManagerError> {
        self.dp.apply_nft(firewall::FAMILY, firewall::TABLE, &text).await?;
        self.applied = Some(text);
        self.fingerprint = self.dp.nft_fingerprint(firewall::FAMILY, firewall::TABLE).await.ok().flatten();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_dataplane::fake::FakeDataplane;
    use weft_types::{BackendData, Lease};

    fn lease(i: u8) -> Lease {
        Lease {
            node: format!("n{i}"),
            subnet: format!("10.244.{i}.0/24").parse().unwrap(),
            subnet6: None,
            node_ip: format!("172.30.{i}.1").parse().unwrap(),
            backend_data: BackendData::HostGw,
            expires_at_ms: 0,
        }
    }

    fn manager(fake: Arc<FakeDataplane>) -> FirewallManager {
        let spec = FirewallSpec {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            cluster_cidr6: None,
            vxlan_port: Some(8472),
            node_ips: vec![],
            masquerade: true,
            agent_port: None,
            vxlan_sources: None,
        };
        FirewallManager::new(fake, spec, Arc::new(Metrics::default()), None)
    }

    async fn pass(m: &mut FirewallManager, peers: Option<&[Lease]>, full: bool) {
        let all: Option<std::collections::BTreeMap<String, Lease>> =
            peers.map(|p| p.iter().map(|l| (l.node.clone(), l.clone())).collect());
        let peers = all.as_ref().map(|all| crate::manager::Peers { all, me: "n1" });
        m.update(&View { me: &lease(1), peers, periodic: full, full }).await.unwrap();
    }

    #[tokio::test]
    async fn applied_on_change_checked_on_resync() {
        let fake = Arc::new(FakeDataplane::new());
        let mut m = manager(fake.clone());
        pass(&mut m, None, true).await;
        let first = fake.nft_table("inet", "weft").expect("a fresh node gets its table before the peers are listed");
        assert!(first.contains("spoofed") && !first.contains("172.30.2.1"), "only our own IP admitted: {first}");
        // A table already in the kernel (left by the previous agent) is not touched before the peers are listed.
        let mut restarted = manager(fake.clone());
        fake.apply_nft("inet", "weft", "table inet weft {\n  counter kept { }\n}\n").await.unwrap();
        pass(&mut restarted, None, true).await;
        assert!(fake.nft_table("inet", "weft").unwrap().contains("kept"), "a restart replaced the table early");
        fake.delete_nft_behind_back("inet", "weft");
        let peers = [lease(2), lease(3)];
        pass(&mut m, Some(&peers), false).await;
        let t = fake.nft_table("inet", "weft").unwrap();
        assert!(t.contains("172.30.1.1, 172.30.2.1, 172.30.3.1"), "{t}");
        let applied = |f: &FakeDataplane| f.nft_table("inet", "weft");
        // Unchanged: not applied again (a full pass only checks the table is there).
        fake.delete_nft_behind_back("inet", "weft");
        pass(&mut m, Some(&peers), false).await;
        assert!(applied(&fake).is_none(), "an unchanged table is not re-applied on an event");
        pass(&mut m, Some(&peers), true).await;
        assert!(applied(&fake).is_some(), "a full pass reloads a deleted table");
        // A rule deleted inside the table (the table itself still there) is repaired on the next full pass, and
        // only then: an event pass does not list the kernel.
        fake.edit_nft_behind_back("inet", "weft", |t| *t = t.replace("counter name spoofed drop", ""));
        pass(&mut m, Some(&peers), false).await;
        assert!(!applied(&fake).unwrap().contains("counter name spoofed drop"));
        pass(&mut m, Some(&peers), true).await;
        assert!(applied(&fake).unwrap().contains("counter name spoofed drop"), "a rule deleted by hand stays deleted");
        let repaired = |m: &FirewallManager| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &m.metrics.registry).unwrap();
            text.lines().any(|l| l.starts_with("weft_nft_tables_repaired_total{table=\"inet weft\"} 2"))
        };
        assert!(repaired(&m), "the deleted table and the edited rule are both counted");
        // An intact table is left alone by a full pass.
        let before = applied(&fake);
        fake.edit_nft_behind_back("inet", "weft", |_| {});
        pass(&mut m, Some(&peers), true).await;
        assert_eq!(applied(&fake), before);
        assert!(repaired(&m), "an intact table was counted as repaired");
        // A removed node's IP may no longer send to the VXLAN port.
        pass(&mut m, Some(&peers[..1]), false).await;
        assert!(!applied(&fake).unwrap().contains("172.30.3.1"));
        m.teardown().await.unwrap();
        assert!(applied(&fake).is_none());
    }

    #[tokio::test]
    async fn vxlan_inner_sources_follow_peers_and_served_networks() {
        let fake = Arc::new(FakeDataplane::new());
        let net: NetworkConfig = serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16"}"#).unwrap();
        let blue = Served {
            name: "blue".into(),
            vni: 100,
            slot: 1,
            ids: weft_types::tenant::NetworkIds::of(100),
            cidr: "10.50.0.0/16".parse().unwrap(),
            cidr6: None,
            subnet: "10.50.1.0/24".parse().unwrap(),
            subnet6: None,
            masquerade: true,
            draining: false,
            peers: 1,
            used: 0,
        };
        let (tx, served) = watch::channel(Arc::new(Vec::new()));
        let mut m = manager(fake.clone());
        m.vxlan = Some(VxlanSources { net, served });
        pass(&mut m, None, true).await;
        let t = fake.nft_table("inet", "weft").unwrap();
        assert!(t.contains("jump vxlan_inner") && t.contains("172.30.1.1 . 1 . 0x0af40100-0x0af401ff"), "{t}");
        assert!(!t.contains("172.30.2.1 . "), "no peer admitted before the peers are listed: {t}");
        let peers = [lease(2), lease(3)];
        pass(&mut m, Some(&peers), false).await;
        let t = fake.nft_table("inet", "weft").unwrap();
        assert!(t.contains("172.30.2.1 . 1 . 0x0af40200-0x0af402ff") && !t.contains(" . 100 . "), "{t}");
        // The networks manager starts serving blue: the next pass admits every node's blue subnet.
        tx.send(Arc::new(vec![blue])).unwrap();
        pass(&mut m, Some(&peers), false).await;
        let t = fake.nft_table("inet", "weft").unwrap();
        assert!(t.contains("172.30.3.1 . 100 . 0x0a320300-0x0a3203ff"), "{t}");
        // A peer leaves: its sources go with it.
        pass(&mut m, Some(&peers[..1]), false).await;
        assert!(!fake.nft_table("inet", "weft").unwrap().contains("172.30.3.1"));
        // Without the VXLAN backend there is no inner check.
        let mut plain = manager(Arc::new(FakeDataplane::new()));
        pass(&mut plain, Some(&peers), false).await;
        assert!(plain.spec.vxlan_sources.is_none() && !firewall::render(&plain.spec).contains("vxlan_inner"));
    }
}
