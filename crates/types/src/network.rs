//! The cluster network config: one document shared by every agent (stored in the store, or given by flag).
//!
//! ```json
//! {"clusterCidr": "10.244.0.0/16", "subnetLen": 24, "backend": {"type": "vxlan", "vni": 1, "port": 8472}}
//! ```
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// Kernel VXLAN tunnel between nodes; nodes on one L2 segment get direct routes when `directRouting`.
    #[default]
    Vxlan,
    /// Plain routes via the remote node IP; needs every node on one L2 segment.
    HostGw,
    /// Encrypted: a userspace WireGuard device (TUN) run by the agent; `port` is its UDP port.
    Wireguard,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendConfig {
    #[serde(rename = "type", default)]
    pub kind: BackendKind,
    #[serde(default = "default_vni")]
    pub vni: u32,
    #[serde(default = "default_port")]
    pub port: u16,
    /// With VXLAN: nodes that share the underlay subnet talk through direct routes instead of the tunnel.
    #[serde(default = "default_true")]
    pub direct_routing: bool,
}

fn default_vni() -> u32 {
    1
}
fn default_port() -> u16 {
    8472
}
fn default_true() -> bool {
    true
}
fn default_subnet_len() -> u8 {
    24
}
fn default_subnet_len6() -> u8 {
    80
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self { kind: BackendKind::Vxlan, vni: 1, port: 8472, direct_routing: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfig {
    pub cluster_cidr: Ipv4Net,
    #[serde(default = "default_subnet_len")]
    pub subnet_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_cidr6: Option<Ipv6Net>,
    #[serde(default = "default_subnet_len6")]
    pub subnet_len6: u8,
    #[serde(default)]
    pub backend: BackendConfig,
    /// Pod MTU override; default: underlay MTU minus the backend's overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkConfigError {
    #[error("subnetLen {len} must be longer than the cluster CIDR prefix /{prefix} and at most /30")]
    SubnetLen { len: u8, prefix: u8 },
    #[error("subnetLen6 {len} must be longer than the IPv6 cluster CIDR prefix /{prefix} and at most /120")]
    SubnetLen6 { len: u8, prefix: u8 },
    #[error("VNI {0} is out of range (1..=16777215)")]
    Vni(u32),
}

impl NetworkConfig {
    pub fn validate(&self) -> Result<(), NetworkConfigError> {
        let p = self.cluster_cidr.prefix_len();
        if self.subnet_len <= p || self.subnet_len > 30 {
            return Err(NetworkConfigError::SubnetLen { len: self.subnet_len, prefix: p });
        }
        if let Some(c6) = self.cluster_cidr6 {
            let p6 = c6.prefix_len();
            if self.subnet_len6 <= p6 || self.subnet_len6 > 120 {
                return Err(NetworkConfigError::SubnetLen6 { len: self.subnet_len6, prefix: p6 });
            }
        }
        if self.backend.vni == 0 || self.backend.vni > 0xff_ffff {
            return Err(NetworkConfigError::Vni(self.backend.vni));
        }
        Ok(())
    }

    /// Number of node subnets the cluster CIDR holds.
    pub fn subnet_count(&self) -> u64 {
        1u64 << (self.subnet_len - self.cluster_cidr.prefix_len()).min(63)
    }

    /// The `i`-th node subnet of the cluster CIDR (IPv4), or None past the end.
    pub fn subnet(&self, i: u64) -> Option<Ipv4Net> {
        self.cluster_cidr.subnets(self.subnet_len).ok()?.nth(i as usize)
    }

    /// The IPv6 subnet paired with IPv4 subnet index `i` (same index, so dual-stack leases stay aligned).
    pub fn subnet6(&self, i: u64) -> Option<Ipv6Net> {
        let c6 = self.cluster_cidr6?;
        let base = u128::from(c6.network());
        let step = 1u128.checked_shl(128 - u32::from(self.subnet_len6))?;
        let addr = base.checked_add(step.checked_mul(i as u128)?)?;
        let net = Ipv6Net::new(addr.into(), self.subnet_len6).ok()?;
        c6.contains(&net).then_some(net)
    }

    /// Index of `subnet` within the cluster CIDR, if it is one of its node subnets.
    pub fn index_of(&self, subnet: Ipv4Net) -> Option<u64> {
        if subnet.prefix_len() != self.subnet_len || !self.cluster_cidr.contains(&subnet) {
            return None;
        }
        let off = u32::from(subnet.network()) - u32::from(self.cluster_cidr.network());
        Some(u64::from(off >> (32 - u32::from(self.subnet_len))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetworkConfig {
        serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16","clusterCidr6":"fd00:10:244::/48"}"#).unwrap()
    }

    #[test]
    fn defaults_and_indexing() {
        let c = cfg();
        c.validate().unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.backend, BackendConfig::default());
        assert_eq!(c.subnet_count(), 256);
        assert_eq!(c.subnet(3).unwrap().to_string(), "10.244.3.0/24");
        assert_eq!(c.index_of("10.244.3.0/24".parse().unwrap()), Some(3));
        assert_eq!(c.index_of("10.245.3.0/24".parse().unwrap()), None);
        assert_eq!(c.subnet6(3).unwrap().to_string(), "fd00:10:244:0:3::/80");
        assert!(c.subnet(256).is_none());
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut c = cfg();
        c.subnet_len = 16;
        assert!(c.validate().is_err());
        c.subnet_len = 24;
        c.backend.vni = 0;
        assert_eq!(c.validate(), Err(NetworkConfigError::Vni(0)));
    }
}
