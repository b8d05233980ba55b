//! Tenant networks at scale, side by side in one run: `weftd` programming 100 networks × 100 peer nodes (10 000
//! peer entries: route in the network's table + neighbour + FDB on its device `wn<vni>`, plus its rules and
//! unreachable route), against the same number of peer entries on the default network (10 000 peers: nexthop +
//! route + neighbour + FDB on one device). Both measured end to end: leases (and networks) in an embedded store,
//! `weftd` started in a fresh node namespace, time until its status says everything is programmed, then its
//! resident memory (VmRSS, peak VmHWM). The kernel is checked afterwards (entries really there).
//!
//! Usage (root, after `cargo build --release --bins`): networks_program [--networks 100 --peers 100]
use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_e2e::{run, unique, Netns, TempDir};
use weft_store::ObjectKind;
use weft_types::{LeaseRequest, NetworkConfig};

fn peer_ip(i: usize) -> String {
    format!("192.168.{}.{}", 1 + i / 250, 1 + i % 250)
}

fn peer_mac(i: usize) -> String {
    let b = (i as u32).to_be_bytes();
    format!("02:bb:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn node(tag: &str) -> Netns {
    let ns = Netns::new(format!("bn{tag}{}", unique()));
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    ns.ip(&["addr", "add", "172.31.0.1/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth0p", "up"]);
    ns
}

/// `peers` leases (+ `networks` tenant networks, all on one CIDR: the overlapping case) in a new store.
async fn fill_store(url: &str, cluster: &str, peers: usize, networks: usize) -> Result<()> {
    let store = weft_store::open(url).await?;
    let cfg: NetworkConfig = serde_json::from_str(&format!(r#"{{"clusterCidr":"{cluster}","subnetLen":24}}"#))?;
    store.init_network_config(&cfg).await?;
    for i in 0..peers {
        let req = LeaseRequest {
            node: format!("peer-{i}"),
            node_ip: peer_ip(i).parse()?,
            backend_data: weft_types::BackendData::Vxlan { vtep_mac: peer_mac(i) },
            ttl: Duration::from_secs(3600),
            hint: cfg.subnet(i as u64 + 1),
        };
        store.acquire(&req).await?;
    }
    for k in 0..networks {
        let name = format!("net{k}");
        let v = serde_json::json!({"name": name, "cidr": "172.20.0.0/16", "vni": 1000 + k,
                                   "namespaces": {"names": [format!("ns{k}")]}});
        store.put_object(ObjectKind::Network, &name, &v).await?;
    }
    Ok(())
}

#[derive(Default, Clone, Copy)]
struct Mem {
    rss: u64,
    peak: u64,
}

fn mem_kib(pid: u32) -> Mem {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    Mem { rss: field("VmRSS:"), peak: field("VmHWM:") }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts weftd on a filled store and waits until `done(status)`; returns (seconds, memory, node namespace).
fn measure(
    cluster: &str,
    peers: usize,
    networks: usize,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<(f64, Mem, Netns, TempDir)> {
    let dir = TempDir::new("bench-nets");
    let url = format!("embedded://{}", dir.path().join("store.db").display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fill_store(&url, cluster, peers, networks))?;
    let ns = node("w");
    let weftd = std::env::current_exe()?.parent().context("exe dir")?.join("weftd");
    let state = dir.path().join("state");
    let t0 = Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&weftd)
        .args(["--node-name", "me", "--node-ip", "172.31.0.1", "--store", &url, "--lease-ttl", "3600s"])
        .args(["--resync-interval", "600s", "--listen", "127.0.0.1:0", "--no-policy"])
        .arg("--node-file")
        .arg(dir.path().join("node.json"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--cni-data-dir")
        .arg(dir.path().join("ipam"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let agent = Agent(child);
    loop {
        let st: serde_json::Value = std::fs::read(state.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if done(&st) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("weftd did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let mem = mem_kib(agent.0.id());
    Ok((took, mem, ns, dir))
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (networks, peers) = (arg(&args, "--networks", 100), arg(&args, "--peers", 100));
    if !weft_e2e::require_root() {
        bail!("needs root");
    }
    let entries = networks * peers;
    println!("weftd end to end, embedded store: {networks} tenant networks × {peers} peers vs {entries} peers on the default network");

    // Reference: the same number of peer entries on the default network.
    let (ref_s, ref_mem, ref_ns, _d1) =
        measure("10.0.0.0/8", entries, 0, |st| st["programmed"]["routes"].as_u64() == Some(entries as u64))?;
    let routes = run("ip", &["-n", &ref_ns.name, "route", "show", "proto", "201"]).lines().count();
    if routes != entries {
        bail!("default network: kernel has {routes} weft routes, expected {entries}");
    }
    drop(ref_ns);

    // The same nodes without tenant networks: what the networks themselves add.
    let (base_s, base_mem, _ns0, _d0) =
        measure("10.0.0.0/16", peers, 0, |st| st["programmed"]["routes"].as_u64() == Some(peers as u64))?;

    let (s, mem, ns, _d2) = measure("10.0.0.0/16", peers, networks, |st| {
        st["networks"]
            .as_array()
            .is_some_and(|a| a.len() == networks && a.iter().all(|n| n["ready"] == true && n["peers"] == peers as u64))
    })?;
    let all = run("ip", &["-n", &ns.name, "route", "show", "table", "all", "proto", "201"]);
    let tenant_routes = all.lines().filter(|l| l.contains(" dev wn") && l.contains("onlink")).count();
    if tenant_routes != entries {
        bail!("tenant networks: kernel has {tenant_routes} peer routes in tenant tables, expected {entries}");
    }
    let rules = run("ip", &["-n", &ns.name, "rule", "show"]).lines().filter(|l| l.contains("proto 201")).count();

    println!("{:<44} | {:>8} | {:>8} | {:>12}", "", "time s", "RSS MiB", "peak RSS MiB");
    println!(
        "{:<44} | {ref_s:>8.3} | {:>8.1} | {:>12.1}",
        format!("default network, {entries} peers"),
        mib(ref_mem.rss),
        mib(ref_mem.peak)
    );
    println!(
        "{:<44} | {base_s:>8.3} | {:>8.1} | {:>12.1}",
        format!("default network, {peers} peers, no networks"),
        mib(base_mem.rss),
        mib(base_mem.peak)
    );
    println!(
        "{:<44} | {s:>8.3} | {:>8.1} | {:>12.1}",
        format!("{networks} networks × {peers} peers ({rules} rules)"),
        mib(mem.rss),
        mib(mem.peak)
    );
    println!(
        "ratio (tenant / default): time {:.2}×, RSS {:.2}×",
        s / ref_s,
        mem.rss as f64 / ref_mem.rss.max(1) as f64
    );
    Ok(())
}
