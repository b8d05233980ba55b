//! CNI CHECK as a pure function: what the kernel shows ([`PodObserved`]) against what ADD set up ([`PodSpec`]).
//! Every problem is reported (not only the first), each as one sentence a human can act on.
use super::{format_mac, PodObserved, PodSpec};
use std::net::IpAddr;

fn host_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The problems found; empty when the attachment is intact.
pub fn compare(spec: &PodSpec, obs: &PodObserved) -> Vec<String> {
    let mut p = Vec::new();
    let Some(pod) = &obs.pod_link else {
        p.push(format!("interface {} is missing from the pod's network namespace", spec.pod_ifname));
        if obs.host_link.is_none() {
            p.push(format!("host veth {} is missing from the node", spec.host_ifname));
        }
        return p;
    };
    let name = &spec.pod_ifname;
    if !pod.kind_veth {
        p.push(format!("interface {name} in the pod is not a veth"));
    }
    if pod.mac != Some(spec.pod_mac) {
        p.push(format!("interface {name} has MAC {}, expected {}", mac_str(pod.mac), format_mac(&spec.pod_mac)));
    }
    if pod.mtu != spec.mtu {
        p.push(format!("interface {name} has MTU {}, expected {}", pod.mtu, spec.mtu));
    }
    if !pod.up {
        p.push(format!("interface {name} is down"));
    }
    for a in &spec.addrs {
        let len = host_len(a.ip);
        if !obs.pod_addrs.contains(&(a.ip, len)) {
            p.push(format!("address {}/{len} is missing from {name}", a.ip));
        }
        let gw_neigh = obs
            .pod_neighbours
            .iter()
            .any(|n| n.ip == a.gateway && n.permanent && n.mac == Some(spec.host_mac) && n.ifindex == pod.index);
        if !gw_neigh {
            p.push(format!(
                "permanent neighbour {} lladdr {} is missing on {name} in the pod",
                a.gateway,
                format_mac(&spec.host_mac)
            ));
        }
    }
    for route in &spec.routes {
        let present = obs.pod_routes.iter().any(|r| {
            r.prefix_len == route.dst.prefix_len()
                && r.dst == route.dst.network()
                && r.gateway == Some(route.gateway)
                && r.oif == Some(pod.index)
        });
        if !present && route.is_default() {
            p.push(format!("default route via {} dev {name} is missing in the pod", route.gateway));
        } else if !present {
            p.push(format!("route {} via {} dev {name} is missing in the pod", route.dst, route.gateway));
        }
    }
    let Some(host) = &obs.host_link else {
        p.push(format!("host veth {} is missing from the node", spec.host_ifname));
        return p;
    };
    let hname = &spec.host_ifname;
    if pod.peer_index != Some(host.index) {
        p.push(format!("interface {name} in the pod is not the peer of host veth {hname}"));
    }
    if !host.up {
        p.push(format!("host veth {hname} is down"));
    }
    if host.mtu != spec.mtu {
        p.push(format!("host veth {hname} has MTU {}, expected {}", host.mtu, spec.mtu));
    }
    // The group is what the agent's rules and firewall recognise a network's pods by: a default pod's veth in a
    // tenant group, or a tenant pod's outside it, is on the wrong network.
    if host.group != spec.host_group() {
        p.push(format!("host veth {hname} is in link group {:#x}, expected {:#x}", host.group, spec.host_group()));
    }
    for a in &spec.addrs {
        let len = host_len(a.ip);
        if !obs.host_routes.iter().any(|r| r.dst == a.ip && r.prefix_len == len && r.oif == Some(host.index)) {
            match spec.network {
                None => p.push(format!("route {}/{len} dev {hname} is missing on the node", a.ip)),
                Some(n) => {
                    p.push(format!("route {}/{len} dev {hname} is missing from table {:#x} on the node", a.ip, n.table))
                }
            }
        }
        if !obs.host_neighbours.iter().any(|n| n.ip == a.ip && n.permanent && n.mac == Some(spec.pod_mac)) {
            p.push(format!("permanent neighbour {} lladdr {} is missing on {hname}", a.ip, format_mac(&spec.pod_mac)));
        }
    }
    p
}

fn mac_str(m: Option<super::Mac>) -> String {
    m.map(|m| format_mac(&m)).unwrap_or_else(|| "none".into())
}

#[cfg(test)]
mod tests {
    use super::super::{LinkObs, NeighObs, PodAddr, PodRoute, RouteObs};
    use super::*;

    fn spec() -> PodSpec {
        PodSpec {
            host_ifname: "wfabc".into(),
            host_mac: [2, 0, 0, 0, 0, 1],
            alias: "weft:n:c:eth0".into(),
            pod_ifname: "eth0".into(),
            pod_mac: [2, 0, 0, 0, 0, 2],
            mtu: 1400,
            addrs: vec![PodAddr { ip: "10.1.0.5".parse().unwrap(), gateway: "10.1.0.1".parse().unwrap() }],
            routes: vec![PodRoute { dst: "0.0.0.0/0".parse().unwrap(), gateway: "10.1.0.1".parse().unwrap() }],
            network: None,
        }
    }

    fn intact() -> PodObserved {
        let ip: IpAddr = "10.1.0.5".parse().unwrap();
        let gw: IpAddr = "10.1.0.1".parse().unwrap();
        PodObserved {
            pod_link: Some(LinkObs {
                index: 2,
                name: "eth0".into(),
                mac: Some([2, 0, 0, 0, 0, 2]),
                mtu: 1400,
                up: true,
                peer_index: Some(7),
                kind_veth: true,
                alias: None,
                group: 0,
            }),
            pod_addrs: vec![(ip, 32)],
            pod_routes: vec![RouteObs {
                dst: "0.0.0.0".parse().unwrap(),
                prefix_len: 0,
                gateway: Some(gw),
                oif: Some(2),
            }],
            pod_neighbours: vec![NeighObs { ip: gw, mac: Some([2, 0, 0, 0, 0, 1]), ifindex: 2, permanent: true }],
            host_link: Some(LinkObs {
                index: 7,
                name: "wfabc".into(),
                mac: Some([2, 0, 0, 0, 0, 1]),
                mtu: 1400,
                up: true,
                peer_index: Some(2),
                kind_veth: true,
                alias: None,
                group: 0,
            }),
            host_routes: vec![RouteObs { dst: ip, prefix_len: 32, gateway: None, oif: Some(7) }],
            host_neighbours: vec![NeighObs { ip, mac: Some([2, 0, 0, 0, 0, 2]), ifindex: 7, permanent: true }],
        }
    }

    #[test]
    fn intact_attachment_has_no_problems() {
        assert_eq!(compare(&spec(), &intact()), Vec::<String>::new());
    }

    #[test]
    fn each_kind_of_tampering_is_reported() {
        let mut o = intact();
        o.pod_addrs.clear();
        assert_eq!(compare(&spec(), &o), vec!["address 10.1.0.5/32 is missing from eth0".to_string()]);

        let mut o = intact();
        o.pod_routes.clear();
        assert!(compare(&spec(), &o)[0].contains("default route via 10.1.0.1"));

        // A secondary attachment: its subnet route, no default.
        let mut sec = spec();
        sec.routes = vec![PodRoute { dst: "10.1.0.0/24".parse().unwrap(), gateway: "10.1.0.1".parse().unwrap() }];
        assert_eq!(compare(&sec, &intact()), vec!["route 10.1.0.0/24 via 10.1.0.1 dev eth0 is missing in the pod"]);
        let mut o = intact();
        o.pod_routes[0].dst = "10.1.0.0".parse().unwrap();
        o.pod_routes[0].prefix_len = 24;
        assert!(compare(&sec, &o).is_empty());
        assert!(compare(&spec(), &o)[0].contains("default route via 10.1.0.1"));

        let mut o = intact();
        o.host_routes.clear();
        assert!(compare(&spec(), &o)[0].contains("route 10.1.0.5/32 dev wfabc is missing"));

        let mut o = intact();
        o.pod_link.as_mut().unwrap().mtu = 1500;
        o.host_link.as_mut().unwrap().up = false;
        let p = compare(&spec(), &o);
        assert_eq!(p.len(), 2, "{p:?}");

        let mut o = intact();
        o.pod_link = None;
        assert!(compare(&spec(), &o)[0].contains("interface eth0 is missing"));

        let mut o = intact();
        o.host_link = None;
        assert!(compare(&spec(), &o).iter().any(|s| s.contains("host veth wfabc is missing")));

        // A tenant attachment: its veth must be in the network's group, its host route in the network's table
        // (the observation holds the routes of that table); a default attachment's veth in any group is wrong.
        let mut ten = spec();
        ten.network = Some(super::super::PodNetwork { table: 0x5700_0064, group: 0x5700_0064 });
        let p = compare(&ten, &intact());
        assert_eq!(p, vec!["host veth wfabc is in link group 0x0, expected 0x57000064"], "{p:?}");
        let mut o = intact();
        o.host_link.as_mut().unwrap().group = 0x5700_0064;
        assert!(compare(&ten, &o).is_empty());
        assert_eq!(compare(&spec(), &o), vec!["host veth wfabc is in link group 0x57000064, expected 0x0"]);
        o.host_routes.clear();
        assert_eq!(compare(&ten, &o), vec!["route 10.1.0.5/32 dev wfabc is missing from table 0x57000064 on the node"]);

        let mut o = intact();
        o.pod_neighbours[0].permanent = false;
        assert!(compare(&spec(), &o)[0].contains("permanent neighbour 10.1.0.1"));
    }
}
