//! The node file manager: keeps `/run/weft/node.json` (what the CNI plugin reads) in step with the lease.
//!
//! Written once at start-up, before any pass (pods can be created as soon as the lease is held); afterwards only
//! when the lease's subnets change (the lease was lost and another subnet acquired): new pods must then get
//! addresses from the new subnet. It does not wait for the peer list.
use super::{Manager, ManagerError, View};
use async_trait::async_trait;
use ipnet::{Ipv4Net, Ipv6Net};
use std::path::{Path, PathBuf};
use weft_types::{Lease, NetworkConfig, NodeFile};

pub struct NodeFileManager {
    path: PathBuf,
    net: NetworkConfig,
    mtu: u32,
    written: Option<(Ipv4Net, Option<Ipv6Net>)>,
}

impl NodeFileManager {
    pub fn new(path: &Path, net: &NetworkConfig, mtu: u32) -> Self {
        Self { path: path.to_path_buf(), net: net.clone(), mtu, written: None }
    }

    /// Writes the node file for `lease` unless the file already says exactly that.
    pub fn write(&mut self, lease: &Lease) -> Result<(), weft_types::node_file::NodeFileError> {
        let nf = NodeFile {
            subnet: lease.subnet,
            subnet6: lease.subnet6,
            mtu: self.mtu,
            cluster_cidr: Some(self.net.cluster_cidr),
            cluster_cidr6: self.net.cluster_cidr6,
            networks: Vec::new(),
        };
        if NodeFile::load(&self.path).ok().as_ref() != Some(&nf) {
            nf.store(&self.path)?;
        }
        self.written = Some((lease.subnet, lease.subnet6));
        Ok(())
    }
}

#[async_trait]
impl Manager for NodeFileManager {
    fn name(&self) -> &'static str {
        "node-file"
    }

    async fn update(&mut self, view: &View<'_>) -> Result<(), ManagerError> {
        if self.written == Some((view.me.subnet, view.me.subnet6)) {
            return Ok(());
        }
        // Not a failed pass: the kernel is fine; the write is retried on the next pass.
        if let Err(e) = self.write(view.me) {
            tracing::error!(error = %e, "writing the node file for the new subnet failed");
        }
        Ok(())
    }

    async fn teardown(&mut self) -> Result<(), ManagerError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ManagerError::Other(format!("removing {}: {e}", self.path.display())))
            }
            _ => Ok(()),
        }
    }
}
