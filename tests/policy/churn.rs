//! "Never unprotected": with a deny-all-ingress policy in namespace x, pods are created and deleted in x over and
//! over while two pods in y (one per node, so same-node and cross-node paths) hammer every address a new pod
//! could get, on TCP and UDP, from before the pods exist until after they are gone. Not one attempt may reach a
//! pod of x — not even in the instant between the CNI ADD and the agent learning about the pod, when the pod has
//! no policy compiled yet (weft keeps it default-deny through the `@ready` set).
//!
//! A new pod runs no server, so "reached" means any answer from it: a TCP reset or an ICMP port unreachable.
//! To show the probe would see an unprotected pod, the test ends by adding a pod to a namespace without policy,
//! on an address the hammer covers, and requires the hammer to reach it once the agent has admitted it.
use crate::harness::{ctl, PolicyLab};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Addresses `.2 ..= .LAST` of each node's /24 are hammered (next-fit IPAM hands them out in order).
const LAST_HOST: u8 = 40;
const CHURN: usize = 40;
const LIVE_CHURN_PODS: usize = 4;

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A running `weft-probe hammer` and the lines it printed so far; stopped (stdin closed) by `finish` or on drop.
pub struct Hammer {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Hammer {
    pub fn start(netns: &str, targets: &[String]) -> Hammer {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, env!("CARGO_BIN_EXE_weft-probe"), "hammer", "--duration-ms", "60000"])
            .args(["--timeout-ms", "40", "--interval-ms", "20"])
            .args(targets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("weft-probe hammer");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("lines").push(v);
                }
            }
        });
        Hammer { child: Some(child), lines, reader: Some(reader) }
    }

    pub fn has(&self, f: impl Fn(&Value) -> bool) -> bool {
        self.lines.lock().expect("lines").iter().any(f)
    }

    pub fn finish(&mut self) -> Vec<Value> {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `weftctl lab pod-add` without a server; returns the pod's IPv4 address.
fn pod_add(lab: &str, ns: &str, pod: &str, node: &str) -> Ipv4Addr {
    let out = ctl(&[
        "lab",
        "pod-add",
        "--name",
        lab,
        "--node",
        node,
        "-n",
        ns,
        "--pod",
        pod,
        "--label",
        &format!("pod={pod}"),
    ]);
    out.split_whitespace().nth(2).and_then(|ip| ip.parse().ok()).unwrap_or_else(|| panic!("pod-add said: {out}"))
}

pub fn target_ip(v: &Value) -> Option<Ipv4Addr> {
    v["target"].as_str()?.split(':').next()?.parse().ok()
}

pub fn never_unprotected(backend: &str) {
    let mut lab = PolicyLab::up(backend, false);
    lab.set_namespace_labels("open", &[("ns".into(), "open".into())]);
    lab.apply("kind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n");
    lab.wait();
    // The lab itself behaves (x isolated, the rest open) before the churn starts.
    if let Some(diff) = lab.check() {
        panic!("deny-all in x is not enforced before the churn:\n{diff}");
    }
    // Targets: every candidate address except the pods outside x (those are open on purpose).
    let open_pods: Vec<Ipv4Addr> = lab.pods.iter().filter(|p| p.pod.namespace != "x").map(|p| p.pod.ip).collect();
    let mut targets = vec![];
    for (_, _, subnets) in &lab.nodes {
        let base: Ipv4Addr = subnets[0].split('/').next().and_then(|s| s.parse().ok()).expect("subnet");
        for host in 2..=LAST_HOST {
            let ip = Ipv4Addr::from(u32::from(base) + u32::from(host));
            if !open_pods.contains(&ip) {
                targets.push(format!("{ip}:80/tcp"));
                targets.push(format!("{ip}:80/udp"));
            }
        }
    }
    let probers: Vec<(String, String)> =
        ["y/a", "y/b"].iter().map(|k| (k.to_string(), lab.pod(k).netns.clone())).collect();
    let mut hammers: Vec<Hammer> = probers.iter().map(|(_, ns)| Hammer::start(ns, &targets)).collect();
    assert!(
        weft_e2e::wait_until(Duration::from_secs(5), || hammers.iter().all(|h| h.has(|v| v.get("started").is_some()))),
        "hammers did not start"
    );
    std::thread::sleep(Duration::from_millis(300));

    // Churn: create pods in x, alternating nodes, deleting the oldest so addresses keep moving.
    let t_churn = Instant::now();
    let mut owners: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    let mut live: VecDeque<String> = VecDeque::new();
    for i in 0..CHURN {
        // Names cycle, so deleted pods come back under the same name (and the same netns name) later.
        let name = format!("n{}", i % (LIVE_CHURN_PODS + 2));
        let ip = pod_add(&lab.name, "x", &name, &format!("node{}", i % 2 + 1));
        owners.entry(ip).or_default().push(format!("x/{name}"));
        live.push_back(name);
        if live.len() > LIVE_CHURN_PODS {
            let old = live.pop_front().expect("live pod");
            ctl(&["lab", "pod-del", "--name", &lab.name, "-n", "x", &old]);
        }
    }
    let churn_took = t_churn.elapsed();

    // Control: a pod in a namespace without policy must become reachable, seen by the same hammers.
    let t_open = unix_ms();
    let open_ip = pod_add(&lab.name, "open", "o", "node1");
    let added_ms = unix_ms();
    assert!(targets.contains(&format!("{open_ip}:80/tcp")), "open pod {open_ip} outside the hammered range");
    let seen = |v: &Value| target_ip(v) == Some(open_ip);
    let reached_open = weft_e2e::wait_until(Duration::from_secs(45), || hammers.iter().all(|h| h.has(seen)));
    let results: Vec<Vec<Value>> = hammers.iter_mut().map(Hammer::finish).collect();

    let mut violations = vec![];
    let mut control_hits = 0;
    let mut first_hit = u64::MAX;
    let mut attempts = 0;
    for ((prober, _), lines) in probers.iter().zip(&results) {
        attempts += lines.iter().filter_map(|v| v["attempts"].as_u64()).sum::<u64>();
        for v in lines.iter().filter(|v| v.get("target").is_some()) {
            let ip = target_ip(v).expect("target address");
            if ip == open_ip && v["ms"].as_u64().unwrap_or(0) >= t_open {
                control_hits += 1;
                first_hit = first_hit.min(v["ms"].as_u64().unwrap_or(u64::MAX));
            } else {
                let owner = owners.get(&ip).map(|o| o.join(", ")).unwrap_or_else(|| "no churned pod".into());
                violations.push(format!("{prober} reached {v} (address used by {owner})"));
            }
        }
    }
    println!(
        "churn: {CHURN} pods created and {} deleted in x in {:.1} s; {attempts} probe attempts from {} pods on {} \
         targets; {} violations; open pod first reached {} ms after pod-add returned ({control_hits} hits)",
        CHURN - live.len(),
        churn_took.as_secs_f64(),
        probers.len(),
        targets.len(),
        violations.len(),
        first_hit as i64 - added_ms as i64
    );
    assert!(
        violations.is_empty(),
        "pods in x were reachable despite deny-all ({} times; the first 20):\n{}",
        violations.len(),
        violations[..violations.len().min(20)].join("\n")
    );
    assert!(reached_open && control_hits > 0, "the hammer never reached the open pod {open_ip}: it could not fail");
    assert!(attempts > 1000, "too few attempts ({attempts}) to mean anything");
}
