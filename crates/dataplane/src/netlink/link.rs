//! Links and addresses: the VXLAN device (ensure, delete) and the underlay lookup.
//!
//! These run a handful of times per agent start, so they use netlink-packet-route's typed messages (readable,
//! checked) sent one at a time over the same socket as the batches. "Ensure" means: read what exists, keep it if
//! it matches, change in place what can change (MTU, up, addresses), recreate only when an attribute the kernel
//! cannot change on a live VXLAN device differs (VNI, UDP port, local address, underlay link, learning).
use super::socket::{NlError, NlSocket};
use super::wire::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use crate::{DataplaneError, Mac, UnderlayInfo, VtepInfo, VxlanSpec};
use ipnet::IpNet;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

const NLM_F_EXCL: u16 = 0x200;

fn nl(context: &str) -> impl FnOnce(NlError) -> DataplaneError + '_ {
    move |e| DataplaneError::Netlink(format!("{context}: {e}"))
}

/// Writes a typed message with the given flags (NLM_F_REQUEST is implied).
fn encode(buf: &mut Vec<u8>, seq: u32, msg: RouteNetlinkMessage, flags: u16) {
    let mut header = NetlinkHeader::default();
    header.flags = flags | super::wire::NLM_F_REQUEST;
    header.sequence_number = seq;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let at = buf.len();
    buf.resize(at + m.buffer_len(), 0);
    m.serialize(&mut buf[at..]);
}

fn inner(raw: &[u8]) -> Option<RouteNetlinkMessage> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw).ok()?.payload {
        NetlinkPayload::InnerMessage(m) => Some(m),
        _ => None,
    }
}

fn send(sock: &mut NlSocket, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NlError> {
    sock.request(|b, seq| encode(b, seq, msg, flags), |_| {})
}

/// The link called `name` or with index `index`; None when it does not exist.
fn get_link(sock: &mut NlSocket, name: Option<&str>, index: u32) -> Result<Option<LinkMessage>, NlError> {
    let mut req = LinkMessage::default();
    req.header.index = index;
    if let Some(name) = name {
        req.attributes.push(LinkAttribute::IfName(name.to_string()));
    }
    let mut found = None;
    let res = sock.request(
        |b, seq| encode(b, seq, RouteNetlinkMessage::GetLink(req), 0),
        |f| {
            if let Some(RouteNetlinkMessage::NewLink(l)) = inner(f.raw) {
                found = Some(l);
            }
        },
    );
    match res {
        Ok(()) => Ok(found),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn addresses(sock: &mut NlSocket, index: u32) -> Result<Vec<AddressMessage>, NlError> {
    let mut req = AddressMessage::default();
    req.header.index = index;
    let msg = RouteNetlinkMessage::GetAddress(req);
    sock.dump(
        |b, seq| encode(b, seq, msg.clone(), NLM_F_DUMP),
        |f| match inner(f.raw) {
            Some(RouteNetlinkMessage::NewAddress(a)) if index == 0 || a.header.index == index => Some(a),
            _ => None,
        },
    )
}

/// The address (with prefix) an address message carries: IFA_LOCAL for IPv4 (IFA_ADDRESS is the peer on
/// point-to-point links), IFA_ADDRESS for IPv6.
fn address_of(a: &AddressMessage) -> Option<IpNet> {
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    IpNet::new(local.or(address)?, a.header.prefix_len).ok()
}

fn vxlan_attrs(link: &LinkMessage) -> Option<&Vec<InfoVxlan>> {
    let infos = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    })?;
    infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
        _ => None,
    })
}

/// Whether an existing link is the VXLAN device `spec` describes, in every attribute that cannot change live.
fn matches_spec(link: &LinkMessage, spec: &VxlanSpec) -> bool {
    let Some(attrs) = vxlan_attrs(link) else { return false };
    let has = |want: &InfoVxlan| attrs.contains(want);
    let local = match spec.local {
        IpAddr::V4(a) => InfoVxlan::Local(a),
        IpAddr::V6(a) => InfoVxlan::Local6(a),
    };
    has(&InfoVxlan::Id(spec.vni))
        && has(&InfoVxlan::Port(spec.port))
        && has(&local)
        && has(&InfoVxlan::Link(spec.underlay_ifindex))
        && has(&InfoVxlan::Learning(false))
}

fn mtu_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

fn mac_of(link: &LinkMessage) -> Option<Mac> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
        _ => None,
    })
}

fn create_vxlan(sock: &mut NlSocket, spec: &VxlanSpec, mac: Option<Mac>) -> Result<(), NlError> {
    let local = match spec.local {
        IpAddr::V4(a) => InfoVxlan::Local(a),
        IpAddr::V6(a) => InfoVxlan::Local6(a),
    };
    let data = vec![
        InfoVxlan::Id(spec.vni),
        local,
        InfoVxlan::Link(spec.underlay_ifindex),
        InfoVxlan::Port(spec.port),
        InfoVxlan::Learning(false),
    ];
    let mut m = LinkMessage::default();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::IfName(spec.name.clone()));
    m.attributes.push(LinkAttribute::Mtu(spec.mtu));
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    m.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Vxlan), LinkInfo::Data(InfoData::Vxlan(data))]));
    send(sock, RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
}

fn delete_index(sock: &mut NlSocket, index: u32) -> Result<(), NlError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    match send(sock, RouteNetlinkMessage::DelLink(m), 0) {
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
        other => other,
    }
}

pub fn ensure_vxlan(sock: &mut NlSocket, spec: &VxlanSpec) -> Result<VtepInfo, DataplaneError> {
    ensure_vxlan_with_mac(sock, spec, None)
}

/// [`ensure_vxlan`] with a fixed MAC (tenant devices carry the default device's): a device with another MAC is
/// recreated (rare: only after the default device itself was recreated).
pub fn ensure_vxlan_with_mac(
    sock: &mut NlSocket,
    spec: &VxlanSpec,
    mac: Option<Mac>,
) -> Result<VtepInfo, DataplaneError> {
    let existing = get_link(sock, Some(&spec.name), 0).map_err(nl("reading link"))?;
    let link = match existing {
        Some(l) if matches_spec(&l, spec) && mac.is_none_or(|m| mac_of(&l) == Some(m)) => l,
        other => {
            if let Some(old) = other {
                delete_index(sock, old.header.index).map_err(nl("deleting mismatched vxlan"))?;
            }
            create_vxlan(sock, spec, mac).map_err(nl("creating vxlan"))?;
            get_link(sock, Some(&spec.name), 0)
                .map_err(nl("reading link"))?
                .ok_or_else(|| DataplaneError::NoSuchLink(spec.name.clone()))?
        }
    };
    let ifindex = link.header.index;
    if mtu_of(&link) != Some(spec.mtu) || !link.header.flags.contains(LinkFlags::Up) {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::Mtu(spec.mtu));
        send(sock, RouteNetlinkMessage::SetLink(m), 0).map_err(nl("setting mtu/up"))?;
    }
    let want: Vec<IpNet> = spec.address.iter().chain(spec.address6.iter()).copied().collect();
    ensure_addresses(sock, ifindex, &want)?;
    let mac = mac_of(&link).ok_or_else(|| DataplaneError::Netlink(format!("{} has no MAC address", spec.name)))?;
    Ok(VtepInfo { ifindex, mac })
}

/// Makes the link's addresses exactly `want` (IPv6 link-local ones, which the kernel manages, are left alone).
fn ensure_addresses(sock: &mut NlSocket, ifindex: u32, want: &[IpNet]) -> Result<(), DataplaneError> {
    let have = addresses(sock, ifindex).map_err(nl("reading addresses"))?;
    for a in &have {
        let Some(net) = address_of(a) else { continue };
        let link_local = matches!(net.addr(), IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !link_local && !want.contains(&net) {
            match send(sock, RouteNetlinkMessage::DelAddress(a.clone()), 0) {
                Err(e) if e.errno() != Some(libc::EADDRNOTAVAIL) => return Err(nl("deleting stale address")(e)),
                _ => {}
            }
        }
    }
    for net in want {
        if have.iter().any(|a| address_of(a) == Some(*net)) {
            continue;
        }
        let mut m = AddressMessage::default();
        m.header.index = ifindex;
        m.header.prefix_len = net.prefix_len();
        m.header.family = if net.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        if net.addr().is_ipv6() {
            // No duplicate address detection: the address is a /128 only weft uses, and DAD would keep it
            // "tentative" (unusable as a source) for a second after every start.
            m.header.flags = AddressHeaderFlags::Nodad;
        } else {
            m.attributes.push(AddressAttribute::Local(net.addr()));
        }
        m.attributes.push(AddressAttribute::Address(net.addr()));
        send(sock, RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_REPLACE).map_err(nl("adding address"))?;
    }
    Ok(())
}

pub fn link_index(sock: &mut NlSocket, name: &str) -> Result<Option<u32>, DataplaneError> {
    Ok(get_link(sock, Some(name), 0).map_err(nl("reading link"))?.map(|l| l.header.index))
}

pub fn delete_link(sock: &mut NlSocket, name: &str) -> Result<(), DataplaneError> {
    match get_link(sock, Some(name), 0).map_err(nl("reading link"))? {
        Some(l) => delete_index(sock, l.header.index).map_err(nl("deleting link")),
        None => Ok(()),
    }
}

pub fn underlay(sock: &mut NlSocket, ip: IpAddr) -> Result<UnderlayInfo, DataplaneError> {
    let all = addresses(sock, 0).map_err(nl("reading addresses"))?;
    let (index, network) = all
        .iter()
        .find_map(|a| address_of(a).filter(|n| n.addr() == ip).map(|n| (a.header.index, n)))
        .ok_or(DataplaneError::NoUnderlay(ip))?;
    let link = get_link(sock, None, index).map_err(nl("reading link"))?.ok_or(DataplaneError::NoUnderlay(ip))?;
    let name = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Ok(UnderlayInfo { ifindex: index, name, mtu: mtu_of(&link).unwrap_or(0), network })
}
