//! Removing every conntrack entry of one zone, over ctnetlink (`NETLINK_NETFILTER`).
//!
//! Why: a tenant network's packets live in the conntrack zone of its node-local mark slot. When the slot is
//! freed and later given to another network, entries the old network left (an established TCP connection lives
//! for days) would be found by the new network's packets: a reply accepted as `established`, a masqueraded
//! reply's mark restored into the new network's table.
//!
//! How: a dump of the whole table, then a delete per entry of the zone, by its original tuple exactly as the
//! kernel dumped it (the raw nest is sent back, zone attribute included), batched. Not one flush request with a
//! `CTA_ZONE` filter: kernels before that filter existed ignore the attribute and flush *every* zone, which
//! would drop every connection of the node, masqueraded ones included. An entry's zone is dumped as `CTA_ZONE`
//! when it holds in both directions (`ct zone set`), or inside a tuple as `CTA_TUPLE_ZONE` when it holds in one
//! (`ct original zone set`); both count.
use super::parse::{attrs, Frame};
use super::socket::{Batch, NlError, NlSocket};
use super::wire::{MsgWriter, NLM_F_ACK, NLM_F_DUMP};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | 1;
const IPCTNL_MSG_CT_DELETE: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;
const CTA_ZONE: u16 = 18;
const NLA_F_NESTED: u16 = 0x8000;
/// `struct nfgenmsg` for every family, version 0, resource id 0.
const NFGEN_UNSPEC: [u8; 4] = [0, 0, 0, 0];

/// One entry of the zone, as needed to delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneEntry {
    pub family: u8,
    /// The value of the dumped `CTA_TUPLE_ORIG` nest (with its `CTA_TUPLE_ZONE` if the zone is one-way).
    pub orig: Vec<u8>,
    /// The zone holds in both directions: the delete names it in `CTA_ZONE`.
    pub both_ways: bool,
}

fn be16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(0..2)?.try_into().ok()?))
}

/// The entry a dumped message describes, if it is in `zone`.
pub fn entry_in_zone(f: &Frame<'_>, zone: u16) -> Option<ZoneEntry> {
    let family = *f.payload.first()?;
    let (mut orig, mut both_ways, mut one_way) = (None, false, false);
    for (ty, v) in attrs(f.payload, NFGEN_UNSPEC.len()) {
        match ty {
            CTA_ZONE => both_ways = be16(v) == Some(zone),
            CTA_TUPLE_ORIG | CTA_TUPLE_REPLY => {
                one_way |= attrs(v, 0).any(|(t, z)| t == CTA_TUPLE_ZONE && be16(z) == Some(zone));
                if ty == CTA_TUPLE_ORIG {
                    orig = Some(v.to_vec());
                }
            }
            _ => {}
        }
    }
    (both_ways || one_way).then_some(ZoneEntry { family, orig: orig?, both_ways })
}

/// Deletes every entry of `zone` (any family); returns how many were deleted. An entry gone meanwhile counts
/// as done.
pub fn flush_zone(sock: &mut NlSocket, zone: u16) -> Result<usize, NlError> {
    let dump = |b: &mut Vec<u8>, seq: u32| {
        let mut w = MsgWriter::begin(b, IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq);
        w.fixed(&NFGEN_UNSPEC);
        w.finish();
    };
    let entries = sock.dump(dump, |f| entry_in_zone(f, zone))?;
    if entries.is_empty() {
        return Ok(0);
    }
    let mut batch = Batch::with_capacity(entries.len());
    for e in &entries {
        batch.push(|b, seq| {
            let mut w = MsgWriter::begin(b, IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq);
            w.fixed(&[e.family, 0, 0, 0]);
            w.attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &e.orig);
            if e.both_ways {
                w.attr(CTA_ZONE, &zone.to_be_bytes());
            }
            w.finish();
        });
    }
    let mut deleted = 0;
    for r in sock.execute(batch) {
        match r {
            Ok(()) => deleted += 1,
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut b = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(v);
        b.resize(b.len().next_multiple_of(4), 0);
        b
    }

    fn frame(payload: &[u8]) -> Frame<'_> {
        Frame { ty: IPCTNL_MSG_CT_GET, flags: 0, seq: 1, raw: payload, payload }
    }

    #[test]
    fn entries_are_matched_by_either_kind_of_zone_and_keep_their_tuple() {
        let ip = attr(1 | NLA_F_NESTED, &attr(1, &[10, 50, 1, 2]));
        let one_way: Vec<u8> = [ip.clone(), attr(CTA_TUPLE_ZONE, &7u16.to_be_bytes())].concat();
        // `ct original zone set 7`: the zone is inside the original tuple only.
        let mut p = vec![2, 0, 0, 0];
        p.extend(attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &one_way));
        p.extend(attr(CTA_TUPLE_REPLY | NLA_F_NESTED, &ip));
        let e = entry_in_zone(&frame(&p), 7).expect("in zone 7");
        assert_eq!((e.family, e.both_ways, e.orig.as_slice()), (2, false, one_way.as_slice()));
        assert!(entry_in_zone(&frame(&p), 8).is_none());
        // `ct zone set 7`: both ways, in CTA_ZONE.
        let mut p = vec![10, 0, 0, 0];
        p.extend(attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &ip));
        p.extend(attr(CTA_ZONE, &7u16.to_be_bytes()));
        let e = entry_in_zone(&frame(&p), 7).expect("in zone 7");
        assert_eq!((e.family, e.both_ways, e.orig.as_slice()), (10, true, ip.as_slice()));
        // Zone 0 (no zone attribute) and garbage are never matched.
        let mut p = vec![2, 0, 0, 0];
        p.extend(attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &ip));
        assert!(entry_in_zone(&frame(&p), 0).is_none() && entry_in_zone(&frame(&p), 7).is_none());
        assert!(entry_in_zone(&frame(&[]), 7).is_none());
        assert!(entry_in_zone(&frame(&[2, 0, 0, 0, 0xff, 0xff]), 7).is_none());
    }
}
