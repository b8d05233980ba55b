//! The whole agent at scale: N peers' leases in the store, `weftd` started in a node namespace, time until all N
//! peers are programmed (store list + watch → desired state → diff → batched netlink), and the agent's resident
//! memory once converged: now (VmRSS), at its peak (VmHWM) and the anonymous part (heap + stacks). Reference in the same run: the same N entries programmed flannel-style with
//! `ip -batch` / `bridge -batch` (no store, no agent: the kernel work alone).
//!
//! Usage (root, after `cargo build --release --bins`): agent [--sizes 1000,5000,10000]
//! To profile weftd's heap, run it under a wrapper: `BENCH_AGENT_WRAP="heaptrack -o /tmp/weftd" agent --sizes 5000`.
use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_e2e::{run, unique, Netns, TempDir};
use weft_types::{Lease, LeaseRequest, NetworkConfig};

fn peer_ip(i: usize) -> String {
    format!("192.168.{}.{}", 1 + i / 250, 1 + i % 250)
}

fn peer_mac(i: usize) -> String {
    let b = (i as u32).to_be_bytes();
    format!("02:bb:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn node(tag: &str) -> Netns {
    let ns = Netns::new(format!("ba{tag}{}", unique()));
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    ns.ip(&["addr", "add", "172.31.0.1/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth0p", "up"]);
    ns
}

/// Flannel's way, as shared/bench/flannel-baseline.sh does it: one process per table, every entry in a batch.
fn reference(n: usize, dir: &TempDir) -> Result<f64> {
    let ns = node("r");
    ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "172.31.0.1",
        "dev",
        "eth0",
        "dstport",
        "8472",
        "nolearning",
    ]);
    ns.ip(&["link", "set", "flannel.1", "up"]);
    let (mut routes, mut neighs, mut fdbs) = (String::new(), String::new(), String::new());
    for i in 0..n {
        let gw = format!("10.{}.{}.0", 1 + (i + 1) / 256, (i + 1) % 256);
        routes += &format!("route add {gw}/24 via {gw} dev flannel.1 onlink\n");
        neighs += &format!("neigh add {gw} lladdr {} dev flannel.1 nud permanent\n", peer_mac(i));
        fdbs += &format!("fdb append {} dev flannel.1 dst {}\n", peer_mac(i), peer_ip(i));
    }
    let files = ["routes", "neighs", "fdbs"].map(|f| dir.path().join(f));
    for (f, body) in files.iter().zip([&routes, &neighs, &fdbs]) {
        std::fs::write(f, body)?;
    }
    let t0 = Instant::now();
    ns.ip(&["-batch", files[1].to_str().expect("utf8")]);
    ns.exec("bridge", &["-batch", files[2].to_str().expect("utf8")]);
    ns.ip(&["-batch", files[0].to_str().expect("utf8")]);
    Ok(t0.elapsed().as_secs_f64())
}

async fn fill_store(url: &str, n: usize) -> Result<()> {
    let store = weft_store::open(url).await?;
    let cfg: NetworkConfig = serde_json::from_str(r#"{"clusterCidr":"10.0.0.0/8","subnetLen":24}"#)?;
    store.init_network_config(&cfg).await?;
    for i in 0..n {
        let req = LeaseRequest {
            node: format!("peer-{i}"),
            node_ip: peer_ip(i).parse()?,
            backend_data: weft_types::BackendData::Vxlan { vtep_mac: peer_mac(i) },
            ttl: Duration::from_secs(3600),
            hint: cfg.subnet(i as u64 + 1),
        };
        let l: Lease = store.acquire(&req).await?;
        let _ = l;
    }
    Ok(())
}

/// Resident memory of a process, from /proc/PID/status (KiB).
#[derive(Default, Clone, Copy)]
struct Mem {
    /// VmRSS: resident now.
    rss: u64,
    /// VmHWM: the peak resident set since start (the first full pass allocates the most).
    peak: u64,
    /// RssAnon: heap and stacks (RSS minus the mapped binary and libraries).
    anon: u64,
}

fn mem_kib(pid: u32) -> Mem {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    Mem { rss: field("VmRSS:"), peak: field("VmHWM:"), anon: field("RssAnon:") }
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

fn weft(n: usize) -> Result<(f64, Mem)> {
    let dir = TempDir::new("bench-agent");
    let url = format!("embedded://{}", dir.path().join("store.db").display());
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(fill_store(&url, n))?;
    let ns = node("w");
    let weftd = std::env::current_exe()?.parent().context("exe dir")?.join("weftd");
    let state = dir.path().join("state");
    // A profiler to run weftd under (e.g. `BENCH_AGENT_WRAP="heaptrack -o /tmp/weftd"`); RSS is then the wrapper's.
    let wrap = std::env::var("BENCH_AGENT_WRAP").unwrap_or_default();
    let t0 = Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(wrap.split_whitespace())
        .arg(&weftd)
        .args(["--node-name", "me", "--node-ip", "172.31.0.1", "--store", &url, "--lease-ttl", "3600s"])
        .args(["--resync-interval", "600s", "--listen", "127.0.0.1:0"])
        .arg("--node-file")
        .arg(dir.path().join("node.json"))
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let agent = Agent(child);
    let pid = agent.0.id();
    loop {
        let st: serde_json::Value = std::fs::read(state.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if st["programmed"]["routes"].as_u64() == Some(n as u64) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("weftd did not program {n} peers in 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let mem = mem_kib(pid);
    let routes = run("ip", &["-n", &ns.name, "route", "show", "proto", "201"]).lines().count();
    if routes != n {
        bail!("kernel has {routes} weft routes, expected {n}");
    }
    Ok((took, mem))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 5000, 10000]);
    if !weft_e2e::require_root() {
        bail!("needs root");
    }
    println!("weftd end to end: N leases in the store → weftd started → N peers in the kernel (embedded store)");
    let (_, idle) = weft(0)?;
    println!(
        "weftd resident memory with 0 peers: {:.1} MiB (peak {:.1}, anonymous {:.1})",
        mib(idle.rss),
        mib(idle.peak),
        mib(idle.anon)
    );
    println!(
        "{:>6} | {:>15} | {:>11} | {:>6} | {:>12} | {:>13} | {:>8}",
        "N", "ip -batch ref s", "weftd e2e s", "ratio", "RSS at N MiB", "peak RSS MiB", "anon MiB"
    );
    for n in sizes {
        let dir = TempDir::new("bench-ref");
        let r = reference(n, &dir)?;
        let (w, m) = weft(n)?;
        println!(
            "{n:>6} | {r:>15.3} | {w:>11.3} | {:>6.2} | {:>12.1} | {:>13.1} | {:>8.1}",
            w / r,
            mib(m.rss),
            mib(m.peak),
            mib(m.anon)
        );
    }
    Ok(())
}
