//! The node file's size budget: which admitted networks fit in what the CNI plugin can read.
//!
//! The plugin reads at most `node_file::MAX_BYTES` of node file; a bigger file is an error for every pod of the
//! node, default network included. Each object is bounded on its own (`TenantNetwork::validate`), but the file
//! holds every served network and every namespace they claim (names listed, and namespaces selected by labels),
//! so enough objects, or a selector picking many namespaces, could still outgrow it. Pure and deterministic:
//! networks are taken in admission order (oldest first), each costs an upper bound of the bytes it adds to the
//! file, and a network that would not fit is refused here as an invalid object is (its namespaces stay on the
//! default network, or go to a later network that selects them), while the older ones keep working. The
//! cost depends only on the objects and the namespaces, not on this node, so every node (and the policy engine,
//! which applies the same function) decides alike.
use std::collections::{BTreeMap, BTreeSet};
use weft_types::node_file::MAX_BYTES;
use weft_types::tenant::TenantNetwork;

/// Bytes per namespace in the file (quotes, comma, newline and indentation of the pretty-printed JSON, with
/// room to spare); names are DNS-1123 labels, so nothing is escaped.
pub const PER_NAMESPACE: usize = 16;
/// Bytes per network entry without its namespaces: name, VNI, subnets, CIDRs and MTU at their longest.
pub const PER_NETWORK: usize = 512;
/// What the rest of the file (the default network's subnets, MTU, keys) may take.
pub const HEADER: usize = 4096;

/// The networks of `nets` (in admission order) that fit, and a reason per refused one (by name).
pub fn fit(
    nets: Vec<TenantNetwork>,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> (Vec<TenantNetwork>, Vec<(String, String)>) {
    fit_within(nets, namespaces, MAX_BYTES - HEADER)
}

pub fn fit_within(
    nets: Vec<TenantNetwork>,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    budget: usize,
) -> (Vec<TenantNetwork>, Vec<(String, String)>) {
    // A newer network never takes a namespace from an older one (`network_of` picks the first), so the
    // namespaces a network adds are those it selects that no kept older network claimed already: the same
    // claims as `desired::resolve_namespaces` of the kept networks, counted without building them.
    let mut kept: Vec<TenantNetwork> = Vec::new();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut used = 0usize;
    let mut refused = Vec::new();
    for n in nets {
        // What `n` selects (as `resolve_namespaces` would with `n` alone), minus what older ones claimed.
        let mut mine: BTreeSet<&str> = n.namespaces.names.iter().map(String::as_str).collect();
        if !n.namespaces.match_labels.is_empty() {
            mine.extend(namespaces.iter().filter(|(k, l)| n.namespaces.selects(k, l)).map(|(k, _)| k.as_str()));
        }
        let adds: Vec<String> = mine.into_iter().filter(|ns| !claimed.contains(*ns)).map(str::to_string).collect();
        let c = cost(&adds);
        if used + c > budget {
            refused.push((
                n.name.clone(),
                format!(
                    "refused: with its {} namespaces the node file would exceed the CNI plugin's {MAX_BYTES} bytes \
                     (older networks are kept)",
                    adds.len()
                ),
            ));
            continue;
        }
        used += c;
        claimed.extend(adds);
        kept.push(n);
    }
    (kept, refused)
}

fn cost(namespaces: &[String]) -> usize {
    PER_NETWORK + namespaces.iter().map(|n| n.len() + PER_NAMESPACE).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::desired::{plan, Local, PlanInput};
    use weft_types::{BackendData, Lease, NetworkConfig, NodeFile};

    fn net(name: &str, vni: u32, names: Vec<String>) -> TenantNetwork {
        serde_json::from_value(serde_json::json!({"name": name, "cidr": "10.50.0.0/16", "vni": vni,
            "namespaces": {"names": names}}))
        .unwrap()
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i:0>58}")).collect()
    }

    #[test]
    fn the_newest_networks_that_do_not_fit_are_refused_and_the_file_stays_readable() {
        // 80 valid networks of 256 names of 63 characters: about 1.6 MB of namespaces, past the plugin's 1 MiB.
        let mut nets = vec![net("blue", 100, vec!["team-a".into()])];
        nets.extend((0..80).map(|i| net(&format!("bulk{i}"), 1000 + i, names(&format!("b{i:02}"), 256))));
        for n in &nets {
            n.validate().unwrap();
        }
        let none = BTreeMap::new();
        let (kept, refused) = fit(nets.clone(), &none);
        assert_eq!(kept[0].name, "blue", "the oldest network is kept");
        assert!(!refused.is_empty() && refused.iter().all(|(n, _)| n.starts_with("bulk")), "{refused:?}");
        // Refused from the newest end: every kept network is older than every refused one.
        let last_kept = nets.iter().position(|n| n.name == kept.last().unwrap().name).unwrap();
        let first_refused = nets.iter().position(|n| n.name == refused[0].0).unwrap();
        assert!(last_kept < first_refused);
        assert!(refused[0].1.contains("node file"), "{}", refused[0].1);

        // The file the agent writes from what was kept: every network served, every claim pending elsewhere.
        let cfg: NetworkConfig = serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16"}"#).unwrap();
        let me = Lease {
            node: "n1".into(),
            subnet: "10.244.1.0/24".parse().unwrap(),
            subnet6: Some("fd00:10:244:1::/64".parse().unwrap()),
            node_ip: "192.168.0.1".parse().unwrap(),
            backend_data: BackendData::Vxlan { vtep_mac: "02:00:00:00:00:01".into() },
            expires_at_ms: 0,
        };
        let slots = kept.iter().enumerate().map(|(i, n)| (n.vni, (i % 255) as u8 + 1)).collect();
        let devices = kept.iter().enumerate().map(|(i, n)| (n.vni, 10 + i as u32)).collect();
        let p = plan(
            &Local { me: &me, cfg: &cfg, backend: "vxlan", mtu: 1450 },
            PlanInput {
                nets: &kept,
                draining: &[],
                namespaces: &none,
                peers: [me.clone()].iter(),
                slots: &slots,
                devices: &devices,
                used: &BTreeMap::new(),
            },
        );
        let file = NodeFile {
            subnet: me.subnet,
            subnet6: me.subnet6,
            mtu: 1450,
            cluster_cidr: Some(cfg.cluster_cidr),
            cluster_cidr6: Some("fd00:10:244::/56".parse().unwrap()),
            networks: p.node_networks,
            pending_namespaces: Vec::new(),
        };
        let bytes = file.encode().len();
        assert!(bytes <= MAX_BYTES, "{bytes} bytes");
        assert!(bytes > MAX_BYTES / 2, "the budget is used, not wasted: {bytes}");
        // And as pending namespaces (not served here yet), the same bound holds.
        let pending =
            NodeFile { networks: Vec::new(), pending_namespaces: p.claimed.into_values().flatten().collect(), ..file };
        assert!(pending.encode().len() <= MAX_BYTES);
    }

    #[test]
    fn label_selected_namespaces_count_and_older_claims_are_not_counted_twice() {
        let mut sel = net("sel", 7, vec![]);
        sel.namespaces.match_labels.insert("t".into(), "x".into());
        let labelled: BTreeMap<String, BTreeMap<String, String>> =
            (0..100).map(|i| (format!("ns{i}"), [("t".to_string(), "x".to_string())].into())).collect();
        // Budget for `sel` and its 100 namespaces, and one more network naming the same namespaces (claimed
        // already, so it adds only its own entry).
        let one = cost(&labelled.keys().cloned().collect::<Vec<_>>());
        let again = net("again", 8, labelled.keys().cloned().collect());
        let extra = net("extra", 9, vec!["zzz".into()]);
        let budget = one + PER_NETWORK + 1;
        let (kept, refused) = fit_within(vec![sel.clone(), again, extra], &labelled, budget);
        assert_eq!(kept.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["sel", "again"]);
        // What the plan then resolves for the kept ones is what was counted.
        let (by_net, _) = crate::networks::desired::resolve_namespaces(&kept, &labelled);
        assert!(by_net.values().map(|v| cost(v)).sum::<usize>() <= budget);
        assert_eq!(by_net["sel"].len(), 100);
        assert!(by_net["again"].is_empty());
        assert_eq!(refused.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["extra"]);
        let (kept, refused) = fit_within(vec![sel], &labelled, one - 1);
        assert!(kept.is_empty() && refused.len() == 1);
    }
}
