//! The truth-table lab: a 2-node `weftctl lab` with namespaces x, y, z and pods a, b, c in each, every pod
//! serving TCP and UDP on ports 80 and 81 (weft-probe), spread over both nodes so the matrix holds same-node and
//! cross-node pairs, optionally dual-stack. Scenarios are applied through `weftctl policy`, exactly as an
//! operator would; the model in `world` follows every change. Probing and comparing live in `matrix.rs`.
use crate::matrix::{families, UDP_PORTS};
use crate::model::{Family, Pod, World};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_e2e::{bin, unique};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// (port, protocol) of every probed service, in column order.
pub const SERVICES: [(u16, &str); 4] = [(80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP")];

pub fn weftctl(args: &[&str]) -> std::process::Output {
    Command::new(bin("weftctl")).args(args).output().expect("running weftctl")
}

/// Runs weftctl, panicking with its output on failure.
pub fn ctl(args: &[&str]) -> String {
    let out = weftctl(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "weftctl {}: {text}", args.join(" "));
    text
}

pub fn probe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft-probe")
}

/// Labels beyond `pod=NAME`, so set-based selectors (Exists, DoesNotExist, NotIn) have something to tell apart.
fn extra_pod_labels(pod: &str) -> Vec<(String, String)> {
    match pod {
        "a" => vec![("tier".into(), "frontend".into())],
        "b" => vec![("tier".into(), "backend".into())],
        _ => vec![],
    }
}

fn extra_ns_labels(ns: &str) -> Vec<(String, String)> {
    match ns {
        "x" => vec![("team".into(), "red".into())],
        "y" => vec![("team".into(), "blue".into())],
        _ => vec![],
    }
}

/// Named ports: one per service, plus `web`, which names a different port on each pod (80 on a, 81 on b, none
/// on c), so named ports are proven to resolve per destination.
fn pod_ports(pod: &str) -> Vec<(String, u16, String)> {
    let mut v: Vec<(String, u16, String)> =
        SERVICES.iter().map(|&(p, proto)| (format!("serve-{p}-{}", proto.to_lowercase()), p, proto.into())).collect();
    match pod {
        "a" => v.push(("web".into(), 80, "TCP".into())),
        "b" => v.push(("web".into(), 81, "TCP".into())),
        _ => {}
    }
    v
}

pub struct LabPod {
    pub pod: Pod,
    /// The pod's network namespace.
    pub netns: String,
}

/// The lab, its pods' servers and the reference model of what the store holds; torn down on drop.
pub struct PolicyLab {
    pub name: String,
    pub pods: Vec<LabPod>,
    /// (node name, node namespace, pod subnets: IPv4 and, in dual-stack labs, IPv6).
    pub nodes: Vec<(String, String, Vec<String>)>,
    pub world: World,
    pub families: Vec<Family>,
    servers: Vec<Child>,
    dir: weft_e2e::TempDir,
    pub rounds: usize,
    pub retried: usize,
    /// Next UDP source port to hand out (see `matrix.rs`).
    pub(crate) udp_port: u16,
}

impl PolicyLab {
    pub fn up(backend: &str, dual_stack: bool) -> PolicyLab {
        Self::up_on(backend, dual_stack, None)
    }

    /// The same lab with x, y and z on the tenant network `network` (`NAME:CIDR:VNI`, as `weftctl lab up
    /// --network` takes it, tests/networks_lab.rs): `{net:nodeN}` then names the node's subnet of that network.
    pub fn up_on(backend: &str, dual_stack: bool, network: Option<&str>) -> PolicyLab {
        let name = format!("p{}", unique());
        let dir = weft_e2e::TempDir::new("policy");
        let mut lab = PolicyLab {
            name: name.clone(),
            pods: vec![],
            nodes: vec![],
            world: World::default(),
            families: families(dual_stack),
            servers: vec![],
            dir,
            rounds: 0,
            retried: 0,
            udp_port: UDP_PORTS.0,
        };
        let mut up = vec!["lab", "up", "--name", &name, "--nodes", "2", "--pods-per-node", "0", "--backend", backend];
        if dual_stack {
            up.push("--ipv6");
        }
        let spec = network.map(|n| format!("{n}:{}", NAMESPACES.join(",")));
        if let Some(spec) = &spec {
            up.extend(["--network", spec]);
        }
        ctl(&up);
        let state = lab.state();
        for n in state["nodes"].as_array().expect("nodes") {
            let node = n["name"].as_str().expect("name").to_string();
            let st: Value =
                serde_json::from_slice(&std::fs::read(lab.lab_dir().join(&node).join("status.json")).unwrap())
                    .expect("status.json");
            let mut st = st;
            if network.is_some() {
                // The node's subnets of the (only) tenant network, from its node file.
                let nf: Value =
                    serde_json::from_slice(&std::fs::read(lab.lab_dir().join(&node).join("node.json")).unwrap())
                        .expect("node.json");
                st = nf["networks"][0].clone();
            }
            let subnets = ["subnet", "subnet6"].iter().filter_map(|k| st[*k].as_str().map(str::to_string)).collect();
            lab.nodes.push((node, n["ns"].as_str().expect("ns").to_string(), subnets));
        }
        if network.is_some() {
            // `lab up --network` created the network's namespaces: they are relabelled, not added.
            for ns in NAMESPACES {
                lab.world.namespaces.insert(ns.into(), Default::default());
            }
        }
        for ns in NAMESPACES {
            let mut labels: Vec<(String, String)> = vec![("ns".into(), ns.into())];
            labels.extend(extra_ns_labels(ns));
            lab.set_namespace_labels(ns, &labels);
        }
        for (i, (ns, pod)) in NAMESPACES.iter().flat_map(|n| PODS.iter().map(move |p| (*n, *p))).enumerate() {
            lab.add_pod(ns, pod, &format!("node{}", i % 2 + 1));
        }
        ctl(&["policy", "wait", "--lab", &name]);
        lab
    }

    fn lab_dir(&self) -> PathBuf {
        PathBuf::from("/run/weft-lab").join(&self.name)
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.lab_dir().join("state.json")).expect("lab state")).expect("json")
    }

    /// Creates or relabels namespace `ns` in the store and in the model.
    pub fn set_namespace_labels(&mut self, ns: &str, labels: &[(String, String)]) {
        // `ns-add` creates; an existing namespace is relabelled in place (`lab label ns`, kubectl semantics).
        let mut args = vec!["lab".to_string()];
        match self.world.namespaces.get(ns) {
            None => {
                args.extend(["ns-add".into(), "--lab".into(), self.name.clone(), ns.into()]);
                for (k, v) in labels {
                    args.extend(["--label".to_string(), format!("{k}={v}")]);
                }
            }
            Some(old) => {
                args.extend(["label".into(), "ns".into(), "--lab".into(), self.name.clone(), ns.into()]);
                args.push("--overwrite".into());
                args.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
                args.extend(old.keys().filter(|k| !labels.iter().any(|(l, _)| l == *k)).map(|k| format!("{k}-")));
            }
        }
        ctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        self.world.namespaces.insert(ns.into(), labels.iter().cloned().collect());
    }

    /// CNI ADD + store registration, then starts the pod's server and waits until it listens.
    fn add_pod(&mut self, ns: &str, pod: &str, node: &str) {
        let mut labels = vec![("pod".to_string(), pod.to_string())];
        labels.extend(extra_pod_labels(pod));
        let ports = pod_ports(pod);
        let mut args: Vec<String> = ["lab", "pod-add", "--name", &self.name, "--node", node, "-n", ns, "--pod", pod]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (k, v) in &labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        for (n, p, proto) in &ports {
            args.extend(["--port".into(), format!("{n}={p}/{proto}")]);
        }
        let out = ctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        // "pod x/a 10.244.0.2 wlNAME-n1x..."
        let fields: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"pod"), "unexpected pod-add output: {out}");
        let (ip, netns) = (fields[2].parse().expect("pod IP"), fields[3].to_string());
        let ip6 = self.families.contains(&Family::V6).then(|| {
            let st = self.state();
            let p =
                st["nodes"].as_array().into_iter().flatten().flat_map(|n| n["pods"].as_array().into_iter().flatten());
            let found = p.into_iter().find(|p| p["ns"] == netns.as_str()).expect("pod in lab state");
            found["ip6"].as_str().and_then(|s| s.parse().ok()).expect("dual-stack pod has an IPv6 address")
        });
        let mut server = Command::new("ip")
            .args(["netns", "exec", &netns, probe_bin(), "serve", "--tcp", "80,81", "--udp", "80,81"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("weft-probe serve");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().expect("stdout")), &mut line)
            .expect("server output");
        self.servers.push(server);
        assert_eq!(line.trim(), "serving", "weft-probe serve in {netns} did not start");
        let pod = Pod {
            namespace: ns.into(),
            name: pod.into(),
            labels: labels.into_iter().collect(),
            ip,
            ip6,
            node: node.into(),
            ports,
        };
        self.pods.push(LabPod { pod, netns });
    }

    pub fn pod(&self, key: &str) -> &LabPod {
        self.pods.iter().find(|p| p.pod.key() == key).unwrap_or_else(|| panic!("no pod {key}"))
    }

    /// Placeholders in scenario YAML: `{ip:x/a}` / `{ip6:x/a}` (a pod's address), `{net:node1}` /
    /// `{net6:node1}` (a node's pod subnet).
    pub fn expand(&self, yaml: &str) -> String {
        let mut out = yaml.to_string();
        for p in &self.pods {
            out = out.replace(&format!("{{ip:{}}}", p.pod.key()), &p.pod.ip.to_string());
            if let Some(ip6) = p.pod.ip6 {
                out = out.replace(&format!("{{ip6:{}}}", p.pod.key()), &ip6.to_string());
            }
        }
        for (node, _, subnets) in &self.nodes {
            for (i, tag) in ["net", "net6"].iter().enumerate() {
                if let Some(subnet) = subnets.get(i) {
                    out = out.replace(&format!("{{{tag}:{node}}}"), subnet);
                }
            }
        }
        let left = ["{ip:", "{ip6:", "{net:", "{net6:"].iter().any(|p| out.contains(p));
        assert!(!left, "unknown placeholder in:\n{out}");
        out
    }

    /// `weftctl policy apply` the YAML and update the model.
    pub fn apply(&mut self, yaml: &str) {
        let yaml = self.expand(yaml);
        let file = self.dir.path().join(format!("{}.yaml", unique()));
        std::fs::write(&file, &yaml).expect("write policy file");
        ctl(&["policy", "apply", "--lab", &self.name, "-f", file.to_str().expect("utf-8 path")]);
        self.world.apply(&yaml);
    }

    pub fn delete(&mut self, key: &str) {
        ctl(&["policy", "delete", "--lab", &self.name, key]);
        self.world.delete(key);
    }

    pub fn delete_all(&mut self) {
        ctl(&["policy", "delete", "--lab", &self.name, "--all"]);
        self.world.policies.clear();
    }

    /// Blocks until every node's agent enforces exactly the store's policies.
    pub fn wait(&self) {
        ctl(&["policy", "wait", "--lab", &self.name]);
    }

    /// `weftctl policy explain` for one cell: true if it says allowed.
    pub fn explain(&self, src: &str, dst: &str, port: u16, proto: &str) -> bool {
        let out = weftctl(&[
            "policy",
            "explain",
            "--lab",
            &self.name,
            "--from",
            src,
            "--to",
            dst,
            "--port",
            &format!("{port}/{proto}"),
        ]);
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("policy explain failed: {}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (node, _, _) in &self.nodes {
            if let Ok(l) = std::fs::read_to_string(self.lab_dir().join(node).join("weftd.log")) {
                let lines: Vec<&str> = l.lines().collect();
                s += &format!("--- {node} weftd.log (tail)\n{}\n", lines[lines.len().saturating_sub(20)..].join("\n"));
            }
        }
        s
    }
}

impl Drop for PolicyLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = weftctl(&["lab", "down", "--name", &self.name]);
    }
}

/// Wall-clock of a closure, for the per-scenario timing the tests print.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    (f(), t.elapsed())
}

/// Namespace labels every scenario starts from.
pub fn default_ns_labels(ns: &str) -> Vec<(String, String)> {
    let mut l = vec![("ns".to_string(), ns.to_string())];
    match ns {
        "x" => l.push(("team".into(), "red".into())),
        "y" => l.push(("team".into(), "blue".into())),
        _ => {}
    }
    l
}

/// Probes until the matrix matches (for changes without a wait handle); the last difference on timeout.
pub fn eventually(lab: &mut PolicyLab, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let diff = lab.check()?;
        if Instant::now() > deadline {
            return Some(diff);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `weftctl policy explain` must agree with the model too: a few cells per probe, chosen by a hash of the
/// scenario and step so every run checks the same ones (explain takes a pod's IPv4 address when it has one).
pub fn explain_agrees(lab: &PolicyLab, salt: &str) -> Result<(), String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let n = lab.pods.len() as u64;
    for k in 0..4u64 {
        let i = ((h >> (k * 8)) % n) as usize;
        let j = (i + 1 + ((h >> (k * 8 + 4)) % (n - 1)) as usize) % n as usize;
        let (src, dst) = (&lab.pods[i].pod, &lab.pods[j].pod);
        let (port, proto) = SERVICES[((h >> (40 + k * 2)) % 4) as usize];
        let want = lab.world.allowed(src, dst, port, proto, Family::V4);
        let said = lab.explain(&src.key(), &dst.key(), port, proto);
        if want != said {
            return Err(format!(
                "weftctl policy explain says {} for {} → {} {port}/{proto}, the model says {}",
                if said { "allowed" } else { "denied" },
                src.key(),
                dst.key(),
                if want { "allowed" } else { "denied" }
            ));
        }
    }
    Ok(())
}
