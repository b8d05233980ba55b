//! The per-queue worker: one thread per TUN queue, owning that queue and one UDP socket of the group.
//!
//! Outbound: TUN → (segment a 64 KB super-packet when offloads are on) → route by destination (allowed IPs) →
//! encrypt → UDP. Inbound: UDP → find the instance (receiver index, or for an initiation the sender's static
//! key) → decrypt → the inner source must route back to the same peer (cryptokey routing) → TUN. Anything that
//! does not authenticate is counted and dropped; nothing unauthenticated is ever written to the TUN.

use crate::config::TunnelCounters;
use crate::keys::PublicKey;
use crate::offload;
use crate::peers::{dst_addr, Peer, Tables};
use crate::sys::udp::{RecvBatch, SendBatch, Udp};
use crate::sys::{self, tun};
use defguard_boringtun::noise::errors::WireGuardError;
use defguard_boringtun::noise::handshake::parse_handshake_anon;
use defguard_boringtun::noise::{Packet, Tunn, TunnResult};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Packets handled per readiness before looking at the other fd (fairness between directions).
const BATCH: usize = 64;
/// Largest inner packet: a 64 KB TSO super-packet (offloads) or one MTU-sized packet.
pub(crate) const MAX_PACKET: usize = 65_536;

#[derive(Default)]
pub(crate) struct Counters {
    pub unknown_peer: AtomicU64,
    pub unknown_index: AtomicU64,
    pub malformed: AtomicU64,
    pub no_route: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> TunnelCounters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TunnelCounters {
            unknown_peer: l(&self.unknown_peer),
            unknown_index: l(&self.unknown_index),
            malformed: l(&self.malformed),
            no_route: l(&self.no_route),
        }
    }
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

pub(crate) struct Shared {
    pub tables: RwLock<Arc<Tables>>,
    pub stop: AtomicBool,
    pub counters: Counters,
    pub tun: Vec<OwnedFd>,
    pub udp: Vec<Udp>,
    pub offload: bool,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub(crate) fn run(shared: &Shared, q: usize) {
    let tun_fd = &shared.tun[q];
    let sock = &shared.udp[q];
    let head = if shared.offload { tun::VNET_HDR_LEN } else { 0 };
    let mut inbuf = vec![0u8; MAX_PACKET + head];
    let mut out = Out::new(head, shared.offload);
    let mut seg = offload::Segmenter::default();
    let mut rx = RecvBatch::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let ready = match sys::poll_readable(&[tun_fd.as_fd(), sock.fd()], Duration::from_millis(100)) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let tables = shared.snapshot();
        // Valid for one snapshot only: a peer's allowed IPs may change with the next one.
        out.accepted = None;
        if ready[0] {
            for _ in 0..BATCH {
                match tun::read(tun_fd, &mut inbuf) {
                    Ok(Some(n)) if n > head => {
                        let (hdr, pkt) = inbuf[..n].split_at_mut(head);
                        let hdr = shared.offload.then_some(&*hdr);
                        outbound(shared, &tables, sock, hdr, pkt, &mut seg, &mut out);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("TUN read: {e}");
                        break;
                    }
                }
            }
            sock.send_batch(&mut out.tx);
        }
        if ready[1] {
            if shared.offload {
                for _ in 0..BATCH / 8 {
                    match sock.recv_batch(&mut rx) {
                        Ok(0) => break,
                        Ok(_) => {
                            for (d, from) in rx.datagrams() {
                                inbound(shared, &tables, sock, tun_fd, d, from, &mut out);
                            }
                        }
                        Err(e) => {
                            tracing::debug!("UDP receive: {e}");
                            break;
                        }
                    }
                }
            } else {
                for _ in 0..BATCH {
                    match sock.recv_from(&mut inbuf) {
                        Ok(Some((n, from))) => inbound(shared, &tables, sock, tun_fd, &inbuf[..n], from, &mut out),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!("UDP receive: {e}");
                            break;
                        }
                    }
                }
            }
            out.flush_tun(tun_fd);
        }
    }
}

/// Output state of one worker: a decrypt scratch buffer (with room for the vnet header in front), the batch
/// of encrypted datagrams, and the TUN-side coalescer.
pub(crate) struct Out {
    head: usize,
    buf: Vec<u8>,
    tx: SendBatch,
    gro: Option<offload::Coalescer>,
    /// The last (inner source, peer) that passed cryptokey routing in the current table snapshot.
    accepted: Option<(IpAddr, usize)>,
}

impl Out {
    fn new(head: usize, offload: bool) -> Self {
        Out {
            head,
            buf: vec![0u8; MAX_PACKET + 256],
            tx: SendBatch::default(),
            gro: offload.then(offload::Coalescer::default),
            accepted: None,
        }
    }

    fn deliver(&mut self, tun_fd: &OwnedFd, len: usize) {
        let frame = &self.buf[..self.head + len];
        match &mut self.gro {
            Some(c) => c.push(&frame[self.head..], &mut |f| write_tun(tun_fd, f)),
            None => write_tun(tun_fd, frame),
        }
    }

    fn flush_tun(&mut self, tun_fd: &OwnedFd) {
        if let Some(c) = &mut self.gro {
            c.flush(&mut |f| write_tun(tun_fd, f));
        }
    }
}

fn write_tun(tun_fd: &OwnedFd, frame: &[u8]) {
    if let Err(e) = tun::write(tun_fd, frame) {
        tracing::debug!("TUN write: {e}");
    }
}

/// Encrypts one packet read from the TUN (with offloads: a super-packet, cut into wire packets in place as
/// it goes) under one lock of the peer, straight into the send batch.
fn outbound(
    shared: &Shared,
    tables: &Tables,
    sock: &Udp,
    hdr: Option<&[u8]>,
    pkt: &mut [u8],
    seg: &mut offload::Segmenter,
    out: &mut Out,
) {
    // Every segment of a super-packet has the super-packet's IP header: one route lookup for all of them.
    let Some(dst) = dst_addr(pkt) else { return };
    let Some(peer) = tables.router.lookup(dst) else {
        bump(&shared.counters.no_route, 1);
        return;
    };
    let mut st = peer.lock();
    let endpoint = st.endpoint;
    let tunn = &mut st.sender().tunn;
    let mut tx = 0u64;
    let mut one = |pkt: &[u8]| {
        // WireGuard adds 32 bytes; a handshake initiation (when there is no session yet) is 148.
        let need = (pkt.len() + 32).max(148);
        if out.tx.slot(need).is_none() {
            sock.send_batch(&mut out.tx);
        }
        let Some(slot) = out.tx.slot(need) else { return };
        match tunn.encapsulate(pkt, slot) {
            TunnResult::WriteToNetwork(wire) => {
                if wire.first() == Some(&4) {
                    tx += pkt.len() as u64;
                }
                let len = wire.len();
                out.tx.commit(len, endpoint);
            }
            TunnResult::Err(e) => tracing::debug!("encapsulate: {e:?}"),
            _ => {}
        }
    };
    match hdr {
        Some(h) => seg.split(h, pkt, one),
        None => one(pkt),
    }
    bump(&peer.counters.tx_bytes, tx);
}

enum Target {
    Keys(PublicKey, PublicKey),
    Index(u32),
}

fn inbound(
    shared: &Shared,
    tables: &Tables,
    sock: &Udp,
    tun_fd: &OwnedFd,
    datagram: &[u8],
    from: SocketAddr,
    out: &mut Out,
) {
    let counters = &shared.counters;
    let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
        bump(&counters.malformed, 1);
        return;
    };
    let (target, handshake) = match &packet {
        Packet::HandshakeInit(init) => {
            let found = tables.keys.iter().find_map(|k| {
                let half = parse_handshake_anon(&k.secret, &k.public, init).ok()?;
                Some(Target::Keys(PublicKey(half.peer_static_public), k.public_key()))
            });
            let Some(t) = found else {
                bump(&counters.unknown_peer, 1);
                return;
            };
            (t, true)
        }
        Packet::HandshakeResponse(p) => (Target::Index(p.receiver_idx >> 8), true),
        Packet::PacketCookieReply(p) => (Target::Index(p.receiver_idx >> 8), false),
        Packet::PacketData(p) => (Target::Index(p.receiver_idx >> 8), false),
    };
    let peer: &Arc<Peer> = match &target {
        Target::Keys(remote, _) => match tables.by_key.get(remote) {
            Some(p) => p,
            None => {
                bump(&counters.unknown_peer, 1);
                return;
            }
        },
        Target::Index(i) => match tables.by_index.get(i) {
            Some(p) => p,
            None => {
                bump(&counters.unknown_index, 1);
                return;
            }
        },
    };
    let mut st = peer.lock();
    let inst = match &target {
        Target::Keys(remote, local) => st.by_keys(remote, local),
        Target::Index(i) => st.by_index(*i),
    };
    let Some(inst) = inst else {
        bump(&counters.unknown_index, 1);
        return;
    };
    let head = out.head;
    let (dst_head, dst) = out.buf.split_at_mut(head);
    dst_head.fill(0);
    let src_ip = Some(from.ip());
    match inst.tunn.decapsulate(src_ip, datagram, dst) {
        TunnResult::WriteToNetwork(reply) => {
            let _ = sock.send_to(reply, from);
            if handshake {
                bump(&peer.counters.handshakes, 1);
                st.endpoint = from;
            }
            // Packets queued while the handshake was under way go out now.
            loop {
                let inst = match &target {
                    Target::Keys(remote, local) => st.by_keys(remote, local),
                    Target::Index(i) => st.by_index(*i),
                };
                let Some(inst) = inst else { break };
                match inst.tunn.decapsulate(None, &[], &mut out.buf) {
                    TunnResult::WriteToNetwork(queued) => {
                        let _ = sock.send_to(queued, from);
                    }
                    _ => break,
                }
            }
        }
        TunnResult::WriteToTunnelV4(inner, src) => {
            let len = inner.len();
            if accept(tables, peer, IpAddr::V4(src), len, &mut st.endpoint, from, &mut out.accepted) {
                drop(st);
                out.deliver(tun_fd, len);
            }
        }
        TunnResult::WriteToTunnelV6(inner, src) => {
            let len = inner.len();
            if accept(tables, peer, IpAddr::V6(src), len, &mut st.endpoint, from, &mut out.accepted) {
                drop(st);
                out.deliver(tun_fd, len);
            }
        }
        TunnResult::Done => {
            // An authenticated keepalive (or a cookie reply): the peer is alive at `from`.
            if matches!(packet, Packet::PacketData(_)) {
                st.endpoint = from;
            }
        }
        TunnResult::Err(e) => match e {
            WireGuardError::DestinationBufferTooSmall => tracing::warn!("decapsulate: buffer too small"),
            WireGuardError::UnderLoad => {}
            _ => bump(&peer.counters.decrypt_failures, 1),
        },
    }
}

/// Cryptokey routing: an authenticated packet is accepted only when its inner source is one of this peer's
/// allowed IPs; then (roaming, as WireGuard does) its outer source becomes the peer's endpoint.
fn accept(
    tables: &Tables,
    peer: &Arc<Peer>,
    src: IpAddr,
    len: usize,
    endpoint: &mut SocketAddr,
    from: SocketAddr,
    last: &mut Option<(IpAddr, usize)>,
) -> bool {
    // A bulk flow repeats one source: remember the last one accepted (per table snapshot, see `run`).
    let key = (src, Arc::as_ptr(peer) as usize);
    if *last != Some(key) {
        if !tables.router.lookup(src).is_some_and(|p| Arc::ptr_eq(p, peer)) {
            bump(&peer.counters.spoofed_source, 1);
            return false;
        }
        *last = Some(key);
    }
    *endpoint = from;
    bump(&peer.counters.rx_bytes, len as u64);
    true
}
