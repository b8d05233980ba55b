//! Tenant networks in the lab (`weftctl lab network create|list|delete`, `lab up --network`, `lab ns-add
//! --network`): `TenantNetwork` objects written to the lab's store (kind `networks`; in kube mode `Network`
//! objects of the CRD `networks.weft.dev` through the fake API server), exactly what an operator's `weftctl
//! network` or `kubectl apply` would write. The agents do the rest; the lab only waits until every node's node
//! file says it serves what the store now says, so the next `pod-add` lands on the network it should.
//!
//! Which network a pod is on is decided when it is created (as for a Kubernetes pod: its address never changes)
//! and recorded in the lab state: the matrix reads it to tell a pair inside a network from one across networks.
use super::state::LabState;
use super::workloads::{namespace_labels, put_namespace, store_of};
use crate::labels::{Labels, NAMESPACE_NAME_LABEL};
use anyhow::{bail, Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weft_store::ObjectKind;
use weft_types::tenant::{admit_networks, network_of, NamespaceSelector, NetworkNodeStatus, DEFAULT_NETWORK};
use weft_types::{NodeFile, TenantNetwork};

/// The lab's default network VNI (network.json): no tenant network may take it.
pub const DEFAULT_VNI: u32 = 1;
/// The lab's default cluster CIDR (network.json).
pub const DEFAULT_CIDR: &str = "10.244.0.0/16";

/// How long `create`, `delete` and `ns-add --network` wait for every node to follow the store.
pub const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `delete` lets the agents' address counts catch up with pods deleted a moment ago.
const USED_SETTLE: Duration = Duration::from_secs(15);

/// What `lab network create` was given.
#[derive(Debug, Clone, Default)]
pub struct NetworkArgs {
    pub name: String,
    pub cidr: String,
    pub cidr6: Option<String>,
    pub subnet_len: Option<u8>,
    pub subnet_len6: Option<u8>,
    pub vni: Option<u32>,
    pub namespaces: Vec<String>,
    pub selector: Labels,
    pub no_masquerade: bool,
}

impl NetworkArgs {
    /// The object, checked on its own (`TenantNetwork::validate`); `vni` must be filled in by then.
    pub fn build(&self, vni: u32) -> Result<TenantNetwork> {
        let cidr: Ipv4Net = self.cidr.parse().with_context(|| format!("--cidr {:?} is not an IPv4 CIDR", self.cidr))?;
        let cidr6: Option<Ipv6Net> = match &self.cidr6 {
            None => None,
            Some(c) => Some(c.parse().with_context(|| format!("--cidr6 {c:?} is not an IPv6 CIDR"))?),
        };
        for ns in &self.namespaces {
            crate::names::namespace(ns)?;
        }
        let mut names = self.namespaces.clone();
        names.sort();
        names.dedup();
        let net = TenantNetwork {
            name: self.name.clone(),
            cidr,
            subnet_len: self.subnet_len.unwrap_or(24),
            cidr6,
            subnet_len6: self.subnet_len6.unwrap_or(80),
            vni,
            namespaces: NamespaceSelector { names, match_labels: self.selector.clone() },
            masquerade: !self.no_masquerade,
        };
        net.validate()?;
        Ok(net)
    }
}

/// `lab up --network NAME:CIDR:VNI[:ns1,ns2]`. With `ipv6`, the network gets an IPv6 CIDR derived from its
/// IPv4 one (`fd57:HHHH:LLLL::/48` from the first 32 bits), so two networks with one IPv4 CIDR overlap in IPv6 too.
pub fn parse_up_flag(s: &str, ipv6: bool) -> Result<TenantNetwork> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(3..=4).contains(&parts.len()) {
        bail!("--network {s:?} is not NAME:CIDR:VNI[:ns1,ns2] (e.g. blue:10.50.0.0/16:100:team-a,team-b)");
    }
    let vni: u32 = parts[2].parse().with_context(|| format!("--network {s:?}: VNI {:?} is not a number", parts[2]))?;
    let namespaces: Vec<String> =
        parts.get(3).map(|l| l.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect()).unwrap_or_default();
    let mut a = NetworkArgs { name: parts[0].into(), cidr: parts[1].into(), namespaces, ..Default::default() };
    if ipv6 {
        let c: Ipv4Net = a.cidr.parse().with_context(|| format!("--network {s:?}: bad CIDR"))?;
        let v = u32::from(c.network());
        a.cidr6 = Some(format!("fd57:{:x}:{:x}::/48", v >> 16, v & 0xffff));
    }
    a.build(vni).with_context(|| format!("--network {s:?}"))
}

/// The Network object as `kubectl apply` would send it (spec = the TenantNetwork fields but the name).
pub fn network_object(net: &TenantNetwork) -> Result<serde_json::Value> {
    let mut spec = serde_json::to_value(net)?;
    spec.as_object_mut().expect("object").remove("name");
    Ok(serde_json::json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "Network",
        "metadata": {"name": net.name}, "spec": spec,
    }))
}

/// Every network in the lab's store. A malformed object is reported and skipped (hostile input; the agents
/// skip it too). A kube lab whose API has no Network kind yet and where the lab made no network has none.
pub fn list(lab: &LabState) -> Result<Vec<TenantNetwork>> {
    // Oldest first, the order the agents admit them in (the older of two conflicting networks wins).
    let items = store_of(lab).with_store(|store| async move {
        let mut e = store.object_entries(ObjectKind::Network).await?.items;
        e.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.key.cmp(&b.key)));
        Ok(e.into_iter().map(weft_store::ObjectEntry::into_object).collect::<Vec<_>>())
    });
    let items = match items {
        Ok(i) => i,
        Err(_) if lab.store == "kube" && lab.networks.is_empty() => return Ok(vec![]),
        Err(e) => return Err(e.context("listing networks")),
    };
    let mut out = vec![];
    for (key, v) in items {
        match serde_json::from_value::<TenantNetwork>(v) {
            Ok(n) if n.name == key => out.push(n),
            Ok(n) => eprintln!("warning: network object {key:?} names itself {:?}; skipped", n.name),
            Err(e) => eprintln!("warning: network object {key:?} is not valid: {e}; skipped"),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Per-node status of every network (`network/node` → status), as the agents wrote it.
pub fn statuses(lab: &LabState) -> Result<BTreeMap<String, NetworkNodeStatus>> {
    let items =
        store_of(lab).with_store(|store| async move { Ok(store.objects(ObjectKind::NetworkStatus).await?.items) })?;
    Ok(items.into_iter().filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?))).collect())
}

fn put(lab: &LabState, net: &TenantNetwork) -> Result<()> {
    if lab.store == "kube" {
        return super::kube::apply(lab, &network_object(net)?);
    }
    let v = serde_json::to_value(net)?;
    let name = net.name.clone();
    store_of(lab).with_store(|store| async move {
        store.put_object(ObjectKind::Network, &name, &v).await?;
        Ok(())
    })
}

fn remove(lab: &LabState, name: &str) -> Result<()> {
    if lab.store == "kube" {
        return super::kube::delete(lab, "Network", None, name);
    }
    let name = name.to_string();
    store_of(lab).with_store(|store| async move {
        store.delete_object(ObjectKind::Network, &name).await?;
        Ok(())
    })
}

/// The network pods of namespace `ns` (with `labels`) get, by the agents' rule: the oldest admitted network
/// that selects it (`nets` as [`list`] returns them, oldest first), else the default network (None).
pub fn network_for(nets: &[TenantNetwork], ns: &str, labels: &Labels) -> Option<TenantNetwork> {
    let (ok, _) = admit_networks(nets.iter().cloned(), DEFAULT_VNI);
    network_of(&ok, ns, labels).cloned()
}

/// The network a new pod in `ns` will be on, read from the store now.
pub fn expected_for(lab: &LabState, ns: &str) -> Result<Option<TenantNetwork>> {
    let nets = list(lab)?;
    if nets.is_empty() {
        return Ok(None);
    }
    let labels = namespace_labels(lab, ns)?.unwrap_or_else(|| [(NAMESPACE_NAME_LABEL.into(), ns.into())].into());
    Ok(network_for(&nets, ns, &labels))
}

/// Lowest VNI from 100 up that neither the default network nor another network uses.
fn free_vni(nets: &[TenantNetwork]) -> u32 {
    (100..).find(|v| !nets.iter().any(|n| n.vni == *v)).expect("a free VNI")
}

/// `lab network create`: checks the network against the store's others, writes it, waits for the nodes.
pub fn create(lab_name: &str, args: &NetworkArgs, wait: bool) -> Result<TenantNetwork> {
    let (lab, net) = LabState::update(lab_name, |lab| {
        let nets = list(lab)?;
        let net = args.build(args.vni.unwrap_or_else(|| free_vni(&nets)))?;
        add_checked(lab, &nets, &net)?;
        Ok((lab.clone(), net))
    })?;
    if wait {
        wait_nodes(&lab, &net.name, |nf| nf.networks.iter().any(|n| n.name == net.name && n.vni == net.vni))?;
    }
    Ok(net)
}

/// Refuses what the agents would refuse (or silently resolve), so the lab never holds a network that does
/// nothing: a taken name or VNI, a namespace another network already serves, a namespace whose lab pods would
/// stay on the network they were created on.
fn add_checked(lab: &mut LabState, nets: &[TenantNetwork], net: &TenantNetwork) -> Result<()> {
    if nets.iter().any(|n| n.name == net.name) {
        bail!("network {:?} exists already (`weftctl lab network list`)", net.name);
    }
    let (ok, errs) = admit_networks(nets.iter().cloned().chain([net.clone()]), DEFAULT_VNI);
    if !ok.iter().any(|n| n.name == net.name) {
        let why = errs.iter().map(ToString::to_string).find(|e| e.contains(&format!("network {}:", net.name)));
        bail!("{}", why.unwrap_or_else(|| format!("network {:?} would not be admitted", net.name)));
    }
    if let Some(e) = weft_types::tenant::creation_conflict(&ok, net) {
        bail!("{e}");
    }
    let mut candidates = namespaces_selected(lab, net)?;
    for ns in &net.namespaces.names {
        if !candidates.iter().any(|(n, _)| n == ns) {
            let labels =
                namespace_labels(lab, ns)?.unwrap_or_else(|| [(NAMESPACE_NAME_LABEL.into(), ns.clone())].into());
            candidates.push((ns.clone(), labels));
        }
    }
    for (ns, labels) in &candidates {
        if let Some(other) = nets.iter().find(|o| o.namespaces.selects(ns, labels)) {
            bail!("namespace {ns:?} is already on network {:?}", other.name);
        }
        refuse_if_pods(lab, ns)?;
    }
    put(lab, net)?;
    for ns in &net.namespaces.names {
        if namespace_labels(lab, ns)?.is_none() {
            put_namespace(lab, ns, &[(NAMESPACE_NAME_LABEL.to_string(), ns.clone())].into())?;
        }
    }
    lab.networks.push(net.name.clone());
    lab.networks.sort();
    lab.networks.dedup();
    Ok(())
}

/// Existing namespaces (name, labels) that `net` selects.
fn namespaces_selected(lab: &LabState, net: &TenantNetwork) -> Result<Vec<(String, Labels)>> {
    let items =
        store_of(lab).with_store(|store| async move { Ok(store.objects(ObjectKind::Namespace).await?.items) })?;
    Ok(items
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_value::<Labels>(v["labels"].clone()).unwrap_or_default()))
        .filter(|(k, l)| net.namespaces.selects(k, l))
        .collect())
}

fn refuse_if_pods(lab: &LabState, ns: &str) -> Result<()> {
    let pods: Vec<String> =
        lab.pods().filter(|(_, p)| p.namespace == ns).map(|(_, p)| format!("{}/{}", p.namespace, p.name)).collect();
    if !pods.is_empty() {
        bail!(
            "namespace {ns:?} has pods ({}): they keep the network they were created on; delete them first",
            pods.join(", ")
        );
    }
    Ok(())
}

/// `lab up --network`: the networks go into the store before the agents start (no wait: nothing runs yet).
pub fn create_at_up(lab: &mut LabState, nets: &[TenantNetwork]) -> Result<()> {
    for net in nets {
        let have = list(lab)?;
        add_checked(lab, &have, net).with_context(|| format!("network {:?}", net.name))?;
    }
    Ok(())
}

/// `lab ns-add NS --network NAME`: puts the namespace (new, so without pods) on the network by name, creates
/// it, and waits until every node serves it there.
pub fn attach_new_namespace(lab_name: &str, ns: &str, labels: Labels, network: &str) -> Result<()> {
    let lab = LabState::update(lab_name, |lab| {
        let mut nets = list(lab)?;
        let Some(net) = nets.iter_mut().find(|n| n.name == network) else {
            bail!("no network {network:?} in lab {lab_name:?} (`weftctl lab network create {network} --cidr …`)");
        };
        // Created first (refused if it exists), then listed: a refused namespace leaves the network unchanged.
        super::workloads::add_namespace(lab, ns, labels)?;
        if !net.namespaces.names.iter().any(|n| n == ns) {
            net.namespaces.names.push(ns.to_string());
            net.namespaces.names.sort();
        }
        let net = net.clone();
        put(lab, &net)?;
        Ok(lab.clone())
    })?;
    wait_namespace(&lab, ns, Some(network))
}

/// Waits until every running node's node file puts namespace `ns` on `want` (None: the default network).
pub fn wait_namespace(lab: &LabState, ns: &str, want: Option<&str>) -> Result<()> {
    let what = want.unwrap_or(DEFAULT_NETWORK);
    wait_nodes(lab, what, |nf| nf.network_of(ns).map(|n| n.name.as_str()) == want)
        .with_context(|| format!("namespace {ns:?} on network {what:?}"))
}

/// Waits until `ok` holds for the node file of every node whose agent runs (a stopped agent's file is stale
/// and follows when it starts). On timeout the error names the nodes and what their agents reported.
pub fn wait_nodes(lab: &LabState, network: &str, ok: impl Fn(&NodeFile) -> bool) -> Result<()> {
    wait_nodes_for(lab, network, FOLLOW_TIMEOUT, ok)
}

fn wait_nodes_for(lab: &LabState, network: &str, timeout: Duration, ok: impl Fn(&NodeFile) -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let behind: Vec<&str> = lab
            .nodes
            .iter()
            .filter(|n| n.agent_pid.is_some_and(crate::sh::alive))
            .filter(|n| !NodeFile::load(&n.dir.join("node.json")).is_ok_and(|nf| ok(&nf)))
            .map(|n| n.name.as_str())
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let reasons: Vec<String> = statuses(lab)
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| behind.iter().any(|n| *k == format!("{network}/{n}")))
                .filter_map(|(k, s)| Some(format!("{k}: {}", s.reason?)))
                .collect();
            bail!(
                "{} did not follow the store in {timeout:?}{} (see weftd.log under {})",
                behind.join(", "),
                if reasons.is_empty() { String::new() } else { format!(": {}", reasons.join("; ")) },
                lab.dir().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Before a pod is attached on `node`: the network its namespace is on by the store, once the node's agent
/// serves it so (a namespace put on a network a moment ago must not start its first pod on the default one).
pub fn prepare_pod(lab: &LabState, node: &super::state::NodeState, ns: &str) -> Result<Option<TenantNetwork>> {
    let net = expected_for(lab, ns)?;
    let want = net.as_ref().map(|n| n.name.as_str());
    let mut one = lab.clone();
    one.nodes.retain(|n| n.name == node.name);
    wait_namespace(&one, ns, want)?;
    Ok(net)
}

/// After the plugin answered: the pod's address must come from the network it was meant for.
pub fn check_address(net: Option<&TenantNetwork>, ip: Option<&str>) -> Result<()> {
    let Some(ip) = ip else { bail!("the plugin returned no IPv4 address") };
    let addr: std::net::IpAddr = ip.parse().with_context(|| format!("pod address {ip:?}"))?;
    let ok = match net {
        Some(n) => n.contains(addr),
        None => {
            DEFAULT_CIDR.parse::<Ipv4Net>().is_ok_and(|c| matches!(addr, std::net::IpAddr::V4(a) if c.contains(&a)))
        }
    };
    if !ok {
        let name = net.map_or(DEFAULT_NETWORK, |n| n.name.as_str());
        bail!("the pod got {ip}, which is not an address of network {name:?}");
    }
    Ok(())
}

/// `lab network delete`: refused while a lab pod (or, by the agents' count, any pod) holds an address in it;
/// then the object goes and the lab waits until no node file lists the network.
pub fn delete(lab_name: &str, name: &str, wait: bool) -> Result<()> {
    let lab = LabState::update(lab_name, |lab| {
        let nets = list(lab)?;
        if !nets.iter().any(|n| n.name == name) {
            bail!("no network {name:?} in lab {lab_name:?}");
        }
        let pods: Vec<String> = lab
            .pods()
            .filter(|(_, p)| p.network.as_deref() == Some(name))
            .map(|(_, p)| format!("{}/{}", p.namespace, p.name))
            .collect();
        if !pods.is_empty() {
            bail!(
                "network {name:?} still has pods: {} (delete them first: weftctl lab pod-del NS/POD)",
                pods.join(", ")
            );
        }
        // The agents recount their pools on their own loop, so a pod deleted a moment ago may still be counted:
        // the count gets a few resyncs to drop before it refuses.
        let in_use = || -> Vec<String> {
            statuses(lab)
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, s)| k.split_once('/').is_some_and(|(n, _)| n == name) && s.used > 0)
                .map(|(k, s)| format!("{} ({} addresses)", k.split_once('/').map_or("", |x| x.1), s.used))
                .collect()
        };
        let deadline = Instant::now() + USED_SETTLE;
        let mut used = in_use();
        while !used.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            used = in_use();
        }
        if !used.is_empty() {
            bail!("network {name:?} still has pods by its nodes' count: {}", used.join(", "));
        }
        remove(lab, name)?;
        lab.networks.retain(|n| n != name);
        Ok(lab.clone())
    })?;
    if wait {
        wait_nodes(&lab, name, |nf| !nf.networks.iter().any(|n| n.name == name))?;
    }
    Ok(())
}

/// `lab network list`: every network with its namespaces, lab pods and each node's status.
pub fn print(lab: &LabState) -> Result<()> {
    let nets = list(lab)?;
    if nets.is_empty() {
        println!("no tenant networks (every pod is on the default network, {DEFAULT_CIDR}, VNI {DEFAULT_VNI})");
        return Ok(());
    }
    let st = statuses(lab).unwrap_or_default();
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["network", "VNI", "CIDR", "namespaces", "pods", "nodes (ready, subnet, used/capacity)"]);
    for n in &nets {
        let mut cidr = format!("{} /{}", n.cidr, n.subnet_len);
        if let Some(c6) = n.cidr6 {
            cidr += &format!("\n{c6} /{}", n.subnet_len6);
        }
        let mut nss = n.namespaces.names.join(", ");
        if !n.namespaces.match_labels.is_empty() {
            let sel: Vec<String> = n.namespaces.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            nss += &format!("\nlabels {}", sel.join(","));
        }
        let pods = lab.pods().filter(|(_, p)| p.network.as_deref() == Some(n.name.as_str())).count();
        let nodes: Vec<String> = lab
            .nodes
            .iter()
            .map(|node| match st.get(&format!("{}/{}", n.name, node.name)) {
                None => format!("{}: no status", node.name),
                Some(s) => format!(
                    "{}: {} {} {}/{}{}",
                    node.name,
                    if s.ready { "ready" } else { "NOT READY" },
                    s.subnet.map(|s| s.to_string()).unwrap_or("-".into()),
                    s.used,
                    s.capacity,
                    s.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
                ),
            })
            .collect();
        t.add_row([n.name.clone(), n.vni.to_string(), cidr, nss, pods.to_string(), nodes.join("\n")]);
    }
    println!("{t}");
    Ok(())
}

/// Waits until every node reports every network ready (store `network-status`), after `lab up`.
pub fn wait_ready(lab: &LabState, timeout: Duration) -> Result<()> {
    let nets = list(lab)?;
    let deadline = Instant::now() + timeout;
    loop {
        let st = statuses(lab)?;
        let missing: Vec<String> = nets
            .iter()
            .flat_map(|n| lab.nodes.iter().map(move |node| format!("{}/{}", n.name, node.name)))
            .filter(|k| !st.get(k).is_some_and(|s| s.ready))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let why: Vec<String> = missing
                .iter()
                .map(|k| match st.get(k).and_then(|s| s.reason.clone()) {
                    Some(r) => format!("{k} ({r})"),
                    None => k.clone(),
                })
                .collect();
            bail!("networks not ready on every node in {timeout:?}: {}", why.join(", "));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_flag_names_cidr_vni_and_namespaces() {
        let n = parse_up_flag("blue:10.50.0.0/16:100:team-a,team-b", false).unwrap();
        assert_eq!((n.name.as_str(), n.cidr.to_string().as_str(), n.vni), ("blue", "10.50.0.0/16", 100));
        assert_eq!(n.namespaces.names, ["team-a", "team-b"]);
        assert!(n.masquerade && n.cidr6.is_none());
        let n = parse_up_flag("red:10.60.0.0/16:7", true).unwrap();
        assert!(n.namespaces.names.is_empty());
        assert_eq!(n.cidr6.unwrap().to_string(), "fd57:a3c::/48");
        // Equal IPv4 CIDRs give equal IPv6 CIDRs: overlapping networks overlap in both families.
        assert_eq!(parse_up_flag("green:10.60.0.0/16:8", true).unwrap().cidr6, n.cidr6);
        for bad in [
            "blue",
            "blue:10.50.0.0/16",
            "blue:10.50.0.0/16:x",
            "blue:10.50.0.1/16:100",
            "default:10.50.0.0/16:100",
            "Blue:10.50.0.0/16:100",
            "blue:10.50.0.0/16:0",
            "blue:10.50.0.0/16:100:Bad_NS",
            "blue:fd00::/48:100",
            "blue:10.50.0.0/16:100:a:b",
        ] {
            assert!(parse_up_flag(bad, false).is_err(), "{bad}");
        }
        let e = parse_up_flag("blue:127.0.0.0/16:100", false).unwrap_err();
        assert!(format!("{e:#}").contains("loopback"), "{e:#}");
    }

    #[test]
    fn the_crd_object_carries_the_spec_without_the_name() {
        let n = parse_up_flag("blue:10.50.0.0/16:100:a", false).unwrap();
        let o = network_object(&n).unwrap();
        assert_eq!(o["metadata"]["name"], "blue");
        assert_eq!(o["spec"]["vni"], 100);
        assert!(o["spec"].get("name").is_none());
        let mut back = o["spec"].clone();
        back["name"] = "blue".into();
        assert_eq!(serde_json::from_value::<TenantNetwork>(back).unwrap(), n);
    }

    #[test]
    fn a_namespace_is_on_the_oldest_admitted_network_that_selects_it() {
        let blue = parse_up_flag("blue:10.50.0.0/16:100:a", false).unwrap();
        let mut red = parse_up_flag("red:10.50.0.0/16:101", false).unwrap();
        red.namespaces.match_labels.insert("tenant".into(), "red".into());
        let clash = parse_up_flag("aaa:10.70.0.0/16:100:a", false).unwrap();
        // Oldest first, as `list` returns them: `aaa` came last, so blue keeps VNI 100 and namespace a.
        let nets = [blue, red, clash];
        let labels: Labels = [("tenant".to_string(), "red".to_string())].into();
        assert_eq!(network_for(&nets, "a", &Labels::new()).map(|n| n.name), Some("blue".into()));
        assert_eq!(network_for(&nets, "b", &labels).map(|n| n.name), Some("red".into()));
        assert_eq!(network_for(&nets, "b", &Labels::new()), None);
        assert_eq!(free_vni(&nets), 102);
    }
}
