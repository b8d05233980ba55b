//! `weftctl policy`: apply, delete, list, explain NetworkPolicies in the store; `wait` for nodes to enforce.
use crate::store::{key, load_model, StoreArgs};
use anyhow::{bail, Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use weft_policy::{explain, DirectionVerdict, Endpoint, ExplainError, Protocol};
use weft_store::ObjectKind;

pub fn apply(s: &StoreArgs, file: &str) -> Result<()> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    // Everything is validated before anything is written: a bad document changes nothing.
    let policies = weft_policy::parse_policies_yaml(&text).with_context(|| format!("{file}: invalid NetworkPolicy"))?;
    if let Some(lab) = s.kube_lab()? {
        for p in &policies {
            let mut v = serde_json::to_value(p)?;
            v["apiVersion"] = "networking.k8s.io/v1".into();
            v["kind"] = "NetworkPolicy".into();
            v["metadata"]["namespace"] = p.namespace().into();
            crate::lab::kube::apply(&lab, &v)?;
            println!("networkpolicy {}/{} configured (fake API server)", p.namespace(), p.metadata.name);
        }
        return Ok(());
    }
    s.with_store(|store| async move {
        for p in &policies {
            let k = format!("{}/{}", p.namespace(), p.metadata.name);
            store.put_object(ObjectKind::Policy, &k, &serde_json::to_value(p)?).await?;
            println!("networkpolicy {k} configured");
        }
        Ok(())
    })
}

pub fn delete(s: &StoreArgs, namespace: Option<&str>, names: &[String], all: bool) -> Result<()> {
    if let Some(lab) = s.kube_lab()? {
        let keys: Vec<String> = if all {
            s.with_store(|store| async move {
                Ok(store.objects(ObjectKind::Policy).await?.items.into_iter().map(|(k, _)| k).collect())
            })?
        } else {
            names.iter().map(|n| key(namespace, n)).collect::<Result<_>>()?
        };
        for k in keys {
            let (ns, name) = k.split_once('/').expect("key has a slash");
            crate::lab::kube::delete(&lab, "NetworkPolicy", Some(ns), name)?;
            println!("networkpolicy {k} deleted");
        }
        return Ok(());
    }
    let namespace = namespace.map(str::to_string);
    let names = names.to_vec();
    s.with_store(|store| async move {
        let keys: Vec<String> = if all {
            store.objects(ObjectKind::Policy).await?.items.into_iter().map(|(k, _)| k).collect()
        } else {
            names.iter().map(|n| key(namespace.as_deref(), n)).collect::<Result<_>>()?
        };
        for k in keys {
            store.delete_object(ObjectKind::Policy, &k).await?;
            println!("networkpolicy {k} deleted");
        }
        Ok(())
    })
}

pub fn list(s: &StoreArgs) -> Result<()> {
    let items = s.with_store(|store| async move { Ok(store.objects(ObjectKind::Policy).await?.items) })?;
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["namespace/name", "pod selector", "types", "digest"]);
    for (k, v) in items {
        let sel = v["spec"]["podSelector"].to_string();
        let types = v["spec"]["policyTypes"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","));
        t.add_row([k, sel, types.unwrap_or_else(|| "Ingress".into()), weft_types::digest::digest(&v)]);
    }
    println!("{t}");
    Ok(())
}

/// `NAMESPACE/POD`, a bare `POD` when only one namespace has it, or an IP address.
fn endpoint(model: &weft_policy::Model, s: &str) -> Result<Endpoint> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Endpoint::Ip(ip));
    }
    let i = crate::target::resolve(model.pods.iter().map(|p| (p.namespace.as_str(), p.name.as_str())), s)
        .map_err(|e| anyhow::anyhow!("{e} in the store"))?;
    Ok(Endpoint::Pod { namespace: model.pods[i].namespace.clone(), name: model.pods[i].name.clone() })
}

/// `x/a (10.244.1.3)` for the address of a pod of `network`, the bare address otherwise (another network's pod
/// with that address is not this one).
fn name_of(model: &weft_policy::Model, network: &str, ip: IpAddr) -> String {
    let r = weft_policy::eval::Resolved::new(model);
    let owner = r.network_index(network).and_then(|n| r.pods_with_ip_in(n, ip).first().copied());
    match owner.map(|i| &model.pods[i]) {
        Some(p) => format!("{}/{} ({ip})", p.namespace, p.name),
        None => ip.to_string(),
    }
}

fn port_proto(s: &str) -> Result<(u16, Protocol)> {
    let (p, proto) = s.split_once('/').unwrap_or((s, "TCP"));
    let proto = match proto.to_ascii_uppercase().as_str() {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        other => bail!("unknown protocol {other:?} (TCP, UDP, SCTP)"),
    };
    Ok((p.parse().with_context(|| format!("bad port {p:?}"))?, proto))
}

fn describe(v: &DirectionVerdict) -> String {
    match v {
        DirectionVerdict::NotIsolated => "allowed: no policy of this direction selects the pod".into(),
        DirectionVerdict::Allowed { by, rule, peer, port } => {
            let peer = peer.map_or("any peer".to_string(), |p| format!("peer #{p}"));
            let port = port.map_or("any port".to_string(), |p| format!("port #{p}"));
            format!("allowed by {by}, rule #{rule} ({peer}, {port})")
        }
        DirectionVerdict::Denied { isolating_policies } => {
            let names: Vec<String> = isolating_policies.iter().map(|p| p.to_string()).collect();
            format!("DENIED: isolated by {} and no rule allows it", names.join(", "))
        }
    }
}

/// Prints the verdict; returns whether the connection is allowed.
pub fn explain_cmd(s: &StoreArgs, from: &str, to: &str, port: &str) -> Result<bool> {
    let (port, proto) = port_proto(port)?;
    let model = s.with_store(|store| async move { load_model(store.as_ref()).await })?;
    let (from, to) = (endpoint(&model, from)?, endpoint(&model, to)?);
    let v = match explain(&model, &from, &to, port, proto) {
        Ok(v) => v,
        // Not a policy question: routing and the isolation firewall keep networks apart whatever policy says.
        Err(e @ ExplainError::DifferentNetworks { .. }) => {
            println!("{e}");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "{} → {} {port}/{proto} (network {}): {}",
        name_of(&model, &v.network, v.src),
        name_of(&model, &v.network, v.dst),
        v.network,
        if v.allowed { "ALLOWED" } else { "DENIED" }
    );
    println!("  egress  (source side):      {}", describe(&v.egress));
    println!("  ingress (destination side): {}", describe(&v.ingress));
    Ok(v.allowed)
}

/// Waits until every node of the lab enforces exactly what the store holds: the digest of all pods, namespaces
/// and policies its table was compiled from equals the store's, and it has admitted its pods.
pub fn wait(s: &StoreArgs, timeout: Duration) -> Result<()> {
    let lab = crate::lab::state::LabState::load(&s.lab)?;
    let deadline = Instant::now() + timeout;
    loop {
        let want = s.with_store(|store| async move {
            let pods = store.objects(ObjectKind::Endpoint).await?.items;
            let nss = store.objects(ObjectKind::Namespace).await?.items;
            let pols = store.objects(ObjectKind::Policy).await?.items;
            // As the agents do: a store that cannot list networks has none.
            let nets = store.objects(ObjectKind::Network).await.map(|s| s.items).unwrap_or_default();
            Ok(weft_agent::policy::model_digest_with_networks(&pods, &nss, &pols, &nets))
        })?;
        let lagging: Vec<&str> = lab
            .nodes
            .iter()
            .filter(|n| {
                let st = crate::lab::agents::agent_status(n);
                let pol = st.as_ref().map(|s| &s["policy"]);
                let have = pol.and_then(|p| p["modelDigest"].as_str()).unwrap_or_default();
                let ready = pol.and_then(|p| p["readyPods"].as_u64()).unwrap_or(0) as usize;
                have != want || ready < n.pods.len()
            })
            .map(|n| n.name.as_str())
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nodes {lagging:?} do not enforce the store's policies after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::{Model, Pod};

    fn model() -> Model {
        let pod = |ns: &str, name: &str, ip: &str| Pod {
            namespace: ns.into(),
            name: name.into(),
            ips: vec![ip.parse().unwrap()],
            ..Default::default()
        };
        Model {
            pods: vec![pod("x", "a", "10.0.0.1"), pod("y", "a", "10.0.0.2"), pod("y", "b", "10.0.0.3")],
            ..Default::default()
        }
    }

    #[test]
    fn endpoints_are_names_unique_names_or_addresses() {
        let m = model();
        assert_eq!(endpoint(&m, "y/a").unwrap(), Endpoint::Pod { namespace: "y".into(), name: "a".into() });
        assert_eq!(endpoint(&m, "b").unwrap(), Endpoint::Pod { namespace: "y".into(), name: "b".into() });
        assert_eq!(endpoint(&m, "10.9.9.9").unwrap(), Endpoint::Ip("10.9.9.9".parse().unwrap()));
        let e = endpoint(&m, "a").unwrap_err().to_string();
        assert!(e.contains("x/a, y/a"), "{e}");
        assert!(endpoint(&m, "z/a").is_err());
    }

    #[test]
    fn addresses_print_as_pod_names_and_protocols_upper_case() {
        let m = model();
        assert_eq!(name_of(&m, "default", "10.0.0.2".parse().unwrap()), "y/a (10.0.0.2)");
        assert_eq!(name_of(&m, "default", "10.9.9.9".parse().unwrap()), "10.9.9.9");
        let mut m = m;
        m.networks.push(weft_policy::Network { name: "blue".into(), group: 0x5700_0064, namespaces: vec!["y".into()] });
        assert_eq!(name_of(&m, "default", "10.0.0.2".parse().unwrap()), "10.0.0.2", "y/a is on blue");
        assert_eq!(name_of(&m, "blue", "10.0.0.2".parse().unwrap()), "y/a (10.0.0.2)");
        assert_eq!(port_proto("80/tcp").unwrap(), (80, Protocol::Tcp));
        assert_eq!(format!("{}", port_proto("53/udp").unwrap().1), "UDP");
        assert!(port_proto("80/icmp").is_err());
    }
}
