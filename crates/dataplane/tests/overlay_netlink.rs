//! The real dataplane against the real kernel, in throwaway namespaces: what it programs is checked with `ip`,
//! `bridge` and `nft` (independent tools), and a two-node test proves the entries carry traffic.
use ipnet::IpNet;
use std::net::IpAddr;
use weft_dataplane::diff::diff;
use weft_dataplane::netlink::NetlinkDataplane;
use weft_dataplane::netns::NetnsHandle;
use weft_dataplane::*;
use weft_e2e::{require_root, unique, Netns};

/// A node namespace with a veth underlay `u0` holding `192.168.77.1/24`, and a dataplane bound to it.
fn node() -> (Netns, NetlinkDataplane) {
    let ns = Netns::new(format!("wdp{}", unique()));
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", "192.168.77.1/24", "dev", "u0"]);
    ns.ip(&["link", "set", "u0", "up"]);
    ns.ip(&["link", "set", "u1", "up"]);
    let dp = NetlinkDataplane::in_netns(&NetnsHandle::open(&ns.path()).unwrap()).unwrap();
    (ns, dp)
}

fn spec(underlay: u32, vni: u32) -> VxlanSpec {
    VxlanSpec {
        name: "vx".into(),
        vni,
        port: 8472,
        local: "192.168.77.1".parse().unwrap(),
        underlay_ifindex: underlay,
        mtu: 1450,
        address: Some("10.244.1.0/32".parse().unwrap()),
        address6: Some("fd00:244:1::/128".parse().unwrap()),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Peers the way the agent programs them: neighbour + FDB + nexthop + route per peer; one IPv6 peer; one peer
/// through a classic gateway route (the fallback target).
fn desired(vx: u32, peers: u8, mac_seed: u8) -> OverlayState {
    let mut s = OverlayState::default();
    for i in 2..2 + peers {
        let gw = ip(&format!("10.244.{i}.0"));
        let mac = [2, 0xbb, 0, 0, mac_seed, i];
        s.add_neigh(Neigh { ifindex: vx, ip: gw, mac });
        s.add_fdb(Fdb { ifindex: vx, mac, dst: ip(&format!("192.168.77.{}", 100 + i)) });
        s.add_nexthop(Nexthop { id: 1000 + u32::from(i), gateway: gw, ifindex: vx, onlink: true });
        let dst: IpNet = format!("10.244.{i}.0/24").parse().unwrap();
        s.add_route(Route { dst, target: RouteTarget::Nexthop(1000 + u32::from(i)) });
    }
    let gw6 = ip("fd00:244:9::");
    s.add_neigh(Neigh { ifindex: vx, ip: gw6, mac: [2, 0xbb, 0, 0, mac_seed, 99] });
    s.add_nexthop(Nexthop { id: 1099, gateway: gw6, ifindex: vx, onlink: true });
    s.add_route(Route { dst: "fd00:244:9::/64".parse().unwrap(), target: RouteTarget::Nexthop(1099) });
    let via = RouteTarget::Via { gateway: ip("10.244.200.0"), ifindex: vx, onlink: true };
    s.add_route(Route { dst: "10.244.200.0/24".parse().unwrap(), target: via });
    s
}

async fn converge(dp: &NetlinkDataplane, want: &OverlayState, scope: &Scope) -> usize {
    let actual = dp.read_state(scope).await.unwrap();
    let ops = diff(want, &actual);
    let report = dp.apply(&ops).await.unwrap();
    assert!(report.failed.is_empty(), "kernel refused: {:?}", report.failed);
    assert_eq!(report.applied, ops.len());
    ops.len()
}

fn lines(out: &str, needle: &str) -> usize {
    out.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn vxlan_ensure_is_idempotent_and_recreates_on_vni_change() {
    if !require_root() {
        return;
    }
    let (ns, dp) = node();
    let under = dp.underlay(ip("192.168.77.1")).await.unwrap();
    assert_eq!((under.name.as_str(), under.mtu), ("u0", 1500));
    assert_eq!(under.network, "192.168.77.1/24".parse::<IpNet>().unwrap());
    assert!(matches!(dp.underlay(ip("192.168.78.1")).await, Err(DataplaneError::NoUnderlay(_))));

    let first = dp.ensure_vxlan(&spec(under.ifindex, 42)).await.unwrap();
    let again = dp.ensure_vxlan(&spec(under.ifindex, 42)).await.unwrap();
    assert_eq!(first, again, "same device kept");
    let link = ns.ip(&["-d", "link", "show", "vx"]);
    for want in ["vxlan id 42", "local 192.168.77.1", "dev u0", "dstport 8472", "nolearning", "mtu 1450", ",UP"] {
        assert!(link.contains(want), "{want:?} missing in {link}");
    }
    assert!(link.contains(&format_mac(&first.mac)), "{link}");
    let addrs = ns.ip(&["addr", "show", "dev", "vx"]);
    assert!(addrs.contains("10.244.1.0/32") && addrs.contains("fd00:244:1::/128"), "{addrs}");

    // MTU and addresses change in place.
    let mut s = spec(under.ifindex, 42);
    s.mtu = 1400;
    s.address = Some("10.244.5.0/32".parse().unwrap());
    assert_eq!(dp.ensure_vxlan(&s).await.unwrap(), first);
    let addrs = ns.ip(&["addr", "show", "dev", "vx"]);
    assert!(addrs.contains("10.244.5.0/32") && !addrs.contains("10.244.1.0/32"), "{addrs}");
    assert!(ns.ip(&["link", "show", "vx"]).contains("mtu 1400"));

    // A new VNI cannot change live: the device is recreated.
    let recreated = dp.ensure_vxlan(&spec(under.ifindex, 43)).await.unwrap();
    assert_ne!(recreated.ifindex, first.ifindex);
    assert!(ns.ip(&["-d", "link", "show", "vx"]).contains("vxlan id 43"));

    dp.delete_link("vx").await.unwrap();
    assert!(!ns.ip(&["link", "show"]).contains("vx:"));
    dp.delete_link("vx").await.unwrap();
}

#[tokio::test]
async fn apply_read_diff_round_trip_and_repair() {
    if !require_root() {
        return;
    }
    let (ns, dp) = node();
    let under = dp.underlay(ip("192.168.77.1")).await.unwrap();
    let vx = dp.ensure_vxlan(&spec(under.ifindex, 42)).await.unwrap().ifindex;
    let scope = Scope { vxlan_ifindex: Some(vx) };
    // Someone else's route must never be read (or deleted) as weft's.
    ns.ip(&["route", "add", "10.99.0.0/16", "via", "192.168.77.254", "proto", "static"]);

    let want = desired(vx, 5, 1);
    assert_eq!(converge(&dp, &want, &scope).await, want.len());
    assert_eq!(dp.read_state(&scope).await.unwrap(), want);
    assert!(diff(&want, &dp.read_state(&scope).await.unwrap()).is_empty());

    // Independent check with iproute2.
    let routes = ns.ip(&["route", "show", "proto", "201"]);
    assert_eq!(lines(&routes, "nhid 10"), 5, "{routes}");
    assert!(routes.contains("10.244.200.0/24 via 10.244.200.0 dev vx") && routes.contains("onlink"), "{routes}");
    assert_eq!(lines(&ns.ip(&["-6", "route", "show", "proto", "201"]), "nhid 1099"), 1);
    let nh = ns.ip(&["nexthop", "show"]);
    assert_eq!(lines(&nh, "proto 201"), 6, "{nh}");
    assert!(nh.contains("id 1002 via 10.244.2.0 dev vx scope link proto 201 onlink"), "{nh}");
    let neigh = ns.ip(&["-4", "neigh", "show", "dev", "vx", "nud", "permanent"]);
    assert!(neigh.contains("10.244.3.0 lladdr 02:bb:00:00:01:03 PERMANENT"), "{neigh}");
    assert_eq!(lines(&neigh, "PERMANENT"), 5);
    assert_eq!(lines(&ns.ip(&["-6", "neigh", "show", "dev", "vx", "nud", "permanent"]), "PERMANENT"), 1);
    let fdb = ns.exec("bridge", &["fdb", "show", "dev", "vx"]);
    assert!(fdb.contains("02:bb:00:00:01:04 dst 192.168.77.104 self permanent"), "{fdb}");
    assert_eq!(lines(&fdb, " dst "), 5, "{fdb}");

    // Entries deleted behind our back: read_state sees exactly those missing, diff restores exactly them.
    ns.ip(&["route", "del", "10.244.3.0/24"]);
    ns.ip(&["neigh", "del", "10.244.4.0", "dev", "vx"]);
    ns.exec("bridge", &["fdb", "del", "02:bb:00:00:01:05", "dev", "vx", "dst", "192.168.77.105"]);
    let ops = diff(&want, &dp.read_state(&scope).await.unwrap());
    let expect = vec![
        Op::AddNeigh(want.neighs[&(vx, ip("10.244.4.0"))]),
        Op::AddFdb(want.fdbs[&(vx, [2, 0xbb, 0, 0, 1, 5], ip("192.168.77.105"))]),
        Op::AddRoute(want.routes[&"10.244.3.0/24".parse().unwrap()]),
    ];
    assert_eq!(ops, expect);
    assert_eq!(converge(&dp, &want, &scope).await, 3);
    assert_eq!(dp.read_state(&scope).await.unwrap(), want);

    // New MACs everywhere and two peers fewer: replace in place, then deletes.
    let smaller = desired(vx, 3, 2);
    converge(&dp, &smaller, &scope).await;
    assert_eq!(dp.read_state(&scope).await.unwrap(), smaller);
    assert_eq!(lines(&ns.ip(&["route", "show", "proto", "201"]), "nhid"), 3);
    assert!(ns.ip(&["route", "show"]).contains("10.99.0.0/16"), "foreign route untouched");

    // Deleting what is already gone counts as done; adding through a missing nexthop is reported, not fatal.
    let gone = Route { dst: "10.244.77.0/24".parse().unwrap(), target: RouteTarget::Nexthop(1077) };
    let report = dp.apply(&[Op::DelRoute(gone), Op::AddRoute(gone)]).await.unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, Op::AddRoute(gone));

    // Back to nothing.
    converge(&dp, &OverlayState::default(), &scope).await;
    let left = dp.read_state(&scope).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(lines(&ns.ip(&["nexthop", "show"]), "proto 201"), 0);
}

#[tokio::test]
async fn nft_tables_are_replaced_atomically_and_deleted() {
    if !require_root() {
        return;
    }
    let (ns, dp) = node();
    let v1 = "table inet weft_t {\n chain c1 {\n  type filter hook forward priority 0; policy accept;\n  \
              ip saddr 10.1.0.0/16 counter accept\n }\n}";
    dp.apply_nft("inet", "weft_t", v1).await.unwrap();
    assert!(ns.exec("nft", &["list", "table", "inet", "weft_t"]).contains("10.1.0.0/16"));

    let v2 = "table inet weft_t {\n chain c2 {\n  type filter hook forward priority 0;\n  \
              ip saddr 10.2.0.0/16 drop\n }\n}";
    dp.apply_nft("inet", "weft_t", v2).await.unwrap();
    let listed = ns.exec("nft", &["list", "table", "inet", "weft_t"]);
    assert!(
        listed.contains("10.2.0.0/16") && !listed.contains("10.1.0.0/16") && !listed.contains("chain c1"),
        "{listed}"
    );

    // A broken ruleset changes nothing.
    let err = dp.apply_nft("inet", "weft_t", "table inet weft_t { chain c { bogus } }").await.unwrap_err();
    assert!(matches!(err, DataplaneError::Nft(_)), "{err}");
    assert!(ns.exec("nft", &["list", "table", "inet", "weft_t"]).contains("10.2.0.0/16"));

    // Incremental scripts run as one transaction; named counters are read back; a missing table has none.
    let v3 = "table inet weft_t {\n counter hits { }\n set allow { type ipv4_addr; }\n chain c3 {\n  \
              type filter hook output priority 0;\n  ip daddr @allow counter name hits\n }\n}";
    dp.apply_nft("inet", "weft_t", v3).await.unwrap();
    dp.nft_script("add element inet weft_t allow { 127.0.0.1 }").await.unwrap();
    assert!(ns.exec("nft", &["list", "set", "inet", "weft_t", "allow"]).contains("127.0.0.1"));
    assert!(dp.nft_script("add element inet weft_t allow { 127.0.0.2 }\nbogus").await.is_err());
    assert!(!ns.exec("nft", &["list", "set", "inet", "weft_t", "allow"]).contains("127.0.0.2"), "all or nothing");
    assert!(ns.ping("127.0.0.1"));
    let counters = dp.nft_counters("inet", "weft_t").await.unwrap();
    assert_eq!(counters.len(), 1, "{counters:?}");
    assert_eq!(counters[0].0, "hits");
    assert!(counters[0].1 >= 1 && counters[0].2 >= 84, "{counters:?}");
    assert!(dp.nft_counters("inet", "weft_none").await.unwrap().is_empty());
    // Replacing the table (periodic drift repair) keeps named counters' values.
    dp.apply_nft("inet", "weft_t", v3).await.unwrap();
    assert_eq!(dp.nft_counters("inet", "weft_t").await.unwrap(), counters);

    // The root namespace never saw it.
    assert!(!weft_e2e::run("nft", &["list", "tables"]).contains("weft_t"));

    dp.delete_nft("inet", "weft_t").await.unwrap();
    assert!(!ns.exec("nft", &["list", "tables"]).contains("weft_t"));
    dp.delete_nft("inet", "weft_t").await.unwrap();
}
