//! The IPAM pools of one `dataDir`: the default network's (the directory itself) and one per tenant network
//! (`net-<name>/`, see `crate::tenant`). DEL and ADD look for an attachment's reservations in pools other than
//! the one the node file points at today, because the node file may have changed since (a network left it, a
//! namespace moved to another network).
use crate::error::CniError;
use crate::ipam::IpamStore;
use crate::tenant::tenant_pool_dirs;
use std::path::Path;

/// Releases the attachment's reservations in every pool of `data_dir` but `except`, skipping (unlocked, one
/// `getdents` each) the pools that hold no entry of it.
pub fn release_elsewhere(
    data_dir: &Path,
    except: Option<&Path>,
    fsync: bool,
    cid: &str,
    ifname: &str,
) -> Result<(), CniError> {
    let dirs = std::iter::once(data_dir.to_path_buf()).chain(tenant_pool_dirs(data_dir));
    for dir in dirs.filter(|d| Some(d.as_path()) != except) {
        if let Some(store) = IpamStore::open_existing(&dir).map(|s| s.with_sync(fsync)) {
            if store.mentions(cid, ifname)? {
                store.release(cid, ifname)?;
            }
        }
    }
    Ok(())
}
