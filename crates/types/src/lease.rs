//! A node's lease on a pod subnet, as the store publishes it to every other node.
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// Backend data is opaque to the store: a versioned JSON blob the backend alone interprets
/// (VXLAN: `{"v":1,"vtepMac":"..."}`). New backends add fields without a store migration.
pub type BackendData = serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub node: String,
    pub subnet: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    /// The node's underlay address: VXLAN destination, host-gw next hop.
    pub node_ip: IpAddr,
    #[serde(default)]
    pub backend_data: BackendData,
    /// Unix time (ms) when the lease lapses unless renewed. Informational for etcd, whose server enforces TTLs.
    #[serde(default)]
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    pub node: String,
    pub node_ip: IpAddr,
    pub backend_data: BackendData,
    pub ttl: Duration,
    /// The subnet this node had before (from its node file): taken again if still free.
    pub hint: Option<Ipv4Net>,
}
