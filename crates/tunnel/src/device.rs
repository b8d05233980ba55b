//! [`Tunnel`]: the device, its workers and the control operations (peers, key rotation, stats).
//!
//! Control state (desired peers, keys) sits behind one mutex and is only touched by API calls and the timer
//! thread; every change ends in a rebuilt [`Tables`] snapshot that the workers pick up on their next batch. Lock
//! order: control, then a peer's state; workers take only peer states.

use crate::config::{PeerConfig, PeerStats, TunnelConfig, TunnelCounters};
use crate::keys::{PrivateKey, PublicKey};
use crate::peers::{Instance, OwnKey, Peer, PeerCounters, PeerState, Tables, RETIRE_GRACE, RETIRE_MAX};
use crate::sys::{tun, udp};
use crate::worker::{self, Shared};
use defguard_boringtun::noise::{Tunn, TunnResult};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("TUN device {ifname}: {source}")]
    Tun { ifname: String, source: std::io::Error },
    #[error("UDP port {port}: {source}")]
    Udp { port: u16, source: std::io::Error },
    #[error("UAPI socket: {0}")]
    Uapi(std::io::Error),
    #[error("starting a worker thread: {0}")]
    Thread(std::io::Error),
}

struct Entry {
    config: PeerConfig,
    peer: Arc<Peer>,
}

struct Control {
    key: PrivateKey,
    /// The key before the last rotation, while some peer still has a retiring instance made with it.
    previous: Option<OwnKey>,
    peers: BTreeMap<PublicKey, Entry>,
    next_index: u32,
}

impl Control {
    fn own(&self) -> OwnKey {
        let secret = self.key.secret();
        OwnKey { public: (&secret).into(), secret }
    }

    fn instance(&mut self, remote: PublicKey, keepalive: Option<u16>) -> Instance {
        // 24-bit indices (the low 8 bits of the wire index are the session counter inside the Tunn).
        self.next_index = (self.next_index + 1) & 0x00ff_ffff;
        let index = self.next_index;
        let own = self.own();
        let tunn = Tunn::new(own.secret.clone(), remote.0.into(), None, keepalive, index, None);
        Instance { tunn, index, remote, local: own.public_key() }
    }

    fn tables(&self) -> Tables {
        let mut t = Tables::empty(self.own());
        t.keys.extend(self.previous.clone());
        for entry in self.peers.values() {
            let peer = &entry.peer;
            let st = peer.lock();
            t.by_key.insert(st.current.remote, peer.clone());
            t.by_index.insert(st.current.index, peer.clone());
            if let Some(r) = &st.retiring {
                t.by_key.insert(r.inst.remote, peer.clone());
                t.by_index.insert(r.inst.index, peer.clone());
            }
            drop(st);
            for net in &entry.config.allowed_ips {
                if !t.router.insert(*net, peer.clone()) {
                    tracing::warn!(peer = %entry.config.public_key, %net, "allowed IP already held by another peer; ignored");
                }
            }
            t.peers.push(peer.clone());
        }
        t
    }
}

/// A running WireGuard interface. Dropping it stops it (as [`Tunnel::stop`]).
pub struct Tunnel {
    shared: Arc<Shared>,
    control: Arc<Mutex<Control>>,
    threads: Vec<JoinHandle<()>>,
    ifname: String,
    listen_port: u16,
    persist: bool,
    /// The UAPI socket's path and the identity of the file we bound there.
    uapi: Option<(std::path::PathBuf, (u64, u64))>,
}

impl Tunnel {
    /// Creates (or re-attaches to) the TUN device, binds the UDP port, starts one worker per queue and the timer
    /// thread. The interface is set up with the MTU; addresses and routes are the caller's.
    pub fn start(config: TunnelConfig) -> Result<Tunnel, TunnelError> {
        let queues = match config.queues {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let tun_err = |source| TunnelError::Tun { ifname: config.ifname.clone(), source };
        let mut tun_fds: Vec<OwnedFd> = Vec::with_capacity(queues);
        for _ in 0..queues {
            tun_fds.push(tun::open_queue(&config.ifname, config.offload).map_err(tun_err)?);
        }
        // Persistence is a property of the device: set it either way, so a device left persistent by an earlier
        // run goes away with this one when asked.
        tun::set_persist(&tun_fds[0], config.persist).map_err(tun_err)?;
        if config.offload {
            let flags = tun::TUN_F_CSUM | tun::TUN_F_TSO4 | tun::TUN_F_TSO6;
            // USO (kernel ≥ 6.2) is optional: without it the kernel just hands us UDP unsegmented.
            for fd in &tun_fds {
                if tun::set_offload(fd, flags | tun::TUN_F_USO4 | tun::TUN_F_USO6).is_err() {
                    tun::set_offload(fd, flags).map_err(tun_err)?;
                }
            }
        }
        tun::set_mtu_up(&config.ifname, config.mtu).map_err(tun_err)?;
        let (socks, listen_port) = udp::bind_group(config.listen_port, queues, config.offload)
            .map_err(|source| TunnelError::Udp { port: config.listen_port, source })?;

        // Before any thread: a socket we cannot have fails the start with nothing running yet.
        let uapi = match &config.uapi {
            Some(path) => Some((path.clone(), crate::uapi::bind(path).map_err(TunnelError::Uapi)?)),
            None => None,
        };

        let control = Control {
            key: config.private_key.clone(),
            previous: None,
            peers: BTreeMap::new(),
            next_index: rand::random::<u32>() & 0x00ff_ffff,
        };
        let tables = control.tables();
        let shared = Arc::new(Shared {
            tables: RwLock::new(Arc::new(tables)),
            stop: AtomicBool::new(false),
            counters: Default::default(),
            tun: tun_fds,
            udp: socks,
            offload: config.offload,
        });
        let control = Arc::new(Mutex::new(control));

        let mut threads = Vec::new();
        let mut tunnel = Tunnel {
            shared: shared.clone(),
            control: control.clone(),
            threads: Vec::new(),
            ifname: config.ifname.clone(),
            listen_port,
            persist: config.persist,
            uapi: None,
        };
        for q in 0..queues {
            let shared = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("wg-{}-{q}", config.ifname))
                .spawn(move || worker::run(&shared, q))
                .map_err(TunnelError::Thread)?;
            threads.push(t);
        }
        let (s, c) = (shared.clone(), control.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("wg-{}-timers", config.ifname))
                .spawn(move || timers(&s, &c))
                .map_err(TunnelError::Thread)?,
        );
        if let Some((path, bound)) = uapi {
            let (s, c) = (shared.clone(), control.clone());
            tunnel.uapi = Some((path, bound.identity));
            let listener = bound.listener;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wg-{}-uapi", config.ifname))
                    .spawn(move || crate::uapi::serve(&listener, listen_port, &s, &|| uapi_view(&c)))
                    .map_err(TunnelError::Thread)?,
            );
        }
        tunnel.threads = threads;
        Ok(tunnel)
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The device's ifindex in the caller's network namespace (0 when it is gone).
    pub fn ifindex(&self) -> u32 {
        tun::ifindex(&self.ifname)
    }

    pub fn public_key(&self) -> PublicKey {
        self.control().key.public_key()
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Level-triggered: `desired` is the whole set. Unchanged peers are not touched (their sessions go on);
    /// new ones start a handshake at once; a peer whose key changed (same endpoint IP or same allowed IPs as a
    /// removed one) keeps its old sessions until the new key's handshake completes. A peer with our own key or
    /// a key given twice is skipped with a warning; the rest still apply.
    pub fn set_peers(&self, desired: Vec<PeerConfig>) {
        let mut ctl = self.control();
        let own = ctl.key.public_key();
        let mut wanted: BTreeMap<PublicKey, PeerConfig> = BTreeMap::new();
        for p in desired {
            if p.public_key == own {
                tracing::warn!(peer = %p.public_key, "peer has our own public key; skipped");
                continue;
            }
            if wanted.contains_key(&p.public_key) {
                tracing::warn!(peer = %p.public_key, "peer listed twice; the first one is kept");
                continue;
            }
            wanted.insert(p.public_key, p);
        }
        let mut old = std::mem::take(&mut ctl.peers);
        let mut fresh = Vec::new();
        let mut kept = BTreeMap::new();
        // Handshakes start only once the tables carrying the new instances are published: a peer's response can
        // arrive within microseconds, and a worker that does not yet know the session index drops it (and the
        // next attempt is REKEY_TIMEOUT, 5 s, later).
        let mut kick: Vec<Arc<Peer>> = Vec::new();
        for (key, cfg) in wanted {
            match old.remove(&key) {
                Some(entry) => {
                    {
                        let mut st = entry.peer.lock();
                        st.endpoint = cfg.endpoint;
                        if st.keepalive != cfg.keepalive {
                            st.keepalive = cfg.keepalive;
                            let next = ctl.instance(key, cfg.keepalive);
                            st.succeed(next);
                            kick.push(entry.peer.clone());
                        }
                    }
                    kept.insert(key, Entry { config: cfg, peer: entry.peer });
                }
                None => fresh.push(cfg),
            }
        }
        for cfg in fresh {
            // The same node under a new key: reuse its peer so the old sessions carry traffic meanwhile.
            let same_node = old
                .iter()
                .find(|(_, e)| e.config.endpoint.ip() == cfg.endpoint.ip() || e.config.allowed_ips == cfg.allowed_ips)
                .map(|(k, _)| *k);
            let next = ctl.instance(cfg.public_key, cfg.keepalive);
            let peer = match same_node.and_then(|k| old.remove(&k)) {
                Some(entry) => {
                    let mut st = entry.peer.lock();
                    st.endpoint = cfg.endpoint;
                    st.keepalive = cfg.keepalive;
                    st.succeed(next);
                    drop(st);
                    kick.push(entry.peer.clone());
                    entry.peer
                }
                None => {
                    let st =
                        PeerState { current: next, retiring: None, endpoint: cfg.endpoint, keepalive: cfg.keepalive };
                    let peer = Arc::new(Peer { state: Mutex::new(st), counters: PeerCounters::default() });
                    kick.push(peer.clone());
                    peer
                }
            };
            kept.insert(cfg.public_key, Entry { config: cfg, peer });
        }
        ctl.peers = kept;
        self.publish(&ctl);
        for peer in kick {
            start_handshake(&self.shared, &mut peer.lock());
        }
    }

    fn publish(&self, ctl: &Control) {
        publish(&self.shared, ctl);
    }

    /// Switches to a new private key. Every peer gets a new instance with the new key and a handshake starts at
    /// once; until it completes (the peer must have learnt the new public key), traffic keeps flowing on the
    /// sessions made with the old key. Persisting the key is the caller's (see [`crate::keys::store`]).
    pub fn rotate_key(&self, new_private: PrivateKey) {
        let mut ctl = self.control();
        if new_private.bytes() == ctl.key.bytes() {
            return;
        }
        ctl.previous = Some(ctl.own());
        ctl.key = new_private;
        let peers: Vec<(PublicKey, Arc<Peer>)> = ctl.peers.iter().map(|(k, e)| (*k, e.peer.clone())).collect();
        for (key, peer) in peers {
            let mut st = peer.lock();
            let next = ctl.instance(key, st.keepalive);
            st.succeed(next);
            start_handshake(&self.shared, &mut st);
        }
        self.publish(&ctl);
    }

    pub fn stats(&self) -> Vec<PeerStats> {
        let ctl = self.control();
        ctl.peers.values().map(|e| peer_stats(e.config.public_key, &e.peer)).collect()
    }

    pub fn counters(&self) -> TunnelCounters {
        self.shared.counters.snapshot()
    }

    /// Stops the workers and closes the queues. A persistent device stays (with its addresses and routes) for
    /// the next start to re-attach; otherwise the kernel removes it with the last queue.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some((path, ours)) = self.uapi.take() {
            crate::uapi::unlink_if_ours(&path, ours);
        }
        if self.persist {
            tracing::debug!(ifname = %self.ifname, "leaving persistent TUN device in place");
        }
    }

    /// Removes a persistent device left by [`Tunnel::stop`] (uninstall). Not an error when it does not exist.
    pub fn remove_device(ifname: &str, offload: bool) -> Result<(), TunnelError> {
        if tun::ifindex(ifname) == 0 {
            return Ok(());
        }
        let fd = tun::open_queue(ifname, offload)
            .map_err(|source| TunnelError::Tun { ifname: ifname.to_string(), source })?;
        tun::set_persist(&fd, false).map_err(|source| TunnelError::Tun { ifname: ifname.to_string(), source })
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn publish(shared: &Shared, ctl: &Control) {
    let tables = Arc::new(ctl.tables());
    *shared.tables.write().unwrap_or_else(|e| e.into_inner()) = tables;
}

/// Sends a handshake initiation from the current instance now instead of waiting for the first packet: a
/// restarted node, a new peer and a rotated key all get sessions at once.
fn start_handshake(shared: &Shared, st: &mut PeerState) {
    let mut buf = [0u8; 256];
    let endpoint = st.endpoint;
    if let TunnResult::WriteToNetwork(pkt) = st.current.tunn.format_handshake_initiation(&mut buf, false) {
        let _ = shared.udp[0].send_to(pkt, endpoint);
    }
}

fn peer_stats(public_key: PublicKey, peer: &Peer) -> PeerStats {
    let st = peer.lock();
    let age = st
        .current
        .tunn
        .time_since_last_handshake()
        .or_else(|| st.retiring.as_ref().and_then(|r| r.inst.tunn.time_since_last_handshake()));
    let c = &peer.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    PeerStats {
        public_key,
        endpoint: st.endpoint,
        last_handshake: age.and_then(|a| SystemTime::now().checked_sub(a)),
        handshake_age: age,
        handshakes: load(&c.handshakes),
        rx_bytes: load(&c.rx_bytes),
        tx_bytes: load(&c.tx_bytes),
        decrypt_failures: load(&c.decrypt_failures),
        spoofed_source: load(&c.spoofed_source),
    }
}

/// What the UAPI `get` shows: our key and port, and each peer with its config and stats.
pub(crate) struct UapiView {
    pub peers: Vec<(PeerConfig, PeerStats)>,
}

fn uapi_view(control: &Mutex<Control>) -> UapiView {
    let ctl = control.lock().unwrap_or_else(|e| e.into_inner());
    UapiView {
        peers: ctl.peers.values().map(|e| (e.config.clone(), peer_stats(e.config.public_key, &e.peer))).collect(),
    }
}

/// WireGuard's timers (handshake retries, rekeys, keepalives) every 100 ms, and the retirement of old instances.
fn timers(shared: &Shared, control: &Mutex<Control>) {
    let mut buf = vec![0u8; 2048];
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let tables = shared.snapshot();
        let mut retired = false;
        for peer in &tables.peers {
            let mut st = peer.lock();
            let endpoint: SocketAddr = st.endpoint;
            if let TunnResult::WriteToNetwork(pkt) = st.current.tunn.update_timers(&mut buf) {
                let _ = shared.udp[0].send_to(pkt, endpoint);
            }
            let current_up = st.current.tunn.time_since_last_handshake().is_some();
            if let Some(r) = &mut st.retiring {
                if current_up && r.successor_up.is_none() {
                    r.successor_up = Some(Instant::now());
                }
                let done =
                    r.successor_up.is_some_and(|t| t.elapsed() >= RETIRE_GRACE) || r.since.elapsed() >= RETIRE_MAX;
                if done {
                    st.retiring = None;
                    retired = true;
                } else if !current_up {
                    // Keep asking: the peer may learn our new key (or we theirs) long after the rotation.
                    if let TunnResult::WriteToNetwork(pkt) =
                        st.current.tunn.format_handshake_initiation(&mut buf, false)
                    {
                        let _ = shared.udp[0].send_to(pkt, endpoint);
                    }
                }
            }
        }
        if retired {
            let mut ctl = control.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(prev) = ctl.previous.as_ref().map(OwnKey::public_key) {
                let still_used =
                    ctl.peers.values().any(|e| e.peer.lock().retiring.as_ref().is_some_and(|r| r.inst.local == prev));
                if !still_used {
                    ctl.previous = None;
                }
            }
            publish(shared, &ctl);
        }
    }
}
