//! The networks manager: tenant networks' kernel state (devices `wn<vni>`, rules, tables, neighbours, FDB), the
//! node file's `networks`, and each network's status on this node, on the supervisor's loop.
//!
//! Level-triggered like the overlay: every pass computes the whole desired state (`crate::networks::desired`,
//! pure), reads what the kernel has, applies only the difference; a periodic pass repairs drift. Its own inputs
//! (networks and namespaces from the store) wake the shared loop through the supervisor's `kick`.
//!
//! Lifecycle:
//! - start/restart: nothing is torn down on exit; the first pass recovers the fwmark slots from the kernel's
//!   rules, so a running network keeps its slot, and diffs to nothing;
//! - a network deleted from the store leaves the node file at once (no new pods), but its kernel state stays
//!   while any local pod holds an address in its pool (the CNI's `<dataDir>/net-<name>/`), then goes, device
//!   last. Which networks have kernel state is remembered in `<state dir>/networks.json`, so this also holds
//!   for a network deleted while the agent was down;
//! - the isolation firewall (`inet weft-net`, built by `weft_policy::isolation` from the networks programmed
//!   here) is applied after the network's routes and before the node file offers it: a pod is never created on a
//!   network the firewall does not isolate yet. Without any tenant network on the node the table is absent;
//! - growing a network (a wider CIDR, same subnetLen) changes only its unreachable route: node subnets keep
//!   their place, running pods their addresses.
use super::node_file::SharedNodeFile;
use super::{Manager, ManagerError, View};
use crate::backend::vxlan::{vtep_mac, OVERHEAD_IPV4, OVERHEAD_IPV6};
use crate::backend::LocalNode;
use crate::follow::Listed;
use crate::metrics::Metrics;
use crate::networks::desired::{self, plan, Local, PlanInput, Served};
use crate::networks::{budget, held, load_known, parse_namespaces, parse_networks, slots, store_known};
use crate::status::{NetworkStatus, SharedStatus};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use weft_dataplane::networks::{diff_networks, NetworksScope};
use weft_dataplane::{Dataplane, Op, VxlanSpec};
use weft_store::{Object, ObjectEntry, ObjectKind, Store};
use weft_types::tenant::{NetworkNodeStatus, TenantNetwork};
use weft_types::{NetworkConfig, NodeNetwork};

pub struct NetworksConfig {
    pub node: String,
    pub net: NetworkConfig,
    pub local: LocalNode,
    /// The backend's name (`vxlan` serves tenant networks; the others say why not).
    pub backend: String,
    pub mtu: u32,
    pub cni_data_dir: PathBuf,
    pub state_dir: PathBuf,
}

pub struct NetworksManager {
    dp: Arc<dyn Dataplane>,
    store: Arc<dyn Store>,
    cfg: NetworksConfig,
    networks: watch::Receiver<Listed<ObjectEntry>>,
    namespaces: watch::Receiver<Listed<Object>>,
    status: SharedStatus,
    metrics: Arc<Metrics>,
    node_file: SharedNodeFile,
    /// VNI → slot; None until recovered from the kernel (first pass).
    slots: Option<BTreeMap<u32, u8>>,
    /// Networks with kernel state (persisted).
    known: Vec<TenantNetwork>,
    /// Statuses as last written to the store.
    written: BTreeMap<String, NetworkNodeStatus>,
    /// Served networks for the isolation firewall (netfw's `weft_policy::isolation`): the wiring point.
    served: watch::Sender<Arc<Vec<Served>>>,
    last_desired: Option<u64>,
    last_warnings: Vec<String>,
    /// VNI → (ifindex, MAC) of the devices ensured on the last pass.
    devices: BTreeMap<u32, (u32, weft_dataplane::Mac)>,
    /// Networks the node file offers now (by name).
    offered: BTreeSet<String>,
    /// The isolation table as last applied; None when none is installed (or not known yet).
    iso_text: Option<String>,
    iso_checked: bool,
    /// The kernel's isolation table right after our last apply (drift inside the table, see `nft_drifted`).
    iso_fingerprint: Option<u64>,
    /// VNIs the applied isolation table isolates (a network gets its device only once it is in there).
    iso_vnis: BTreeSet<u32>,
}

impl NetworksManager {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dp: Arc<dyn Dataplane>,
        store: Arc<dyn Store>,
        cfg: NetworksConfig,
        networks: watch::Receiver<Listed<ObjectEntry>>,
        namespaces: watch::Receiver<Listed<Object>>,
        status: SharedStatus,
        metrics: Arc<Metrics>,
        node_file: SharedNodeFile,
    ) -> Self {
        let known = load_known(&cfg.state_dir);
        // What the node file offered before this start stays offered until this manager has decided.
        let offered =
            node_file.lock().unwrap_or_else(|e| e.into_inner()).networks().iter().map(|n| n.name.clone()).collect();
        let (served, _) = watch::channel(Arc::new(Vec::new()));
        Self {
            dp,
            store,
            cfg,
            networks,
            namespaces,
            status,
            metrics,
            node_file,
            slots: None,
            known,
            written: BTreeMap::new(),
            served,
            last_desired: None,
            last_warnings: Vec::new(),
            devices: BTreeMap::new(),
            offered,
            iso_text: None,
            iso_fingerprint: None,
            iso_checked: false,
            iso_vnis: BTreeSet::new(),
        }
    }

    /// The networks this node programs, with their slots, groups, devices and CIDRs, on every change: what the
    /// isolation firewall is built from.
    pub fn served(&self) -> watch::Receiver<Arc<Vec<Served>>> {
        self.served.subscribe()
    }

    fn device_spec(&self, vni: u32, name: String) -> VxlanSpec {
        let l = &self.cfg.local;
        let overhead = if l.node_ip.is_ipv4() { OVERHEAD_IPV4 } else { OVERHEAD_IPV6 };
        VxlanSpec {
            name,
            vni,
            port: self.cfg.net.backend.port,
            local: l.node_ip,
            underlay_ifindex: l.underlay.ifindex,
            mtu: l.underlay.mtu.saturating_sub(overhead),
            address: None,
            address6: None,
        }
    }
}

#[async_trait]
impl Manager for NetworksManager {
    fn name(&self) -> &'static str {
        "networks"
    }

    async fn update(&mut self, view: &View<'_>) -> Result<(), ManagerError> {
        // Until peers, networks and namespaces have all been listed, leave the kernel and node file as they are.
        let Some(peers) = view.peers else { return Ok(()) };
        let (Some(net_objs), Some(ns_objs)) = (self.networks.borrow().clone(), self.namespaces.borrow().clone()) else {
            return Ok(());
        };
        let (nets, mut warnings) = parse_networks(net_objs.values(), &self.cfg.net);
        let (namespaces, ns_errors) = parse_namespaces(ns_objs.values());
        warnings.extend(ns_errors);
        // Networks the node file has no room for are refused like invalid objects, newest first.
        let (nets, too_big) = budget::fit(nets, &namespaces);
        warnings.extend(too_big.iter().map(|(n, why)| format!("network {n}: {why}")));

        // Networks with kernel state already (devices of the last pass; on the first, the rules found): they keep
        // it whatever happens to the isolation table below.
        let mut in_kernel: BTreeSet<u32> = self.devices.keys().copied().collect();
        // Kernel first: on the first pass the slots come from the rules the kernel holds.
        let slots_now = match &self.slots {
            Some(s) => s.clone(),
            None => {
                let st = self.dp.read_networks(&NetworksScope::default()).await?;
                let rec = slots::recover(&st.rules);
                if !rec.is_empty() {
                    tracing::info!(slots = ?rec, "fwmark slots recovered from the kernel");
                }
                in_kernel.extend(rec.keys().copied());
                rec
            }
        };

        // Deleted networks drain while local pods hold addresses.
        let mut used: BTreeMap<String, u32> = BTreeMap::new();
        for n in &nets {
            used.insert(n.name.clone(), held(&self.cfg.cni_data_dir, &n.name).0);
        }
        let mut draining = Vec::new();
        for k in &self.known {
            if nets.iter().any(|n| n.name == k.name) {
                continue;
            }
            let (v4, all) = held(&self.cfg.cni_data_dir, &k.name);
            if all > 0 && !nets.iter().any(|n| n.vni == k.vni) {
                used.insert(k.name.clone(), v4);
                draining.push(k.clone());
            }
        }

        let wanted: BTreeSet<u32> = nets.iter().chain(draining.iter()).map(|n| n.vni).collect();
        let (mut slot_map, no_slot) = slots::assign(&slots_now, &wanted);
        for vni in no_slot {
            warnings.push(format!("VNI {vni}: no free fwmark slot (255 networks per node at most)"));
        }
        // A slot new to its network may have served another one before (freed, or left by a network deleted
        // while the agent was down): that network's conntrack entries in the slot's zone would be found by the
        // new network's packets (a reply taken as established, a masqueraded reply's mark restored into the new
        // network's table). Flushed before anything of the new network exists; until that succeeds the network
        // gets no slot, so nothing of it is programmed or offered.
        for (vni, slot) in slots::newly_assigned(&slots_now, &slot_map) {
            match self.dp.flush_conntrack_zone(u16::from(slot)).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(vni, slot, entries = n, "conntrack zone of a reused mark slot flushed");
                    }
                }
                Err(e) => {
                    warnings.push(format!("VNI {vni}: {e}; the network waits for its slot {slot}"));
                    slot_map.remove(&vni);
                }
            }
        }
        self.slots = Some(slot_map.clone());

        let every: Vec<TenantNetwork> = nets.iter().chain(draining.iter()).cloned().collect();
        let node_ips: Vec<std::net::IpAddr> = peers.iter().map(|l| l.node_ip).chain([view.me.node_ip]).collect();
        let (net_cfg, backend_name) = (self.cfg.net.clone(), self.cfg.backend.clone());
        let local = Local { me: view.me, cfg: &net_cfg, backend: &backend_name, mtu: self.cfg.mtu };

        // Isolation first: a network about to get its device and rules for the first time is put into the
        // isolation table before either exists, so no packet ever crosses `wn<vni>` unmarked and unisolated
        // (before, the first network of a node had its device and rules a moment before any table existed).
        let my_mac = vtep_mac(&view.me.backend_data);
        let serving = self.cfg.backend == "vxlan";
        let upcoming: Vec<TenantNetwork> = every
            .iter()
            .filter(|n| serving && my_mac.is_some() && slot_map.contains_key(&n.vni))
            .filter(|n| desired::serves(&local, n, peers.iter()).is_ok())
            .cloned()
            .collect();
        let new_here = upcoming.iter().any(|n| !self.iso_vnis.contains(&n.vni));
        if new_here
            && self.sync_isolation(&upcoming, &slot_map, &every, &node_ips, false, &mut warnings).await.is_none()
        {
            tracing::warn!("isolation table not applied; new tenant networks wait for it");
        }

        // Devices for every network this node can serve, once the isolation table holds it.
        let mut devices: BTreeMap<u32, u32> = BTreeMap::new();
        if let (true, Some(mac)) = (serving, my_mac) {
            for n in nets.iter().chain(draining.iter()) {
                let has_subnet = self.cfg.net.index_of(view.me.subnet).and_then(|i| n.subnet_for(i)).is_some();
                let isolated = self.iso_vnis.contains(&n.vni) || in_kernel.contains(&n.vni);
                if !has_subnet || !slot_map.contains_key(&n.vni) || !isolated {
                    continue;
                }
                // Between full passes a device created before is taken as it is (a pass woken by a peer change
                // must not cost a link read per network); a full pass checks and repairs every one.
                if let Some(&(ifindex, m)) = self.devices.get(&n.vni).filter(|_| !view.full) {
                    if m == mac {
                        devices.insert(n.vni, ifindex);
                        continue;
                    }
                }
                let spec = self.device_spec(n.vni, n.ids().device);
                match self.dp.ensure_tenant_vxlan(&spec, mac).await {
                    Ok(v) => {
                        devices.insert(n.vni, v.ifindex);
                    }
                    Err(e) => warnings.push(format!("network {}: device {}: {e}", n.name, spec.name)),
                }
            }
        }
        if let Some(mac) = my_mac {
            self.devices = devices.iter().map(|(v, i)| (*v, (*i, mac))).collect();
        }

        let input = PlanInput {
            nets: &nets,
            draining: &draining,
            namespaces: &namespaces,
            peers: peers.iter(),
            slots: &slot_map,
            devices: &devices,
            used: &used,
        };
        let mut p = plan(&local, input);
        warnings.append(&mut p.warnings);
        for (name, why) in too_big {
            p.statuses.insert(name, NetworkNodeStatus { reason: Some(why), ..Default::default() });
        }

        // Node file removals before the kernel's: a deleted network stops taking pods at once. Additions come
        // after the kernel and the isolation table are in place, so no pod ever runs on a network half-built.
        let kept: Vec<NodeNetwork> =
            p.node_networks.iter().filter(|n| self.offered.contains(&n.name)).cloned().collect();
        self.offer(kept, &p.claimed);

        let scope = NetworksScope { devices: devices.values().copied().collect() };
        let actual = self.dp.read_networks(&scope).await?;
        let ops = diff_networks(&p.state, &actual);
        let report = self.dp.apply(&ops).await?;
        let fp = fingerprint(&p.state);
        let drift = self.last_desired == Some(fp) && !ops.is_empty();
        self.last_desired = Some(fp);
        if drift {
            self.metrics.drift_repaired.inc_by(ops.len() as u64);
            tracing::warn!(entries = ops.len(), "tenant networks: drift repaired");
        }
        if !ops.is_empty() {
            tracing::info!(applied = report.applied, failed = report.failed.len(), "tenant networks reconciled");
        }
        self.metrics.ops_applied.inc_by(report.applied as u64);
        self.metrics.ops_failed.inc_by(report.failed.len() as u64);
        for (op, err) in &report.failed {
            tracing::warn!(?op, %err, "kernel refused a tenant-network change; next resync retries");
            if let Some(s) = p.served.iter().find(|s| touches(op, s, &devices)) {
                if let Some(st) = p.statuses.get_mut(&s.name) {
                    st.ready = false;
                    st.reason = Some(format!("kernel refused a change: {err}"));
                }
            }
        }

        // The isolation firewall for what is programmed now (normally what the first step applied already),
        // then the node file with every network it accepted.
        let served_nets: Vec<TenantNetwork> =
            every.iter().filter(|n| p.served.iter().any(|s| s.name == n.name)).cloned().collect();
        let served_slots: BTreeMap<u32, u8> = p.served.iter().map(|s| (s.vni, s.slot)).collect();
        match self.sync_isolation(&served_nets, &served_slots, &every, &node_ips, view.full, &mut warnings).await {
            Some(accepted) => {
                let offered: Vec<NodeNetwork> =
                    p.node_networks.iter().filter(|n| accepted.contains(&n.name)).cloned().collect();
                for n in p.node_networks.iter().filter(|n| !accepted.contains(&n.name)) {
                    if let Some(st) = p.statuses.get_mut(&n.name) {
                        st.ready = false;
                        st.reason = Some("refused by the isolation firewall (see the agent's log)".into());
                    }
                }
                self.offer(offered, &p.claimed);
            }
            None => {
                for n in &p.node_networks {
                    if let Some(st) = p.statuses.get_mut(&n.name) {
                        st.ready = false;
                        st.reason = Some("isolation table not applied yet; retrying".into());
                    }
                }
            }
        }

        // Devices of networks no longer programmed go last (their routes and rules are gone now).
        let served_vnis: BTreeSet<u32> = p.served.iter().map(|s| s.vni).collect();
        let stale: BTreeSet<u32> = self
            .known
            .iter()
            .map(|n| n.vni)
            .chain(slots_now.keys().copied())
            .filter(|v| !served_vnis.contains(v))
            .collect();
        for vni in stale {
            let name = weft_types::NetworkIds::of(vni).device;
            if let Err(e) = self.dp.delete_link(&name).await {
                warnings.push(format!("removing {name}: {e}"));
            } else {
                tracing::info!(device = %name, "tenant network gone from this node; device removed");
            }
        }
        let known: Vec<TenantNetwork> =
            nets.iter().chain(draining.iter()).filter(|n| served_vnis.contains(&n.vni)).cloned().collect();
        if known != self.known {
            if let Err(e) = store_known(&self.cfg.state_dir, &known) {
                tracing::error!(error = %e, "writing networks.json failed");
            }
            self.known = known;
        }

        // Refused at creation by weftctl, but an object written another way (kubectl, the store) is still served:
        // refusing it here would cut off a running network. Said instead, on every node.
        for (i, n) in nets.iter().enumerate() {
            if let Some(e) = weft_types::tenant::creation_conflict(&nets[..i], n) {
                warnings.push(format!("{e}: a connection of one may be dropped for clashing with the other's"));
            }
        }
        self.write_statuses(&p.statuses).await;
        // Logged when they change, not on every resync (they stay listed in the status meanwhile).
        if warnings != self.last_warnings {
            for w in &warnings {
                tracing::warn!("{w}");
            }
            self.last_warnings = warnings.clone();
        }
        self.record(&p.served, &p.statuses, warnings);
        self.served.send_if_modified(|cur| {
            let changed = **cur != p.served;
            if changed {
                *cur = Arc::new(p.served.clone());
            }
            changed
        });
        Ok(())
    }

    /// Uninstall: every rule, route, neighbour and FDB entry weft put there, and the devices.
    async fn teardown(&mut self) -> Result<(), ManagerError> {
        let all = self.dp.read_networks(&NetworksScope::default()).await?;
        let mut vnis: BTreeSet<u32> = self.known.iter().map(|n| n.vni).collect();
        vnis.extend(all.rules.iter().map(|r| r.table & 0x00ff_ffff));
        let ops: Vec<Op> = all
            .rules
            .iter()
            .cloned()
            .map(Op::DelRule)
            .chain(all.routes.values().copied().map(Op::DelTableRoute))
            .collect();
        self.dp.apply(&ops).await?;
        for vni in vnis {
            self.dp.delete_link(&weft_types::NetworkIds::of(vni).device).await?;
        }
        self.dp.delete_nft("inet", weft_policy::isolation::TABLE).await?;
        let _ = std::fs::remove_file(self.cfg.state_dir.join("networks.json"));
        Ok(())
    }
}

/// Whether a failed op belongs to network `s` (its table or its device).
fn touches(op: &Op, s: &Served, devices: &BTreeMap<u32, u32>) -> bool {
    let dev = devices.get(&s.vni).copied();
    match op {
        Op::AddRule(r) | Op::DelRule(r) => r.table == s.ids.table,
        Op::AddTableRoute(r) | Op::DelTableRoute(r) => r.table == s.ids.table,
        Op::AddNeigh(n) | Op::DelNeigh(n) => Some(n.ifindex) == dev,
        Op::AddFdb(f) | Op::DelFdb(f) => Some(f.ifindex) == dev,
        _ => false,
    }
}

fn fingerprint(st: &weft_dataplane::networks::NetworksState) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    st.hash(&mut h);
    h.finish()
}

impl NetworksManager {
    /// Writes the node file's networks (the previous file's are kept until the first call).
    fn offer(&mut self, nets: Vec<NodeNetwork>, claimed: &BTreeMap<String, Vec<String>>) {
        let names: BTreeSet<String> = nets.iter().map(|n| n.name.clone()).collect();
        // Every namespace an admitted network claims but the file does not offer: the plugin retries them.
        // Written in the same file write as the networks, so no namespace is ever "on the default network" in
        // between (the file is replaced atomically).
        let pending: Vec<String> = claimed
            .iter()
            .filter(|(net, _)| !names.contains(*net))
            .flat_map(|(_, nss)| nss.iter().cloned())
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        let mut file = self.node_file.lock().unwrap_or_else(|e| e.into_inner());
        let r = file.set_offer(nets, pending);
        drop(file);
        match r {
            Ok(()) => self.offered = names,
            Err(e) => tracing::error!(error = %e, "writing the node file's networks failed; retrying next pass"),
        }
    }

    /// Brings `inet weft-net` to what the served networks need; returns the networks it admitted, None when it
    /// could not be applied (then nothing new is offered to the CNI).
    async fn sync_isolation(
        &mut self,
        served_nets: &[TenantNetwork],
        slots: &BTreeMap<u32, u8>,
        admitted: &[TenantNetwork],
        node_ips: &[std::net::IpAddr],
        full: bool,
        warnings: &mut Vec<String>,
    ) -> Option<BTreeSet<String>> {
        use weft_policy::isolation::{isolation, TABLE};
        if served_nets.is_empty() {
            // No tenant network here: the default datapath as it always was, without the table.
            if self.iso_text.is_some() || !self.iso_checked {
                if let Err(e) = self.dp.delete_nft("inet", TABLE).await {
                    warnings.push(format!("removing inet {TABLE}: {e}"));
                    return None;
                }
                self.iso_text = None;
                self.iso_fingerprint = None;
                self.iso_checked = true;
            }
            self.iso_vnis.clear();
            return Some(BTreeSet::new());
        }
        // One builder of the table's input for the agent (netfw's, in crate::firewall).
        let (c4, c6) = (self.cfg.net.cluster_cidr, self.cfg.net.cluster_cidr6);
        let iso = isolation(&crate::firewall::isolation_input(served_nets, slots, admitted, node_ips, c4, c6));
        warnings.extend(iso.refused.iter().map(|e| format!("isolation: {e}")));
        let text = iso.table.render();
        let counters = if full { self.dp.nft_counters("inet", TABLE).await.unwrap_or_default() } else { vec![] };
        // Missing, or a rule or element edited inside it since our last apply (logged and counted there).
        let stale = full && super::nft_drifted(&*self.dp, "inet", TABLE, self.iso_fingerprint, &self.metrics).await;
        if self.iso_text.as_deref() != Some(text.as_str()) || stale {
            if let Err(e) = self.dp.apply_nft("inet", TABLE, &text).await {
                warnings.push(format!("applying inet {TABLE}: {e}"));
                // nft applies a table atomically: the previous one (and `iso_vnis`) still holds.
                self.iso_text = None;
                return None;
            }
            self.iso_text = Some(text);
            self.iso_checked = true;
            self.iso_fingerprint = self.dp.nft_fingerprint("inet", TABLE).await.ok().flatten();
        }
        if full {
            let per_net: Vec<(String, u64)> = counters
                .iter()
                .map(|(name, packets, _)| (iso.table.counter_network(name).unwrap_or("(none)").to_string(), *packets))
                .collect();
            self.metrics.set_isolation_drops(&per_net);
        }
        let accepted: BTreeSet<String> = iso.table.counters.iter().filter_map(|c| c.network.clone()).collect();
        self.iso_vnis = served_nets.iter().filter(|n| accepted.contains(&n.name)).map(|n| n.vni).collect();
        Some(accepted)
    }

    /// Writes each network's status on this node to the store when it changed; removes ours for networks gone.
    async fn write_statuses(&mut self, statuses: &BTreeMap<String, NetworkNodeStatus>) {
        let node = self.cfg.node.clone();
        for (name, st) in statuses {
            if self.written.get(name) == Some(st) {
                continue;
            }
            let value = serde_json::to_value(st).expect("status serializes");
            match self.store.put_object(ObjectKind::NetworkStatus, &format!("{name}/{node}"), &value).await {
                Ok(_) => {
                    self.written.insert(name.clone(), st.clone());
                }
                Err(e) => tracing::warn!(network = %name, error = %e, "writing network status failed; retrying"),
            }
        }
        let gone: Vec<String> = self.written.keys().filter(|k| !statuses.contains_key(*k)).cloned().collect();
        for name in gone {
            match self.store.delete_object(ObjectKind::NetworkStatus, &format!("{name}/{node}")).await {
                Ok(()) => {
                    self.written.remove(&name);
                }
                Err(e) => tracing::warn!(network = %name, error = %e, "removing network status failed; retrying"),
            }
        }
    }

    fn record(&self, served: &[Served], statuses: &BTreeMap<String, NetworkNodeStatus>, warnings: Vec<String>) {
        let mut list: Vec<NetworkStatus> = Vec::new();
        for (name, st) in statuses {
            let s = served.iter().find(|s| &s.name == name);
            list.push(NetworkStatus {
                name: name.clone(),
                vni: s.map(|s| s.vni),
                slot: s.map(|s| s.slot),
                ready: st.ready,
                subnet: st.subnet.map(|x| x.to_string()),
                subnet6: st.subnet6.map(|x| x.to_string()),
                used: st.used,
                capacity: st.capacity,
                peers: s.map_or(0, |s| s.peers),
                draining: false,
                reason: st.reason.clone(),
            });
        }
        for s in served.iter().filter(|s| s.draining) {
            list.push(NetworkStatus {
                name: s.name.clone(),
                vni: Some(s.vni),
                slot: Some(s.slot),
                ready: true,
                subnet: Some(s.subnet.to_string()),
                subnet6: s.subnet6.map(|x| x.to_string()),
                used: s.used,
                capacity: crate::networks::desired::capacity(s.subnet),
                peers: s.peers,
                draining: true,
                reason: Some("deleted from the store; draining until no local pod holds an address".into()),
            });
        }
        self.metrics.set_networks(&list);
        let mut st = self.status.write().expect("status lock");
        st.networks = list;
        st.network_errors = warnings;
    }
}

#[cfg(test)]
mod tests {
    //! The manager on a fake kernel and a real embedded store: slots survive a restart whatever the store's
    //! order, a deleted network drains while its pool holds an address, then goes with its device.
    use super::*;
    use crate::manager::node_file::NodeFileManager;
    use crate::manager::{Peers, View};
    use weft_dataplane::fake::FakeDataplane;
    use weft_dataplane::UnderlayInfo;
    use weft_types::{Lease, NodeFile};

    use crate::networks::tests::lease;

    /// Network objects created in the order given.
    fn objects(nets: &[(&str, u32)]) -> Listed<ObjectEntry> {
        let m = nets
            .iter()
            .enumerate()
            .map(|(i, (n, vni))| {
                let value =
                    serde_json::json!({"name": n, "cidr": "10.50.0.0/16", "vni": vni, "namespaces": {"names": [n]}});
                let created = weft_store::Created(i as i64, n.to_string());
                (n.to_string(), ObjectEntry { key: n.to_string(), created, value })
            })
            .collect();
        Some(Arc::new(m))
    }

    struct Rig {
        dir: tempfile::TempDir,
        fake: Arc<FakeDataplane>,
        store: Arc<dyn Store>,
        underlay: u32,
    }

    impl Rig {
        async fn new() -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let store = weft_store::open(&format!("embedded://{}", dir.path().join("s.db").display())).await.unwrap();
            let fake = Arc::new(FakeDataplane::new());
            let underlay = fake.add_link("eth0", 1500, vec!["192.168.0.1/24".parse().unwrap()]);
            Rig { dir, fake, store, underlay }
        }

        fn manager(&self, nets: Listed<ObjectEntry>) -> (NetworksManager, watch::Sender<Listed<ObjectEntry>>) {
            let cfg: NetworkConfig = serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16"}"#).unwrap();
            let nf_path = self.dir.path().join("node.json");
            let previous = NodeFile::load(&nf_path).ok();
            let nf = NodeFileManager::new(&nf_path, &cfg, 1450, previous.as_ref());
            let local = LocalNode {
                name: "n1".into(),
                node_ip: "192.168.0.1".parse().unwrap(),
                underlay: UnderlayInfo {
                    ifindex: self.underlay,
                    name: "eth0".into(),
                    mtu: 1500,
                    network: "192.168.0.1/24".parse().unwrap(),
                },
            };
            let (ntx, nrx) = watch::channel(nets);
            let (_stx, srx) = watch::channel::<Listed<Object>>(Some(Arc::new(BTreeMap::new())));
            let m = NetworksManager::new(
                self.fake.clone(),
                self.store.clone(),
                NetworksConfig {
                    node: "n1".into(),
                    net: cfg,
                    local,
                    backend: "vxlan".into(),
                    mtu: 1450,
                    cni_data_dir: self.dir.path().join("ipam"),
                    state_dir: self.dir.path().join("state"),
                },
                nrx,
                srx,
                Arc::new(std::sync::RwLock::new(Default::default())),
                Arc::new(Metrics::default()),
                nf.shared(),
            );
            // The node file's lease part, as the agent writes it at start.
            let mut nf = nf;
            nf.write(&lease("n1", 1)).unwrap();
            (m, ntx)
        }

        fn slots(&self) -> BTreeMap<u32, u8> {
            slots::recover(&self.fake.networks_state().rules)
        }

        fn offered(&self) -> Vec<String> {
            NodeFile::load(&self.dir.path().join("node.json")).unwrap().networks.into_iter().map(|n| n.name).collect()
        }
    }

    async fn pass(m: &mut NetworksManager) {
        let all: BTreeMap<String, Lease> =
            [lease("n1", 1), lease("n2", 2), lease("n3", 3)].into_iter().map(|l| (l.node.clone(), l)).collect();
        let me = lease("n1", 1);
        let view = View { me: &me, peers: Some(Peers { all: &all, me: "n1" }), periodic: true, full: true };
        m.update(&view).await.unwrap();
    }

    #[tokio::test]
    async fn two_overlapping_networks_without_masquerade_are_served_and_said() {
        let rig = Rig::new().await;
        let mut nets = objects(&[("blue", 100), ("red", 200), ("teal", 300)]);
        let m = Arc::make_mut(nets.as_mut().unwrap());
        for name in ["blue", "red"] {
            m.get_mut(name).unwrap().value["masquerade"] = false.into();
        }
        let (mut mgr, _tx) = rig.manager(nets);
        pass(&mut mgr).await;
        assert_eq!(rig.offered(), ["blue", "red", "teal"], "running networks are not cut off");
        let errors = mgr.status.read().unwrap().network_errors.clone();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("network red: masquerade is off") && errors[0].contains("of blue"), "{errors:?}");
    }

    #[tokio::test]
    async fn slots_survive_a_restart_and_a_deleted_network_drains() {
        let rig = Rig::new().await;
        let (mut m, _tx) = rig.manager(objects(&[("blue", 100), ("red", 200)]));
        pass(&mut m).await;
        assert_eq!(rig.slots(), [(100, 1), (200, 2)].into());
        assert_eq!(rig.fake.flushed_zones(), [1, 2], "new slots start with an empty conntrack zone");
        // The isolation table held both networks before their devices existed (the node's first networks).
        for dev in ["wn100", "wn200"] {
            let t = rig.fake.nft_when_created(dev, "inet", "weft-net").unwrap_or_default();
            assert!(t.contains(&format!("\"{dev}\"")), "{dev} created before its isolation:\n{t}");
        }
        assert_eq!(rig.offered(), ["blue", "red"]);
        assert!(rig.fake.nft_table("inet", "weft-net").is_some(), "isolation table applied");
        let statuses = rig.store.objects(ObjectKind::NetworkStatus).await.unwrap().items;
        assert_eq!(statuses.len(), 2);
        assert_eq!(statuses[0].1["ready"], true, "{statuses:?}");

        // Restart with a new network that sorts first: the running ones keep their slots, nothing is removed.
        drop(m);
        let (mut m, tx) = rig.manager(objects(&[("aaa", 300), ("blue", 100), ("red", 200)]));
        rig.fake.take_applied();
        pass(&mut m).await;
        assert_eq!(rig.slots(), [(100, 1), (200, 2), (300, 3)].into());
        assert_eq!(rig.fake.flushed_zones(), [1, 2, 3], "a restart flushes only the new network's zone");
        assert!(
            !rig.fake.applied().iter().any(|o| matches!(o, Op::DelRule(_) | Op::DelTableRoute(_))),
            "a restart removed state: {:?}",
            rig.fake.applied()
        );
        let quiet = rig.fake.take_applied().len();
        pass(&mut m).await;
        assert!(rig.fake.take_applied().is_empty(), "a second pass applies nothing (after {quiet} ops)");

        // red deleted while a local pod holds an address: off the node file, still programmed.
        let pool = crate::networks::pool_dir(&rig.dir.path().join("ipam"), "red");
        std::fs::create_dir_all(&pool).unwrap();
        std::fs::write(pool.join("10.50.1.2"), b"{}").unwrap();
        tx.send_replace(objects(&[("aaa", 300), ("blue", 100)]));
        pass(&mut m).await;
        assert_eq!(rig.offered(), ["aaa", "blue"]);
        assert!(rig.slots().contains_key(&200), "red drained too early");
        assert!(rig.fake.link("wn200").is_some());
        assert!(!rig.store.objects(ObjectKind::NetworkStatus).await.unwrap().items.iter().any(|(k, _)| k == "red/n1"));
        // The pod's address is released: red goes, device last.
        std::fs::remove_file(pool.join("10.50.1.2")).unwrap();
        pass(&mut m).await;
        assert!(!rig.slots().contains_key(&200));
        assert!(rig.fake.link("wn200").is_none());
        assert!(!rig.fake.networks_state().routes.keys().any(|(t, _)| *t == 0x5700_00c8));
        assert!(rig.fake.link("wn100").is_some());

        // red's slot 2 is free: a new network gets it, and its zone is flushed first (red's connections gone).
        tx.send_replace(objects(&[("aaa", 300), ("blue", 100), ("teal", 400)]));
        pass(&mut m).await;
        assert_eq!(rig.slots(), [(100, 1), (300, 3), (400, 2)].into());
        assert_eq!(rig.fake.flushed_zones(), [1, 2, 3, 2]);
        let t = rig.fake.nft_when_created("wn400", "inet", "weft-net").unwrap_or_default();
        assert!(t.contains("\"wn400\"") && t.contains("\"wn100\""), "wn400 created before its isolation:\n{t}");
        pass(&mut m).await;
        assert_eq!(rig.fake.flushed_zones(), [1, 2, 3, 2], "only once");

        // A rule deleted by hand inside the isolation table (the table still there) is back after a full pass.
        let intact = rig.fake.nft_table("inet", "weft-net").unwrap();
        let victim = intact.lines().find(|l| l.contains("drop")).expect("a drop rule").to_string();
        rig.fake.edit_nft_behind_back("inet", "weft-net", |t| *t = t.replacen(&victim, "", 1));
        pass(&mut m).await;
        assert_eq!(rig.fake.nft_table("inet", "weft-net").unwrap(), intact, "an edited isolation table stays edited");
        assert!(m.metrics.encode().contains("weft_nft_tables_repaired_total{table=\"inet weft-net\"} 1"));
    }
}
