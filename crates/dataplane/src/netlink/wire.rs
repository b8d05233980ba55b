//! The rtnetlink wire format of the four hot-path entries (neighbour, FDB, nexthop, route), written by hand
//! (reading them back is [`super::parse`]).
//!
//! Why by hand: these are the messages sent 40 000 at a time at convergence, so they are written straight into
//! the batch buffer without building attribute vectors; netlink-packet-route 0.34 also has no nexthop message at
//! all. The layouts are small and fixed (`struct ndmsg`, `struct rtmsg`, `struct nhmsg` + a few attributes); the
//! tests check neighbour and route bytes against netlink-packet-route's own encoder, and the kernel tests check
//! everything against `ip`. Links and addresses, which are rare, use netlink-packet-route's typed messages.
use crate::{Fdb, Neigh, Nexthop, Route, RouteTarget, RTPROT_WEFT};
use ipnet::IpNet;
use std::net::IpAddr;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_DELNEIGH: u16 = 29;
pub const RTM_GETNEIGH: u16 = 30;
pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
pub const RTM_GETNEXTHOP: u16 = 106;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLM_F_CAPPED: u16 = 0x100;
pub const NLM_F_ACK_TLVS: u16 = 0x200;

pub const AF_INET: u8 = 2;
pub const AF_BRIDGE: u8 = 7;
pub const AF_INET6: u8 = 10;
pub const NUD_PERMANENT: u16 = 0x80;
pub const NTF_SELF: u8 = 0x02;
pub const NDA_DST: u16 = 1;
pub const NDA_LLADDR: u16 = 2;
pub const NDA_IFINDEX: u16 = 8;
pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_TABLE: u16 = 15;
pub const RTA_NH_ID: u16 = 30;
pub const NHA_ID: u16 = 1;
pub const NHA_OIF: u16 = 5;
pub const NHA_GATEWAY: u16 = 6;
pub const RTNH_F_ONLINK: u32 = 4;
pub const RT_TABLE_MAIN: u8 = 254;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_NOWHERE: u8 = 255;
pub const RTN_UNICAST: u8 = 1;
pub const NLMSGERR_ATTR_MSG: u16 = 1;
pub const HDR_LEN: usize = 16;

/// Writes one netlink message into a buffer: header, fixed part, attributes; the length is set by `finish`.
pub struct MsgWriter<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> MsgWriter<'a> {
    pub fn begin(buf: &'a mut Vec<u8>, msg_type: u16, flags: u16, seq: u32) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        MsgWriter { buf, start }
    }

    /// The fixed family header (ndmsg, rtmsg, nhmsg): all are multiples of 4 bytes.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self
    }

    pub fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    pub fn attr_ip(&mut self, ty: u16, ip: IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(a) => self.attr(ty, &a.octets()),
            IpAddr::V6(a) => self.attr(ty, &a.octets()),
        }
    }

    pub fn finish(self) {
        let len = (self.buf.len() - self.start) as u32;
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// Sets or clears NLM_F_ACK on the message starting at `at` (the batcher asks for an ack on a chunk's last one).
pub fn set_ack(buf: &mut [u8], at: usize, ack: bool) {
    let mut flags = u16::from_ne_bytes([buf[at + 6], buf[at + 7]]);
    if ack {
        flags |= NLM_F_ACK
    } else {
        flags &= !NLM_F_ACK
    }
    buf[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
}

/// Sets the sequence number of the message starting at `at`.
pub fn set_seq(buf: &mut [u8], at: usize, seq: u32) {
    buf[at + 8..at + 12].copy_from_slice(&seq.to_ne_bytes());
}

fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

fn ndmsg(family: u8, ifindex: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = family;
    b[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    b[8..10].copy_from_slice(&state.to_ne_bytes());
    b[10] = flags;
    b
}

fn rtmsg(family: u8, dst_len: u8, protocol: u8, scope: u8, kind: u8, flags: u32) -> [u8; 12] {
    let mut b = [family, dst_len, 0, 0, RT_TABLE_MAIN, protocol, scope, kind, 0, 0, 0, 0];
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b
}

fn nhmsg(family: u8, protocol: u8, flags: u32) -> [u8; 8] {
    let mut b = [family, 0, protocol, 0, 0, 0, 0, 0];
    b[4..8].copy_from_slice(&flags.to_ne_bytes());
    b
}

/// `ip neigh replace IP lladdr MAC dev X nud permanent`.
pub fn add_neigh(buf: &mut Vec<u8>, seq: u32, n: &Neigh) {
    let mut w = MsgWriter::begin(buf, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, seq);
    w.fixed(&ndmsg(family(n.ip), n.ifindex, NUD_PERMANENT, 0)).attr_ip(NDA_DST, n.ip).attr(NDA_LLADDR, &n.mac);
    w.finish();
}

pub fn del_neigh(buf: &mut Vec<u8>, seq: u32, n: &Neigh) {
    let mut w = MsgWriter::begin(buf, RTM_DELNEIGH, 0, seq);
    w.fixed(&ndmsg(family(n.ip), n.ifindex, 0, 0)).attr_ip(NDA_DST, n.ip);
    w.finish();
}

/// `bridge fdb append MAC dev X dst IP self permanent`: append, because one MAC may have several destinations
/// and replace would drop the others.
pub fn add_fdb(buf: &mut Vec<u8>, seq: u32, f: &Fdb) {
    let mut w = MsgWriter::begin(buf, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND, seq);
    w.fixed(&ndmsg(AF_BRIDGE, f.ifindex, NUD_PERMANENT, NTF_SELF)).attr(NDA_LLADDR, &f.mac).attr_ip(NDA_DST, f.dst);
    w.finish();
}

pub fn del_fdb(buf: &mut Vec<u8>, seq: u32, f: &Fdb) {
    let mut w = MsgWriter::begin(buf, RTM_DELNEIGH, 0, seq);
    w.fixed(&ndmsg(AF_BRIDGE, f.ifindex, 0, NTF_SELF)).attr(NDA_LLADDR, &f.mac).attr_ip(NDA_DST, f.dst);
    w.finish();
}

/// `ip nexthop replace id ID via GW dev X [onlink] proto weft`.
pub fn add_nexthop(buf: &mut Vec<u8>, seq: u32, n: &Nexthop) {
    let flags = if n.onlink { RTNH_F_ONLINK } else { 0 };
    let mut w = MsgWriter::begin(buf, RTM_NEWNEXTHOP, NLM_F_CREATE | NLM_F_REPLACE, seq);
    w.fixed(&nhmsg(family(n.gateway), RTPROT_WEFT, flags))
        .attr_u32(NHA_ID, n.id)
        .attr_u32(NHA_OIF, n.ifindex)
        .attr_ip(NHA_GATEWAY, n.gateway);
    w.finish();
}

pub fn del_nexthop(buf: &mut Vec<u8>, seq: u32, id: u32) {
    let mut w = MsgWriter::begin(buf, RTM_DELNEXTHOP, 0, seq);
    w.fixed(&nhmsg(0, 0, 0)).attr_u32(NHA_ID, id);
    w.finish();
}

/// `ip route replace DST nhid ID proto weft` (or `via GW dev X [onlink]`), main table.
pub fn add_route(buf: &mut Vec<u8>, seq: u32, r: &Route) {
    let fam = family(r.dst.addr());
    let onlink = matches!(r.target, RouteTarget::Via { onlink: true, .. });
    let flags = if onlink { RTNH_F_ONLINK } else { 0 };
    let mut w = MsgWriter::begin(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq);
    w.fixed(&rtmsg(fam, r.dst.prefix_len(), RTPROT_WEFT, RT_SCOPE_UNIVERSE, RTN_UNICAST, flags))
        .attr_ip(RTA_DST, r.dst.network());
    match r.target {
        RouteTarget::Nexthop(id) => w.attr_u32(RTA_NH_ID, id),
        RouteTarget::Via { gateway, ifindex, .. } => w.attr_ip(RTA_GATEWAY, gateway).attr_u32(RTA_OIF, ifindex),
    };
    w.finish();
}

/// Deletes weft's route to `dst` whatever it points at (protocol must be weft's, so nobody else's route goes).
pub fn del_route(buf: &mut Vec<u8>, seq: u32, dst: &IpNet) {
    let mut w = MsgWriter::begin(buf, RTM_DELROUTE, 0, seq);
    w.fixed(&rtmsg(family(dst.addr()), dst.prefix_len(), RTPROT_WEFT, RT_SCOPE_NOWHERE, 0, 0))
        .attr_ip(RTA_DST, dst.network());
    w.finish();
}

/// Dump requests, shaped for NETLINK_GET_STRICT_CHK (the kernel then filters; we filter again in userspace).
pub fn dump_neigh(buf: &mut Vec<u8>, seq: u32, fam: u8, ifindex: u32) {
    let mut w = MsgWriter::begin(buf, RTM_GETNEIGH, NLM_F_DUMP, seq);
    w.fixed(&ndmsg(fam, if fam == AF_BRIDGE { ifindex } else { 0 }, 0, 0));
    if fam != AF_BRIDGE {
        w.attr_u32(NDA_IFINDEX, ifindex);
    }
    w.finish();
}

pub fn dump_neighbours(buf: &mut Vec<u8>, seq: u32, ifindex: u32) {
    dump_neigh(buf, seq, 0, ifindex)
}

pub fn dump_fdb(buf: &mut Vec<u8>, seq: u32, ifindex: u32) {
    dump_neigh(buf, seq, AF_BRIDGE, ifindex)
}

pub fn dump_nexthops(buf: &mut Vec<u8>, seq: u32) {
    let mut w = MsgWriter::begin(buf, RTM_GETNEXTHOP, NLM_F_DUMP, seq);
    w.fixed(&nhmsg(0, 0, 0));
    w.finish();
}

pub fn dump_routes(buf: &mut Vec<u8>, seq: u32, v6: bool) {
    let fam = if v6 { AF_INET6 } else { AF_INET };
    let mut w = MsgWriter::begin(buf, RTM_GETROUTE, NLM_F_DUMP, seq);
    w.fixed(&rtmsg(fam, 0, RTPROT_WEFT, 0, 0, 0)).attr_u32(RTA_TABLE, u32::from(RT_TABLE_MAIN));
    w.finish();
}

// Tenant networks: rules and routes in a given table (see `crate::networks`).

pub const RTM_NEWRULE: u16 = 32;
pub const RTM_DELRULE: u16 = 33;
pub const RTM_GETRULE: u16 = 34;
pub const NLM_F_EXCL: u16 = 0x200;
pub const FRA_DST: u16 = 1;
pub const FRA_IIFNAME: u16 = 3;
pub const FRA_PRIORITY: u16 = 6;
pub const FRA_FWMARK: u16 = 10;
pub const FRA_TABLE: u16 = 15;
pub const FRA_FWMASK: u16 = 16;
pub const FRA_PROTOCOL: u16 = 21;
pub const FR_ACT_TO_TBL: u8 = 1;
pub const RT_TABLE_UNSPEC: u8 = 0;
pub const RTN_UNREACHABLE: u8 = 7;

/// `struct fib_rule_hdr`: family, dst_len, src_len, tos, table, res1, res2, action, flags.
fn fib_rule_hdr(v6: bool, dst_len: u8, action: u8) -> [u8; 12] {
    [if v6 { AF_INET6 } else { AF_INET }, dst_len, 0, 0, RT_TABLE_UNSPEC, 0, 0, action, 0, 0, 0, 0]
}

fn rule_msg(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, r: &crate::networks::Rule) {
    let mut w = MsgWriter::begin(buf, ty, flags, seq);
    w.fixed(&fib_rule_hdr(r.v6, r.dst.map_or(0, |d| d.prefix_len()), FR_ACT_TO_TBL))
        .attr_u32(FRA_PRIORITY, r.priority)
        .attr_u32(FRA_TABLE, r.table)
        .attr(FRA_PROTOCOL, &[RTPROT_WEFT]);
    if let Some((mark, mask)) = r.fwmark {
        w.attr_u32(FRA_FWMARK, mark).attr_u32(FRA_FWMASK, mask);
    }
    if let Some(iif) = &r.iif {
        let mut name = iif.as_bytes().to_vec();
        name.push(0);
        w.attr(FRA_IIFNAME, &name);
    }
    if let Some(dst) = r.dst {
        w.attr_ip(FRA_DST, dst.network());
    }
    w.finish();
}

/// `ip rule add ... proto weft`, exclusively: without NLM_F_EXCL the kernel would add a duplicate.
pub fn add_rule(buf: &mut Vec<u8>, seq: u32, r: &crate::networks::Rule) {
    rule_msg(buf, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, seq, r)
}

/// `ip rule del ...` with every attribute, so only this rule goes.
pub fn del_rule(buf: &mut Vec<u8>, seq: u32, r: &crate::networks::Rule) {
    rule_msg(buf, RTM_DELRULE, 0, seq, r)
}

pub fn dump_rules(buf: &mut Vec<u8>, seq: u32, v6: bool) {
    let mut w = MsgWriter::begin(buf, RTM_GETRULE, NLM_F_DUMP, seq);
    w.fixed(&fib_rule_hdr(v6, 0, 0));
    w.finish();
}

/// `ip route replace DST via GW dev X onlink table T proto weft` or `ip route replace unreachable DST table T`.
pub fn add_table_route(buf: &mut Vec<u8>, seq: u32, r: &crate::networks::TableRoute) {
    use crate::networks::TableRouteKind;
    let fam = family(r.dst.addr());
    let (kind, flags) = match r.kind {
        TableRouteKind::Via { .. } => (RTN_UNICAST, RTNH_F_ONLINK),
        TableRouteKind::Unreachable => (RTN_UNREACHABLE, 0),
    };
    let mut hdr = rtmsg(fam, r.dst.prefix_len(), RTPROT_WEFT, RT_SCOPE_UNIVERSE, kind, flags);
    hdr[4] = RT_TABLE_UNSPEC;
    let mut w = MsgWriter::begin(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq);
    w.fixed(&hdr).attr_u32(RTA_TABLE, r.table).attr_ip(RTA_DST, r.dst.network());
    if let TableRouteKind::Via { gateway, ifindex } = r.kind {
        w.attr_ip(RTA_GATEWAY, gateway).attr_u32(RTA_OIF, ifindex);
    }
    w.finish();
}

/// Deletes weft's route to `dst` in table `table` (protocol weft, so the CNI's pod routes, which are host routes
/// to other prefixes anyway, are never hit by accident).
pub fn del_table_route(buf: &mut Vec<u8>, seq: u32, r: &crate::networks::TableRoute) {
    let mut hdr = rtmsg(family(r.dst.addr()), r.dst.prefix_len(), RTPROT_WEFT, RT_SCOPE_NOWHERE, 0, 0);
    hdr[4] = RT_TABLE_UNSPEC;
    let mut w = MsgWriter::begin(buf, RTM_DELROUTE, 0, seq);
    w.fixed(&hdr).attr_u32(RTA_TABLE, r.table).attr_ip(RTA_DST, r.dst.network());
    w.finish();
}

/// Every weft route of a family in every table (the parser keeps the tenant tables).
pub fn dump_all_routes(buf: &mut Vec<u8>, seq: u32, v6: bool) {
    let fam = if v6 { AF_INET6 } else { AF_INET };
    let mut hdr = rtmsg(fam, 0, RTPROT_WEFT, 0, 0, 0);
    hdr[4] = RT_TABLE_UNSPEC; // every table (strict checking would filter on main otherwise)
    let mut w = MsgWriter::begin(buf, RTM_GETROUTE, NLM_F_DUMP, seq);
    w.fixed(&hdr);
    w.finish();
}
