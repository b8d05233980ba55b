//! Overlay convergence: how long it takes to program N peers (route + nexthop + neighbour + FDB each) into the
//! kernel, weft beside the flannel-style reference measured in the same run on the same kind of device.
//!
//! Reference: `ip -batch` for routes (`via GW dev flannel.1 onlink`, one gateway per route, as flannel does) and
//! neighbours, `bridge -batch` for FDB entries (shared/bench/flannel-baseline.sh `cp_gen`, same addresses).
//! weft: build the desired state, `read_state` + `diff` + `apply` from an empty device. Also timed: a resync with
//! nothing to change (`read_state` + `diff` on the full table) and adding one peer to N. Each repetition starts
//! from a freshly created VXLAN device; reference and weft alternate so background load hits both alike.
//! Counts are verified with `ip`/`bridge` after every run (untimed).
//!
//! Usage: convergence [--sizes 1000,5000,10000] [--reps 3] [--batch-bytes 65536]   (needs root)
use anyhow::{bail, ensure, Context, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Instant;
use weft_dataplane::diff::diff;
use weft_dataplane::netlink::NetlinkDataplane;
use weft_dataplane::netns::NetnsHandle;
use weft_dataplane::*;
use weft_e2e::{run, unique, Netns, TempDir};

const DEV: &str = "flannel.1";

struct Args {
    sizes: Vec<usize>,
    reps: usize,
    batch_bytes: Option<usize>,
}

fn args() -> Result<Args> {
    let mut a = Args { sizes: vec![1000, 5000, 10000], reps: 3, batch_bytes: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sizes" => a.sizes = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--reps" => a.reps = value.parse()?,
            "--batch-bytes" => a.batch_bytes = Some(value.parse()?),
            _ => bail!("unknown flag {flag} (see the header of bench/src/bin/convergence.rs)"),
        }
    }
    ensure!(a.reps > 0 && !a.sizes.is_empty(), "need at least one size and one repetition");
    Ok(a)
}

/// Peer `i`: its pod subnet, VTEP MAC and node IP (identical to the baseline script's `cp_gen`).
fn peer(i: usize) -> (Ipv4Addr, [u8; 6], Ipv4Addr) {
    let net = Ipv4Addr::new(10, (100 + i / 256) as u8, (i % 256) as u8, 0);
    let b = (i as u32).to_be_bytes();
    let mac = [0x02, 0xbb, b[0], b[1], b[2], b[3]];
    let node = Ipv4Addr::new(192, 168, (1 + i / 250) as u8, (1 + i % 250) as u8);
    (net, mac, node)
}

fn desired(n: usize, vx: u32) -> OverlayState {
    let mut s = OverlayState::default();
    for i in 0..n {
        let (net, mac, node) = peer(i);
        let gw = IpAddr::V4(net);
        s.add_neigh(Neigh { ifindex: vx, ip: gw, mac });
        s.add_fdb(Fdb { ifindex: vx, mac, dst: IpAddr::V4(node) });
        s.add_nexthop(Nexthop { id: i as u32 + 1, gateway: gw, ifindex: vx, onlink: true });
        let dst = ipnet::IpNet::new(gw, 24).expect("valid prefix");
        s.add_route(Route { dst, target: RouteTarget::Nexthop(i as u32 + 1) });
    }
    s
}

/// Writes the reference's batch files for `n` peers; returns (route, neigh, fdb) paths.
fn reference_files(dir: &Path, n: usize) -> Result<[std::path::PathBuf; 3]> {
    let (mut routes, mut neighs, mut fdbs) = (String::new(), String::new(), String::new());
    for i in 0..n {
        let (net, mac, node) = peer(i);
        let mac = format_mac(&mac);
        routes += &format!("route add {net}/24 via {net} dev {DEV} onlink\n");
        neighs += &format!("neigh add {net} lladdr {mac} dev {DEV} nud permanent\n");
        fdbs += &format!("fdb append {mac} dev {DEV} dst {node}\n");
    }
    let paths = [dir.join(format!("route.{n}")), dir.join(format!("neigh.{n}")), dir.join(format!("fdb.{n}"))];
    for (p, text) in paths.iter().zip([routes, neighs, fdbs]) {
        std::fs::write(p, text)?;
    }
    Ok(paths)
}

/// Counts (routes, nexthops, neighbours, FDB entries with a destination) on the device, with iproute2.
fn counts(ns: &Netns) -> [usize; 4] {
    let count = |out: String, needle: &str| out.lines().filter(|l| l.contains(needle)).count();
    [
        count(ns.ip(&["route", "show", "dev", DEV]), "via"),
        count(ns.ip(&["nexthop", "show", "dev", DEV]), "id "),
        count(ns.ip(&["neigh", "show", "dev", DEV, "nud", "permanent"]), "PERMANENT"),
        count(ns.exec("bridge", &["fdb", "show", "dev", DEV]), " dst "),
    ]
}

struct Node {
    ns: Netns,
    dp: NetlinkDataplane,
    spec: VxlanSpec,
}

impl Node {
    fn new(batch_bytes: Option<usize>) -> Result<Self> {
        let ns = Netns::new(format!("wbc{}", unique()));
        ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
        ns.ip(&["addr", "add", "192.168.50.1/24", "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["link", "set", "eth0p", "up"]);
        let dp = NetlinkDataplane::in_netns(&NetnsHandle::open(&ns.path())?)?;
        if let Some(b) = batch_bytes {
            dp.set_batch_bytes(b);
        }
        let underlay_ifindex = ns.ip(&["-o", "link", "show", "eth0"]).split(':').next().unwrap_or("").trim().parse()?;
        let spec = VxlanSpec {
            name: DEV.into(),
            vni: 1,
            port: 8472,
            local: "192.168.50.1".parse()?,
            underlay_ifindex,
            mtu: 1450,
            address: Some("10.244.1.0/32".parse()?),
            address6: None,
        };
        Ok(Node { ns, dp, spec })
    }

    /// A fresh, empty VXLAN device (deleting the old one flushes everything on it).
    async fn fresh_device(&self) -> Result<u32> {
        self.dp.delete_link(DEV).await?;
        Ok(self.dp.ensure_vxlan(&self.spec).await?.ifindex)
    }

    fn reference(&self, files: &[std::path::PathBuf; 3], n: usize) -> Result<f64> {
        let ns = &self.ns.name;
        let t = Instant::now();
        run("ip", &["-n", ns, "-batch", &files[0].display().to_string()]);
        run("ip", &["-n", ns, "-batch", &files[1].display().to_string()]);
        run("ip", &["netns", "exec", ns, "bridge", "-batch", &files[2].display().to_string()]);
        let secs = t.elapsed().as_secs_f64();
        let c = counts(&self.ns);
        ensure!(c == [n, 0, n, n], "reference left routes/nexthops/neighbours/fdb = {c:?}, expected {n} each");
        Ok(secs)
    }

    /// (converge from empty, resync with nothing to do, add one peer) in seconds.
    async fn weft(&self, n: usize, vx: u32) -> Result<(f64, f64, f64)> {
        let scope = Scope { vxlan_ifindex: Some(vx) };
        let want = desired(n, vx);
        let t = Instant::now();
        let actual = self.dp.read_state(&scope).await?;
        let report = self.dp.apply(&diff(&want, &actual)).await?;
        let converge = t.elapsed().as_secs_f64();
        ensure!(report.failed.is_empty(), "kernel refused {} ops, first: {:?}", report.failed.len(), report.failed[0]);
        ensure!(report.applied == 4 * n, "applied {} ops, expected {}", report.applied, 4 * n);
        let c = counts(&self.ns);
        ensure!(c == [n; 4], "weft left routes/nexthops/neighbours/fdb = {c:?}, expected {n} each");

        let t = Instant::now();
        let ops = diff(&want, &self.dp.read_state(&scope).await?);
        let resync = t.elapsed().as_secs_f64();
        ensure!(ops.is_empty(), "resync found {} ops on a converged table", ops.len());

        let plus_one = desired(n + 1, vx);
        let t = Instant::now();
        let ops = diff(&plus_one, &self.dp.read_state(&scope).await?);
        let report = self.dp.apply(&ops).await?;
        let add_one = t.elapsed().as_secs_f64();
        ensure!(ops.len() == 4 && report.applied == 4, "adding one peer applied {report:?} for {ops:?}");
        ensure!(counts(&self.ns) == [n + 1; 4], "after adding one peer: {:?}", counts(&self.ns));
        Ok((converge, resync, add_one))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = args()?;
    ensure!(weft_e2e::require_root(), "the convergence benchmark needs root (network namespaces)");
    let dir = TempDir::new("conv");
    let node = Node::new(args.batch_bytes)?;
    println!("# convergence: N peers = N routes + N nexthops + N neighbours + N FDB entries; median of {}", args.reps);
    println!("# reference: ip -batch (routes via gateway onlink, neighbours) + bridge -batch (fdb append)");
    println!("# weft: read_state + diff + apply (routes via nexthop objects, batched rtnetlink)");
    println!(
        "{:>6} | {:>11} | {:>8} | {:>6} | {:>14} | {:>10}",
        "N", "reference s", "weft s", "ratio", "resync-noop s", "add-one s"
    );
    for &n in &args.sizes {
        let files = reference_files(dir.path(), n)?;
        let (mut reference, mut weft, mut resync, mut add_one) = (vec![], vec![], vec![], vec![]);
        for _ in 0..args.reps {
            node.fresh_device().await?;
            reference.push(node.reference(&files, n)?);
            let vx = node.fresh_device().await?;
            let (c, r, a) = node.weft(n, vx).await?;
            weft.push(c);
            resync.push(r);
            add_one.push(a);
        }
        let (r, w) = (median(reference), median(weft));
        println!(
            "{n:>6} | {r:>11.3} | {w:>8.3} | {:>5.1}x | {:>14.4} | {:>10.4}",
            r / w,
            median(resync),
            median(add_one)
        );
    }
    node.dp.delete_link(DEV).await?;
    Ok(())
}
