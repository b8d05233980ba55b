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
use crate::local_pods::Addresses;
use weft_policy::{Model, DEFAULT_NETWORK};

/// "namespace/name address: …" for every pod of `node` whose reservations (`addrs`, from
/// [`crate::local_pods::scan`]) are all in other networks' pools than its namespace's network's. A pod with no
/// reservation here (the plugin's directory elsewhere, a race with DEL) is not named: nothing is known about it.
pub fn stranded(model: &Model, node: &str, addrs: &Addresses) -> Vec<String> {
    let ns_net = crate::local_pods::namespace_networks(model);
    let mut out = Vec::new();
    for p in model.pods.iter().filter(|p| p.node == node) {
        let Some(held) = addrs.get(&(p.namespace.clone(), p.name.clone())) else { continue };
        let want = ns_net.get(p.namespace.as_str()).copied().unwrap_or(DEFAULT_NETWORK);
        if held.iter().any(|h| h.network == want) {
            continue;
        }
        if let Some(crate::local_pods::Held { ip, network: net, .. }) = held.first() {
            out.push(format!(
                "{}/{} {ip}: address from network {net:?}, namespace {:?} is now on {want:?}; its traffic is \
                 dropped until it is re-created",
                p.namespace, p.name, p.namespace
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_pods::{scan, tests::reserve};
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

    #[test]
    fn a_pod_whose_namespace_left_its_network_is_named_the_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        reserve(d, "blue", "10.60.1.2", "x", "a"); // x/a: created on blue, x has moved to the default network
        reserve(d, "blue", "10.60.1.3", "y", "b"); // y/b: on blue, y still is
        reserve(d, DEFAULT_NETWORK, "10.244.1.2", "z", "c"); // z/c: default, z still is
        reserve(d, DEFAULT_NETWORK, "10.244.1.9", "w", "d"); // w/d: default, w has moved onto blue
                                                             // Overlapping networks: green holds the same address as x/a for another pod; x/a is still named.
        reserve(d, "green", "10.60.1.2", "v", "e");
        let model = Model {
            pods: vec![
                pod("x", "a", "n1", "10.60.1.2"),
                pod("y", "b", "n1", "10.60.1.3"),
                pod("z", "c", "n1", "10.244.1.2"),
                pod("w", "d", "n1", "10.244.1.9"),
                pod("v", "e", "n1", "10.60.1.2"),
                // Another node's pod: its pools are not ours to read.
                pod("x", "remote", "n2", "10.60.2.2"),
                // No reservation: nothing known, nothing said.
                pod("x", "unknown", "n1", "10.60.1.77"),
            ],
            networks: vec![
                Network { name: "blue".into(), group: 7, namespaces: vec!["y".into(), "w".into()] },
                Network { name: "green".into(), group: 8, namespaces: vec!["v".into(), "x".into()] },
            ],
            ..Default::default()
        };
        let got = stranded(&model, "n1", &scan(d));
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[1].starts_with("w/d 10.244.1.9: address from network \"default\", namespace \"w\" is now on \"blue\"")
        );
        assert!(got[0].starts_with("x/a 10.60.1.2: address from network \"blue\", namespace \"x\" is now on \"green\""));
    }

    #[test]
    fn a_hostile_pool_name_or_a_missing_dir_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("net-file"), b"").unwrap();
        std::fs::create_dir_all(dir.path().join("net-")).unwrap();
        let model = Model { pods: vec![pod("x", "a", "n1", "10.60.1.2")], ..Default::default() };
        assert!(stranded(&model, "n1", &scan(dir.path())).is_empty());
        assert!(stranded(&model, "n1", &scan(&dir.path().join("nope"))).is_empty());
    }
}
