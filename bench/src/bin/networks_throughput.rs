//! Cross-node pod-to-pod throughput inside a tenant network beside the default network, in one lab, same run:
//! the same two nodes carry a default-network pod pair and a tenant-network pair (its own VXLAN device, route
//! table, link group, fwmark rules and isolation table `inet weft-net`), measured alternately so both see the
//! same machine load. Target: tenant ≥ 0.95 × default.
//!
//! Run as root after `cargo build --release --bins` (or a debug build: the datapath is the kernel's either way):
//!   target/release/networks_throughput [--secs 5] [--reps 3]
//! Prints median Gb/s for 1 and 4 streams and the tenant/default ratio.
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::process::Command;
use weft_bench::{bin, Lab};
use weft_e2e::unique;

/// iperf3 from `client` to `server_ip` (server in `server`); Gb/s received.
fn iperf(server: &str, server_ip: &str, client: &str, streams: u32, secs: u32) -> Result<f64> {
    let port = weft_e2e::free_port().to_string();
    let pid = std::env::temp_dir().join(format!("weft-bench-iperf-{}", unique()));
    let started = Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "-s", "-1", "-D", "-B", server_ip, "-p", &port, "--pidfile"])
        .arg(&pid)
        .status()?;
    if !started.success() {
        bail!("iperf3 server in {server} did not start");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", client, "iperf3", "-c", server_ip, "-p", &port, "-t", &secs.to_string()])
        .args(["-P", &streams.to_string(), "-J"])
        .output()?;
    let _ = std::fs::remove_file(&pid);
    let j: Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    Ok(j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// (client netns, server netns, server IP) of the pair on `network` (None: default) from node1 to node2.
fn pair(st: &Value, network: Option<&str>) -> Result<(String, String, String)> {
    let pod_on = |node: usize| -> Option<Value> {
        st["nodes"][node]["pods"].as_array()?.iter().find(|p| p["network"].as_str() == network).cloned()
    };
    let (c, s) = (pod_on(0).context("client pod")?, pod_on(1).context("server pod")?);
    let f = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    Ok((f(&c, "ns"), f(&s, "ns"), f(&s, "ip")))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str, d: u32| {
        args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(d)
    };
    let (secs, reps) = (arg("--secs", 5), arg("--reps", 3));
    if !weft_e2e::require_root() {
        bail!("needs root");
    }
    let name = format!("b{}", unique());
    let out = Command::new(bin("weftctl"))
        .args(["lab", "up", "--lab", &name, "--nodes", "2", "--pods-per-node", "1"])
        .args(["--network", "blue:10.50.0.0/16:100:blue-a"])
        .output()?;
    let lab = Lab(name.clone());
    if !out.status.success() {
        bail!("lab up: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let st: Value = serde_json::from_slice(&std::fs::read(format!("/run/weft-lab/{}/state.json", lab.0))?)?;
    let (dc, ds, dip) = pair(&st, None)?;
    let (tc, ts, tip) = pair(&st, Some("blue"))?;
    println!("cross-node pod→pod iperf3 over VXLAN, one lab, alternating, median of {reps} × {secs}s, Gb/s");
    println!("{:<8} | {:>8} {:>8} {:>6}", "streams", "default", "tenant", "ratio");
    for streams in [1u32, 4] {
        let (mut d, mut t) = (vec![], vec![]);
        for _ in 0..reps {
            d.push(iperf(&ds, &dip, &dc, streams, secs)?);
            t.push(iperf(&ts, &tip, &tc, streams, secs)?);
        }
        let (dm, tm) = (median(d), median(t));
        println!("{:<8} | {dm:>8.2} {tm:>8.2} {:>6.2}", format!("P{streams}"), tm / dm);
    }
    Ok(())
}
