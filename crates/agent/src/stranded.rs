//! Local pods whose address came from another network than the one their namespace is on now: a namespace
//! relabelled, or a network's selector edited, under running pods (or a network deleted while it drains).
//!
//! Such a pod keeps the veth group and address of the network it was created on, while the policy table,
//! compiled by namespace, scopes its rules to the namespace's current network. Its `group . address` is then in
//! no set: the new-pod default-deny drops its forwarded traffic both ways (`drop_unready`). That is fail-closed
//! on purpose (a relabel must not let a pod escape its NetworkPolicy, nor carry it across networks), but silent;
//! this names each such pod in the status, so the operator sees why it is cut off and that re-creating it (on
//! its namespace's network now) is the fix.
//!
//! The truth about which network an address came from is the CNI plugin's IPAM pools on this node (one
//! reservation file per address: the default network's in `dataDir`, a tenant network's in `dataDir/net-NAME`),
//! never a Pod object, which may say anything.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use weft_policy::{Model, DEFAULT_NETWORK};

/// "namespace/name address: …" for every pod of `node` none of whose addresses is held in its namespace's
/// network's pool but one of which is held in another network's. A pod whose addresses no pool holds (the
/// plugin's directory elsewhere, a race with DEL) is not named: nothing is known about it.
pub fn stranded(model: &Model, node: &str, data_dir: &Path) -> Vec<String> {
    // The first network listing a namespace serves it, as the compiler decides (weft_policy::eval).
    let mut ns_net: BTreeMap<&str, &str> = BTreeMap::new();
    for n in &model.networks {
        for ns in &n.namespaces {
            ns_net.entry(ns.as_str()).or_insert(n.name.as_str());
        }
    }
    let mut pools: Vec<String> = vec![DEFAULT_NETWORK.to_string()];
    if let Ok(dir) = std::fs::read_dir(data_dir) {
        for e in dir.flatten() {
            if let Some(name) = e.file_name().to_str().and_then(|f| f.strip_prefix(crate::networks::POOL_PREFIX)) {
                if e.file_type().is_ok_and(|t| t.is_dir()) && !name.is_empty() {
                    pools.push(name.to_string());
                }
            }
        }
    }
    let holds = |net: &str, ip: &IpAddr| pool(data_dir, net).join(ip.to_string()).is_file();
    let mut out = Vec::new();
    for p in model.pods.iter().filter(|p| p.node == node && !p.ips.is_empty()) {
        let want = ns_net.get(p.namespace.as_str()).copied().unwrap_or(DEFAULT_NETWORK);
        if p.ips.iter().any(|ip| holds(want, ip)) {
            continue;
        }
        let from =
            p.ips.iter().find_map(|ip| pools.iter().find(|n| n.as_str() != want && holds(n, ip)).map(|n| (ip, n)));
        if let Some((ip, net)) = from {
            out.push(format!(
                "{}/{} {ip}: address from network {net:?}, namespace {:?} is now on {want:?}; its traffic is \
                 dropped until it is re-created",
                p.namespace, p.name, p.namespace
            ));
        }
    }
    out
}

/// A network's pool directory (the plugin's layout, crates/cni/src/tenant.rs `pool_dir`).
fn pool(data_dir: &Path, network: &str) -> std::path::PathBuf {
    if network == DEFAULT_NETWORK {
        data_dir.to_path_buf()
    } else {
        crate::networks::pool_dir(data_dir, network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::{Network, Pod};

    fn pod(ns: &str, name: &str, node: &str, ip: &str) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            node: node.into(),
            ips: vec![ip.parse().unwrap()],
            ..Default::default()
        }
    }

    fn reserve(dir: &Path, pool: &str, ip: &str) {
        let d = if pool == DEFAULT_NETWORK { dir.to_path_buf() } else { dir.join(format!("net-{pool}")) };
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(ip), b"c1\neth0").unwrap();
    }

    #[test]
    fn a_pod_whose_namespace_left_its_network_is_named_the_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        reserve(d, "blue", "10.60.1.2"); // x/a: created on blue, x has moved to the default network
        reserve(d, "blue", "10.60.1.3"); // y/b: on blue, y still is
        reserve(d, DEFAULT_NETWORK, "10.244.1.2"); // z/c: default, z still is
        reserve(d, DEFAULT_NETWORK, "10.244.1.9"); // w/d: default, w has moved onto blue
        let model = Model {
            pods: vec![
                pod("x", "a", "n1", "10.60.1.2"),
                pod("y", "b", "n1", "10.60.1.3"),
                pod("z", "c", "n1", "10.244.1.2"),
                pod("w", "d", "n1", "10.244.1.9"),
                // Another node's pod: its pools are not ours to read.
                pod("x", "remote", "n2", "10.60.2.2"),
                // No pool holds it: nothing known, nothing said.
                pod("x", "unknown", "n1", "10.60.1.77"),
            ],
            networks: vec![Network { name: "blue".into(), group: 7, namespaces: vec!["y".into(), "w".into()] }],
            ..Default::default()
        };
        let got = stranded(&model, "n1", d);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].starts_with("x/a 10.60.1.2: address from network \"blue\", namespace \"x\" is now on \"default\"")
        );
        assert!(
            got[1].starts_with("w/d 10.244.1.9: address from network \"default\", namespace \"w\" is now on \"blue\"")
        );
    }

    #[test]
    fn a_hostile_pool_name_or_a_missing_dir_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("net-file"), b"").unwrap();
        std::fs::create_dir_all(dir.path().join("net-")).unwrap();
        let model = Model { pods: vec![pod("x", "a", "n1", "10.60.1.2")], ..Default::default() };
        assert!(stranded(&model, "n1", dir.path()).is_empty());
        assert!(stranded(&model, "n1", &dir.path().join("nope")).is_empty());
    }
}
