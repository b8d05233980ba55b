//! CHECK: the attachment described by prevResult must still be whole — its addresses reserved in IPAM for this
//! very attachment, and in the kernel the pod interface (veth, MAC, MTU, up), its addresses, default routes and
//! gateway neighbours, the host veth as its peer, the host routes and neighbours. Every problem is reported.
use super::{netns_error, Ctx};
use crate::command::Attach;
use crate::error::CniError;
use crate::ipam::IpamStore;
use crate::plan::{self, Subnets};
use crate::spec::CniResult;
use weft_dataplane::pod::{compare, PodNet};

pub fn check<P: PodNet>(ctx: &Ctx<P>, a: &Attach, prev: &CniResult) -> Result<(), CniError> {
    let subnets = Subnets::resolve(&a.conf, ctx.load_node_file)?;
    let spec = plan::check_spec(&a.ids(), prev, subnets.mtu)?;
    let netns = a.netns.as_deref().expect("env validation: CHECK has CNI_NETNS");
    let ns = ctx.pod.open_netns(netns).map_err(|e| netns_error(netns, e))?;
    let held = match IpamStore::open_existing(&a.conf.data_dir).map(|s| s.with_sync(a.conf.fsync)) {
        Some(store) => store.addresses_of(&a.container_id, &a.ifname)?,
        None => Vec::new(),
    };
    let mut problems: Vec<String> = spec
        .addrs
        .iter()
        .filter(|p| !held.contains(&p.ip))
        .map(|p| format!("address {} is not reserved for this attachment in {}", p.ip, a.conf.data_dir.display()))
        .collect();
    problems.extend(compare(&spec, &ctx.pod.observe(&ns, &spec)?));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::CheckFailed { what: format!("{}/{}", a.container_id, a.ifname), problems })
    }
}
