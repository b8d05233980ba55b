//! The underlay UDP sockets: one per worker, all bound to the WireGuard port with `SO_REUSEPORT` (the kernel
//! spreads flows over them), dual-stack when the host has IPv6.
//!
//! Batching: sends are collected in a [`SendBatch`] (encrypted in place into one arena) and leave in one
//! `sendmmsg`; consecutive equal-size datagrams to one endpoint form one UDP GSO message (`UDP_SEGMENT`), so
//! a 64 KB TSO super-packet read from the TUN leaves as one syscall and one trip down the stack. Receives use
//! `recvmmsg` with `UDP_GRO`: the kernel hands over up to 64 KB of same-flow datagrams per buffer with the
//! segment size in a control message. When the kernel refuses GSO (old kernel, a device without checksum
//! offload) the socket falls back to one datagram per message, for good.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// The kernel's UDP_MAX_SEGMENTS on older kernels (newer ones allow 128).
const MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO message (IPv6 header and UDP header subtracted, with margin).
const MAX_GSO_BYTES: usize = 65_000;
/// Socket buffers large enough for a burst of 64 KB GSO sends from every worker.
const SOCKET_BUFFER: usize = 8 << 20;
/// Messages per recvmmsg / sendmmsg call.
pub const RECV_BATCH: usize = 8;

pub struct Udp {
    sock: UdpSocket,
    v6: bool,
    gso: AtomicBool,
    gro: bool,
}

fn bind_one(port: u16, offload: bool) -> io::Result<Udp> {
    let (sock, v6) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
        Ok(s) => {
            s.set_only_v6(false)?;
            (s, true)
        }
        // A host with IPv6 disabled: IPv4 only.
        Err(_) => (Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?, false),
    };
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.set_cloexec(true)?;
    // Capped by net.core.[rw]mem_max; best effort.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let addr: SocketAddr = if v6 { (Ipv6Addr::UNSPECIFIED, port).into() } else { ([0, 0, 0, 0], port).into() };
    sock.bind(&addr.into())?;
    let sock: UdpSocket = sock.into();
    let gro = offload && setsockopt_int(&sock, SOL_UDP, UDP_GRO, 1).is_ok();
    Ok(Udp { sock, v6, gso: AtomicBool::new(offload), gro })
}

fn setsockopt_int(sock: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `n` sockets on one port (`port` 0: a free port, chosen by the kernel for the first one).
pub fn bind_group(port: u16, n: usize, offload: bool) -> io::Result<(Vec<Udp>, u16)> {
    let first = bind_one(port, offload)?;
    let port = first.sock.local_addr()?.port();
    let mut all = vec![first];
    for _ in 1..n.max(1) {
        all.push(bind_one(port, offload)?);
    }
    Ok((all, port))
}

/// Encrypted datagrams waiting to be sent, grouped into GSO messages.
pub struct SendBatch {
    arena: Vec<u8>,
    used: usize,
    groups: Vec<Group>,
}

struct Group {
    start: usize,
    len: usize,
    seg: usize,
    count: usize,
    /// A segment shorter than `seg` ends the group (GSO: only the last may be short).
    closed: bool,
    to: SocketAddr,
}

const ARENA: usize = 1 << 20;

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch { arena: vec![0u8; ARENA], used: 0, groups: Vec::new() }
    }
}

impl SendBatch {
    /// Room for one datagram of up to `max` bytes, or `None` when the batch must be flushed first.
    pub fn slot(&mut self, max: usize) -> Option<&mut [u8]> {
        if self.used + max > self.arena.len() || self.groups.len() >= 1024 {
            return None;
        }
        Some(&mut self.arena[self.used..self.used + max])
    }

    /// Records that `len` bytes were written at the last slot, for `to`.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        let start = self.used;
        self.used += len;
        if let Some(g) = self.groups.last_mut() {
            if g.to == to && !g.closed && len <= g.seg && g.count < MAX_SEGMENTS && g.len + len <= MAX_GSO_BYTES {
                g.len += len;
                g.count += 1;
                g.closed = len < g.seg;
                return;
            }
        }
        self.groups.push(Group { start, len, seg: len, count: 1, closed: false, to });
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn clear(&mut self) {
        self.used = 0;
        self.groups.clear();
    }
}

/// Received datagrams: `RECV_BATCH` buffers of 64 KB (a GRO'd buffer holds many datagrams of `seg` bytes).
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    meta: Vec<(usize, usize, SocketAddr)>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch { bufs: (0..RECV_BATCH).map(|_| vec![0u8; 65_536]).collect(), meta: Vec::new() }
    }
}

impl RecvBatch {
    /// Every datagram received by the last `recv_batch`, with its sender.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.meta
            .iter()
            .enumerate()
            .flat_map(move |(i, (len, seg, from))| self.bufs[i][..*len].chunks((*seg).max(1)).map(move |d| (d, *from)))
    }
}

fn to_storage(addr: SocketAddr, v6: bool) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid (AF_UNSPEC) value.
    let mut st: libc::sockaddr_storage = unsafe { zeroed() };
    let addr = match addr {
        SocketAddr::V4(a) if v6 => SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0)),
        a => a,
    };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin) };
            (st, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin6) };
            (st, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

fn from_storage(st: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(st.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is aligned for it.
            let sin: &libc::sockaddr_in = unsafe { &*(st as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6; storage is aligned for it.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(st as *const libc::sockaddr_storage).cast() };
            let a = SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                0,
                sin6.sin6_scope_id,
            ));
            Some(canonical(a))
        }
        _ => None,
    }
}

/// Room for one cmsg carrying an int (CMSG_SPACE(4) is 24 on 64-bit Linux), 8-byte aligned.
type CmsgBuf = [u64; 4];

impl Udp {
    /// Sends one datagram; a full socket buffer drops it (the inner TCP retransmits), never blocks.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        let to = match to {
            SocketAddr::V4(a) if self.v6 => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0).into(),
            other => other,
        };
        match self.sock.send_to(buf, to) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Receives one datagram (non-blocking), with the sender as a plain IPv4 address when it was v4-mapped.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        match self.sock.recv_from(buf) {
            Ok((n, from)) => Ok(Some((n, canonical(from)))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends everything in `batch` (one GSO message per group, all in one `sendmmsg`) and empties it.
    pub fn send_batch(&self, batch: &mut SendBatch) {
        if batch.is_empty() {
            return;
        }
        if !self.gso.load(Ordering::Relaxed) {
            for g in &batch.groups {
                for d in batch.arena[g.start..g.start + g.len].chunks(g.seg) {
                    let _ = self.send_to(d, g.to);
                }
            }
            batch.clear();
            return;
        }
        let n = batch.groups.len();
        let mut names: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
            batch.groups.iter().map(|g| to_storage(g.to, self.v6)).collect();
        let mut iovs: Vec<libc::iovec> = batch
            .groups
            .iter()
            .map(|g| libc::iovec { iov_base: batch.arena[g.start..].as_mut_ptr().cast(), iov_len: g.len })
            .collect();
        let mut cmsgs: Vec<CmsgBuf> = vec![[0u64; 4]; n];
        // SAFETY: mmsghdr is plain data; zeroed is a valid empty header that we fill below.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { zeroed() }).collect();
        for i in 0..n {
            let g = &batch.groups[i];
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = (&mut names[i].0 as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = names[i].1;
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
            if g.count > 1 {
                hdr.msg_control = cmsgs[i].as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE is a pure size computation.
                hdr.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
                // SAFETY: msg_control points at a zeroed, aligned buffer of at least msg_controllen bytes, so
                // CMSG_FIRSTHDR returns a pointer inside it with room for one u16 cmsg.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(hdr);
                    (*c).cmsg_level = SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), g.seg as u16);
                }
            }
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: msgs[sent..] are valid mmsghdrs whose pointers (names, iovs into the arena, cmsgs) all
            // live until this function returns.
            let r = unsafe { libc::sendmmsg(self.sock.as_raw_fd(), msgs[sent..].as_mut_ptr(), (n - sent) as u32, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // The kernel cannot do GSO here: fall back for good, resend this one individually.
                    Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) => {
                        tracing::warn!("UDP GSO refused ({e}); sending datagrams one by one");
                        self.gso.store(false, Ordering::Relaxed);
                        let g = &batch.groups[sent];
                        for d in batch.arena[g.start..g.start + g.len].chunks(g.seg) {
                            let _ = self.send_to(d, g.to);
                        }
                        sent += 1;
                        if sent < n {
                            // The rest go the slow way too.
                            let rest = SendBatch::tail(batch, sent);
                            let mut rest = rest;
                            self.send_batch(&mut rest);
                        }
                        break;
                    }
                    // Socket buffer full or unreachable peer: drop the rest of this batch (TCP recovers).
                    _ => break,
                }
            }
            sent += r as usize;
        }
        batch.clear();
    }

    /// Receives up to RECV_BATCH buffers (non-blocking); 0 when nothing is waiting.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.meta.clear();
        let n = batch.bufs.len();
        // SAFETY: sockaddr_storage is plain data; zeroed is valid.
        let mut names: Vec<libc::sockaddr_storage> = (0..n).map(|_| unsafe { zeroed() }).collect();
        let mut iovs: Vec<libc::iovec> =
            batch.bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
        let mut cmsgs: Vec<CmsgBuf> = vec![[0u64; 4]; n];
        // SAFETY: mmsghdr is plain data; zeroed is a valid empty header that we fill below.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { zeroed() }).collect();
        for i in 0..n {
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
            if self.gro {
                hdr.msg_control = cmsgs[i].as_mut_ptr().cast();
                hdr.msg_controllen = size_of::<CmsgBuf>();
            }
        }
        // SAFETY: every header points at live buffers (names, iovs into batch.bufs, cmsgs) owned above.
        let r = unsafe {
            libc::recvmmsg(self.sock.as_raw_fd(), msgs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        for (i, m) in msgs.iter().enumerate().take(r as usize) {
            let len = m.msg_len as usize;
            let mut seg = len;
            if self.gro && m.msg_hdr.msg_controllen > 0 {
                // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed cmsgs; the
                // CMSG_* macros walk them within that length.
                unsafe {
                    let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                    while !c.is_null() {
                        if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                            seg = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) as usize;
                        }
                        c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
                    }
                }
            }
            if let Some(from) = from_storage(&names[i]) {
                batch.meta.push((len, seg.max(1), from));
            }
        }
        Ok(r as usize)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl SendBatch {
    /// The groups from `from` on, copied into a new batch (fallback path only).
    fn tail(batch: &SendBatch, from: usize) -> SendBatch {
        let mut rest = SendBatch { arena: Vec::new(), used: 0, groups: Vec::new() };
        for g in &batch.groups[from..] {
            let start = rest.arena.len();
            rest.arena.extend_from_slice(&batch.arena[g.start..g.start + g.len]);
            rest.groups.push(Group { start, len: g.len, seg: g.seg, count: g.count, closed: g.closed, to: g.to });
        }
        rest.used = rest.arena.len();
        rest
    }
}

pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}
