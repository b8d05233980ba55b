//! `FakeDataplane`: an in-memory [`Dataplane`] that behaves like the kernel where the agent could tell the
//! difference, and records what it was asked to do.
//!
//! Why these semantics (and not a plain map): the agent's tests must fail where the kernel would fail. So entries
//! must sit on an existing link; a route through a nexthop id needs that nexthop; deleting a nexthop takes its
//! routes with it; deleting or recreating a link takes every entry on it. `Add*` ops replace (see `diff`), deleting
//! something already gone is a success (deletions are best-effort, the goal is absence).
//!
//! What it records: every applied op in order, the number of `apply`/`read_state` calls, so a test can assert
//! "after the first sync, a resync applied nothing" or "only the changed peer was applied". Tamper methods
//! (`tamper`, `remove_link_behind_back`) play the admin who deletes things behind weft's back; `fail_ops_matching`
//! plays a kernel that refuses some ops.
use crate::networks::{NetworksScope, NetworksState, TableRouteKind};
use crate::{
    ApplyReport, Dataplane, DataplaneError, Mac, Op, OverlayState, RouteTarget, Scope, UnderlayInfo, VtepInfo,
    VxlanSpec,
};
use async_trait::async_trait;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// A link as the fake kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub ifindex: u32,
    pub mac: Mac,
    pub mtu: u32,
    pub addresses: Vec<IpNet>,
    /// Set for links made by `ensure_vxlan`.
    pub vxlan: Option<VxlanSpec>,
    pub up: bool,
}

type OpFilter = Box<dyn Fn(&Op) -> bool + Send + Sync>;

#[derive(Default)]
struct Inner {
    links: BTreeMap<String, FakeLink>,
    next_ifindex: u32,
    /// Distinguishes the MACs of different fakes, as real kernels do: several fake nodes in one test must not
    /// publish the same VTEP MAC (admission refuses a copied one).
    mac_seed: u16,
    state: OverlayState,
    /// Tenant rules and table routes (their neighbours and FDB entries live in `state`, as on a real kernel).
    tenant: NetworksState,
    nft: BTreeMap<(String, String), String>,
    applied: Vec<Op>,
    apply_calls: usize,
    read_calls: usize,
    vxlan_creations: usize,
    fail: Option<OpFilter>,
    flushed_zones: Vec<u16>,
    /// Per tenant device created: the nftables tables as they were at that moment (ordering checks).
    nft_at_creation: BTreeMap<String, BTreeMap<(String, String), String>>,
}

#[derive(Default)]
pub struct FakeDataplane {
    inner: Mutex<Inner>,
}

impl FakeDataplane {
    pub fn new() -> Self {
        let fake = Self::default();
        static SEED: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
        let mut g = fake.lock();
        g.next_ifindex = 2; // 1 is loopback in a real namespace
        g.mac_seed = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(g);
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the state from the assertions that follow.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a plain link (an underlay NIC), returns its ifindex.
    pub fn add_link(&self, name: &str, mtu: u32, addresses: Vec<IpNet>) -> u32 {
        let mut g = self.lock();
        let ifindex = g.alloc_ifindex();
        let link = FakeLink { ifindex, mac: fake_mac(g.mac_seed, ifindex), mtu, addresses, vxlan: None, up: true };
        g.links.insert(name.to_string(), link);
        ifindex
    }

    pub fn link(&self, name: &str) -> Option<FakeLink> {
        self.lock().links.get(name).cloned()
    }

    /// Everything weft programmed, as the kernel would report it (all links, not scoped).
    pub fn state(&self) -> OverlayState {
        self.lock().state.clone()
    }

    /// Every op applied successfully so far, in order.
    pub fn applied(&self) -> Vec<Op> {
        self.lock().applied.clone()
    }

    /// Returns and forgets the applied ops (to assert on the next sync only).
    pub fn take_applied(&self) -> Vec<Op> {
        std::mem::take(&mut self.lock().applied)
    }

    pub fn apply_calls(&self) -> usize {
        self.lock().apply_calls
    }

    pub fn read_calls(&self) -> usize {
        self.lock().read_calls
    }

    /// How many times `ensure_vxlan` had to create (or recreate) a device.
    pub fn vxlan_creations(&self) -> usize {
        self.lock().vxlan_creations
    }

    /// The text of nftables table `family table` when tenant device `link` was (last) created, if it existed.
    pub fn nft_when_created(&self, link: &str, family: &str, table: &str) -> Option<String> {
        self.lock().nft_at_creation.get(link)?.get(&(family.to_string(), table.to_string())).cloned()
    }

    /// The conntrack zones flushed so far, in order.
    pub fn flushed_zones(&self) -> Vec<u16> {
        self.lock().flushed_zones.clone()
    }

    pub fn nft_table(&self, family: &str, table: &str) -> Option<String> {
        self.lock().nft.get(&(family.to_string(), table.to_string())).cloned()
    }

    /// Changes the kernel state behind weft's back (an admin's `ip route del`), without recording anything.
    pub fn tamper(&self, f: impl FnOnce(&mut OverlayState)) {
        f(&mut self.lock().state)
    }

    /// Tenant rules and table routes as the kernel would report them (not scoped).
    pub fn networks_state(&self) -> NetworksState {
        self.lock().tenant.clone()
    }

    /// Changes tenant rules/routes behind weft's back.
    pub fn tamper_networks(&self, f: impl FnOnce(&mut NetworksState)) {
        f(&mut self.lock().tenant)
    }

    /// Edits an nftables table behind weft's back (an admin's `nft delete rule ...`).
    pub fn edit_nft_behind_back(&self, family: &str, table: &str, f: impl FnOnce(&mut String)) {
        if let Some(t) = self.lock().nft.get_mut(&(family.to_string(), table.to_string())) {
            f(t);
        }
    }

    /// Deletes an nftables table behind weft's back (an admin's `nft delete table`).
    pub fn delete_nft_behind_back(&self, family: &str, table: &str) {
        self.lock().nft.remove(&(family.to_string(), table.to_string()));
    }

    /// Deletes a link behind weft's back (with every entry on it, as the kernel does).
    pub fn remove_link_behind_back(&self, name: &str) {
        self.lock().remove_link(name);
    }

    /// From now on, ops for which `f` is true fail (as the kernel refusing them); `None`-like reset with
    /// [`FakeDataplane::clear_failures`].
    pub fn fail_ops_matching(&self, f: impl Fn(&Op) -> bool + Send + Sync + 'static) {
        self.lock().fail = Some(Box::new(f));
    }

    pub fn clear_failures(&self) {
        self.lock().fail = None;
    }
}

fn fake_mac(seed: u16, ifindex: u32) -> Mac {
    let (s, b) = (seed.to_be_bytes(), ifindex.to_be_bytes());
    [0x02, 0xfa, s[0], s[1], b[2], b[3]]
}

impl Inner {
    fn alloc_ifindex(&mut self) -> u32 {
        self.next_ifindex = self.next_ifindex.max(2);
        let i = self.next_ifindex;
        self.next_ifindex += 1;
        i
    }

    fn has_ifindex(&self, ifindex: u32) -> bool {
        self.links.values().any(|l| l.ifindex == ifindex)
    }

    fn remove_link(&mut self, name: &str) -> bool {
        let Some(link) = self.links.remove(name) else { return false };
        let i = link.ifindex;
        let s = &mut self.state;
        s.neighs.retain(|_, n| n.ifindex != i);
        s.fdbs.retain(|_, f| f.ifindex != i);
        s.nexthops.retain(|_, n| n.ifindex != i);
        let nexthops = s.nexthops.clone();
        s.routes.retain(|_, r| match r.target {
            RouteTarget::Nexthop(id) => nexthops.contains_key(&id),
            RouteTarget::Via { ifindex, .. } => ifindex != i,
        });
        self.tenant.routes.retain(|_, r| !matches!(r.kind, TableRouteKind::Via { ifindex, .. } if ifindex == i));
        true
    }

    /// One op with kernel-like checks; `Err` carries the message the kernel would give.
    fn apply_one(&mut self, op: &Op) -> Result<(), String> {
        if self.fail.as_ref().is_some_and(|f| f(op)) {
            return Err("injected failure".into());
        }
        let no_dev = |i: u32| format!("no such device (ifindex {i})");
        match op {
            Op::AddNeigh(n) if !self.has_ifindex(n.ifindex) => return Err(no_dev(n.ifindex)),
            Op::AddFdb(f) if !self.has_ifindex(f.ifindex) => return Err(no_dev(f.ifindex)),
            Op::AddNexthop(n) if !self.has_ifindex(n.ifindex) => return Err(no_dev(n.ifindex)),
            Op::AddRoute(r) => match r.target {
                RouteTarget::Nexthop(id) if !self.state.nexthops.contains_key(&id) => {
                    return Err(format!("nexthop id {id} does not exist"))
                }
                RouteTarget::Via { ifindex, .. } if !self.has_ifindex(ifindex) => return Err(no_dev(ifindex)),
                _ => {}
            },
            Op::AddTableRoute(r) => match r.kind {
                TableRouteKind::Via { ifindex, .. } if !self.has_ifindex(ifindex) => return Err(no_dev(ifindex)),
                _ => {}
            },
            _ => {}
        }
        let s = &mut self.state;
        match *op {
            Op::AddNeigh(n) => s.add_neigh(n),
            Op::DelNeigh(n) => drop(s.neighs.remove(&(n.ifindex, n.ip))),
            Op::AddFdb(f) => s.add_fdb(f),
            Op::DelFdb(f) => drop(s.fdbs.remove(&(f.ifindex, f.mac, f.dst))),
            Op::AddNexthop(n) => s.add_nexthop(n),
            Op::DelNexthop(n) => {
                s.nexthops.remove(&n.id);
                s.routes.retain(|_, r| r.target != RouteTarget::Nexthop(n.id));
            }
            Op::AddRoute(r) => s.add_route(r),
            Op::DelRoute(r) => drop(s.routes.remove(&r.dst)),
            Op::AddRule(ref r) => self.tenant.add_rule(r.clone()),
            Op::DelRule(ref r) => drop(self.tenant.rules.remove(r)),
            Op::AddTableRoute(r) => self.tenant.add_route(r),
            Op::DelTableRoute(r) => drop(self.tenant.routes.remove(&(r.table, r.dst))),
        }
        Ok(())
    }
}

fn same_device(a: &VxlanSpec, b: &VxlanSpec) -> bool {
    a.vni == b.vni && a.port == b.port && a.local == b.local && a.underlay_ifindex == b.underlay_ifindex
}

#[async_trait]
impl Dataplane for FakeDataplane {
    async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<VtepInfo, DataplaneError> {
        let mut g = self.lock();
        if !g.has_ifindex(spec.underlay_ifindex) {
            return Err(DataplaneError::Netlink(format!("underlay ifindex {} does not exist", spec.underlay_ifindex)));
        }
        let keep = g.links.get(&spec.name).is_some_and(|l| l.vxlan.as_ref().is_some_and(|v| same_device(v, spec)));
        if !keep {
            g.remove_link(&spec.name);
            let ifindex = g.alloc_ifindex();
            let link = FakeLink {
                ifindex,
                mac: fake_mac(g.mac_seed, ifindex),
                mtu: 0,
                addresses: vec![],
                vxlan: None,
                up: false,
            };
            g.links.insert(spec.name.clone(), link);
            g.vxlan_creations += 1;
        }
        let link = g.links.get_mut(&spec.name).expect("just ensured");
        link.mtu = spec.mtu;
        link.addresses = spec.address.iter().chain(spec.address6.iter()).copied().collect();
        link.vxlan = Some(spec.clone());
        link.up = true;
        Ok(VtepInfo { ifindex: link.ifindex, mac: link.mac })
    }

    async fn ensure_tenant_vxlan(&self, spec: &VxlanSpec, mac: Mac) -> Result<VtepInfo, DataplaneError> {
        let new = self.link(&spec.name).is_none();
        let v = self.ensure_vxlan(spec).await?;
        let mut g = self.lock();
        if new {
            let tables = g.nft.clone();
            g.nft_at_creation.insert(spec.name.clone(), tables);
        }
        let link = g.links.get_mut(&spec.name).expect("just ensured");
        link.mac = mac;
        Ok(VtepInfo { ifindex: v.ifindex, mac })
    }

    async fn link_index(&self, name: &str) -> Result<Option<u32>, DataplaneError> {
        Ok(self.lock().links.get(name).map(|l| l.ifindex))
    }

    async fn read_networks(&self, scope: &NetworksScope) -> Result<NetworksState, DataplaneError> {
        let mut g = self.lock();
        g.read_calls += 1;
        let mut out = g.tenant.clone();
        out.neighs =
            g.state.neighs.iter().filter(|(_, n)| scope.devices.contains(&n.ifindex)).map(|(k, v)| (*k, *v)).collect();
        out.fdbs =
            g.state.fdbs.iter().filter(|(_, f)| scope.devices.contains(&f.ifindex)).map(|(k, v)| (*k, *v)).collect();
        out.routes.retain(|_, r| match r.kind {
            TableRouteKind::Via { ifindex, .. } => scope.devices.contains(&ifindex),
            TableRouteKind::Unreachable => true,
        });
        Ok(out)
    }

    async fn delete_link(&self, name: &str) -> Result<(), DataplaneError> {
        self.lock().remove_link(name);
        Ok(())
    }

    async fn underlay(&self, ip: IpAddr) -> Result<UnderlayInfo, DataplaneError> {
        let g = self.lock();
        g.links
            .iter()
            .find_map(|(name, l)| {
                let network = *l.addresses.iter().find(|a| a.addr() == ip)?;
                Some(UnderlayInfo { ifindex: l.ifindex, name: name.clone(), mtu: l.mtu, network })
            })
            .ok_or(DataplaneError::NoUnderlay(ip))
    }

    async fn read_state(&self, scope: &Scope) -> Result<OverlayState, DataplaneError> {
        let mut g = self.lock();
        g.read_calls += 1;
        let mut out = g.state.clone();
        out.neighs.retain(|_, n| Some(n.ifindex) == scope.vxlan_ifindex);
        out.fdbs.retain(|_, f| Some(f.ifindex) == scope.vxlan_ifindex);
        Ok(out)
    }

    async fn apply(&self, ops: &[Op]) -> Result<ApplyReport, DataplaneError> {
        let mut g = self.lock();
        g.apply_calls += 1;
        let mut report = ApplyReport::default();
        for op in ops {
            match g.apply_one(op) {
                Ok(()) => {
                    report.applied += 1;
                    g.applied.push(op.clone());
                }
                Err(e) => report.failed.push((op.clone(), e)),
            }
        }
        Ok(report)
    }

    async fn apply_nft(&self, family: &str, table: &str, ruleset: &str) -> Result<(), DataplaneError> {
        crate::nft::check_names(family, table)?;
        self.lock().nft.insert((family.to_string(), table.to_string()), ruleset.to_string());
        Ok(())
    }

    async fn delete_nft(&self, family: &str, table: &str) -> Result<(), DataplaneError> {
        crate::nft::check_names(family, table)?;
        self.lock().nft.remove(&(family.to_string(), table.to_string()));
        Ok(())
    }

    async fn flush_conntrack_zone(&self, zone: u16) -> Result<usize, DataplaneError> {
        if zone == 0 {
            return Err(DataplaneError::Other("refusing to flush conntrack zone 0".into()));
        }
        self.lock().flushed_zones.push(zone);
        Ok(0)
    }

    /// The named counters declared in the stored table, all at zero (the fake forwards no packets); empty when
    /// the table is missing, as the real one.
    async fn nft_counters(&self, family: &str, table: &str) -> Result<Vec<(String, u64, u64)>, DataplaneError> {
        let text = self.nft_table(family, table).unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("counter ")?.split_whitespace().next().map(|n| (n.to_string(), 0, 0)))
            .collect())
    }

    async fn nft_fingerprint(&self, family: &str, table: &str) -> Result<Option<u64>, DataplaneError> {
        Ok(self.nft_table(family, table).map(|t| weft_types::digest::fnv1a(t.as_bytes())))
    }
}
