//! The isolation firewall's input (helper netfw's `weft_policy::isolation`, table `inet weft-net`) from what the
//! networks manager programs, pure: every network with kernel state on this node (draining ones too: their
//! pods still run) with its node-local slot, group, device and CIDRs; the default cluster CIDRs; and every
//! admitted network's CIDRs cluster-wide (also those this node cannot serve), so "outside every weft CIDR"
//! means the outside world.
use super::desired::Served;
use ipnet::IpNet;
use weft_policy::isolation::{IsolatedNetwork, IsolationInput};
use weft_types::{NetworkConfig, TenantNetwork};

pub fn input(served: &[Served], admitted: &[TenantNetwork], cfg: &NetworkConfig) -> IsolationInput {
    let networks = served
        .iter()
        .map(|s| IsolatedNetwork {
            name: s.name.clone(),
            vni: s.vni,
            slot: s.slot,
            group: s.ids.group,
            device: s.ids.device.clone(),
            cidr: s.cidr,
            cidr6: s.cidr6,
            masquerade: s.masquerade,
        })
        .collect();
    let mut weft_cidrs: Vec<IpNet> = Vec::new();
    for n in admitted {
        weft_cidrs.push(IpNet::V4(n.cidr));
        weft_cidrs.extend(n.cidr6.map(IpNet::V6));
    }
    for s in served {
        weft_cidrs.push(IpNet::V4(s.cidr));
        weft_cidrs.extend(s.cidr6.map(IpNet::V6));
    }
    weft_cidrs.sort();
    weft_cidrs.dedup();
    IsolationInput { networks, default_cidr: cfg.cluster_cidr, default_cidr6: cfg.cluster_cidr6, weft_cidrs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_types::NetworkIds;

    #[test]
    fn served_networks_become_isolated_networks_and_every_cidr_counts() {
        let cfg: NetworkConfig = serde_json::from_str(r#"{"clusterCidr":"10.244.0.0/16"}"#).unwrap();
        let s = Served {
            name: "blue".into(),
            vni: 100,
            slot: 3,
            ids: NetworkIds::of(100),
            cidr: "10.50.0.0/16".parse().unwrap(),
            cidr6: None,
            subnet: "10.50.1.0/24".parse().unwrap(),
            subnet6: None,
            masquerade: true,
            draining: false,
            peers: 2,
            used: 0,
        };
        let other: TenantNetwork =
            serde_json::from_value(serde_json::json!({"name":"far","cidr":"10.70.0.0/16","vni":7})).unwrap();
        let i = input(&[s], &[other], &cfg);
        assert_eq!(i.networks[0].mark(), 3 << 24);
        assert_eq!((i.networks[0].group, i.networks[0].device.as_str()), (0x5700_0064, "wn100"));
        assert_eq!(i.weft_cidrs.len(), 2, "{:?}", i.weft_cidrs);
        let iso = weft_policy::isolation::isolation(&i);
        assert!(iso.refused.is_empty());
        assert_eq!(iso.table.counter_network("dropped_blue"), Some("blue"));
    }
}
