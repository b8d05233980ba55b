//! A tunnel in a process of its own, for the end-to-end tests and the benchmark (the agent embeds the library).
//!
//! `weft-tunnel-test --ifname IF --key-dir DIR --port P --mtu M --address CIDR --peers FILE --stats FILE
//!  [--queues N] [--no-offload] [--no-persist] [--uapi PATH]`
//!
//! The peers file (JSON: `{"peers": [PeerConfig...], "rotate": N}`) is re-read whenever it changes: the peer set
//! is applied level-triggered, and a larger `rotate` generates, stores and switches to a new key. The stats file
//! is rewritten every 100 ms (`{"public_key", "listen_port", "peers": [PeerStats...], "counters"}`).
//! SIGTERM/SIGINT stop the tunnel cleanly (a persistent device stays).
//!
//! `weft-tunnel-test send-udp --from IP --to IP:PORT --hex HEX...`: sends raw datagrams (the forgery tests use
//! it from a spoofed underlay address, so no python or nc is needed).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use weft_tunnel::{keys, PeerConfig, Tunnel, TunnelConfig};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[derive(serde::Deserialize, Default)]
struct PeersFile {
    peers: Vec<PeerConfig>,
    #[serde(default)]
    rotate: u64,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn need(args: &[String], name: &str) -> String {
    arg(args, name).unwrap_or_else(|| {
        eprintln!("weft-tunnel-test: {name} is required");
        std::process::exit(2)
    })
}

fn send_udp(args: &[String]) {
    let from: std::net::IpAddr = need(args, "--from").parse().unwrap_or_else(|_| fail("bad --from"));
    let to: std::net::SocketAddr = need(args, "--to").parse().unwrap_or_else(|_| fail("bad --to"));
    let sock = std::net::UdpSocket::bind((from, 0)).unwrap_or_else(|e| fail(&format!("bind {from}: {e}")));
    let start = args.iter().position(|a| a == "--hex").map_or(args.len(), |i| i + 1);
    for hex in &args[start..] {
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_else(|_| fail("bad hex")))
            .collect();
        sock.send_to(&bytes, to).unwrap_or_else(|e| fail(&format!("send: {e}")));
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("send-udp") {
        return send_udp(&std::env::args().collect::<Vec<_>>());
    }
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args: Vec<String> = std::env::args().collect();
    let ifname = need(&args, "--ifname");
    let key_dir = PathBuf::from(need(&args, "--key-dir"));
    let peers_path = PathBuf::from(need(&args, "--peers"));
    let stats_path = PathBuf::from(need(&args, "--stats"));
    let key = keys::load_or_create(&key_dir).unwrap_or_else(|e| fail(&e.to_string()));
    let mut config = TunnelConfig::new(
        ifname.clone(),
        key,
        need(&args, "--port").parse().unwrap_or_else(|_| fail("bad --port")),
        need(&args, "--mtu").parse().unwrap_or_else(|_| fail("bad --mtu")),
    );
    config.queues = arg(&args, "--queues").map(|q| q.parse().unwrap_or_else(|_| fail("bad --queues"))).unwrap_or(0);
    config.offload = !args.iter().any(|a| a == "--no-offload");
    config.persist = !args.iter().any(|a| a == "--no-persist");
    config.uapi = arg(&args, "--uapi").map(PathBuf::from);

    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let tunnel = Tunnel::start(config).unwrap_or_else(|e| fail(&e.to_string()));
    if let Some(addr) = arg(&args, "--address") {
        let ok =
            Command::new("ip").args(["addr", "replace", &addr, "dev", &ifname]).status().is_ok_and(|s| s.success());
        if !ok {
            fail("ip addr replace failed");
        }
    }
    let mut seen = None;
    let mut rotated = 0;
    while !STOP.load(Ordering::Relaxed) {
        if let Ok(text) = std::fs::read_to_string(&peers_path) {
            if seen.as_ref() != Some(&text) {
                match serde_json::from_str::<PeersFile>(&text) {
                    Ok(file) => {
                        tunnel.set_peers(file.peers);
                        if file.rotate > rotated {
                            rotated = file.rotate;
                            let new = keys::PrivateKey::generate();
                            keys::store(&key_dir, &new).unwrap_or_else(|e| fail(&e.to_string()));
                            tunnel.rotate_key(new);
                        }
                        seen = Some(text);
                    }
                    Err(e) => eprintln!("weft-tunnel-test: peers file: {e}"),
                }
            }
        }
        let stats = serde_json::json!({
            "public_key": tunnel.public_key(),
            "listen_port": tunnel.listen_port(),
            "peers": tunnel.stats(),
            "counters": tunnel.counters(),
        });
        let tmp = stats_path.with_extension("tmp");
        if std::fs::write(&tmp, stats.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &stats_path);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tunnel.stop();
}

fn fail(msg: &str) -> ! {
    eprintln!("weft-tunnel-test: {msg}");
    std::process::exit(1)
}
