//! Against the real nft 1.0.6 and kernel, in throwaway namespaces (root only; skipped with a message otherwise):
//! the rendered table is valid syntax (`nft -c`), applies, replaces itself atomically, takes `diff_sets`
//! commands, and — with pods made of veths behind a routing "node" namespace — really enforces policy, lets
//! replies and node-originated traffic through, and holds new pods at default-deny until they are compiled.

mod common;

use std::path::PathBuf;

use common::{ns, pod, policies, with_ports};
use weft_e2e::{require_root, unique, Netns, TempDir};
use weft_policy::model::{Model, Protocol::*};
use weft_policy::{compile, diff_sets, CompileOptions, Ruleset};

const RICH: &str = r#"
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: web, namespace: shop}
    spec:
      podSelector: {matchLabels: {app: web}}
      policyTypes: [Ingress, Egress]
      ingress:
      - from:
        - podSelector: {matchExpressions: [{key: app, operator: In, values: [lb, edge]}, {key: canary, operator: DoesNotExist}]}
        - namespaceSelector: {matchLabels: {team: ops}}
          podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [dev]}, {key: app, operator: Exists}]}
        - ipBlock: {cidr: 172.16.0.0/12, except: [172.16.1.0/24, 172.20.0.0/16]}
        - ipBlock: {cidr: 'fd00:1::/48', except: ['fd00:1:0:1::/64']}
        ports: [{port: http}, {port: 8000, endPort: 8100}, {protocol: UDP, port: dns}, {protocol: SCTP, port: 9000}]
      - ports: [{protocol: UDP}]
      egress:
      - to: [{namespaceSelector: {}}]
        ports: [{protocol: SCTP, port: sig}, {port: 5432}]
      - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}, {ipBlock: {cidr: '::/0'}}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny, namespace: ops}
    spec:
      podSelector: {}
      policyTypes: [Ingress, Egress]
"#;

fn rich_model() -> Model {
    Model {
        pods: vec![
            with_ports(
                pod("shop", "web", "n1", &["10.1.0.2", "fd00::2"], &[("app", "web")]),
                &[("http", 8080, Tcp), ("dns", 53, Udp), ("sig", 3868, Sctp)],
            ),
            pod("shop", "lb", "n1", &["10.1.0.3"], &[("app", "lb")]),
            with_ports(pod("ops", "mon", "n2", &["10.2.0.9", "fd00::9"], &[("app", "prom")]), &[("sig", 3869, Sctp)]),
        ],
        namespaces: vec![ns("ops", &[("team", "ops")])],
        policies: policies(RICH),
    }
}

fn nft_file(ns: &Netns, dir: &TempDir, name: &str, text: &str, check_only: bool) -> std::process::Output {
    let path: PathBuf = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap();
    let args: &[&str] = if check_only { &["-c", "-f", path] } else { &["-f", path] };
    ns.try_exec("nft", args)
}

fn apply(ns: &Netns, dir: &TempDir, name: &str, text: &str) {
    let out = nft_file(ns, dir, name, text, false);
    assert!(out.status.success(), "nft -f {name}: {}\n{text}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn rendered_table_is_valid_nft_applies_and_takes_diffs() {
    if !require_root() {
        return;
    }
    let ns = Netns::new(format!("wpk{}", unique()));
    let dir = TempDir::new("policy-nft");
    let opts = CompileOptions { log_drops: true, ..Default::default() };
    let model = rich_model();
    for node in ["n1", "n2", "empty"] {
        let rs = compile(&model, node, &opts);
        let out = nft_file(&ns, &dir, "check.nft", &rs.render(), true);
        assert!(out.status.success(), "nft -c ({node}): {}\n{}", String::from_utf8_lossy(&out.stderr), rs.render());
    }
    let old = compile(&model, "n1", &opts);
    apply(&ns, &dir, "first.nft", &old.render_replace());
    apply(&ns, &dir, "again.nft", &old.render_replace()); // replacing an existing table is atomic and repeatable

    let mut churned = model.clone();
    churned.pods.push(with_ports(
        pod("shop", "web2", "n1", &["10.1.0.4", "fd00::4"], &[("app", "web")]),
        &[("http", 8081, Tcp)],
    ));
    churned.pods.remove(1);
    let new = compile(&churned, "n1", &opts);
    let cmds = diff_sets(&old, &new).expect("element-only change");
    apply(&ns, &dir, "diff.nft", &(cmds.join("\n") + "\n"));
    let sel = ns.exec("nft", &["list", "set", "inet", "weft-policy", "sel1_v4"]);
    assert!(sel.contains("10.1.0.4") && sel.contains("10.1.0.2"), "{sel}");
    let ready = ns.exec("nft", &["list", "set", "inet", "weft-policy", "ready_v4"]);
    assert!(!ready.contains("10.1.0.3") && ready.contains("10.1.0.4"), "{ready}");
    let np = ns.exec("nft", &["list", "set", "inet", "weft-policy", "np0_v6"]);
    assert!(np.contains("fd00::4 . 8081"), "{np}");
}

/// busybox's ping (busybox-static is part of the machine's toolset; iputils-ping is not).
fn ping(ns: &Netns, dst: &str) -> bool {
    ns.try_exec("busybox", &["ping", "-c", "1", "-W", "1", dst]).status.success()
}

/// A node namespace routing between pod namespaces over `wf…` veths, like the CNI plugin sets them up.
struct Lab {
    node: Netns,
    pods: Vec<Netns>,
    dir: TempDir,
}

impl Lab {
    fn new(count: usize) -> Lab {
        let u = unique();
        let node = Netns::new(format!("wpn{u}"));
        node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let mut pods = Vec::new();
        for i in 1..=count {
            let p = Netns::new(format!("wpp{u}{i}"));
            let host = format!("wf{u}{i}");
            node.ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &p.name]);
            node.ip(&["addr", "add", &format!("10.77.{i}.1/24"), "dev", &host]);
            node.ip(&["link", "set", &host, "up"]);
            p.ip(&["addr", "add", &format!("10.77.{i}.2/24"), "dev", "eth0"]);
            p.ip(&["link", "set", "eth0", "up"]);
            p.ip(&["route", "add", "default", "via", &format!("10.77.{i}.1")]);
            pods.push(p);
        }
        Lab { node, pods, dir: TempDir::new("policy-lab") }
    }

    fn ping(&self, from: usize, to: usize) -> bool {
        ping(&self.pods[from - 1], &format!("10.77.{to}.2"))
    }

    fn counter(&self, name: &str) -> u64 {
        let out = self.node.exec("nft", &["list", "counter", "inet", "weft-policy", name]);
        let packets = out.split_whitespace().skip_while(|w| *w != "packets").nth(1).expect("packets field");
        packets.parse().unwrap()
    }
}

fn lab_model(with_pod4: bool) -> Model {
    let mut pods = vec![
        pod("shop", "web", "node", &["10.77.1.2"], &[("app", "web")]),
        pod("shop", "db", "node", &["10.77.2.2"], &[("app", "db")]),
        pod("shop", "other", "node", &["10.77.3.2"], &[("app", "other")]),
    ];
    if with_pod4 {
        pods.push(pod("shop", "late", "node", &["10.77.4.2"], &[("app", "late")]));
    }
    let yaml = r#"
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - from: [{podSelector: {matchLabels: {app: web}}}]
        ---
        kind: NetworkPolicy
        metadata: {name: web-closed, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
    "#;
    Model { pods, namespaces: vec![], policies: policies(yaml) }
}

#[test]
fn policies_are_enforced_on_real_traffic() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(4);
    let opts = CompileOptions::default();
    let first: Ruleset = compile(&lab_model(false), "node", &opts);
    apply(&lab.node, &lab.dir, "table.nft", &first.render_replace());

    assert!(lab.ping(1, 2), "web → db is allowed, and the reply passes web's deny-all ingress (conntrack)");
    assert!(!lab.ping(3, 2), "other → db is denied by db's ingress policy");
    assert!(!lab.ping(2, 1), "web is isolated with no ingress rules");
    assert!(lab.counter("drop_in_p0") >= 1, "the drop is counted against shop/db");
    assert!(lab.counter("drop_in_p1") >= 1, "and against shop/web-closed");
    assert!(lab.counter("drop_in") >= 2);
    assert!(ping(&lab.node, "10.77.2.2"), "node → isolated pod (probes) is not filtered");

    assert!(!lab.ping(4, 3), "pod 4 exists but is not compiled yet: default deny");
    assert!(!lab.ping(3, 4), "...in both directions");
    assert!(lab.counter("drop_unready") >= 2);

    let second = compile(&lab_model(true), "node", &opts);
    let cmds = diff_sets(&first, &second).expect("a new pod is an element-only change");
    apply(&lab.node, &lab.dir, "diff.nft", &(cmds.join("\n") + "\n"));
    assert!(lab.ping(4, 3), "programmed: pod 4 is no longer held back");
    assert!(!lab.ping(4, 2), "and policy applies to it");
}
