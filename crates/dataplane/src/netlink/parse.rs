//! Reading what the kernel sends back: splitting datagrams into messages, walking attributes, acks and errors,
//! and turning dumped neighbours, FDB entries, nexthops and routes into weft's types.
//!
//! Every parser is also a filter: it returns `None` for entries that are not weft's (a learned neighbour, another
//! link's FDB, a route of another protocol or table, a nexthop group), so the kernel's filtering, which depends on
//! NETLINK_GET_STRICT_CHK and differs between kernels, is never relied upon for correctness.
use super::wire::*;
use crate::{Fdb, Neigh, Nexthop, Route, RouteTarget, RTPROT_WEFT};
use ipnet::IpNet;
use std::net::IpAddr;

/// One message inside a datagram from the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// The whole message, header included (for netlink-packet-route's parser).
    pub raw: &'a [u8],
    pub payload: &'a [u8],
}

/// Splits a datagram into messages; stops at the first malformed one.
pub fn frames(mut buf: &[u8]) -> impl Iterator<Item = Frame<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < HDR_LEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < HDR_LEN || len > buf.len() {
            return None;
        }
        let f = Frame {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            raw: &buf[..len],
            payload: &buf[HDR_LEN..len],
        };
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(f)
    })
}

/// Iterates the attributes of a payload that starts with a `fixed`-byte header: (type, value).
pub fn attrs(payload: &[u8], fixed: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut buf = payload.get(fixed..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        if len < 4 || len > buf.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff; // strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
        let value = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((ty, value))
    })
}

/// The errno (0 for an ack) and the kernel's extended-ack message of an NLMSG_ERROR payload.
pub fn error_of(frame: &Frame<'_>) -> (i32, Option<String>) {
    let p = frame.payload;
    let Some(code) = p.get(0..4).map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes"))) else {
        return (-libc::EINVAL, None);
    };
    if frame.flags & NLM_F_ACK_TLVS == 0 {
        return (-code, None);
    }
    // With NLM_F_CAPPED only the original header follows, else the whole original message.
    let orig_len = if frame.flags & NLM_F_CAPPED != 0 {
        HDR_LEN
    } else {
        p.get(4..8).map_or(HDR_LEN, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    let msg = attrs(p, 4 + orig_len.next_multiple_of(4))
        .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
        .map(|(_, v)| String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(v)).into_owned());
    (-code, msg)
}

fn ip_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
        _ => None,
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(0..4)?.try_into().ok()?))
}

fn mac_of(v: &[u8]) -> Option<[u8; 6]> {
    v.try_into().ok()
}

/// A permanent IPv4/IPv6 neighbour on `ifindex`, or None for anything else (learned entries, other links).
pub fn parse_neigh(payload: &[u8], ifindex: u32) -> Option<Neigh> {
    let h = payload.get(..12)?;
    let (fam, ifi, state) = (h[0], u32::from_ne_bytes(h[4..8].try_into().ok()?), u16::from_ne_bytes([h[8], h[9]]));
    if (fam != AF_INET && fam != AF_INET6) || ifi != ifindex || state & NUD_PERMANENT == 0 {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    for (ty, v) in attrs(payload, 12) {
        match ty {
            NDA_DST => ip = ip_of(v),
            NDA_LLADDR => mac = mac_of(v),
            _ => {}
        }
    }
    Some(Neigh { ifindex, ip: ip?, mac: mac? })
}

/// An FDB entry of `ifindex` that has a destination (the VXLAN device's own default entries have none).
pub fn parse_fdb(payload: &[u8], ifindex: u32) -> Option<Fdb> {
    let h = payload.get(..12)?;
    if h[0] != AF_BRIDGE || u32::from_ne_bytes(h[4..8].try_into().ok()?) != ifindex {
        return None;
    }
    let (mut dst, mut mac) = (None, None);
    for (ty, v) in attrs(payload, 12) {
        match ty {
            NDA_DST => dst = ip_of(v),
            NDA_LLADDR => mac = mac_of(v),
            _ => {}
        }
    }
    Some(Fdb { ifindex, mac: mac?, dst: dst? })
}

/// A weft nexthop (protocol RTPROT_WEFT) with a gateway and a device; groups and blackholes are not ours.
pub fn parse_nexthop(payload: &[u8]) -> Option<Nexthop> {
    let h = payload.get(..8)?;
    if h[2] != RTPROT_WEFT {
        return None;
    }
    let onlink = u32::from_ne_bytes(h[4..8].try_into().ok()?) & RTNH_F_ONLINK != 0;
    let (mut id, mut oif, mut gw) = (None, None, None);
    for (ty, v) in attrs(payload, 8) {
        match ty {
            NHA_ID => id = u32_of(v),
            NHA_OIF => oif = u32_of(v),
            NHA_GATEWAY => gw = ip_of(v),
            _ => {}
        }
    }
    Some(Nexthop { id: id?, gateway: gw?, ifindex: oif?, onlink })
}

/// A weft unicast route of the main table, or None.
pub fn parse_route(payload: &[u8]) -> Option<Route> {
    let h = payload.get(..12)?;
    let (fam, dst_len, table, proto, kind) = (h[0], h[1], h[4], h[5], h[7]);
    let onlink = u32::from_ne_bytes(h[8..12].try_into().ok()?) & RTNH_F_ONLINK != 0;
    if proto != RTPROT_WEFT || kind != RTN_UNICAST {
        return None;
    }
    let (mut dst, mut nh, mut gw, mut oif, mut table32) = (None, None, None, None, None);
    for (ty, v) in attrs(payload, 12) {
        match ty {
            RTA_DST => dst = ip_of(v),
            RTA_NH_ID => nh = u32_of(v),
            RTA_GATEWAY => gw = ip_of(v),
            RTA_OIF => oif = u32_of(v),
            RTA_TABLE => table32 = u32_of(v),
            _ => {}
        }
    }
    if table32.unwrap_or(u32::from(table)) != u32::from(RT_TABLE_MAIN) {
        return None;
    }
    let dst = match dst {
        Some(ip) => IpNet::new(ip, dst_len).ok()?,
        None if fam == AF_INET => IpNet::new(IpAddr::from([0u8; 4]), 0).ok()?,
        None => IpNet::new(IpAddr::from([0u8; 16]), 0).ok()?,
    };
    let target = match nh {
        Some(id) => RouteTarget::Nexthop(id),
        None => RouteTarget::Via { gateway: gw?, ifindex: oif?, onlink },
    };
    Some(Route { dst, target })
}

/// A weft rule (FRA_PROTOCOL = weft) that looks up a table, or None.
pub fn parse_rule(payload: &[u8]) -> Option<crate::networks::Rule> {
    let h = payload.get(..12)?;
    let (fam, dst_len, table8, action) = (h[0], h[1], h[4], h[7]);
    if (fam != AF_INET && fam != AF_INET6) || action != FR_ACT_TO_TBL {
        return None;
    }
    let (mut proto, mut prio, mut table, mut mark, mut mask, mut iif, mut dst) = (0, 0, None, None, None, None, None);
    for (ty, v) in attrs(payload, 12) {
        match ty {
            FRA_PROTOCOL => proto = *v.first()?,
            FRA_PRIORITY => prio = u32_of(v)?,
            FRA_TABLE => table = u32_of(v),
            FRA_FWMARK => mark = u32_of(v),
            FRA_FWMASK => mask = u32_of(v),
            FRA_IIFNAME => iif = Some(String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(v)).into_owned()),
            FRA_DST => dst = ip_of(v).and_then(|ip| IpNet::new(ip, dst_len).ok()),
            _ => {}
        }
    }
    if proto != RTPROT_WEFT {
        return None;
    }
    Some(crate::networks::Rule {
        v6: fam == AF_INET6,
        priority: prio,
        fwmark: mark.map(|m| (m, mask.unwrap_or(u32::MAX))),
        iif,
        dst,
        table: table.unwrap_or(u32::from(table8)),
    })
}

/// A weft route of a tenant table that is ours: unreachable, or via a gateway on one of `devices`.
pub fn parse_table_route(payload: &[u8], devices: &[u32]) -> Option<crate::networks::TableRoute> {
    use crate::networks::{is_tenant_table, TableRoute, TableRouteKind};
    let h = payload.get(..12)?;
    let (fam, dst_len, table8, proto, kind) = (h[0], h[1], h[4], h[5], h[7]);
    if proto != RTPROT_WEFT || (kind != RTN_UNICAST && kind != RTN_UNREACHABLE) {
        return None;
    }
    let (mut dst, mut gw, mut oif, mut table) = (None, None, None, None);
    for (ty, v) in attrs(payload, 12) {
        match ty {
            RTA_DST => dst = ip_of(v),
            RTA_GATEWAY => gw = ip_of(v),
            RTA_OIF => oif = u32_of(v),
            RTA_TABLE => table = u32_of(v),
            _ => {}
        }
    }
    let table = table.unwrap_or(u32::from(table8));
    if !is_tenant_table(table) {
        return None;
    }
    let dst = match dst {
        Some(ip) => IpNet::new(ip, dst_len).ok()?,
        None if fam == AF_INET => IpNet::new(IpAddr::from([0u8; 4]), 0).ok()?,
        None => IpNet::new(IpAddr::from([0u8; 16]), 0).ok()?,
    };
    let kind = if kind == RTN_UNREACHABLE {
        TableRouteKind::Unreachable
    } else {
        let (gateway, ifindex) = (gw?, oif?);
        if !devices.contains(&ifindex) {
            return None; // a pod route (the CNI's) or someone else's
        }
        TableRouteKind::Via { gateway, ifindex }
    };
    Some(TableRoute { table, dst, kind })
}
