//! Starting the lab's processes: one `weftd` per node (inside the node's namespace), and etcd when asked.
use super::state::{LabState, NodeState};
use crate::sh::{alive, ns_command, spawn_detached};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

pub const ETCD_PORT: u16 = 23790;

/// Starts etcd inside the fabric namespace, listening on the fabric's addresses so every node reaches it.
/// With an `etcds://` store URL it serves TLS only and requires a client certificate signed by the lab CA
/// (`pki`), so pods, which reach the fabric too, cannot talk to it.
pub fn start_etcd(lab: &LabState) -> Result<u32> {
    let dir = lab.dir().join("etcd");
    std::fs::create_dir_all(&dir)?;
    let scheme = if super::pki::uses_tls(lab) { "https" } else { "http" };
    let client = format!("{scheme}://0.0.0.0:{ETCD_PORT}");
    let advertise = format!("{scheme}://127.0.0.1:{ETCD_PORT}");
    let mut c = ns_command(&lab.fabric_ns, "etcd");
    c.args(["--name", "lab", "--data-dir"]).arg(dir.join("data"));
    c.args(["--listen-client-urls", &client, "--advertise-client-urls", &advertise]);
    c.args(["--listen-peer-urls", "http://127.0.0.1:23800", "--initial-advertise-peer-urls", "http://127.0.0.1:23800"]);
    c.args(["--initial-cluster", "lab=http://127.0.0.1:23800", "--initial-cluster-state", "new"]);
    c.args(["--listen-metrics-urls", "http://127.0.0.1:23810", "--log-level", "warn", "--logger", "zap"]);
    if super::pki::uses_tls(lab) {
        let (cert, key) = super::pki::server(lab)?;
        c.arg("--client-cert-auth").arg("--trusted-ca-file").arg(super::pki::dir(lab).join("ca.pem"));
        c.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
    }
    let pid = spawn_detached(c, &dir.join("etcd.log"))?;
    // The metrics listener (loopback of the fabric namespace) answers /health without a client certificate.
    let url = "http://127.0.0.1:23810/health";
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ok = ns_command(&lab.fabric_ns, "curl").args(["-sf", url]).output().map(|o| o.status.success());
        if ok.unwrap_or(false) {
            return Ok(pid);
        }
        if !alive(pid) {
            bail!("etcd exited; see {}", dir.join("etcd.log").display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("etcd did not become healthy")
}

/// Starts `weftd` for one node; returns its pid.
pub fn start_agent(lab: &LabState, node: &NodeState, lease_ttl: &str) -> Result<u32> {
    std::fs::create_dir_all(&node.dir)?;
    let mut c = ns_command(&node.ns, lab.bin_dir.join("weftd"));
    c.args(["--node-name", &node.name, "--node-ip", &node.ip, "--store", &lab.store_url]);
    c.arg("--network-config").arg(lab.dir().join("network.json"));
    c.arg("--node-file").arg(node.dir.join("node.json"));
    c.arg("--state-dir").arg(&node.dir);
    // /var/run/wireguard is one directory for every node of the lab: each node serves `wg show` from its own.
    c.arg("--wireguard-uapi-dir").arg(node.dir.join("wireguard"));
    c.args(["--lease-ttl", lease_ttl, "--resync-interval", "2s", "--listen", "127.0.0.1:9473"]);
    // The plugin's IPAM directory (`dataDir` in pods.rs): the agent counts tenant pools there (status, drain).
    // By environment, so an agent without the flag starts too.
    c.env("WEFT_CNI_DATA_DIR", node.dir.join("ipam"));
    if super::pki::uses_tls(lab) {
        let f = super::pki::client(lab, &node.name)?;
        let path = |p: Option<std::path::PathBuf>| p.unwrap_or_default();
        c.arg("--etcd-cafile").arg(path(f.ca_file)).arg("--etcd-certfile").arg(path(f.cert_file));
        c.arg("--etcd-keyfile").arg(path(f.key_file));
    }
    spawn_detached(c, &node.dir.join("weftd.log")).context("starting weftd")
}

/// Waits until the agent wrote its node file (it holds a lease) or died.
pub fn wait_node_file(node: &NodeState, pid: u32, timeout: Duration) -> Result<weft_types::NodeFile> {
    let deadline = Instant::now() + timeout;
    let path = node.dir.join("node.json");
    loop {
        if let Ok(nf) = weft_types::NodeFile::load(&path) {
            return Ok(nf);
        }
        if !alive(pid) {
            bail!("weftd on {} exited; see {}", node.name, node.dir.join("weftd.log").display());
        }
        if Instant::now() > deadline {
            bail!("weftd on {} wrote no node file in {timeout:?}", node.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a node agent's status.json.
pub fn agent_status(node: &NodeState) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(node.dir.join("status.json")).ok()?).ok()
}

/// Waits until every agent has programmed all its peers.
pub fn wait_converged(lab: &LabState, timeout: Duration) -> Result<()> {
    let want = lab.nodes.len().saturating_sub(1);
    let deadline = Instant::now() + timeout;
    loop {
        let done = lab.nodes.iter().all(|n| {
            agent_status(n).is_some_and(|s| {
                s["peers"].as_array().map(Vec::len) == Some(want)
                    && s["programmed"]["routes"].as_u64().unwrap_or(0) as usize >= want
                    && s["policy"]["readyPods"].as_u64().unwrap_or(0) as usize >= n.pods.len()
            })
        });
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("agents did not converge in {timeout:?}: see weftd.log files under {}", lab.dir().display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
