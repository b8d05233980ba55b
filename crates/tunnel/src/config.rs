//! What the caller gives the tunnel (device and peers) and what it reads back (stats).

use crate::keys::{PrivateKey, PublicKey};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// The device and the local end. `Tunnel::start` takes it.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// TUN interface name (created, or re-attached when it exists as a persistent device).
    pub ifname: String,
    pub private_key: PrivateKey,
    /// UDP port for the underlay; 0 picks a free one (see `Tunnel::listen_port`).
    pub listen_port: u16,
    /// Inner MTU set on the interface (underlay MTU − 60 over IPv4, − 80 over IPv6).
    pub mtu: u32,
    /// TUN queues = worker threads; 0 means one per CPU.
    pub queues: usize,
    /// Keep the TUN device when the process exits, so a restarted process re-attaches without the kernel
    /// dropping routes, addresses or the inner TCP connections.
    pub persist: bool,
    /// Kernel offloads: virtio-net header with TSO/USO on the TUN, GSO/GRO on the UDP sockets.
    pub offload: bool,
    /// Serve the cross-platform UAPI (read-only `get=1`) on this socket, for `wg show`; `wg` looks in
    /// `/var/run/wireguard/<ifname>.sock` ([`crate::uapi::default_path`]). That path is not per network
    /// namespace, so several nodes on one host need distinct interface names (or `None`).
    pub uapi: Option<std::path::PathBuf>,
}

impl TunnelConfig {
    /// The defaults the agent wants: persistent, offloaded, one queue per CPU, UAPI on the path `wg` looks at.
    pub fn new(ifname: impl Into<String>, private_key: PrivateKey, listen_port: u16, mtu: u32) -> Self {
        let ifname = ifname.into();
        TunnelConfig {
            ifname: ifname.clone(),
            private_key,
            listen_port,
            mtu,
            queues: 0,
            persist: true,
            offload: true,
            uapi: Some(crate::uapi::default_path(&ifname)),
        }
    }
}

/// One remote node. `Tunnel::set_peers` takes the whole desired set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub endpoint: SocketAddr,
    /// Inner source addresses accepted from this peer and destinations routed to it (cryptokey routing).
    pub allowed_ips: Vec<IpNet>,
    /// Persistent keepalive in seconds (for peers behind NAT); `None` for none.
    #[serde(default)]
    pub keepalive: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerStats {
    pub public_key: PublicKey,
    pub endpoint: SocketAddr,
    /// Wall-clock time of the last completed handshake (either direction), `None` before the first.
    pub last_handshake: Option<SystemTime>,
    /// Age of that handshake.
    pub handshake_age: Option<Duration>,
    /// Handshakes completed since the peer was added.
    pub handshakes: u64,
    /// Inner bytes decrypted from / encrypted to this peer.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets for one of this peer's sessions that failed authentication (forged, corrupted, replayed).
    pub decrypt_failures: u64,
    /// Authenticated packets whose inner source is not in the peer's allowed IPs (dropped).
    pub spoofed_source: u64,
}

/// Device-wide counters: packets that matched no peer at all never reach the inner side.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TunnelCounters {
    /// Handshake initiations we could not attribute to a configured peer (unknown key or not for us).
    pub unknown_peer: u64,
    /// Data/response packets carrying a session index we never issued.
    pub unknown_index: u64,
    /// Datagrams that are not WireGuard messages.
    pub malformed: u64,
    /// Inner packets from the TUN with no peer for their destination.
    pub no_route: u64,
}
