//! Backends: how pod traffic crosses from one node to another. One module per backend, one trait for all.
//!
//! A backend owns everything that differs between ways of carrying traffic: how many bytes it adds to a packet
//! (the pod MTU), its device (create, repair, remove), what it publishes in the lease for peers
//! ([`BackendData`], tagged with its name), how it judges a peer's published data, the UDP port the firewall
//! must protect, and how one peer becomes kernel entries. Everything the backends share stays outside them, as
//! flannel's route loop does: the store watch, the coalescing and resync loop (`crate::supervisor`), the diff and
//! apply (`crate::reconcile`), and the per-peer checks every backend needs (`crate::desired`). So a backend is
//! small, pure where it decides, and adding one touches no other backend:
//! 1. a variant in `weft_types::network::BackendKind` (its `backend.type`) and one in `BackendData`;
//! 2. a module here implementing [`Backend`];
//! 3. one line in [`REGISTRY`].
//!
//! Userspace datapaths (a TUN device served by the agent itself) fit the same trait: the device is started in
//! [`Backend::ensure_device`] (which may spawn its task), peers are handed to it in [`Backend::sync_peers`] after
//! every reconcile, [`Backend::peer_stats`] reports per-peer counters and [`Backend::device_drops`] what matched
//! no peer at all, and [`Backend::stop`] ends its task when the agent exits (without uninstall, the kernel side
//! stays, like the VXLAN device does).
use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::IpAddr;
use std::path::Path;
use weft_dataplane::{Dataplane, DataplaneError, OverlayState, Scope, UnderlayInfo};
use weft_types::network::{BackendConfig, BackendKind};
use weft_types::{BackendData, Lease};

pub mod hostgw;
pub mod vxlan;
pub mod wireguard;

/// What the backends need to know about this node.
#[derive(Debug, Clone)]
pub struct LocalNode {
    pub name: String,
    pub node_ip: IpAddr,
    pub underlay: UnderlayInfo,
}

/// How one peer is reached, for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPath {
    /// Encapsulated through the backend's device.
    Tunnel,
    /// Routed via the peer's node IP on the underlay link.
    Direct,
}

impl PeerPath {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerPath::Tunnel => "tunnel",
            PeerPath::Direct => "direct",
        }
    }
}

/// A peer that passed the checks every backend shares (not ourselves, subnet inside the cluster CIDR, node IP of
/// our underlay's family), with the prefixes to route to it and their stable nexthop ids.
#[derive(Debug, Clone)]
pub struct Peer<'a> {
    pub lease: &'a Lease,
    /// The IPv4 subnet first, then the IPv6 one when the cluster is dual-stack.
    pub subnets: Vec<(IpNet, u32)>,
}

/// Per-peer counters a backend with its own datapath keeps (userspace devices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub node: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Milliseconds since the peer's last handshake, for backends that have one.
    pub handshake_age_ms: Option<u64>,
    /// Packets for one of the peer's sessions that failed authentication (forged, corrupted, replayed).
    pub decrypt_failures: u64,
}

/// Device-wide drops of a datapath the backend runs itself: packets that belong to no peer, so no per-peer
/// counter sees them (an attacker without a configured key shows up only here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceDrops {
    /// Handshake initiations from a static key no configured peer has (or not addressed to our key).
    pub unknown_peer: u64,
    /// Packets naming a session index this node never issued (stale sessions, replays of old ones, forgeries).
    pub unknown_index: u64,
    /// Datagrams on the port that are not WireGuard messages.
    pub malformed: u64,
    /// Packets from local pods with no peer for their destination.
    pub no_route: u64,
}

impl DeviceDrops {
    /// (metric label `reason`, count), in a fixed order.
    pub fn by_reason(&self) -> [(&'static str, u64); 4] {
        [
            ("unknown_peer", self.unknown_peer),
            ("unknown_index", self.unknown_index),
            ("malformed", self.malformed),
            ("no_route", self.no_route),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("dataplane: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("backend {backend}: {reason}")]
    Device { backend: &'static str, reason: String },
    #[error("backend type {0:?} has no implementation in this weftd")]
    NotRegistered(BackendKind),
}

/// Why a peer cannot be programmed; the peer is skipped and reported, the others go on.
pub type PeerError = String;

#[async_trait]
pub trait Backend: Send + Sync {
    /// The `backend.type` name, as in the config and in lease data (`vxlan`, `host-gw`).
    fn name(&self) -> &'static str;
    /// Bytes the backend adds to every packet between nodes, over an IPv4 or an IPv6 underlay.
    fn mtu_overhead(&self, ipv6_underlay: bool) -> u32;
    /// The UDP port tunnel packets arrive on: the firewall admits only node IPs to it and keeps it out of
    /// conntrack. None when the backend receives nothing of its own.
    fn udp_port(&self) -> Option<u16>;
    /// The node's pod subnets (the device carries their gateway addresses). Called before the lease is known (with
    /// the node file's subnets) and whenever the lease changes; cheap and idempotent.
    fn set_subnets(&mut self, subnet: Ipv4Net, subnet6: Option<Ipv6Net>);
    /// Creates the device or makes it match (idempotent; every pass), and returns the data to publish. A device
    /// recreated behind our back may publish new data (VXLAN: a new MAC), which the lease then carries.
    async fn ensure_device(&mut self, dp: &dyn Dataplane) -> Result<BackendData, BackendError>;
    /// The device's ifindex (None without one): a change between passes means it was recreated.
    fn device_ifindex(&self) -> Option<u32>;
    /// Where this backend's neighbour and FDB entries live when reading the kernel.
    fn scope(&self) -> Scope {
        Scope { vxlan_ifindex: None }
    }
    /// Judges a peer's published data (hostile input: a store entry anyone with store access could write).
    fn validate_peer(&self, data: &BackendData) -> Result<(), PeerError>;
    /// How `peer` is reached from `local`.
    fn path_to(&self, local: &LocalNode, peer: &Lease) -> PeerPath;
    /// The kernel entries for one peer (pure). Called only for peers that passed [`Backend::validate_peer`].
    fn add_peer(&self, local: &LocalNode, peer: &Peer<'_>, st: &mut OverlayState) -> Result<(), PeerError>;
    /// Hands the programmed peers to a datapath the backend runs itself (keys, endpoints). Kernel backends have
    /// nothing to do here.
    async fn sync_peers(&mut self, _peers: &[&Lease]) -> Result<(), BackendError> {
        Ok(())
    }
    /// Per-peer counters of a datapath the backend runs itself; empty for kernel backends.
    fn peer_stats(&self) -> Vec<PeerStats> {
        Vec::new()
    }
    /// Device-wide drop counters of a datapath the backend runs itself; None for kernel backends.
    fn device_drops(&self) -> Option<DeviceDrops> {
        None
    }
    /// Ends what the backend runs itself (agent exit); the kernel state stays.
    async fn stop(&mut self) {}
    /// Removes the device (uninstall). A missing device is not an error.
    async fn teardown(&mut self, dp: &dyn Dataplane) -> Result<(), BackendError>;
}

/// What a backend is built from.
pub struct Setup<'a> {
    pub config: &'a BackendConfig,
    pub local: &'a LocalNode,
    /// Device name (`--vxlan-device`).
    pub device: &'a str,
    /// Where a backend may keep files of its own (keys).
    pub state_dir: &'a Path,
    /// Where a backend may serve a control socket for standard tools (`wg show`); `None`: serve none.
    pub uapi_dir: Option<&'a Path>,
    /// A backend with a key pair rotates it once it is this old; `None`: on request only.
    pub key_rotation: Option<std::time::Duration>,
}

type Build = fn(&Setup<'_>) -> Result<Box<dyn Backend>, BackendError>;

/// `backend.type` → constructor. Adding a backend adds one line here.
pub const REGISTRY: &[(BackendKind, Build)] = &[
    (BackendKind::Vxlan, vxlan::build),
    (BackendKind::HostGw, hostgw::build),
    (BackendKind::Wireguard, wireguard::build),
];

/// Builds the backend the network config names.
pub fn build(setup: &Setup<'_>) -> Result<Box<dyn Backend>, BackendError> {
    let kind = setup.config.kind;
    let (_, make) = REGISTRY.iter().find(|(k, _)| *k == kind).ok_or(BackendError::NotRegistered(kind))?;
    make(setup)
}

/// A route to `dst` via the peer's node IP on the underlay (host-gw, VXLAN direct routing).
pub fn add_direct(st: &mut OverlayState, local: &LocalNode, peer: &Lease, dst: IpNet, id: u32) {
    use weft_dataplane::{Nexthop, Route, RouteTarget};
    st.add_nexthop(Nexthop { id, gateway: peer.node_ip, ifindex: local.underlay.ifindex, onlink: false });
    st.add_route(Route { dst, target: RouteTarget::Nexthop(id) });
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn local() -> LocalNode {
        LocalNode {
            name: "n1".into(),
            node_ip: "192.168.0.1".parse().unwrap(),
            underlay: UnderlayInfo {
                ifindex: 2,
                name: "eth0".into(),
                mtu: 1500,
                network: "192.168.0.1/24".parse().unwrap(),
            },
        }
    }

    fn built(kind: BackendKind) -> Result<Box<dyn Backend>, BackendError> {
        let config = BackendConfig { kind, ..BackendConfig::default() };
        let local = local();
        build(&Setup {
            config: &config,
            local: &local,
            device: "weft.1",
            state_dir: Path::new("/nonexistent"),
            uapi_dir: None,
            key_rotation: None,
        })
    }

    #[test]
    fn registry_builds_the_configured_backend() {
        let vx = built(BackendKind::Vxlan).unwrap();
        assert_eq!(
            (vx.name(), vx.mtu_overhead(false), vx.mtu_overhead(true), vx.udp_port()),
            ("vxlan", 50, 70, Some(8472))
        );
        let hg = built(BackendKind::HostGw).unwrap();
        assert_eq!((hg.name(), hg.mtu_overhead(false), hg.mtu_overhead(true), hg.udp_port()), ("host-gw", 0, 0, None));
    }

    #[test]
    fn registry_names_match_the_config_spelling_once_each() {
        let mut seen = Vec::new();
        for (kind, _) in REGISTRY {
            assert!(!seen.contains(kind), "{kind:?} registered twice");
            seen.push(*kind);
            let b = built(*kind).unwrap();
            // The name a backend reports is the `backend.type` that selects it.
            assert_eq!(serde_json::to_value(kind).unwrap(), b.name(), "{kind:?}");
            let cfg: BackendConfig = serde_json::from_value(serde_json::json!({"type": b.name()})).unwrap();
            assert_eq!(cfg.kind, *kind);
        }
    }

    #[test]
    fn each_backend_accepts_only_its_own_lease_data() {
        let vx = built(BackendKind::Vxlan).unwrap();
        assert!(vx.validate_peer(&BackendData::Vxlan { vtep_mac: "02:00:00:00:00:01".into() }).is_ok());
        assert!(vx.validate_peer(&BackendData::HostGw).is_err());
        let hg = built(BackendKind::HostGw).unwrap();
        assert!(hg.validate_peer(&BackendData::HostGw).is_ok());
        // host-gw routes via the node IP whatever a peer publishes (as before the tag: it ignored the data).
        assert!(hg.validate_peer(&BackendData::Vxlan { vtep_mac: "x".into() }).is_ok());
    }
}
