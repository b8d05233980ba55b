//! Reading the kernel back: links, addresses, routes and neighbours of one interface, for CHECK, for the
//! "is this ours?" questions of create, and for the readiness that ADD waits for ([`not_ready`]).
use super::msg::{link_index, route_get};
use super::nl::NlSocket;
use super::{Defaults, LinkObs, NeighObs, RouteObs, MAIN_TABLE};
use crate::DataplaneError;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rt};
use std::net::IpAddr;

pub(super) fn link_by_name(sock: &mut NlSocket, name: &str) -> Result<Option<LinkObs>, DataplaneError> {
    let mut q = LinkMessage::default();
    q.attributes.push(LinkAttribute::IfName(name.to_string()));
    Ok(sock.get(Rt::GetLink(q))?.and_then(link_obs))
}

pub(super) fn link_obs(m: Rt) -> Option<LinkObs> {
    let Rt::NewLink(m) = m else { return None };
    let mut l = LinkObs { index: m.header.index, up: m.header.flags.contains(LinkFlags::Up), ..Default::default() };
    for a in m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n,
            LinkAttribute::Address(a) => l.mac = a.try_into().ok(),
            LinkAttribute::Mtu(m) => l.mtu = m,
            LinkAttribute::Link(p) => l.peer_index = Some(p),
            LinkAttribute::IfAlias(a) => l.alias = Some(a),
            LinkAttribute::Group(g) => l.group = g,
            LinkAttribute::LinkInfo(infos) => l.kind_veth = infos.contains(&LinkInfo::Kind(InfoKind::Veth)),
            _ => {}
        }
    }
    Some(l)
}

/// Every link of the namespace in link group `group` (a dump filtered here: few links, and any kernel).
pub(super) fn links_in_group(sock: &mut NlSocket, group: u32) -> Result<Vec<LinkObs>, DataplaneError> {
    let all = sock.dump(Rt::GetLink(LinkMessage::default()))?;
    Ok(all
        .into_iter()
        .filter(|m| matches!(m, Rt::NewLink(l) if l.attributes.contains(&LinkAttribute::Group(group))))
        .filter_map(link_obs)
        .collect())
}

pub(super) type Side = (Vec<(IpAddr, u8)>, Vec<RouteObs>, Vec<NeighObs>);

/// Addresses, routes of `table` and neighbours that belong to link `idx`.
pub(super) fn side(sock: &mut NlSocket, idx: u32, table: u32) -> Result<Side, DataplaneError> {
    let mut addrs = Vec::new();
    for m in sock.dump(Rt::GetAddress(AddressMessage::default()))? {
        let Rt::NewAddress(a) = m else { continue };
        if a.header.index != idx {
            continue;
        }
        for attr in a.attributes {
            if let AddressAttribute::Address(ip) = attr {
                addrs.push((ip, a.header.prefix_len));
            }
        }
    }
    let mut routes = Vec::new();
    for m in sock.dump(Rt::GetRoute(RouteMessage::default()))? {
        let Rt::NewRoute(r) = m else { continue };
        if let Some(obs) = route_obs(r, table).filter(|o| o.oif == Some(idx)) {
            routes.push(obs);
        }
    }
    let mut neighbours = Vec::new();
    for m in sock.dump(Rt::GetNeighbour(NeighbourMessage::default()))? {
        let Rt::NewNeighbour(n) = m else { continue };
        if n.header.ifindex != idx {
            continue;
        }
        let mut obs = NeighObs {
            ip: IpAddr::from([0, 0, 0, 0]),
            mac: None,
            ifindex: idx,
            permanent: n.header.state == NeighbourState::Permanent,
        };
        let mut has_ip = false;
        for attr in n.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => (obs.ip, has_ip) = (ip.into(), true),
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => (obs.ip, has_ip) = (ip.into(), true),
                NeighbourAttribute::LinkLayerAddress(mac) => obs.mac = mac.try_into().ok(),
                _ => {}
            }
        }
        if has_ip {
            neighbours.push(obs);
        }
    }
    Ok((addrs, routes, neighbours))
}

/// Which families have a default route in the main table that is not on interface `own` (the attachment's own
/// interface, if it exists yet). A default route without an output interface (multipath, blackhole) counts.
pub(super) fn defaults_besides(sock: &mut NlSocket, own: Option<u32>) -> Result<Defaults, DataplaneError> {
    let mut d = Defaults::default();
    for m in sock.dump(Rt::GetRoute(RouteMessage::default()))? {
        let Rt::NewRoute(r) = m else { continue };
        let Some(obs) = route_obs(r, MAIN_TABLE) else { continue };
        if obs.prefix_len == 0 && (obs.oif.is_none() || obs.oif != own) {
            if obs.dst.is_ipv4() {
                d.v4 = true;
            } else {
                d.v6 = true;
            }
        }
    }
    Ok(d)
}

/// The route if it is in `table` (the 8-bit header field, or `RTA_TABLE` for ids above 255).
fn route_obs(r: RouteMessage, table: u32) -> Option<RouteObs> {
    let in_table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    if in_table != table {
        return None;
    }
    let unspecified: IpAddr = match r.header.address_family {
        AddressFamily::Inet => [0u8, 0, 0, 0].into(),
        AddressFamily::Inet6 => [0u16; 8].into(),
        _ => return None,
    };
    let mut obs =
        RouteObs { dst: unspecified, prefix_len: r.header.destination_prefix_length, gateway: None, oif: None };
    let ip = |a: RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::from(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::from(v6)),
        _ => None,
    };
    for attr in r.attributes {
        match attr {
            RouteAttribute::Destination(a) => obs.dst = ip(a)?,
            RouteAttribute::Gateway(a) => obs.gateway = ip(a),
            RouteAttribute::Oif(i) => obs.oif = Some(i),
            _ => {}
        }
    }
    Some(obs)
}

/// What still keeps a configured attachment from delivering its first packet, or `None` when nothing does.
/// Two things the kernel finishes *after* the netlink requests were acked, in workers that a busy node runs late:
/// - an IPv6 address added with `nodad` is listed at once, but its `local` route (what makes the namespace
///   accept packets to it) is only inserted by the addrconf worker; until then every packet to the pod's IPv6
///   address is dropped (IPv4 inserts its local route synchronously; checked anyway, it costs one request);
/// - a link whose carrier came up is only given its transmit queue by the linkwatch worker, which also sets
///   `operstate` UP: before that the kernel drops what the link sends (asking for the link runs pending
///   linkwatch work at once on kernels ≥ 6.8, so this is normally true on the first read).
pub(super) fn not_ready(
    host: &mut NlSocket,
    host_idx: u32,
    pod: &mut NlSocket,
    pod_idx: u32,
    ips: &[IpAddr],
) -> Result<Option<String>, DataplaneError> {
    for (sock, idx, side) in [(&mut *host, host_idx, "host"), (&mut *pod, pod_idx, "pod")] {
        let state = oper_state(sock, idx)?;
        if state != Some(State::Up) {
            return Ok(Some(format!("{side} end of the veth has operstate {state:?}")));
        }
    }
    for ip in ips {
        if !is_local(pod, *ip)? {
            return Ok(Some(format!("{ip} is not yet a local address of the pod")));
        }
    }
    Ok(None)
}

fn oper_state(sock: &mut NlSocket, idx: u32) -> Result<Option<State>, DataplaneError> {
    let Some(Rt::NewLink(m)) = sock.get(Rt::GetLink(link_index(idx)))? else { return Ok(None) };
    Ok(m.attributes.into_iter().find_map(|a| match a {
        LinkAttribute::OperState(s) => Some(s),
        _ => None,
    }))
}

fn is_local(sock: &mut NlSocket, ip: IpAddr) -> Result<bool, DataplaneError> {
    Ok(matches!(sock.get(Rt::GetRoute(route_get(ip)))?, Some(Rt::NewRoute(r)) if r.header.kind == RouteType::Local))
}
