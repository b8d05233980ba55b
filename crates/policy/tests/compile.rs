//! Shape of the compiled table: rules independent of pod count, element-only diffs, options, counters.

mod common;

use common::{ns, pod, policies, with_ports};
use weft_policy::model::{Model, Pod, Protocol};
use weft_policy::nft::{CounterKind, Element, Match};
use weft_policy::{compile, diff_sets, CompileOptions, Direction};

const POLICIES: &str = r#"
    kind: NetworkPolicy
    metadata: {name: web, namespace: shop}
    spec:
      podSelector: {matchLabels: {app: web}}
      ingress:
      - from: [{podSelector: {matchLabels: {app: lb}}}, {ipBlock: {cidr: 172.16.0.0/12, except: [172.16.1.0/24]}}]
        ports: [{port: http}, {port: 8000, endPort: 8100}]
      egress:
      - to: [{namespaceSelector: {matchLabels: {team: data}}, podSelector: {matchLabels: {app: db}}}]
        ports: [{port: 5432}, {protocol: UDP, port: dns}]
    ---
    kind: NetworkPolicy
    metadata: {name: deny-all, namespace: shop}
    spec:
      podSelector: {}
      policyTypes: [Ingress, Egress]
    ---
    kind: NetworkPolicy
    metadata: {name: db, namespace: data}
    spec:
      podSelector: {matchExpressions: [{key: app, operator: In, values: [db, cache]}]}
      ingress:
      - from: [{namespaceSelector: {}}]
"#;

/// `n` pods spread over two nodes, three namespaces and a handful of label sets (as deployments would have).
fn cluster(n: usize) -> Model {
    let apps = ["web", "lb", "db", "cache", "batch"];
    let namespaces = ["shop", "data", "ops"];
    let pods = (0..n)
        .map(|i| {
            let ip4 = format!("10.{}.{}.{}", 1 + i % 2, (i / 250) % 250, 2 + i % 250);
            let ip6 = format!("fd00::{:x}", i + 2);
            let p = pod(
                namespaces[i % 3],
                &format!("p{i}"),
                if i % 2 == 0 { "n1" } else { "n2" },
                &[&ip4, &ip6],
                &[("app", apps[i % 5])],
            );
            with_ports(p, &[("http", 8080 + (i % 3) as u16, Protocol::Tcp), ("dns", 53, Protocol::Udp)])
        })
        .collect();
    Model {
        pods,
        namespaces: vec![ns("shop", &[("team", "shop")]), ns("data", &[("team", "data")]), ns("ops", &[])],
        policies: policies(POLICIES),
        networks: vec![],
    }
}

/// The IPv4 set of the pods `policy` selects (found by its comment: names are hashes).
fn selected_set(rs: &weft_policy::Ruleset, policy: &str) -> String {
    let comment = format!("pods selected by {policy}");
    rs.sets.iter().find(|s| s.comment.as_deref() == Some(&comment) && s.name.ends_with("_v4")).unwrap().name.clone()
}

#[test]
fn rule_count_does_not_grow_with_pods() {
    let opts = CompileOptions::default();
    let small = compile(&cluster(10), "n1", &opts);
    let large = compile(&cluster(10_000), "n1", &opts);
    assert_eq!(small.rule_count(), large.rule_count());
    assert_eq!(small.chains, large.chains, "chains (and rules) are identical");
    assert_eq!(small.sets.len(), large.sets.len());
    assert!(
        large.element_count() > 100 * small.element_count() / 2,
        "{} vs {}",
        large.element_count(),
        small.element_count()
    );
    println!(
        "rules {}, elements 10 pods: {}, 10000 pods: {}",
        large.rule_count(),
        small.element_count(),
        large.element_count()
    );
    let cmds = diff_sets(&small, &large).expect("pod growth is an element-only change");
    assert!(cmds.iter().all(|c| c.starts_with("add element inet weft-policy ")), "only additions");
}

#[test]
fn node_local_sets_hold_only_local_pods_and_peer_sets_the_whole_cluster() {
    let m = cluster(20);
    let rs = compile(&m, "n1", &CompileOptions::default());
    let local: Vec<&Pod> = m.pods.iter().filter(|p| p.node == "n1").collect();
    let ready = &rs.set("ready_v4").unwrap().elements;
    assert_eq!(ready.len(), local.len());
    let sel = |policy: &str| selected_set(&rs, policy);
    let names = ["ready_v4".to_string(), "iso_in_v4".into(), "iso_out_v4".into(), sel("data/db"), sel("shop/web")];
    for name in &names {
        for e in &rs.set(name).unwrap().elements {
            // This node's pods are `group . address`; the default network's pods are in group 0.
            let Element::GroupAddr(0, ip) = e else { panic!("{name}: {e}") };
            assert!(local.iter().any(|p| p.ips.contains(ip)), "{name} holds remote {ip}");
        }
    }
    // data/db selects app in (db, cache) of namespace data.
    let sel = &rs.set(&sel("data/db")).unwrap().elements;
    let expected =
        local.iter().filter(|p| p.namespace == "data" && ["db", "cache"].contains(&p.labels["app"].as_str()));
    assert_eq!(sel.len(), expected.count());
    // Peer sets are cluster-wide: egress to team=data db pods on both nodes.
    let remote_db = m.pods.iter().find(|p| p.node == "n2" && p.namespace == "data" && p.labels["app"] == "db").unwrap();
    let has_remote = rs
        .sets
        .iter()
        .filter(|s| s.name.starts_with("pe"))
        .any(|s| s.elements.contains(&Element::Addr(remote_db.ips[0])));
    assert!(has_remote, "egress peer set includes the remote db pod");
}

#[test]
fn diff_sets_tracks_pod_churn_and_detects_structure_changes() {
    let opts = CompileOptions::default();
    let before = cluster(12);
    let old = compile(&before, "n1", &opts);
    assert_eq!(diff_sets(&old, &old), Some(vec![]), "no change, no commands");

    let mut churn = before.clone();
    let gone = churn.pods.remove(0); // a local pod (even index) leaves
    churn.pods.push(pod("shop", "new", "n1", &["10.1.9.9"], &[("app", "web")]));
    churn.pods[3].labels.insert("app".into(), "web".into()); // a relabel moves a pod between sets
    let new = compile(&churn, "n1", &opts);
    let cmds = diff_sets(&old, &new).expect("pod churn is element-only");
    let first_add = cmds.iter().position(|c| c.starts_with("add")).unwrap();
    assert!(cmds[..first_add].iter().all(|c| c.starts_with("delete element")), "deletes first: {cmds:#?}");
    let gone_ip = gone.ips[0].to_string();
    assert!(
        cmds.iter().any(|c| c.starts_with("delete element inet weft-policy ready_v4 ") && c.contains(&gone_ip)),
        "{cmds:#?}"
    );
    assert!(cmds.iter().any(|c| c.starts_with("add element inet weft-policy ready_v4 { 0 . 10.1.9.9 }")), "{cmds:#?}");
    assert!(
        cmds.iter().any(|c| c.contains(&selected_set(&new, "shop/web")) && c.contains("10.1.9.9")),
        "shop/web selects the new pod: {cmds:#?}"
    );

    let mut changed = churn.clone();
    changed.policies.pop();
    assert_eq!(diff_sets(&new, &compile(&changed, "n1", &opts)), None, "a removed policy changes structure");
    let renamed = CompileOptions { table: "other".into(), ..opts.clone() };
    assert_eq!(diff_sets(&new, &compile(&churn, "n1", &renamed)), None);
}

#[test]
fn options_shape_the_table() {
    let m = cluster(6);
    let plain = compile(&m, "n1", &CompileOptions::default());
    assert!(!plain.render().contains("log prefix"));
    let hooks: Vec<_> = plain.chains.iter().filter_map(|c| c.hook.as_ref()).collect();
    assert_eq!(hooks.len(), 1, "only forward is hooked: node <-> pod traffic (input/output) is never filtered");
    assert_eq!(hooks[0].hook, "forward");
    assert!(plain.render().starts_with("table inet weft-policy {"));

    let logged = compile(&m, "n1", &CompileOptions { log_drops: true, ..Default::default() });
    let text = logged.render();
    for what in ["in", "out", "unready"] {
        assert!(text.contains(&format!("log prefix \"weft-drop {what}: \"")), "{what}");
    }

    let open = compile(
        &m,
        "n1",
        &CompileOptions { default_deny_new_pods: false, table: "9 bad name".into(), ..Default::default() },
    );
    assert!(open.set("ready_v4").is_none());
    let forward = open.chain("forward").unwrap();
    assert!(!forward
        .rules
        .iter()
        .any(|r| r.matches.iter().any(|m| matches!(m, Match::IifPrefix(_) | Match::OifPrefix(_)))));
    assert_eq!(open.table, "t9_bad_name", "table names are made safe identifiers");
    assert!(open
        .render_replace()
        .starts_with("add table inet t9_bad_name\ndelete table inet t9_bad_name\ntable inet t9_bad_name {"));

    let custom =
        compile(&m, "n1", &CompileOptions { pod_iface_prefix: "cali".into(), priority: -5, ..Default::default() });
    assert!(custom.render().contains("iifname \"cali*\""));
    assert!(custom.render().contains("hook forward priority -5;"));
}

#[test]
fn counters_map_to_policies() {
    let rs = compile(&cluster(6), "n1", &CompileOptions::default());
    let per_policy: Vec<(String, Direction, String)> = rs
        .counters
        .iter()
        .filter_map(|c| match &c.counts {
            CounterKind::DroppedForPolicy(d, p) => Some((c.name.clone(), *d, p.to_string())),
            _ => None,
        })
        .collect();
    // Every policy isolates ingress; shop/web (explicit egress rules) and shop/deny-all (policyTypes) egress too.
    assert_eq!(per_policy.iter().filter(|(_, d, _)| *d == Direction::Ingress).count(), 3);
    let egress: Vec<&str> =
        per_policy.iter().filter(|(_, d, _)| *d == Direction::Egress).map(|(_, _, p)| p.as_str()).collect();
    assert_eq!(egress, ["shop/deny-all", "shop/web"]);
    for name in ["drop_in", "drop_out", "drop_unready"] {
        assert!(rs.counters.iter().any(|c| c.name == name), "{name}");
    }
    let text = rs.render();
    for (name, _, _) in &per_policy {
        assert!(text.contains(&format!("counter name {name}")), "{name} is used by a rule");
    }
}
