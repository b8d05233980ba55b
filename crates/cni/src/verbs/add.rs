//! ADD: validate → look at the pod's default routes (primary or secondary attachment, see `plan::pod_spec`) →
//! reserve address(es) in the pod's network's pool (the default one, or its tenant network's, chosen by the
//! pod's namespace: `crate::tenant`) → create the veth with its peer in the pod → configure both sides.
//! Any failure after the reservation undoes everything (host veth deleted, addresses released) before the error
//! is returned, so a failed ADD leaves nothing behind; a *killed* ADD leaves only what DEL and GC reclaim.
use super::pools::release_elsewhere;
use super::{netns_error, Ctx};
use crate::command::Attach;
use crate::error::CniError;
use crate::ipam::{IpamStore, Record};
use crate::plan::{self, Subnets};
use std::time::SystemTime;
use weft_dataplane::pod::PodNet;

pub fn add<P: PodNet>(ctx: &Ctx<P>, a: &Attach) -> Result<String, CniError> {
    let subnets = Subnets::resolve_for(&a.conf, &a.pod.namespace, ctx.load_node_file)?;
    let netns = a.netns.as_deref().expect("env validation: ADD has CNI_NETNS");
    let ns = ctx.pod.open_netns(netns).map_err(|e| netns_error(netns, e))?;
    if subnets.network.is_some() {
        // The data directory first, so that creating the network's pool below it is made durable in it.
        IpamStore::open(&a.conf.data_dir)?;
    }
    let store = IpamStore::open(&subnets.pool_dir(&a.conf.data_dir))?.with_sync(a.conf.fsync);
    let pools = subnets.pools();
    let record = Record {
        container_id: a.container_id.clone(),
        ifname: a.ifname.clone(),
        pod_namespace: a.pod.namespace.clone(),
        pod_name: a.pod.name.clone(),
        created_at: rfc3339(ctx.now),
        network: subnets.network.as_ref().map(|n| n.name.clone()),
        vni: subnets.network.as_ref().map(|n| n.vni),
    };
    let taken = ctx.pod.existing_defaults(&ns, &a.ifname)?;
    let ips = store.allocate(&record, &pools)?;
    let spec = plan::pod_spec(&a.ids(), &ips, &subnets, taken);
    let undo = |e: CniError| {
        let _ = ctx.pod.delete(&spec.host_ifname);
        let _ = store.release(&a.container_id, &a.ifname);
        e
    };
    ctx.pod.ensure_forwarding(true, subnets.v6.is_some()).map_err(|e| undo(e.into()))?;
    ctx.pod.create(&ns, &spec).map_err(|e| undo(e.into()))?;
    // A retried ADD whose namespace changed network since the first try: the old veth was just replaced, so
    // its reservations in the other network's pool are free again (as an address outside a changed subnet is,
    // see `IpamStore::allocate`). Best effort: DEL and GC release them too.
    let here = subnets.pool_dir(&a.conf.data_dir);
    if let Err(e) = release_elsewhere(&a.conf.data_dir, Some(&here), a.conf.fsync, &a.container_id, &a.ifname) {
        (ctx.log)(&[format!("weft ADD: releasing {}/{} in other pools: {e}", a.container_id, a.ifname)]);
    }
    Ok(plan::add_result(&spec, netns, &a.conf.dns).for_version(a.conf.version).to_json())
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) without a date crate: days → civil date (H. Hinnant's algorithm).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
