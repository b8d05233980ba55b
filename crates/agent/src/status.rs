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
    pub programmed: Programmed,
    /// Entries a periodic resync found missing or wrong (deleted behind our back), last time it found any.
    pub last_drift: Vec<String>,
    pub last_drift_at_ms: u64,
    pub last_reconcile_at_ms: u64,
    pub last_error: Option<String>,
    pub ready: bool,
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
