//! A node run by hand in a test: its namespace, its state directory and its `weftd` child (for tests that build
//! nodes themselves instead of `weftctl lab`). The agent is killed on drop; the namespace's own guard removes
//! the rest (a persistent TUN device goes with the namespace).

use crate::{bin, wait_until, Netns};
use serde_json::Value;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct AgentNode {
    pub name: String,
    pub ip: String,
    pub ns: Netns,
    pub dir: PathBuf,
    pub agent: Option<Child>,
}

impl AgentNode {
    pub fn new(name: String, ip: String, ns: Netns, dir: PathBuf) -> Self {
        AgentNode { name, ip, ns, dir, agent: None }
    }

    /// Starts `weftd` for this node on `store` with the network config at `net_cfg`: node file, state and IPAM
    /// inside the node's directory, HTTP on 127.0.0.1:9473 of its namespace, 1 s resync, 20 s lease TTL, no
    /// policy; the log is appended to `weftd.log` (a restart keeps the earlier lines).
    pub fn start(&mut self, store: &str, net_cfg: &Path) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("weftd.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(bin("weftd"))
            .args(["--node-name", &self.name, "--node-ip", &self.ip, "--store", store])
            .arg("--network-config")
            .arg(net_cfg)
            .arg("--node-file")
            .arg(self.dir.join("node.json"))
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("--cni-data-dir")
            .arg(self.dir.join("ipam"))
            // Not the host's /var/run/wireguard: agents of parallel tests would share it.
            .arg("--wireguard-uapi-dir")
            .arg(self.dir.join("wireguard"))
            .args(["--listen", "127.0.0.1:9473", "--resync-interval", "1s", "--lease-ttl", "20s", "--no-policy"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("weftd");
        self.agent = Some(child);
    }

    fn json(&self, file: &str) -> Value {
        std::fs::read(self.dir.join(file)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
    }

    /// The agent's status.json (Null until written).
    pub fn status(&self) -> Value {
        self.json("status.json")
    }

    /// The node file the agent writes for the plugin (Null until written).
    pub fn node_file(&self) -> Value {
        self.json("node.json")
    }

    /// The status entry of tenant network `name` (Null when the node does not list it).
    pub fn network(&self, name: &str) -> Value {
        self.status()["networks"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("weftd.log")).unwrap_or_default()
    }

    /// The last `n` lines of the agent's log, headed with the node's name (for assertion messages).
    pub fn log_tail(&self, n: usize) -> String {
        let l = self.log();
        let lines: Vec<&str> = l.lines().collect();
        format!("--- {} weftd.log (tail)\n{}\n", self.name, lines[lines.len().saturating_sub(n)..].join("\n"))
    }

    /// SIGTERM: the agent exits without tearing anything down (as on an upgrade); SIGKILL after 20 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            if !wait_until(Duration::from_secs(20), || c.try_wait().ok().flatten().is_some()) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
