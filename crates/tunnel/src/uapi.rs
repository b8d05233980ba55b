//! A read-only cross-platform UAPI socket (the protocol of wireguard-go and boringtun), so `wg show` works.
//!
//! Only `get=1` is answered. Configuration comes from the agent's desired state alone; a `set` gets `errno=1`
//! (EPERM) and changes nothing. The private key is never sent (so `wg show` prints no interface keys); the
//! socket is root-only (0600 from before its name exists; the directory 0700 when we create it).
//!
//! One client at a time, each with a deadline for the whole exchange: a client that sends slowly or never
//! reads cannot hold the thread (nor the tunnel's shutdown, which waits for it) for longer than that.

use crate::device::UapiView;
use crate::worker::Shared;
use std::fmt::Write as _;
use std::io::{self, Read as _, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

pub fn default_path(ifname: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{ifname}.sock"))
}

/// The whole exchange with one client (request read, answer written) must fit in this.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);

/// A bound socket and the identity of its file, so that only our own file is removed at the end.
pub(crate) struct Bound {
    pub listener: UnixListener,
    /// (device, inode) of the socket file.
    pub identity: (u64, u64),
}

pub(crate) fn bind(path: &Path) -> io::Result<Bound> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    // A socket file left by a crashed process: nobody answers on it, replace it. One that answers is in use.
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is served by another process", path.display()),
        ));
    }
    // Bound under a temporary name and made 0600 before it takes the real one: nobody can connect while it is
    // still open to all (the mode a fresh socket gets from the umask).
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Not only the pid: it is 1 in every container, and two agents may share the directory.
    let nonce = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(".{name}.{}.{nonce}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::symlink_metadata(path));
    let meta = match placed {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    listener.set_nonblocking(true)?;
    Ok(Bound { listener, identity: (meta.dev(), meta.ino()) })
}

/// Removes the socket file if it is still the one [`bind`] made (another process may have replaced it since).
pub(crate) fn unlink_if_ours(path: &Path, bound: (u64, u64)) {
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == bound) {
        let _ = std::fs::remove_file(path);
    }
}

pub(crate) fn serve(listener: &UnixListener, port: u16, shared: &Shared, view: &dyn Fn() -> UapiView) {
    while !shared.stop.load(Ordering::Relaxed) {
        if !matches!(crate::sys::poll_readable(&[listener.as_fd()], Duration::from_millis(200)).as_deref(), Ok([true]))
        {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else { continue };
        if let Err(e) = answer(stream, port, view) {
            tracing::debug!("UAPI client: {e}");
        }
    }
}

fn answer(mut stream: UnixStream, port: u16, view: &dyn Fn() -> UapiView) -> io::Result<()> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    stream.set_nonblocking(false)?;
    let request = read_request(&mut stream, deadline)?;
    let first = request.lines().next().unwrap_or_default();
    let reply = if first == "get=1" { render(port, &view()) } else { "errno=1\n\n".to_string() };
    write_all(&mut stream, reply.as_bytes(), deadline)
}

/// Time left until `deadline`, or a timeout error once it has passed.
fn left(deadline: Instant) -> io::Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "UAPI client too slow"));
    }
    Ok(d)
}

/// The request up to its blank line (or EOF, or 4 KiB), read before `deadline`. Read whole even when only
/// its first line matters: closing with unread input would reset the connection before the client reads our
/// answer (a `set` must get its `errno=1`).
fn read_request(stream: &mut UnixStream, deadline: Instant) -> io::Result<String> {
    let mut req = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    while req.len() < 4096 && !req.ends_with(b"\n\n") {
        stream.set_read_timeout(Some(left(deadline)?))?;
        match stream.read(&mut chunk)? {
            0 => break,
            n => req.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&req).into_owned())
}

fn write_all(stream: &mut UnixStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        stream.set_write_timeout(Some(left(deadline)?))?;
        match stream.write(buf)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn render(port: u16, view: &UapiView) -> String {
    let mut s = format!("listen_port={port}\n");
    for (cfg, st) in &view.peers {
        let _ = writeln!(s, "public_key={}", hex(cfg.public_key.as_bytes()));
        let _ = writeln!(s, "endpoint={}", st.endpoint);
        let t = st.last_handshake.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
        let _ = writeln!(s, "last_handshake_time_sec={}", t.as_secs());
        let _ = writeln!(s, "last_handshake_time_nsec={}", t.subsec_nanos());
        let _ = writeln!(s, "tx_bytes={}", st.tx_bytes);
        let _ = writeln!(s, "rx_bytes={}", st.rx_bytes);
        let _ = writeln!(s, "persistent_keepalive_interval={}", cfg.keepalive.unwrap_or(0));
        for net in &cfg.allowed_ips {
            let _ = writeln!(s, "allowed_ip={net}");
        }
    }
    s.push_str("protocol_version=1\nerrno=0\n\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn empty() -> UapiView {
        UapiView { peers: vec![] }
    }

    #[test]
    fn the_socket_is_0600_replaces_a_dead_file_refuses_a_live_one_and_removes_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg").join("weft.1.sock");
        let a = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777, 0o700);
        let e = bind(&path).err().expect("a live socket is refused");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // Crashed: the file stays, nobody answers; the next start takes the path over.
        let old = a.identity;
        drop(a);
        let b = bind(&path).unwrap();
        assert_ne!(b.identity, old);
        // The old owner's clean-up leaves the new file alone; the new one's removes it.
        unlink_if_ours(&path, old);
        assert!(path.exists());
        unlink_if_ours(&path, b.identity);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 0, "no temporary file left");
    }

    #[test]
    fn a_silent_or_slow_client_gives_up_its_turn_and_a_set_is_refused() {
        // Silent: connects, never sends. Without the deadline `answer` would wait forever.
        let (server, _client) = UnixStream::pair().unwrap();
        let waited = std::thread::spawn(move || answer(server, 51820, &empty)).join().unwrap();
        // (A socket read timeout reports EAGAIN: WouldBlock.)
        let kind = waited.unwrap_err().kind();
        assert!(matches!(kind, io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock), "{kind:?}");
        // A set: errno=1, nothing else.
        let (server, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"set=1\nprivate_key=00\n\n").unwrap();
        answer(server, 51820, &empty).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "errno=1\n\n");
        // A get: the listen port and errno=0.
        let (server, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"get=1\n\n").unwrap();
        answer(server, 51820, &empty).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("listen_port=51820\n") && reply.ends_with("errno=0\n\n"), "{reply}");
    }
}
