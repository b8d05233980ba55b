//! "Never unprotected" across agent restarts: with deny-all-ingress in namespace x, both nodes' agents are
//! restarted (SIGTERM, start again) several times while pods in y hammer the pods of x and of z. A restarting
//! agent starts from an empty view of the store and fills it kind by kind (pods, namespaces, policies); whatever
//! it programs on the way must never open x — not one attempt may reach an x pod.
//!
//! The z pods are the control: they have no policy, the hammer must keep reaching them (so it could have seen
//! an opening); the longest gap in reaching them is printed, as the restarts' effect on availability.
use crate::churn::{target_ip, unix_ms, Hammer};
use crate::harness::{ctl, PolicyLab};
use std::net::Ipv4Addr;
use std::time::Duration;

const RESTARTS: usize = 3;

pub fn never_unprotected_across_restarts(backend: &str) {
    let mut lab = PolicyLab::up(backend, false);
    lab.apply("kind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n");
    lab.wait();
    if let Some(diff) = lab.check() {
        panic!("deny-all in x is not enforced before the restarts:\n{diff}");
    }
    let ips =
        |ns: &str| -> Vec<Ipv4Addr> { lab.pods.iter().filter(|p| p.pod.namespace == ns).map(|p| p.pod.ip).collect() };
    let (denied, open) = (ips("x"), ips("z"));
    let targets: Vec<String> =
        denied.iter().chain(&open).flat_map(|ip| [format!("{ip}:80/tcp"), format!("{ip}:80/udp")]).collect();
    let mut hammers: Vec<Hammer> = ["y/a", "y/b"].iter().map(|k| Hammer::start(&lab.pod(k).netns, &targets)).collect();
    assert!(
        weft_e2e::wait_until(Duration::from_secs(5), || hammers.iter().all(|h| h.has(|v| v.get("started").is_some()))),
        "hammers did not start"
    );
    std::thread::sleep(Duration::from_millis(300));
    let t0 = unix_ms();
    for _ in 0..RESTARTS {
        for node in ["node1", "node2"] {
            ctl(&["lab", "restart", "--name", &lab.name, node]);
            // Long enough for the new agent to load the store and program its table before the next restart.
            std::thread::sleep(Duration::from_millis(700));
        }
    }
    let t1 = unix_ms();
    let lines: Vec<serde_json::Value> = hammers.iter_mut().flat_map(Hammer::finish).collect();
    let hits: Vec<&serde_json::Value> = lines.iter().filter(|v| v.get("target").is_some()).collect();
    let violations: Vec<String> =
        hits.iter().filter(|v| target_ip(v).is_some_and(|ip| denied.contains(&ip))).map(|v| v.to_string()).collect();
    // Availability of the open pods during the restarts: the longest time without any answer from them.
    let mut open_ms: Vec<u64> = hits
        .iter()
        .filter(|v| target_ip(v).is_some_and(|ip| open.contains(&ip)))
        .filter_map(|v| v["ms"].as_u64())
        .filter(|ms| (t0..=t1).contains(ms))
        .collect();
    open_ms.sort_unstable();
    let gap = open_ms.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(t1 - t0);
    println!(
        "restarts: {} agent restarts in {:.1} s; {} answers from open pods (longest gap {gap} ms); {} violations",
        RESTARTS * 2,
        (t1 - t0) as f64 / 1e3,
        open_ms.len(),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "pods in x were reachable during agent restarts ({} times; the first 20):\n{}",
        violations.len(),
        violations[..violations.len().min(20)].join("\n")
    );
    assert!(open_ms.len() > 100, "the hammer barely reached the open pods: it could not have seen an opening");
}
