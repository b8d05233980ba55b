//! Against the real nft 1.0.6 and kernel, in throwaway namespaces (root only; skipped with a message otherwise):
//! the rendered table is valid syntax (`nft -c`), applies, replaces itself atomically, takes `diff_sets`
//! commands, and — with pods made of veths behind a routing "node" namespace — really enforces policy, lets
//! replies and node-originated traffic through, and holds new pods at default-deny until they are compiled.

mod common;

use std::path::PathBuf;

use common::{ns, pod, policies, with_ports};
use weft_e2e::{require_root, unique, Netns, TempDir};
use weft_policy::model::{Model, Protocol::*};
use weft_policy::nft::CounterKind;
use weft_policy::{compile, diff_sets, plan, CompileOptions, Direction, Ruleset};

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
        networks: vec![],
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
    let web = new.sets.iter().find(|s| s.comment.as_deref() == Some("pods selected by shop/web")).unwrap();
    let sel = ns.exec("nft", &["list", "set", "inet", "weft-policy", &web.name.replace("_v6", "_v4")]);
    assert!(sel.contains("10.1.0.4") && sel.contains("10.1.0.2"), "{sel}");
    let ready = ns.exec("nft", &["list", "set", "inet", "weft-policy", "ready_v4"]);
    assert!(!ready.contains("10.1.0.3") && ready.contains("10.1.0.4"), "{ready}");
    let np = ns.exec("nft", &["list", "set", "inet", "weft-policy", "np_tcp_http_v6"]);
    assert!(np.contains("fd00::4 . 8081"), "{np}");
}

/// The ingress drop counter of `policy` (names are hashes; the ruleset maps them).
fn policy_counter(rs: &Ruleset, policy: &str) -> String {
    rs.counters
        .iter()
        .find(|c| matches!(&c.counts, CounterKind::DroppedForPolicy(Direction::Ingress, p) if p.to_string() == policy))
        .unwrap()
        .name
        .clone()
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
    Model { pods, namespaces: vec![], policies: policies(yaml), networks: vec![] }
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
    assert!(lab.counter(&policy_counter(&first, "shop/db")) >= 1, "the drop is counted against shop/db");
    assert!(lab.counter(&policy_counter(&first, "shop/web-closed")) >= 1, "and against shop/web-closed");
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

/// `nft list table` as its objects (counters, sets, chains) in name order, each with its element list sorted: the
/// kernel lists objects in creation order and hash sets in hash order, neither of which is state.
fn listing(ns: &Netns) -> Vec<String> {
    let text = ns.exec("nft", &["list", "table", "inet", "weft-policy"]);
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("elements = {") {
        let (head, tail) = rest.split_at(i + "elements = {".len());
        out.push_str(head);
        let end = tail.find('}').expect("element list ends");
        let mut items: Vec<&str> = tail[..end].split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        items.sort_unstable();
        out.push_str(&items.join(", "));
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut objects: Vec<String> = Vec::new();
    for line in out.lines() {
        if line.starts_with("\tcounter ") || line.starts_with("\tset ") || line.starts_with("\tchain ") {
            objects.push(String::new());
        }
        if let Some(o) = objects.last_mut().filter(|_| line.starts_with('\t')) {
            o.push_str(line);
            o.push('\n');
        }
    }
    objects.sort();
    objects
}

fn block_policy(name: &str, blocks: usize, port: u16) -> weft_policy::model::NetworkPolicy {
    let from: Vec<String> = (0..blocks)
        .map(|i| {
            format!(
                "{{ipBlock: {{cidr: 172.{}.{}.0/24, except: [172.{}.{}.128/25]}}}}",
                16 + i / 256,
                i % 256,
                16 + i / 256,
                i % 256
            )
        })
        .collect();
    let yaml = format!(
        "kind: NetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  podSelector: {{}}\n  ingress:\n  - from: [{}, {{ipBlock: {{cidr: 'fd00:5::/48'}}}}]\n    ports: [{{port: {port}}}, {{port: http}}]\n",
        from.join(", ")
    );
    weft_policy::parse_policies_yaml(&yaml).unwrap().remove(0)
}

/// A sequence of policy and pod changes applied with `plan` (one `nft -f` each) leaves the kernel with exactly
/// the table a full load of the same model gives, and the commands are what nft 1.0.6 accepts.
#[test]
fn incremental_plans_reach_the_state_of_a_full_load() {
    if !require_root() {
        return;
    }
    let u = unique();
    let (inc, full) = (Netns::new(format!("wpi{u}")), Netns::new(format!("wpf{u}")));
    let dir = TempDir::new("policy-plan");
    let opts = CompileOptions { log_drops: true, ..Default::default() };
    let mut model = rich_model();
    let mut steps: Vec<(&str, Model)> = Vec::new();
    model.policies.push(block_policy("blocks", 300, 80));
    steps.push(("policy with 300 ipBlocks added", model.clone()));
    let i = model.policies.iter().position(|p| p.metadata.name == "blocks").unwrap();
    model.policies[i] = block_policy("blocks", 301, 81);
    steps.push(("one ipBlock and a port changed", model.clone()));
    model.policies.extend(policies(
        r#"
        kind: NetworkPolicy
        metadata: {name: extra, namespace: ops}
        spec:
          podSelector: {matchLabels: {app: prom}}
          policyTypes: [Egress]
          egress: [{to: [{podSelector: {matchLabels: {app: web}}, namespaceSelector: {}}], ports: [{port: 1}, {port: 2}]}]
        "#,
    ));
    model.pods.push(pod("shop", "late", "n1", &["10.1.0.7"], &[("app", "web")]));
    steps.push(("egress policy and a pod added", model.clone()));
    model.policies.retain(|p| p.metadata.name != "web");
    steps.push(("the rich policy removed", model.clone()));
    model.policies.clear();
    steps.push(("every policy removed", model.clone()));
    steps.push(("all back", rich_model()));

    let mut kernel = compile(&rich_model(), "n1", &opts);
    apply(&inc, &dir, "first.nft", &kernel.render_replace());
    for (what, m) in steps {
        let new = compile(&m, "n1", &opts);
        let p = plan(&kernel, &new).expect("policy changes apply in place");
        apply(&inc, &dir, "plan.nft", &p.render());
        apply(&full, &dir, "full.nft", &new.render_replace());
        assert_eq!(listing(&inc), listing(&full), "after {what}: incremental vs full load\n{}", p.render());
        kernel = new;
    }
}
