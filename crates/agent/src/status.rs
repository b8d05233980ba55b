//! What the agent knows about itself, shared between its loops, the HTTP endpoints and `status.json`.
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub node: String,
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    pub node_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
    /// "tunnel" or "direct".
    pub path: String,
    /// Counters of a datapath the agent runs itself (the WireGuard backend); absent for kernel backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelPeerStatus>,
}

/// One peer as the agent's own datapath sees it (WireGuard: the session with that node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelPeerStatus {
    /// Milliseconds since the last completed handshake; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_age_ms: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets for the peer's sessions that failed authentication (forged, corrupted, replayed).
    pub decrypt_failures: u64,
}

/// A stored lease admission refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedPeer {
    /// Where it is stored (etcd key, SQLite node, Kubernetes Node): what to delete.
    pub key: String,
    /// The node its value names, if it decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub node: String,
    pub node_ip: String,
    pub backend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
    pub mtu: u32,
    pub lease_expires_at_ms: u64,
    pub store_up: bool,
    pub peers: Vec<PeerStatus>,
    /// Peers whose lease we could not program, with the reason.
    pub skipped_peers: Vec<String>,
    /// Stored leases refused by admission (undecodable, disagreeing with their key, overlapping an older one,
    /// claiming this node's subnet, ...): never programmed.
    #[serde(default)]
    pub rejected_peers: Vec<RejectedPeer>,
    pub programmed: Programmed,
    /// Entries a periodic resync found missing or wrong (deleted behind our back), last time it found any.
    pub last_drift: Vec<String>,
    pub last_drift_at_ms: u64,
    pub last_reconcile_at_ms: u64,
    pub last_error: Option<String>,
    pub ready: bool,
    #[serde(default)]
    pub policy: PolicyStatus,
    /// Packets from local pods dropped for a source address that is not theirs (`inet weft` counter `spoofed`).
    #[serde(default)]
    pub spoofed_dropped: u64,
    /// Packets from pods to the agent's HTTP port, dropped (`agent_port_rejected`).
    #[serde(default)]
    pub agent_port_rejected: u64,
    /// Packets the agent's own datapath (WireGuard) dropped because they belong to no peer; absent for kernel
    /// backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_dropped: Option<crate::backend::DeviceDrops>,
    /// Tenant networks on this node (see `crate::manager::networks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkStatus>,
    /// Store networks and namespaces that were refused (skipped), and other tenant-network problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_errors: Vec<String>,
}

/// One tenant network on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The node-local fwmark slot (mark `slot << 24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    pub used: u32,
    pub capacity: u32,
    /// Peer nodes programmed for this network.
    pub peers: usize,
    /// Deleted from the store, kept while local pods hold addresses.
    #[serde(default)]
    pub draining: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the policy engine enforces on this node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    pub local_pods: usize,
    /// Local pods with addresses, in `@ready`: their traffic is allowed past the new-pod default-deny.
    pub ready_pods: usize,
    /// `namespace/name@digest` of every policy compiled into the table.
    pub policies: Vec<String>,
    /// Digest of every pod, namespace and policy the table was compiled from (see `policy::model_digest`).
    #[serde(default)]
    pub model_digest: String,
    pub rules: usize,
    pub elements: usize,
    /// "full" (table replaced) or "incremental" (set elements only).
    pub last_mode: String,
    pub last_apply_us: u64,
    pub applied_at_ms: u64,
    /// Store objects that could not be parsed (skipped).
    pub errors: Vec<String>,
    /// Local pods compiled with the addresses the plugin reserved for them, their Pod object not having them yet.
    #[serde(default)]
    pub from_ipam: usize,
    /// Local pods whose namespace moved to another network under them (see `stranded`): cut off, fail closed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stranded: Vec<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Programmed {
    pub routes: usize,
    pub nexthops: usize,
    pub neighbours: usize,
    pub fdb: usize,
}

pub type SharedStatus = Arc<RwLock<Status>>;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Writes status.json atomically (rename), for `weftctl status` and the lab.
pub fn write_file(dir: &std::path::Path, status: &SharedStatus) {
    let body = serde_json::to_vec_pretty(&*status.read().expect("status lock")).expect("status serializes");
    let _ = std::fs::create_dir_all(dir);
    // Two loops write it: a per-thread temp name keeps their renames from colliding.
    let tmp = dir.join(format!("status.json.tmp.{}.{:?}", std::process::id(), std::thread::current().id()));
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join("status.json"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::DeviceDrops;

    #[test]
    fn tunnel_drops_appear_in_the_status_only_for_a_backend_with_its_own_datapath() {
        let kernel = serde_json::to_value(Status::default()).unwrap();
        assert!(kernel.get("tunnelDropped").is_none(), "{kernel}");
        let drops = DeviceDrops { unknown_peer: 4, unknown_index: 3, malformed: 2, no_route: 1 };
        let wg = serde_json::to_value(Status { tunnel_dropped: Some(drops), ..Status::default() }).unwrap();
        assert_eq!(
            wg["tunnelDropped"],
            serde_json::json!({"unknownPeer": 4, "unknownIndex": 3, "malformed": 2, "noRoute": 1})
        );
        // What weftctl reads back is what the agent wrote.
        let back: Status = serde_json::from_value(wg).unwrap();
        assert_eq!(back.tunnel_dropped, Some(drops));
    }
}
