//! Tenant-network kernel state against the real kernel: rules, routes in tenant tables (also overlapping ones),
//! unreachable routes, a VXLAN device with a given MAC, neighbours/FDB on several devices. Checked with `ip` and
//! `bridge`, read back equal to what was applied, and someone else's entries never read as weft's.
use std::net::IpAddr;
use weft_dataplane::netlink::NetlinkDataplane;
use weft_dataplane::netns::NetnsHandle;
use weft_dataplane::networks::*;
use weft_dataplane::*;
use weft_e2e::{require_root, unique, Netns};

fn node() -> (Netns, NetlinkDataplane) {
    let ns = Netns::new(format!("wnt{}", unique()));
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", "192.168.78.1/24", "dev", "u0"]);
    ns.ip(&["link", "set", "u0", "up"]);
    ns.ip(&["link", "set", "u1", "up"]);
    let dp = NetlinkDataplane::in_netns(&NetnsHandle::open(&ns.path()).unwrap()).unwrap();
    (ns, dp)
}

fn spec(name: &str, underlay: u32, vni: u32) -> VxlanSpec {
    VxlanSpec {
        name: name.into(),
        vni,
        port: 8472,
        local: "192.168.78.1".parse().unwrap(),
        underlay_ifindex: underlay,
        mtu: 1450,
        address: None,
        address6: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Two networks with the same CIDR (tables 100 and 101), one with IPv6 too.
fn desired(dev_a: u32, dev_b: u32, mac: Mac) -> NetworksState {
    let mut s = NetworksState::default();
    for (slot, table, dev) in [(1u32, 0x5700_0064u32, dev_a), (2, 0x5700_0065, dev_b)] {
        for peer in 2..5u8 {
            let gw = ip(&format!("10.50.{peer}.0"));
            // Every peer has its own VTEP MAC (admission refuses copies).
            let mac = [mac[0], mac[1], mac[2], mac[3], mac[4], peer];
            s.add_neigh(Neigh { ifindex: dev, ip: gw, mac });
            s.add_fdb(Fdb { ifindex: dev, mac, dst: ip(&format!("192.168.78.{peer}")) });
            s.add_route(TableRoute {
                table,
                dst: format!("10.50.{peer}.0/24").parse().unwrap(),
                kind: TableRouteKind::Via { gateway: gw, ifindex: dev },
            });
        }
        s.add_route(TableRoute { table, dst: "10.50.0.0/16".parse().unwrap(), kind: TableRouteKind::Unreachable });
        let fw = Some((slot << 24, 0xff00_0000));
        s.add_rule(Rule { v6: false, priority: 1000, fwmark: fw, iif: None, dst: None, table });
        s.add_rule(Rule {
            v6: false,
            priority: 1000,
            fwmark: None,
            iif: Some(format!("wn{}", table & 0xff)),
            dst: None,
            table,
        });
    }
    let t = 0x5700_0064;
    s.add_route(TableRoute { table: t, dst: "fd00:50::/48".parse().unwrap(), kind: TableRouteKind::Unreachable });
    s.add_route(TableRoute {
        table: t,
        dst: "fd00:50:0:0:2::/80".parse().unwrap(),
        kind: TableRouteKind::Via { gateway: ip("fd00:50:0:0:2::"), ifindex: dev_a },
    });
    s.add_neigh(Neigh { ifindex: dev_a, ip: ip("fd00:50:0:0:2::"), mac });
    s.add_rule(Rule { v6: true, priority: 1000, fwmark: Some((1 << 24, 0xff00_0000)), iif: None, dst: None, table: t });
    s.add_rule(Rule {
        v6: false,
        priority: 1000,
        fwmark: None,
        iif: Some("lo".into()),
        dst: Some("10.60.1.0/24".parse().unwrap()),
        table: t,
    });
    s
}

#[tokio::test]
async fn tenant_rules_tables_and_devices_round_trip() {
    if !require_root() {
        return;
    }
    let (ns, dp) = node();
    let under = dp.underlay(ip("192.168.78.1")).await.unwrap();
    let default = dp.ensure_vxlan(&spec("weft.1", under.ifindex, 1)).await.unwrap();
    let a = dp.ensure_tenant_vxlan(&spec("wn100", under.ifindex, 100), default.mac).await.unwrap();
    let b = dp.ensure_tenant_vxlan(&spec("wn101", under.ifindex, 101), default.mac).await.unwrap();
    assert_eq!((a.mac, b.mac), (default.mac, default.mac), "tenant devices carry the default device's MAC");
    assert_eq!(dp.ensure_tenant_vxlan(&spec("wn100", under.ifindex, 100), default.mac).await.unwrap(), a);
    let link = ns.ip(&["-d", "link", "show", "wn100"]);
    for want in ["vxlan id 100", "dstport 8472", "nolearning", &format_mac(&default.mac), ",UP"] {
        assert!(link.contains(want), "{want:?} missing in {link}");
    }
    assert_eq!(dp.link_index("wn101").await.unwrap(), Some(b.ifindex));
    assert_eq!(dp.link_index("wn999").await.unwrap(), None);

    // Someone else's rule and a pod route in a tenant table (the CNI's) are never read as ours.
    ns.ip(&["rule", "add", "fwmark", "0x1", "lookup", "77", "pref", "900"]);
    ns.ip(&["link", "add", "pv0", "type", "veth", "peer", "name", "pv1"]);
    ns.ip(&["link", "set", "pv0", "up"]);
    ns.ip(&[
        "route",
        "add",
        "10.50.1.5/32",
        "dev",
        "pv0",
        "scope",
        "link",
        "table",
        &0x5700_0064u32.to_string(),
        "proto",
        "201",
    ]);

    let scope = NetworksScope { devices: vec![a.ifindex, b.ifindex] };
    let want = desired(a.ifindex, b.ifindex, default.mac);
    let ops = diff_networks(&want, &dp.read_networks(&scope).await.unwrap());
    assert_eq!(ops.len(), want.len());
    let report = dp.apply(&ops).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(dp.read_networks(&scope).await.unwrap(), want, "read back equals applied");
    // Re-adding an existing rule is done, not a duplicate.
    let again: Vec<Op> = want.rules.iter().cloned().map(Op::AddRule).collect();
    assert!(dp.apply(&again).await.unwrap().failed.is_empty());
    let rules = ns.ip(&["rule", "show"]);
    assert_eq!(rules.lines().filter(|l| l.contains("fwmark 0x1000000/0xff000000")).count(), 1, "{rules}");
    assert!(rules.contains("iif wn100 lookup 1459617892"), "{rules}");
    assert!(rules.contains("from all to 10.60.1.0/24 iif lo lookup 1459617892"), "{rules}");
    let t100 = ns.ip(&["route", "show", "table", "1459617892"]);
    assert!(t100.contains("unreachable 10.50.0.0/16 proto 201"), "{t100}");
    assert!(t100.contains("10.50.2.0/24 via 10.50.2.0 dev wn100 proto 201 onlink"), "{t100}");
    let t101 = ns.ip(&["route", "show", "table", "1459617893"]);
    assert!(t101.contains("10.50.2.0/24 via 10.50.2.0 dev wn101 proto 201 onlink"), "{t101}");
    let fdb = ns.exec("bridge", &["fdb", "show", "dev", "wn101"]);
    assert!(fdb.contains("dst 192.168.78.3"), "{fdb}");

    // Drift: rule and route deleted by hand are found and repaired.
    ns.ip(&["rule", "del", "fwmark", "0x2000000/0xff000000", "lookup", "1459617893", "pref", "1000"]);
    ns.ip(&["route", "del", "unreachable", "10.50.0.0/16", "table", "1459617892"]);
    let ops = diff_networks(&want, &dp.read_networks(&scope).await.unwrap());
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(dp.apply(&ops).await.unwrap().failed.is_empty());
    assert!(diff_networks(&want, &dp.read_networks(&scope).await.unwrap()).is_empty());

    // Everything out; the foreign rule and the pod route stay.
    let ops = diff_networks(&NetworksState::default(), &dp.read_networks(&scope).await.unwrap());
    let report = dp.apply(&ops).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(dp.read_networks(&scope).await.unwrap().is_empty());
    assert!(ns.ip(&["rule", "show"]).contains("lookup 77"));
    assert!(ns.ip(&["route", "show", "table", "1459617892"]).contains("10.50.1.5 dev pv0"));
    assert!(!ns.ip(&["rule", "show"]).contains("1459617892"));
}
