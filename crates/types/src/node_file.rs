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
}

impl NodeFile {
    pub fn load(path: &Path) -> Result<Self, NodeFileError> {
        let io = |source| NodeFileError::Io { path: path.display().to_string(), source };
        let bytes = std::fs::read(path).map_err(io)?;
        serde_json::from_slice(&bytes)
            .map_err(|source| NodeFileError::Parse { path: path.display().to_string(), source })
    }

    /// Writes atomically: a reader sees the old file or the new one, never a torn one.
    pub fn store(&self, path: &Path) -> Result<(), NodeFileError> {
        let io = |source| NodeFileError::Io { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        let body = serde_json::to_vec_pretty(self).expect("node file serializes");
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
        };
        nf.store(&p).unwrap();
        assert_eq!(NodeFile::load(&p).unwrap(), nf);
        std::fs::write(&p, br#"{"subnet":"10.0.0.0/24","mtu":1500,"bogus":1}"#).unwrap();
        assert!(matches!(NodeFile::load(&p), Err(NodeFileError::Parse { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
