//! The paths under test, each kept up for the whole run: namespace pairs joined by a veth (bare, kernel VXLAN,
//! userspace WireGuard implementations) and two-node weft labs (pod → pod, as a cluster runs it).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::any::Any;
use std::process::Command;
use std::time::Duration;
use weft_bench::{bin, Lab};
use weft_e2e::wg::{Go, Ours, Underlay, UNDER_A, UNDER_B};
use weft_e2e::Netns;

const INNER_A: &str = "10.201.0.1";
const INNER_B: &str = "10.201.0.2";

/// iperf3 client and server namespaces, the server address, the processes that carry the packets in userspace
/// (their CPU time is counted), and whatever must live as long as the path.
pub struct Path {
    pub name: &'static str,
    /// Pod to pod through weft's lab (agents, firewall, pod veths), not a bare namespace pair.
    pub lab: bool,
    pub client: String,
    pub server: String,
    pub server_ip: String,
    pub pids: Vec<u32>,
    _keep: Vec<Box<dyn Any>>,
}

impl Path {
    fn pair(name: &'static str, u: Underlay, server_ip: &str, pids: Vec<u32>, keep: Vec<Box<dyn Any>>) -> Path {
        let (client, server) = (u.a.name.clone(), u.b.name.clone());
        let mut keep = keep;
        // Tunnels first, then the namespaces they live in.
        keep.push(Box::new(u));
        Path { name, lab: false, client, server, server_ip: server_ip.into(), pids, _keep: keep }
    }
}

fn wait_ping(ns: &Netns, ip: &str) -> Result<()> {
    if !weft_e2e::wait_until(Duration::from_secs(20), || ns.ping(ip)) {
        bail!("no ping to {ip}");
    }
    Ok(())
}

pub fn bare_veth() -> Path {
    Path::pair("bare veth", Underlay::new(), UNDER_B, vec![], vec![])
}

pub fn kernel_vxlan() -> Result<Path> {
    let u = Underlay::new();
    for (ns, local, remote, addr) in [(&u.a, UNDER_A, UNDER_B, INNER_A), (&u.b, UNDER_B, UNDER_A, INNER_B)] {
        ns.ip(&["link", "add", "vx", "type", "vxlan", "id", "1", "local", local, "remote", remote, "dstport", "8472"]);
        ns.ip(&["link", "set", "vx", "mtu", "1450", "up"]);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "vx"]);
    }
    wait_ping(&u.a, INNER_B)?;
    Ok(Path::pair("kernel VXLAN", u, INNER_B, vec![], vec![]))
}

/// A userspace WireGuard configured with `wg` through its UAPI socket (wireguard-go, boringtun-cli).
pub fn uapi_tunnel(name: &'static str, program: &[&str]) -> Result<Path> {
    let u = Underlay::new();
    let a = Go::start_program(&u.a, program, &format!("wg{}a", u.token), 51820, &format!("{INNER_A}/24"));
    let b = Go::start_program(&u.b, program, &format!("wg{}b", u.token), 51821, &format!("{INNER_B}/24"));
    a.add_peer(&b.public_key, &format!("{UNDER_B}:51821"), &format!("{INNER_B}/32"));
    b.add_peer(&a.public_key, &format!("{UNDER_A}:51820"), &format!("{INNER_A}/32"));
    wait_ping(&u.a, INNER_B)?;
    let pids = vec![a.pid(), b.pid()];
    Ok(Path::pair(name, u, INNER_B, pids, vec![Box::new(a), Box::new(b)]))
}

/// weft's tunnel (crates/tunnel) alone, through its test runner.
pub fn weft_tunnel(name: &'static str, extra: &[&str]) -> Result<Path> {
    let u = Underlay::new();
    let mut a = Ours::start(&u.a, &format!("wb{}a", u.token), 51820, &format!("{INNER_A}/24"), extra);
    let mut b = Ours::start(&u.b, &format!("wb{}b", u.token), 51821, &format!("{INNER_B}/24"), extra);
    let (ka, kb) = (a.public_key(), b.public_key());
    a.set_peers(&[(&kb, &format!("{UNDER_B}:51821"), &[&format!("{INNER_B}/32")])]);
    b.set_peers(&[(&ka, &format!("{UNDER_A}:51820"), &[&format!("{INNER_A}/32")])]);
    wait_ping(&u.a, INNER_B)?;
    let pids = vec![a.pid(), b.pid()];
    Ok(Path::pair(name, u, INNER_B, pids, vec![Box::new(a), Box::new(b)]))
}

/// A two-node `weftctl lab` with one pod per node: pod on node1 → pod on node2. The agents' CPU is counted
/// (with `wireguard` they carry the packets).
pub fn weft_lab(name: &'static str, backend: &str) -> Result<Path> {
    let lab = format!("wgb{}", weft_e2e::unique());
    let out = Command::new(bin("weftctl"))
        .args(["lab", "up", "--name", &lab, "--nodes", "2", "--pods-per-node", "1", "--backend", backend])
        .output()
        .context("weftctl lab up")?;
    let keep = Lab(lab.clone());
    if !out.status.success() {
        bail!("lab up: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let st: Value = serde_json::from_slice(&std::fs::read(format!("/run/weft-lab/{lab}/state.json"))?)?;
    let pod = |i: usize, k: &str| st["nodes"][i]["pods"][0][k].as_str().unwrap_or_default().to_string();
    let pids = (0..2).filter_map(|i| st["nodes"][i]["agentPid"].as_u64()).map(|p| p as u32).collect();
    Ok(Path {
        name,
        lab: true,
        client: pod(0, "ns"),
        server: pod(1, "ns"),
        server_ip: pod(1, "ip"),
        pids,
        _keep: vec![Box::new(keep)],
    })
}

pub struct Run {
    pub gbps: f64,
    pub bytes: f64,
}

pub fn iperf(p: &Path, streams: u32, secs: u32) -> Result<Run> {
    let port = weft_e2e::free_port().to_string();
    let status = Command::new("ip")
        .args(["netns", "exec", &p.server, "iperf3", "-s", "-1", "-D", "-B", &p.server_ip, "-p", &port])
        .status()?;
    if !status.success() {
        bail!("iperf3 server in {}", p.server);
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", &p.client, "iperf3", "-c", &p.server_ip, "-p", &port, "-t", &secs.to_string()])
        .args(["-P", &streams.to_string(), "-J"])
        .args(std::env::var("WEFT_BENCH_CC").map(|c| vec!["-C".to_string(), c]).unwrap_or_default())
        .output()?;
    if !out.status.success() {
        bail!("iperf3 over {}: {}", p.name, String::from_utf8_lossy(&out.stdout));
    }
    let j: Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    Ok(Run {
        gbps: j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        bytes: j["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0),
    })
}
