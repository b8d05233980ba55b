//! Start-up and the main loop of `weftd`.
//!
//! Order matters at start: find the underlay → create the VXLAN device (its MAC goes into the lease) →
//! acquire the lease → write the node file (pods can now be created) → then, concurrently: renew the lease,
//! watch peers, reconcile on every change and on a resync timer, serve health and metrics.
//! Nothing is torn down on exit unless uninstall was asked: a restarting agent leaves the kernel as it is and
//! its first pass diffs to nothing, so established flows lose no packet.
use crate::config::{default_source_ip, AgentConfig};
use crate::desired::{path_to, vtep_mac, vxlan_backend_data, LocalNode, PeerPath};
use crate::firewall::FirewallSpec;
use crate::lease::{self, Keeper};
use crate::metrics::Metrics;
use crate::peers::{watch_peers, PeerMap};
use crate::reconcile::{Outcome, Reconciler};
use crate::status::{now_ms, PeerStatus, Programmed, SharedStatus, Status};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weft_dataplane::{format_mac, Dataplane, DataplaneError, VxlanSpec};
use weft_store::{Store, StoreError};
use weft_types::network::BackendKind;
use weft_types::{Lease, LeaseRequest, NetworkConfig, NodeFile};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("dataplane: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    NodeFile(#[from] weft_types::node_file::NodeFileError),
    #[error("http listener: {0}")]
    Http(#[from] std::io::Error),
}

/// Everything the agent needs from outside, injected so tests can use a fake dataplane and port 0.
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub dataplane: Arc<dyn Dataplane>,
    pub listener: tokio::net::TcpListener,
    pub shutdown: watch::Receiver<bool>,
}

pub async fn run(cfg: AgentConfig, deps: Deps) -> Result<(), AgentError> {
    let Deps { store, dataplane: dp, listener, mut shutdown } = deps;
    let metrics = Arc::new(Metrics::default());
    let status: SharedStatus = Arc::new(RwLock::new(Status::default()));
    let http = tokio::spawn(crate::http::serve(listener, status.clone(), metrics.clone(), {
        let mut s = shutdown.clone();
        async move {
            let _ = s.wait_for(|v| *v).await;
        }
    }));

    if cfg.lease_ttl < Duration::from_secs(1) || cfg.resync_interval < Duration::from_millis(100) {
        return Err(AgentError::Config("--lease-ttl must be at least 1s and --resync-interval at least 100ms".into()));
    }
    let node = cfg.node_name.clone().or_else(hostname).ok_or_else(|| AgentError::Config("no node name".into()))?;
    let node_ip = cfg
        .node_ip
        .or_else(default_source_ip)
        .ok_or_else(|| AgentError::Config("no --node-ip and no default route to take it from".into()))?;
    let net = network_config(&cfg, store.as_ref(), &status, &mut shutdown).await?;
    let underlay = dp.underlay(node_ip).await?;
    let overhead = match (net.backend.kind, node_ip.is_ipv4()) {
        (BackendKind::HostGw, _) => 0,
        (BackendKind::Vxlan, true) => 50,
        (BackendKind::Vxlan, false) => 70,
    };
    let mtu = net.mtu.unwrap_or(underlay.mtu.saturating_sub(overhead));
    {
        let mut st = status.write().expect("status lock");
        st.node = node.clone();
        st.node_ip = node_ip.to_string();
        st.backend = format!("{:?}", net.backend.kind).to_lowercase();
        st.mtu = mtu;
    }

    let mut vx_spec = (net.backend.kind == BackendKind::Vxlan).then(|| VxlanSpec {
        name: cfg.vxlan_device.clone(),
        vni: net.backend.vni,
        port: net.backend.port,
        local: node_ip,
        underlay_ifindex: underlay.ifindex,
        mtu: underlay.mtu.saturating_sub(overhead),
        address: None,
        address6: None,
    });
    // Before the lease we only know the subnet we had (node file): keep its gateway addresses on the device, since
    // removing the last IPv4 address from it would flush its neighbour entries and stall tunnel traffic.
    let previous = NodeFile::load(&cfg.node_file).ok();
    if let (Some(spec), Some(nf)) = (vx_spec.as_mut(), &previous) {
        (spec.address, spec.address6) = vxlan_addresses(nf.subnet, nf.subnet6);
    }
    let backend_data = match &vx_spec {
        Some(spec) => vxlan_backend_data(&dp.ensure_vxlan(spec).await?.mac),
        None => serde_json::json!({"v": 1}),
    };
    let hint = previous.map(|f| f.subnet);
    let req =
        LeaseRequest { node: node.clone(), node_ip, backend_data: backend_data.clone(), ttl: cfg.lease_ttl, hint };
    let report = |e: &StoreError| status.write().expect("status lock").last_error = Some(e.to_string());
    let my_lease = lease::acquire(store.as_ref(), &req, &mut shutdown, report).await?;
    tracing::info!(subnet = %my_lease.subnet, subnet6 = ?my_lease.subnet6, %node_ip, mtu, "lease acquired");
    if let Some(spec) = vx_spec.as_mut() {
        (spec.address, spec.address6) = vxlan_addresses(my_lease.subnet, my_lease.subnet6);
    }
    write_node_file(&cfg.node_file, &my_lease, &net, mtu)?;

    let firewall = FirewallSpec {
        cluster_cidr: net.cluster_cidr,
        cluster_cidr6: net.cluster_cidr6,
        vxlan_port: vx_spec.as_ref().map(|s| s.port),
        node_ips: vec![],
        masquerade: !cfg.no_masquerade,
    };
    let local = LocalNode { name: node.clone(), underlay, vxlan_ifindex: None };
    let mut rec = Reconciler::new(dp.clone(), net.clone(), local, vx_spec, firewall);

    let (mut subnet, mut subnet6) = (my_lease.subnet, my_lease.subnet6);
    let (lease_tx, mut lease_rx) = watch::channel(my_lease.clone());
    let (backend_tx, backend_rx) = watch::channel(backend_data);
    let keeper = Keeper { store: store.clone(), req: req.clone(), metrics: metrics.clone() };
    let keeper = tokio::spawn(keeper.run(my_lease, lease_tx, backend_rx, shutdown.clone()));
    let (peers_tx, mut peers_rx) = watch::channel::<Option<PeerMap>>(None);
    let watcher = tokio::spawn(watch_peers(store.clone(), peers_tx, metrics.clone(), shutdown.clone()));

    let policy_opts = weft_policy::CompileOptions { log_drops: cfg.log_drops, ..Default::default() };
    let policy_table = policy_opts.table.clone();
    let policy = (!cfg.no_policy).then(|| {
        let engine = crate::policy::PolicyEngine {
            dp: dp.clone(),
            node: node.clone(),
            opts: policy_opts,
            status: status.clone(),
            metrics: metrics.clone(),
            resync: cfg.resync_interval,
            state_dir: cfg.state_dir.clone(),
        };
        tokio::spawn(engine.run(store.clone(), shutdown.clone()))
    });

    let mut resync = tokio::time::interval(cfg.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    // Drift = the kernel changed behind our back: the desired state is what it was after the last pass, yet the
    // diff is not empty (or the device was recreated). Which trigger woke the loop does not matter.
    let mut last_desired: Option<weft_dataplane::OverlayState> = None;
    let mut last_vtep: Option<u32> = None;
    loop {
        let periodic = tokio::select! {
            _ = resync.tick() => true,
            r = peers_rx.changed() => { if r.is_err() { break; } false }
            r = lease_rx.changed() => { if r.is_err() { break; } false }
            _ = shutdown.wait_for(|v| *v) => break,
        };
        // Coalesce a burst of watch events (a thousand nodes joining) into one pass.
        tokio::time::sleep(Duration::from_millis(if periodic { 0 } else { 20 })).await;
        let me = lease_rx.borrow_and_update().clone();
        if (me.subnet, me.subnet6) != (subnet, subnet6) {
            // The lease was lost and another subnet acquired: new pods must get addresses from it, and the
            // device must carry its gateway address.
            (subnet, subnet6) = (me.subnet, me.subnet6);
            rec.set_vxlan_addresses(vxlan_addresses(subnet, subnet6));
            if let Err(e) = write_node_file(&cfg.node_file, &me, &net, mtu) {
                tracing::error!(error = %e, "writing the node file for the new subnet failed");
            }
        }
        let Some(peers) = peers_rx.borrow_and_update().clone() else {
            // Peers not listed yet (store slow or away): leave the kernel exactly as it is.
            continue;
        };
        // References, not copies: a copy of 10 000 leases is ~8 MiB (docs-notes/mem.md).
        let list: Vec<&Lease> = peers.values().filter(|l| l.node != me.node).collect();
        let t0 = Instant::now();
        metrics.reconciles.inc();
        match rec.reconcile(&me, &list, periodic || first).await {
            Ok(out) => {
                metrics.reconcile_seconds.observe(t0.elapsed().as_secs_f64());
                if let Some(v) = out.vtep {
                    let data = vxlan_backend_data(&v.mac);
                    if *backend_tx.borrow() != data {
                        tracing::warn!(mac = %format_mac(&v.mac), "VXLAN device was recreated; publishing new MAC");
                        backend_tx.send_replace(data);
                    }
                }
                let recreated = matches!((last_vtep, out.vtep), (Some(a), Some(b)) if a != b.ifindex);
                let drift = recreated || (last_desired.as_ref() == Some(&out.desired) && !out.ops.is_empty());
                last_vtep = out.vtep.map(|v| v.ifindex);
                record(&status, &metrics, &rec, &me, &list, &out, drift, &net);
                last_desired = Some(out.desired.clone());
                if !out.ops.is_empty() || !out.report.failed.is_empty() {
                    tracing::info!(
                        applied = out.report.applied,
                        failed = out.report.failed.len(),
                        peers = list.len(),
                        periodic,
                        "dataplane reconciled"
                    );
                }
                for (op, err) in &out.report.failed {
                    tracing::warn!(?op, %err, "kernel refused a change; next resync retries");
                }
                first = false;
                if periodic {
                    if let Ok(c) = dp.nft_counters(crate::firewall::FAMILY, crate::firewall::TABLE).await {
                        if let Some((_, p, _)) = c.iter().find(|(n, _, _)| n == "vxlan_rejected") {
                            metrics.vxlan_rejected.set(*p as i64);
                        }
                    }
                }
            }
            Err(e) => {
                metrics.reconcile_errors.inc();
                tracing::error!(error = %e, "reconcile failed; retrying at the next resync");
                status.write().expect("status lock").last_error = Some(e.to_string());
            }
        }
        crate::status::write_file(&cfg.state_dir, &status);
    }

    // Every loop stops first: the policy engine cannot re-create its table after an uninstall removed it, and
    // the lease keeper cannot re-acquire the lease an uninstall releases.
    if let Some(p) = policy {
        let _ = p.await;
    }
    let _ = tokio::join!(keeper, watcher);
    if cfg.uninstall_on_exit {
        tracing::info!("uninstalling: removing routes, device, firewall table, node file, lease");
        if let Err(e) = rec.teardown().await {
            tracing::error!(error = %e, "teardown incomplete");
        }
        if let Err(e) = dp.delete_nft("inet", &policy_table).await {
            tracing::error!(error = %e, "removing the policy table failed");
        }
        let _ = store.release(&node).await;
        let _ = std::fs::remove_file(&cfg.node_file);
        let _ = std::fs::remove_file(cfg.state_dir.join("status.json"));
    }
    let _ = http.await;
    tracing::info!("stopped");
    Ok(())
}

async fn network_config(
    cfg: &AgentConfig,
    store: &dyn Store,
    status: &SharedStatus,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<NetworkConfig, AgentError> {
    let wanted = match &cfg.network_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| AgentError::Config(format!("{}: {e}", p.display())))?;
            let n: NetworkConfig =
                serde_json::from_str(&text).map_err(|e| AgentError::Config(format!("{}: {e}", p.display())))?;
            n.validate().map_err(|e| AgentError::Config(format!("{}: {e}", p.display())))?;
            Some(n)
        }
        None => None,
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        let r = match &wanted {
            Some(n) => store.init_network_config(n).await,
            None => store.network_config().await,
        };
        match r {
            Ok(stored) => {
                if wanted.as_ref().is_some_and(|w| *w != stored) {
                    tracing::warn!(
                        "the store holds a different network config than --network-config; using the store's"
                    );
                }
                stored.validate().map_err(|e| AgentError::Config(format!("stored network config: {e}")))?;
                return Ok(stored);
            }
            Err(e @ (StoreError::Unavailable(_) | StoreError::NoNetworkConfig)) => {
                tracing::warn!(error = %e, "waiting for the store / network config");
                status.write().expect("status lock").last_error = Some(e.to_string());
                crate::peers::sleep_or_shutdown(backoff, shutdown).await;
                if *shutdown.borrow() {
                    return Err(e.into());
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_node_file(path: &Path, lease: &Lease, net: &NetworkConfig, mtu: u32) -> Result<(), AgentError> {
    let nf = NodeFile {
        subnet: lease.subnet,
        subnet6: lease.subnet6,
        mtu,
        cluster_cidr: Some(net.cluster_cidr),
        cluster_cidr6: net.cluster_cidr6,
    };
    if NodeFile::load(path).ok().as_ref() != Some(&nf) {
        nf.store(path)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record(
    status: &SharedStatus,
    metrics: &Metrics,
    rec: &Reconciler,
    me: &Lease,
    peers: &[&Lease],
    out: &Outcome,
    drift: bool,
    net: &NetworkConfig,
) {
    metrics.peers.set(peers.len() as i64);
    metrics.ops_applied.inc_by(out.report.applied as u64);
    metrics.ops_failed.inc_by(out.report.failed.len() as u64);
    let mut st = status.write().expect("status lock");
    if drift {
        metrics.drift_repaired.inc_by(out.ops.len() as u64);
        st.last_drift = out.ops.iter().map(|o| format!("{o:?}")).collect();
        st.last_drift_at_ms = now_ms();
        tracing::warn!(entries = out.ops.len(), "resync found drift (entries changed behind our back); repaired");
    }
    st.subnet = Some(me.subnet.to_string());
    st.subnet6 = me.subnet6.map(|s| s.to_string());
    st.vtep_mac = vtep_mac(me).map(|m| format_mac(&m));
    st.lease_expires_at_ms = me.expires_at_ms;
    st.store_up = metrics.store_up.get() == 1;
    st.peers = peers
        .iter()
        .map(|p| PeerStatus {
            node: p.node.clone(),
            subnet: p.subnet.to_string(),
            subnet6: p.subnet6.map(|s| s.to_string()),
            node_ip: p.node_ip.to_string(),
            vtep_mac: vtep_mac(p).map(|m| format_mac(&m)),
            path: match path_to(net, &rec.local, p) {
                PeerPath::Tunnel => "tunnel".into(),
                PeerPath::Direct => "direct".into(),
            },
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

/// The gateway addresses a node puts on its VXLAN device: its subnets' network addresses, as host routes.
fn vxlan_addresses(subnet: Ipv4Net, subnet6: Option<Ipv6Net>) -> (Option<IpNet>, Option<IpNet>) {
    (
        Some(IpNet::V4(Ipv4Net::new(subnet.network(), 32).expect("/32"))),
        subnet6.map(|s| IpNet::V6(Ipv6Net::new(s.network(), 128).expect("/128"))),
    )
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}
