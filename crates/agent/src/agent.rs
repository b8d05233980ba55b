//! Start-up of `weftd`, and the wiring of its parts.
//!
//! Order matters at start: find the underlay → build the backend and create its device (its identity, e.g. the
//! VTEP MAC, goes into the lease) → acquire the lease → write the node file (pods can now be created) → then,
//! concurrently: renew the lease, watch peers, run the managers on every change and on a resync timer
//! (`crate::manager`), enforce policy, serve health and metrics.
//! Nothing is torn down on exit unless uninstall was asked: a restarting agent leaves the kernel as it is and
//! its first pass diffs to nothing, so established flows lose no packet.
use crate::backend::{self, BackendError, LocalNode, Setup};
use crate::config::{default_source_ip, AgentConfig};
use crate::firewall::FirewallSpec;
use crate::follow::{follow, Listed};
use crate::lease::{self, Keeper};
use crate::manager::firewall::{FirewallManager, VxlanSources};
use crate::manager::networks::{NetworksConfig, NetworksManager};
use crate::manager::node_file::NodeFileManager;
use crate::manager::overlay::OverlayManager;
use crate::manager::policy::PolicyManager;
use crate::manager::{Inputs, Supervisor};
use crate::metrics::Metrics;
use crate::peers::{watch_peers, PeerFollower, PeerMap};
use crate::reconcile::Reconciler;
use crate::status::{SharedStatus, Status};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use weft_dataplane::{Dataplane, DataplaneError};
use weft_store::{Object, ObjectEntry, ObjectKind, Store, StoreError};
use weft_types::{LeaseRequest, NetworkConfig, NodeFile};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("dataplane: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
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
    // The port actually bound (tests bind port 0): the firewall closes it to pods.
    let agent_port = listener.local_addr().ok().map(|a| a.port());
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
    let local = LocalNode { name: node.clone(), node_ip, underlay: dp.underlay(node_ip).await? };
    let setup = Setup {
        config: &net.backend,
        local: &local,
        device: &cfg.vxlan_device,
        state_dir: &cfg.state_dir,
        uapi_dir: cfg.uapi_dir(),
        key_rotation: cfg.wireguard_rotate_every,
    };
    let mut backend = backend::build(&setup)?;
    let mtu = net.mtu.unwrap_or(local.underlay.mtu.saturating_sub(backend.mtu_overhead(node_ip.is_ipv6())));
    {
        let mut st = status.write().expect("status lock");
        st.node = node.clone();
        st.node_ip = node_ip.to_string();
        st.backend = backend.name().to_string();
        st.mtu = mtu;
    }

    // Before the lease we only know the subnet we had (node file): keep its gateway addresses on the device, since
    // removing the last IPv4 address from it would flush its neighbour entries and stall tunnel traffic.
    let previous_file = NodeFile::load(&cfg.node_file).ok();
    let previous = previous_file.clone();
    if let Some(nf) = &previous {
        backend.set_subnets(nf.subnet, nf.subnet6);
    }
    let backend_data = backend.ensure_device(dp.as_ref()).await?;
    let hint = previous.map(|f| f.subnet);
    let req =
        LeaseRequest { node: node.clone(), node_ip, backend_data: backend_data.clone(), ttl: cfg.lease_ttl, hint };
    let report = |e: &StoreError| status.write().expect("status lock").last_error = Some(e.to_string());
    let my_lease = lease::acquire(store.as_ref(), &req, &mut shutdown, report).await?;
    tracing::info!(subnet = %my_lease.subnet, subnet6 = ?my_lease.subnet6, %node_ip, mtu, "lease acquired");
    backend.set_subnets(my_lease.subnet, my_lease.subnet6);
    let mut node_file = NodeFileManager::new(&cfg.node_file, &net, mtu, previous_file.as_ref());
    node_file.write(&my_lease)?;

    let (lease_tx, lease_rx) = watch::channel(my_lease.clone());
    let (backend_tx, backend_rx) = watch::channel(backend_data);
    let keeper = Keeper { store: store.clone(), req: req.clone(), metrics: metrics.clone() };
    let keeper = tokio::spawn(keeper.run(my_lease.clone(), lease_tx, backend_rx, shutdown.clone()));
    let (peers_tx, peers_rx) = watch::channel::<Option<PeerMap>>(None);
    let follower = PeerFollower {
        store: store.clone(),
        cfg: net.clone(),
        me: lease_rx.clone(),
        status: status.clone(),
        metrics: metrics.clone(),
    };
    let watcher = tokio::spawn(watch_peers(follower, peers_tx, shutdown.clone()));

    let firewall = FirewallSpec {
        cluster_cidr: net.cluster_cidr,
        cluster_cidr6: net.cluster_cidr6,
        vxlan_port: backend.udp_port(),
        node_ips: vec![],
        masquerade: !cfg.no_masquerade,
        agent_port,
        vxlan_sources: None,
    };
    let policy_opts = weft_policy::CompileOptions { log_drops: cfg.log_drops, ..Default::default() };
    let policy_table = policy_opts.table.clone();
    let engine = (!cfg.no_policy).then(|| crate::policy::PolicyEngine {
        dp: dp.clone(),
        node: node.clone(),
        opts: policy_opts,
        status: status.clone(),
        metrics: metrics.clone(),
        resync: cfg.resync_interval,
        state_dir: cfg.state_dir.clone(),
        cni_data_dir: cfg.cni_data_dir.clone(),
    });
    let subnets = (my_lease.subnet, my_lease.subnet6);
    // Tenant networks follow their own store objects; a change kicks the shared loop.
    let (kick_tx, kick_rx) = watch::channel(0u64);
    let mut followers = Vec::new();
    // Networks with their creation order (the oldest wins a conflict), namespaces as they are.
    let (tx, networks_rx) = watch::channel::<Listed<ObjectEntry>>(None);
    let src = crate::networks::Entries(store.clone(), ObjectKind::Network);
    followers.push(tokio::spawn(follow(src, tx, crate::networks::same_entry, metrics.clone(), shutdown.clone())));
    let (tx, namespaces_rx) = watch::channel::<Listed<Object>>(None);
    let src = crate::networks::Objects(store.clone(), ObjectKind::Namespace);
    followers.push(tokio::spawn(follow(src, tx, crate::networks::same, metrics.clone(), shutdown.clone())));
    let changes = vec![changed_of(networks_rx.clone()), changed_of(namespaces_rx.clone())];
    followers.push(tokio::spawn(kick_on_change(changes, kick_tx, shutdown.clone())));
    let networks = NetworksManager::new(
        dp.clone(),
        store.clone(),
        NetworksConfig {
            node: node.clone(),
            net: net.clone(),
            local: local.clone(),
            backend: backend.name().to_string(),
            mtu,
            cni_data_dir: cfg.cni_data_dir.clone(),
            state_dir: cfg.state_dir.clone(),
        },
        networks_rx,
        namespaces_rx,
        status.clone(),
        metrics.clone(),
        node_file.shared(),
    );
    // The networks manager applies the isolation table (`weft_policy::isolation`) itself; `networks.served()`
    // publishes every programmed network with its slot, group, device and CIDRs for other consumers.
    // With VXLAN the firewall ties tunnel packets to their sender's pod subnets, tenant networks' included.
    let vxlan_sources =
        (backend.name() == "vxlan").then(|| VxlanSources { net: net.clone(), served: networks.served() });
    let overlay = Reconciler::new(dp.clone(), net.clone(), local, backend);
    let mut supervisor = Supervisor {
        managers: vec![
            Box::new(node_file),
            Box::new(OverlayManager::new(overlay, backend_tx, status.clone(), metrics.clone(), subnets)),
            Box::new(networks),
            Box::new(FirewallManager::new(dp.clone(), firewall, metrics.clone(), vxlan_sources)),
            Box::new(PolicyManager::start(dp.clone(), policy_table, engine, store.clone(), shutdown.clone())),
        ],
        metrics: metrics.clone(),
        status: status.clone(),
        state_dir: cfg.state_dir.clone(),
        resync: cfg.resync_interval,
    };
    supervisor.run(Inputs { lease: lease_rx, peers: peers_rx, kick: kick_rx, shutdown: shutdown.clone() }).await;

    // Every loop stops first: the policy engine cannot re-create its table after an uninstall removed it, and
    // the lease keeper cannot re-acquire the lease an uninstall releases.
    supervisor.stop().await;
    let _ = tokio::join!(keeper, watcher);
    for f in followers {
        let _ = f.await;
    }
    if cfg.uninstall_on_exit {
        tracing::info!("uninstalling: removing routes, device, firewall and policy tables, node file, lease");
        for (manager, e) in supervisor.teardown().await {
            tracing::error!(manager, error = %e, "teardown incomplete");
        }
        let _ = store.release(&node).await;
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

/// Bumps `kick` whenever one of `rxs` changes, until shutdown.
/// A followed kind as a stream of "it changed" (ends when its follower is gone).
fn changed_of<T: Send + Sync + 'static>(rx: watch::Receiver<Listed<T>>) -> futures::stream::BoxStream<'static, ()> {
    use futures::StreamExt;
    futures::stream::unfold(rx, |mut rx| async move { rx.changed().await.ok().map(|()| ((), rx)) }).boxed()
}

async fn kick_on_change(
    changes: Vec<futures::stream::BoxStream<'static, ()>>,
    kick: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    use futures::StreamExt;
    let mut all = futures::stream::select_all(changes);
    loop {
        tokio::select! {
            ev = all.next() => if ev.is_none() { return },
            _ = shutdown.wait_for(|v| *v) => return,
        }
        kick.send_modify(|k| *k = k.wrapping_add(1));
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}
