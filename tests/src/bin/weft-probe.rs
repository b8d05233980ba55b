//! `weft-probe`: the tiny server and client the NetworkPolicy truth-table tests run inside pod namespaces.
//!
//! - `serve --tcp 80,81 --udp 80,81`: TCP answers `ok\n` to every connection, UDP echoes `ok` to every datagram.
//!   Each port binds `[::]` (dual-stack on Linux) and falls back to `0.0.0.0` when IPv6 is unavailable.
//! - `matrix --timeout-ms 300 IP:PORT/PROTO...`: probes every target at once (a thread each) and prints one JSON
//!   object `{"IP:PORT/PROTO": true|false}`. A probe passes only with a real answer (`ok`) from the server, so a
//!   policy that lets SYNs through but drops replies still shows as denied. `--udp-src-base N` sends the i-th
//!   target's UDP probe from port N+i: the tests hand every round fresh ports, because a UDP probe that reused
//!   the source port of an earlier, allowed one would match that flow's conntrack entry (`established`) and
//!   pass after a policy change denied it — a flow that existed, not a new connection.
//! - `hammer --duration-ms N --timeout-ms 40 --interval-ms 20 IP:PORT/PROTO...`: probes every target over and over until stdin
//!   closes (at most N ms; the test holds the pipe and closes it when done) and prints one JSON line per time a target was *reached* (`{"target":..,"ms":unix_ms,"how":..}`), then a summary
//!   line. Reached means any answer from the destination: a connection, a TCP reset (nothing listens yet) or an
//!   ICMP port unreachable (UDP). That is what the "never unprotected" test needs: a pod that has just been
//!   created runs no server, yet any answer proves packets reached it.
//! - `send --src IP --count N IP:PORT/udp...`: fire-and-forget UDP datagrams from source address IP (bound, so the
//!   kernel uses it even when it is not the address routing would pick; the address must be on an interface of
//!   the namespace) and prints `{"sent": N}`. The spoofing attack tests forge a source with it: whatever answers
//!   goes to the real owner of that address, so success is measured at the receiver, never here. With
//!   `--payload-hex HEX` every datagram carries those bytes instead (the VXLAN tests hand it a crafted frame).
//!
//! Why a purpose-built binary instead of nc/curl: one process probes a whole matrix row in parallel with exact,
//! short timeouts, and its output is machine-readable; denied TCP is dropped (not reset), so every denied probe
//! costs a full timeout, which only parallelism keeps cheap.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

#[derive(Clone, Debug)]
struct Target {
    text: String,
    addr: SocketAddr,
    proto: Proto,
}

fn parse_target(s: &str) -> Result<Target, String> {
    let (addr, proto) = s.rsplit_once('/').ok_or_else(|| format!("target {s:?} is not ip:port/proto"))?;
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return Err(format!("target {s:?}: protocol must be tcp or udp")),
    };
    let addr = addr.parse().map_err(|e| format!("target {s:?}: {e}"))?;
    Ok(Target { text: s.to_string(), addr, proto })
}

fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    s.split(',').filter(|p| !p.is_empty()).map(|p| p.parse().map_err(|e| format!("port {p:?}: {e}"))).collect()
}

/// Options `--name value` and positional arguments.
struct Args {
    opts: BTreeMap<String, String>,
    rest: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut opts = BTreeMap::new();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(name) = a.strip_prefix("--") {
            let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            opts.insert(name.to_string(), v.clone());
        } else {
            rest.push(a.clone());
        }
    }
    Ok(Args { opts, rest })
}

impl Args {
    fn ms(&self, name: &str, default: u64) -> Result<Duration, String> {
        match self.opts.get(name) {
            None => Ok(Duration::from_millis(default)),
            Some(v) => v.parse().map(Duration::from_millis).map_err(|e| format!("--{name} {v:?}: {e}")),
        }
    }

    fn targets(&self) -> Result<Vec<Target>, String> {
        self.rest.iter().map(|t| parse_target(t)).collect()
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.split_first() {
        Some((cmd, rest)) => parse_args(rest).and_then(|a| match cmd.as_str() {
            "serve" => serve(&a),
            "matrix" => matrix(&a),
            "hammer" => hammer(&a),
            "send" => send(&a),
            other => Err(format!("unknown command {other:?}")),
        }),
        None => Err("usage: weft-probe serve|matrix|hammer|send ...".into()),
    };
    if let Err(e) = result {
        eprintln!("weft-probe: {e}");
        std::process::exit(2);
    }
}

/// Binds `[::]:port` (dual-stack) or, without IPv6, `0.0.0.0:port`.
fn bind_any<T>(port: u16, bind: impl Fn(SocketAddr) -> std::io::Result<T>) -> Result<T, String> {
    bind(SocketAddr::from(([0u16; 8], port)))
        .or_else(|_| bind(SocketAddr::from(([0u8; 4], port))))
        .map_err(|e| format!("binding port {port}: {e}"))
}

fn serve(a: &Args) -> Result<(), String> {
    let tcp = parse_ports(a.opts.get("tcp").map_or("", String::as_str))?;
    let udp = parse_ports(a.opts.get("udp").map_or("", String::as_str))?;
    if tcp.is_empty() && udp.is_empty() {
        return Err("serve needs --tcp and/or --udp ports".into());
    }
    let mut threads = Vec::new();
    for port in tcp {
        let l = bind_any(port, TcpListener::bind)?;
        threads.push(std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                // A write to a fresh connection never blocks on the few bytes; errors mean the prober left.
                let _ = s.write_all(b"ok\n");
            }
        }));
    }
    for port in udp {
        let sock = bind_any(port, UdpSocket::bind)?;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(b"ok", from);
                }
            }
        }));
    }
    // Ready marker: the tests wait for it before probing.
    println!("serving");
    let _ = std::io::stdout().flush();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// One probe: did the server answer `ok` within `timeout`?
fn probe(t: &Target, timeout: Duration, udp_src_port: u16) -> bool {
    let deadline = Instant::now() + timeout;
    match t.proto {
        Proto::Tcp => {
            let Ok(mut s) = TcpStream::connect_timeout(&t.addr, timeout) else { return false };
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let _ = s.set_read_timeout(Some(left));
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).is_ok() && &buf == b"ok\n"
        }
        Proto::Udp => {
            let Ok(sock) = udp_socket(t.addr, udp_src_port) else { return false };
            // Three sends spread over the timeout: one lost datagram must not read as "denied".
            let step = timeout / 3;
            for _ in 0..3 {
                let _ = sock.send(b"probe");
                let _ = sock.set_read_timeout(Some(step.max(Duration::from_millis(1))));
                let mut buf = [0u8; 16];
                match sock.recv(&mut buf) {
                    Ok(n) => return &buf[..n] == b"ok",
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => return false,
                    Err(_) if Instant::now() >= deadline => return false,
                    Err(_) => {}
                }
            }
            false
        }
    }
}

/// A UDP socket connected to `to`, from `src_port` when free (0: any).
fn udp_socket(to: SocketAddr, src_port: u16) -> std::io::Result<UdpSocket> {
    let local = |port: u16| -> SocketAddr {
        if to.is_ipv4() {
            ([0u8; 4], port).into()
        } else {
            ([0u16; 8], port).into()
        }
    };
    let s = UdpSocket::bind(local(src_port)).or_else(|_| UdpSocket::bind(local(0)))?;
    s.connect(to)?;
    Ok(s)
}

fn matrix(a: &Args) -> Result<(), String> {
    let timeout = a.ms("timeout-ms", 300)?;
    let targets = a.targets()?;
    let base: u16 = match a.opts.get("udp-src-base") {
        None => 0,
        Some(v) => v.parse().map_err(|e| format!("--udp-src-base {v:?}: {e}"))?,
    };
    let results: Vec<(String, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let port = if base == 0 { 0 } else { base.saturating_add(i as u16) };
                s.spawn(move || (t.text.clone(), probe(t, timeout, port)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("probe thread")).collect()
    });
    let obj: serde_json::Map<String, serde_json::Value> =
        results.into_iter().map(|(k, v)| (k, serde_json::Value::Bool(v))).collect();
    println!("{}", serde_json::Value::Object(obj));
    Ok(())
}

/// How a hammer attempt reached its target, if it did.
fn reached(t: &Target, timeout: Duration) -> Option<&'static str> {
    match t.proto {
        Proto::Tcp => match TcpStream::connect_timeout(&t.addr, timeout) {
            Ok(_) => Some("connected"),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some("reset"),
            Err(_) => None,
        },
        Proto::Udp => {
            let sock = udp_socket(t.addr, 0).ok()?;
            let _ = sock.send(b"probe");
            let _ = sock.set_read_timeout(Some(timeout));
            let mut buf = [0u8; 16];
            match sock.recv(&mut buf) {
                Ok(_) => Some("answered"),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some("port-unreachable"),
                Err(_) => None,
            }
        }
    }
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

fn hammer(a: &Args) -> Result<(), String> {
    let duration = a.ms("duration-ms", 5000)?;
    let timeout = a.ms("timeout-ms", 40)?;
    // Unassigned addresses fail at once (no route, ICMP unreachable): the interval keeps those threads from
    // spinning while still sampling every target many times within any window a new pod could be exposed.
    let interval = a.ms("interval-ms", 20)?;
    let targets = a.targets()?;
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    println!("{}", serde_json::json!({"started": unix_ms(), "targets": targets.len()}));
    let handles: Vec<_> = targets
        .into_iter()
        .map(|t| {
            let (stop, attempts, out) = (stop.clone(), attempts.clone(), out.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if let Some(how) = reached(&t, timeout) {
                        let line = serde_json::json!({"target": t.text, "ms": unix_ms() as u64, "how": how});
                        let mut o = out.lock().expect("stdout lock");
                        let _ = writeln!(o, "{line}");
                        let _ = o.flush();
                    }
                    std::thread::sleep(interval.saturating_sub(started.elapsed()));
                }
            })
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(duration);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    println!("{}", serde_json::json!({"done": unix_ms() as u64, "attempts": attempts.load(Ordering::Relaxed)}));
    Ok(())
}

fn hex(h: &str) -> Result<Vec<u8>, String> {
    if !h.len().is_multiple_of(2) {
        return Err("--payload-hex needs an even number of digits".into());
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).map_err(|e| format!("--payload-hex: {e}")))
        .collect()
}

fn send(a: &Args) -> Result<(), String> {
    let src: std::net::IpAddr =
        a.opts.get("src").ok_or("send needs --src IP")?.parse().map_err(|e| format!("--src: {e}"))?;
    let count: u32 = a.opts.get("count").map_or(Ok(3), |v| v.parse()).map_err(|e| format!("--count: {e}"))?;
    let interval = a.ms("interval-ms", 20)?;
    let targets = a.targets()?;
    let payload = a.opts.get("payload-hex").map(|h| hex(h)).transpose()?;
    let mut sent = 0u32;
    for t in &targets {
        if t.proto != Proto::Udp {
            return Err(format!("send: {} is not a UDP target", t.text));
        }
        let sock = UdpSocket::bind(SocketAddr::new(src, 0)).map_err(|e| format!("bind {src}: {e}"))?;
        for i in 0..count {
            let text = format!("spoof {i}");
            let bytes = payload.as_deref().unwrap_or(text.as_bytes());
            sock.send_to(bytes, t.addr).map_err(|e| format!("send to {}: {e}", t.text))?;
            sent += 1;
            std::thread::sleep(interval);
        }
    }
    println!("{}", serde_json::json!({"sent": sent}));
    Ok(())
}
