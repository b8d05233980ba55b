//! A pod's first packets on a busy node: both CPUs saturated by `stress-ng` for the whole test (plus its
//! `--netdev` workers, whose ioctls take the RTNL lock that the kernel's IPv6 worker needs), pods created
//! with the real `weft` binary, and for every pod the *very first* packet of every flow must arrive: one ping
//! (one echo request, one reply, generous timeout: a slow answer passes, a lost one fails) and one TCP
//! connection whose handshake needed no retransmission (the kernel counts every SYN and SYN-ACK it resends, per
//! namespace), IPv4 and IPv6, pod → pod, pod → node and node → pod.
//!
//! Why the senders are started before ADD and only released when it returns: an application connects the
//! moment it starts, and what ADD leaves for the kernel to finish later (an IPv6 address that is listed but not
//! yet local, a veth whose transmit queue the linkwatch worker has not activated) is only visible to a packet
//! sent within milliseconds of ADD returning. Forking `ip netns exec` after ADD would hide it.
#[path = "cni/kit.rs"]
mod kit;

use kit::{Node, Res, NODE_IP, NODE_IP6};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Instant;
use weft_e2e::{require_root, Netns};

const PODS: usize = 16;
const TCP_PORT: u16 = 7411;

/// `stress-ng` saturating every CPU and contending for RTNL, stopped (its whole process group) on drop, also on panic.
struct Stress(Child);

impl Stress {
    fn start() -> Stress {
        use std::os::unix::process::CommandExt;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string();
        // --timeout is only a backstop for a test process killed with SIGKILL (no drop runs then).
        let child = Command::new("stress-ng")
            .args(["--cpu", &cpus, "--cpu-method", "matrixprod", "--netdev", "4"])
            .args(["--timeout", "600", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("stress-ng (scripts/deps.sh installs it)");
        Stress(child)
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        // stress-ng forwards SIGTERM to its workers; signal the group in case one is mid-fork.
        let pgid = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &pgid]).status();
        let _ = self.0.wait();
        let _ = Command::new("kill").args(["-KILL", "--", &pgid]).stderr(Stdio::null()).status();
    }
}

/// A sender started (namespace entered, shell running) but held until [`Armed::fire`] hands it its target.
struct Armed {
    what: String,
    child: Child,
}

impl Armed {
    /// `cmd` runs with the target address as its last argument once fired.
    fn new(ns: &Netns, what: String, cmd: &str) -> Armed {
        let child = ns
            .command("sh")
            .args(["-c", &format!("read dst; exec {cmd} \"$dst\"")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sender");
        Armed { what, child }
    }

    fn ping(ns: &Netns, what: String) -> Armed {
        Armed::new(ns, what, "busybox ping -c 1 -W 5")
    }

    fn tcp(ns: &Netns, what: String) -> Armed {
        let probe = env!("CARGO_BIN_EXE_weft-probe");
        Armed::new(ns, what, &format!("{probe} matrix --timeout-ms 5000"))
    }

    fn fire(&mut self, dst: &str) {
        let mut stdin = self.child.stdin.take().expect("fired once");
        writeln!(stdin, "{dst}").expect("release sender");
    }

    /// Whether the flow got its answer (ping: exit 0; TCP probe: `true` in its JSON).
    fn passed(self) -> Result<(), String> {
        let out = self.child.wait_with_output().expect("sender output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ok = out.status.success() && !stdout.contains("false");
        if ok {
            Ok(())
        } else {
            Err(format!("{}: {} {}", self.what, stdout.trim(), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

/// SYNs and SYN-ACKs the kernel of `ns` had to send again (`TcpExt: TCPSynRetrans`): a lost first packet of a
/// TCP connection shows up here even when the retry then succeeds.
fn syn_retransmits(ns: &Netns) -> u64 {
    let netstat = ns.exec("cat", &["/proc/net/netstat"]);
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().expect("TcpExt names"), lines.next().expect("TcpExt values"));
    let i = names.split_whitespace().position(|n| n == "TCPSynRetrans").expect("TCPSynRetrans counter");
    values.split_whitespace().nth(i).expect("value").parse().expect("number")
}

fn serve_tcp(ns: &Netns) -> Child {
    ns.command(env!("CARGO_BIN_EXE_weft-probe"))
        .args(["serve", "--tcp", &TCP_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weft-probe serve")
}

fn target(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{TCP_PORT}/tcp")
    } else {
        format!("{ip}:{TCP_PORT}/tcp")
    }
}

/// Every new pod's first packets, both families, to and from an older pod and the node, under full CPU load.
#[test]
fn first_packets_after_add_arrive_under_cpu_load() {
    if !require_root() {
        return;
    }
    let node = Node::new("l");
    let conf = node.static_conf("1.0.0", true);
    let mut servers = vec![serve_tcp(&node.ns)];
    // The older pod every new one talks to; created before the load, and checked like the others below.
    let peer = node.pod(0);
    servers.push(serve_tcp(&peer));
    let rp = node.weft("ADD", "ctr-peer", Some(&peer), &conf).expect_ok();
    let (peer4, peer6) = (rp.ip(false), rp.ip(true));

    let _stress = Stress::start();

    let (mut failures, mut pods) = (Vec::new(), Vec::new());
    let retrans_before: u64 = [&node.ns, &peer].into_iter().map(syn_retransmits).sum();
    for i in 1..=PODS {
        let pod = node.pod(i);
        servers.push(serve_tcp(&pod));
        // Senders towards the new pod (target known only from ADD's result) ...
        let mut to_pod: Vec<(bool, Armed)> = Vec::new();
        for (from, ns) in [("node", &node.ns), ("peer", &peer)] {
            for v6 in [false, true] {
                let fam = if v6 { "IPv6" } else { "IPv4" };
                to_pod.push((v6, Armed::ping(ns, format!("pod {i}: {from} -> pod ping {fam}"))));
                to_pod.push((v6, Armed::tcp(ns, format!("pod {i}: {from} -> pod TCP {fam}"))));
            }
        }
        // ... and from it, towards fixed targets.
        let mut from_pod: Vec<(String, Armed)> = Vec::new();
        for (to, dst) in [("node", NODE_IP), ("node", NODE_IP6), ("peer", peer4.as_str()), ("peer", peer6.as_str())] {
            let fam = if dst.contains(':') { "IPv6" } else { "IPv4" };
            from_pod.push((dst.to_string(), Armed::ping(&pod, format!("pod {i}: pod -> {to} ping {fam}"))));
            from_pod.push((target(dst), Armed::tcp(&pod, format!("pod {i}: pod -> {to} TCP {fam}"))));
        }

        let started = Instant::now();
        let r: Res = node.weft("ADD", &format!("ctr-{i}"), Some(&pod), &conf).expect_ok();
        let add_ms = started.elapsed().as_millis();
        let (ip4, ip6) = (r.ip(false), r.ip(true));
        for (v6, s) in to_pod.iter_mut() {
            let ip = if *v6 { &ip6 } else { &ip4 };
            let dst = if s.what.contains("TCP") { target(ip) } else { ip.clone() };
            s.fire(&dst);
        }
        for (dst, s) in from_pod.iter_mut() {
            s.fire(dst);
        }
        eprintln!("pod {i}: ADD took {add_ms} ms under load");
        for s in to_pod.into_iter().map(|(_, s)| s).chain(from_pod.into_iter().map(|(_, s)| s)) {
            if let Err(e) = s.passed() {
                failures.push(e);
            }
        }
        pods.push(pod);
    }
    let retrans: u64 = [&node.ns, &peer].into_iter().chain(&pods).map(syn_retransmits).sum();
    for s in servers.iter_mut() {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert!(failures.is_empty(), "first packets lost after ADD under load:\n{}", failures.join("\n"));
    assert_eq!(
        retrans - retrans_before,
        0,
        "a TCP handshake needed a retransmission (its first SYN or SYN-ACK was lost)"
    );
}
