//! `NetlinkDataplane`: the real [`Dataplane`], talking rtnetlink directly, batched and pipelined.
//!
//! Layout: [`wire`] writes the hot-path requests (neighbour, FDB, nexthop, route) by hand, [`parse`] reads dumps
//! and acks, [`socket`] batches requests into few datagrams and matches answers by sequence number, [`link`]
//! handles the VXLAN device and addresses with netlink-packet-route's typed messages.
//!
//! Why these choices (figures measured on this machine, see shared/README):
//! - Routes go through nexthop objects (RTA_NH_ID). With one gateway per route on one device, IPv4 route
//!   insertion is quadratic (the route-info hash ignores the gateway: 10k routes 1.34 s); through nexthop objects
//!   it is linear (~0.18 s).
//! - Requests are batched (see [`socket`]): one datagram carries ~64 KiB of requests, one `recv` per datagram.
//! - The socket is blocking and owned by the dataplane behind a mutex; async callers reach it through
//!   `spawn_blocking`, so a 0.3 s convergence never stalls the agent's runtime threads.
//! - A socket is bound to the network namespace it was created in, so [`NetlinkDataplane::in_netns`] creates it on
//!   a thread inside the target namespace and uses it from anywhere afterwards; `nft` is spawned the same way.
//!
//! Semantics: `Add*` ops replace (neighbour, nexthop, route) or append (FDB); a "not found" answer to a `Del*` op
//! counts as applied (the goal, absence, is reached). `read_state` returns only weft's entries: permanent
//! neighbours and FDB entries with a destination on the VXLAN device, nexthops and main-table routes with
//! protocol [`RTPROT_WEFT`](crate::RTPROT_WEFT).
pub mod conntrack;
mod link;
pub mod parse;
pub mod socket;
#[cfg(test)]
mod tests;
pub mod wire;

use crate::netns::{run_in, NetnsHandle};
use crate::networks::{NetworksScope, NetworksState};
use crate::{ApplyReport, Dataplane, DataplaneError, Op, OverlayState, Scope, UnderlayInfo, VtepInfo, VxlanSpec};
use async_trait::async_trait;
use socket::{Batch, NlError, NlSocket};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

struct Inner {
    sock: Mutex<NlSocket>,
    /// The namespace the socket lives in, to spawn `nft` there.
    ns: NetnsHandle,
}

/// The real dataplane for one network namespace. Cheap to clone (shares one socket).
#[derive(Clone)]
pub struct NetlinkDataplane {
    inner: Arc<Inner>,
}

fn open_err(e: NlError) -> DataplaneError {
    DataplaneError::Netlink(format!("opening rtnetlink socket: {e}"))
}

impl NetlinkDataplane {
    /// A dataplane for the calling thread's network namespace (the agent runs inside its node's namespace).
    pub fn new() -> Result<Self, DataplaneError> {
        let ns = NetnsHandle::current()?;
        let sock = NlSocket::open().map_err(open_err)?;
        Ok(Self { inner: Arc::new(Inner { sock: Mutex::new(sock), ns }) })
    }

    /// A dataplane for another namespace: its socket is created inside `ns` and stays bound to it.
    pub fn in_netns(ns: &NetnsHandle) -> Result<Self, DataplaneError> {
        // Our own handle on the same namespace (the fd path resolves to the namespace itself, not to a name).
        let own = NetnsHandle::open(Path::new(&format!("/proc/self/fd/{}", ns.fd().as_raw_fd())))?;
        let sock = run_in(ns, NlSocket::open)?.map_err(open_err)?;
        Ok(Self { inner: Arc::new(Inner { sock: Mutex::new(sock), ns: own }) })
    }

    /// Bytes of requests packed into one datagram (default 64 KiB); for benchmarks and tests of the batcher.
    pub fn set_batch_bytes(&self, bytes: usize) {
        self.inner.lock().batch_bytes = bytes.max(1);
    }

    /// Runs `f` with the socket on a blocking thread.
    async fn blocking<T, F>(&self, f: F) -> Result<T, DataplaneError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, DataplaneError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| DataplaneError::Other(format!("dataplane task failed: {e}")))?
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, NlSocket> {
        // A panic while holding the socket leaves it usable: requests are matched by sequence number.
        self.sock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn encode_op(batch: &mut Batch, op: &Op) {
    match op {
        Op::AddNeigh(n) => batch.push(|b, s| wire::add_neigh(b, s, n)),
        Op::DelNeigh(n) => batch.push(|b, s| wire::del_neigh(b, s, n)),
        Op::AddFdb(f) => batch.push(|b, s| wire::add_fdb(b, s, f)),
        Op::DelFdb(f) => batch.push(|b, s| wire::del_fdb(b, s, f)),
        Op::AddNexthop(n) => batch.push(|b, s| wire::add_nexthop(b, s, n)),
        Op::DelNexthop(n) => batch.push(|b, s| wire::del_nexthop(b, s, n.id)),
        Op::AddRoute(r) => batch.push(|b, s| wire::add_route(b, s, r)),
        Op::DelRoute(r) => batch.push(|b, s| wire::del_route(b, s, &r.dst)),
        Op::AddRule(r) => batch.push(|b, s| wire::add_rule(b, s, r)),
        Op::DelRule(r) => batch.push(|b, s| wire::del_rule(b, s, r)),
        Op::AddTableRoute(r) => batch.push(|b, s| wire::add_table_route(b, s, r)),
        Op::DelTableRoute(r) => batch.push(|b, s| wire::del_table_route(b, s, r)),
    }
}

fn is_delete(op: &Op) -> bool {
    matches!(
        op,
        Op::DelNeigh(_) | Op::DelFdb(_) | Op::DelNexthop(_) | Op::DelRoute(_) | Op::DelRule(_) | Op::DelTableRoute(_)
    )
}

/// Applies ops in order through the batcher; blocking.
pub(crate) fn apply_blocking(sock: &mut NlSocket, ops: &[Op]) -> ApplyReport {
    let mut batch = Batch::with_capacity(ops.len());
    ops.iter().for_each(|op| encode_op(&mut batch, op));
    let mut report = ApplyReport::default();
    for (op, result) in ops.iter().zip(sock.execute(batch)) {
        match result {
            Ok(()) => report.applied += 1,
            Err(e) if is_delete(op) && matches!(e.errno(), Some(libc::ENOENT | libc::ESRCH)) => report.applied += 1,
            // Rules are added exclusively (the kernel would duplicate them otherwise): an equal rule is the goal.
            Err(e) if matches!(op, Op::AddRule(_)) && e.errno() == Some(libc::EEXIST) => report.applied += 1,
            Err(e) => report.failed.push((op.clone(), e.to_string())),
        }
    }
    report
}

/// Reads weft's entries; blocking.
pub(crate) fn read_blocking(sock: &mut NlSocket, scope: &Scope) -> Result<OverlayState, NlError> {
    let mut state = OverlayState::default();
    if let Some(ifindex) = scope.vxlan_ifindex {
        for n in sock.dump(|b, s| wire::dump_neighbours(b, s, ifindex), |f| parse::parse_neigh(f.payload, ifindex))? {
            state.add_neigh(n);
        }
        for f in sock.dump(|b, s| wire::dump_fdb(b, s, ifindex), |f| parse::parse_fdb(f.payload, ifindex))? {
            state.add_fdb(f);
        }
    }
    for n in sock.dump(wire::dump_nexthops, |f| parse::parse_nexthop(f.payload))? {
        state.add_nexthop(n);
    }
    for v6 in [false, true] {
        for r in sock.dump(|b, s| wire::dump_routes(b, s, v6), |f| parse::parse_route(f.payload))? {
            state.add_route(r);
        }
    }
    Ok(state)
}

/// Reads weft's tenant-network entries; blocking.
pub(crate) fn read_networks_blocking(sock: &mut NlSocket, scope: &NetworksScope) -> Result<NetworksState, NlError> {
    let mut state = NetworksState::default();
    for v6 in [false, true] {
        for r in sock.dump(|b, s| wire::dump_rules(b, s, v6), |f| parse::parse_rule(f.payload))? {
            state.add_rule(r);
        }
        for r in
            sock.dump(|b, s| wire::dump_all_routes(b, s, v6), |f| parse::parse_table_route(f.payload, &scope.devices))?
        {
            state.add_route(r);
        }
    }
    for &ifindex in &scope.devices {
        for n in sock.dump(|b, s| wire::dump_neighbours(b, s, ifindex), |f| parse::parse_neigh(f.payload, ifindex))? {
            state.add_neigh(n);
        }
        for f in sock.dump(|b, s| wire::dump_fdb(b, s, ifindex), |f| parse::parse_fdb(f.payload, ifindex))? {
            state.add_fdb(f);
        }
    }
    Ok(state)
}

#[async_trait]
impl Dataplane for NetlinkDataplane {
    async fn ensure_tenant_vxlan(&self, spec: &VxlanSpec, mac: crate::Mac) -> Result<VtepInfo, DataplaneError> {
        let spec = spec.clone();
        self.blocking(move |i| link::ensure_vxlan_with_mac(&mut i.lock(), &spec, Some(mac))).await
    }

    async fn link_index(&self, name: &str) -> Result<Option<u32>, DataplaneError> {
        let name = name.to_string();
        self.blocking(move |i| link::link_index(&mut i.lock(), &name)).await
    }

    async fn read_networks(&self, scope: &NetworksScope) -> Result<NetworksState, DataplaneError> {
        let scope = scope.clone();
        self.blocking(move |i| {
            read_networks_blocking(&mut i.lock(), &scope)
                .map_err(|e| DataplaneError::Netlink(format!("reading tenant networks: {e}")))
        })
        .await
    }

    async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<VtepInfo, DataplaneError> {
        let spec = spec.clone();
        self.blocking(move |i| link::ensure_vxlan(&mut i.lock(), &spec)).await
    }

    async fn delete_link(&self, name: &str) -> Result<(), DataplaneError> {
        let name = name.to_string();
        self.blocking(move |i| link::delete_link(&mut i.lock(), &name)).await
    }

    async fn underlay(&self, ip: IpAddr) -> Result<UnderlayInfo, DataplaneError> {
        self.blocking(move |i| link::underlay(&mut i.lock(), ip)).await
    }

    async fn read_state(&self, scope: &Scope) -> Result<OverlayState, DataplaneError> {
        let scope = scope.clone();
        self.blocking(move |i| {
            read_blocking(&mut i.lock(), &scope).map_err(|e| DataplaneError::Netlink(format!("reading state: {e}")))
        })
        .await
    }

    async fn apply(&self, ops: &[Op]) -> Result<ApplyReport, DataplaneError> {
        if ops.is_empty() {
            return Ok(ApplyReport::default());
        }
        let ops = ops.to_vec();
        self.blocking(move |i| Ok(apply_blocking(&mut i.lock(), &ops))).await
    }

    async fn apply_nft(&self, family: &str, table: &str, ruleset: &str) -> Result<(), DataplaneError> {
        let (family, table, ruleset) = (family.to_string(), table.to_string(), ruleset.to_string());
        self.blocking(move |i| crate::nft::apply_table(&i.ns, &family, &table, &ruleset)).await
    }

    async fn delete_nft(&self, family: &str, table: &str) -> Result<(), DataplaneError> {
        let (family, table) = (family.to_string(), table.to_string());
        self.blocking(move |i| crate::nft::delete_table(&i.ns, &family, &table)).await
    }

    async fn nft_script(&self, script: &str) -> Result<(), DataplaneError> {
        let script = script.to_string();
        self.blocking(move |i| crate::nft::run_script(&i.ns, &script)).await
    }

    async fn nft_counters(&self, family: &str, table: &str) -> Result<Vec<(String, u64, u64)>, DataplaneError> {
        let (family, table) = (family.to_string(), table.to_string());
        self.blocking(move |i| crate::nft::list_counters(&i.ns, &family, &table)).await
    }

    async fn nft_fingerprint(&self, family: &str, table: &str) -> Result<Option<u64>, DataplaneError> {
        let (family, table) = (family.to_string(), table.to_string());
        self.blocking(move |i| crate::nft::fingerprint(&i.ns, &family, &table)).await
    }

    async fn flush_conntrack_zone(&self, zone: u16) -> Result<usize, DataplaneError> {
        if zone == 0 {
            return Err(DataplaneError::Other("refusing to flush conntrack zone 0 (every untenanted flow)".into()));
        }
        let fail = move |e: NlError| DataplaneError::Netlink(format!("flushing conntrack zone {zone}: {e}"));
        self.blocking(move |i| {
            run_in(&i.ns, || {
                let mut sock = NlSocket::open_protocol(netlink_sys::protocols::NETLINK_NETFILTER)?;
                conntrack::flush_zone(&mut sock, zone)
            })?
            .map_err(fail)
        })
        .await
    }
}
