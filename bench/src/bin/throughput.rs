//! Cross-node pod-to-pod throughput through weft (VXLAN and host-gw labs built by `weftctl lab up`) beside the
//! same paths built by hand with `ip`, flannel-style (shared/bench/flannel-baseline.sh), in the same run.
//!
//! Run as root after `cargo build --release --bins`:
//!   target/release/throughput [--secs 5] [--reps 3]
//! Prints median Gb/s for 1 and 4 streams and the weft/reference ratio. The `vxlan-csum-off` row turns tx
//! checksum offload off on both tunnel devices (Flannel's workaround for the checksum bug) to show its cost; the
//! `vxlan-ref-nat` row gives the reference Flannel's masquerade rule (so both sides track connections); the
//! `vxlan-no-nft` row removes weft's nftables tables (agents stopped) to separate datapath from netfilter cost.
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::process::Command;
use weft_bench::{bin, Lab};
use weft_e2e::{unique, Netns};

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| cmd.to_string())?;
    if !out.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// iperf3 from `client` to `server_ip` (server in `server`); Gb/s received.
fn iperf(server: &str, server_ip: &str, client: &str, streams: u32, secs: u32) -> Result<f64> {
    let port = weft_e2e::free_port().to_string();
    let pid = std::env::temp_dir().join(format!("weft-bench-iperf-{}", unique()));
    let _ = Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "-s", "-1", "-D", "-B", server_ip, "-p", &port, "--pidfile"])
        .arg(&pid)
        .status();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = sh(
        "ip",
        &[
            "netns",
            "exec",
            client,
            "iperf3",
            "-c",
            server_ip,
            "-p",
            &port,
            "-t",
            &secs.to_string(),
            "-P",
            &streams.to_string(),
            "-J",
        ],
    )?;
    let _ = std::fs::remove_file(&pid);
    let j: Value = serde_json::from_str(&out)?;
    Ok(j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The reference: two nodes, a bridge per node with one pod, and either host routes or flannel's VXLAN
/// programmed by hand. Returns (namespaces kept alive, client pod, server pod, server IP).
fn reference(mode: &str) -> Result<(Vec<Netns>, String, String, String)> {
    let t = unique();
    let n1 = Netns::new(format!("br{t}a"));
    let n2 = Netns::new(format!("br{t}b"));
    let p1 = Netns::new(format!("br{t}c"));
    let p2 = Netns::new(format!("br{t}d"));
    n1.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &n2.name]);
    for (i, n) in [(1, &n1), (2, &n2)] {
        n.ip(&["addr", "add", &format!("192.168.50.{i}/24"), "dev", "eth0"]);
        n.ip(&["link", "set", "eth0", "up"]);
        n.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        n.ip(&["link", "add", "cni0", "type", "bridge"]);
        n.ip(&["addr", "add", &format!("10.244.{i}.1/24"), "dev", "cni0"]);
        n.ip(&["link", "set", "cni0", "up"]);
    }
    let mtu = if mode == "vxlan" { "1450" } else { "1500" };
    for (i, n, p) in [(1, &n1, &p1), (2, &n2, &p2)] {
        n.ip(&["link", "add", "vp", "type", "veth", "peer", "name", "eth0", "netns", &p.name]);
        n.ip(&["link", "set", "vp", "master", "cni0", "mtu", mtu, "up"]);
        p.ip(&["addr", "add", &format!("10.244.{i}.2/24"), "dev", "eth0"]);
        p.ip(&["link", "set", "eth0", "mtu", mtu, "up"]);
        p.ip(&["route", "add", "default", "via", &format!("10.244.{i}.1")]);
    }
    if mode == "vxlan" {
        let mut macs = vec![];
        for (i, n) in [(1, &n1), (2, &n2)] {
            let local = format!("192.168.50.{i}");
            n.ip(&[
                "link",
                "add",
                "flannel.1",
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                &local,
                "dev",
                "eth0",
                "dstport",
                "8472",
                "nolearning",
            ]);
            n.ip(&["addr", "add", &format!("10.244.{i}.0/32"), "dev", "flannel.1"]);
            n.ip(&["link", "set", "flannel.1", "mtu", "1450", "up"]);
            let show = n.ip(&["-o", "link", "show", "flannel.1"]);
            let mac = show.split("link/ether ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("");
            macs.push(mac.to_string());
        }
        for (me, other, j) in [(&n1, &macs[1], 2), (&n2, &macs[0], 1)] {
            let gw = format!("10.244.{j}.0");
            me.ip(&["neigh", "replace", &gw, "lladdr", other, "dev", "flannel.1", "nud", "permanent"]);
            me.exec("bridge", &["fdb", "append", other, "dev", "flannel.1", "dst", &format!("192.168.50.{j}")]);
            me.ip(&["route", "replace", &format!("10.244.{j}.0/24"), "via", &gw, "dev", "flannel.1", "onlink"]);
        }
    } else {
        n1.ip(&["route", "replace", "10.244.2.0/24", "via", "192.168.50.2"]);
        n2.ip(&["route", "replace", "10.244.1.0/24", "via", "192.168.50.1"]);
    }
    let (c, s) = (p1.name.clone(), p2.name.clone());
    Ok((vec![p1, p2, n1, n2], c, s, "10.244.2.2".into()))
}

fn weft(backend: &str) -> Result<(Lab, String, String, String)> {
    let name = format!("b{}", unique());
    let out = Command::new(bin("weftctl"))
        .args(["lab", "up", "--name", &name, "--nodes", "2", "--pods-per-node", "1", "--backend", backend])
        .output()?;
    let lab = Lab(name.clone());
    if !out.status.success() {
        bail!("lab up: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let st: Value = serde_json::from_slice(&std::fs::read(format!("/run/weft-lab/{name}/state.json"))?)?;
    let p = |i: usize, k: &str| st["nodes"][i]["pods"][0][k].as_str().unwrap_or_default().to_string();
    Ok((lab, p(0, "ns"), p(1, "ns"), p(1, "ip")))
}

fn nodes_of_lab(name: &str) -> Result<Vec<String>> {
    let st: Value = serde_json::from_slice(&std::fs::read(format!("/run/weft-lab/{name}/state.json"))?)?;
    Ok(st["nodes"].as_array().into_iter().flatten().filter_map(|n| n["ns"].as_str().map(str::to_string)).collect())
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
    println!("cross-node pod→pod iperf3, median of {reps} × {secs}s, Gb/s (same machine, same run)");
    println!(
        "{:<10} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6}",
        "path", "ref P1", "weft P1", "ratio", "ref P4", "weft P4", "ratio"
    );
    for backend in ["vxlan", "host-gw", "vxlan-ref-nat", "vxlan-csum-off", "vxlan-no-nft"] {
        let mode = if backend == "host-gw" { "hostgw" } else { "vxlan" };
        let mut r = [vec![], vec![]];
        let mut w = [vec![], vec![]];
        let (keep, rc, rs, rip) = reference(mode)?;
        let (lab, wc, ws, wip) = weft(if backend == "host-gw" { "host-gw" } else { "vxlan" })?;
        if backend == "vxlan-csum-off" {
            // Flannel's workaround for the checksum bug, applied to both sides, to show what weft's notrack
            // approach saves (weft keeps offload on).
            for ns in nodes_of_lab(&lab.0)? {
                sh("ip", &["netns", "exec", &ns, "ethtool", "-K", "weft.1", "tx-checksum-ip-generic", "off"])?;
            }
            for ns in [&keep[2].name, &keep[3].name] {
                sh("ip", &["netns", "exec", ns, "ethtool", "-K", "flannel.1", "tx-checksum-ip-generic", "off"])?;
            }
        }
        if backend == "vxlan-ref-nat" {
            // The reference as Flannel really runs it: with its masquerade rule, which makes the kernel track
            // connections as weft's tables do (Flannel installs it with iptables; the same rule in nft here).
            let rule =
                "add table ip flannel; add chain ip flannel post { type nat hook postrouting priority srcnat; }; \
                        add rule ip flannel post ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade";
            for ns in [&keep[2].name, &keep[3].name] {
                sh("ip", &["netns", "exec", ns, "nft", rule])?;
            }
        }
        if backend == "vxlan-no-nft" {
            // Where the rest of the gap comes from: the agents stopped and weft's nftables tables removed, the
            // datapath alone (routed veth + VXLAN) against the same hand-built path. Not a supported mode: the
            // tables carry masquerade, VXLAN protection and policy, and make the kernel track connections.
            for (i, ns) in nodes_of_lab(&lab.0)?.iter().enumerate() {
                let node = format!("node{}", i + 1);
                sh(bin("weftctl").to_str().expect("utf8"), &["lab", "restart", "--name", &lab.0, &node, "--kill"])?;
                sh("ip", &["netns", "exec", ns, "nft", "flush", "ruleset"])?;
            }
        }
        for _ in 0..reps {
            for (k, streams) in [1u32, 4].into_iter().enumerate() {
                r[k].push(iperf(&rs, &rip, &rc, streams, secs)?);
                w[k].push(iperf(&ws, &wip, &wc, streams, secs)?);
            }
        }
        let (r1, w1, r4, w4) = (median(r[0].clone()), median(w[0].clone()), median(r[1].clone()), median(w[1].clone()));
        println!("{backend:<10} | {r1:>8.2} {w1:>8.2} {:>6.2} | {r4:>8.2} {w4:>8.2} {:>6.2}", w1 / r1, w4 / r4);
    }
    Ok(())
}
