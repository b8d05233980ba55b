use super::*;
use crate::entry::{Created, LeaseEntry};
use serde_json::json;

fn cfg() -> NetworkConfig {
    serde_json::from_value(json!({"clusterCidr": "10.244.0.0/16", "subnetLen": 24,
        "clusterCidr6": "fd00:10:244::/56", "subnetLen6": 64}))
    .unwrap()
}

fn vx(mac: &str) -> BackendData {
    BackendData::Vxlan { vtep_mac: mac.into() }
}

fn lease(node: &str, i: u64) -> Lease {
    let c = cfg();
    Lease {
        node: node.into(),
        subnet: c.subnet(i).unwrap(),
        subnet6: c.subnet6(i),
        node_ip: format!("192.0.2.{}", i + 1).parse().unwrap(),
        backend_data: vx(&format!("02:00:00:00:{:02x}:{:02x}", i >> 8 & 0xff, i & 0xff)),
        expires_at_ms: 0,
    }
}

/// An etcd-like entry: keyed by the subnet, created at `rev`.
fn at(rev: i64, l: Lease) -> LeaseEntry {
    let key = format!("/weft/leases/{}", l.subnet.to_string().replace('/', "_"));
    LeaseEntry {
        key: key.clone(),
        key_subnet: Some(l.subnet),
        key_node: None,
        created: Created(rev, key),
        lease: Ok(l),
    }
}

fn run(local: Option<&Lease>, entries: &[LeaseEntry]) -> Admission {
    let c = cfg();
    admit(Rules::new(&c, local), entries)
}

fn nodes(a: &Admission) -> Vec<&str> {
    a.admitted.iter().map(|(_, l)| l.node.as_str()).collect()
}

fn reason(a: &Admission, key: &str) -> Reason {
    a.refused.iter().find(|r| r.key == key).unwrap_or_else(|| panic!("{key} not refused: {a:?}")).reason.clone()
}

#[test]
fn good_leases_pass_oldest_first() {
    let a = run(None, &[at(9, lease("b", 2)), at(3, lease("a", 1))]);
    assert_eq!(nodes(&a), ["a", "b"]);
    assert!(a.refused.is_empty());
}

#[test]
fn a_value_that_disagrees_with_its_key_is_refused() {
    // The hijack: a key of a free subnet whose value claims the victim's subnet.
    let mut rogue = at(5, lease("rogue", 7));
    rogue.lease.as_mut().unwrap().subnet = cfg().subnet(1).unwrap();
    let key = rogue.key.clone();
    let a = run(None, &[at(3, lease("victim", 1)), rogue]);
    assert_eq!(nodes(&a), ["victim"]);
    assert!(matches!(reason(&a, &key), Reason::SubnetNotKey { .. }));

    let mut six = at(5, lease("six", 7));
    six.lease.as_mut().unwrap().subnet6 = cfg().subnet6(1);
    let key = six.key.clone();
    assert!(matches!(reason(&run(None, &[six]), &key), Reason::Subnet6NotKey { .. }));

    let mut named = LeaseEntry::by_node(lease("n1", 1));
    named.key_node = Some("n2".into());
    assert!(matches!(reason(&run(None, &[named]), "n1"), Reason::NodeNotKey { .. }));
}

#[test]
fn overlap_goes_to_the_older_lease() {
    // Kubernetes-like entries (keyed by node): nothing in the key stops two nodes claiming one subnet.
    let mut old = LeaseEntry::by_node(lease("old", 4));
    old.created = Created(100, "old".into());
    let mut new = LeaseEntry::by_node(lease("new", 4));
    new.created = Created(200, "new".into());
    let a = run(None, &[new.clone(), old.clone()]);
    assert_eq!(nodes(&a), ["old"]);
    assert_eq!(reason(&a, "new"), Reason::Overlap("old".into()));
    // Same creation time: the name breaks the tie, so every node decides the same.
    new.created = Created(100, "new".into());
    assert_eq!(nodes(&run(None, &[old, new])), ["new"]);
}

#[test]
fn overlap_of_ipv6_alone_counts() {
    let mut b = LeaseEntry::by_node(lease("b", 2));
    b.lease.as_mut().unwrap().subnet6 = cfg().subnet6(1);
    b.created = Created(2, "b".into());
    let a = run(None, &[LeaseEntry::by_node(lease("a", 1)), b]);
    assert_eq!(reason(&a, "b"), Reason::Overlap("a".into()));
}

#[test]
fn nobody_may_claim_the_local_subnet_however_old() {
    let me = lease("me", 3);
    let mut rogue = LeaseEntry::by_node(lease("rogue", 3));
    rogue.created = Created(-1, "rogue".into());
    let mut mine = LeaseEntry::by_node(me.clone());
    mine.created = Created(50, "me".into());
    let a = run(Some(&me), &[rogue, mine]);
    assert_eq!(nodes(&a), ["me"]);
    assert_eq!(reason(&a, "rogue"), Reason::ClaimsLocalSubnet("10.244.3.0/24".into()));
    // A lease naming this node with another subnet is not ours either.
    let a = run(Some(&me), &[at(1, lease("me", 9))]);
    assert!(a.admitted.is_empty());
    assert!(matches!(a.refused[0].reason, Reason::ClaimsLocalNode(_)));
}

#[test]
fn one_node_one_lease() {
    let a = run(None, &[at(1, lease("n", 1)), at(2, lease("n", 2))]);
    assert_eq!(a.admitted.len(), 1);
    assert_eq!(a.admitted[0].1.subnet, cfg().subnet(1).unwrap());
    assert_eq!(a.refused[0].reason, Reason::DuplicateNode(at(1, lease("n", 1)).key));
}

#[test]
fn bad_fields_are_refused() {
    type Edit = fn(&mut Lease);
    type Want = fn(&Reason) -> bool;
    let cases: [(Edit, Want); 11] = [
        (|l| l.node_ip = "127.0.0.1".parse().unwrap(), |r| matches!(r, Reason::NodeIp(_))),
        (|l| l.node_ip = "224.0.0.1".parse().unwrap(), |r| matches!(r, Reason::NodeIp(_))),
        (|l| l.node_ip = "0.0.0.0".parse().unwrap(), |r| matches!(r, Reason::NodeIp(_))),
        (|l| l.node_ip = "169.254.1.1".parse().unwrap(), |r| matches!(r, Reason::NodeIp(_))),
        (|l| l.node_ip = "255.255.255.255".parse().unwrap(), |r| matches!(r, Reason::NodeIp(_))),
        (|l| l.node_ip = "fe80::1".parse().unwrap(), |r| matches!(r, Reason::NodeIp(_))),
        (|l| l.node_ip = "::ffff:127.0.0.1".parse().unwrap(), |r| matches!(r, Reason::NodeIp(_))),
        (|l| l.backend_data = vx("01:00:5e:00:00:01"), |r| matches!(r, Reason::BackendData(_))),
        (|l| l.backend_data = vx("00:00:00:00:00:00"), |r| matches!(r, Reason::BackendData(_))),
        (|l| l.node = "Bad Name!".into(), |r| matches!(r, Reason::NodeName(_))),
        (|l| l.subnet6 = Some("fd99::/64".parse().unwrap()), |r| matches!(r, Reason::Subnet6Outside { .. })),
    ];
    for (edit, want) in cases {
        let mut e = LeaseEntry::by_node(lease("n", 1));
        edit(e.lease.as_mut().unwrap());
        e.key_node = None;
        let a = run(None, &[e]);
        assert!(a.admitted.is_empty(), "{a:?}");
        assert!(want(&a.refused[0].reason), "{:?}", a.refused[0].reason);
    }
    for outside in ["10.245.1.0/24", "10.244.1.0/25", "10.244.0.0/16"] {
        let mut l = lease("n", 1);
        l.subnet = outside.parse().unwrap();
        l.subnet6 = None;
        let a = run(None, &[LeaseEntry::by_node(l)]);
        assert!(matches!(a.refused[0].reason, Reason::SubnetOutside { .. }), "{outside}");
    }
    let e = LeaseEntry { lease: Err("expected value at line 1 column 1".into()), ..at(1, lease("n", 1)) };
    assert!(matches!(run(None, &[e]).refused[0].reason, Reason::Undecodable(_)));
}

#[test]
fn a_copied_vtep_mac_is_refused() {
    // A rogue on its own valid subnet publishes the victim's (or our own) VTEP MAC: its FDB entry would be appended
    // beside the victim's and receive a copy of every frame sent to the victim.
    let me = lease("me", 1);
    let victim = lease("victim", 2);
    let mut rogue = lease("rogue", 3);
    rogue.backend_data = victim.backend_data.clone();
    let mut rogue_me = lease("rogue-me", 4);
    rogue_me.backend_data = vx(&"02:00:00:00:00:01".to_uppercase());
    let a = run(Some(&me), &[at(1, me.clone()), at(2, victim.clone()), at(3, rogue.clone()), at(4, rogue_me.clone())]);
    assert_eq!(nodes(&a), ["me", "victim"]);
    let k = |l: &Lease| at(0, l.clone()).key;
    assert!(matches!(reason(&a, &k(&rogue)), Reason::DuplicateIdentity { .. }), "{a:?}");
    assert!(matches!(reason(&a, &k(&rogue_me)), Reason::DuplicateIdentity { holder, .. } if holder.contains("local")));
    // Oldest wins here too: the same pair the other way round keeps the rogue if it was first.
    let a = run(None, &[at(1, rogue.clone()), at(2, victim.clone())]);
    assert_eq!(nodes(&a), ["rogue"]);
}

#[test]
fn macs_and_names() {
    assert!(check_vtep_mac(&BackendData::HostGw).is_ok());
    assert!(check_vtep_mac(&vx("0a:58:0a:f4:01:01")).is_ok());
    for bad in ["0a:58", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "03:00:00:00:00:01", "zz:00:00:00:00:01"] {
        assert!(check_vtep_mac(&vx(bad)).is_err(), "{bad}");
    }
    for good in ["node1", "ip-10-0-0-1.ec2.internal", "a"] {
        assert!(is_dns1123_subdomain(good), "{good}");
    }
    for bad in ["", "-a", "a-", "A", "a..b", "a_b", &"a".repeat(254)] {
        assert!(!is_dns1123_subdomain(bad), "{bad}");
    }
}

#[test]
fn a_full_cluster_admits() {
    let entries: Vec<LeaseEntry> = (0..250).map(|i| at(i as i64, lease(&format!("n{i}"), i))).collect();
    let a = run(None, &entries);
    assert_eq!(a.admitted.len(), 250);
    assert!(a.refused.is_empty());
}

#[test]
fn ipv6_is_dropped_where_the_cluster_has_none() {
    let v4only: NetworkConfig = serde_json::from_value(json!({"clusterCidr": "10.244.0.0/16"})).unwrap();
    let mut l = lease("n", 1);
    l.subnet6 = Some("fd00:1::/64".parse().unwrap());
    let a = admit(Rules::new(&v4only, None), &[LeaseEntry::by_node(l)]);
    assert_eq!(a.admitted.len(), 1, "{a:?}");
    assert_eq!(a.admitted[0].1.subnet6, None);
}
