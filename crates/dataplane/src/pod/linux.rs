//! The real [`PodNet`]: rtnetlink over blocking sockets, one pipelined batch per side of the pod.
//!
//! Order inside a side follows flannel's rule "neighbour before route": the pod's permanent gateway neighbour
//! exists before the default route that uses it, so the kernel never has to resolve it.
//! Requests that configure state on the new veth itself (addresses, neighbours) use NLM_F_CREATE|NLM_F_REPLACE:
//! the veth is new, so whatever they replace is ours. The veth and every route are created exclusively
//! (NLM_F_EXCL): a clash there means something else owns the name or the destination, and replacing it would
//! rewrite someone else's routing (another attachment's default route, a node route to that address).
use super::msg::{address, alias, host_route, link_index, neighbour, no_ipv6_autoconf, pod_route, up, veth_message};
use super::nl::{NlSocket, CREATE_EXCL, CREATE_REPLACE};
use super::observe::{defaults_besides, link_by_name, link_obs, links_in_group, not_ready, side};
use super::{Defaults, LinkObs, PodNet, PodObserved, PodSpec, MAIN_TABLE};
use crate::netns::NetnsHandle;
use crate::DataplaneError;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage as Rt;
use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every host veth name starts with this (see `weft_cni::names`), and its `ifalias` with [`ALIAS_PREFIX`].
const HOST_PREFIX: &str = "wf";
const ALIAS_PREFIX: &str = "weft:";

/// The link group (`IFLA_GROUP`) DEL moves a host veth into when it detaches it, so the reaper can delete all
/// detached veths in one request. An arbitrary value ("weft" in ASCII) that nothing else on a node uses. A
/// tenant pod's veth leaves its network's group here too: once detached, nothing tells it from any other.
pub const REAP_GROUP: u32 = 0x7765_6674;

/// How long ADD waits for the kernel's workers to make a configured attachment deliver packets (normally
/// microseconds; seconds only on a node whose workqueues or RTNL are starved).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Talks to the kernel of the calling process's namespace (the node) and of pods' namespaces.
#[derive(Default)]
pub struct NetlinkPodNet {
    host: RefCell<Option<NlSocket>>,
}

impl NetlinkPodNet {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_host<T>(&self, f: impl FnOnce(&mut NlSocket) -> Result<T, DataplaneError>) -> Result<T, DataplaneError> {
        let mut slot = self.host.borrow_mut();
        if slot.is_none() {
            *slot = Some(NlSocket::open()?);
        }
        f(slot.as_mut().expect("opened above"))
    }
}

/// A pod's namespace, with a netlink socket already open inside it. Opening the socket enters the namespace,
/// which is also the only complete proof that the path *is* a network namespace (nsfs also holds mount, pid…
/// namespaces, and `/proc/PID/ns/net` may be a procfs path).
pub struct PodNetns {
    handle: NetnsHandle,
    sock: RefCell<NlSocket>,
}

impl PodNet for NetlinkPodNet {
    type Netns = PodNetns;

    fn open_netns(&self, path: &Path) -> Result<PodNetns, DataplaneError> {
        let handle = NetnsHandle::open(path)?;
        refuse_own_namespace(&handle, path)?;
        let sock = NlSocket::open_in(&handle).map_err(|e| match e {
            DataplaneError::Netns { path, source } => DataplaneError::Netns {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("not a network namespace: {source}"),
                ),
            },
            other => other,
        })?;
        Ok(PodNetns { handle, sock: RefCell::new(sock) })
    }

    fn existing_defaults(&self, ns: &PodNetns, pod_ifname: &str) -> Result<Defaults, DataplaneError> {
        let mut pod = ns.sock.borrow_mut();
        let own = link_by_name(&mut pod, pod_ifname)?.map(|l| l.index);
        defaults_besides(&mut pod, own)
    }

    fn ensure_forwarding(&self, v4: bool, v6: bool) -> Result<(), DataplaneError> {
        if v4 {
            ensure_sysctl("/proc/sys/net/ipv4/ip_forward")?;
        }
        if v6 {
            ensure_sysctl("/proc/sys/net/ipv6/conf/all/forwarding")?;
        }
        Ok(())
    }

    fn create(&self, ns: &PodNetns, spec: &PodSpec) -> Result<(), DataplaneError> {
        let mut pod = ns.sock.borrow_mut();
        self.with_host(|host| {
            let veth = || Rt::NewLink(veth_message(spec, ns.handle.fd().as_raw_fd()));
            // Each retry follows a clash that make_room resolved (or that went away by itself); three are plenty.
            for _ in 0..3 {
                match host.batch(vec![(veth(), CREATE_EXCL)])?.remove(0) {
                    Ok(()) => {
                        configure(host, &mut pod, spec)?;
                        // Anti-spoofing for IPv4: strict reverse-path filtering on the host side. The only route
                        // back to a pod's address is its /32 via this veth, so a packet from the pod with any
                        // other source (another pod's address) is dropped before it is routed or policed.
                        let conf = format!("/proc/sys/net/ipv4/conf/{}", spec.host_ifname);
                        if spec.network.is_some() {
                            // A tenant pod's /32 is in its network's table, which only the packet's mark (set by
                            // the agent from the veth's group) selects: the reverse-path lookup must use the mark
                            // too, or every packet of the pod fails it. Set before rp_filter, so no packet meets
                            // strict filtering without it.
                            ensure_sysctl(&format!("{conf}/src_valid_mark"))?;
                        }
                        return ensure_sysctl(&format!("{conf}/rp_filter"));
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => make_room(host, &mut pod, spec)?,
                    Err(e) => return Err(DataplaneError::Netlink(format!("create veth {}: {e}", spec.host_ifname))),
                }
            }
            Err(DataplaneError::Netlink(format!("create veth {}: name clash does not clear", spec.host_ifname)))
        })
    }

    fn detach(&self, host_ifname: &str) -> Result<Option<u32>, DataplaneError> {
        self.with_host(|host| {
            let Some(link) = link_by_name(host, host_ifname)? else { return Ok(None) };
            let mut m = LinkMessage::default();
            m.header.index = link.index;
            m.header.change_mask = LinkFlags::Up;
            m.attributes.push(LinkAttribute::Group(REAP_GROUP));
            match host.batch(vec![(Rt::SetLink(m), 0)])?.remove(0) {
                Ok(()) => Ok(Some(link.index)),
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
                Err(e) => Err(DataplaneError::Netlink(format!("set {host_ifname} down: {e}"))),
            }
        })
    }

    fn delete_index(&self, index: u32, name: &str) -> Result<(), DataplaneError> {
        self.with_host(|host| delete_index(host, index, name))
    }

    fn delete(&self, host_ifname: &str) -> Result<bool, DataplaneError> {
        self.with_host(|host| delete_by_name(host, host_ifname))
    }

    fn observe(&self, ns: &PodNetns, spec: &PodSpec) -> Result<PodObserved, DataplaneError> {
        let mut pod = ns.sock.borrow_mut();
        let mut obs = PodObserved { pod_link: link_by_name(&mut pod, &spec.pod_ifname)?, ..Default::default() };
        if let Some(idx) = obs.pod_link.as_ref().map(|l| l.index) {
            (obs.pod_addrs, obs.pod_routes, obs.pod_neighbours) = side(&mut pod, idx, MAIN_TABLE)?;
        }
        self.with_host(|host| {
            obs.host_link = link_by_name(host, &spec.host_ifname)?;
            if let Some(idx) = obs.host_link.as_ref().map(|l| l.index) {
                (_, obs.host_routes, obs.host_neighbours) = side(host, idx, spec.host_table())?;
            }
            Ok(())
        })?;
        Ok(obs)
    }

    fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>, DataplaneError> {
        self.with_host(|host| {
            let all = host.dump(Rt::GetLink(LinkMessage::default()))?;
            Ok(all.into_iter().filter_map(link_obs).map(|l| l.name).filter(|n| n.starts_with(prefix)).collect())
        })
    }
}

/// A "pod" namespace that is the plugin's own (the node's, under any path: `/proc/self/ns/net`, a bind mount)
/// would have ADD configure the node itself as a pod: a second address, routes via the pod gateway. Compared
/// by namespace identity, not by path.
fn refuse_own_namespace(target: &NetnsHandle, path: &Path) -> Result<(), DataplaneError> {
    if target.identity()? == NetnsHandle::of_process()?.identity()? {
        return Err(DataplaneError::Netns {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is the plugin's own network namespace (the node's), not a pod's: refused",
            ),
        });
    }
    Ok(())
}

/// The veth could not be created (EEXIST). Removes what is in the way if it is ours, else explains the clash:
/// - our host veth from an interrupted attempt (no alias yet, or our alias): delete it;
/// - a host veth with another attachment's alias (a name-hash collision): not ours, refuse;
/// - CNI_IFNAME in the pod is the pod end of a weft veth that DEL detached and whose reaper has not finished
///   (DEL then ADD again in the same namespace): finish the deletion now;
/// - CNI_IFNAME in the pod vanishes within 250 ms (its pair was being unregistered): retry;
/// - anything else called CNI_IFNAME in the pod: not ours, refuse.
fn make_room(host: &mut NlSocket, pod: &mut NlSocket, spec: &PodSpec) -> Result<(), DataplaneError> {
    if let Some(old) = link_by_name(host, &spec.host_ifname)? {
        if old.alias.as_deref().is_some_and(|a| a != spec.alias) {
            return Err(DataplaneError::Netlink(format!(
                "host veth {} already serves {:?}",
                spec.host_ifname,
                old.alias.unwrap_or_default()
            )));
        }
        delete_by_name(host, &spec.host_ifname)?;
        return Ok(());
    }
    if let Some(stale) = detached_weft_peer(host, pod, &spec.pod_ifname)? {
        return delete_index(host, stale.index, &stale.name);
    }
    // The reaper may be unregistering the old pair right now (the host end is already gone, the pod end not
    // yet): give CNI_IFNAME a moment to disappear before calling it foreign.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(250);
    while link_by_name(pod, &spec.pod_ifname)?.is_some() {
        if std::time::Instant::now() > deadline {
            return Err(DataplaneError::Netlink(format!(
                "interface {} already exists in the pod's network namespace",
                spec.pod_ifname
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}

/// Everything after the veth exists: host veth alias (weft's mark of ownership) and no IPv6 autoconf, pod side
/// (up, addresses, gateway neighbours, the routes of the plan), then host side (pod neighbours, host routes), one
/// pipelined batch each; then waits until the first packet in either direction will be delivered ([`wait_ready`]).
fn configure(host: &mut NlSocket, pod: &mut NlSocket, spec: &PodSpec) -> Result<(), DataplaneError> {
    let host_idx = link_by_name(host, &spec.host_ifname)?
        .ok_or_else(|| DataplaneError::NoSuchLink(spec.host_ifname.clone()))?
        .index;
    let pod_idx =
        link_by_name(pod, &spec.pod_ifname)?.ok_or_else(|| DataplaneError::NoSuchLink(spec.pod_ifname.clone()))?.index;
    // Before the pod end comes up (carrier, hence addrconf on the host end, follows from that).
    let first = vec![(Rt::SetLink(alias(host_idx, &spec.alias)), 0), (Rt::SetLink(no_ipv6_autoconf(host_idx)), 0)];
    expect_all(host.batch(first)?, "configure the host veth")?;

    let mut pod_reqs = vec![(Rt::SetLink(up(pod_idx)), 0)];
    for a in &spec.addrs {
        pod_reqs.push((Rt::NewAddress(address(a.ip, pod_idx)), CREATE_REPLACE));
    }
    for a in &spec.addrs {
        pod_reqs.push((Rt::NewNeighbour(neighbour(a.gateway, spec.host_mac, pod_idx)), CREATE_REPLACE));
    }
    for r in &spec.routes {
        pod_reqs.push((Rt::NewRoute(pod_route(r, pod_idx)), CREATE_EXCL));
    }
    let results = pod.batch(pod_reqs)?;
    let routes_from = results.len() - spec.routes.len();
    for (r, route) in results[routes_from..].iter().zip(&spec.routes) {
        if r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EEXIST) {
            return Err(DataplaneError::Netlink(format!(
                "the pod already has a route to {} (another attachment's): weft does not replace routes it did not make",
                route.dst
            )));
        }
    }
    expect_all(results, "configure the pod side")?;

    // The host end was opened first, without carrier, so its qdisc is only activated by the linkwatch worker
    // once the pod end is up; until then the kernel drops what it sends (under load that worker can lag by
    // milliseconds and the pod's first packets get no answer). Querying the link makes the kernel finish that
    // pending linkwatch work synchronously (since 6.8; on older kernels it is a harmless read).
    let mut host_reqs = vec![(Rt::GetLink(link_index(host_idx)), 0)];
    for a in &spec.addrs {
        host_reqs.push((Rt::NewNeighbour(neighbour(a.ip, spec.pod_mac, host_idx)), CREATE_REPLACE));
        host_reqs.push((Rt::NewRoute(host_route(a.ip, host_idx, spec.host_table())), CREATE_EXCL));
    }
    expect_all(host.batch(host_reqs)?, "configure the host side")?;
    wait_ready(host, host_idx, pod, pod_idx, spec)
}

/// Returns once [`not_ready`] finds nothing left, so a pod that sends (or is sent) its first packet the moment
/// ADD returns is not dropped; polls (the state is set by kernel workers, not by our requests) with a short,
/// growing pause, and fails ADD if the kernel never gets there.
fn wait_ready(
    host: &mut NlSocket,
    host_idx: u32,
    pod: &mut NlSocket,
    pod_idx: u32,
    spec: &PodSpec,
) -> Result<(), DataplaneError> {
    let ips: Vec<_> = spec.addrs.iter().map(|a| a.ip).collect();
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut pause = Duration::from_micros(200);
    loop {
        let Some(why) = not_ready(host, host_idx, pod, pod_idx, &ips)? else { return Ok(()) };
        if Instant::now() > deadline {
            return Err(DataplaneError::Netlink(format!("pod not ready after {READY_TIMEOUT:?}: {why}")));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

fn ensure_sysctl(path: &str) -> Result<(), DataplaneError> {
    let err = |e: std::io::Error| DataplaneError::Other(format!("{path}: {e}"));
    if std::fs::read_to_string(path).map_err(err)?.trim() != "1" {
        std::fs::write(path, "1").map_err(err)?;
    }
    Ok(())
}

fn expect_all(results: Vec<std::io::Result<()>>, what: &str) -> Result<(), DataplaneError> {
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(DataplaneError::Netlink(format!("{what}: {e}"))),
        None => Ok(()),
    }
}

fn ignore_missing(r: std::io::Result<()>, name: &str) -> Result<(), DataplaneError> {
    match r {
        Err(e) if e.raw_os_error() != Some(libc::ENODEV) => Err(DataplaneError::Netlink(format!("delete {name}: {e}"))),
        _ => Ok(()),
    }
}

/// Deletes link `index` if it is still named `name` and is a host veth that weft made ([`weft_host_veth`]);
/// anything else is left alone without an error (the index and name may come from a hostile environment:
/// `WEFT_REAP_LINK`).
///
/// Batched: every detached host veth is in [`REAP_GROUP`], and when that group holds only detached weft veths
/// the whole group goes in one `RTM_DELLINK` (`ip link del group`), i.e. one `unregister_netdevice_many`: the
/// RCU waits that each unregister does under the RTNL lock are paid once for all the pods being deleted, where
/// one request per veth makes parallel DELs queue on RTNL one grace period after another. The reapers of the
/// other veths of the batch then find nothing left to do.
fn delete_index(host: &mut NlSocket, index: u32, name: &str) -> Result<(), DataplaneError> {
    let group = links_in_group(host, REAP_GROUP)?;
    if group.iter().any(|l| l.index == index && l.name == name) && group.iter().all(|l| weft_host_veth(l) && !l.up) {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::Group(REAP_GROUP));
        return ignore_missing(host.batch(vec![(Rt::DelLink(m), 0)])?.remove(0), name);
    }
    let mut q = LinkMessage::default();
    q.header.index = index;
    match host.get(Rt::GetLink(q))?.and_then(link_obs) {
        Some(l) if l.name == name && weft_host_veth(&l) => {
            let mut m = LinkMessage::default();
            m.header.index = index;
            ignore_missing(host.batch(vec![(Rt::DelLink(m), 0)])?.remove(0), name)
        }
        _ => Ok(()),
    }
}

/// The host end of pod interface `ifname` if it is a weft host veth that DEL already detached (down).
fn detached_weft_peer(
    host: &mut NlSocket,
    pod: &mut NlSocket,
    ifname: &str,
) -> Result<Option<LinkObs>, DataplaneError> {
    let Some(peer) = link_by_name(pod, ifname)?.and_then(|l| l.peer_index) else { return Ok(None) };
    let mut q = LinkMessage::default();
    q.header.index = peer;
    Ok(host.get(Rt::GetLink(q))?.and_then(link_obs).filter(|l| !l.up && weft_host_veth(l)))
}

/// A link weft created on the node: a veth with weft's name prefix and the alias weft gives it (set right after
/// creation, before anything else; a veth that an ADD killed in between is reclaimed by GC or the next ADD).
fn weft_host_veth(l: &LinkObs) -> bool {
    l.kind_veth && l.name.starts_with(HOST_PREFIX) && l.alias.as_deref().is_some_and(|a| a.starts_with(ALIAS_PREFIX))
}

fn delete_by_name(host: &mut NlSocket, name: &str) -> Result<bool, DataplaneError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    match host.batch(vec![(Rt::DelLink(m), 0)])?.remove(0) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(DataplaneError::Netlink(format!("delete {name}: {e}"))),
    }
}
