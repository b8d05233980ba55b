//! TUN device by hand: `/dev/net/tun` + `TUNSETIFF` (multi-queue, optionally with a virtio-net header for
//! offloads), `TUNSETPERSIST`, `TUNSETOFFLOAD`, and interface MTU/up through the classic `SIOCSIF*` ioctls.
//!
//! Why not the `tun`/`tun-rs` crates: we need one fd per queue attached to an existing *persistent* device with
//! exactly our flags, the vnet header and the USO bits, and nothing else (no address management, no async
//! runtime); that is five ioctls.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_VNET_HDR: libc::c_short = 0x4000;

pub const TUN_F_CSUM: libc::c_uint = 0x01;
pub const TUN_F_TSO4: libc::c_uint = 0x02;
pub const TUN_F_TSO6: libc::c_uint = 0x04;
pub const TUN_F_USO4: libc::c_uint = 0x20;
pub const TUN_F_USO6: libc::c_uint = 0x40;

/// Size of `struct virtio_net_hdr` (no mergeable buffers): what we set with TUNSETVNETHDRSZ.
pub const VNET_HDR_LEN: usize = 10;

/// `struct ifreq`: the name and a 24-byte union, of which we use a short (flags) or an int (MTU).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<Self> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) || bytes.contains(&b'/') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
        }
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: [0; 24] };
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }
    fn set_short(&mut self, v: libc::c_short) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }
    fn short(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }
    fn set_int(&mut self, v: libc::c_int) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }
}

fn check(ret: libc::c_int, what: &str) -> io::Result<()> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Opens one queue of TUN device `name`, creating the device if it does not exist, attaching to it (also a
/// persistent one left by an earlier process) if it does. All queues of a device must use the same flags.
pub fn open_queue(name: &str, vnet_hdr: bool) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let fd: OwnedFd = file.into();
    let mut req = IfReq::new(name)?;
    let mut flags = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE;
    if vnet_hdr {
        flags |= IFF_VNET_HDR;
    }
    req.set_short(flags);
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is one (repr(C), same size) and outlives the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) }, "TUNSETIFF")?;
    if vnet_hdr {
        let size = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points at a live local.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &size as *const libc::c_int) }, "TUNSETVNETHDRSZ")?;
    }
    Ok(fd)
}

/// Keeps the device after the last queue closes (or lets it go with the last close).
pub fn set_persist(fd: &OwnedFd, persist: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its argument by value (an integer), no memory is touched.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, libc::c_ulong::from(persist)) }, "TUNSETPERSIST")
}

/// Tells the kernel which offloads our reader handles (checksum, TSO, USO), so it may hand us 64 KB segments.
pub fn set_offload(fd: &OwnedFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (a bit mask), no memory is touched.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) }, "TUNSETOFFLOAD")
}

fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the returned fd is checked and then owned by the OwnedFd.
    let raw: RawFd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(raw, "socket")?;
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sets the MTU and brings the interface up (what `ip link set NAME mtu M up` does).
pub fn set_mtu_up(name: &str, mtu: u32) -> io::Result<()> {
    let sock = ctl_socket()?;
    let mut req = IfReq::new(name)?;
    req.set_int(mtu as libc::c_int);
    // SAFETY: SIOCSIFMTU reads a `struct ifreq` that lives across the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &mut req as *mut IfReq) }, "SIOCSIFMTU")?;
    let mut req = IfReq::new(name)?;
    // SAFETY: SIOCGIFFLAGS fills the flags of a `struct ifreq` that lives across the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req as *mut IfReq) }, "SIOCGIFFLAGS")?;
    let flags = req.short() | libc::IFF_UP as libc::c_short;
    req.set_short(flags);
    // SAFETY: SIOCSIFFLAGS reads a `struct ifreq` that lives across the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req as *mut IfReq) }, "SIOCSIFFLAGS")
}

/// Interface index, 0 when no such interface exists.
pub fn ifindex(name: &str) -> u32 {
    let Ok(c) = CString::new(name) else { return 0 };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Reads one packet (non-blocking): Ok(None) when the queue is empty.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(n as usize))
}

/// Writes one packet; a full queue drops it (as a NIC would) rather than blocking the worker.
pub fn write(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}
