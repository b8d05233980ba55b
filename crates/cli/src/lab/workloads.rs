//! Lab workloads as Kubernetes would describe them: namespaces with labels, pods with labels and named container
//! ports, registered in the store (that is how policy learns about them) right after the CNI plugin attached them.
use super::state::{LabState, NodeState, PodState};
use crate::labels::NAMESPACE_NAME_LABEL;
use crate::store::StoreArgs;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use weft_store::ObjectKind;

/// Parses `name=port/PROTO` container ports (`http=80/TCP`, `dns=53/UDP`; protocol defaults to TCP). Names are
/// IANA_SVC_NAMEs and unique in the pod, as the API server requires: a policy's named port must mean one thing.
pub fn ports(items: &[String]) -> Result<Vec<serde_json::Value>> {
    let mut seen = std::collections::BTreeSet::new();
    items
        .iter()
        .map(|s| {
            let (name, rest) = s.split_once('=').with_context(|| format!("port {s:?} is not name=port/PROTO"))?;
            crate::names::port_name(name)?;
            if !seen.insert(name.to_string()) {
                bail!("port name {name:?} given twice");
            }
            let (port, proto) = rest.split_once('/').unwrap_or((rest, "TCP"));
            let port: u16 = port.parse().with_context(|| format!("bad port number in {s:?}"))?;
            if port == 0 {
                bail!("bad port number in {s:?} (1-65535)");
            }
            let proto = proto.to_ascii_uppercase();
            if !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP") {
                bail!("bad protocol in {s:?} (TCP, UDP or SCTP)");
            }
            Ok(serde_json::json!({"name": name, "port": port, "protocol": proto}))
        })
        .collect()
}

pub fn endpoint_json(node: &NodeState, pod: &PodState, ports: &[serde_json::Value]) -> serde_json::Value {
    let ips: Vec<&String> = pod.ip.iter().chain(pod.ip6.iter()).collect();
    serde_json::json!({
        "namespace": pod.namespace, "name": pod.name, "labels": pod.labels, "ips": ips,
        "node": node.name, "ports": ports,
    })
}

pub fn store_of(lab: &LabState) -> StoreArgs {
    StoreArgs { store: None, lab: lab.name.clone() }
}

/// Registers pods (and their namespaces, if not there yet: an existing namespace keeps its labels) in the store.
pub fn register(lab: &LabState, pods: &[(NodeState, PodState, Vec<serde_json::Value>)]) -> Result<()> {
    let mut namespaces: Vec<&str> = pods.iter().map(|(_, p, _)| p.namespace.as_str()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        if namespace_labels(lab, ns)?.is_none() {
            put_namespace(lab, ns, &[(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())].into())?;
        }
    }
    if lab.store == "kube" {
        for (n, p, ports) in pods {
            super::kube::apply(lab, &super::kube::pod_object(n, p, ports))?;
        }
        return Ok(());
    }
    let items: Vec<(String, serde_json::Value)> =
        pods.iter().map(|(n, p, ports)| (format!("{}/{}", p.namespace, p.name), endpoint_json(n, p, ports))).collect();
    store_of(lab).with_store(|store| async move {
        for (k, v) in items {
            store.put_object(ObjectKind::Endpoint, &k, &v).await?;
        }
        Ok(())
    })
}

/// Creates a namespace. An existing one is refused rather than relabelled: replacing its labels would silently
/// drop the ones not repeated here, and merging would make `ns-add` mean two things; `lab label ns` changes
/// labels with kubectl's rules.
pub fn add_namespace(lab: &LabState, name: &str, labels: BTreeMap<String, String>) -> Result<()> {
    crate::names::namespace(name)?;
    if let Some(have) = namespace_labels(lab, name)? {
        let shown: Vec<String> = have.iter().map(|(k, v)| format!("{k}={v}")).collect();
        bail!(
            "namespace {name:?} exists already (labels {}); change its labels with `weftctl lab label ns {name} k=v k2-`",
            shown.join(", ")
        );
    }
    let mut labels = labels;
    if labels.get(NAMESPACE_NAME_LABEL).is_some_and(|v| v != name) {
        bail!("{NAMESPACE_NAME_LABEL} is always the namespace's name");
    }
    labels.insert(NAMESPACE_NAME_LABEL.into(), name.to_string());
    put_namespace(lab, name, &labels)
}

/// The namespace's labels in the store, `None` when it does not exist.
pub fn namespace_labels(lab: &LabState, name: &str) -> Result<Option<BTreeMap<String, String>>> {
    let name = name.to_string();
    store_of(lab).with_store(|store| async move {
        let items = store.objects(ObjectKind::Namespace).await?.items;
        Ok(items
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| serde_json::from_value(v["labels"].clone()).unwrap_or_default()))
    })
}

/// Writes a namespace object (create or replace), through the API in kube mode.
pub fn put_namespace(lab: &LabState, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    if lab.store == "kube" {
        return super::kube::apply(lab, &super::kube::namespace_object(name, labels));
    }
    let v = serde_json::json!({"name": name, "labels": labels});
    let name = name.to_string();
    store_of(lab).with_store(|store| async move {
        store.put_object(ObjectKind::Namespace, &name, &v).await?;
        Ok(())
    })
}

/// Creates a pod on `node` through CNI and registers it.
pub struct NewPod {
    pub node: String,
    pub namespace: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<serde_json::Value>,
    /// Registered without addresses (see `lab pod-add --pending`).
    pub pending: bool,
}

pub fn add_pod(lab_name: &str, new: NewPod) -> Result<PodState> {
    LabState::update(lab_name, |lab| add_pod_in(lab, new))
}

fn add_pod_in(lab: &mut LabState, new: NewPod) -> Result<PodState> {
    let NewPod { node, namespace, name, labels, ports, pending } = new;
    let namespace = namespace.as_str();
    crate::names::namespace(namespace)?;
    let i = lab.nodes.iter().position(|n| n.name == node).with_context(|| format!("no node {node:?}"))?;
    let idx = lab.nodes[i].pods.len() + 1;
    let pname = name.unwrap_or_else(|| format!("{}-pod{idx}", lab.nodes[i].name));
    crate::names::pod(&pname)?;
    if lab.pods().any(|(_, p)| p.namespace == namespace && p.name == pname) {
        bail!("pod {namespace}/{pname} exists already");
    }
    let mut pod = PodState {
        name: pname.clone(),
        ns: format!("{}-n{}x{}", lab.prefix, i + 1, short_hash(&format!("{namespace}/{pname}"))),
        container_id: format!("lab-{}-{namespace}-{pname}", lab.name),
        ip: None,
        ip6: None,
        namespace: namespace.to_string(),
        labels,
        network: None,
    };
    let node_state = lab.nodes[i].clone();
    // Pending: registered first and without addresses, as the API holds a pod before the kubelet runs its
    // sandbox and reports it; the ADD comes after, and no store write follows it.
    if pending {
        register(lab, &[(node_state.clone(), pod.clone(), ports)])
            .with_context(|| format!("registering pod {namespace}/{pname}"))?;
        if let Err(e) = super::pods::add_pod(lab, &node_state, &mut pod) {
            // No sandbox: the object goes too, as the kubelet would have it deleted.
            let _ = unregister(lab, namespace, &pname);
            return Err(e);
        }
    } else {
        super::pods::add_pod(lab, &node_state, &mut pod)?;
        if let Err(e) = register(lab, &[(node_state.clone(), pod.clone(), ports)]) {
            // Not registered means never admitted by policy: undo the attachment rather than leave a dead pod.
            super::pods::del_pod(lab, &node_state, &pod);
            return Err(e.context(format!("registering pod {namespace}/{pname}")));
        }
    }
    lab.nodes[i].pods.push(pod.clone());
    Ok(pod)
}

/// Removes the pod's object from the store (the Pod in kube mode, the endpoint otherwise).
fn unregister(lab: &LabState, namespace: &str, pod: &str) -> Result<()> {
    if lab.store == "kube" {
        return super::kube::delete(lab, "Pod", Some(namespace), pod);
    }
    let key = format!("{namespace}/{pod}");
    store_of(lab).with_store(|store| async move {
        store.delete_object(ObjectKind::Endpoint, &key).await?;
        Ok(())
    })
}

/// Deletes the pod `target` names (`NAMESPACE/POD`, or a bare `POD` when unambiguous).
pub fn del_pod(name: &str, target: &str) -> Result<()> {
    LabState::update(name, |lab| del_pod_in(lab, target))
}

fn del_pod_in(lab: &mut LabState, target: &str) -> Result<()> {
    let (ni, pi) = lab.resolve_pod(target)?;
    let node = lab.nodes[ni].clone();
    let (namespace, pod) = (node.pods[pi].namespace.clone(), node.pods[pi].name.clone());
    unregister(lab, &namespace, &pod)?;
    // Unregistered first (fallible, e.g. store down: then nothing changed and a retry works), detached after.
    let p = lab.nodes[ni].pods.remove(pi);
    super::pods::del_pod(lab, &node, &p);
    Ok(())
}

fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{:06x}", h & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn container_ports_are_checked_as_kubernetes_does() {
        let p = ports(&args(&["http=80/TCP", "dns=53/udp", "metrics=9090"])).unwrap();
        assert_eq!(p[1], serde_json::json!({"name": "dns", "port": 53, "protocol": "UDP"}));
        assert_eq!(p[2]["protocol"], "TCP");
        for bad in [
            &["Bad_Name=80/TCP"][..],
            &["http=80/TCP", "http=81/TCP"],
            &["http=0/TCP"],
            &["http=70000/TCP"],
            &["http=80/ICMP"],
            &["http"],
            &["toolongportname1=80"],
        ] {
            assert!(ports(&args(bad)).is_err(), "{bad:?}");
        }
        let e = ports(&args(&["Bad_Name=80/TCP"])).unwrap_err().to_string();
        assert!(e.contains("invalid port name \"Bad_Name\""), "{e}");
    }
}
