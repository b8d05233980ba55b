//! CNI plugin latency: weft (release build) beside Debian's reference `bridge` + `host-local`, same machine,
//! same run, same way of calling (fork+exec with CNI_* env and the config on stdin, from inside a node
//! namespace; every ADD gets a fresh pod namespace, as a new pod would).
//!
//! Measures: N sequential ADDs and DELs (median, p99), ADD+DEL, then 64 ADDs started at once (wall time and
//! per-call median/p99) and the 64 DELs likewise. weft's DEL returns once the pod is cut off and its addresses
//! are free; the ~20 ms netdevice unregister finishes in a detached reaper (see crates/cni/src/verbs/del.rs), so
//! the table also shows when weft's veth is really gone ("teardown"), measured by polling the kernel.
//!
//! The cost of durability: weft fsyncs every reservation (record file, then the IPAM directory) before ADD
//! answers and the directory again on DEL. A third plugin, weft with `ipam.fsync: false`, runs interleaved in
//! the same sequential rounds, so the table shows ADD+DEL with and without fsync beside the reference.
//!
//! Then "10 parallel DEL" (what a node sees when a Deployment scales down or a runtime stops several pods at once):
//! 10 pods added, their 10 DELs started together, over several rounds: each DEL's latency and, for weft, how long
//! its host veth lingers in the kernel after that DEL returned (the reference deletes its veth inside DEL).
//!
//! Usage: `cargo build --release -p weft-cni && cargo run --release -p weft-bench --bin cni -- [N]` (root).
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weft_dataplane::netns::NetnsHandle;
use weft_dataplane::pod::{NetlinkPodNet, PodNet};
use weft_e2e::{Netns, TempDir};

struct Plugin {
    label: &'static str,
    bin: PathBuf,
    conf: String,
}

fn weft_bin() -> Result<PathBuf> {
    let dir = match std::env::var_os("WEFT_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::current_exe()?.parent().context("exe dir")?.to_path_buf(),
    };
    let p = dir.join("weft");
    if !p.exists() {
        bail!("{} not found: run `cargo build --release -p weft-cni` first (or set WEFT_BIN_DIR)", p.display());
    }
    Ok(p)
}

/// One plugin call, timed from fork to exit.
fn call(p: &Plugin, verb: &str, cid: &str, netns: &Path) -> Result<Duration> {
    let t = Instant::now();
    let mut child = spawn(p, verb, cid, netns)?;
    child.stdin.take().context("stdin")?.write_all(p.conf.as_bytes())?;
    let out = child.wait_with_output()?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!("{} {verb} {cid} failed: {}", p.label, String::from_utf8_lossy(&out.stdout));
    }
    Ok(d)
}

fn spawn(p: &Plugin, verb: &str, cid: &str, netns: &Path) -> Result<std::process::Child> {
    Ok(Command::new(&p.bin)
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

/// 64 calls started together; returns the wall time and each call's own latency.
fn parallel(p: &Plugin, verb: &str, tag: &str, pods: &[Netns]) -> Result<(Duration, Vec<Duration>)> {
    let t = Instant::now();
    let handles: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| s.spawn(move || call(p, verb, &format!("{tag}{i}"), &pod.path())))
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let wall = t.elapsed();
    let per: Result<Vec<Duration>> = handles.into_iter().collect();
    Ok((wall, per?))
}

#[derive(Default)]
struct Stats {
    add: Vec<Duration>,
    del: Vec<Duration>,
    both: Vec<Duration>,
    teardown: Vec<Duration>,
    par_add_wall: Duration,
    par_add: Vec<Duration>,
    par_del_wall: Duration,
    par_del: Vec<Duration>,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}

/// Sequential rounds, weft and the reference interleaved (so load from the rest of the machine hits both
/// alike), then 64 parallel ADDs and DELs of each.
fn run(plugins: [&Plugin; 3], n: usize, token: &str) -> Result<[Stats; 3]> {
    let mut st = [Stats::default(), Stats::default(), Stats::default()];
    let kernel = NetlinkPodNet::new();
    let base = kernel.links_with_prefix("wf")?.len();
    for i in 0..n {
        for (k, p) in plugins.iter().enumerate() {
            let pod = Netns::new(format!("{token}{k}s{i}"));
            let cid = format!("seq{i}");
            let a = call(p, "ADD", &cid, &pod.path())?;
            let t = Instant::now();
            let d = call(p, "DEL", &cid, &pod.path())?;
            if k != 1 {
                // Poll until the reaper has unregistered the veth (the kernel's share of DEL); also after the
                // unsynced weft, so no round starts with another's veth still being torn down.
                while kernel.links_with_prefix("wf")?.len() > base {
                    std::thread::sleep(Duration::from_micros(200));
                }
                st[k].teardown.push(t.elapsed());
            }
            st[k].add.push(a);
            st[k].del.push(d);
            st[k].both.push(a + d);
        }
    }
    // The parallel rounds compare weft with the reference only.
    for (k, p) in plugins.iter().enumerate().take(2) {
        let pods: Vec<Netns> = (0..64).map(|i| Netns::new(format!("{token}{k}p{i}"))).collect();
        (st[k].par_add_wall, st[k].par_add) = parallel(p, "ADD", "par", &pods)?;
        (st[k].par_del_wall, st[k].par_del) = parallel(p, "DEL", "par", &pods)?;
    }
    Ok(st)
}

const BURST: usize = 10;
const BURST_ROUNDS: usize = 10;

#[derive(Default)]
struct Burst {
    del: Vec<Duration>,
    /// Per veth: from its DEL's return until the kernel no longer lists it (zero if already gone).
    linger: Vec<Duration>,
    /// Per round: from the start of the burst until the last veth is gone (the reference: the last DEL's return).
    all_gone: Vec<Duration>,
}

/// [`BURST_ROUNDS`] rounds of [`BURST`] ADDs, then their DELs started together; `veths` names the host veth of a
/// container ID when the plugin leaves the unregister to later (weft), so it can be watched.
fn burst(p: &Plugin, token: &str, veths: Option<&dyn Fn(&str) -> String>) -> Result<Burst> {
    let kernel = NetlinkPodNet::new();
    let mut out = Burst::default();
    for round in 0..BURST_ROUNDS {
        let pods: Vec<Netns> = (0..BURST).map(|i| Netns::new(format!("{token}{}b{i}", &p.label[..1]))).collect();
        let tag = format!("b{round}-");
        for (i, pod) in pods.iter().enumerate() {
            call(p, "ADD", &format!("{tag}{i}"), &pod.path())?;
        }
        let t0 = Instant::now();
        let tag = tag.as_str();
        let ends: Vec<Result<Instant>> = std::thread::scope(|s| {
            let hs: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, pod)| {
                    s.spawn(move || {
                        let d = call(p, "DEL", &format!("{tag}{i}"), &pod.path())?;
                        Ok((d, Instant::now()))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().expect("thread").map(|(d, end)| {
                        out.del.push(d);
                        end
                    })
                })
                .collect()
        });
        let ends: Vec<Instant> = ends.into_iter().collect::<Result<_>>()?;
        let Some(veth) = veths else {
            out.all_gone.push(ends.iter().max().copied().unwrap_or(t0) - t0);
            continue;
        };
        let names: Vec<String> = (0..BURST).map(|i| veth(&format!("{tag}{i}"))).collect();
        let mut gone: Vec<Option<Instant>> = vec![None; BURST];
        let deadline = Instant::now() + Duration::from_secs(10);
        while gone.iter().any(Option::is_none) && Instant::now() < deadline {
            let live = kernel.links_with_prefix("wf")?;
            let now = Instant::now();
            for (g, n) in gone.iter_mut().zip(&names) {
                if g.is_none() && !live.contains(n) {
                    *g = Some(now);
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let gone: Vec<Instant> = gone.into_iter().map(|g| g.unwrap_or(deadline)).collect();
        for (g, e) in gone.iter().zip(&ends) {
            out.linger.push(g.saturating_duration_since(*e));
        }
        out.all_gone.push(gone.iter().max().copied().unwrap_or(t0) - t0);
    }
    Ok(out)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() -> Result<()> {
    if !weft_e2e::require_root() {
        return Ok(());
    }
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let token = format!("wb{}", weft_e2e::unique());
    let node = Netns::new(format!("{token}n"));
    let data = TempDir::new("bench-cni");
    let node_ns = NetnsHandle::open(&node.path())?;

    let weft = Plugin {
        label: "weft",
        bin: weft_bin()?,
        conf: serde_json::json!({"cniVersion": "1.0.0", "name": "wbench", "type": "weft",
            "dataDir": data.path().join("weft"), "ipam": {"subnet": "10.214.0.0/24"}})
        .to_string(),
    };
    let unsynced = Plugin {
        label: "weft, no fsync",
        bin: weft.bin.clone(),
        conf: serde_json::json!({"cniVersion": "1.0.0", "name": "wbench2", "type": "weft",
            "dataDir": data.path().join("weft-nosync"), "ipam": {"subnet": "10.215.0.0/24", "fsync": false}})
        .to_string(),
    };
    let reference = Plugin {
        label: "ref",
        bin: PathBuf::from("/usr/lib/cni/bridge"),
        // shared/recipes/ref-bridge.json with our own data dir.
        conf: serde_json::json!({"cniVersion": "1.0.0", "name": "rbench", "type": "bridge", "bridge": "tbr0",
            "isGateway": true, "ipMasq": false, "hairpinMode": true,
            "ipam": {"type": "host-local", "dataDir": data.path().join("ref"),
                     "ranges": [[{"subnet": "10.213.0.0/24", "gateway": "10.213.0.1"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}})
        .to_string(),
    };
    if !reference.bin.exists() {
        bail!("/usr/lib/cni/bridge missing: apt-get install containernetworking-plugins");
    }
    // Plugins run inside the node namespace: forked from a thread that entered it (and the threads it starts).
    // The main thread stays outside, so the namespace guards can clean up whatever happens.
    let ([w, r, u], bw, br) = std::thread::scope(|s| {
        s.spawn(|| -> Result<([Stats; 3], Burst, Burst)> {
            node_ns.enter_this_thread()?;
            // Warm-up (page cache, bridge creation) outside the measurement.
            for (k, p) in [&weft, &reference, &unsynced].into_iter().enumerate() {
                let warm = Netns::new(format!("{token}w{k}"));
                call(p, "ADD", "warm", &warm.path())?;
                call(p, "DEL", "warm", &warm.path())?;
            }
            let st = run([&weft, &reference, &unsynced], n, &token)?;
            let name = |cid: &str| weft_cni::names::host_veth("wbench", cid, "eth0");
            let bw = burst(&weft, &token, Some(&name))?;
            let br = burst(&reference, &token, None)?;
            Ok((st, bw, br))
        })
        .join()
        .expect("bench thread")
    })?;
    if std::env::var_os("WEFT_BENCH_VERBOSE").is_some() {
        for (name, v) in [
            ("weft add", &w.add),
            ("weft del", &w.del),
            ("weft teardown", &w.teardown),
            ("ref add", &r.add),
            ("ref del", &r.del),
        ] {
            let mut v: Vec<u128> = v.iter().map(|d| d.as_micros()).collect();
            v.sort();
            eprintln!("{name} (us): {v:?}");
        }
    }

    println!(
        "CNI plugin latency, N={n} sequential + 64 parallel; fork+exec from the node namespace, fresh pod netns each"
    );
    println!("{:<34} {:>11} {:>11}   {:>11} {:>11}   {:>7}", "", "weft med", "weft p99", "ref med", "ref p99", "ratio");
    let row = |name: &str, a: &[Duration], b: &[Duration]| {
        let ratio = pct(a, 0.5).as_secs_f64() / pct(b, 0.5).as_secs_f64();
        println!(
            "{name:<34} {:>11} {:>11}   {:>11} {:>11}   {:>6.2}x",
            ms(pct(a, 0.5)),
            ms(pct(a, 0.99)),
            ms(pct(b, 0.5)),
            ms(pct(b, 0.99)),
            ratio
        );
    };
    row("ADD (sequential)", &w.add, &r.add);
    row("DEL (sequential)", &w.del, &r.del);
    row("ADD+DEL (sequential)", &w.both, &r.both);
    row("64 parallel ADD, per call", &w.par_add, &r.par_add);
    row("64 parallel DEL, per call", &w.par_del, &r.par_del);
    let wall = |name: &str, a: Duration, b: Duration| {
        println!(
            "{name:<34} {:>11} {:>11}   {:>11} {:>11}   {:>6.2}x",
            ms(a),
            "",
            ms(b),
            "",
            a.as_secs_f64() / b.as_secs_f64()
        )
    };
    wall("64 parallel ADD, wall", w.par_add_wall, r.par_add_wall);
    wall("64 parallel DEL, wall", w.par_del_wall, r.par_del_wall);
    row("DEL until veth gone (teardown)", &w.teardown, &r.del);
    row("ADD (sequential), no fsync", &u.add, &r.add);
    row("ADD+DEL (sequential), no fsync", &u.both, &r.both);
    println!(
        "fsync cost (ADD+DEL median, fsync on - off): {} ({} vs {}; record + directory on ADD, directory on DEL)",
        ms(pct(&w.both, 0.5).saturating_sub(pct(&u.both, 0.5))),
        ms(pct(&w.both, 0.5)),
        ms(pct(&u.both, 0.5))
    );
    println!("{BURST} parallel DEL x{BURST_ROUNDS} rounds   {:>11} {:>11}   {:>11} {:>11}", "p50", "max", "p50", "max");
    let burst_row = |name: &str, a: &[Duration], b: &[Duration]| {
        let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
        println!(
            "  {name:<32} {:>11} {:>11}   {:>11} {:>11}",
            ms(pct(a, 0.5)),
            ms(max(a)),
            ms(pct(b, 0.5)),
            ms(max(b))
        );
    };
    burst_row("DEL latency", &bw.del, &br.del);
    burst_row("veth lingers after its DEL", &bw.linger, &vec![Duration::ZERO; br.del.len()]);
    burst_row("burst start -> last veth gone", &bw.all_gone, &br.all_gone);
    let target = pct(&w.both, 0.5).as_secs_f64() / pct(&r.both, 0.5).as_secs_f64();
    println!("ADD+DEL median ratio {target:.3} (target <= 0.25)");
    Ok(())
}
