//! The lab in "kube mode": a fake Kubernetes API server (`weft-fake-apiserver`, crates/store-kube) runs in the
//! fabric namespace, the agents use the Kubernetes store against it, and workloads are created as API objects
//! (Nodes, Namespaces, Pods, NetworkPolicies) the way kubectl and the kubelet would. It is a fake: it proves the
//! agent end to end with that store, not compatibility with every API server behaviour (see deploy/README.md).
use super::state::{LabState, NodeState, PodState};
use crate::sh::{alive, ns_command, spawn_detached};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub const API_PORT: u16 = 16443;

pub fn start_api(lab: &LabState) -> Result<u32> {
    let dir = lab.dir().join("apiserver");
    std::fs::create_dir_all(&dir)?;
    let mut c = ns_command(&lab.fabric_ns, lab.bin_dir.join("weft-fake-apiserver"));
    c.args(["--listen", &format!("0.0.0.0:{API_PORT}")]);
    c.arg("--network-config").arg(lab.dir().join("network.json"));
    for n in &lab.nodes {
        c.args(["--node", &n.name]);
    }
    let pid = spawn_detached(c, &dir.join("apiserver.log"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let url = format!("http://127.0.0.1:{API_PORT}/api/v1/nodes");
        let ok = ns_command(&lab.fabric_ns, "curl").args(["-sf", &url]).output().map(|o| o.status.success());
        if ok.unwrap_or(false) {
            return Ok(pid);
        }
        if !alive(pid) {
            bail!("weft-fake-apiserver exited; see {}", dir.join("apiserver.log").display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("weft-fake-apiserver did not answer")
}

/// `kubectl apply` of one object (or a List) through the fake's admin endpoint.
pub fn apply(lab: &LabState, obj: &serde_json::Value) -> Result<()> {
    admin(lab, "apply", obj)
}

pub fn delete(lab: &LabState, kind: &str, namespace: Option<&str>, name: &str) -> Result<()> {
    admin(lab, "delete", &serde_json::json!({"kind": kind, "namespace": namespace, "name": name}))
}

fn admin(lab: &LabState, verb: &str, body: &serde_json::Value) -> Result<()> {
    let url = format!("http://127.0.0.1:{API_PORT}/admin/{verb}");
    let mut child = ns_command(&lab.fabric_ns, "curl")
        .args(["-sS", "-f", "-X", "POST", "-H", "content-type: application/json", "--data-binary", "@-", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("curl")?;
    child.stdin.take().expect("stdin").write_all(body.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    crate::sh::check("curl", &[&url], &out)
}

/// The Pod object the kubelet would have reported for a lab pod.
pub fn pod_object(node: &NodeState, pod: &PodState, ports: &[serde_json::Value]) -> serde_json::Value {
    let ips: Vec<serde_json::Value> =
        pod.ip.iter().chain(pod.ip6.iter()).map(|ip| serde_json::json!({"ip": ip})).collect();
    let container_ports: Vec<serde_json::Value> = ports
        .iter()
        .map(|p| serde_json::json!({"name": p["name"], "containerPort": p["port"], "protocol": p["protocol"]}))
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": pod.labels},
        "spec": {"nodeName": node.name, "containers": [{"name": "main", "image": "busybox", "ports": container_ports}]},
        "status": {"phase": "Running", "podIP": pod.ip, "podIPs": ips},
    })
}

pub fn namespace_object(name: &str, labels: &std::collections::BTreeMap<String, String>) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}
