//! `weftctl lab`: a whole weft cluster on one machine, built from namespaces, real agents and the real plugin.
//!
//! `up` builds it step by step and prints progress, then the node table and the connectivity matrix, and
//! leaves everything running; `status`, `exec` and `down` find it again through its state file.
pub mod agents;
pub mod kube;
pub mod label;
pub mod matrix;
pub mod networks;
pub mod pki;
pub mod pods;
pub mod state;
pub mod topology;
pub mod verdict;
pub mod workloads;

use crate::sh::{alive, is_ours, kill, netns_list};
use anyhow::{bail, Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use state::{lab_dir, prefix_for, LabState, NodeState, PodState};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub nodes: usize,
    pub pods_per_node: usize,
    pub backend: String,
    pub store: String,
    pub underlay: Option<String>,
    pub ipv6: bool,
    pub lease_ttl: String,
    pub bin_dir: PathBuf,
    /// Tenant networks written to the store before the agents start (`--network`).
    pub networks: Vec<weft_types::TenantNetwork>,
}

struct Progress {
    t0: Instant,
    step: usize,
    total: usize,
}

impl Progress {
    fn say(&mut self, what: &str) {
        self.step += 1;
        println!("[{}/{}] {what} (t={:.1}s)", self.step, self.total, self.t0.elapsed().as_secs_f64());
    }
}

/// The lab's WireGuard port (the conventional one); tests capture the underlay for it.
pub const WIREGUARD_PORT: u16 = 51820;

pub fn up(o: &UpOptions) -> Result<LabState> {
    if !matches!(o.backend.as_str(), "vxlan" | "host-gw" | "wireguard") {
        bail!("--backend must be vxlan, host-gw or wireguard");
    }
    if !matches!(o.store.as_str(), "embedded" | "etcd" | "kube") {
        bail!("--store must be embedded, etcd or kube (a fake Kubernetes API server)");
    }
    if !o.networks.is_empty() && o.backend != "vxlan" {
        bail!("tenant networks (--network) need the vxlan backend: each network is a VXLAN segment of its own");
    }
    if o.nodes == 0 || o.nodes > 200 {
        bail!("--nodes must be between 1 and 200");
    }
    for b in ["weft", "weftd"] {
        if !o.bin_dir.join(b).exists() {
            bail!("{} not found in {} (build with cargo build, or pass --bin-dir)", b, o.bin_dir.display());
        }
    }
    state::validate_name(&o.name)?;
    if lab_dir(&o.name).join("state.json").exists() {
        bail!("lab {:?} is already up: `weftctl lab down --lab {}` first", o.name, o.name);
    }
    let underlay = o.underlay.clone().unwrap_or_else(|| if o.backend == "host-gw" { "l2" } else { "routed" }.into());
    match underlay.as_str() {
        "l2" | "routed" => {}
        "routed6" if o.backend == "host-gw" => {
            bail!("host-gw cannot route IPv4 pod subnets over an IPv6 underlay; use vxlan or wireguard")
        }
        // The stores' lab wiring (etcd's certificates, the fake API server's listener) is IPv4.
        "routed6" if o.store != "embedded" => bail!("--underlay routed6 runs with --store embedded"),
        "routed6" => {}
        other => bail!("--underlay must be l2, routed or routed6, not {other:?}"),
    }
    let mut p = Progress { t0: Instant::now(), step: 0, total: 6 };
    let prefix = prefix_for(&o.name);
    let dir = lab_dir(&o.name);
    std::fs::create_dir_all(&dir)?;
    let fabric_ip = if underlay == "l2" { topology::FABRIC_IP_L2.to_string() } else { "172.30.1.254".to_string() };
    let store_url = match o.store.as_str() {
        // TLS with client certificates (lab/pki.rs): pods reach the fabric, and must not reach the store.
        "etcd" => format!("etcds://{fabric_ip}:{}", agents::ETCD_PORT),
        "kube" => format!("kube+http://{fabric_ip}:{}", kube::API_PORT),
        _ => format!("embedded://{}", dir.join("store.db").display()),
    };
    let mut lab = LabState {
        name: o.name.clone(),
        prefix: prefix.clone(),
        backend: o.backend.clone(),
        store: o.store.clone(),
        store_url,
        underlay: underlay.clone(),
        fabric_ns: format!("{prefix}-fab"),
        nodes: vec![],
        store_pid: None,
        bin_dir: o.bin_dir.clone(),
        networks: vec![],
    };
    lab.save()?;
    let result = build(&mut lab, o, &mut p);
    lab.save()?;
    if let Err(e) = result {
        eprintln!(
            "lab up failed: {e:#}\n(the partial lab is left for inspection: `weftctl lab down --lab {}`)",
            o.name
        );
        return Err(e);
    }
    Ok(lab)
}

fn build(lab: &mut LabState, o: &UpOptions, p: &mut Progress) -> Result<()> {
    p.say(&format!("underlay: fabric namespace, {} nodes on a {} underlay", o.nodes, lab.underlay));
    topology::create_fabric(&lab.fabric_ns, &lab.underlay)?;
    for i in 1..=o.nodes {
        let ns = format!("{}-n{i}", lab.prefix);
        let ip = topology::create_node(&lab.fabric_ns, &ns, i, &lab.underlay)?;
        let name = format!("node{i}");
        lab.nodes.push(NodeState { dir: lab.dir().join(&name), name, ns, ip, agent_pid: None, pods: vec![] });
    }
    lab.save()?;
    // `port` is the backend's UDP port: VXLAN's, or WireGuard's listen port.
    let port = if o.backend == "wireguard" { WIREGUARD_PORT } else { 8472 };
    let mut net = serde_json::json!({
        "clusterCidr": "10.244.0.0/16", "subnetLen": 24,
        "backend": {"type": o.backend, "vni": 1, "port": port},
    });
    if o.ipv6 {
        net["clusterCidr6"] = "fd00:10:244::/56".into();
        net["subnetLen6"] = 64.into();
    }
    std::fs::write(lab.dir().join("network.json"), serde_json::to_vec_pretty(&net)?)?;
    std::fs::write(lab.dir().join("lease-ttl"), &o.lease_ttl)?;
    if o.store == "etcd" {
        p.say("store: starting etcd in the fabric namespace");
        lab.store_pid = Some(agents::start_etcd(lab)?);
        lab.save()?;
    } else if o.store == "kube" {
        p.say("store: starting a FAKE Kubernetes API server (weft-fake-apiserver) in the fabric namespace");
        lab.store_pid = Some(kube::start_api(lab)?);
        lab.save()?;
    } else {
        p.say(&format!("store: embedded database {}", lab.store_url.trim_start_matches("embedded://")));
    }
    if !o.networks.is_empty() {
        let names: Vec<&str> = o.networks.iter().map(|n| n.name.as_str()).collect();
        println!("      tenant networks: {}", names.join(", "));
        networks::create_at_up(lab, &o.networks)?;
        lab.save()?;
    }
    p.say(&format!("agents: starting weftd on {} nodes", lab.nodes.len()));
    for i in 0..lab.nodes.len() {
        let pid = agents::start_agent(lab, &lab.nodes[i], &o.lease_ttl)?;
        lab.nodes[i].agent_pid = Some(pid);
    }
    lab.save()?;
    for n in &lab.nodes {
        let nf = agents::wait_node_file(n, n.agent_pid.expect("pid"), Duration::from_secs(30))?;
        println!("      {}: lease {} (pod MTU {})", n.name, nf.subnet, nf.mtu);
    }
    for net in &o.networks {
        networks::wait_nodes(lab, &net.name, |nf| nf.networks.iter().any(|n| n.name == net.name))
            .with_context(|| format!("network {:?}", net.name))?;
    }
    if !o.networks.is_empty() {
        networks::wait_ready(lab, Duration::from_secs(60))?;
    }
    // Pods in "default", and as many in the first namespace of every network that lists one.
    let mut spaces = vec![("default".to_string(), "p".to_string())];
    for (k, net) in o.networks.iter().enumerate() {
        if let Some(ns) = net.namespaces.names.first() {
            spaces.push((ns.clone(), format!("t{k}p")));
        }
    }
    p.say(&format!("pods: {} per node and namespace through the weft CNI plugin", o.pods_per_node));
    for (namespace, tag) in &spaces {
        for i in 0..lab.nodes.len() {
            for j in 1..=o.pods_per_node {
                add_up_pod(lab, i, j, namespace, tag)?;
            }
        }
    }
    let all: Vec<_> = lab.pods().map(|(n, p)| (n.clone(), p.clone(), vec![])).collect();
    workloads::register(lab, &all).context("registering pods in the store")?;
    p.say("convergence: waiting for every agent to program every peer and admit its pods");
    agents::wait_converged(lab, Duration::from_secs(60))?;
    if lab.backend == "wireguard" {
        wait_handshakes(lab, Duration::from_secs(30))?;
    }
    p.say("connectivity: every pod pings every other pod");
    Ok(())
}

/// Pod `j` of node `i` in `namespace` (`tag` keeps netns and container ids of namespaces apart).
fn add_up_pod(lab: &mut LabState, i: usize, j: usize, namespace: &str, tag: &str) -> Result<()> {
    let node = lab.nodes[i].clone();
    let ids = if namespace == "default" { String::new() } else { format!("-{namespace}") };
    let mut pod = PodState {
        name: format!("{}-pod{j}", node.name),
        ns: format!("{}-n{}{tag}{j}", lab.prefix, i + 1),
        container_id: format!("lab-{}{ids}-{}-{j}", lab.name, node.name),
        ip: None,
        ip6: None,
        namespace: namespace.into(),
        labels: [("app".to_string(), format!("pod{j}")), ("node".to_string(), node.name.clone())].into(),
        network: None,
    };
    pods::add_pod(lab, &node, &mut pod).with_context(|| format!("creating {namespace}/{}", pod.name))?;
    lab.nodes[i].pods.push(pod);
    lab.save()
}

/// WireGuard sessions are made by the first packet: an initiation that reaches a node which has not yet read
/// the sender's lease is dropped, and the sender tries again only after WireGuard's rekey timeout (5 s). So
/// before the matrix, one pod per node pings one pod on every other node until each answers.
fn wait_handshakes(lab: &LabState, timeout: Duration) -> Result<()> {
    let firsts: Vec<(&str, &str)> =
        lab.nodes.iter().filter_map(|n| n.pods.first().and_then(|p| Some((p.ns.as_str(), p.ip.as_deref()?)))).collect();
    let deadline = Instant::now() + timeout;
    for (i, (src, _)) in firsts.iter().enumerate() {
        for (j, (_, dst)) in firsts.iter().enumerate() {
            if i == j {
                continue;
            }
            loop {
                let ok = crate::sh::ns_command(src, "ping")
                    .args(["-c", "1", "-W", "1", "-n", dst])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("no WireGuard session from {src} to {dst} within {timeout:?}");
                }
            }
        }
    }
    Ok(())
}

pub fn print_nodes(lab: &LabState) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["node", "node IP", "subnet", "VTEP MAC", "agent", "peers", "pods"]);
    for n in &lab.nodes {
        let st = agents::agent_status(n);
        let get = |k: &str| st.as_ref().and_then(|s| s[k].as_str().map(str::to_string)).unwrap_or("-".into());
        let mut subnet = get("subnet");
        if let Some(s6) = st.as_ref().and_then(|s| s["subnet6"].as_str()) {
            subnet = format!("{subnet}\n{s6}");
        }
        let running = n.agent_pid.is_some_and(alive);
        let peers = st.as_ref().and_then(|s| s["peers"].as_array().map(Vec::len)).unwrap_or(0);
        let on = |p: &PodState| p.network.as_ref().map(|n| format!("@{n}")).unwrap_or_default();
        let pods: Vec<String> = n
            .pods
            .iter()
            .map(|p| format!("{}/{}{} {}", p.namespace, p.name, on(p), p.ip.clone().unwrap_or_default()))
            .collect();
        t.add_row([
            n.name.clone(),
            n.ip.clone(),
            subnet,
            get("vtepMac"),
            if running { "running".into() } else { "DOWN".into() },
            peers.to_string(),
            pods.join("\n"),
        ]);
    }
    println!("{t}");
}

/// Prints the matrix (read against the store's policies) and its legend; returns the number of broken pairs
/// (FAIL or LEAK; pairs denied by policy are expected, not broken).
pub fn print_matrix(lab: &LabState) -> usize {
    let model = workloads::store_of(lab)
        .with_store(|store| async move { crate::store::load_model(store.as_ref()).await })
        .map_err(|e| format!("{e:#}"));
    let mut fails = 0;
    let families: &[bool] = if lab.pods().any(|(_, p)| p.ip6.is_some()) { &[false, true] } else { &[false] };
    for &v6 in families {
        let m = matrix::measure(lab, v6, &model);
        if !v6 {
            println!("{}", m.render());
            println!("{}", m.legend());
        }
        let pairs = m.names.len() * m.names.len().saturating_sub(1);
        let across = if m.networks {
            format!(
                ", {} isolated across networks, {} LEAK across networks, {} not probed (address also in the source's network)",
                m.isolated(),
                m.leaks_across(),
                m.shadowed()
            )
        } else {
            String::new()
        };
        println!(
            "{}: {}/{pairs} pod pairs connected, {} denied by policy, {} broken{across}",
            if v6 { "IPv6" } else { "IPv4" },
            m.connected(),
            m.denied(),
            m.failures()
        );
        if v6 && m.failures() > 0 {
            println!("{}", m.render());
        }
        fails += m.failures();
    }
    fails
}

pub fn status(name: &str) -> Result<usize> {
    let lab = LabState::load(name)?;
    println!("lab {:?}: backend {}, store {}, underlay {}", lab.name, lab.backend, lab.store, lab.underlay);
    print_nodes(&lab);
    if !networks::list(&lab)?.is_empty() {
        networks::print(&lab)?;
    }
    Ok(print_matrix(&lab))
}

/// Runs `cmd` in a pod's namespace (`NAMESPACE/POD`, or a bare `POD` when unambiguous) or a node's (`node1`).
pub fn exec(name: &str, target: &str, cmd: &[String]) -> Result<i32> {
    let lab = LabState::load(name)?;
    if cmd.is_empty() {
        bail!("usage: weftctl lab exec NAMESPACE/POD -- CMD [ARGS] (or a node: weftctl lab exec node1 -- CMD)");
    }
    let node = lab.nodes.iter().find(|n| n.name == target);
    let ns = match node {
        Some(n) if lab.pods().any(|(_, p)| p.name == target) => {
            bail!("{target:?} is both node {} and a pod: say NAMESPACE/POD for the pod", n.name)
        }
        Some(n) => n.ns.clone(),
        None => {
            let (ni, pi) = lab.resolve_pod(target).map_err(|e| {
                let nodes: Vec<&str> = lab.nodes.iter().map(|n| n.name.as_str()).collect();
                anyhow::anyhow!("{e:#} (exec takes NAMESPACE/POD or a node: {})", nodes.join(", "))
            })?;
            lab.nodes[ni].pods[pi].ns.clone()
        }
    };
    let status = crate::sh::ns_command(&ns, &cmd[0]).args(&cmd[1..]).status()?;
    Ok(status.code().unwrap_or(1))
}

/// Removes everything: pods through CNI DEL, agents and etcd (SIGTERM, then SIGKILL), namespaces (and with
/// them every device, route and nftables table the agents made). Works from a half-built or crashed lab: anything with the lab prefix goes.
pub fn down(name: &str) -> Result<()> {
    state::validate_name(name)?;
    let prefix = prefix_for(name);
    if let Ok(lab) = LabState::load(name) {
        for n in &lab.nodes {
            for p in &n.pods {
                pods::del_pod(&lab, n, p);
            }
        }
        let pids: Vec<u32> = lab
            .nodes
            .iter()
            .filter_map(|n| n.agent_pid)
            .chain(lab.store_pid)
            .filter(|&p| is_ours(p, "weft") || is_ours(p, "etcd"))
            .collect();
        for &pid in &pids {
            kill(pid, "-TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &pid in &pids {
            if alive(pid) {
                kill(pid, "-KILL");
            }
        }
    }
    let mut removed = 0;
    for ns in netns_list().into_iter().filter(|n| n.starts_with(&format!("{prefix}-"))) {
        // Processes still inside (a crashed lab's agents, servers in pods) are killed first.
        crate::sh::kill_netns_pids(&ns);
        crate::sh::run("ip", &["netns", "del", &ns])?;
        removed += 1;
    }
    let dir = lab_dir(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    println!("lab {name:?} removed ({removed} namespaces)");
    Ok(())
}

/// Restarts (or, with `kill_only`, kills) one node's agent.
pub fn restart(name: &str, node: &str, kill_only: bool) -> Result<()> {
    LabState::update(name, |lab| restart_in(lab, node, kill_only))
}

fn restart_in(lab: &mut LabState, node: &str, kill_only: bool) -> Result<()> {
    let i = lab.nodes.iter().position(|n| n.name == node).with_context(|| format!("no node {node:?}"))?;
    if let Some(pid) = lab.nodes[i].agent_pid.take().filter(|&p| is_ours(p, "weftd")) {
        kill(pid, if kill_only { "-KILL" } else { "-TERM" });
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(pid) {
            // Never run two agents for one node: the old one goes, whatever it was doing.
            kill(pid, "-KILL");
            while alive(pid) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    if !kill_only {
        let ttl = std::fs::read_to_string(lab.dir().join("lease-ttl")).unwrap_or_else(|_| "10s".into());
        lab.nodes[i].agent_pid = Some(agents::start_agent(lab, &lab.nodes[i], ttl.trim())?);
    }
    Ok(())
}

/// Stops or starts the lab's etcd (same data, same ports).
pub fn etcd(name: &str, action: &str) -> Result<()> {
    LabState::update(name, |lab| etcd_in(lab, action))
}

fn etcd_in(lab: &mut LabState, action: &str) -> Result<()> {
    let name = lab.name.clone();
    if lab.store != "etcd" {
        bail!("lab {name:?} runs the embedded store, not etcd");
    }
    match action {
        "stop" => {
            if let Some(pid) = lab.store_pid.take().filter(|&p| is_ours(p, "etcd")) {
                kill(pid, "-KILL");
                while alive(pid) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        "start" => {
            if lab.store_pid.is_some_and(alive) {
                bail!("etcd is already running");
            }
            lab.store_pid = Some(agents::start_etcd(lab)?);
        }
        _ => bail!("action must be stop or start"),
    }
    Ok(())
}
