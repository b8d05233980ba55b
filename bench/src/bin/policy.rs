//! NetworkPolicy cost: (1) compile + render + apply of 10 000 pods × 1 000 policies for one node, and the cost of
//! absorbing one pod added or removed (recompile, `diff_sets`, apply the element commands) beside the full
//! replace it avoids; (1b) one policy added / changed / removed, at 1 000 policies and with one policy of 5 000
//! ipBlocks on top, applied in place (recompile, `plan`, `nft -f` of the plan) beside the full replace of the
//! table (the reference, same run), and the periodic presence check (`list set` of one set) beside listing
//! every counter; (2) iperf3 between two pods routed through a node namespace, with no policy table vs. the
//! 1 000-policy table loaded and both pods isolated and allowed by one of them (goal: ratio ≥ 0.95), beside the
//! same table without policies (conntrack and base chains only: the state of any weft node).
//!
//! References measured in the same run: serialising the model to JSON (what any controller pays to look at it),
//! `nft -f` of an empty table (process and namespace overhead included in every apply figure), and the no-table
//! throughput. Tables are loaded into throwaway namespaces; nothing touches the host's own ruleset.
//!
//! Run as root after `cargo build --release -p weft-bench --bin policy`:
//!   target/release/policy [--pods 10000] [--policies 1000] [--nodes 20] [--reps 3] [--secs 5]
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weft_e2e::{free_port, unique, Netns, TempDir};
use weft_policy::model::*;
use weft_policy::{compile, diff_sets, plan, CompileOptions};

struct Args {
    pods: usize,
    policies: usize,
    nodes: usize,
    reps: usize,
    secs: u32,
}

fn args() -> Result<Args> {
    let mut a = Args { pods: 10_000, policies: 1_000, nodes: 20, reps: 3, secs: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pods" => a.pods = v.parse()?,
            "--policies" => a.policies = v.parse()?,
            "--nodes" => a.nodes = v.parse()?,
            "--reps" => a.reps = v.parse()?,
            "--secs" => a.secs = v.parse()?,
            _ => bail!("unknown flag {flag} (see the header of bench/src/bin/policy.rs)"),
        }
    }
    ensure!(a.reps > 0 && a.nodes > 0 && a.policies > 0, "reps, nodes and policies must be positive");
    Ok(a)
}

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn sel(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector { match_labels: labels(pairs), ..Default::default() }
}

/// A synthetic pod: 50 namespaces, 200 apps, 3 tiers, round-robin over nodes, two named ports.
fn pod(i: usize, nodes: usize) -> Pod {
    Pod {
        namespace: format!("ns{}", i % 50),
        name: format!("pod{i}"),
        labels: labels(&[("app", format!("app{}", i % 200)), ("tier", format!("t{}", i % 3))]),
        ips: vec![format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256).parse().expect("ip")],
        node: format!("node{}", i % nodes),
        ports: vec![
            NamedPort { name: "http".into(), port: 8080 + (i % 4) as u16, protocol: Protocol::Tcp },
            NamedPort { name: "metrics".into(), port: 9090, protocol: Protocol::Tcp },
        ],
        host_iface: None,
    }
}

/// Policy `p`: pod selector by app; ingress from another app, from a team's tier, from an ipBlock with except,
/// on a named port, a port range, 443 and 53/UDP; every fourth one also restricts egress to a named port.
fn policy(p: usize) -> NetworkPolicy {
    let from = vec![
        PolicyPeer { pod_selector: Some(sel(&[("app", format!("app{}", (p + 1) % 200))])), ..Default::default() },
        PolicyPeer {
            namespace_selector: Some(sel(&[("team", format!("team{}", p % 5))])),
            pod_selector: Some(sel(&[("tier", format!("t{}", p % 3))])),
            ip_block: None,
        },
        PolicyPeer {
            ip_block: Some(IpBlock {
                cidr: format!("172.{}.0.0/16", 16 + p % 16).parse().expect("cidr"),
                except: vec![format!("172.{}.{}.0/24", 16 + p % 16, p % 256).parse().expect("cidr")],
            }),
            ..Default::default()
        },
    ];
    let num = |n: i64| Some(PortRef::Number(n));
    let ports = vec![
        PolicyPort { port: Some(PortRef::Name("http".into())), ..Default::default() },
        PolicyPort { port: num(8000 + (p % 100) as i64), end_port: Some(8200), ..Default::default() },
        PolicyPort { port: num(443), ..Default::default() },
        PolicyPort { protocol: Some(Protocol::Udp), port: num(53), ..Default::default() },
    ];
    let egress = if p.is_multiple_of(4) {
        let to = vec![PolicyPeer { namespace_selector: Some(LabelSelector::default()), ..Default::default() }];
        vec![EgressRule {
            to,
            ports: vec![PolicyPort { port: Some(PortRef::Name("metrics".into())), ..Default::default() }],
        }]
    } else {
        vec![]
    };
    NetworkPolicy {
        metadata: ObjectMeta { name: format!("pol{p}"), namespace: Some(format!("ns{}", p % 50)) },
        spec: NetworkPolicySpec {
            pod_selector: sel(&[("app", format!("app{}", p % 200))]),
            ingress: vec![IngressRule { from, ports }],
            egress,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn model(a: &Args) -> Model {
    Model {
        pods: (0..a.pods).map(|i| pod(i, a.nodes)).collect(),
        namespaces: (0..50)
            .map(|n| Namespace { name: format!("ns{n}"), labels: labels(&[("team", format!("team{}", n % 5))]) })
            .collect(),
        policies: (0..a.policies).map(policy).collect(),
        ..Default::default()
    }
}

fn ms(d: Duration) -> String {
    format!("{:>9.1} ms", d.as_secs_f64() * 1e3)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rec(t: &mut BTreeMap<String, Vec<Duration>>, key: &str, d: Duration) {
    t.entry(key.to_string()).or_default().push(d);
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// `nft -f` of `script` inside `ns`, timed (process start included, as the agent pays it too).
fn nft(ns: &Netns, dir: &TempDir, script: &str) -> Result<Duration> {
    let file = dir.path().join(format!("{}.nft", unique()));
    std::fs::write(&file, script)?;
    let t = Instant::now();
    let out = ns.command("nft").arg("-f").arg(&file).output()?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!("nft -f failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

/// Part 1: compile/render/apply of the whole table, then one local pod added and removed.
fn scale(a: &Args) -> Result<()> {
    let m = model(a);
    let opts = CompileOptions::default();
    let node = "node0";
    let dir = TempDir::new("policy-bench");
    let mut t = BTreeMap::<String, Vec<Duration>>::new();
    let mut rs = None;
    // One more pod on node0, selected by policies (app0) and a peer of others: touches ready, iso, sel, peer
    // and named-port sets.
    let mut added = m.clone();
    let mut newcomer = pod(a.pods * a.nodes, a.nodes);
    newcomer.node = node.into();
    newcomer.ips = vec!["10.250.250.250".parse()?];
    added.pods.push(newcomer);
    for _ in 0..a.reps {
        let ns = Netns::new(format!("pb{}", unique()));
        rec(&mut t, "reference: model → JSON", timed(|| serde_json::to_vec(&m)).1);
        rec(&mut t, "reference: nft -f, empty table", nft(&ns, &dir, "add table inet empty\n")?);
        let (r, d) = timed(|| compile(&m, node, &opts));
        let rs = rs.insert(r);
        rec(&mut t, "full: compile", d);
        let (text, d) = timed(|| rs.render_replace());
        rec(&mut t, "full: render", d);
        rec(&mut t, "full: apply (nft -f)", nft(&ns, &dir, &text)?);
        // Reading the table back (what a drift check by listing would cost; the agent reads counters instead).
        let (listed, d) = timed(|| ns.command("nft").args(["list", "table", "inet", &rs.table]).output());
        ensure!(listed?.status.success(), "nft list table failed");
        rec(&mut t, "reference: nft list table (read back)", d);
        // Pod churn as the agent absorbs it: recompile, diff the sets, apply only the element commands.
        let mut kernel = rs.clone();
        for (what, target) in [("pod added", &added), ("pod removed", &m)] {
            let (new, d) = timed(|| compile(target, node, &opts));
            rec(&mut t, &format!("{what}: recompile"), d);
            let (cmds, d) = timed(|| diff_sets(&kernel, &new));
            rec(&mut t, &format!("{what}: diff_sets"), d);
            let cmds = cmds.context("pod churn must change set elements only")?;
            rec(&mut t, &format!("{what}: apply elements"), nft(&ns, &dir, &(cmds.join("\n") + "\n"))?);
            kernel = new;
        }
        // What the same change would cost without diff_sets: the whole table again.
        rec(
            &mut t,
            "reference: pod added as full replace",
            nft(&ns, &dir, &compile(&added, node, &opts).render_replace())?,
        );
    }
    let rs = rs.context("no repetition ran")?;
    println!(
        "\n{} pods × {} policies, table for {node} of {} nodes ({} local pods): {} chains, {} rules, {} sets, {} \
         elements; median of {}",
        a.pods,
        a.policies,
        a.nodes,
        m.pods.iter().filter(|p| p.node == node).count(),
        rs.chains.len(),
        rs.rule_count(),
        rs.sets.len(),
        rs.element_count(),
        a.reps
    );
    let order = [
        "reference: model → JSON",
        "reference: nft -f, empty table",
        "reference: nft list table (read back)",
        "full: compile",
        "full: render",
        "full: apply (nft -f)",
        "pod added: recompile",
        "pod added: diff_sets",
        "pod added: apply elements",
        "pod removed: recompile",
        "pod removed: diff_sets",
        "pod removed: apply elements",
        "reference: pod added as full replace",
    ];
    for k in order {
        println!("  {k:<40} {}", ms(median(t.remove(k).context("missing figure")?)));
    }
    Ok(())
}

/// Part 2's topology: node namespace N routing between pods A (client) and B (server) over `wf*` veths, as the
/// CNI plugin wires pods. Returns (namespaces, client ns, server ns, server IP).
fn pods_through_node() -> Result<(Netns, Netns, Netns)> {
    let t = unique();
    let (n, a, b) = (Netns::new(format!("pn{t}")), Netns::new(format!("pa{t}")), Netns::new(format!("pz{t}")));
    n.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    for (pod, iface, net) in [(&a, "wfbencha", "10.250.0"), (&b, "wfbenchb", "10.251.0")] {
        n.ip(&["link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", &pod.name]);
        n.ip(&["addr", "add", &format!("{net}.1/24"), "dev", iface]);
        n.ip(&["link", "set", iface, "up"]);
        pod.ip(&["addr", "add", &format!("{net}.2/24"), "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["route", "add", "default", "via", &format!("{net}.1")]);
    }
    Ok((n, a, b))
}

/// The scale model plus the two bench pods on node "bench", each selected by a policy of its own.
fn throughput_model(a: &Args) -> Result<Model> {
    let mut m = model(a);
    for (name, ip) in [("client", "10.250.0.2"), ("server", "10.251.0.2")] {
        m.pods.push(Pod {
            namespace: "bench".into(),
            name: name.into(),
            labels: labels(&[("role", name.into())]),
            ips: vec![ip.parse()?],
            node: "bench".into(),
            ..Default::default()
        });
    }
    m.namespaces.push(Namespace { name: "bench".into(), labels: BTreeMap::new() });
    // Both pods isolated both ways: the server only accepts the client, the client only reaches the server.
    let yaml = r#"
kind: NetworkPolicy
metadata: {name: server, namespace: bench}
spec:
  podSelector: {matchLabels: {role: server}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]
---
kind: NetworkPolicy
metadata: {name: client, namespace: bench}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Ingress, Egress]
  egress: [{to: [{podSelector: {matchLabels: {role: server}}}]}]
"#;
    m.policies.extend(weft_policy::parse_policies_yaml(yaml)?);
    Ok(m)
}

fn iperf(client: &Netns, server: &Netns, ip: &str, streams: u32, secs: u32) -> Result<f64> {
    let port = free_port().to_string();
    let mut srv = server
        .command("iperf3")
        .args(["-s", "-1", "-B", ip, "-p", &port])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .command("iperf3")
        .args(["-c", ip, "-p", &port, "-t", &secs.to_string(), "-P", &streams.to_string(), "-J"])
        .output()?;
    let _ = srv.wait();
    let j: Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let bps = j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    ensure!(bps > 0.0, "iperf3 moved nothing: {}", String::from_utf8_lossy(&out.stdout));
    Ok(bps / 1e9)
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Part 2: iperf3 with no table, with the table of the same pods and no policy (conntrack and the base chains
/// in the path: what every weft node has), and with the 1 000-policy table. Variants alternate within each
/// repetition so background load hits them alike.
fn throughput(a: &Args) -> Result<()> {
    let m = throughput_model(a)?;
    let opts = CompileOptions::default();
    let full = compile(&m, "bench", &opts);
    let base = compile(&Model { policies: vec![], ..m.clone() }, "bench", &opts);
    let (n, client, server) = pods_through_node()?;
    let dir = TempDir::new("policy-bench");
    let server_ip = "10.251.0.2";
    let none = format!("add table inet {t}\ndelete table inet {t}\n", t = full.table);
    let variants = [("no table", none), ("0 policies", base.render_replace()), ("policies", full.render_replace())];
    let mut res: BTreeMap<(usize, u32), Vec<f64>> = BTreeMap::new();
    for _ in 0..a.reps {
        for (v, (_, script)) in variants.iter().enumerate() {
            nft(&n, &dir, script)?;
            for streams in [1, 4] {
                res.entry((v, streams)).or_default().push(iperf(&client, &server, server_ip, streams, a.secs)?);
            }
        }
    }
    // Proof the loaded table filters this path: the server may not open connections to the client.
    let back = server.command("ping").args(["-c", "1", "-W", "1", "10.250.0.2"]).output()?;
    ensure!(!back.status.success(), "server → client passed: the policy table is not in the path");
    println!(
        "\niperf3 client → server through the node's forward hook; \"policies\": {} + 2 selecting both pods \
         ({} rules); median of {} × {} s, Gb/s",
        a.policies,
        full.rule_count(),
        a.reps,
        a.secs
    );
    println!(
        "  {:<8} {:>10} {:>11} {:>9} {:>18} {:>18}",
        "streams", "no table", "0 policies", "policies", "policies/0 pol.", "policies/no table"
    );
    for streams in [1, 4] {
        let g: Vec<f64> = (0..3).map(|v| median_f(res.get(&(v, streams)).cloned().unwrap_or_default())).collect();
        println!(
            "  {streams:<8} {:>10.2} {:>11.2} {:>9.2} {:>18.3} {:>18.3}",
            g[0],
            g[1],
            g[2],
            g[2] / g[1],
            g[2] / g[0]
        );
    }
    // The machine is shared and 4 streams on 2 cores are noisy: the samples show how far to trust a median.
    for ((v, streams), samples) in &res {
        let s: Vec<String> = samples.iter().map(|g| format!("{g:.2}")).collect();
        println!("  samples, {}, {streams} streams: {}", variants[*v].0, s.join(" "));
    }
    Ok(())
}

/// One policy of `n` ipBlocks (a /24 each, every tenth with a /26 except) on ingress port `port`: the shape of an
/// allow-list generated from a feed of partner networks.
fn ipblock_policy(n: usize, port: i64) -> NetworkPolicy {
    let from = (0..n)
        .map(|i| {
            let cidr: ipnet::IpNet = format!("100.{}.{}.0/24", 64 + i / 256, i % 256).parse().expect("cidr");
            let except = if i % 10 == 0 {
                vec![format!("100.{}.{}.64/26", 64 + i / 256, i % 256).parse().expect("cidr")]
            } else {
                vec![]
            };
            PolicyPeer { ip_block: Some(IpBlock { cidr, except }), ..Default::default() }
        })
        .collect();
    NetworkPolicy {
        metadata: ObjectMeta { name: "partners".into(), namespace: Some("ns0".into()) },
        spec: NetworkPolicySpec {
            pod_selector: sel(&[("app", "app0".into())]),
            ingress: vec![IngressRule {
                from,
                ports: vec![PolicyPort { port: Some(PortRef::Number(port)), ..Default::default() }],
            }],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A title, the model loaded first, and the edits measured from it.
type Scenario<'a> = (String, &'a Model, Vec<(&'static str, Model)>);

/// Part 1b: one policy change, in place vs full replace, and the resync presence check.
fn policy_changes(a: &Args) -> Result<()> {
    let opts = CompileOptions::default();
    let node = "node0";
    let dir = TempDir::new("policy-bench");
    let base = model(a);
    let mut with_big = base.clone();
    with_big.policies.push(ipblock_policy(5000, 443));
    let edit = |m: &Model, f: &dyn Fn(&mut Model)| {
        let mut m = m.clone();
        f(&mut m);
        m
    };
    let n = a.policies;
    let scenarios: Vec<Scenario> = vec![
        (
            format!("{} pods × {n} policies", a.pods),
            &base,
            vec![
                ("policy added", edit(&base, &|m| m.policies.push(policy(n + 1)))),
                (
                    "policy changed (a port)",
                    edit(&base, &|m| m.policies[n / 2].spec.ingress[0].ports[2].port = Some(PortRef::Number(444))),
                ),
                (
                    "policy removed",
                    edit(&base, &|m| {
                        m.policies.remove(n / 2);
                    }),
                ),
            ],
        ),
        (
            "same + 1 policy of 5 000 ipBlocks".to_string(),
            &with_big,
            vec![
                ("ipBlock policy added", base.clone()),
                (
                    "ipBlock policy changed (a port)",
                    edit(&with_big, &|m| *m.policies.last_mut().expect("big") = ipblock_policy(5000, 8443)),
                ),
                (
                    "ipBlock policy changed (a cidr)",
                    edit(&with_big, &|m| {
                        let p = m.policies.last_mut().expect("big");
                        p.spec.ingress[0].from[7].ip_block.as_mut().expect("block").cidr =
                            "100.200.0.0/24".parse().expect("cidr");
                    }),
                ),
                ("ipBlock policy removed", base.clone()),
            ],
        ),
    ];
    for (title, start, edits) in scenarios {
        let ns = Netns::new(format!("pc{}", unique()));
        let mut t = BTreeMap::<String, Vec<Duration>>::new();
        let initial = compile(start, node, &opts);
        nft(&ns, &dir, &initial.render_replace())?;
        for _ in 0..a.reps {
            for (what, target) in &edits {
                // "added" edits start from the target and go to the scenario's model: swap so the edit adds.
                let (from, to) = if what.ends_with("added") && what.starts_with("ipBlock") {
                    (target, start)
                } else {
                    (start, target)
                };
                let from_rs = compile(from, node, &opts);
                nft(&ns, &dir, &from_rs.render_replace())?;
                let t0 = Instant::now();
                let new = compile(to, node, &opts);
                let p = plan(&from_rs, &new).context("a policy change applies in place")?;
                let script = p.render();
                let prep = t0.elapsed();
                let applied = nft(&ns, &dir, &script)?;
                rec(&mut t, &format!("{what}: in place (compile + plan + nft)"), prep + applied);
                rec(&mut t, &format!("{what}: in place, nft -f of the plan"), applied);
                nft(&ns, &dir, &from_rs.render_replace())?;
                let t0 = Instant::now();
                let text = compile(to, node, &opts).render_replace();
                let prep = t0.elapsed();
                rec(&mut t, &format!("{what}: reference, full replace"), prep + nft(&ns, &dir, &text)?);
            }
            nft(&ns, &dir, &initial.render_replace())?;
            let (out, d) =
                timed(|| ns.command("nft").args(["list", "set", "inet", &initial.table, "iso_in_v4"]).output());
            ensure!(out?.status.success(), "nft list set failed");
            rec(&mut t, "resync: presence check (list one set)", d);
            let (out, d) =
                timed(|| ns.command("nft").args(["-j", "list", "counters", "table", "inet", &initial.table]).output());
            ensure!(out?.status.success(), "nft list counters failed");
            rec(&mut t, "resync: reference, list every counter", d);
        }
        println!(
            "\n{title}, table for {node}: {} chains, {} rules, {} sets, {} elements; median of {}",
            initial.chains.len(),
            initial.rule_count(),
            initial.sets.len(),
            initial.element_count(),
            a.reps
        );
        for (k, v) in t {
            println!("  {k:<62} {}", ms(median(v)));
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    if !weft_e2e::require_root() {
        bail!("needs root (network namespaces, nft)");
    }
    let a = args()?;
    scale(&a)?;
    policy_changes(&a)?;
    if std::env::var_os("WEFT_BENCH_SKIP_THROUGHPUT").is_some() {
        return Ok(());
    }
    throughput(&a)?;
    Ok(())
}
