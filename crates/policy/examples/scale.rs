//! Scale figures: 10 000 pods × 1 000 policies, compiled for one node of 20 and for a single node holding every
//! pod. Prints compile/render/diff times and rule/element counts, beside two references measured in the same run
//! (resolving selectors alone, and serialising the model to JSON), so numbers compare across machines.
//!
//! `cargo run --release -p weft-policy --example scale [PODS] [POLICIES] [NODES]`; with `WEFT_SCALE_NFT=FILE` the
//! node0 table is also written as an `nft -f` script, to time loading it into a throwaway namespace.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weft_policy::eval::Resolved;
use weft_policy::model::*;
use weft_policy::{compile, diff_sets, CompileOptions};

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn selector(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector { match_labels: labels(pairs), ..Default::default() }
}

/// Deterministic synthetic cluster: 50 namespaces, 200 apps, pods round-robin over nodes, every pod dual-stack
/// with two named ports; policies mixing pod/namespace selectors, ipBlocks, named and numeric ports, egress.
fn model(pods: usize, policies: usize, nodes: usize) -> Model {
    let pods = (0..pods)
        .map(|i| Pod {
            namespace: format!("ns{}", i % 50),
            name: format!("pod{i}"),
            labels: labels(&[("app", format!("app{}", i % 200)), ("tier", format!("t{}", i % 3))]),
            ips: vec![
                format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256).parse().unwrap(),
                format!("fd00::{:x}", i + 1).parse().unwrap(),
            ],
            node: format!("node{}", i % nodes),
            ports: vec![
                NamedPort { name: "http".into(), port: 8080 + (i % 4) as u16, protocol: Protocol::Tcp },
                NamedPort { name: "metrics".into(), port: 9090, protocol: Protocol::Tcp },
            ],
            host_iface: Some(format!("wf{i:08x}")),
        })
        .collect();
    let namespaces = (0..50)
        .map(|n| Namespace { name: format!("ns{n}"), labels: labels(&[("team", format!("team{}", n % 5))]) })
        .collect();
    let policies = (0..policies)
        .map(|p| {
            let ns = format!("ns{}", p % 50);
            let from = vec![
                PolicyPeer {
                    pod_selector: Some(selector(&[("app", format!("app{}", (p + 1) % 200))])),
                    ..Default::default()
                },
                PolicyPeer {
                    namespace_selector: Some(selector(&[("team", format!("team{}", p % 5))])),
                    pod_selector: Some(selector(&[("tier", format!("t{}", p % 3))])),
                    ip_block: None,
                },
                PolicyPeer {
                    ip_block: Some(IpBlock {
                        cidr: format!("172.{}.0.0/16", 16 + p % 16).parse().unwrap(),
                        except: vec![format!("172.{}.{}.0/24", 16 + p % 16, p % 256).parse().unwrap()],
                    }),
                    ..Default::default()
                },
            ];
            let ports = vec![
                PolicyPort { port: Some(PortRef::Name("http".into())), ..Default::default() },
                PolicyPort {
                    port: Some(PortRef::Number(8000 + (p % 100) as i64)),
                    end_port: Some(8200),
                    ..Default::default()
                },
                PolicyPort { port: Some(PortRef::Number(443)), ..Default::default() },
                PolicyPort { protocol: Some(Protocol::Udp), port: Some(PortRef::Number(53)), ..Default::default() },
            ];
            let egress = if p % 4 == 0 {
                vec![EgressRule {
                    to: vec![PolicyPeer { namespace_selector: Some(LabelSelector::default()), ..Default::default() }],
                    ports: vec![PolicyPort { port: Some(PortRef::Name("metrics".into())), ..Default::default() }],
                }]
            } else {
                vec![]
            };
            NetworkPolicy {
                metadata: ObjectMeta { name: format!("pol{p}"), namespace: Some(ns) },
                spec: NetworkPolicySpec {
                    pod_selector: selector(&[("app", format!("app{}", p % 200))]),
                    policy_types: vec![],
                    ingress: vec![IngressRule { from, ports }],
                    egress,
                },
                ..Default::default()
            }
        })
        .collect();
    Model { pods, namespaces, policies, networks: vec![] }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (pods, policies, nodes) =
        (*args.first().unwrap_or(&10_000), *args.get(1).unwrap_or(&1_000), *args.get(2).unwrap_or(&20));
    let m = model(pods, policies, nodes);
    println!("model: {pods} pods, {policies} policies, {nodes} nodes");

    let (json, t_json) = timed(|| serde_json::to_vec(&m).unwrap());
    println!("reference: model → JSON ({} KiB): {}", json.len() / 1024, ms(t_json));
    let (_, t_resolve) = timed(|| Resolved::new(&m).policies.len());
    println!("reference: resolving selectors only: {}", ms(t_resolve));

    let opts = CompileOptions::default();
    let (rs, t_compile) = timed(|| compile(&m, "node0", &opts));
    let (text, t_render) = timed(|| rs.render_replace());
    println!(
        "node0 ({} local pods): compile {}, render {} ({} KiB); {} chains, {} rules, {} sets, {} elements, {} counters",
        pods.div_ceil(nodes),
        ms(t_compile),
        ms(t_render),
        text.len() / 1024,
        rs.chains.len(),
        rs.rule_count(),
        rs.sets.len(),
        rs.element_count(),
        rs.counters.len()
    );

    if let Ok(path) = std::env::var("WEFT_SCALE_NFT") {
        std::fs::write(&path, &text).expect("write nft script");
        println!("wrote {path}");
    }

    let mut churned = m.clone();
    churned.pods.swap_remove(0);
    let (rs2, t_recompile) = timed(|| compile(&churned, "node0", &opts));
    let (cmds, t_diff) = timed(|| diff_sets(&rs, &rs2).expect("element-only"));
    println!("one pod removed: recompile {}, diff_sets {} → {} commands", ms(t_recompile), ms(t_diff), cmds.len());

    let mut single = m.clone();
    for p in &mut single.pods {
        p.node = "all".into();
    }
    let (rs_all, t_all) = timed(|| compile(&single, "all", &opts));
    println!(
        "one node with all {pods} pods: compile {}, {} rules, {} elements",
        ms(t_all),
        rs_all.rule_count(),
        rs_all.element_count()
    );
}
