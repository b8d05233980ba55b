//! The node file: how the agent tells the CNI plugin which pod subnet and MTU this node has.
//!
//! Format (JSON, written atomically with write-to-temp + rename so the plugin never reads half a file):
//! ```json
//! {"subnet": "10.244.3.0/24", "subnet6": "fd00:10:244:3::/64", "mtu": 1450, "clusterCidr": "10.244.0.0/16"}
//! ```
//! `subnet6` and `clusterCidr*` are optional. Default path: [`DEFAULT_PATH`]; the CNI config key `nodeFile` and
//! the agent flag `--node-file` override it (the lab runs several nodes on one host, one file each).
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

pub const DEFAULT_PATH: &str = "/run/weft/node.json";

/// The plugin reads at most this many bytes of node file (a bigger one is an error for every pod), so the
/// agent never writes a bigger one ([`NodeFile::store`] refuses).
pub const MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeFile {
    pub subnet: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_cidr6: Option<Ipv6Net>,
    /// Tenant networks this node serves (see [`crate::tenant`]), with the namespaces already resolved by the
    /// agent (the plugin sees no labels). A namespace listed by none is on the default network above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NodeNetwork>,
    /// Namespaces an admitted tenant network selects but this node does not serve (yet): not ready here, or
    /// refused here (its status says why). The plugin answers "try again later" for their pods instead of
    /// putting them on the default network, which would take them out of their network's isolation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_namespaces: Vec<String>,
}

/// One tenant network as the plugin needs it. Route table and link group are derived from `vni`
/// ([`crate::tenant::NetworkIds`]), never read from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeNetwork {
    pub name: String,
    pub vni: u32,
    /// This node's subnet of the network.
    pub subnet: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    /// The network's CIDRs (a secondary attachment routes them through its gateway).
    pub cidr: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Net>,
    pub mtu: u32,
    /// Namespaces whose pods get addresses from this network on this node.
    pub namespaces: Vec<String>,
}

impl NodeFile {
    /// The tenant network serving `namespace`, if any (else the pod is on the default network).
    pub fn network_of(&self, namespace: &str) -> Option<&NodeNetwork> {
        self.networks.iter().find(|n| n.namespaces.iter().any(|ns| ns == namespace))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeFileError {
    #[error("node file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node file {path} is not valid: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("node file {path}: {bytes} bytes would exceed the plugin's cap of {MAX_BYTES}; not written")]
    TooLarge { path: String, bytes: usize },
}

impl NodeFile {
    pub fn load(path: &Path) -> Result<Self, NodeFileError> {
        let io = |source| NodeFileError::Io { path: path.display().to_string(), source };
        let bytes = std::fs::read(path).map_err(io)?;
        serde_json::from_slice(&bytes)
            .map_err(|source| NodeFileError::Parse { path: path.display().to_string(), source })
    }

    /// The bytes [`NodeFile::store`] writes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("node file serializes")
    }

    /// Writes atomically: a reader sees the old file or the new one, never a torn one. A file the plugin could
    /// not read (more than [`MAX_BYTES`]) is refused and the old one stays.
    pub fn store(&self, path: &Path) -> Result<(), NodeFileError> {
        let io = |source| NodeFileError::Io { path: path.display().to_string(), source };
        let body = self.encode();
        if body.len() > MAX_BYTES {
            return Err(NodeFileError::TooLarge { path: path.display().to_string(), bytes: body.len() });
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reject_unknown() {
        let dir = std::env::temp_dir().join(format!("weft-nodefile-{}", std::process::id()));
        let p = dir.join("node.json");
        let nf = NodeFile {
            subnet: "10.244.3.0/24".parse().unwrap(),
            subnet6: Some("fd00:10:244:3::/64".parse().unwrap()),
            mtu: 1450,
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            cluster_cidr6: None,
            networks: vec![NodeNetwork {
                name: "blue".into(),
                vni: 100,
                subnet: "10.50.3.0/24".parse().unwrap(),
                subnet6: None,
                cidr: "10.50.0.0/16".parse().unwrap(),
                cidr6: None,
                mtu: 1450,
                namespaces: vec!["team-a".into()],
            }],
            pending_namespaces: vec!["team-b".into()],
        };
        nf.store(&p).unwrap();
        assert_eq!(NodeFile::load(&p).unwrap(), nf);
        assert_eq!(nf.network_of("team-a").map(|n| n.vni), Some(100));
        assert!(nf.network_of("team-b").is_none());
        // A file the plugin could not read is never written; the previous one stays.
        let mut big = nf.clone();
        big.pending_namespaces = (0..20_000).map(|i| format!("{i:0>60}")).collect();
        assert!(matches!(big.store(&p), Err(NodeFileError::TooLarge { .. })));
        assert_eq!(NodeFile::load(&p).unwrap(), nf);
        std::fs::write(&p, br#"{"subnet":"10.0.0.0/24","mtu":1500,"bogus":1}"#).unwrap();
        assert!(matches!(NodeFile::load(&p), Err(NodeFileError::Parse { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
