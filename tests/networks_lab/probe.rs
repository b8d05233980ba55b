//! The isolation matrix: every ordered pod pair probed with TCP, UDP and ICMP, read by network.
//!
//! With overlapping CIDRs an address names one pod per network, so an answer alone does not say who answered.
//! Every probe therefore carries the identity of its intended destination:
//! - TCP and UDP: pod k serves (weft-probe) on its own port `BASE_PORT + k` only, and a probe passes only with
//!   the server's `ok`. A probe that lands on another pod with the same address meets a closed port.
//! - ICMP: the echo identifier encodes (source, destination) (`ping -e`), and every pod records the identifiers
//!   it receives (an nft dynamic set in its own namespace, before anything of weft's). A request that reached a
//!   pod of another network than its sender's is a leak whatever the reply said; a request sent inside a network
//!   must have reached exactly its destination, which also proves the recording works.
//!
//! Inside a network every cell must pass (failures are retried patiently: a loaded machine delays answers);
//! across networks every cell must fail, and a single success is reported at once (never retried away).
use crate::kit::{nft, ns_exec, Pod};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BASE_PORT: u16 = 20_000;
/// Where forged-source UDP is sent, and a legitimate control stream beside it.
pub const SPOOF_PORT: u16 = 31_999;
pub const CONTROL_PORT: u16 = 31_998;
/// How long cells inside a network may take to pass on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(90);

pub fn probe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft-probe")
}

pub struct Probes {
    pub pods: Vec<Pod>,
    servers: Vec<Child>,
    udp_base: u16,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn icmp_id(s: usize, d: usize) -> u16 {
    (s * 64 + d + 1) as u16
}

#[derive(Default, Debug)]
pub struct Summary {
    pub inside: usize,
    pub across: usize,
    pub failures: Vec<String>,
}

impl Probes {
    /// Instruments every pod (identifier set, spoof counters) and starts its server.
    pub fn start(pods: Vec<Pod>) -> Probes {
        assert!(pods.len() < 64, "icmp ids encode pod indexes below 64");
        let mut p = Probes { pods, servers: vec![], udp_base: 10_000 };
        for (k, pod) in p.pods.iter().enumerate() {
            nft(
                &pod.netns,
                &format!(
                    "add table inet probe; add set inet probe seen {{ typeof icmp id; flags dynamic; size 65535; }}; \
                     add counter inet probe spoofed; add counter inet probe control; \
                     add chain inet probe pre {{ type filter hook prerouting priority -400; }}; \
                     add rule inet probe pre icmp type echo-request add @seen {{ icmp id }}; \
                     add rule inet probe pre udp dport {SPOOF_PORT} counter name spoofed; \
                     add rule inet probe pre udp dport {CONTROL_PORT} counter name control"
                ),
            );
            let port = (BASE_PORT + k as u16).to_string();
            let mut server = Command::new("ip")
                .args(["netns", "exec", &pod.netns, probe_bin(), "serve", "--tcp", &port, "--udp", &port])
                .stdout(Stdio::piped())
                .spawn()
                .expect("weft-probe serve");
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().expect("stdout")), &mut line)
                .expect("server output");
            assert_eq!(line.trim(), "serving", "weft-probe serve in {}", pod.netns);
            p.servers.push(server);
        }
        p
    }

    fn target(&self, j: usize, proto: &str) -> String {
        format!("{}:{}/{proto}", self.pods[j].ip, BASE_PORT + j as u16)
    }

    /// One `weft-probe matrix` per source in parallel: (source, target) → passed.
    fn l4(&mut self, jobs: &[(usize, Vec<String>)], timeout_ms: u64) -> BTreeMap<(usize, String), bool> {
        let mut bases = Vec::with_capacity(jobs.len());
        for (_, targets) in jobs {
            bases.push(self.udp_base);
            self.udp_base = if self.udp_base > 29_000 { 10_000 } else { self.udp_base + targets.len() as u16 };
        }
        let jobs = jobs
            .iter()
            .zip(bases)
            .map(|((i, targets), base)| (*i, self.pods[*i].netns.as_str(), base, targets.as_slice()))
            .collect();
        weft_e2e::probe_matrix(probe_bin(), timeout_ms, jobs)
    }

    fn same_net(&self, i: usize, j: usize) -> bool {
        self.pods[i].network == self.pods[j].network
    }

    /// Probes the whole matrix once (with patient retries inside networks); `phase` names it in failures.
    pub fn matrix(&mut self, phase: &str) -> Summary {
        let n = self.pods.len();
        let mut sum = Summary::default();
        // TCP and UDP.
        let jobs: Vec<(usize, Vec<String>)> = (0..n)
            .map(|i| {
                let t = (0..n).filter(|&j| j != i).flat_map(|j| [self.target(j, "tcp"), self.target(j, "udp")]);
                (i, t.collect())
            })
            .collect();
        let first = self.l4(&jobs, 1000);
        let dst_of = |t: &str| -> usize {
            let port: u16 = t.rsplit_once(':').unwrap().1.split('/').next().unwrap().parse().unwrap();
            (port - BASE_PORT) as usize
        };
        let mut pending: BTreeSet<(usize, String)> = BTreeSet::new();
        for ((i, t), ok) in &first {
            let j = dst_of(t);
            if self.same_net(*i, j) {
                sum.inside += 1;
                if !ok {
                    pending.insert((*i, t.clone()));
                }
            } else {
                sum.across += 1;
                if *ok {
                    sum.failures.push(format!(
                        "[{phase}] LEAK {t}: {} ({}) reached {} ({})",
                        self.pods[*i].key,
                        self.pods[*i].net(),
                        self.pods[j].key,
                        self.pods[j].net()
                    ));
                }
            }
        }
        let deadline = Instant::now() + PATIENCE;
        while !pending.is_empty() && Instant::now() < deadline {
            let mut by_src: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for (i, t) in &pending {
                by_src.entry(*i).or_default().push(t.clone());
            }
            let jobs: Vec<(usize, Vec<String>)> = by_src.into_iter().collect();
            for (k, ok) in self.l4(&jobs, 3000) {
                if ok {
                    pending.remove(&k);
                }
            }
        }
        for (i, t) in pending {
            let j = dst_of(&t);
            sum.failures.push(format!(
                "[{phase}] FAIL {t}: {} cannot reach {} inside network {}",
                self.pods[i].key,
                self.pods[j].key,
                self.pods[i].net()
            ));
        }
        self.icmp(phase, &mut sum);
        sum
    }

    fn icmp(&self, phase: &str, sum: &mut Summary) {
        let n = self.pods.len();
        for p in &self.pods {
            nft(&p.netns, "flush set inet probe seen");
        }
        let pairs: Vec<(usize, usize)> =
            (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).collect();
        let answered = Mutex::new(BTreeMap::new());
        let next = AtomicUsize::new(0);
        let deadline = Instant::now() + PATIENCE;
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(i, j)) = pairs.get(k) else { break };
                    let id = icmp_id(i, j).to_string();
                    let ping = || {
                        ns_exec(&self.pods[i].netns, &["ping", "-n", "-c", "1", "-W", "1", "-e", &id, &self.pods[j].ip])
                            .status
                            .success()
                    };
                    let mut ok = ping();
                    // Inside a network: retry patiently. Across: the first answer is recorded as it is.
                    while !ok && self.same_net(i, j) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(200));
                        ok = ping();
                    }
                    answered.lock().unwrap().insert((i, j), ok);
                });
            }
        });
        let answered = answered.into_inner().unwrap();
        let seen: Vec<BTreeSet<u64>> = self
            .pods
            .iter()
            .map(|p| {
                let o = ns_exec(&p.netns, &["nft", "-j", "list", "set", "inet", "probe", "seen"]);
                let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
                v["nftables"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o["set"]["elem"].as_array())
                    .flatten()
                    .filter_map(Value::as_u64)
                    .collect()
            })
            .collect();
        for (&(i, j), &ok) in &answered {
            let (src, dst) = (&self.pods[i], &self.pods[j]);
            let id = u64::from(icmp_id(i, j));
            if self.same_net(i, j) {
                sum.inside += 1;
                if !ok {
                    sum.failures.push(format!("[{phase}] FAIL icmp {} → {} inside {}", src.key, dst.key, src.net()));
                } else if !seen[j].contains(&id) {
                    sum.failures.push(format!(
                        "[{phase}] icmp {} → {} answered but not recorded at {}",
                        src.key, dst.key, dst.key
                    ));
                }
                continue;
            }
            sum.across += 1;
            // An address the source's own network also holds answers from there: legitimate, checked below.
            let own = self.pods.iter().any(|p| p.network == src.network && p.ip == dst.ip);
            if ok && !own {
                sum.failures.push(format!(
                    "[{phase}] LEAK icmp {} ({}) → {} ({}) answered",
                    src.key,
                    src.net(),
                    dst.key,
                    dst.net()
                ));
            }
        }
        for (d, ids) in seen.iter().enumerate() {
            for id in ids {
                let s = ((id - 1) / 64) as usize;
                let intended = ((id - 1) % 64) as usize;
                if s < n && self.pods[s].network != self.pods[d].network {
                    sum.failures.push(format!(
                        "[{phase}] LEAK icmp from {} ({}) meant for {} arrived at {} ({})",
                        self.pods[s].key,
                        self.pods[s].net(),
                        self.pods.get(intended).map_or("?", |p| p.key.as_str()),
                        self.pods[d].key,
                        self.pods[d].net()
                    ));
                }
            }
        }
    }
}

/// Sends `count` UDP datagrams from pod `from`'s namespace with the forged source `src` (added to its loopback
/// for the duration) to `to:port`.
pub fn send_forged(from: &Pod, src: &str, to: &str, port: u16, count: u32) {
    let _ = ns_exec(&from.netns, &["ip", "addr", "add", &format!("{src}/32"), "dev", "lo"]);
    let out = ns_exec(
        &from.netns,
        &[probe_bin(), "send", "--src", src, "--count", &count.to_string(), &format!("{to}:{port}/udp")],
    );
    let _ = ns_exec(&from.netns, &["ip", "addr", "del", &format!("{src}/32"), "dev", "lo"]);
    assert!(out.status.success(), "weft-probe send: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sends `count` ordinary datagrams from pod `from` (its own address) to `to:port`.
pub fn send_plain(from: &Pod, to: &str, port: u16, count: u32) {
    let out = ns_exec(
        &from.netns,
        &[probe_bin(), "send", "--src", &from.ip, "--count", &count.to_string(), &format!("{to}:{port}/udp")],
    );
    assert!(out.status.success(), "weft-probe send: {}", String::from_utf8_lossy(&out.stderr));
}
