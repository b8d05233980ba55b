//! Two nodes joined by a veth underlay program each other as peers through the dataplane API, and traffic
//! crosses the VXLAN tunnel (IPv4 and IPv6): the entries are correct, not just present. Then an FDB entry
//! deleted behind weft's back breaks the path and one resync repairs it.
use std::net::IpAddr;
use std::time::Duration;
use weft_dataplane::diff::diff;
use weft_dataplane::netlink::NetlinkDataplane;
use weft_dataplane::netns::NetnsHandle;
use weft_dataplane::*;
use weft_e2e::{require_root, unique, wait_until, Netns};

struct Node {
    ns: Netns,
    dp: NetlinkDataplane,
    vtep: VtepInfo,
    index: u8,
}

async fn node(ns: Netns, index: u8) -> Node {
    let dp = NetlinkDataplane::in_netns(&NetnsHandle::open(&ns.path()).unwrap()).unwrap();
    let local: IpAddr = format!("192.168.88.{index}").parse().unwrap();
    let under = dp.underlay(local).await.unwrap();
    let spec = VxlanSpec {
        name: "vx".into(),
        vni: 7,
        port: 8472,
        local,
        underlay_ifindex: under.ifindex,
        mtu: under.mtu - 50,
        address: Some(format!("10.244.{index}.0/32").parse().unwrap()),
        address6: Some(format!("fd00:244:{index}::/128").parse().unwrap()),
    };
    let vtep = dp.ensure_vxlan(&spec).await.unwrap();
    Node { ns, dp, vtep, index }
}

/// What `me` must hold to reach `peer`: flannel's entries, with the route through a nexthop object.
fn peer_state(me: &Node, peer: &Node) -> OverlayState {
    let (vx, p) = (me.vtep.ifindex, peer.index);
    let mut s = OverlayState::default();
    for (id, gw, dst) in [
        (1, format!("10.244.{p}.0"), format!("10.244.{p}.0/24")),
        (2, format!("fd00:244:{p}::"), format!("fd00:244:{p}::/64")),
    ] {
        let gw: IpAddr = gw.parse().unwrap();
        s.add_neigh(Neigh { ifindex: vx, ip: gw, mac: peer.vtep.mac });
        s.add_nexthop(Nexthop { id, gateway: gw, ifindex: vx, onlink: true });
        s.add_route(Route { dst: dst.parse().unwrap(), target: RouteTarget::Nexthop(id) });
    }
    s.add_fdb(Fdb { ifindex: vx, mac: peer.vtep.mac, dst: format!("192.168.88.{p}").parse().unwrap() });
    s
}

async fn sync(n: &Node, want: &OverlayState) {
    let scope = Scope { vxlan_ifindex: Some(n.vtep.ifindex) };
    let ops = diff(want, &n.dp.read_state(&scope).await.unwrap());
    let report = n.dp.apply(&ops).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
}

fn reaches(from: &Node, dst: &str) -> bool {
    wait_until(Duration::from_secs(5), || from.ns.ping(dst))
}

#[tokio::test]
async fn two_nodes_ping_across_the_tunnel_and_resync_repairs_it() {
    if !require_root() {
        return;
    }
    let u = unique();
    let (na, nb) = (Netns::new(format!("wta{u}")), Netns::new(format!("wtb{u}")));
    na.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", &nb.name]);
    for (ns, i) in [(&na, 1), (&nb, 2)] {
        ns.ip(&["addr", "add", &format!("192.168.88.{i}/24"), "dev", "u0"]);
        ns.ip(&["link", "set", "u0", "up"]);
    }
    let (a, b) = (node(na, 1).await, node(nb, 2).await);
    assert!(!a.ns.ping("10.244.2.0"), "no path before weft programs it");

    let (want_a, want_b) = (peer_state(&a, &b), peer_state(&b, &a));
    sync(&a, &want_a).await;
    sync(&b, &want_b).await;
    assert!(reaches(&a, "10.244.2.0"), "IPv4 a -> b over VXLAN");
    assert!(reaches(&b, "10.244.1.0"), "IPv4 b -> a over VXLAN");
    assert!(reaches(&a, "fd00:244:2::"), "IPv6 a -> b over VXLAN");
    // The traffic really went through the tunnel: the VXLAN device counted it.
    assert!(a.ns.ip(&["-s", "link", "show", "vx"]).lines().nth(5).is_some_and(|l| !l.trim().starts_with("0 ")));

    // Someone deletes a's FDB entry for b: frames have nowhere to go, ping fails; one resync repairs it.
    let mac = format_mac(&b.vtep.mac);
    a.ns.exec("bridge", &["fdb", "del", &mac, "dev", "vx", "dst", "192.168.88.2"]);
    assert!(!a.ns.ping("10.244.2.0"), "broken without the FDB entry");
    sync(&a, &want_a).await;
    assert!(reaches(&a, "10.244.2.0"), "repaired by resync");
}
