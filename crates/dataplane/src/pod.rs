//! The pod datapath: the kernel side of what the CNI plugin does for one pod attachment.
//!
//! Design: **routed veth** (the model of Calico and Cilium), no bridge.
//! - The veth pair is created from the node's namespace with its peer created *directly* in the pod's namespace
//!   (`IFLA_NET_NS_FD` on the peer), named `CNI_IFNAME`: no create-then-move, which would cost an extra
//!   `dev_change_net_namespace` (an RCU grace period, ~17 ms here).
//! - Pod side: `ip/32` (v6: `ip/128 nodad`), routes via the subnet's gateway address with `onlink` (the default
//!   route for the pod's first attachment of a family, only its own subnet / cluster CIDR for a secondary one,
//!   see [`PodSpec::routes`]), and a PERMANENT neighbour entry gateway → host-side MAC, so the pod never
//!   ARPs/NDs and nothing on the node has to own the gateway address. Pod routes carry protocol
//!   [`crate::overlay::RTPROT_WEFT`] and are created exclusively (`NLM_F_EXCL`): weft never replaces a route it
//!   did not make.
//! - Node side: no address on the host veth; a `podIP/32 dev hostveth scope link` route (v6 /128) and a
//!   permanent neighbour podIP → pod MAC.
//! - A pod of a tenant network ([`PodNetwork`]) differs only on the node side: its host veth is created in the
//!   network's link group (in the same `RTM_NEWLINK`, so it is never seen outside it), its host routes go into
//!   the network's route table instead of main, and `src_valid_mark` makes strict reverse-path filtering look
//!   the source up with the packet's mark (the agent marks the network's packets and routes them by that mark).
//!
//! Why routed: every packet to or from a pod is *routed* by the node, so it always traverses the netfilter
//! forward hook (pod↔pod on the same node included) without `br_netfilter`; policy can match per-pod interfaces
//! (`iifname`/`oifname`), there is no bridge learning or flooding, and it is the same model the overlay uses
//! (a route per remote subnet), so the agent adds routes, never ports.
//!
//! Layout: [`PodNet`] is the narrow trait the CNI plugin executes against (a fake implements it in the plugin's
//! unit tests); [`NetlinkPodNet`] is the real one (blocking rtnetlink, see [`nl`]); [`compare`] turns what the
//! kernel shows into a list of problems for CNI CHECK, as a pure function.
mod check;
mod linux;
mod msg;
mod nl;
mod observe;

pub use check::compare;
pub use linux::{NetlinkPodNet, PodNetns, REAP_GROUP};

use crate::DataplaneError;
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::Path;

pub type Mac = [u8; 6];

/// One address of the pod and the gateway of its default route (same family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddr {
    pub ip: IpAddr,
    pub gateway: IpAddr,
}

/// A route in the pod, via the gateway of the address of the same family, out of the pod interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRoute {
    pub dst: IpNet,
    pub gateway: IpAddr,
}

impl PodRoute {
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }
}

/// Which families already have a default route in a pod's main table that is not on the attachment's own
/// interface (a leftover of the same attachment is replaced with its veth, so it does not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Defaults {
    pub v4: bool,
    pub v6: bool,
}

impl Defaults {
    pub fn has(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() {
            self.v4
        } else {
            self.v6
        }
    }
}

/// Where a tenant network's pod lives on the node: the route table of its host routes and the link group of its
/// host veth (both derived from the network's VNI by the plan, never read from a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNetwork {
    pub table: u32,
    pub group: u32,
}

/// Everything the kernel must hold for one attachment (the plan's output; the input of create and check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// Host-side veth name, deterministic from the attachment (so DEL/GC find it without the pod's netns).
    pub host_ifname: String,
    pub host_mac: Mac,
    /// `ifalias` of the host veth, for humans (`ip link` shows which pod it serves).
    pub alias: String,
    pub pod_ifname: String,
    pub pod_mac: Mac,
    pub mtu: u32,
    /// At most one per family.
    pub addrs: Vec<PodAddr>,
    /// Routes in the pod, each via the gateway of its family (the plan decides: see the CNI's CONFIG.md).
    pub routes: Vec<PodRoute>,
    /// `None`: the default network (main table, link group 0).
    pub network: Option<PodNetwork>,
}

impl PodSpec {
    /// Route table of the host routes.
    pub fn host_table(&self) -> u32 {
        self.network.map_or(MAIN_TABLE, |n| n.table)
    }

    /// Link group of the host veth while the pod is attached.
    pub fn host_group(&self) -> u32 {
        self.network.map_or(0, |n| n.group)
    }
}

/// The kernel's main routing table (`RT_TABLE_MAIN`).
pub const MAIN_TABLE: u32 = 254;

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkObs {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    pub kind_veth: bool,
    pub alias: Option<String>,
    /// `IFLA_GROUP` (0 when the kernel does not report one).
    pub group: u32,
}

/// A route (of the table that was asked for) as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteObs {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// A neighbour entry as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighObs {
    pub ip: IpAddr,
    pub mac: Option<Mac>,
    pub ifindex: u32,
    pub permanent: bool,
}

/// What the kernel shows for one attachment, on both sides; input of [`compare`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodObserved {
    pub pod_link: Option<LinkObs>,
    /// Addresses on the pod interface: (ip, prefix length).
    pub pod_addrs: Vec<(IpAddr, u8)>,
    pub pod_routes: Vec<RouteObs>,
    pub pod_neighbours: Vec<NeighObs>,
    pub host_link: Option<LinkObs>,
    /// Routes via the host veth in the attachment's table ([`PodSpec::host_table`]).
    pub host_routes: Vec<RouteObs>,
    pub host_neighbours: Vec<NeighObs>,
}

/// The kernel operations of the CNI plugin. Deletions are best effort: a missing object is not an error.
pub trait PodNet {
    /// An open handle on a pod's network namespace.
    type Netns;
    /// Opens `path`; fails with [`DataplaneError::Netns`] if it does not exist or is not a network namespace.
    fn open_netns(&self, path: &Path) -> Result<Self::Netns, DataplaneError>;
    /// Which families have a default route in the pod that the attachment on `pod_ifname` did not make.
    fn existing_defaults(&self, ns: &Self::Netns, pod_ifname: &str) -> Result<Defaults, DataplaneError>;
    /// Turns on IPv4 (and IPv6) forwarding in the node's namespace if it is off.
    fn ensure_forwarding(&self, v4: bool, v6: bool) -> Result<(), DataplaneError>;
    /// Creates the veth pair (peer directly in `ns`) and configures both sides. A host veth of the same name left
    /// by an earlier, interrupted attempt is deleted first. On error the caller deletes the host veth.
    fn create(&self, ns: &Self::Netns, spec: &PodSpec) -> Result<(), DataplaneError>;
    /// Cuts the pod off at once: brings the host veth down (the kernel drops its routes and neighbours) and
    /// returns its ifindex, or `None` if there is no such link. The slow unregister is [`PodNet::delete_index`].
    fn detach(&self, host_ifname: &str) -> Result<Option<u32>, DataplaneError>;
    /// Deletes the link with `index` if it is still called `name` (never a newer link that reused the name).
    fn delete_index(&self, index: u32, name: &str) -> Result<(), DataplaneError>;
    /// Deletes a link by name, synchronously; `Ok(false)` if it did not exist.
    fn delete(&self, host_ifname: &str) -> Result<bool, DataplaneError>;
    /// Reads both sides of an attachment for CHECK.
    fn observe(&self, ns: &Self::Netns, spec: &PodSpec) -> Result<PodObserved, DataplaneError>;
    /// Names of the node's links that start with `prefix` (GC finds stray host veths of a network this way).
    fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>, DataplaneError>;
}

pub fn format_mac(mac: &Mac) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for slot in out.iter_mut() {
        *slot = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}
