//! TUN offloads: the kernel hands us TCP/UDP "super-packets" of up to 64 KB with a virtio-net header (TSO/USO)
//! and packets whose checksum is left for us (CHECKSUM_PARTIAL). We cut them into MTU-sized packets with
//! correct headers and checksums before encryption: WireGuard encrypts whole IP packets, and the peer's TUN
//! must receive exactly what a NIC would have put on the wire.
//!
//! Pure functions on byte slices, unit-tested against a straightforward checksum.

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr`, little-endian on every architecture we run (virtio 1.0, x86/arm64 TUN default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        if b.len() < 10 {
            return None;
        }
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

/// One's-complement sum of `data` (16-bit big-endian words) added to `sum` (not folded).
///
/// The sum is byte-order independent (RFC 1071): words are added in native order, 32 bits at a time into a
/// 64-bit accumulator (no carries to handle, and the compiler vectorises the loop), folded, and swapped to
/// big-endian once at the end. This runs over every byte we send, so it must be fast.
pub fn csum_add(sum: u64, data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_ne_bytes(tail));
    // Native-order words summed: reading the folded result's bytes as big-endian gives the big-endian sum.
    sum + u64::from(u16::from_be_bytes(csum_fold(acc).to_ne_bytes()))
}

pub fn csum_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Pseudo-header sum for an L4 segment of `l4_len` bytes with protocol `proto` inside IP packet `ip`.
fn pseudo(ip: &[u8], proto: u8, l4_len: usize) -> u64 {
    let mut sum = if ip[0] >> 4 == 4 { csum_add(0, &ip[12..20]) } else { csum_add(0, &ip[8..40]) };
    sum += u64::from(proto);
    sum += l4_len as u64;
    sum
}

fn set_l4_checksum(pkt: &mut [u8], l4: usize, field: usize, proto: u8) {
    pkt[l4 + field..l4 + field + 2].fill(0);
    let sum = csum_add(pseudo(pkt, proto, pkt.len() - l4), &pkt[l4..]);
    let mut c = !csum_fold(sum);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    pkt[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
}

fn fix_ip_header(pkt: &mut [u8], id_add: u16) {
    let total = pkt.len();
    if pkt[0] >> 4 == 4 {
        let ihl = usize::from(pkt[0] & 0xf) * 4;
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let id = u16::from_be_bytes([pkt[4], pkt[5]]).wrapping_add(id_add);
        pkt[4..6].copy_from_slice(&id.to_be_bytes());
        pkt[10..12].fill(0);
        let c = !csum_fold(csum_add(0, &pkt[..ihl]));
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        pkt[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    }
}

/// Cuts super-packets into wire packets in place: segment `i`'s headers are written just in front of its
/// payload, over the tail of segment `i - 1`, which the caller has already consumed (encrypted into the send
/// batch). No copy of the payload is made; only the original headers are kept aside, in a reused buffer.
#[derive(Default)]
pub struct Segmenter {
    headers: Vec<u8>,
}

impl Segmenter {
    /// Calls `emit` with each wire-ready IP packet contained in `pkt` (described by vnet header `hdr`), in
    /// order. `pkt` is overwritten as it goes: each segment is valid only during its `emit`. Malformed input
    /// (offsets out of range, unknown GSO type) yields nothing.
    pub fn split(&mut self, hdr: &[u8], pkt: &mut [u8], mut emit: impl FnMut(&[u8])) {
        let Some(h) = VnetHdr::parse(hdr) else { return };
        let gso = h.gso_type & !GSO_ECN;
        let l4 = usize::from(h.csum_start);
        if gso == GSO_NONE {
            if h.flags & F_NEEDS_CSUM != 0 {
                let field = l4 + usize::from(h.csum_offset);
                if field + 2 > pkt.len() {
                    return;
                }
                let c = !csum_fold(csum_add(0, &pkt[l4..]));
                pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
            }
            emit(pkt);
            return;
        }
        let (proto, l4_hdr) = match gso {
            GSO_TCPV4 | GSO_TCPV6 => {
                if l4 + 20 > pkt.len() {
                    return;
                }
                (6u8, usize::from(pkt[l4 + 12] >> 4) * 4)
            }
            GSO_UDP_L4 => (17u8, 8),
            _ => return,
        };
        let hdrs = l4 + l4_hdr;
        let mss = usize::from(h.gso_size);
        // The IP header must lie before the L4 header (fix_ip_header reads it whole in every segment).
        let ip_ok = match pkt[0] >> 4 {
            4 => (20..=l4).contains(&(usize::from(pkt[0] & 0xf) * 4)),
            6 => l4 >= 40,
            _ => false,
        };
        if mss == 0 || hdrs > pkt.len() || !ip_ok {
            return;
        }
        self.headers.clear();
        self.headers.extend_from_slice(&pkt[..hdrs]);
        let payload_len = pkt.len() - hdrs;
        let seq0 =
            if proto == 6 { u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]]) } else { 0 };
        let count = payload_len.div_ceil(mss).max(1);
        for i in 0..count {
            let start = hdrs + i * mss;
            let end = (start + mss).min(pkt.len());
            let at = start - hdrs;
            if i > 0 {
                pkt[at..start].copy_from_slice(&self.headers);
            }
            let seg = &mut pkt[at..end];
            fix_ip_header(seg, i as u16);
            if proto == 6 {
                let seq = seq0.wrapping_add((i * mss) as u32);
                seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                if i + 1 < count {
                    seg[l4 + 13] &= !0x09; // FIN and PSH only on the last segment
                }
                if i > 0 {
                    seg[l4 + 13] &= !0x80; // CWR only on the first
                }
                set_l4_checksum(seg, l4, 16, 6);
            } else {
                let len = (seg.len() - l4) as u16;
                seg[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
                set_l4_checksum(seg, l4, 6, 17);
            }
            emit(seg);
        }
    }
}

/// The receive direction's counterpart (GRO towards the TUN): consecutive in-order TCP segments of one flow,
/// as they come out of decryption, are merged back into one super-packet written with a GSO vnet header, so the
/// kernel runs its TCP stack once per 64 KB instead of once per packet. Anything else passes through as is.
pub struct Coalescer {
    /// vnet header + the merged packet.
    buf: Vec<u8>,
    flow: Option<Flow>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Flow {
    v4: bool,
    l4: usize,
    hdrs: usize,
    seg: usize,
    count: usize,
    next_seq: u32,
    closed: bool,
}

const MAX_COALESCED: usize = 65_535 - 100;

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer { buf: Vec::with_capacity(MAX_PACKET_WITH_HDR), flow: None }
    }
}

const MAX_PACKET_WITH_HDR: usize = 65_536 + 10;

/// (l4 offset, header bytes, payload bytes) of a TCP segment we can merge: IPv4 without options or
/// fragmentation, or IPv6 with TCP as the next header; only ACK/PSH flags set; some payload.
fn mergeable(p: &[u8]) -> Option<(bool, usize, usize)> {
    let v = p.first()? >> 4;
    let (v4, l4) = match v {
        4 if p.len() >= 40 && p[0] == 0x45 && p[9] == 6 && (u16::from_be_bytes([p[6], p[7]]) & 0x3fff) == 0 => {
            (true, 20)
        }
        6 if p.len() >= 60 && p[6] == 6 => (false, 40),
        _ => return None,
    };
    let doff = usize::from(p[l4 + 12] >> 4) * 4;
    let flags = p[l4 + 13];
    if doff < 20 || l4 + doff >= p.len() || flags & !0x18 != 0 || flags & 0x10 == 0 {
        return None;
    }
    let total = if v4 {
        usize::from(u16::from_be_bytes([p[2], p[3]]))
    } else {
        40 + usize::from(u16::from_be_bytes([p[4], p[5]]))
    };
    if total != p.len() {
        return None;
    }
    Some((v4, l4, l4 + doff))
}

impl Coalescer {
    /// Adds one decrypted packet; `write` receives frames (vnet header + packet) ready for the TUN.
    pub fn push(&mut self, pkt: &[u8], write: &mut impl FnMut(&[u8])) {
        if let (Some(f), Some((v4, l4, hdrs))) = (self.flow, mergeable(pkt)) {
            let cur = &self.buf[10..];
            let payload = pkt.len() - hdrs;
            let seq = u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]]);
            let same_flow = v4 == f.v4
                && hdrs == f.hdrs
                && !f.closed
                && seq == f.next_seq
                && payload <= f.seg
                && cur.len() + payload <= MAX_COALESCED
                // Addresses, ports, ack, window and options identical; IPv4 TOS/TTL too (IPv6: traffic class, hop limit).
                && if v4 {
                    pkt[1] == cur[1] && pkt[8] == cur[8] && pkt[12..20] == cur[12..20]
                } else {
                    pkt[..4] == cur[..4] && pkt[7] == cur[7] && pkt[8..40] == cur[8..40]
                }
                && pkt[l4..l4 + 4] == cur[l4..l4 + 4]
                && pkt[l4 + 8..l4 + 12] == cur[l4 + 8..l4 + 12]
                && pkt[l4 + 14..l4 + 16] == cur[l4 + 14..l4 + 16]
                && pkt[l4 + 20..hdrs] == cur[l4 + 20..hdrs];
            if same_flow {
                self.buf.extend_from_slice(&pkt[hdrs..]);
                let psh = pkt[l4 + 13] & 0x08;
                self.buf[10 + l4 + 13] |= psh;
                let flow = self.flow.as_mut().expect("flow");
                flow.count += 1;
                flow.next_seq = seq.wrapping_add(payload as u32);
                flow.closed = payload < f.seg || psh != 0;
                return;
            }
        }
        self.flush(write);
        match mergeable(pkt) {
            Some((v4, l4, hdrs)) => {
                self.buf.clear();
                self.buf.extend_from_slice(&[0u8; 10]);
                self.buf.extend_from_slice(pkt);
                let seq = u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]]);
                let payload = pkt.len() - hdrs;
                self.flow = Some(Flow {
                    v4,
                    l4,
                    hdrs,
                    seg: payload,
                    count: 1,
                    next_seq: seq.wrapping_add(payload as u32),
                    closed: pkt[l4 + 13] & 0x08 != 0,
                });
            }
            None => {
                self.buf.clear();
                self.buf.extend_from_slice(&[0u8; 10]);
                self.buf.extend_from_slice(pkt);
                write(&self.buf);
                self.buf.clear();
            }
        }
    }

    /// Writes out the packet being merged, if any.
    pub fn flush(&mut self, write: &mut impl FnMut(&[u8])) {
        let Some(f) = self.flow.take() else { return };
        if f.count > 1 {
            let pkt = &mut self.buf[10..];
            fix_ip_header(pkt, 0);
            let l4_len = pkt.len() - f.l4;
            // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum; the kernel completes it per segment.
            let ps = csum_fold(pseudo(pkt, 6, l4_len));
            pkt[f.l4 + 16..f.l4 + 18].copy_from_slice(&ps.to_be_bytes());
            let h = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if f.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
                hdr_len: f.hdrs as u16,
                gso_size: f.seg as u16,
                csum_start: f.l4 as u16,
                csum_offset: 16,
            };
            h.write(&mut self.buf[..10]);
        }
        write(&self.buf);
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_csum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from(c[0]) << 8 };
            sum += u32::from(w);
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    fn tcp4_super(payload: usize, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&100u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[24..28].copy_from_slice(&1000u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        p
    }

    fn verify_tcp4(seg: &[u8]) {
        assert_eq!(naive_csum(&seg[..20]), 0xffff, "IPv4 header checksum");
        let mut ph = Vec::new();
        ph.extend_from_slice(&seg[12..20]);
        ph.extend_from_slice(&[0, 6]);
        ph.extend_from_slice(&((seg.len() - 20) as u16).to_be_bytes());
        ph.extend_from_slice(&seg[20..]);
        assert_eq!(naive_csum(&ph), 0xffff, "TCP checksum");
        assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), seg.len());
    }

    #[test]
    fn tso_splits_into_mss_segments_with_valid_checksums_and_sequence() {
        let mut pkt = tcp4_super(3000, 0x18 | 0x01); // PSH|ACK|FIN
        let h = VnetHdr { flags: 1, gso_type: GSO_TCPV4, hdr_len: 40, gso_size: 1400, csum_start: 20, csum_offset: 16 };
        let mut hb = [0u8; 10];
        h.write(&mut hb);
        let mut segs = Vec::new();
        Segmenter::default().split(&hb, &mut pkt, |s| segs.push(s.to_vec()));
        assert_eq!(segs.iter().map(|s| s.len() - 40).collect::<Vec<_>>(), vec![1400, 1400, 200]);
        let mut payload = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            verify_tcp4(s);
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 1000 + 1400 * i as u32);
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 100 + i as u16);
            let last = i == segs.len() - 1;
            assert_eq!(s[33] & 0x09 != 0, last, "FIN/PSH only on the last");
            payload.extend_from_slice(&s[40..]);
        }
        assert_eq!(payload, tcp4_super(3000, 0)[40..]);
    }

    #[test]
    fn fast_checksum_matches_the_naive_one_for_every_length() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for len in (0..64).chain([1379, 1380, 1381, 2999, 3000]) {
            let d = &data[..len];
            assert_eq!(csum_fold(csum_add(0, d)), naive_csum(d), "length {len}");
            // Added to a running sum, as the pseudo-header is.
            assert_eq!(csum_fold(csum_add(0x1_2345, d)), csum_fold(0x1_2345 + u64::from(naive_csum(d))), "{len}");
        }
    }

    #[test]
    fn partial_checksum_is_completed() {
        let mut pkt = tcp4_super(500, 0x10);
        // What the kernel leaves: the pseudo-header sum (not complemented) in the checksum field.
        let ps = csum_fold(pseudo(&pkt, 6, pkt.len() - 20));
        pkt[36..38].copy_from_slice(&ps.to_be_bytes());
        let h = VnetHdr { flags: 1, gso_type: 0, hdr_len: 0, gso_size: 0, csum_start: 20, csum_offset: 16 };
        let mut hb = [0u8; 10];
        h.write(&mut hb);
        let ip_csum = !naive_csum(&pkt[..20]);
        pkt[10..12].copy_from_slice(&ip_csum.to_be_bytes());
        let mut out = Vec::new();
        Segmenter::default().split(&hb, &mut pkt, |s| out.push(s.to_vec()));
        assert_eq!(out.len(), 1);
        verify_tcp4(&out[0]);
    }

    #[test]
    fn hostile_headers_are_dropped_not_panicking() {
        let mut pkt = tcp4_super(100, 0x10);
        for h in [
            VnetHdr { flags: 1, gso_type: GSO_TCPV4, gso_size: 0, csum_start: 20, ..Default::default() },
            VnetHdr { flags: 1, gso_type: GSO_TCPV4, gso_size: 100, csum_start: 5000, ..Default::default() },
            VnetHdr { flags: 1, gso_type: 0, csum_start: 200, csum_offset: 16, ..Default::default() },
            VnetHdr { flags: 1, gso_type: 9, gso_size: 100, csum_start: 20, ..Default::default() },
            // The L4 header inside the IP header.
            VnetHdr { flags: 1, gso_type: GSO_TCPV4, gso_size: 100, csum_start: 8, ..Default::default() },
        ] {
            let mut hb = [0u8; 10];
            h.write(&mut hb);
            let mut n = 0;
            Segmenter::default().split(&hb, &mut pkt, |_| n += 1);
            assert_eq!(n, 0, "{h:?}");
        }
    }

    #[test]
    fn coalescer_merges_in_order_segments_and_roundtrips_through_the_segmenter() {
        let mut sup = tcp4_super(5000, 0x18);
        let h = VnetHdr { flags: 1, gso_type: GSO_TCPV4, hdr_len: 40, gso_size: 1380, csum_start: 20, csum_offset: 16 };
        let mut hb = [0u8; 10];
        h.write(&mut hb);
        let mut segs = Vec::new();
        Segmenter::default().split(&hb, &mut sup, |s| segs.push(s.to_vec()));
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut c = Coalescer::default();
        let mut w = |f: &[u8]| frames.push(f.to_vec());
        for s in &segs {
            c.push(s, &mut w);
        }
        // Something else ends the merge and passes through unchanged.
        let mut udp = tcp4_super(10, 0);
        udp[9] = 17;
        c.push(&udp, &mut w);
        c.flush(&mut w);
        assert_eq!(frames.len(), 2);
        let merged = &frames[0];
        let vh = VnetHdr::parse(merged).unwrap();
        assert_eq!((vh.gso_type, vh.gso_size, vh.csum_start), (GSO_TCPV4, 1380, 20));
        assert_eq!(&merged[10 + 40..], &tcp4_super(5000, 0)[40..], "payload restored in order");
        assert_eq!(merged[10 + 33] & 0x08, 0x08, "PSH of the last segment kept");
        // What the kernel would do with it: segmenting again gives valid packets.
        let mut again = merged[10..].to_vec();
        let mut n = 0;
        Segmenter::default().split(&merged[..10], &mut again, |s| {
            verify_tcp4(s);
            n += 1;
        });
        assert_eq!(n, segs.len());
        assert_eq!(VnetHdr::parse(&frames[1]).unwrap(), VnetHdr::default());
    }

    #[test]
    fn out_of_order_segments_are_not_merged() {
        let mut sup = tcp4_super(4000, 0x10);
        let h = VnetHdr { flags: 1, gso_type: GSO_TCPV4, hdr_len: 40, gso_size: 1000, csum_start: 20, csum_offset: 16 };
        let mut hb = [0u8; 10];
        h.write(&mut hb);
        let mut segs = Vec::new();
        Segmenter::default().split(&hb, &mut sup, |s| segs.push(s.to_vec()));
        segs.swap(1, 2);
        let mut frames = 0;
        let mut c = Coalescer::default();
        let mut w = |_: &[u8]| frames += 1;
        for s in &segs {
            c.push(s, &mut w);
        }
        c.flush(&mut w);
        assert!(frames >= 3, "a gap in sequence numbers ends the merge ({frames} frames)");
    }
}
