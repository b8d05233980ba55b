//! `diff` against the kernel-like fake: whatever the two states, applying `diff(desired, actual)` to `actual`
//! yields `desired` with no op refused (so the order is safe: no route ever names a missing nexthop), and the fake
//! behaves like the kernel where the agent's tests rely on it.
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};
use weft_dataplane::diff::diff;
use weft_dataplane::fake::FakeDataplane;
use weft_dataplane::*;

/// Small universes so that desired and actual share keys often (the interesting cases: replace, keep, move).
fn ip_strategy() -> impl Strategy<Value = IpAddr> {
    (0u8..6).prop_map(|i| IpAddr::V4(Ipv4Addr::new(10, 244, i, 0)))
}

fn mac_strategy() -> impl Strategy<Value = Mac> {
    (0u8..3).prop_map(|i| [2, 0, 0, 0, 0, i])
}

/// A state the kernel could hold: links 2 and 3 exist, routes only name nexthops of the same state.
fn state_strategy() -> impl Strategy<Value = OverlayState> {
    let neigh = (2u32..4, ip_strategy(), mac_strategy()).prop_map(|(ifindex, ip, mac)| Neigh { ifindex, ip, mac });
    let fdb = (2u32..4, mac_strategy(), ip_strategy()).prop_map(|(ifindex, mac, dst)| Fdb { ifindex, mac, dst });
    let nh = (1u32..6, ip_strategy(), 2u32..4, any::<bool>()).prop_map(|(id, gateway, ifindex, onlink)| Nexthop {
        id,
        gateway,
        ifindex,
        onlink,
    });
    let route = (0u8..6, 1u32..6, prop::option::of(ip_strategy()));
    (
        prop::collection::vec(neigh, 0..6),
        prop::collection::vec(fdb, 0..6),
        prop::collection::vec(nh, 0..5),
        prop::collection::vec(route, 0..6),
    )
        .prop_map(|(neighs, fdbs, nhs, routes)| {
            let mut s = OverlayState::default();
            neighs.into_iter().for_each(|n| s.add_neigh(n));
            fdbs.into_iter().for_each(|f| s.add_fdb(f));
            nhs.into_iter().for_each(|n| s.add_nexthop(n));
            for (net, nh, via) in routes {
                let dst = format!("10.{net}.0.0/16").parse().unwrap();
                let target = match via {
                    Some(gateway) => RouteTarget::Via { gateway, ifindex: 2, onlink: true },
                    None if s.nexthops.contains_key(&nh) => RouteTarget::Nexthop(nh),
                    None => continue,
                };
                s.add_route(Route { dst, target });
            }
            s
        })
}

fn fake_with(state: &OverlayState) -> FakeDataplane {
    let fake = FakeDataplane::new();
    assert_eq!(fake.add_link("eth0", 1500, vec![]), 2);
    assert_eq!(fake.add_link("vx", 1450, vec![]), 3);
    let copy = state.clone();
    fake.tamper(move |s| *s = copy);
    fake
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn applying_the_diff_yields_desired(desired in state_strategy(), actual in state_strategy()) {
        let fake = fake_with(&actual);
        let ops = diff(&desired, &actual);
        let report = block_on(fake.apply(&ops)).unwrap();
        prop_assert!(report.failed.is_empty(), "refused: {:?}", report.failed);
        prop_assert_eq!(fake.state(), desired.clone());
        prop_assert!(diff(&desired, &fake.state()).is_empty());
    }

    #[test]
    fn diff_of_a_state_with_itself_is_empty(s in state_strategy()) {
        prop_assert!(diff(&s, &s).is_empty());
    }

    #[test]
    fn every_op_is_needed(desired in state_strategy(), actual in state_strategy()) {
        // No op is a no-op: each one changes the state it is applied to.
        let fake = fake_with(&actual);
        for op in diff(&desired, &actual) {
            let before = fake.state();
            block_on(fake.apply(std::slice::from_ref(&op))).unwrap();
            prop_assert_ne!(before, fake.state(), "{:?} changed nothing", op);
        }
    }
}

fn spec(vni: u32) -> VxlanSpec {
    VxlanSpec {
        name: "vx".into(),
        vni,
        port: 8472,
        local: "192.168.0.1".parse().unwrap(),
        underlay_ifindex: 2,
        mtu: 1450,
        address: Some("10.244.1.0/32".parse().unwrap()),
        address6: None,
    }
}

#[tokio::test]
async fn fake_behaves_like_the_kernel_where_it_matters() {
    let fake = FakeDataplane::new();
    fake.add_link("eth0", 1500, vec!["192.168.0.1/24".parse().unwrap()]);
    let under = fake.underlay("192.168.0.1".parse().unwrap()).await.unwrap();
    assert_eq!((under.ifindex, under.name.as_str(), under.mtu), (2, "eth0", 1500));
    assert!(fake.underlay("192.168.9.9".parse().unwrap()).await.is_err());

    let vtep = fake.ensure_vxlan(&spec(1)).await.unwrap();
    assert_eq!(fake.ensure_vxlan(&spec(1)).await.unwrap(), vtep, "idempotent");
    assert_eq!(fake.vxlan_creations(), 1);

    let gw: IpAddr = "10.244.2.0".parse().unwrap();
    let nh = Nexthop { id: 1, gateway: gw, ifindex: vtep.ifindex, onlink: true };
    let route = Route { dst: "10.244.2.0/24".parse().unwrap(), target: RouteTarget::Nexthop(1) };
    let neigh = Neigh { ifindex: vtep.ifindex, ip: gw, mac: [2, 0, 0, 0, 0, 1] };
    // A route through a missing nexthop is refused, like the kernel does; the rest still applies.
    let report = fake.apply(&[Op::AddRoute(route), Op::AddNeigh(neigh)]).await.unwrap();
    assert_eq!((report.applied, report.failed.len()), (1, 1));
    fake.apply(&[Op::AddNexthop(nh), Op::AddRoute(route)]).await.unwrap();
    assert_eq!(fake.applied(), vec![Op::AddNeigh(neigh), Op::AddNexthop(nh), Op::AddRoute(route)]);

    // Scope: neighbours of other links are not read.
    let scope = Scope { vxlan_ifindex: Some(vtep.ifindex) };
    assert_eq!(fake.read_state(&scope).await.unwrap().len(), 3);
    assert_eq!(fake.read_state(&Scope { vxlan_ifindex: None }).await.unwrap().len(), 2);

    // Deleting the nexthop takes its route with it.
    fake.apply(&[Op::DelNexthop(nh)]).await.unwrap();
    assert!(fake.state().routes.is_empty());

    // Failure injection and tampering.
    fake.fail_ops_matching(|op| matches!(op, Op::AddNexthop(_)));
    assert_eq!(fake.apply(&[Op::AddNexthop(nh)]).await.unwrap().failed.len(), 1);
    fake.clear_failures();
    fake.tamper(|s| s.neighs.clear());
    assert!(fake.read_state(&scope).await.unwrap().neighs.is_empty());

    // A new VNI recreates the device and the kernel drops everything that was on the old one.
    fake.apply(&[Op::AddNeigh(neigh), Op::AddNexthop(nh), Op::AddRoute(route)]).await.unwrap();
    let recreated = fake.ensure_vxlan(&spec(2)).await.unwrap();
    assert_ne!(recreated.ifindex, vtep.ifindex);
    assert!(fake.state().is_empty());
    fake.remove_link_behind_back("vx");
    assert!(fake.link("vx").is_none());

    fake.apply_nft("inet", "weft", "table inet weft {}").await.unwrap();
    assert_eq!(fake.nft_table("inet", "weft").as_deref(), Some("table inet weft {}"));
    fake.delete_nft("inet", "weft").await.unwrap();
    assert!(fake.nft_table("inet", "weft").is_none());
    assert!(fake.apply_nft("inet", "bad name", "").await.is_err());
}
