//! WireGuard: pod traffic between nodes is encrypted by a userspace WireGuard device (`weft-tunnel`: a TUN
//! device served by worker threads of this agent), so it works without the kernel module.
//!
//! The node's key pair lives in `<state dir>/wireguard.key` (0600, created on first start); only the public key
//! and the UDP port leave the node, in the lease. Each peer is a WireGuard peer at `nodeIp:port` whose allowed
//! IPs are its pod subnets (cryptokey routing: a packet is delivered only if it authenticates under that peer's
//! session and its inner source is inside its subnets); the kernel routes those subnets into the TUN device,
//! through an onlink nexthop at the subnet's network address (the device has no link layer, so nothing is
//! resolved). The peer set is handed to the device after every pass (level-triggered, whole set).
//!
//! The TUN device is persistent: on agent exit it stays with its routes, and a restarted agent re-attaches to it
//! and handshakes at once, so established connections survive; uninstall removes it.
//!
//! Key rotation (`weftctl wireguard rotate-key`, see [`rotate`]) runs in the pass like everything else: a
//! request file in the state dir names the public key to retire; the pass that sees it stores a new key, hands it
//! to the tunnel, and returns the new public key as this node's lease data, which the lease keeper publishes at
//! once. Established connections keep their sessions meanwhile (the tunnel keeps the old ones until the new
//! key has shaken hands with each peer, and answers handshakes for the old key until then). With
//! `--wireguard-rotate-every`, the agent asks itself the same way once its key file is that old.
use super::{Backend, BackendError, DeviceDrops, LocalNode, Peer, PeerError, PeerPath, PeerStats, Setup};
use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use weft_dataplane::{Dataplane, Nexthop, OverlayState, Route, RouteTarget};
use weft_tunnel::{keys, PeerConfig, PublicKey, Tunnel, TunnelConfig, TunnelError, OVERHEAD_V4, OVERHEAD_V6};
use weft_types::{BackendData, Lease};

pub mod rotate;

pub struct Wireguard {
    ifname: String,
    state_dir: PathBuf,
    /// The read-only UAPI socket for `wg show` (`<uapi dir>/<device>.sock`), if asked for.
    uapi: Option<PathBuf>,
    port: u16,
    mtu: u32,
    tunnel: Option<Tunnel>,
    /// The device's ifindex when the tunnel attached: a different one later means it was deleted behind us.
    ifindex: Option<u32>,
    /// Public key → node name, for per-peer stats (the tunnel knows peers by key only).
    names: BTreeMap<PublicKey, String>,
    rotations: rotate::Rotations,
    /// Rotate the key once its file is this old (`--wireguard-rotate-every`).
    rotate_every: Option<std::time::Duration>,
}

pub fn build(s: &Setup<'_>) -> Result<Box<dyn Backend>, BackendError> {
    let overhead = if s.local.node_ip.is_ipv4() { OVERHEAD_V4 } else { OVERHEAD_V6 };
    if s.config.port == 0 {
        return Err(err("backend.port must be a UDP port, not 0"));
    }
    Ok(Box::new(Wireguard {
        ifname: s.device.to_string(),
        state_dir: s.state_dir.to_path_buf(),
        uapi: s.uapi_dir.map(|d| d.join(format!("{}.sock", s.device))),
        port: s.config.port,
        mtu: s.local.underlay.mtu.saturating_sub(overhead),
        tunnel: None,
        ifindex: None,
        names: BTreeMap::new(),
        rotations: rotate::Rotations::default(),
        rotate_every: s.key_rotation,
    }))
}

fn err(reason: impl Into<String>) -> BackendError {
    BackendError::Device { backend: "wireguard", reason: reason.into() }
}

/// A peer's published key and port (hostile input): the key must be 32 bytes of base64, the port non-zero.
fn peer_key(data: &BackendData) -> Result<(PublicKey, u16), PeerError> {
    let BackendData::Wireguard { public_key, port } = data else { return Err("lease has no WireGuard key".into()) };
    let key = PublicKey::from_base64(public_key)
        .map_err(|_| format!("WireGuard public key {public_key:?} is not a base64 key of 32 bytes"))?;
    if *port == 0 {
        return Err("WireGuard port 0".into());
    }
    Ok((key, *port))
}

/// The tunnel's peer for one programmed lease.
fn peer_config(lease: &Lease) -> Result<PeerConfig, PeerError> {
    let (public_key, port) = peer_key(&lease.backend_data)?;
    let mut allowed_ips = vec![IpNet::V4(lease.subnet)];
    allowed_ips.extend(lease.subnet6.map(IpNet::V6));
    Ok(PeerConfig { public_key, endpoint: SocketAddr::new(lease.node_ip, port), allowed_ips, keepalive: None })
}

impl Wireguard {
    fn start(&mut self) -> Result<(), BackendError> {
        let key =
            keys::load_or_create(&self.state_dir).map_err(|e| err(format!("key in {:?}: {e}", self.state_dir)))?;
        self.rotations = rotate::Rotations::resume(&self.state_dir, std::time::Instant::now());
        let mut cfg = TunnelConfig::new(self.ifname.clone(), key, self.port, self.mtu);
        // Read-only: configuration comes from the store alone, whatever a `wg set` asks.
        cfg.uapi = self.uapi.clone();
        let tunnel = match Tunnel::start(cfg.clone()) {
            // `wg show` is a convenience; pod traffic must not wait for it (e.g. the path is another
            // process's, which the socket answering tells us).
            Err(TunnelError::Uapi(e)) => {
                tracing::warn!(socket = ?cfg.uapi, "no `wg show` socket: {e}");
                cfg.uapi = None;
                Tunnel::start(cfg)
            }
            other => other,
        }
        .map_err(|e| err(e.to_string()))?;
        tracing::info!(device = %self.ifname, port = tunnel.listen_port(), public_key = %tunnel.public_key(), "WireGuard device up");
        if let Err(e) = rotate::write_public_key(&self.state_dir, &tunnel.public_key()) {
            tracing::warn!("{e}");
        }
        self.ifindex = Some(tunnel.ifindex()).filter(|&i| i != 0);
        self.tunnel = Some(tunnel);
        Ok(())
    }
}

#[async_trait]
impl Backend for Wireguard {
    fn name(&self) -> &'static str {
        "wireguard"
    }

    fn mtu_overhead(&self, ipv6_underlay: bool) -> u32 {
        if ipv6_underlay {
            OVERHEAD_V6
        } else {
            OVERHEAD_V4
        }
    }

    fn udp_port(&self) -> Option<u16> {
        Some(self.port)
    }

    /// The device carries no addresses: routes reach it through onlink nexthops.
    fn set_subnets(&mut self, _: Ipv4Net, _: Option<Ipv6Net>) {}

    async fn ensure_device(&mut self, _: &dyn Dataplane) -> Result<BackendData, BackendError> {
        // Deleted (or recreated) behind our back: our queues serve a device that is gone; start again.
        if let Some(t) = &self.tunnel {
            if Some(t.ifindex()).filter(|&i| i != 0) != self.ifindex {
                tracing::warn!(device = %self.ifname, "WireGuard device changed behind us; restarting it");
                if let Some(t) = self.tunnel.take() {
                    t.stop();
                }
            }
        }
        if self.tunnel.is_none() {
            self.start()?;
        }
        let t = self.tunnel.as_ref().expect("started above");
        if let Some(every) = self.rotate_every {
            rotate::schedule(&self.state_dir, &t.public_key(), every, std::time::SystemTime::now());
        }
        rotate::serve_request(&self.state_dir, t, &mut self.rotations);
        Ok(BackendData::Wireguard { public_key: t.public_key().to_base64(), port: t.listen_port() })
    }

    fn device_ifindex(&self) -> Option<u32> {
        self.ifindex
    }

    fn validate_peer(&self, data: &BackendData) -> Result<(), PeerError> {
        peer_key(data).map(|_| ())
    }

    fn path_to(&self, _: &LocalNode, _: &Lease) -> PeerPath {
        PeerPath::Tunnel
    }

    fn add_peer(&self, _: &LocalNode, peer: &Peer<'_>, st: &mut OverlayState) -> Result<(), PeerError> {
        let ifindex = self.ifindex.ok_or("no WireGuard device")?;
        for &(dst, id) in &peer.subnets {
            st.add_nexthop(Nexthop { id, gateway: dst.network(), ifindex, onlink: true });
            st.add_route(Route { dst, target: RouteTarget::Nexthop(id) });
        }
        Ok(())
    }

    async fn sync_peers(&mut self, peers: &[&Lease]) -> Result<(), BackendError> {
        let Some(t) = &self.tunnel else { return Ok(()) };
        let mut desired = Vec::with_capacity(peers.len());
        self.names.clear();
        for lease in peers {
            // Validated before it was programmed; a failure here would be a bug, not input, but skip it anyway.
            match peer_config(lease) {
                Ok(p) => {
                    self.names.insert(p.public_key, lease.node.clone());
                    desired.push(p);
                }
                Err(e) => tracing::warn!(node = %lease.node, "skipping WireGuard peer: {e}"),
            }
        }
        t.set_peers(desired);
        Ok(())
    }

    fn peer_stats(&self) -> Vec<PeerStats> {
        let Some(t) = &self.tunnel else { return Vec::new() };
        t.stats()
            .into_iter()
            .map(|s| PeerStats {
                node: self.names.get(&s.public_key).cloned().unwrap_or_else(|| s.public_key.to_base64()),
                rx_bytes: s.rx_bytes,
                tx_bytes: s.tx_bytes,
                handshake_age_ms: s.handshake_age.map(|d| d.as_millis().try_into().unwrap_or(u64::MAX)),
                decrypt_failures: s.decrypt_failures,
            })
            .collect()
    }

    fn device_drops(&self) -> Option<DeviceDrops> {
        let c = self.tunnel.as_ref()?.counters();
        Some(DeviceDrops {
            unknown_peer: c.unknown_peer,
            unknown_index: c.unknown_index,
            malformed: c.malformed,
            no_route: c.no_route,
        })
    }

    async fn stop(&mut self) {
        if let Some(t) = self.tunnel.take() {
            // Joins the worker threads (each polls with a short timeout); the persistent device stays.
            let _ = tokio::task::spawn_blocking(move || t.stop()).await;
        }
    }

    async fn teardown(&mut self, _: &dyn Dataplane) -> Result<(), BackendError> {
        self.stop().await;
        self.ifindex = None;
        Tunnel::remove_device(&self.ifname, true).map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_data_must_be_a_key_and_a_port() {
        let key = keys::PrivateKey::generate().public_key().to_base64();
        let d = |k: &str, port| BackendData::Wireguard { public_key: k.into(), port };
        assert_eq!(peer_key(&d(&key, 51820)).unwrap().1, 51820);
        assert!(peer_key(&d(&key, 0)).unwrap_err().contains("port 0"));
        assert!(peer_key(&d("not a key", 51820)).unwrap_err().contains("not a base64 key"));
        assert!(peer_key(&d("AAAA", 51820)).unwrap_err().contains("not a base64 key"));
        assert_eq!(peer_key(&BackendData::HostGw).unwrap_err(), "lease has no WireGuard key");
    }

    #[test]
    fn a_peer_is_its_node_ip_port_and_pod_subnets() {
        let key = keys::PrivateKey::generate().public_key();
        let lease = Lease {
            node: "n2".into(),
            subnet: "10.244.2.0/24".parse().unwrap(),
            subnet6: Some("fd00:10:244:2::/80".parse().unwrap()),
            node_ip: "192.168.0.2".parse().unwrap(),
            backend_data: BackendData::Wireguard { public_key: key.to_base64(), port: 51820 },
            expires_at_ms: 0,
        };
        let p = peer_config(&lease).unwrap();
        assert_eq!(p.public_key, key);
        assert_eq!(p.endpoint, "192.168.0.2:51820".parse().unwrap());
        assert_eq!(p.allowed_ips, vec!["10.244.2.0/24".parse().unwrap(), "fd00:10:244:2::/80".parse().unwrap()]);
    }
}
