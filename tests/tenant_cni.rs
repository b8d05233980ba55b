//! End-to-end tests of the plugin's side of tenant networks (issue 11): the built `weft` binary exec'd as a
//! runtime does, in a throwaway node namespace whose node file (hand-written: no agent here) lists two networks
//! with the same CIDRs beside the default one. Pods of namespace team-a land on blue, team-b on red, any other
//! namespace on the default network. Connectivity across nodes and the isolation firewall are other tests'.
#[path = "cni/kit.rs"]
mod kit;
#[path = "tenant_cni/net.rs"]
mod net;

use kit::{finish, ping, with_prev};
use net::{Net, TenantNode, BLUE, DEFAULT_NS, RED};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};
use weft_e2e::{require_root, wait_until, Netns};

fn dev_routes(t: &TenantNode, table: &str) -> Vec<String> {
    let mut v: Vec<String> = [false, true]
        .iter()
        .flat_map(|v6| {
            t.routes(table, *v6)
                .lines()
                .filter(|l| l.contains(" dev wf"))
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

/// Two networks with the same CIDR and the default one on one node: equal addresses, own tables and groups,
/// src_valid_mark, the network's MTU; the default pod exactly as before; CHECK; a same-network pair talks
/// through its table once the agent's mark rules exist (written by hand here), other pairs do not; DEL
/// removes routes, veth and reservation from the right network only.
#[test]
fn same_cidr_networks_beside_the_default_one() {
    if !require_root() {
        return;
    }
    let t = TenantNode::new("n");
    let (a1, a2, b1, d1) = (t.node.pod(1), t.node.pod(2), t.node.pod(3), t.node.pod(4));
    let ra1 = t.weft("ADD", "a1", Some(&a1), BLUE.ns, &t.conf).expect_ok().json();
    let ra2 = t.weft("ADD", "a2", Some(&a2), BLUE.ns, &t.conf).expect_ok().json();
    let rb1 = t.weft("ADD", "b1", Some(&b1), RED.ns, &t.conf).expect_ok().json();
    let rd1 = t.weft("ADD", "d1", Some(&d1), DEFAULT_NS, &t.conf).expect_ok().json();
    let ip = |r: &serde_json::Value, i: usize| {
        r["ips"][i]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
    };
    assert_eq!((ip(&ra1, 0), ip(&ra1, 1)), ("10.77.1.2".to_string(), "fd00:77:0:1::2".to_string()));
    assert_eq!(ip(&ra2, 0), "10.77.1.3");
    assert_eq!(rb1["ips"], ra1["ips"], "red's first pod gets blue's first pod's addresses");
    assert_eq!(ip(&rd1, 0), "10.126.0.2", "the default network's pool is untouched by the networks");
    assert_eq!(ra1["routes"], json!([{"dst":"0.0.0.0/0","gw":"10.77.1.1"},{"dst":"::/0","gw":"fd00:77:0:1::1"}]));
    let (va1, va2, vb1, vd1) = (
        TenantNode::host_veth(&ra1),
        TenantNode::host_veth(&ra2),
        TenantNode::host_veth(&rb1),
        TenantNode::host_veth(&rd1),
    );

    // Host routes: each network's pods in its own table, none in main; the default pod in main as before.
    let main4 = t.routes("main", false);
    assert!(!main4.contains("10.77."), "tenant routes leaked into main: {main4}");
    assert!(main4.contains(&format!("10.126.0.2 dev {vd1} scope link")), "{main4}");
    assert!(!t.routes("main", true).contains("fd00:77:"), "{}", t.routes("main", true));
    let blue = BLUE.id.to_string();
    let red = RED.id.to_string();
    assert_eq!(
        dev_routes(&t, &blue),
        vec![
            format!("10.77.1.2 dev {va1} scope link"),
            format!("10.77.1.3 dev {va2} scope link"),
            format!("fd00:77:0:1::2 dev {va1} metric 1024 pref medium"),
            format!("fd00:77:0:1::3 dev {va2} metric 1024 pref medium"),
        ]
    );
    assert_eq!(
        dev_routes(&t, &red),
        vec![format!("10.77.1.2 dev {vb1} scope link"), format!("fd00:77:0:1::2 dev {vb1} metric 1024 pref medium")]
    );

    // Link groups, src_valid_mark, MTU.
    let mut in_blue = t.links_in_group(BLUE.id);
    in_blue.sort();
    let mut want = vec![va1.clone(), va2.clone()];
    want.sort();
    assert_eq!(in_blue, want);
    assert_eq!(t.links_in_group(RED.id), vec![vb1.clone()]);
    assert!(t.links_in_group(0).contains(&vd1), "the default pod's veth stays in group 0");
    for v in [&va1, &va2, &vb1] {
        assert_eq!(t.node.sysctl(&format!("net.ipv4.conf.{v}.src_valid_mark")), "1", "{v}");
        assert_eq!(t.node.sysctl(&format!("net.ipv4.conf.{v}.rp_filter")), "1", "{v}");
    }
    assert_eq!(t.node.sysctl(&format!("net.ipv4.conf.{vd1}.src_valid_mark")), "0", "default pod as before");
    assert!(a1.ip(&["link", "show", "eth0"]).contains(&format!("mtu {}", BLUE.mtu)));
    assert!(b1.ip(&["link", "show", "eth0"]).contains(&format!("mtu {}", RED.mtu)));
    assert!(d1.ip(&["link", "show", "eth0"]).contains("mtu 1450"));
    assert!(t.node.ns.ip(&["link", "show", &va1]).contains(&format!("mtu {}", BLUE.mtu)));

    for (cid, pod, ns, r) in [("a1", &a1, BLUE.ns, &ra1), ("b1", &b1, RED.ns, &rb1), ("d1", &d1, DEFAULT_NS, &rd1)] {
        let chk = t.weft("CHECK", cid, Some(pod), ns, &with_prev(&t.conf, r));
        assert!(chk.ok && chk.stdout.is_empty(), "CHECK {cid}: {chk:?}");
    }

    // What the agent programs (design note): the network's mark from its veths' group, a rule from the mark to
    // its table, and an unreachable end for its CIDRs. By hand here, to show the plugin's part carries traffic.
    let mark = |n: Net| format!("{:#x}", (n.vni & 0xff) << 24);
    let nft = format!(
        "add table inet tt; add chain inet tt pre {{ type filter hook prerouting priority -350; }}; \
         add rule inet tt pre iifgroup {} meta mark set {}; add rule inet tt pre iifgroup {} meta mark set {}",
        BLUE.id,
        mark(BLUE),
        RED.id,
        mark(RED)
    );
    t.node.ns.exec("nft", &[&nft]);
    for n in [BLUE, RED] {
        let (table, fwmark) = (n.id.to_string(), format!("{}/0xff000000", mark(n)));
        for fam in ["-4", "-6"] {
            t.node.ns.ip(&[fam, "rule", "add", "pref", "1000", "fwmark", &fwmark, "lookup", &table]);
        }
        t.node.ns.ip(&["route", "add", "unreachable", "10.77.0.0/16", "table", &table]);
        t.node.ns.ip(&["-6", "route", "add", "unreachable", "fd00:77::/48", "table", &table]);
    }
    for dst in ["10.77.1.3", "fd00:77:0:1::3"] {
        assert!(ping(&a1, dst), "a1 -> a2 {dst} through blue's table");
    }
    assert!(ping(&a2, "10.77.1.2"), "a2 -> a1: blue's 10.77.1.2 is a1, not b1");
    assert!(!ping(&b1, "10.77.1.3"), "red has no 10.77.1.3: b1 must not reach blue's a2");
    assert!(ping(&d1, kit::NODE_IP), "the default pod itself works");
    assert!(!ping(&d1, "10.77.1.2") && !ping(&d1, "10.77.1.3"), "a default pod reaches no tenant pod");
    // src_valid_mark is what makes strict rp_filter accept a tenant pod's source at all.
    t.node.ns.exec("sysctl", &["-qw", &format!("net.ipv4.conf.{va1}.src_valid_mark=0")]);
    assert!(!ping(&a1, "10.77.1.3"), "without src_valid_mark the reverse-path lookup misses blue's table");
    t.node.ns.exec("sysctl", &["-qw", &format!("net.ipv4.conf.{va1}.src_valid_mark=1")]);
    assert!(ping(&a1, "10.77.1.3"));

    // DEL a1: its routes leave blue's table, its reservation blue's pool; red's equal address stays.
    t.weft("DEL", "a1", Some(&a1), BLUE.ns, &t.conf).expect_ok();
    assert!(!ping(&a2, "10.77.1.2"), "a1 is cut off as soon as DEL returns");
    // Detached synchronously into the reap group (the reaper's batch delete), out of blue's group at once.
    assert!(!t.links_in_group(BLUE.id).contains(&va1), "{:?}", t.links_in_group(BLUE.id));
    assert!(!dev_routes(&t, &blue).iter().any(|r| r.contains(&va1)), "{:?}", dev_routes(&t, &blue));
    assert_eq!(dev_routes(&t, &red).len(), 2);
    assert_eq!(t.reservations(Some(BLUE)), vec!["10.77.1.3", "fd00:77:0:1::3"]);
    assert_eq!(t.reservations(Some(RED)), vec!["10.77.1.2", "fd00:77:0:1::2"]);
    assert_eq!(t.reservations(None), vec!["10.126.0.2", "fd00:126::2"]);
    assert!(wait_until(Duration::from_secs(10), || !t.node.weft_links().contains(&va1)), "{va1} not reaped");
    assert_eq!(t.links_in_group(RED.id), vec![vb1.clone()], "red untouched");

    // CHECK looks in the network's table: b1's route moved to main is found.
    t.node.ns.ip(&["route", "del", "10.77.1.2", "dev", &vb1, "table", &red]);
    t.node.ns.ip(&["route", "add", "10.77.1.2", "dev", &vb1, "scope", "link"]);
    let chk = t.weft("CHECK", "b1", Some(&b1), RED.ns, &with_prev(&t.conf, &rb1));
    assert_eq!(chk.code(), 102, "{chk:?}");
    let details = chk.json()["details"].as_str().unwrap().to_string();
    assert!(
        details.contains(&format!("route 10.77.1.2/32 dev {vb1} is missing from table {:#x}", RED.id)),
        "{details}"
    );

    // DEL without namespace or netns, after the networks left the node file: still from the right pool.
    std::fs::write(t.node.data.path().join("node.json"), r#"{"subnet":"10.126.0.0/24","mtu":1450}"#).unwrap();
    t.weft("DEL", "b1", None, "", &t.conf).expect_ok();
    assert!(t.reservations(Some(RED)).is_empty());
    assert_eq!(t.reservations(Some(BLUE)).len(), 2, "a2 keeps its addresses");
    let chk = t.weft("CHECK", "a2", Some(&a2), BLUE.ns, &with_prev(&t.conf, &ra2));
    assert!(chk.ok, "CHECK goes by the record once the network left the node file: {chk:?}");
    for (cid, pod, ns) in [("a2", &a2, BLUE.ns), ("d1", &d1, DEFAULT_NS)] {
        t.weft("DEL", cid, Some(pod), ns, &t.conf).expect_ok();
    }
    assert!(t.files(Some(BLUE)).is_empty() && t.files(Some(RED)).is_empty() && t.files(None).is_empty());
    assert!(t.node.wait_no_links(), "left: {:?}", t.node.weft_links());
    assert!(dev_routes(&t, &blue).is_empty() && dev_routes(&t, &red).is_empty());
}

/// 20 pods over the 3 networks, every ADD at once, then every DEL at once: equal addresses across the two
/// same-CIDR networks, distinct within each; afterwards no reservation, index, veth or route anywhere.
#[test]
fn parallel_add_del_across_three_networks_leaves_nothing() {
    if !require_root() {
        return;
    }
    let t = TenantNode::new("p");
    let nets = [BLUE.ns, RED.ns, DEFAULT_NS];
    let pods: Vec<(String, Netns, &str)> = (0..20).map(|i| (format!("par{i}"), t.node.pod(i), nets[i % 3])).collect();
    let go = |verb: &str| -> Vec<kit::Res> {
        let children: Vec<_> = pods.iter().map(|(cid, p, ns)| t.spawn(verb, cid, Some(p), ns, |c| c)).collect();
        children.into_iter().map(|c| finish(c, &t.conf)).collect()
    };
    let adds: Vec<kit::Res> = go("ADD").into_iter().map(kit::Res::expect_ok).collect();
    let by_ns = |ns: &str| -> BTreeSet<String> {
        adds.iter().zip(&pods).filter(|(_, p)| p.2 == ns).flat_map(|(r, _)| [r.ip(false), r.ip(true)]).collect()
    };
    let (a, b, d) = (by_ns(BLUE.ns), by_ns(RED.ns), by_ns(DEFAULT_NS));
    assert_eq!((a.len(), b.len(), d.len()), (14, 14, 12), "distinct within each network");
    assert_eq!(a, b, "the same 7 addresses of the same CIDR in blue and in red");
    assert!(d.iter().all(|ip| ip.starts_with("10.126.0.") || ip.starts_with("fd00:126::")), "{d:?}");
    assert_eq!(
        (t.reservations(Some(BLUE)).len(), t.reservations(Some(RED)).len(), t.reservations(None).len()),
        (14, 14, 12)
    );
    assert_eq!((t.links_in_group(BLUE.id).len(), t.links_in_group(RED.id).len()), (7, 7));
    assert_eq!((dev_routes(&t, &BLUE.id.to_string()).len(), dev_routes(&t, &RED.id.to_string()).len()), (14, 14));

    for r in go("DEL") {
        r.expect_ok();
    }
    for n in [Some(BLUE), Some(RED), None] {
        assert_eq!(t.files(n), Vec::<String>::new(), "no reservation, index or temp file left");
    }
    assert!(t.node.wait_no_links(), "left: {:?}", t.node.weft_links());
    for table in [BLUE.id.to_string(), RED.id.to_string(), "main".into()] {
        assert!(dev_routes(&t, &table).is_empty(), "table {table}: {:?}", dev_routes(&t, &table));
    }
}

/// A tiny xorshift so the kill points vary per run but can be replayed from the printed seed.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// SIGKILL at random points of tenant ADDs (blue and red alternating), then DEL (every other round) or GC:
/// only the survivor's veth, routes and reservations remain, in its own pool; nothing in any other pool.
#[test]
fn killed_tenant_add_leaves_nothing_after_del_or_gc() {
    if !require_root() {
        return;
    }
    let t = TenantNode::new("k");
    let survivor = t.node.pod(99);
    t.weft("ADD", "warm", Some(&survivor), BLUE.ns, &t.conf).expect_ok();
    t.weft("DEL", "warm", Some(&survivor), BLUE.ns, &t.conf).expect_ok();
    let t0 = std::time::Instant::now();
    let kept = t.weft("ADD", "survivor", Some(&survivor), BLUE.ns, &t.conf).expect_ok();
    let span = t0.elapsed().as_micros() as u64 * 6 / 5 / 16 + 1;
    let mut seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill-point seed {seed}");
    let (mut before_any, mut midway, mut completed) = (0, 0, 0);
    let state = || t.reservations(Some(BLUE)).len() + t.reservations(Some(RED)).len() + t.node.weft_links().len();
    for round in 0..16u64 {
        let pod = t.node.pod(round as usize);
        let (cid, ns) = (format!("k{round}"), if round % 4 < 2 { BLUE.ns } else { RED.ns });
        let before = state();
        let ok = t.spawn("ADD", &cid, Some(&pod), ns, |mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(t.conf.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_micros(round * span + rng(&mut seed) % span));
            let _ = child.kill();
            child.wait().unwrap().success()
        });
        match (ok, state() > before) {
            (true, _) => completed += 1,
            (false, true) => midway += 1,
            (false, false) => before_any += 1,
        }
        if round % 2 == 1 {
            t.weft("DEL", &cid, Some(&pod), ns, &t.conf).expect_ok();
        }
    }
    eprintln!("kill -9 during tenant ADD: {before_any} before any change, {midway} midway, {completed} completed");
    assert!(midway > 0, "no kill landed inside an ADD; the test proved nothing");
    let mut gc: serde_json::Value = serde_json::from_str(&t.conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "survivor", "ifname": "eth0"}]);
    let gc = gc.to_string();
    t.node.weft_at("GC", "", None, &gc).expect_ok();
    let mut want = vec![kept.ip(false), kept.ip(true)];
    want.sort();
    assert_eq!(t.reservations(Some(BLUE)), want, "only the survivor's addresses remain");
    assert_eq!(t.files(Some(BLUE)).len(), 4, "2 reservations + 2 index entries: {:?}", t.files(Some(BLUE)));
    assert!(t.files(Some(RED)).is_empty() && t.files(None).is_empty(), "{:?} {:?}", t.files(Some(RED)), t.files(None));
    assert!(
        wait_until(Duration::from_secs(10), || t.node.weft_links().len() == 1),
        "only the survivor's veth remains: {:?}",
        t.node.weft_links()
    );
    assert_eq!(dev_routes(&t, &BLUE.id.to_string()).len(), 2, "{:?}", dev_routes(&t, &BLUE.id.to_string()));
    assert!(dev_routes(&t, &RED.id.to_string()).is_empty());
    let chk = t.weft("CHECK", "survivor", Some(&survivor), BLUE.ns, &with_prev(&t.conf, &kept.json()));
    assert!(chk.ok, "GC did not touch the valid attachment: {chk:?}");
}

/// A hostile entry for the pod's namespace (subnet outside the network's CIDR): error 5, no veth, no
/// reservation in any pool; the other namespaces are served.
#[test]
fn hostile_node_file_entry_changes_nothing_on_the_node() {
    if !require_root() {
        return;
    }
    let t = TenantNode::new("h");
    let nf = t.node.data.path().join("node.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&nf).unwrap()).unwrap();
    file["networks"][0]["subnet"] = json!("10.78.1.0/24");
    std::fs::write(&nf, file.to_string()).unwrap();
    let (p1, p2) = (t.node.pod(1), t.node.pod(2));
    let r = t.weft("ADD", "h1", Some(&p1), BLUE.ns, &t.conf);
    assert_eq!(r.code(), 5, "{r:?}");
    assert!(r.json()["msg"].as_str().unwrap().contains("not inside the network's cidr"), "{r:?}");
    assert!(t.node.weft_links().is_empty() && t.files(None).is_empty() && t.files(Some(BLUE)).is_empty());
    assert!(p1.ip(&["-o", "link"]).lines().count() == 1, "only lo in the pod");
    t.weft("ADD", "h2", Some(&p2), RED.ns, &t.conf).expect_ok();
    t.weft("DEL", "h1", Some(&p1), BLUE.ns, &t.conf).expect_ok();
    t.weft("DEL", "never-added", None, RED.ns, &t.conf).expect_ok();
    assert_eq!(t.reservations(Some(RED)).len(), 2);
}

/// A retried ADD after the pod's namespace left its network (node file rewritten by the agent): the veth is
/// recreated on the default network (group 0, route in main), and blue's pool and table hold nothing of it.
#[test]
fn retried_add_after_the_namespace_moved_network() {
    if !require_root() {
        return;
    }
    let t = TenantNode::new("m");
    let pod = t.node.pod(1);
    let first = t.weft("ADD", "mv", Some(&pod), BLUE.ns, &t.conf).expect_ok().json();
    let veth = TenantNode::host_veth(&first);
    assert_eq!(t.links_in_group(BLUE.id), vec![veth.clone()]);
    let nf = t.node.data.path().join("node.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&nf).unwrap()).unwrap();
    file["networks"][0]["namespaces"] = json!(["someone-else"]);
    std::fs::write(&nf, file.to_string()).unwrap();
    let again = t.weft("ADD", "mv", Some(&pod), BLUE.ns, &t.conf).expect_ok();
    assert_eq!(again.ip(false), "10.126.0.2");
    assert!(t.links_in_group(0).contains(&veth) && t.links_in_group(BLUE.id).is_empty());
    assert!(t.files(Some(BLUE)).is_empty(), "{:?}", t.files(Some(BLUE)));
    assert_eq!(t.reservations(None), vec!["10.126.0.2", "fd00:126::2"]);
    assert!(dev_routes(&t, &BLUE.id.to_string()).is_empty());
    assert!(t.routes("main", false).contains(&format!("10.126.0.2 dev {veth} scope link")));
    assert!(ping(&pod, kit::NODE_IP), "the pod works on the default network");
    assert_eq!(t.node.sysctl(&format!("net.ipv4.conf.{veth}.src_valid_mark")), "0", "a new veth, default settings");
    t.weft("DEL", "mv", Some(&pod), BLUE.ns, &t.conf).expect_ok();
    assert!(t.files(None).is_empty() && t.node.wait_no_links());
}
