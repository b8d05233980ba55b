//! `weftctl network create|list|delete`: tenant networks in the store (README "Tenant networks").
//!
//! Everything is checked before anything is written: the network on its own (`TenantNetwork::validate`),
//! then against the networks already stored (`admit_networks`: a VNI already taken, the default network's
//! VNI; a namespace another network already lists by name). A delete is refused while any node reports
//! addresses in use on the network or a pod (endpoint object) exists in a namespace it selects: deleting it
//! then would pull the network from under running pods. The checks read the store and then write, so a pod
//! created in between is not seen; the agents still drain such a network (its kernel state stays while local
//! pods hold addresses).
//!
//! In a lab on the Kubernetes store the Network object is written through the (fake) API server, as
//! `kubectl apply` would; against a real cluster (`--store kube://`) the store is read-only and the message
//! says to apply the object with kubectl.
use crate::store::StoreArgs;
use anyhow::{anyhow, bail, Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use std::collections::BTreeMap;
use weft_store::{Object, ObjectKind, Store, StoreError};
use weft_types::tenant::{
    admit_networks, creation_conflict, NamespaceSelector, NetworkNodeStatus, TenantError, TenantNetwork,
};
use weft_types::NetworkConfig;

/// What `network create` was given, before any check.
#[derive(Debug, Clone, Default)]
pub struct NewNetwork {
    pub name: String,
    pub cidr: String,
    pub cidr6: Option<String>,
    pub subnet_len: Option<u8>,
    pub subnet_len6: Option<u8>,
    pub vni: u32,
    pub namespaces: Vec<String>,
    pub selectors: Vec<String>,
    pub no_masquerade: bool,
}

/// The network the flags describe, checked on its own.
pub fn build(n: &NewNetwork) -> Result<TenantNetwork> {
    let cidr =
        n.cidr.parse().with_context(|| format!("--cidr {:?} is not an IPv4 CIDR (like 10.50.0.0/16)", n.cidr))?;
    let cidr6 = match &n.cidr6 {
        Some(c) => Some(c.parse().with_context(|| format!("--cidr6 {c:?} is not an IPv6 CIDR (like fd00:50::/48)"))?),
        None => None,
    };
    for ns in &n.namespaces {
        crate::names::namespace(ns).map_err(|e| anyhow!("--namespace {ns:?}: {e}"))?;
    }
    let mut names = n.namespaces.clone();
    names.sort();
    names.dedup();
    let defaults: TenantNetwork =
        serde_json::from_value(serde_json::json!({"name": n.name, "cidr": cidr, "vni": n.vni})).expect("defaults");
    let net = TenantNetwork {
        name: n.name.clone(),
        cidr,
        subnet_len: n.subnet_len.unwrap_or(defaults.subnet_len),
        cidr6,
        subnet_len6: n.subnet_len6.unwrap_or(defaults.subnet_len6),
        vni: n.vni,
        namespaces: NamespaceSelector {
            names,
            match_labels: crate::labels::parse_set(&n.selectors).context("--selector")?,
        },
        masquerade: !n.no_masquerade,
    };
    net.validate()?;
    if net.namespaces.names.is_empty() && net.namespaces.match_labels.is_empty() {
        bail!(
            "network {}: give the namespaces it serves (--namespace NS or --selector k=v): it would serve none",
            net.name
        );
    }
    Ok(net)
}

/// The stored network objects, oldest first: the order the agents admit them in (of two conflicting networks
/// the older wins), so `list` reports the refusals the agents make.
async fn oldest_first(store: &dyn Store) -> Result<Vec<Object>> {
    let mut entries = store.object_entries(ObjectKind::Network).await?.items;
    entries.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.key.cmp(&b.key)));
    Ok(entries.into_iter().map(weft_store::ObjectEntry::into_object).collect())
}

/// The stored networks that decode (in the order given), and one line per stored object that does not.
fn decode(items: &[Object]) -> (Vec<TenantNetwork>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (k, v) in items {
        match serde_json::from_value::<TenantNetwork>(v.clone()) {
            Ok(n) if n.name == *k => ok.push(n),
            Ok(n) => bad.push(format!("network {k}: its object names {:?}, not its key", n.name)),
            Err(e) => bad.push(format!("network {k}: undecodable: {e}")),
        }
    }
    (ok, bad)
}

/// `net` may join `existing` (pure): its name is free, its VNI is neither the default network's nor any
/// stored network's, and no namespace it lists by name is listed by another network.
pub fn admit_new(net: &TenantNetwork, existing: &[TenantNetwork], default_vni: u32) -> Result<()> {
    if existing.iter().any(|o| o.name == net.name) {
        bail!("network {} already exists (delete it first, or pick another name)", net.name);
    }
    // The agents keep the older of two networks on one VNI, so a new network would lose anyway; refused here
    // with a clear message rather than created and refused by every agent.
    if let Some(o) = existing.iter().find(|o| o.vni == net.vni) {
        bail!(TenantError::VniTaken { net: net.name.clone(), vni: net.vni, other: o.name.clone() });
    }
    let (admitted, errs) = admit_networks(existing.iter().cloned().chain([net.clone()]), default_vni);
    if let Some(e) = errs.into_iter().find(|e| names_network(e, &net.name)) {
        bail!(e);
    }
    if let Some(e) = creation_conflict(&admitted, net) {
        bail!(e);
    }
    for ns in &net.namespaces.names {
        if let Some(o) = existing.iter().find(|o| o.namespaces.names.contains(ns)) {
            bail!(
                "network {}: namespace {ns} is already served by network {} (a namespace is on one network)",
                net.name,
                o.name
            );
        }
    }
    Ok(())
}

fn names_network(e: &TenantError, name: &str) -> bool {
    match e {
        TenantError::Vni { net, .. }
        | TenantError::Cidr { net, .. }
        | TenantError::SubnetLen { net, .. }
        | TenantError::VniTaken { net, .. }
        | TenantError::UnmasqueradedOverlap { net, .. }
        | TenantError::OverlapsDefault { net, .. }
        | TenantError::Selector { net, .. }
        | TenantError::TooLarge { net, .. } => net == name,
        TenantError::Name(n) => n == name,
        TenantError::Reserved => name == weft_types::tenant::DEFAULT_NETWORK,
    }
}

/// The cluster network's config, or the defaults when no agent has stored one yet.
async fn cluster_config(store: &dyn Store) -> Result<Option<NetworkConfig>> {
    match store.network_config().await {
        Ok(c) => Ok(Some(c)),
        Err(StoreError::NoNetworkConfig) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn create(s: &StoreArgs, n: &NewNetwork) -> Result<()> {
    let net = build(n)?;
    let kube_lab = s.kube_lab().ok().flatten();
    let in_kube = kube_lab.is_some();
    let checked = net.clone();
    s.with_store(|store| async move {
        let cfg = cluster_config(store.as_ref()).await?;
        let default_vni = cfg.as_ref().map_or(weft_types::network::BackendConfig::default().vni, |c| c.backend.vni);
        let (existing, _) = decode(&oldest_first(store.as_ref()).await?);
        admit_new(&checked, &existing, default_vni)?;
        // The agents refuse a network overlapping the default cluster CIDRs (admit_networks_in): say so now.
        if let Some(c) = &cfg {
            let (_, errs) = weft_types::tenant::admit_networks_in([checked.clone()], c);
            if let Some(e) = errs.into_iter().next() {
                anyhow::bail!(e);
            }
        }
        if let Some(c) = cfg.filter(|c| c.backend.kind != weft_types::BackendKind::Vxlan) {
            eprintln!(
                "warning: the cluster's backend is {:?}: tenant networks need the VXLAN backend, agents will report \
                 the network not ready",
                c.backend.kind
            );
        }
        if in_kube {
            return Ok(());
        }
        match store.put_object(ObjectKind::Network, &checked.name, &serde_json::to_value(&checked)?).await {
            Ok(_) => Ok(()),
            // Checked, so the object is ready for kubectl (names and labels hold no quote character).
            Err(StoreError::Other(m)) if m.contains("read-only in Kubernetes mode") => bail!(
                "the Kubernetes store is read-only for weft: create the Network with kubectl: echo '{}' | kubectl \
                 apply -f -",
                weft_store_kube::network::object_of(&checked)
            ),
            Err(e) => Err(e.into()),
        }
    })?;
    if let Some(lab) = kube_lab {
        crate::lab::kube::apply(&lab, &weft_store_kube::network::object_of(&net))?;
    }
    println!("network {} created (CIDR {}, VNI {})", net.name, net.cidr, net.vni);
    Ok(())
}

/// Why `net` may not be deleted now (pure): nodes that report addresses in use, pods in its namespaces.
pub fn delete_blockers(
    net: &TenantNetwork,
    statuses: &[Object],
    endpoints: &[Object],
    namespaces: &[Object],
) -> Vec<String> {
    let mut out = Vec::new();
    let prefix = format!("{}/", net.name);
    for (k, v) in statuses.iter().filter(|(k, _)| k.starts_with(&prefix)) {
        match serde_json::from_value::<NetworkNodeStatus>(v.clone()) {
            Ok(st) if st.used > 0 => {
                out.push(format!("node {} reports {} address(es) in use", &k[prefix.len()..], st.used))
            }
            Ok(_) => {}
            // A status that cannot be read might be hiding pods: refuse rather than guess.
            Err(e) => out.push(format!("node {} reports a status that does not decode ({e})", &k[prefix.len()..])),
        }
    }
    let labels: BTreeMap<&str, BTreeMap<String, String>> = namespaces
        .iter()
        .map(|(k, v)| (k.as_str(), serde_json::from_value(v["labels"].clone()).unwrap_or_default()))
        .collect();
    let none = BTreeMap::new();
    let pods: Vec<&str> = endpoints
        .iter()
        .filter(|(k, _)| {
            let ns = k.split_once('/').map_or("", |(ns, _)| ns);
            net.namespaces.selects(ns, labels.get(ns).unwrap_or(&none))
        })
        .map(|(k, _)| k.as_str())
        .collect();
    if !pods.is_empty() {
        let shown: Vec<&str> = pods.iter().take(5).copied().collect();
        let more = if pods.len() > 5 { format!(" and {} more", pods.len() - 5) } else { String::new() };
        out.push(format!("pods in its namespaces exist: {}{more}", shown.join(", ")));
    }
    out
}

pub fn delete(s: &StoreArgs, name: &str) -> Result<()> {
    let kube_lab = s.kube_lab().ok().flatten();
    let name = name.to_string();
    let in_kube = kube_lab.is_some();
    let n = name.clone();
    s.with_store(|store| async move {
        let nets = store.objects(ObjectKind::Network).await?.items;
        let Some((_, value)) = nets.iter().find(|(k, _)| *k == n) else {
            bail!("no network {n} in the store");
        };
        let statuses = store.objects(ObjectKind::NetworkStatus).await?.items;
        let blockers = match serde_json::from_value::<TenantNetwork>(value.clone()) {
            Ok(net) => {
                let endpoints = store.objects(ObjectKind::Endpoint).await?.items;
                let namespaces = store.objects(ObjectKind::Namespace).await?.items;
                delete_blockers(&net, &statuses, &endpoints, &namespaces)
            }
            // No agent programs a network that does not decode, so no pod can be on it.
            Err(_) => Vec::new(),
        };
        if !blockers.is_empty() {
            bail!(
                "network {n} is in use, not deleted: {}. Delete its pods (or move their namespaces off it) first",
                blockers.join("; ")
            );
        }
        if in_kube {
            return Ok(());
        }
        match store.delete_object(ObjectKind::Network, &n).await {
            Err(StoreError::Other(m)) if m.contains("read-only in Kubernetes mode") => {
                bail!("the Kubernetes store is read-only for weft: delete the Network with kubectl delete network {n}")
            }
            other => other?,
        }
        // Its nodes' statuses go with it (in Kubernetes they are part of the object).
        for (k, _) in statuses.iter().filter(|(k, _)| k.starts_with(&format!("{n}/"))) {
            store.delete_object(ObjectKind::NetworkStatus, k).await?;
        }
        Ok(())
    })?;
    if let Some(lab) = kube_lab {
        crate::lab::kube::delete(&lab, "Network", None, &name)?;
    }
    println!("network {name} deleted");
    Ok(())
}

fn selector_text(sel: &NamespaceSelector) -> String {
    let mut parts: Vec<String> = sel.names.clone();
    parts.extend(sel.match_labels.iter().map(|(k, v)| format!("{k}={v}")));
    if parts.is_empty() {
        "(none)".into()
    } else {
        parts.join(",")
    }
}

/// The table `network list` prints (pure): a row per network and node; then the networks the agents refuse
/// and the objects that do not decode.
pub fn render(nets: &[Object], statuses: &[Object], default_vni: u32) -> (Table, Vec<String>) {
    let (decoded, mut notes) = decode(nets);
    let (_, refused) = admit_networks(decoded.clone(), default_vni);
    notes.extend(refused.iter().map(|e| format!("REFUSED by the agents: {e}")));
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["network", "cidr", "vni", "namespaces", "masq", "node", "ready", "subnet", "used/cap", "reason"]);
    for n in &decoded {
        let cidr = n.cidr6.map_or(n.cidr.to_string(), |c6| format!("{} {c6}", n.cidr));
        let head = [n.name.clone(), cidr, n.vni.to_string(), selector_text(&n.namespaces), n.masquerade.to_string()];
        let prefix = format!("{}/", n.name);
        let rows: Vec<[String; 5]> = statuses
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| {
                let node = k[prefix.len()..].to_string();
                match serde_json::from_value::<NetworkNodeStatus>(v.clone()) {
                    Ok(st) => {
                        let subnet =
                            st.subnet6.map_or(st.subnet.map(|s| s.to_string()).unwrap_or_else(|| "-".into()), |s6| {
                                format!("{} {s6}", st.subnet.map(|s| s.to_string()).unwrap_or_default())
                            });
                        let ready = if st.ready { "yes" } else { "NO" };
                        [
                            node,
                            ready.into(),
                            subnet,
                            format!("{}/{}", st.used, st.capacity),
                            st.reason.unwrap_or_default(),
                        ]
                    }
                    Err(e) => [node, "?".into(), "-".into(), "-".into(), format!("undecodable status: {e}")],
                }
            })
            .collect();
        if rows.is_empty() {
            let mut row: Vec<String> = head.to_vec();
            row.extend(["-", "", "", "", "no node reports yet"].map(String::from));
            t.add_row(row);
        }
        for (i, r) in rows.into_iter().enumerate() {
            let mut row: Vec<String> = if i == 0 { head.to_vec() } else { vec![String::new(); 5] };
            row.extend(r);
            t.add_row(row);
        }
    }
    (t, notes)
}

pub fn list(s: &StoreArgs) -> Result<()> {
    let (nets, statuses, default_vni) = s.with_store(|store| async move {
        let cfg = cluster_config(store.as_ref()).await?;
        let vni = cfg.map_or(weft_types::network::BackendConfig::default().vni, |c| c.backend.vni);
        Ok((oldest_first(store.as_ref()).await?, store.objects(ObjectKind::NetworkStatus).await?.items, vni))
    })?;
    if nets.is_empty() {
        println!("no tenant networks (every namespace is on the default network)");
        return Ok(());
    }
    let (table, notes) = render(&nets, &statuses, default_vni);
    println!("{table}");
    for n in notes {
        println!("{n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new(name: &str, cidr: &str, vni: u32) -> NewNetwork {
        NewNetwork {
            name: name.into(),
            cidr: cidr.into(),
            vni,
            namespaces: vec!["team-a".into(), "team-a".into()],
            ..Default::default()
        }
    }

    #[test]
    fn flags_become_a_checked_network() {
        let mut n = new("blue", "10.50.0.0/16", 100);
        n.cidr6 = Some("fd00:50::/48".into());
        n.subnet_len = Some(26);
        n.selectors = vec!["tenant=blue".into()];
        n.no_masquerade = true;
        let net = build(&n).unwrap();
        assert_eq!((net.subnet_len, net.subnet_len6, net.masquerade), (26, 80, false));
        assert_eq!(net.namespaces.names, ["team-a"], "deduplicated");
        assert_eq!(net.namespaces.match_labels["tenant"], "blue");
        for (bad, why) in [
            (new("blue", "10.50.0.0", 100), "not an IPv4 CIDR"),
            (new("blue", "10.50.0.1/16", 100), "host bits"),
            (new("blue", "127.0.0.0/16", 100), "loopback"),
            (new("blue", "10.50.0.0/16", 0), "VNI 0"),
            (new("Blue", "10.50.0.0/16", 1), "DNS-1123"),
            (new("default", "10.50.0.0/16", 1), "reserved"),
            (NewNetwork { namespaces: vec![], ..new("blue", "10.50.0.0/16", 5) }, "serve none"),
            (NewNetwork { namespaces: vec!["Bad_NS".into()], ..new("blue", "10.50.0.0/16", 5) }, "--namespace"),
            (NewNetwork { selectors: vec!["nokey".into()], ..new("blue", "10.50.0.0/16", 5) }, "--selector"),
            (NewNetwork { subnet_len: Some(16), ..new("blue", "10.50.0.0/16", 5) }, "subnetLen"),
        ] {
            let e = format!("{:#}", build(&bad).unwrap_err());
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_new_network_never_takes_a_vni_or_name_or_namespace_in_use() {
        let blue = build(&new("blue", "10.50.0.0/16", 100)).unwrap();
        let existing = vec![blue.clone()];
        let mut other = build(&NewNetwork { namespaces: vec!["b".into()], ..new("red", "10.50.0.0/16", 200) }).unwrap();
        admit_new(&other, &existing, 1).expect("same CIDR, other VNI: fine");
        other.vni = 100;
        let e = admit_new(&other, &existing, 1).unwrap_err().to_string();
        assert!(e.contains("VNI 100 is already used by blue"), "{e}");
        // A new network sorting before the holder would win admission over it; it is refused all the same.
        let mut first = other.clone();
        first.name = "aaa".into();
        assert!(admit_new(&first, &existing, 1).unwrap_err().to_string().contains("already used by blue"));
        other.vni = 1;
        assert!(admit_new(&other, &existing, 1).unwrap_err().to_string().contains("already used by default"));
        let again = build(&NewNetwork { namespaces: vec!["z".into()], ..new("blue", "10.60.0.0/16", 300) }).unwrap();
        assert!(admit_new(&again, &existing, 1).unwrap_err().to_string().contains("already exists"));
        let shared = build(&new("green", "10.70.0.0/16", 300)).unwrap();
        let e = admit_new(&shared, &existing, 1).unwrap_err().to_string();
        assert!(e.contains("namespace team-a is already served by network blue"), "{e}");
    }

    fn st(used: u32) -> serde_json::Value {
        serde_json::to_value(NetworkNodeStatus { ready: true, used, capacity: 253, ..Default::default() }).unwrap()
    }

    #[test]
    fn delete_is_blocked_by_used_addresses_and_pods_in_its_namespaces() {
        let mut net = build(&new("blue", "10.50.0.0/16", 100)).unwrap();
        net.namespaces.match_labels.insert("tenant".into(), "blue".into());
        let statuses =
            vec![("blue/n1".to_string(), st(0)), ("blue/n2".to_string(), st(2)), ("bluegreen/n3".to_string(), st(9))];
        let namespaces = vec![
            ("labelled".to_string(), json!({"name": "labelled", "labels": {"tenant": "blue"}})),
            ("other".to_string(), json!({"name": "other", "labels": {}})),
        ];
        let endpoints = vec![
            ("team-a/p".to_string(), json!({})),
            ("labelled/q".to_string(), json!({})),
            ("other/r".to_string(), json!({})),
        ];
        let b = delete_blockers(&net, &statuses, &endpoints, &namespaces);
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0], "node n2 reports 2 address(es) in use", "another network's node does not count");
        assert_eq!(b[1], "pods in its namespaces exist: team-a/p, labelled/q");
        assert!(delete_blockers(&net, &statuses[..1], &endpoints[2..], &namespaces).is_empty());
        let bad = vec![("blue/n1".to_string(), json!({"used": "lots"}))];
        assert!(delete_blockers(&net, &bad, &[], &[])[0].contains("does not decode"));
    }

    #[test]
    fn the_list_shows_nodes_refusals_and_garbage() {
        let blue = build(&new("blue", "10.50.0.0/16", 100)).unwrap();
        let red = build(&NewNetwork { namespaces: vec!["r".into()], ..new("red", "10.60.0.0/16", 100) }).unwrap();
        let nets = vec![
            ("blue".to_string(), serde_json::to_value(&blue).unwrap()),
            ("junk".to_string(), json!({"cidr": 5})),
            ("red".to_string(), serde_json::to_value(&red).unwrap()),
        ];
        let mut not_ready = NetworkNodeStatus { ready: false, used: 0, capacity: 0, ..Default::default() };
        not_ready.reason = Some("no subnet for index 300".into());
        let statuses =
            vec![("blue/n1".to_string(), st(3)), ("blue/n2".to_string(), serde_json::to_value(&not_ready).unwrap())];
        let (t, notes) = render(&nets, &statuses, 1);
        let text = t.to_string();
        for want in [
            "blue",
            "10.50.0.0/16",
            "team-a",
            "n1",
            "3/253",
            "NO",
            "no subnet for index 300",
            "red",
            "no node reports yet",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
        assert!(notes.iter().any(|n| n.starts_with("network junk: undecodable")), "{notes:?}");
        assert!(
            notes.iter().any(|n| n.contains("REFUSED") && n.contains("VNI 100 is already used by blue")),
            "{notes:?}"
        );
    }
}
