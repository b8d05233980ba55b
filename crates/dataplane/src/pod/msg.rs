//! Request builders: the rtnetlink messages for one attachment, as plain data (no I/O).
use super::{Mac, PodRoute, PodSpec};
use crate::overlay::RTPROT_WEFT;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use std::net::IpAddr;
use std::os::fd::RawFd;

pub(super) fn veth_message(spec: &PodSpec, pod_netns_fd: RawFd) -> LinkMessage {
    // The peer cannot be created up: the kernel opens it before the pair is linked (veth_open → ENOTCONN).
    let mut peer = LinkMessage::default();
    peer.attributes = vec![
        LinkAttribute::IfName(spec.pod_ifname.clone()),
        LinkAttribute::Address(spec.pod_mac.to_vec()),
        LinkAttribute::Mtu(spec.mtu),
        LinkAttribute::NetNsFd(pod_netns_fd),
    ];
    let mut m = LinkMessage::default();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes = vec![
        LinkAttribute::IfName(spec.host_ifname.clone()),
        LinkAttribute::Address(spec.host_mac.to_vec()),
        LinkAttribute::Mtu(spec.mtu),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]),
    ];
    // A tenant pod's veth is born in its network's group (rtnl_create_link applies IFLA_GROUP before the link
    // is registered): no moment exists in which its packets would pass for the default network's.
    if let Some(n) = spec.network {
        m.attributes.push(LinkAttribute::Group(n.group));
    }
    m
}

/// A link designated by its index only (GET/DEL).
pub(super) fn link_index(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

pub(super) fn up(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m
}

/// No IPv6 link-local (nor DAD, router solicitations, MLD) on the host veth: nothing needs one there (both
/// neighbours are permanent), and the kernel would otherwise start it from the linkwatch worker, in the middle
/// of the pod's first packets. Set before the pair has carrier (the kernel refuses `IFLA_AF_SPEC` at creation).
pub(super) fn no_ipv6_autoconf(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])]));
    m
}

/// `ip route get IP`: the kernel answers with the route a packet to `ip` would take (type `local` once `ip` is
/// one of this namespace's own addresses *for the FIB*, not merely listed on an interface).
pub(super) fn route_get(ip: IpAddr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(ip);
    m.header.destination_prefix_length = host_len(ip);
    m.attributes.push(RouteAttribute::Destination(RouteAddress::from(ip)));
    m
}

pub(super) fn alias(index: u32, alias: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    m
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

pub(super) fn host_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

pub(super) fn address(ip: IpAddr, index: u32) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(ip);
    m.header.prefix_len = host_len(ip);
    m.header.index = index;
    if ip.is_ipv4() {
        m.attributes.push(AddressAttribute::Local(ip));
    } else {
        // A /128 that nobody else can hold: duplicate address detection would only delay the pod by ~1 s.
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    m.attributes.push(AddressAttribute::Address(ip));
    m
}

pub(super) fn neighbour(ip: IpAddr, mac: Mac, index: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(ip);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

/// `RT_TABLE_COMPAT`: the header's table field when the real id (above 255) is in `RTA_TABLE`.
const RT_TABLE_COMPAT: u8 = 252;

fn route_base(ip: IpAddr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(ip);
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.kind = RouteType::Unicast;
    m
}

/// `DST via GW dev POD onlink proto weft` (DST is `default` for a primary attachment): the gateway is outside
/// the pod's /32, so it must be declared on-link. The protocol marks the route as weft's in the pod.
pub(super) fn pod_route(route: &PodRoute, pod_idx: u32) -> RouteMessage {
    let mut m = route_base(route.gateway);
    m.header.protocol = RouteProtocol::from(RTPROT_WEFT);
    m.header.scope = RouteScope::Universe;
    m.header.flags = RouteFlags::Onlink;
    m.header.destination_prefix_length = route.dst.prefix_len();
    if !route.is_default() {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::from(route.dst.network())));
    }
    m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(route.gateway)));
    m.attributes.push(RouteAttribute::Oif(pod_idx));
    m
}

/// `POD_IP/32 dev HOSTVETH scope link [table T]` on the node.
pub(super) fn host_route(ip: IpAddr, host_idx: u32, table: u32) -> RouteMessage {
    let mut m = route_base(ip);
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        // Tenant tables are above 255: the header's 8-bit field says "see RTA_TABLE" (RT_TABLE_COMPAT, as
        // iproute2 does) and the attribute carries the id.
        m.header.table = RT_TABLE_COMPAT;
        m.attributes.push(RouteAttribute::Table(table));
    }
    m.header.destination_prefix_length = host_len(ip);
    m.header.scope = if ip.is_ipv4() { RouteScope::Link } else { RouteScope::Universe };
    m.attributes.push(RouteAttribute::Destination(RouteAddress::from(ip)));
    m.attributes.push(RouteAttribute::Oif(host_idx));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::PodAddr;

    fn spec() -> PodSpec {
        PodSpec {
            host_ifname: "wf0000123456789".into(),
            host_mac: [2, 0, 0, 0, 0, 1],
            alias: "weft:n:c:eth0".into(),
            pod_ifname: "eth0".into(),
            pod_mac: [2, 0, 0, 0, 0, 2],
            mtu: 1450,
            addrs: vec![PodAddr { ip: "10.1.0.5".parse().unwrap(), gateway: "10.1.0.1".parse().unwrap() }],
            routes: vec![],
            network: None,
        }
    }

    #[test]
    fn veth_peer_is_created_in_the_pod_netns_and_not_up() {
        let m = veth_message(&spec(), 7);
        assert!(m.header.flags.contains(LinkFlags::Up), "host side comes up at creation");
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1450)));
        let peer = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .expect("veth peer");
        assert!(!peer.header.flags.contains(LinkFlags::Up), "the kernel would answer ENOTCONN");
        assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(7)));
        assert!(peer.attributes.contains(&LinkAttribute::IfName("eth0".into())));
        assert!(peer.attributes.contains(&LinkAttribute::Address(vec![2, 0, 0, 0, 0, 2])));
        assert!(!m.attributes.iter().any(|a| matches!(a, LinkAttribute::Group(_))), "default network: no group");
        assert!(!peer.attributes.iter().any(|a| matches!(a, LinkAttribute::Group(_))));
    }

    #[test]
    fn tenant_veth_is_created_in_its_group() {
        let mut s = spec();
        s.network = Some(crate::pod::PodNetwork { table: 0x5700_0007, group: 0x5700_0007 });
        let m = veth_message(&s, 7);
        assert!(m.attributes.contains(&LinkAttribute::Group(0x5700_0007)));
    }

    #[test]
    fn routes_and_addresses_have_the_routed_veth_shape() {
        let gw: IpAddr = "10.1.0.1".parse().unwrap();
        let d = pod_route(&PodRoute { dst: "0.0.0.0/0".parse().unwrap(), gateway: gw }, 3);
        assert!(d.header.flags.contains(RouteFlags::Onlink));
        assert_eq!(d.header.destination_prefix_length, 0);
        assert_eq!(d.header.protocol, RouteProtocol::from(RTPROT_WEFT), "marked as weft's");
        assert!(!d.attributes.iter().any(|a| matches!(a, RouteAttribute::Destination(_))));
        let s = pod_route(&PodRoute { dst: "10.1.0.0/24".parse().unwrap(), gateway: gw }, 3);
        assert_eq!(s.header.destination_prefix_length, 24);
        assert!(s
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::from("10.1.0.0".parse::<IpAddr>().unwrap()))));
        let h = host_route("fd00::5".parse().unwrap(), 9, 254);
        assert_eq!((h.header.destination_prefix_length, h.header.scope), (128, RouteScope::Universe));
        assert_eq!(h.header.table, RouteHeader::RT_TABLE_MAIN);
        assert!(!h.attributes.iter().any(|a| matches!(a, RouteAttribute::Table(_))), "main: as before networks");
        let h4 = host_route("10.1.0.5".parse().unwrap(), 9, 254);
        assert_eq!((h4.header.destination_prefix_length, h4.header.scope), (32, RouteScope::Link));
        let t = host_route("10.1.0.5".parse().unwrap(), 9, 0x5700_0064);
        assert_eq!(t.header.table, 252);
        assert!(t.attributes.contains(&RouteAttribute::Table(0x5700_0064)));
        assert_eq!(t.header.scope, RouteScope::Link);
        let a6 = address("fd00::5".parse().unwrap(), 3);
        assert_eq!(a6.header.prefix_len, 128);
        assert!(a6.attributes.contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        let n = neighbour(gw, [2, 0, 0, 0, 0, 1], 3);
        assert_eq!(n.header.state, NeighbourState::Permanent);
        let g = route_get("fd00::5".parse().unwrap());
        assert_eq!((g.header.address_family, g.header.destination_prefix_length), (AddressFamily::Inet6, 128));
    }

    #[test]
    fn host_veth_gets_no_ipv6_link_local() {
        let m = no_ipv6_autoconf(9);
        assert_eq!(m.header.index, 9);
        let want = AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]);
        assert_eq!(m.attributes, vec![LinkAttribute::AfSpecUnspec(vec![want])]);
    }
}
