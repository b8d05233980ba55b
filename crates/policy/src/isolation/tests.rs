use super::*;

fn net(name: &str, vni: u32, slot: u8, cidr: &str) -> IsolatedNetwork {
    IsolatedNetwork {
        name: name.into(),
        vni,
        slot,
        group: TENANT_GROUP_BASE | vni,
        device: format!("wn{vni}"),
        cidr: cidr.parse().unwrap(),
        cidr6: None,
        masquerade: true,
    }
}

fn input(networks: Vec<IsolatedNetwork>) -> IsolationInput {
    IsolationInput {
        networks,
        default_cidr: "10.244.0.0/16".parse().unwrap(),
        default_cidr6: Some("fd00:10:244::/56".parse().unwrap()),
        weft_cidrs: vec!["10.70.0.0/16".parse().unwrap()],
    }
}

/// `nft --check` of the script (syntax and the kernel's view of it), when nft runs here with CAP_NET_ADMIN.
fn nft_accepts(script: &str) {
    let Ok(mut child) = std::process::Command::new("nft")
        .args(["--check", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        return;
    };
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.contains("Operation not permitted") {
        assert!(out.status.success(), "nft refuses the table: {err}\n{script}");
    }
}

fn two_overlapping() -> Isolation {
    let mut a = net("blue-a", 100, 1, "10.50.0.0/16");
    a.cidr6 = Some("fd00:50::/48".parse().unwrap());
    let mut b = net("red", 200, 2, "10.50.0.0/16");
    b.masquerade = false;
    isolation(&input(vec![b, a]))
}

#[test]
fn marks_and_zones_are_set_before_conntrack() {
    let iso = two_overlapping();
    assert!(iso.refused.is_empty(), "{:?}", iso.refused);
    let t = iso.table.render();
    assert!(t.contains("type filter hook prerouting priority -350; policy accept;"), "{t}");
    assert!(t.contains("\t\tiifgroup vmap @pre_group\n\t\tiifname vmap @pre_device\n"), "{t}");
    assert!(t.contains("0x57000064 : goto pre_blue_a"), "{t}");
    assert!(t.contains("\"wn200\" : goto pre_red"), "{t}");
    let pre = iso
        .table
        .chain("pre_blue_a")
        .unwrap()
        .rules
        .iter()
        .map(|r| r.iter().map(Expr::to_string).collect::<Vec<_>>().join(" "));
    assert_eq!(
        pre.collect::<Vec<_>>(),
        [
            "meta mark set meta mark and 0x00ffffff or 0x01000000",
            "ip daddr 10.50.0.0/16 ct zone set 1 accept",
            "ip6 daddr fd00:50::/48 ct zone set 1 accept",
            "ct original zone set 1",
        ]
    );
    // Unknown tenant interfaces are dropped, after the known ones were dispatched.
    assert!(t.contains("meta iifgroup and 0xff000000 == 0x57000000 counter name dropped__unknown drop"), "{t}");
    assert!(t.contains("iifname \"wn*\" counter name dropped__unknown drop"), "{t}");
    // Replies from the outside get their network's mark back from the connection's zone.
    assert!(t.contains("ct direction reply meta mark and 0xff000000 == 0 ct original zone vmap @restore_zone"));
    assert!(t.contains("2 : goto restore_red"), "{t}");
    nft_accepts(&iso.table.render_replace());
}

#[test]
fn forward_keeps_networks_apart_and_counts_per_network() {
    let iso = two_overlapping();
    let t = iso.table.render();
    let fwd = t.split("chain forward {").nth(1).unwrap();
    for rule in [
        "meta mark and 0xff000000 . oifgroup @own_group accept",
        "meta mark and 0xff000000 . oifname @own_device accept",
        "meta mark and 0xff000000 != 0 meta oifgroup and 0xff000000 != 0x57000000 oifname != \"wn*\" ip daddr != @weft_v4 accept",
        "meta mark and 0xff000000 vmap @drop_slot",
        "oifgroup vmap @drop_group",
        "oifname vmap @drop_device",
        "meta oifgroup and 0xff000000 == 0x57000000 counter name dropped__unknown drop",
    ] {
        assert!(fwd.contains(rule), "missing {rule}:\n{t}");
    }
    assert!(t.contains("0x01000000 . 0x57000064,\n\t\t\t0x02000000 . 0x570000c8"), "{t}");
    // Overlapping network CIDRs are merged into one interval (nft refuses overlapping elements).
    let weft: Vec<String> = iso.table.set("weft_v4").unwrap().elements.iter().map(|e| e.key[0].to_string()).collect();
    assert_eq!(weft, ["10.50.0.0/16", "10.70.0.0/16", "10.244.0.0/16"]);
    assert_eq!(iso.table.set("weft_v6").unwrap().elements.len(), 2);
    // One counter per network (named after it) and one for the rest; drops go through them only.
    assert_eq!(iso.table.counter_network("dropped_blue_a"), Some("blue-a"));
    assert_eq!(iso.table.counter_network("dropped_red"), Some("red"));
    assert_eq!(iso.table.counter_network(OTHER_COUNTER), None);
    assert!(iso
        .table
        .chains
        .iter()
        .flat_map(|c| &c.rules)
        .all(|r| { !r.contains(&Expr::Drop) || r.iter().any(|e| matches!(e, Expr::Counter(_))) }));
    assert_eq!(iso.table.chain("drop_red").unwrap().rules, vec![vec![Expr::Counter("dropped_red".into()), Expr::Drop]]);
}

#[test]
fn node_input_only_for_established_and_masquerade_only_outside() {
    let iso = two_overlapping();
    let t = iso.table.render();
    let input = t.split("chain input {").nth(1).unwrap().split("\t}").next().unwrap();
    assert!(input.contains("type filter hook input priority -5;"));
    let est = input.find("meta mark and 0xff000000 != 0 ct state established,related accept").unwrap();
    assert!(est < input.find("meta mark and 0xff000000 vmap @drop_slot").unwrap());
    assert!(t.contains("type nat hook postrouting priority 100; policy accept;"));
    assert!(t.contains("meta mark and 0xff000000 . ip saddr @masq_v4 ip daddr != @weft_v4 masquerade"));
    // Only networks with masquerade: red has it off.
    let masq = iso.table.set("masq_v4").unwrap();
    assert_eq!(masq.elements.len(), 1);
    assert_eq!(masq.elements[0].key, vec![Part::Mark(0x0100_0000), Part::Net("10.50.0.0/16".parse().unwrap())]);
    assert_eq!(iso.table.set("masq_v6").unwrap().elements.len(), 1);
}

#[test]
fn bad_networks_are_refused_alone() {
    let mut zero = net("zero", 5, 0, "10.1.0.0/16");
    zero.slot = 0;
    let mut main_group = net("maingroup", 6, 6, "10.2.0.0/16");
    main_group.group = 0;
    let mut dev = net("dev", 7, 7, "10.3.0.0/16");
    dev.device = "eth0\" accept".into();
    let dup_slot = net("dup", 8, 1, "10.4.0.0/16");
    let bad_name = net("Bad;Name", 9, 9, "10.5.0.0/16");
    let good = net("blue", 100, 1, "10.50.0.0/16");
    let iso = isolation(&input(vec![zero, main_group, dev, dup_slot, bad_name, good]));
    assert_eq!(iso.refused.len(), 5, "{:?}", iso.refused);
    let msgs: Vec<String> = iso.refused.iter().map(|e| e.to_string()).collect();
    for why in [
        "slot 0",
        "outside the tenant range",
        "not a tenant VXLAN device",
        "mark slot 1 is already used by network blue",
        "DNS-1123",
    ] {
        assert!(msgs.iter().any(|m| m.contains(why)), "{why}: {msgs:?}");
    }
    let t = iso.table.render();
    assert!(t.contains("goto pre_blue") && !t.contains("pre_dup") && !t.contains("eth0"), "{t}");
    nft_accepts(&iso.table.render_replace());
}

#[test]
fn no_networks_still_closes_tenant_interfaces() {
    let iso = isolation(&input(vec![]));
    let t = iso.table.render();
    assert!(t.contains("meta iifgroup and 0xff000000 == 0x57000000 counter name dropped__unknown drop"));
    assert_eq!(iso.table.counters.len(), 1);
    nft_accepts(&iso.table.render_replace());
}

#[test]
fn a_hundred_networks_cost_constant_rules_each_and_load() {
    let nets: Vec<IsolatedNetwork> = (1..=100u32)
        .map(|i| {
            let mut n = net(&format!("net-{i}"), 1000 + i, u8::try_from(i).unwrap(), "10.50.0.0/16");
            n.cidr6 = Some(format!("fd00:{i:x}::/48").parse().unwrap());
            n
        })
        .collect();
    let one = isolation(&input(nets[..1].to_vec())).table;
    let all = isolation(&input(nets)).table;
    let per_network = (one.rule_count() - isolation(&input(vec![])).table.rule_count()) as f64;
    assert_eq!(all.rule_count(), isolation(&input(vec![])).table.rule_count() + 100 * per_network as usize);
    assert!(per_network <= 7.0, "{per_network} rules per network");
    // The base chains do not grow: dispatch is by maps.
    for c in all.chains.iter().filter(|c| c.hook.is_some()) {
        assert_eq!(c.rules.len(), one.chain(&c.name).unwrap().rules.len(), "{}", c.name);
    }
    assert_eq!(all.set("own_group").unwrap().elements.len(), 100);
    assert_eq!(all.counters.len(), 101);
    nft_accepts(&all.render_replace());
}
