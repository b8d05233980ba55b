//! The node file manager: keeps `/run/weft/node.json` (what the CNI plugin reads) in step with the lease.
//!
//! Written once at start-up, before any pass (pods can be created as soon as the lease is held); afterwards only
//! when the lease's subnets change (the lease was lost and another subnet acquired): new pods must then get
//! addresses from the new subnet. It does not wait for the peer list.
//!
//! The tenant networks' entries (`networks`) are the networks manager's: it hands them over through
//! [`NodeFileWriter`], shared by both, which writes the file whenever either part changes. Until that manager
//! has decided once, the networks of the previous file are kept: a restarting agent must not put a tenant
//! namespace's new pods on the default network for a moment.
use super::{Manager, ManagerError, View};
use async_trait::async_trait;
use ipnet::{Ipv4Net, Ipv6Net};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use weft_types::{Lease, NetworkConfig, NodeFile, NodeNetwork};

/// The node file's two parts (the lease's, the networks'), written together.
pub struct NodeFileWriter {
    path: PathBuf,
    net: NetworkConfig,
    mtu: u32,
    lease: Option<(Ipv4Net, Option<Ipv6Net>)>,
    networks: Vec<NodeNetwork>,
    pending: Vec<String>,
}

pub type SharedNodeFile = Arc<Mutex<NodeFileWriter>>;

impl NodeFileWriter {
    fn write(&self) -> Result<(), weft_types::node_file::NodeFileError> {
        let Some((subnet, subnet6)) = self.lease else { return Ok(()) };
        let nf = NodeFile {
            subnet,
            subnet6,
            mtu: self.mtu,
            cluster_cidr: Some(self.net.cluster_cidr),
            cluster_cidr6: self.net.cluster_cidr6,
            networks: self.networks.clone(),
            pending_namespaces: self.pending.clone(),
        };
        if NodeFile::load(&self.path).ok().as_ref() != Some(&nf) {
            nf.store(&self.path)?;
        }
        Ok(())
    }

    /// The tenant networks the file offers now.
    pub fn networks(&self) -> &[NodeNetwork] {
        &self.networks
    }

    /// Sets both the networks and the pending namespaces in one write (a namespace moving between them is never
    /// in neither, nor counted twice against the size cap); on failure nothing changes.
    pub fn set_offer(
        &mut self,
        networks: Vec<NodeNetwork>,
        pending: Vec<String>,
    ) -> Result<(), weft_types::node_file::NodeFileError> {
        if self.networks == networks && self.pending == pending {
            return Ok(());
        }
        let old = (std::mem::replace(&mut self.networks, networks), std::mem::replace(&mut self.pending, pending));
        self.write().inspect_err(|_| (self.networks, self.pending) = old)
    }
}

pub struct NodeFileManager {
    file: SharedNodeFile,
    written: Option<(Ipv4Net, Option<Ipv6Net>)>,
}

impl NodeFileManager {
    /// `previous`: the node file found at start, whose tenant networks are kept until the networks manager
    /// has decided.
    pub fn new(path: &Path, net: &NetworkConfig, mtu: u32, previous: Option<&NodeFile>) -> Self {
        let networks = previous.map(|p| p.networks.clone()).unwrap_or_default();
        let pending = previous.map(|p| p.pending_namespaces.clone()).unwrap_or_default();
        let w = NodeFileWriter { path: path.to_path_buf(), net: net.clone(), mtu, lease: None, networks, pending };
        Self { file: Arc::new(Mutex::new(w)), written: None }
    }

    pub fn shared(&self) -> SharedNodeFile {
        self.file.clone()
    }

    /// Writes the node file for `lease` unless the file already says exactly that.
    pub fn write(&mut self, lease: &Lease) -> Result<(), weft_types::node_file::NodeFileError> {
        let mut w = self.file.lock().unwrap_or_else(|e| e.into_inner());
        w.lease = Some((lease.subnet, lease.subnet6));
        w.write()?;
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
        let path = self.file.lock().unwrap_or_else(|e| e.into_inner()).path.clone();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ManagerError::Other(format!("removing {}: {e}", path.display())))
            }
            _ => Ok(()),
        }
    }
}
