//! Pods in the lab are created exactly as a container runtime creates them: a namespace, then the real `weft`
//! CNI binary called with CNI_* variables and the network config on stdin, inside the node's namespace.
use super::state::{LabState, NodeState, PodState};
use crate::sh::{check, ns_command};
use anyhow::{Context, Result};
use std::io::Write;
use std::process::Stdio;

pub fn cni_config(lab: &LabState, node: &NodeState) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": format!("weft-lab-{}", lab.name),
        "type": "weft",
        "nodeFile": node.dir.join("node.json"),
        "dataDir": node.dir.join("ipam"),
    })
}

/// Calls the plugin; returns its stdout (the CNI result JSON).
pub fn cni(lab: &LabState, node: &NodeState, pod: &PodState, verb: &str) -> Result<String> {
    let mut c = ns_command(&node.ns, lab.bin_dir.join("weft"));
    c.env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", format!("/var/run/netns/{}", pod.ns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &lab.bin_dir)
        .env("CNI_ARGS", format!("K8S_POD_NAMESPACE={};K8S_POD_NAME={}", pod.namespace, pod.name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().context("running the weft CNI plugin")?;
    child.stdin.take().expect("stdin").write_all(cni_config(lab, node).to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    check("weft", &[verb, &pod.name], &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the pod namespace and attaches it; fills in the pod's addresses from the CNI result.
/// The pod's network is the one its namespace is on when it is created (recorded in `pod.network`).
pub fn add_pod(lab: &LabState, node: &NodeState, pod: &mut PodState) -> Result<()> {
    let net = super::networks::prepare_pod(lab, node, &pod.namespace)?;
    pod.network = net.as_ref().map(|n| n.name.clone());
    super::topology::add_ns(&pod.ns)?;
    let out = match cni(lab, node, pod, "ADD") {
        Ok(out) => out,
        Err(e) => {
            let _ = crate::sh::run("ip", &["netns", "del", &pod.ns]);
            return Err(e);
        }
    };
    let res: serde_json::Value = serde_json::from_str(&out).context("CNI result is not JSON")?;
    for ipc in res["ips"].as_array().into_iter().flatten() {
        let addr = ipc["address"].as_str().unwrap_or_default();
        let ip = addr.split('/').next().unwrap_or_default().to_string();
        if ip.contains(':') {
            pod.ip6 = Some(ip);
        } else {
            pod.ip = Some(ip);
        }
    }
    if let Err(e) = super::networks::check_address(net.as_ref(), pod.ip.as_deref()) {
        del_pod(lab, node, pod);
        return Err(e);
    }
    Ok(())
}

/// Detaches the pod (CNI DEL), stops whatever still runs in its namespace (servers started with `lab exec`),
/// and deletes the namespace.
pub fn del_pod(lab: &LabState, node: &NodeState, pod: &PodState) {
    let _ = cni(lab, node, pod, "DEL");
    crate::sh::kill_netns_pids(&pod.ns);
    let _ = crate::sh::run("ip", &["netns", "del", &pod.ns]);
}
