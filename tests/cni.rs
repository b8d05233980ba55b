//! End-to-end tests of the `weft` CNI plugin: the built binary is invoked exactly as a runtime does (CNI_* env,
//! config on stdin) inside a throwaway "node" namespace, against throwaway pod namespaces, as root.
//! Chaining with Debian's reference plugins lives in `cni/chain.rs`, crash/GC/parallel tests in `cni/stress.rs`.
#[path = "cni/chain.rs"]
mod chain;
#[path = "cni/kit.rs"]
mod kit;
#[path = "cni/stress.rs"]
mod stress;

use kit::{ping, with_prev, Node, NODE_IP, NODE_IP6};
use serde_json::{json, Value};
use weft_e2e::require_root;

#[test]
fn version_status_and_version_gates() {
    if !require_root() {
        return;
    }
    let node = Node::new("v");
    let v = node.weft_at("VERSION", "", None, r#"{"cniVersion":"0.4.0"}"#).expect_ok().json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));

    let st = node.weft_at("STATUS", "", None, &node.static_conf("1.1.0", false)).expect_ok();
    assert!(st.stdout.is_empty());
    let nf = node.data.path().join("node.json");
    let agent_conf = node.conf("1.1.0", json!({"nodeFile": nf}));
    assert_eq!(node.weft_at("STATUS", "", None, &agent_conf).code(), 50, "no node file yet");
    std::fs::write(&nf, r#"{"subnet":"10.124.0.0/24","mtu":1450}"#).unwrap();
    node.weft_at("STATUS", "", None, &agent_conf).expect_ok();

    assert_eq!(node.weft_at("STATUS", "", None, &node.static_conf("1.0.0", false)).code(), 1);
    let gc = node.conf("1.0.0", json!({"cni.dev/valid-attachments": []}));
    assert_eq!(node.weft_at("GC", "", None, &gc).code(), 1);
}

/// Two dual-stack pods: addresses, routes, MTU, forwarding; pod↔pod and pod↔node both families; CHECK; DEL.
#[test]
fn dual_stack_pods_reach_each_other_and_the_node() {
    if !require_root() {
        return;
    }
    let node = Node::new("d");
    let conf = node.static_conf("1.1.0", true);
    let (a, b) = (node.pod(1), node.pod(2));
    let ra = node.weft("ADD", "ctr-a", Some(&a), &conf).expect_ok();
    let rb = node.weft("ADD", "ctr-b", Some(&b), &conf).expect_ok();
    let j = ra.json();
    assert_eq!(j["cniVersion"], "1.1.0");
    assert_eq!(j["interfaces"][1]["name"], "eth0");
    assert_eq!(j["interfaces"][1]["sandbox"], a.path().display().to_string());
    assert!(j["interfaces"][0].get("sandbox").is_none(), "host veth listed without sandbox");
    assert_eq!(j["ips"][0]["gateway"], "10.123.0.1");
    assert_eq!(j["routes"], json!([{"dst":"0.0.0.0/0","gw":"10.123.0.1"},{"dst":"::/0","gw":"fd00:123::1"}]));
    assert_eq!(node.sysctl("net.ipv4.ip_forward"), "1");
    assert_eq!(node.sysctl("net.ipv6.conf.all.forwarding"), "1");

    let (a4, a6, b4, b6) = (ra.ip(false), ra.ip(true), rb.ip(false), rb.ip(true));
    assert_ne!(a4, b4);
    let eth0 = a.ip(&["-d", "addr", "show", "eth0"]);
    assert!(eth0.contains(&format!("inet {a4}/32")) && eth0.contains(&format!("inet6 {a6}/128")), "{eth0}");
    assert!(eth0.contains("mtu 1500") && eth0.contains("veth"), "{eth0}");
    let routes = a.ip(&["route", "show"]);
    assert!(routes.contains("default via 10.123.0.1 dev eth0 proto 201 onlink"), "{routes}");
    assert!(a.ip(&["neigh", "show"]).contains("10.123.0.1 dev eth0 lladdr"), "permanent gateway neighbour");
    let host = node.ns.ip(&["route", "show", &format!("{a4}/32")]);
    assert!(host.contains("scope link"), "{host}");

    // Routed, not bridged: pod-to-pod packets on one node must cross the node's netfilter forward hook.
    node.ns.exec("nft", &["add table inet wt; add chain inet wt fw { type filter hook forward priority 0; }"]);
    node.ns.exec("nft", &["add", "rule", "inet", "wt", "fw", "ip", "saddr", &a4, "ip", "daddr", &b4, "counter"]);
    node.ns.exec("nft", &["add", "rule", "inet", "wt", "fw", "ip6", "saddr", &a6, "ip6", "daddr", &b6, "counter"]);
    for (from, to) in [(&a, &b4), (&a, &b6), (&b, &a4), (&b, &a6)] {
        assert!(ping(from, to), "{} -> {to}", from.name);
    }
    let counters = node.ns.exec("nft", &["list", "chain", "inet", "wt", "fw"]);
    assert_eq!(counters.matches("counter packets 0 ").count(), 0, "both rules counted a packet: {counters}");
    assert_eq!(counters.matches("counter packets").count(), 2, "{counters}");
    for dst in [NODE_IP, NODE_IP6] {
        assert!(ping(&a, dst), "pod -> node {dst}");
    }
    assert!(ping(&node.ns, &b4) && ping(&node.ns, &b6), "node -> pod");

    let check = with_prev(&conf, &ra.json());
    assert!(node.weft("CHECK", "ctr-a", Some(&a), &check).expect_ok().stdout.is_empty());

    node.weft("DEL", "ctr-a", Some(&a), &conf).expect_ok();
    assert!(!ping(&b, &a4), "a is cut off as soon as DEL returns");
    node.weft("DEL", "ctr-a", Some(&a), &conf).expect_ok();
    let gone = b.path().display().to_string();
    drop(b); // the namespace is gone: DEL must still succeed and release everything
    node.weft_at("DEL", "ctr-b", Some(&gone), &conf).expect_ok();
    assert!(node.reservations().is_empty());
    assert!(node.wait_no_links(), "host veths left: {:?}", node.weft_links());
}

/// Node-file mode (what weftd provides): subnet and MTU from the file, result in an old spec version.
#[test]
fn node_file_mode_with_old_spec_version() {
    if !require_root() {
        return;
    }
    let node = Node::new("f");
    let nf = node.data.path().join("node.json");
    let conf = node.conf("0.3.1", json!({"nodeFile": nf}));
    let pod = node.pod(1);
    assert_eq!(node.weft("ADD", "c1", Some(&pod), &conf).code(), 11, "no node file yet: try again later");
    assert!(node.reservations().is_empty());
    std::fs::write(&nf, r#"{"subnet":"10.125.7.0/24","mtu":1450}"#).unwrap();
    let r = node.weft("ADD", "c1", Some(&pod), &conf).expect_ok().json();
    assert_eq!(r["cniVersion"], "0.3.1");
    assert_eq!(r["ips"][0], json!({"version":"4","address":"10.125.7.2/32","gateway":"10.125.7.1","interface":1}));
    assert!(pod.ip(&["link", "show", "eth0"]).contains("mtu 1450"));
    assert!(ping(&pod, NODE_IP));
    assert!(node.weft("CHECK", "c1", Some(&pod), &with_prev(&conf, &r)).code() == 1, "no CHECK before 0.4.0");
    node.weft("DEL", "c1", Some(&pod), &conf).expect_ok();
    assert!(node.reservations().is_empty());
}

/// Every error path: the right code, and nothing changed on the node.
#[test]
fn error_codes_change_nothing() {
    if !require_root() {
        return;
    }
    let node = Node::new("e");
    let pod = node.pod(1);
    let good = node.static_conf("1.0.0", false);
    let p = pod.path().display().to_string();
    let bin = kit::weft_bin();
    let env = |skip: &str| -> Vec<(&str, &str)> {
        [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", p.as_str())]
            .into_iter()
            .filter(|(k, _)| *k != skip)
            .collect()
    };
    for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
        assert_eq!(node.run(&bin, &env(var), &good).code(), 4, "without {var}");
    }
    let mut bad_if = env("CNI_IFNAME");
    bad_if.push(("CNI_IFNAME", "much-too-long-name"));
    assert_eq!(node.run(&bin, &bad_if, &good).code(), 4);
    let mut bad_cmd = env("CNI_COMMAND");
    bad_cmd.push(("CNI_COMMAND", "ATTACH"));
    assert_eq!(node.run(&bin, &bad_cmd, &good).code(), 4);

    let cases: Vec<(String, u64)> = vec![
        ("{not json".into(), 6),
        (r#"{"cniVersion":"0.2.0","name":"n"}"#.into(), 1),
        (node.conf("1.0.0", json!({"mtu": 20, "ipam": {"subnet": "10.1.0.0/24"}})), 7),
        (node.conf("1.0.0", json!({"ipam": {"subnet": "10.1.0.0/31"}})), 7),
        (node.conf("1.0.0", json!({"ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}})), 7),
        (node.conf("1.0.0", json!({"nodeFile": node.data.path().join("absent.json")})), 11),
    ];
    for (conf, code) in &cases {
        let r = node.weft("ADD", "c1", Some(&pod), conf);
        assert_eq!(r.code(), *code, "{conf}: {r:?}");
        assert!(r.json()["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(node.weft_at("ADD", "c1", Some("/var/run/netns/wc-no-such-ns"), &good).code(), 3);
    assert_eq!(node.weft_at("ADD", "c1", Some("/proc/self/status"), &good).code(), 4, "not a netns");
    // eth0 already taken in the pod by something that is not ours.
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
    let r = node.weft("ADD", "c1", Some(&pod), &good);
    assert_eq!(r.code(), 100, "{r:?}");
    assert!(r.json()["msg"].as_str().unwrap().contains("already exists"));
    assert!(node.reservations().is_empty(), "nothing reserved after failures");
    assert_eq!(node.weft_links(), Vec::<String>::new(), "no veth left after failures");
    // A small subnet runs out: error 101, and the failing ADD leaves no trace.
    pod.ip(&["link", "del", "eth0"]);
    let tiny = node.conf("1.0.0", json!({"ipam": {"subnet": "10.126.0.0/30"}}));
    node.weft("ADD", "c1", Some(&pod), &tiny).expect_ok();
    let pod2 = node.pod(2);
    assert_eq!(node.weft("ADD", "c2", Some(&pod2), &tiny).code(), 101);
    assert_eq!(node.reservations().len(), 1);
    node.weft("DEL", "c1", Some(&pod), &tiny).expect_ok();
}

/// CHECK really looks: each kind of tampering is reported with a message that names it.
#[test]
fn check_detects_tampering() {
    if !require_root() {
        return;
    }
    let node = Node::new("k");
    let conf = node.static_conf("1.1.0", false);
    type Tamper<'a> = (&'a str, &'a dyn Fn(&weft_e2e::Netns, &str, &str));
    let tamper: [Tamper; 5] = [
        ("is missing from eth0", &|p, ip, _| {
            p.ip(&["addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
        }),
        ("default route via 10.123.0.1", &|p, _, _| {
            p.ip(&["route", "del", "default"]);
        }),
        ("interface eth0 is missing", &|p, _, _| {
            p.ip(&["link", "del", "eth0"]);
        }),
        ("is missing on the node", &|_, ip, n| {
            weft_e2e::run("ip", &["-n", n, "route", "del", &format!("{ip}/32")]);
        }),
        ("has MTU 1400, expected 1500", &|p, _, _| {
            p.ip(&["link", "set", "eth0", "mtu", "1400"]);
        }),
    ];
    for (i, (expect, f)) in tamper.iter().enumerate() {
        let pod = node.pod(i);
        let cid = format!("k{i}");
        let r = node.weft("ADD", &cid, Some(&pod), &conf).expect_ok();
        let check = with_prev(&conf, &r.json());
        node.weft("CHECK", &cid, Some(&pod), &check).expect_ok();
        f(&pod, &r.ip(false), &node.ns.name);
        let bad = node.weft("CHECK", &cid, Some(&pod), &check);
        assert_eq!(bad.code(), 102, "{expect}");
        let e: Value = bad.json();
        let text = format!("{} {}", e["msg"], e["details"]);
        assert!(text.contains(expect), "wanted {expect:?} in {text}");
        node.weft("DEL", &cid, Some(&pod), &conf).expect_ok();
    }
}

/// DEL leaves the veth's unregister to a reaper; an ADD right after it in the same namespace (same or another
/// container ID, same CNI_IFNAME) must not trip over the pod end that is still being torn down.
#[test]
fn add_right_after_del_in_the_same_namespace() {
    if !require_root() {
        return;
    }
    let node = Node::new("r");
    let conf = node.static_conf("1.1.0", true);
    let pod = node.pod(1);
    for cid in ["same", "same", "other", "third"] {
        node.weft("ADD", cid, Some(&pod), &conf).expect_ok();
        assert!(ping(&pod, NODE_IP), "{cid}");
        node.weft("DEL", cid, Some(&pod), &conf).expect_ok();
    }
    // The same race made deterministic: a detached (down) weft veth still holds eth0 when the next ADD comes.
    let first = node.weft("ADD", "before", Some(&pod), &conf).expect_ok().json();
    let host = first["interfaces"][0]["name"].as_str().unwrap().to_string();
    node.ns.ip(&["link", "set", &host, "down"]);
    node.weft("ADD", "after", Some(&pod), &conf).expect_ok();
    assert!(ping(&pod, NODE_IP));
    assert!(!node.weft_links().contains(&host), "the detached veth was finished off");
    for cid in ["before", "after"] {
        node.weft("DEL", cid, Some(&pod), &conf).expect_ok();
    }
    assert!(node.reservations().is_empty());
    assert!(node.wait_no_links());
}

#[test]
fn pods_cannot_spoof_another_pods_ipv4_address() {
    if !require_root() {
        return;
    }
    let node = Node::new("s");
    let conf = node.static_conf("1.1.0", false);
    let (a, b, c) = (node.pod(1), node.pod(2), node.pod(3));
    let ra = node.weft("ADD", "ctr-a", Some(&a), &conf).expect_ok();
    let rb = node.weft("ADD", "ctr-b", Some(&b), &conf).expect_ok();
    let rc = node.weft("ADD", "ctr-c", Some(&c), &conf).expect_ok();
    let (a4, b4, c4) = (ra.ip(false), rb.ip(false), rc.ip(false));
    // c counts echo requests that claim to come from b; b itself never pings c in this test.
    c.exec("nft", &["add table inet t; add chain inet t c { type filter hook prerouting priority -300; }"]);
    c.exec("nft", &["add", "rule", "inet", "t", "c", "ip", "saddr", &b4, "icmp", "type", "echo-request", "counter"]);
    // a takes b's address as a second address and sends from it.
    a.ip(&["addr", "add", &format!("{b4}/32"), "dev", "eth0"]);
    let _ = a.try_exec("busybox", &["ping", "-c", "3", "-W", "1", "-I", &b4, &c4]);
    let counted = c.exec("nft", &["list", "chain", "inet", "t", "c"]);
    assert!(counted.contains("counter packets 0 "), "spoofed packets reached c: {counted}");
    assert_eq!(node.sysctl(&format!("net.ipv4.conf.{}.rp_filter", node.weft_links()[0])), "1");
    // Control: with its own address, a reaches c (the filter is not simply dropping everything).
    assert!(ping(&a, &c4), "a -> c with its own address {a4}");
}
