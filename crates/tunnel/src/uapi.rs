//! A read-only cross-platform UAPI socket (the protocol of wireguard-go and boringtun), so `wg show` works.
//!
//! Only `get=1` is answered. Configuration comes from the agent's desired state alone; a `set` gets `errno=1`
//! (EPERM) and changes nothing. The private key is never sent (so `wg show` prints no interface keys); the
//! socket is root-only (dir 0700, socket 0600) as wireguard-go's is.

use crate::device::UapiView;
use crate::worker::Shared;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read as _, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

pub fn default_path(ifname: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{ifname}.sock"))
}

pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    // A socket file left by a crashed process: nobody answers on it, replace it. One that answers is in use.
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is served by another process", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
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

fn answer(stream: UnixStream, port: u16, view: &dyn Fn() -> UapiView) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(4096);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut out = stream;
    if first.trim_end() != "get=1" {
        return out.write_all(b"errno=1\n\n");
    }
    out.write_all(render(port, &view()).as_bytes())
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
