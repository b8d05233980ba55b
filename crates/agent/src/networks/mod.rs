//! Tenant networks on this node (issue 11): the pure parts and the few inputs they need from files and the store.
//!
//! - [`desired`]: store networks + namespaces + leases → kernel state, node-file entries, statuses (pure);
//! - [`slots`]: the node-local fwmark slot of each network, recovered from the kernel on restart (pure);
//! - [`budget`]: which admitted networks fit in the node file the plugin can read (pure);
//! - here: reading store objects (one bad object skipped and named, the rest used), counting the addresses
//!   local pods hold in a network's CNI pool, and the file that remembers which networks have kernel state
//!   (so a network deleted while the agent was down still drains).
//!
//! The manager that runs them on the supervisor's loop is `crate::manager::networks`.
pub mod budget;
pub mod desired;
pub mod slots;

use crate::follow::Source;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weft_store::{Object, ObjectEntry, ObjectKind, Revision, Snapshot, Store, StoreError, WatchStream};
use weft_types::tenant::{admit_networks_in, TenantNetwork};
use weft_types::NetworkConfig;

/// Follows one kind of store object (networks, namespaces).
pub struct Objects(pub Arc<dyn Store>, pub ObjectKind);

impl Source<Object> for Objects {
    fn list(&self) -> BoxFuture<'_, Result<Snapshot<Object>, StoreError>> {
        self.0.objects(self.1)
    }
    fn watch(&self, after: Revision) -> BoxFuture<'_, Result<WatchStream<Object>, StoreError>> {
        self.0.watch_objects(self.1, after)
    }
    fn key(&self, o: &Object) -> String {
        o.0.clone()
    }
    fn what(&self) -> &'static str {
        self.1.as_str()
    }
}

pub fn same(a: &Object, b: &Object) -> bool {
    a.1 == b.1
}

/// Follows one kind of store object with its creation order (networks: the oldest wins a conflict).
pub struct Entries(pub Arc<dyn Store>, pub ObjectKind);

impl Source<ObjectEntry> for Entries {
    fn list(&self) -> BoxFuture<'_, Result<Snapshot<ObjectEntry>, StoreError>> {
        self.0.object_entries(self.1)
    }
    fn watch(&self, after: Revision) -> BoxFuture<'_, Result<WatchStream<ObjectEntry>, StoreError>> {
        self.0.watch_object_entries(self.1, after)
    }
    fn key(&self, o: &ObjectEntry) -> String {
        o.key.clone()
    }
    fn what(&self) -> &'static str {
        self.1.as_str()
    }
}

pub fn same_entry(a: &ObjectEntry, b: &ObjectEntry) -> bool {
    a.value == b.value && a.created == b.created
}

/// Store networks → the admitted ones, **oldest first** (the store's creation order, then key), and one
/// message per refused object, naming its key. Of two networks claiming one VNI or one namespace the older
/// keeps it, so a newer object cannot take a running network's VNI or namespaces by its name.
pub fn parse_networks<'a>(
    objects: impl IntoIterator<Item = &'a ObjectEntry>,
    default: &NetworkConfig,
) -> (Vec<TenantNetwork>, Vec<String>) {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    let mut objects: Vec<&ObjectEntry> = objects.into_iter().collect();
    objects.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.key.cmp(&b.key)));
    for ObjectEntry { key, value: v, .. } in objects {
        match serde_json::from_value::<TenantNetwork>(v.clone()) {
            Ok(n) if n.name != *key => errors.push(format!("network {key}: names itself {:?}", n.name)),
            Ok(n) => parsed.push(n),
            Err(e) => errors.push(format!("network {key}: {e}")),
        }
    }
    let (ok, refused) = admit_networks_in(parsed, default);
    errors.extend(refused.into_iter().map(|e| format!("network refused: {e}")));
    (ok, errors)
}

/// Store namespaces → name → labels; a bad object is skipped and named.
pub fn parse_namespaces<'a>(
    objects: impl IntoIterator<Item = &'a Object>,
) -> (BTreeMap<String, BTreeMap<String, String>>, Vec<String>) {
    let mut errors = Vec::new();
    let mut out = BTreeMap::new();
    for (key, v) in objects {
        match serde_json::from_value::<weft_policy::Namespace>(v.clone()).map_err(|e| e.to_string()) {
            Ok(n) => match n.validate() {
                Ok(()) => {
                    out.insert(n.name, n.labels);
                }
                Err(e) => errors.push(format!("namespace {key}: {e}")),
            },
            Err(e) => errors.push(format!("namespace {key}: {e}")),
        }
    }
    (out, errors)
}

/// Prefix of a tenant network's pool directory in the CNI's `dataDir` (crates/cni/src/tenant.rs, same name).
pub const POOL_PREFIX: &str = "net-";

/// The CNI's pool directory of a network (`<dataDir>/net-<name>/`, one reservation file per address).
pub fn pool_dir(cni_data_dir: &Path, network: &str) -> PathBuf {
    cni_data_dir.join(format!("{POOL_PREFIX}{network}"))
}

/// Addresses held in a pool: (IPv4, all). A missing directory holds none. Reservation files are named by
/// their address (see crates/cni/src/ipam/store.rs); index entries, temp files, the lock and hints are not.
pub fn held(cni_data_dir: &Path, network: &str) -> (u32, u32) {
    let Ok(dir) = std::fs::read_dir(pool_dir(cni_data_dir, network)) else { return (0, 0) };
    let (mut v4, mut all) = (0u32, 0u32);
    for e in dir.flatten() {
        if let Ok(ip) = e.file_name().to_string_lossy().parse::<std::net::IpAddr>() {
            all += 1;
            v4 += u32::from(ip.is_ipv4());
        }
    }
    (v4, all)
}

/// Networks with kernel state on this node, remembered across restarts (`<state dir>/networks.json`).
pub fn load_known(state_dir: &Path) -> Vec<TenantNetwork> {
    let Ok(bytes) = std::fs::read(state_dir.join("networks.json")) else { return vec![] };
    match serde_json::from_slice::<Vec<TenantNetwork>>(&bytes) {
        // Our own file, but checked like store input: it decides what is kept in the kernel.
        Ok(v) => v.into_iter().filter(|n| n.validate().is_ok()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "networks.json does not parse; ignoring it");
            vec![]
        }
    }
}

pub fn store_known(state_dir: &Path, nets: &[TenantNetwork]) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!("networks.json.tmp.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(nets).expect("networks serialize"))?;
    std::fs::rename(&tmp, state_dir.join("networks.json"))
}

#[cfg(test)]
pub(crate) mod tests;
