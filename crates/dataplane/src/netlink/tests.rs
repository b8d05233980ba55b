//! Wire-format tests without a kernel: our hand-written requests are byte-identical to netlink-packet-route's
//! encoder where it has the message, and what we write reads back to the same entry (dumps use the same layout
//! as the requests that create the entries).
use super::parse::*;
use super::wire::*;
use crate::{Fdb, Neigh, Nexthop, Route, RouteTarget};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr};

fn reference(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let mut buf = vec![0; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

fn one(encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::new();
    encode(&mut buf);
    buf
}

fn payload(msg: &[u8]) -> &[u8] {
    let f = frames(msg).next().expect("one message");
    assert_eq!(f.raw.len(), msg.len());
    f.payload
}

const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 0);

#[test]
fn neighbour_matches_netlink_packet_route() {
    let n = Neigh { ifindex: 7, ip: IpAddr::V4(GW), mac: [2, 0xbb, 0, 0, 0, 9] };
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = 7;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(GW)));
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()));
    let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE;
    assert_eq!(one(|b| add_neigh(b, 42, &n)), reference(RouteNetlinkMessage::NewNeighbour(m), flags, 42));
}

#[test]
fn routes_match_netlink_packet_route() {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 24;
    m.header.table = 254;
    m.header.protocol = RouteProtocol::from(201);
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(GW)));
    let mut via = m.clone();
    m.attributes.push(RouteAttribute::NhId(9));
    let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE;
    let r = Route { dst: "10.244.2.0/24".parse().unwrap(), target: RouteTarget::Nexthop(9) };
    assert_eq!(one(|b| add_route(b, 1, &r)), reference(RouteNetlinkMessage::NewRoute(m), flags, 1));

    via.header.flags = RouteFlags::Onlink;
    via.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(GW)));
    via.attributes.push(RouteAttribute::Oif(7));
    let r = Route { dst: r.dst, target: RouteTarget::Via { gateway: IpAddr::V4(GW), ifindex: 7, onlink: true } };
    assert_eq!(one(|b| add_route(b, 2, &r)), reference(RouteNetlinkMessage::NewRoute(via), flags, 2));
}

#[test]
fn what_we_write_reads_back() {
    let n6 = Neigh { ifindex: 7, ip: "fd00::1".parse().unwrap(), mac: [2, 0, 0, 0, 0, 1] };
    assert_eq!(parse_neigh(payload(&one(|b| add_neigh(b, 1, &n6))), 7), Some(n6));
    let f = Fdb { ifindex: 7, mac: [2, 0, 0, 0, 0, 2], dst: "192.168.0.9".parse().unwrap() };
    assert_eq!(parse_fdb(payload(&one(|b| add_fdb(b, 1, &f))), 7), Some(f));
    for onlink in [true, false] {
        let nh = Nexthop { id: 77, gateway: "fd00::9".parse().unwrap(), ifindex: 7, onlink };
        assert_eq!(parse_nexthop(payload(&one(|b| add_nexthop(b, 1, &nh)))), Some(nh));
    }
    let r = Route { dst: "fd00:244:2::/64".parse().unwrap(), target: RouteTarget::Nexthop(3) };
    assert_eq!(parse_route(payload(&one(|b| add_route(b, 1, &r)))), Some(r));
}

#[test]
fn parsers_skip_what_is_not_ours() {
    let n = Neigh { ifindex: 7, ip: IpAddr::V4(GW), mac: [2, 0, 0, 0, 0, 1] };
    let msg = one(|b| add_neigh(b, 1, &n));
    assert_eq!(parse_neigh(payload(&msg), 8), None, "another link");
    let mut learned = msg.clone();
    learned[HDR_LEN + 8..HDR_LEN + 10].copy_from_slice(&0x02u16.to_ne_bytes()); // NUD_REACHABLE
    assert_eq!(parse_neigh(payload(&learned), 7), None, "not permanent");

    let r = Route { dst: "10.244.2.0/24".parse().unwrap(), target: RouteTarget::Nexthop(3) };
    let mut other = one(|b| add_route(b, 1, &r));
    other[HDR_LEN + 5] = 4; // RTPROT_STATIC
    assert_eq!(parse_route(payload(&other)), None, "someone else's route");
    let mut local_table = one(|b| add_route(b, 1, &r));
    local_table[HDR_LEN + 4] = 255;
    assert_eq!(parse_route(payload(&local_table)), None, "another table");

    let nh = Nexthop { id: 1, gateway: IpAddr::V4(GW), ifindex: 7, onlink: true };
    let mut foreign = one(|b| add_nexthop(b, 1, &nh));
    foreign[HDR_LEN + 2] = 4;
    assert_eq!(parse_nexthop(payload(&foreign)), None, "someone else's nexthop");
}

#[test]
fn batches_split_into_frames_and_flags_can_be_patched() {
    let n = Neigh { ifindex: 7, ip: IpAddr::V4(GW), mac: [2, 0, 0, 0, 0, 1] };
    let mut buf = Vec::new();
    add_neigh(&mut buf, 5, &n);
    let second = buf.len();
    del_route(&mut buf, 6, &"10.244.2.0/24".parse().unwrap());
    set_ack(&mut buf, second, true);
    set_seq(&mut buf, second, 99);
    let fs: Vec<_> = frames(&buf).collect();
    assert_eq!(fs.len(), 2);
    assert_eq!((fs[0].ty, fs[0].seq, fs[0].flags & NLM_F_ACK), (RTM_NEWNEIGH, 5, 0));
    assert_eq!((fs[1].ty, fs[1].seq, fs[1].flags & NLM_F_ACK), (RTM_DELROUTE, 99, NLM_F_ACK));
}

#[test]
fn error_messages_carry_errno_and_extended_ack_text() {
    // NLMSG_ERROR, capped, with TLVs: errno -ENOENT, original header, NLMSGERR_ATTR_MSG "Nexthop id does not exist".
    let text = b"Nexthop id does not exist\0";
    let mut buf = Vec::new();
    let mut w = MsgWriter::begin(&mut buf, NLMSG_ERROR, 0x100 | 0x200, 3);
    let mut fixed = (-libc::ENOENT).to_ne_bytes().to_vec();
    fixed.extend_from_slice(&[0; HDR_LEN]);
    w.fixed(&fixed).attr(1, text);
    w.finish();
    let f = frames(&buf).next().unwrap();
    assert_eq!(error_of(&f), (libc::ENOENT, Some("Nexthop id does not exist".to_string())));

    let mut ack = Vec::new();
    let mut w = MsgWriter::begin(&mut ack, NLMSG_ERROR, 0x100, 4);
    w.fixed(&[0; 4 + HDR_LEN]);
    w.finish();
    assert_eq!(error_of(&frames(&ack).next().unwrap()), (0, None));
}
