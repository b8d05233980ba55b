//! Lab workloads as Kubernetes would describe them: namespaces with labels, pods with labels and named container
//! ports, registered in the store (that is how policy learns about them) right after the CNI plugin attached them.
use super::state::{LabState, NodeState, PodState};
use crate::store::StoreArgs;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use weft_store::ObjectKind;

/// Parses `k=v` labels.
pub fn labels(items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("label {s:?} is not key=value"),
        })
        .collect()
}

/// Parses `name=port/PROTO` container ports (`http=80/TCP`, `dns=53/UDP`; protocol defaults to TCP).
pub fn ports(items: &[String]) -> Result<Vec<serde_json::Value>> {
    items
        .iter()
        .map(|s| {
            let (name, rest) = s.split_once('=').with_context(|| format!("port {s:?} is not name=port/PROTO"))?;
            let (port, proto) = rest.split_once('/').unwrap_or((rest, "TCP"));
            let port: u16 = port.parse().with_context(|| format!("bad port in {s:?}"))?;
            let proto = proto.to_ascii_uppercase();
            if !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP") {
                bail!("bad protocol in {s:?}");
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

fn store_of(lab: &LabState) -> StoreArgs {
    StoreArgs { store: None, lab: lab.name.clone() }
}

/// Registers pods (and their namespaces, if not there yet) in the store.
pub fn register(lab: &LabState, pods: &[(NodeState, PodState, Vec<serde_json::Value>)]) -> Result<()> {
    if lab.store == "kube" {
        for (n, p, ports) in pods {
            let mut labels = BTreeMap::new();
            labels.insert("kubernetes.io/metadata.name".to_string(), p.namespace.clone());
            super::kube::apply(lab, &super::kube::namespace_object(&p.namespace, &labels))?;
            super::kube::apply(lab, &super::kube::pod_object(n, p, ports))?;
        }
        return Ok(());
    }
    let items: Vec<(String, serde_json::Value)> =
        pods.iter().map(|(n, p, ports)| (format!("{}/{}", p.namespace, p.name), endpoint_json(n, p, ports))).collect();
    let namespaces: Vec<String> = pods.iter().map(|(_, p, _)| p.namespace.clone()).collect();
    store_of(lab).with_store(|store| async move {
        let have: Vec<String> = store.objects(ObjectKind::Namespace).await?.items.into_iter().map(|(k, _)| k).collect();
        for ns in namespaces {
            if !have.contains(&ns) {
                let v = serde_json::json!({"name": ns, "labels": {"kubernetes.io/metadata.name": ns}});
                store.put_object(ObjectKind::Namespace, &ns, &v).await?;
            }
        }
        for (k, v) in items {
            store.put_object(ObjectKind::Endpoint, &k, &v).await?;
        }
        Ok(())
    })
}

pub fn add_namespace(lab: &LabState, name: &str, labels: BTreeMap<String, String>) -> Result<()> {
    let mut labels = labels;
    labels.insert("kubernetes.io/metadata.name".into(), name.to_string());
    if lab.store == "kube" {
        return super::kube::apply(lab, &super::kube::namespace_object(name, &labels));
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
}

pub fn add_pod(lab_name: &str, new: NewPod) -> Result<PodState> {
    LabState::update(lab_name, |lab| add_pod_in(lab, new))
}

fn add_pod_in(lab: &mut LabState, new: NewPod) -> Result<PodState> {
    let NewPod { node, namespace, name, labels, ports } = new;
    let namespace = namespace.as_str();
    let i = lab.nodes.iter().position(|n| n.name == node).with_context(|| format!("no node {node:?}"))?;
    let idx = lab.nodes[i].pods.len() + 1;
    let pname = name.unwrap_or_else(|| format!("{}-pod{idx}", lab.nodes[i].name));
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
    };
    let node_state = lab.nodes[i].clone();
    super::pods::add_pod(lab, &node_state, &mut pod)?;
    if let Err(e) = register(lab, &[(node_state.clone(), pod.clone(), ports)]) {
        // Not registered means never admitted by policy: undo the attachment rather than leave a dead pod.
        super::pods::del_pod(lab, &node_state, &pod);
        return Err(e.context(format!("registering pod {namespace}/{pname}")));
    }
    lab.nodes[i].pods.push(pod.clone());
    Ok(pod)
}

pub fn del_pod(name: &str, namespace: &str, pod: &str) -> Result<()> {
    LabState::update(name, |lab| del_pod_in(lab, namespace, pod))
}

fn del_pod_in(lab: &mut LabState, namespace: &str, pod: &str) -> Result<()> {
    let (ni, pi) = lab
        .nodes
        .iter()
        .enumerate()
        .find_map(|(ni, n)| n.pods.iter().position(|p| p.namespace == namespace && p.name == pod).map(|pi| (ni, pi)))
        .with_context(|| format!("no pod {namespace}/{pod}"))?;
    let node = lab.nodes[ni].clone();
    let key = format!("{namespace}/{pod}");
    if lab.store == "kube" {
        super::kube::delete(lab, "Pod", Some(namespace), pod)?;
    } else {
        store_of(lab).with_store(|store| async move {
            store.delete_object(ObjectKind::Endpoint, &key).await?;
            Ok(())
        })?;
    }
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
