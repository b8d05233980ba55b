//! DEL: cut the pod off, then release its addresses. Unknown attachments, repeated DELs and vanished network
//! namespaces all succeed: DEL needs neither the netns nor any saved state (the host veth's name is derived
//! from the attachment, the reservations are found by the attachment's key, in whichever network's pool).
//! A tenant pod's veth leaves its network's link group for the reap group when it is detached, so from then
//! on it is handled exactly like a default pod's; its host routes (in its network's table) go with the link.
//!
//! Why the veth is deleted *asynchronously*: unregistering a netdevice waits for RCU (`rcu_barrier` in
//! `netdev_run_todo`), which costs from ~1 ms to ~25 ms depending on what else the kernel has in flight (a
//! fresh veth's `ip link del` took 17–25 ms here; in the bench the unregister finishes 0.5–25 ms after DEL
//! returns) — the bulk of the reference plugin's DEL. Setting the host veth down is immediate and makes the
//! kernel drop its routes and neighbours, so when DEL returns the pod is unreachable and its addresses can
//! safely be reused (a new pod's route replaces nothing: the old one is already gone). The unregister itself
//! runs in a detached reaper process that deletes the link *by ifindex* and only if it still has its name, so it
//! can never hit a newer veth of the same attachment. If the reaper cannot be started, DEL deletes synchronously. If it dies, the
//! down veth is reclaimed by the next ADD of that attachment or by GC.
//!
//! Many DELs at once (a scale-down, a runtime stopping several pods): each unregister waits for RCU grace
//! periods while holding the RTNL lock, so one request per veth makes the reapers queue one grace period after
//! another (the 10th veth lingered ~150 ms in the bench). Detaching also moves the veth into weft's reap link
//! group, and a reaper deletes the whole group in one request when it holds only detached weft veths: the
//! waits are paid once per batch, and the other reapers find their veth already gone.
use super::pools::release_elsewhere;
use super::Ctx;
use crate::command::Attach;
use crate::error::CniError;
use crate::ipam::IpamStore;
use crate::names;
use weft_dataplane::pod::PodNet;

pub fn del<P: PodNet>(ctx: &Ctx<P>, a: &Attach) -> Result<(), CniError> {
    let host = names::host_veth(&a.conf.name, &a.container_id, &a.ifname);
    if let Some(index) = ctx.pod.detach(&host)? {
        if (ctx.reap)(index, &host).is_err() {
            ctx.pod.delete_index(index, &host)?;
        }
    }
    if let Some(store) = IpamStore::open_existing(&a.conf.data_dir).map(|s| s.with_sync(a.conf.fsync)) {
        store.release(&a.container_id, &a.ifname)?;
    }
    // And every tenant network's pool: DEL reads no node file and trusts no namespace (the network may have left
    // the node file, the pod's namespace may have moved to another network since ADD); a reservation a killed
    // ADD left in any pool is reclaimed too.
    release_elsewhere(&a.conf.data_dir, Some(&a.conf.data_dir), a.conf.fsync, &a.container_id, &a.ifname)
}
