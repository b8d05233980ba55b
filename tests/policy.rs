//! NetworkPolicy end to end, like Kubernetes' own network-policy e2e suite: a truth table of real TCP and UDP
//! connections between 9 pods (namespaces x, y, z × pods a, b, c on two nodes), ports 80 and 81, compared cell by
//! cell with an independent reference model, for every scenario in `policy/scenarios.rs`; plus the "never
//! unprotected" property under pod churn (`policy/churn.rs`).
//!
//! Layout: `policy/model.rs` (the reference semantics), `policy/scenarios*.rs` (the table), `policy/harness.rs`
//! (lab, servers, probing, truth-table diff). Each test builds its own lab, so the groups run in parallel and
//! each stays short; the full list runs on VXLAN, the `host_gw` subset on host-gw.
#[path = "policy/churn.rs"]
mod churn;
#[path = "policy/harness.rs"]
mod harness;
#[path = "policy/matrix.rs"]
mod matrix;
#[path = "policy/model.rs"]
mod model;
#[path = "policy/networks.rs"]
mod networks;
#[path = "policy/restart.rs"]
mod restart;
#[path = "policy/scenarios.rs"]
mod scenarios;
#[path = "policy/scenarios_changes.rs"]
mod scenarios_changes;
#[path = "policy/scenarios_traffic.rs"]
mod scenarios_traffic;

use harness::{default_ns_labels, eventually, explain_agrees, timed, PolicyLab, SERVICES};
use scenarios::{Group, Scenario, Step};
use std::time::{Duration, Instant};
use weft_e2e::require_root;

fn run_one(lab: &mut PolicyLab, sc: &Scenario) -> Result<(), String> {
    lab.delete_all();
    for (i, step) in sc.steps.iter().enumerate() {
        match step {
            Step::Apply(yaml) => lab.apply(yaml),
            Step::Delete(key) => lab.delete(key),
            Step::Probe => {
                lab.wait();
                if let Some(diff) = lab.check() {
                    return Err(format!("after step {i}:\n{diff}"));
                }
                explain_agrees(lab, &format!("{}#{i}", sc.name))?;
            }
            Step::Relabel(ns, labels) => {
                let labels: Vec<(String, String)> =
                    labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                lab.set_namespace_labels(ns, &labels);
                if let Some(diff) = eventually(lab, Duration::from_secs(5)) {
                    return Err(format!("5 s after relabelling namespace {ns} (step {i}):\n{diff}"));
                }
            }
        }
    }
    Ok(())
}

/// Runs the picked scenarios in one lab; reports every failing scenario, not only the first.
fn run_scenarios(backend: &str, dual_stack: bool, pick: impl Fn(&Scenario) -> bool) {
    if !require_root() {
        return;
    }
    let t0 = Instant::now();
    let mut lab = PolicyLab::up(backend, dual_stack);
    let setup = t0.elapsed();
    let picked: Vec<Scenario> = scenarios::all().into_iter().filter(|s| pick(s)).collect();
    assert!(!picked.is_empty(), "no scenario picked");
    let mut failures = vec![];
    for sc in &picked {
        let (result, took) = timed(|| run_one(&mut lab, sc));
        println!("{:>6.2} s  {}{}", took.as_secs_f64(), sc.name, if result.is_err() { "  FAILED" } else { "" });
        if let Err(e) = result {
            failures.push(format!("=== scenario {:?} ({backend}, {:?}) {e}", sc.name, lab.families));
            // A failed relabel step must not leak into the next scenarios.
            for ns in harness::NAMESPACES {
                let want: model::Labels = default_ns_labels(ns).into_iter().collect();
                if lab.world.namespaces.get(ns) != Some(&want) {
                    lab.set_namespace_labels(ns, &default_ns_labels(ns));
                }
            }
            lab.delete_all();
            lab.wait();
            let _ = eventually(&mut lab, Duration::from_secs(5));
        }
    }
    println!(
        "{backend} {:?}: {} scenarios, {} probe rounds ({} cells each), {} cells re-probed; lab setup {:.1} s, \
         total {:.1} s",
        lab.families,
        picked.len(),
        lab.rounds,
        lab.pods.len() * lab.pods.len() * SERVICES.len() * lab.families.len(),
        lab.retried,
        setup.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} of {} scenarios failed:\n{}", failures.len(), picked.len(), failures.join("\n"));
}

#[test]
fn scenario_table_covers_the_issue() {
    let all = scenarios::all();
    assert!(all.len() >= 40, "only {} scenarios", all.len());
    let steps: usize =
        all.iter().map(|s| s.steps.iter().filter(|st| !matches!(st, Step::Apply(_) | Step::Delete(_))).count()).sum();
    println!(
        "{} scenarios ({} checks), {} on host-gw, {} IPv6-only",
        all.len(),
        steps,
        all.iter().filter(|s| s.host_gw).count(),
        all.iter().filter(|s| s.group == Group::DualStack).count()
    );
    let mut names: Vec<&str> = all.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len(), "scenario names must be unique");
    assert!(all.iter().filter(|s| s.host_gw).count() >= 10, "host-gw subset too small");
    for g in [Group::Isolation, Group::Selectors, Group::Ports, Group::Egress, Group::Updates, Group::DualStack] {
        assert!(all.iter().any(|s| s.group == g), "no scenario in {g:?}");
    }
    // Every scenario's YAML must be valid for the model (placeholders aside) and end with a check.
    for s in &all {
        assert!(
            matches!(s.steps.last(), Some(Step::Probe | Step::Relabel(..))),
            "{:?} does not end with a probe",
            s.name
        );
        for step in &s.steps {
            if let Step::Apply(y) = step {
                let mut y = y.replace("{net:node1}", "10.244.0.0/24").replace("{net:node2}", "10.244.1.0/24");
                y = y.replace("{net6:node1}", "fd00::/64").replace("{net6:node2}", "fd01::/64");
                for ns in harness::NAMESPACES {
                    for p in harness::PODS {
                        y = y.replace(&format!("{{ip:{ns}/{p}}}"), "10.244.0.9");
                        y = y.replace(&format!("{{ip6:{ns}/{p}}}"), "fd00::9");
                    }
                }
                let left = ["{ip:", "{ip6:", "{net:", "{net6:"].iter().any(|p| y.contains(p));
                assert!(!left, "{:?}: unknown placeholder", s.name);
                for d in model::documents(&y) {
                    assert!(d["kind"] == "NetworkPolicy" && d["metadata"]["namespace"].is_string(), "{:?}", s.name);
                    assert!(d["spec"]["podSelector"].is_object(), "{:?}: no podSelector in {d}", s.name);
                }
            }
        }
    }
}

#[test]
fn vxlan_isolation() {
    run_scenarios("vxlan", false, |s| s.group == Group::Isolation);
}

#[test]
fn vxlan_selectors() {
    run_scenarios("vxlan", false, |s| s.group == Group::Selectors);
}

#[test]
fn vxlan_ports() {
    run_scenarios("vxlan", false, |s| s.group == Group::Ports);
}

#[test]
fn vxlan_egress_ipblock_policy_types() {
    run_scenarios("vxlan", false, |s| s.group == Group::Egress);
}

#[test]
fn vxlan_updates_and_deletions() {
    run_scenarios("vxlan", false, |s| s.group == Group::Updates);
}

#[test]
fn host_gw_representative() {
    run_scenarios("host-gw", false, |s| s.host_gw);
}

/// Dual-stack pods: the representative set and the IPv6-specific scenarios, probed over IPv4 and IPv6.
#[test]
fn vxlan_dual_stack() {
    run_scenarios("vxlan", true, |s| s.host_gw || s.group == Group::DualStack);
}

#[test]
fn never_unprotected_under_pod_churn_vxlan() {
    if !require_root() {
        return;
    }
    churn::never_unprotected("vxlan");
}

#[test]
fn never_unprotected_under_pod_churn_host_gw() {
    if !require_root() {
        return;
    }
    churn::never_unprotected("host-gw");
}

#[test]
fn never_unprotected_across_agent_restarts() {
    if !require_root() {
        return;
    }
    restart::never_unprotected_across_restarts("vxlan");
}

/// Tenant networks (issue 11): the truth table inside a non-default network, on a node built by hand.
#[test]
fn tenant_network_truth_table() {
    if !require_root() {
        return;
    }
    networks::truth_table_inside_a_tenant_network();
}

/// Tenant networks: equal addresses in two networks never match each other's policies.
#[test]
fn tenant_networks_with_equal_addresses_never_share_rules() {
    if !require_root() {
        return;
    }
    networks::equal_addresses_in_two_networks_never_share_rules();
}
