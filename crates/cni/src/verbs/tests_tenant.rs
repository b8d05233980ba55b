//! The verbs for pods of tenant networks (fake kernel, real IPAM store): the pool per network, the records,
//! the kernel ids in the plan, DEL/GC/CHECK without the node file, hostile entries changing nothing.
use super::tests::{json, World};
use crate::config::Attachment;
use crate::ipam::IpamStore;
use crate::names;
use weft_dataplane::pod::PodNetwork;
use weft_types::node_file::{NodeFile, NodeNetwork};
use weft_types::tenant::NetworkIds;

fn network(name: &str, vni: u32, ns: &str) -> NodeNetwork {
    NodeNetwork {
        name: name.into(),
        vni,
        subnet: "10.70.3.0/24".parse().unwrap(),
        subnet6: Some("fd00:70:0:3::/80".parse().unwrap()),
        cidr: "10.70.0.0/16".parse().unwrap(),
        cidr6: Some("fd00:70::/48".parse().unwrap()),
        mtu: 1400,
        namespaces: vec![ns.into()],
    }
}

/// The default subnet plus two networks with the same CIDRs.
fn node_file() -> NodeFile {
    NodeFile {
        subnet: "10.60.1.0/24".parse().unwrap(),
        subnet6: None,
        mtu: 1450,
        cluster_cidr: Some("10.60.0.0/16".parse().unwrap()),
        cluster_cidr6: None,
        networks: vec![network("blue", 100, "team-a"), network("red", 200, "team-b")],
        pending_namespaces: vec!["team-c".into()],
    }
}

fn world(tag: &str) -> (World, String) {
    let w = World::new(tag);
    *w.node_file.borrow_mut() = Some(node_file());
    let conf = w.conf("1.1.0", "");
    (w, conf)
}

fn pool(w: &World, net: &str) -> usize {
    IpamStore::open_existing(&w.dir.join(format!("net-{net}"))).map_or(0, |s| s.list().unwrap().len())
}

fn with_prev(conf: &str, result: &str) -> String {
    conf.replacen('{', &format!(r#"{{"prevResult":{result},"#), 1)
}

#[test]
fn namespaces_get_their_networks_pool_table_and_group() {
    let (w, conf) = world("tadd");
    let a = w.call_in("ADD", "ca", "/run/netns/a", &conf, "team-a");
    let b = w.call_in("ADD", "cb", "/run/netns/b", &conf, "team-b");
    let d = w.call_in("ADD", "cd", "/run/netns/d", &conf, "other");
    let (ja, jb, jd) = (json(&a), json(&b), json(&d));
    assert_eq!(ja["ips"][0]["address"], "10.70.3.2/32");
    assert_eq!(jb["ips"], ja["ips"], "same CIDR, separate pools: the same addresses");
    assert_eq!(ja["ips"][1]["address"], "fd00:70:0:3::2/128");
    assert_eq!(ja["routes"][0], serde_json::json!({"dst": "0.0.0.0/0", "gw": "10.70.3.1"}));
    assert_eq!(ja["interfaces"][1]["mtu"], 1400, "the network's MTU");
    assert_eq!(jd["ips"][0]["address"], "10.60.1.2/32", "another namespace: the default network");
    assert_eq!(jd["interfaces"][1]["mtu"], 1450);
    assert_eq!((pool(&w, "blue"), pool(&w, "red"), w.reservations()), (2, 2, 1));

    let links = w.fake.links.borrow();
    let spec = |cid: &str| links[&names::host_veth("tnet", cid, "eth0")].1.clone();
    let ids = NetworkIds::of(100);
    assert_eq!(spec("ca").network, Some(PodNetwork { table: ids.table, group: ids.group }));
    assert_eq!(spec("cb").network.unwrap().table, NetworkIds::of(200).table);
    assert_eq!(spec("cd").network, None, "a default pod is planned exactly as before");

    let rec = IpamStore::open(&w.dir.join("net-blue")).unwrap().record_of("ca", "eth0").unwrap().unwrap();
    assert_eq!((rec.network.as_deref(), rec.vni, rec.pod_namespace.as_str()), (Some("blue"), Some(100), "team-a"));
    let rec = IpamStore::open(&w.dir).unwrap().record_of("cd", "eth0").unwrap().unwrap();
    assert_eq!((rec.network, rec.vni), (None, None));
}

/// A tenant pod's second attachment (its pod has a default route) routes the network's CIDRs, not the cluster's.
#[test]
fn secondary_tenant_attachment_routes_the_network_cidr() {
    let (w, conf) = world("tsec");
    w.fake.defaults.set(weft_dataplane::pod::Defaults { v4: true, v6: true });
    let r = json(&w.call_in("ADD", "c", "/run/netns/a", &conf, "team-a"));
    assert_eq!(
        r["routes"],
        serde_json::json!([{"dst":"10.70.0.0/16","gw":"10.70.3.1"},{"dst":"fd00:70::/48","gw":"fd00:70:0:3::1"}])
    );
}

/// DEL, CHECK and GC go by the records: they work with the node file gone, or after the network left it.
#[test]
fn del_check_gc_need_no_node_file() {
    let (w, conf) = world("tdel");
    let a = w.call_in("ADD", "ca", "/run/netns/a", &conf, "team-a");
    let b = w.call_in("ADD", "cb", "/run/netns/b", &conf, "team-b");
    assert!(a.ok && b.ok);
    let chk = w.call_in("CHECK", "ca", "/run/netns/a", &with_prev(&conf, &a.stdout), "team-a");
    assert!(chk.ok, "{}", chk.stdout);

    // The network leaves the node file (and the namespace with it): CHECK still checks table and group.
    w.node_file.borrow_mut().as_mut().unwrap().networks.retain(|n| n.name != "blue");
    let chk = w.call_in("CHECK", "ca", "/run/netns/a", &with_prev(&conf, &a.stdout), "team-a");
    assert!(chk.ok, "{}", chk.stdout);
    // Moving the veth out of its group is found.
    let host = names::host_veth("tnet", "ca", "eth0");
    w.fake.links.borrow_mut().get_mut(&host).unwrap().1.network = None;
    let e = json(&w.call_in("CHECK", "ca", "/run/netns/a", &with_prev(&conf, &a.stdout), "team-a"));
    assert_eq!(e["code"], 102);
    assert!(e["details"].as_str().unwrap().contains("link group 0x0, expected 0x57000064"), "{e}");

    *w.node_file.borrow_mut() = None;
    assert!(w.call("DEL", "ca", "/gone/ns", &conf).ok, "no namespace in CNI_ARGS, no node file");
    assert_eq!((pool(&w, "blue"), pool(&w, "red")), (0, 2), "only ca's reservations went, from its own pool");
    assert!(w.call("DEL", "ca", "/gone/ns", &conf).ok && w.call("DEL", "never", "/gone/ns", &conf).ok);

    let gc = conf.replacen('{', r#"{"cni.dev/valid-attachments":[],"#, 1);
    assert!(w.call("GC", "", "", &gc).ok);
    assert_eq!(pool(&w, "red"), 0, "GC walks every network's pool");
    assert!(!w.fake.links.borrow().contains_key(&names::host_veth("tnet", "cb", "eth0")));
}

/// A retried ADD after the pod's namespace changed network: the attachment moves, nothing stays behind in
/// the old network's pool (nor in the default one when it moves the other way).
#[test]
fn retried_add_follows_the_namespace_to_its_new_network() {
    let (w, conf) = world("tmove");
    assert!(w.call_in("ADD", "c", "/run/netns/a", &conf, "team-a").ok);
    assert_eq!((pool(&w, "blue"), w.reservations()), (2, 0));
    w.node_file.borrow_mut().as_mut().unwrap().networks[0].namespaces = vec!["elsewhere".into()];
    let r = json(&w.call_in("ADD", "c", "/run/netns/a", &conf, "team-a"));
    assert_eq!(r["ips"][0]["address"], "10.60.1.2/32");
    assert_eq!((pool(&w, "blue"), w.reservations()), (0, 1));
    w.node_file.borrow_mut().as_mut().unwrap().networks[1].namespaces.push("team-a".into());
    let r = json(&w.call_in("ADD", "c", "/run/netns/a", &conf, "team-a"));
    assert_eq!(r["ips"][0]["address"], "10.70.3.2/32");
    assert_eq!((pool(&w, "red"), w.reservations()), (2, 0));
    assert!(w.logs.borrow().is_empty(), "{:?}", w.logs.borrow());
}

#[test]
fn gc_keeps_valid_tenant_attachments() {
    let (w, conf) = world("tgc");
    for (c, ns) in [("keep", "team-a"), ("drop", "team-a"), ("keep2", "team-b"), ("d", "")] {
        assert!(w.call_in("ADD", c, "/run/netns/p", &conf, ns).ok);
    }
    let valid = [("keep", "eth0"), ("keep2", "eth0")]
        .map(|(c, i)| Attachment { container_id: c.into(), ifname: i.into() })
        .map(|a| format!(r#"{{"containerID":"{}","ifname":"{}"}}"#, a.container_id, a.ifname));
    let gc = conf.replacen('{', &format!(r#"{{"cni.dev/valid-attachments":[{}],"#, valid.join(",")), 1);
    assert!(w.call("GC", "", "", &gc).ok);
    assert_eq!((pool(&w, "blue"), pool(&w, "red"), w.reservations()), (2, 2, 0));
    let kept = IpamStore::open(&w.dir.join("net-blue")).unwrap().addresses_of("keep", "eth0").unwrap();
    assert_eq!(kept.len(), 2);
}

/// A hostile entry for the pod's namespace: error 5, and nothing changed — no veth, no reservation in any pool
/// (the default one included: the pod is never sent to the default network instead).
#[test]
fn hostile_entry_changes_nothing() {
    type Spoil = fn(&mut NodeNetwork);
    let cases: [(&str, Spoil); 5] = [
        ("subnet", |n| n.subnet = "0.0.0.0/0".parse().unwrap()),
        ("outside", |n| n.subnet = "10.71.3.0/24".parse().unwrap()),
        ("vni", |n| n.vni = 0),
        ("name", |n| n.name = "../../etc".into()),
        ("v6", |n| n.subnet6 = Some("fd00:71::/80".parse().unwrap())),
    ];
    for (tag, spoil) in cases {
        let (w, conf) = world(&format!("thost{tag}"));
        spoil(&mut w.node_file.borrow_mut().as_mut().unwrap().networks[0]);
        let e = json(&w.call_in("ADD", "c", "/run/netns/a", &conf, "team-a"));
        assert_eq!(e["code"], 5, "{tag}: {e}");
        assert!(w.fake.calls.borrow().is_empty(), "{tag}: {:?}", w.fake.calls.borrow());
        assert!(!w.dir.exists(), "{tag}: no store was created");
        // Other namespaces are served.
        assert!(w.call_in("ADD", "d", "/run/netns/d", &conf, "team-b").ok, "{tag}");
        assert!(w.call_in("ADD", "e", "/run/netns/e", &conf, "other").ok, "{tag}");
        assert_eq!((pool(&w, "red"), w.reservations()), (2, 1));
    }
}

#[test]
fn interrupted_tenant_add_leaves_nothing() {
    let (w, conf) = world("tfail");
    w.fake.fail_create.set(true);
    assert_eq!(json(&w.call_in("ADD", "c", "/run/netns/a", &conf, "team-a"))["code"], 100);
    assert_eq!(pool(&w, "blue"), 0);
    assert!(w.fake.links.borrow().is_empty());
}

/// STATUS looks at the default network only: one bad tenant entry does not stop the node's other pods.
#[test]
fn status_ignores_tenant_entries() {
    let (w, conf) = world("tstat");
    w.node_file.borrow_mut().as_mut().unwrap().networks[0].vni = 0;
    let st = w.call("STATUS", "", "", &conf);
    assert!(st.ok, "{}", st.stdout);
}

#[test]
fn a_namespace_whose_network_is_not_served_here_is_retried_never_put_on_the_default_network() {
    let (w, conf) = world("tpending");
    let e = json(&w.call_in("ADD", "c", "/run/netns/a", &conf, "team-c"));
    assert_eq!(e["code"], 11, "try again later: {e}");
    assert!(e["msg"].as_str().unwrap().contains("never put on the default network"), "{e}");
    assert!(w.fake.calls.borrow().is_empty(), "{:?}", w.fake.calls.borrow());
    assert!(!w.dir.exists(), "no reservation in any pool");
    // Once the agent offers the network (or drops the claim), the same ADD goes through.
    w.node_file.borrow_mut().as_mut().unwrap().pending_namespaces.clear();
    assert!(w.call_in("ADD", "c", "/run/netns/a", &conf, "team-c").ok);
    assert_eq!(w.reservations(), 1, "default network now");
}
