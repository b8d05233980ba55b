//! CHECK: the attachment described by prevResult must still be whole — its addresses reserved in IPAM for this
//! very attachment, and in the kernel the pod interface (veth, MAC, MTU, up), its addresses, default routes and
//! gateway neighbours, the host veth as its peer (in its network's link group), the host routes (in its
//! network's table) and neighbours. Every problem is reported.
//!
//! Which network the attachment is on comes from its reservation records (name and VNI), not from the node
//! file: a tenant network that has left the node file is still checked against its own table and group.
use super::{netns_error, Ctx};
use crate::command::Attach;
use crate::error::CniError;
use crate::ipam::IpamStore;
use crate::plan::{self, Subnets};
use crate::spec::CniResult;
use crate::tenant::{tenant_pool_dirs, NetworkRef, POOL_PREFIX};
use std::net::IpAddr;
use weft_dataplane::pod::{compare, PodNet};

/// Where an attachment's reservations are: the pool's directory (for messages), the addresses, its network.
struct Held {
    dir: std::path::PathBuf,
    ips: Vec<IpAddr>,
    network: Option<NetworkRef>,
}

pub fn check<P: PodNet>(ctx: &Ctx<P>, a: &Attach, prev: &CniResult) -> Result<(), CniError> {
    let held = locate(a)?;
    let mtu = match &held.network {
        None => Subnets::resolve(&a.conf, ctx.load_node_file)?.mtu,
        Some(n) => tenant_mtu(ctx, a, prev, n)?,
    };
    let spec = plan::check_spec(&a.ids(), prev, mtu, held.network.as_ref())?;
    let netns = a.netns.as_deref().expect("env validation: CHECK has CNI_NETNS");
    let ns = ctx.pod.open_netns(netns).map_err(|e| netns_error(netns, e))?;
    let mut problems: Vec<String> = spec
        .addrs
        .iter()
        .filter(|p| !held.ips.contains(&p.ip))
        .map(|p| format!("address {} is not reserved for this attachment in {}", p.ip, held.dir.display()))
        .collect();
    problems.extend(compare(&spec, &ctx.pod.observe(&ns, &spec)?));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::CheckFailed { what: format!("{}/{}", a.container_id, a.ifname), problems })
    }
}

/// The pool that holds the attachment: the default one, else the first tenant pool with a reservation of it.
/// Nothing anywhere: the default pool, empty (CHECK then reports every address as not reserved).
fn locate(a: &Attach) -> Result<Held, CniError> {
    let (cid, ifname) = (&a.container_id, &a.ifname);
    let default = Held { dir: a.conf.data_dir.clone(), ips: Vec::new(), network: None };
    let Some(store) = IpamStore::open_existing(&a.conf.data_dir) else { return Ok(default) };
    let ips = store.addresses_of(cid, ifname)?;
    if !ips.is_empty() {
        return Ok(Held { ips, ..default });
    }
    for dir in tenant_pool_dirs(&a.conf.data_dir) {
        let Some(store) = IpamStore::open_existing(&dir) else { continue };
        let ips = store.addresses_of(cid, ifname)?;
        if ips.is_empty() {
            continue;
        }
        let pool_name = dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix(POOL_PREFIX));
        let network = match store.record_of(cid, ifname)? {
            Some(r) => match (r.network, r.vni) {
                (Some(name), Some(vni)) if Some(name.as_str()) == pool_name => NetworkRef { name, vni },
                _ => {
                    return Err(CniError::Io(format!(
                        "reservation of {cid}/{ifname} in {} does not name this pool's network and VNI",
                        dir.display()
                    )))
                }
            },
            None => {
                return Err(CniError::Io(format!(
                    "the reservation record of {cid}/{ifname} in {} is unreadable: its network's VNI is unknown",
                    dir.display()
                )))
            }
        };
        return Ok(Held { dir, ips, network: Some(network) });
    }
    Ok(default)
}

/// The MTU a tenant attachment should have: the config's `mtu`, else that of the node file's entry for the
/// same network (name and VNI), else, once the network has left the node file (or the file is unreadable),
/// the MTU the ADD result reported for the pod interface.
fn tenant_mtu<P: PodNet>(ctx: &Ctx<P>, a: &Attach, prev: &CniResult, n: &NetworkRef) -> Result<u32, CniError> {
    if let Some(mtu) = a.conf.mtu {
        return Ok(mtu);
    }
    if let crate::config::SubnetSource::NodeFile(path) = &a.conf.subnets {
        if let Ok(nf) = (ctx.load_node_file)(path) {
            let entry = nf.networks.iter().find(|e| e.name == n.name && e.vni == n.vni);
            if let Some(mtu) = entry.map(|e| e.mtu).filter(|m| (68..=65535).contains(m)) {
                return Ok(mtu);
            }
        }
    }
    prev.interfaces.iter().find(|i| i.name == a.ifname && i.sandbox.is_some()).and_then(|i| i.mtu).ok_or_else(|| {
        CniError::InvalidConfig(format!(
            "network {} is no longer in the node file and prevResult gives no MTU for {}",
            n.name, a.ifname
        ))
    })
}
