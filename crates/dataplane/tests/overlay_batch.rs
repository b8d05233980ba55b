//! The batcher against the real kernel: chunk boundaries anywhere (down to one request per datagram), failures in
//! the middle of a chunk reported for exactly the right ops, and `NetlinkDataplane::new` bound to the calling
//! thread's namespace.
use std::net::IpAddr;
use weft_dataplane::diff::diff;
use weft_dataplane::netlink::NetlinkDataplane;
use weft_dataplane::netns::{run_in, NetnsHandle};
use weft_dataplane::*;
use weft_e2e::{require_root, unique, Netns};

fn node() -> Netns {
    let ns = Netns::new(format!("wdb{}", unique()));
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", "192.168.77.1/24", "dev", "u0"]);
    ns.ip(&["link", "set", "u0", "up"]);
    ns.ip(&["link", "set", "u1", "up"]);
    ns
}

async fn vxlan(dp: &NetlinkDataplane) -> u32 {
    let under = dp.underlay("192.168.77.1".parse().unwrap()).await.unwrap();
    let spec = VxlanSpec {
        name: "vx".into(),
        vni: 1,
        port: 8472,
        local: "192.168.77.1".parse().unwrap(),
        underlay_ifindex: under.ifindex,
        mtu: 1450,
        address: None,
        address6: None,
    };
    dp.ensure_vxlan(&spec).await.unwrap().ifindex
}

fn peers(vx: u32, n: u32) -> OverlayState {
    let mut s = OverlayState::default();
    for i in 0..n {
        let gw = IpAddr::from([10, 100 + (i / 256) as u8, (i % 256) as u8, 0]);
        let mac = [2, 0xbb, 0, 0, (i >> 8) as u8, i as u8];
        s.add_neigh(Neigh { ifindex: vx, ip: gw, mac });
        s.add_fdb(Fdb { ifindex: vx, mac, dst: IpAddr::from([192, 168, 1 + (i / 250) as u8, 1 + (i % 250) as u8]) });
        s.add_nexthop(Nexthop { id: i + 1, gateway: gw, ifindex: vx, onlink: true });
        s.add_route(Route { dst: ipnet::IpNet::new(gw, 24).unwrap(), target: RouteTarget::Nexthop(i + 1) });
    }
    s
}

#[tokio::test]
async fn any_chunk_size_converges_and_failures_are_pinned_to_their_op() {
    if !require_root() {
        return;
    }
    let ns = node();
    let dp = NetlinkDataplane::in_netns(&NetnsHandle::open(&ns.path()).unwrap()).unwrap();
    let vx = vxlan(&dp).await;
    let scope = Scope { vxlan_ifindex: Some(vx) };
    // 1 byte: one request per datagram; 300: a few per datagram, boundaries everywhere; default: 64 KiB.
    for (bytes, n) in [(1, 50), (300, 400), (64 << 10, 1500)] {
        dp.set_batch_bytes(bytes);
        let want = peers(vx, n);
        let ops = diff(&want, &dp.read_state(&scope).await.unwrap());
        let report = dp.apply(&ops).await.unwrap();
        assert!(report.failed.is_empty(), "batch {bytes}: {:?}", &report.failed[..1]);
        assert_eq!(dp.read_state(&scope).await.unwrap(), want, "batch {bytes}");
        let routes = ns.ip(&["route", "show", "proto", "201"]);
        assert_eq!(routes.lines().count(), n as usize, "batch {bytes}");

        // Bad requests among good ones, in one chunk: exactly those fail, everything after them still applies.
        let gw = IpAddr::from([10, 250, 0, 0]);
        let good =
            |k: u8| Op::AddNeigh(Neigh { ifindex: vx, ip: IpAddr::from([10, 250, 0, k]), mac: [2, 0, 0, 0, 0, k] });
        let no_nexthop =
            Op::AddRoute(Route { dst: "10.250.0.0/24".parse().unwrap(), target: RouteTarget::Nexthop(9999) });
        let no_link = Op::AddNeigh(Neigh { ifindex: 9999, ip: gw, mac: [2, 0, 0, 0, 0, 9] });
        let ops = vec![good(1), no_nexthop, good(2), no_link, good(3)];
        let report = dp.apply(&ops).await.unwrap();
        assert_eq!(report.applied, 3, "batch {bytes}: {report:?}");
        let failed: Vec<_> = report.failed.iter().map(|(op, _)| op.clone()).collect();
        assert_eq!(failed, vec![ops[1].clone(), ops[3].clone()], "batch {bytes}");
        assert!(report.failed.iter().all(|(_, msg)| !msg.is_empty()));
        let neigh = ns.ip(&["neigh", "show", "dev", "vx"]);
        assert!((1..=3).all(|k| neigh.contains(&format!("10.250.0.{k} "))), "{neigh}");
        let cleanup: Vec<Op> = (1..=3)
            .map(|k| match good(k) {
                Op::AddNeigh(n) => Op::DelNeigh(n),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(dp.apply(&cleanup).await.unwrap().applied, 3);
    }
    // And back to empty through the smallest chunks.
    dp.set_batch_bytes(1);
    let ops = diff(&OverlayState::default(), &dp.read_state(&scope).await.unwrap());
    assert!(dp.apply(&ops).await.unwrap().failed.is_empty());
    assert!(dp.read_state(&scope).await.unwrap().is_empty());
}

#[tokio::test]
async fn new_binds_to_the_calling_threads_namespace() {
    if !require_root() {
        return;
    }
    let ns = node();
    let dp = run_in(&NetnsHandle::open(&ns.path()).unwrap(), NetlinkDataplane::new).unwrap().unwrap();
    // Used from the test's own thread (root namespace), it still sees the node namespace.
    let under = dp.underlay("192.168.77.1".parse().unwrap()).await.unwrap();
    assert_eq!(under.name, "u0");
    let table = format!("wnew{}", unique());
    dp.apply_nft("inet", &table, &format!("table inet {table} {{\n}}")).await.unwrap();
    assert!(ns.exec("nft", &["list", "tables"]).contains(&table));
    assert!(!weft_e2e::run("nft", &["list", "tables"]).contains(&table));
    dp.delete_nft("inet", &table).await.unwrap();
}

#[test]
fn lost_answers_are_recovered_by_resending_smaller_chunks() {
    use weft_dataplane::netlink::{socket::*, wire};
    if !require_root() {
        return;
    }
    let ns = node();
    let mut sock = run_in(&NetnsHandle::open(&ns.path()).unwrap(), NlSocket::open).unwrap().unwrap();
    // A receive buffer far too small for 300 error answers: the kernel drops most and reports ENOBUFS.
    sock.set_receive_buffer(1).unwrap();
    let mut batch = Batch::default();
    for i in 0..300u32 {
        let gone = Neigh { ifindex: 1, ip: IpAddr::from([10, 9, (i >> 8) as u8, i as u8]), mac: [0; 6] };
        batch.push(|b, seq| wire::del_neigh(b, seq, &gone));
    }
    let results = sock.execute(batch);
    assert_eq!(results.len(), 300);
    let enoent = results.iter().filter(|r| matches!(r, Err(e) if e.errno() == Some(libc::ENOENT))).count();
    assert_eq!(enoent, 300, "every failure reported despite lost answers: {:?}", results.iter().find(|r| r.is_ok()));
}
