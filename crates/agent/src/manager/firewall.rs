//! The firewall manager: keeps the agent's `inet weft` table (rendered by `crate::firewall`) in the kernel.
//!
//! The table changes with the set of node IPs (only they may send to the backend's UDP port), so it is replaced
//! only when its text changes. A full pass compares the kernel's table with the fingerprint taken right after
//! our last change (`Dataplane::nft_fingerprint`): a table deleted, or a rule or element in it deleted or added
//! by hand, is loaded again, without replacing an intact table every resync. It also exports the counters.
use super::{Manager, ManagerError, View};
use crate::firewall::{self, FirewallSpec};
use crate::metrics::Metrics;
use async_trait::async_trait;
use std::sync::Arc;
use weft_dataplane::Dataplane;

pub struct FirewallManager {
    dp: Arc<dyn Dataplane>,
    spec: FirewallSpec,
    metrics: Arc<Metrics>,
    applied: Option<String>,
    /// The kernel's table right after our last apply (None: not known, e.g. after a restart).
    fingerprint: Option<u64>,
}

impl FirewallManager {
    /// `spec.node_ips` is filled on every pass; `spec.vxlan_port` is the backend's UDP port.
    pub fn new(dp: Arc<dyn Dataplane>, spec: FirewallSpec, metrics: Arc<Metrics>) -> Self {
        Self { dp, spec, metrics, applied: None, fingerprint: None }
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
        };
        FirewallManager::new(fake, spec, Arc::new(Metrics::default()))
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
}
