//! The underlay UDP sockets: one per worker, all bound to the WireGuard port with `SO_REUSEPORT` (the kernel
//! spreads flows over them), dual-stack when the host has IPv6.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

pub struct Udp {
    sock: UdpSocket,
    v6: bool,
}

/// Socket buffers large enough for a burst of 64 KB GSO sends from every worker.
const SOCKET_BUFFER: usize = 8 << 20;

fn bind_one(port: u16) -> io::Result<Udp> {
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
    Ok(Udp { sock: sock.into(), v6 })
}

/// `n` sockets on one port (`port` 0: a free port, chosen by the kernel for the first one).
pub fn bind_group(port: u16, n: usize, _offload: bool) -> io::Result<(Vec<Udp>, u16)> {
    let first = bind_one(port)?;
    let port = first.sock.local_addr()?.port();
    let mut all = vec![first];
    for _ in 1..n.max(1) {
        all.push(bind_one(port)?);
    }
    Ok((all, port))
}

impl Udp {
    fn target(&self, to: SocketAddr) -> SocketAddr {
        match to {
            SocketAddr::V4(a) if self.v6 => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0).into(),
            other => other,
        }
    }

    /// Sends one datagram; a full socket buffer drops it (the inner TCP retransmits), never blocks.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        match self.sock.send_to(buf, self.target(to)) {
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

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
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
