//! The upstream-style NetworkPolicy truth table (tests/policy: namespaces x, y, z × pods a, b, c on two nodes,
//! TCP and UDP on ports 80 and 81, every cell against the reference model) with x, y and z on a tenant network:
//! policy inside a network behaves as on the default network. The lab, model, probing and scenarios are
//! tests/policy's own (`PolicyLab::up_on`); this file only runs them, as tests/policy.rs does.
use crate::harness::{default_ns_labels, eventually, explain_agrees, PolicyLab, NAMESPACES};
use crate::model;
use crate::scenarios::{self, Scenario, Step};
use std::time::{Duration, Instant};

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
                if let Some(diff) = eventually(lab, Duration::from_secs(10)) {
                    return Err(format!("10 s after relabelling namespace {ns} (step {i}):\n{diff}"));
                }
            }
        }
    }
    Ok(())
}

/// Runs the picked scenarios in one lab whose x, y, z are on `network` (`NAME:CIDR:VNI`).
pub fn run(network: &str, pick: impl Fn(&Scenario) -> bool) {
    let t0 = Instant::now();
    let mut lab = PolicyLab::up_on("vxlan", false, Some(network));
    for p in &lab.pods {
        let cidr: ipnet_like::Net = network.split(':').nth(1).unwrap().parse().unwrap();
        assert!(cidr.contains(p.pod.ip), "{} has {}, not an address of {network}", p.pod.key(), p.pod.ip);
    }
    let picked: Vec<Scenario> = scenarios::all().into_iter().filter(|s| pick(s)).collect();
    assert!(!picked.is_empty(), "no scenario picked");
    let mut failures = vec![];
    for sc in &picked {
        let t = Instant::now();
        let result = run_one(&mut lab, sc);
        println!("{:>6.2} s  {}{}", t.elapsed().as_secs_f64(), sc.name, if result.is_err() { "  FAILED" } else { "" });
        if let Err(e) = result {
            failures.push(format!("=== scenario {:?} on {network}: {e}", sc.name));
            for ns in NAMESPACES {
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
        "{network}: {} scenarios, {} probe rounds, {} cells re-probed, total {:.1} s",
        picked.len(),
        lab.rounds,
        lab.retried,
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} of {} scenarios failed:\n{}", failures.len(), picked.len(), failures.join("\n"));
}

/// An IPv4 CIDR, enough to check a pod's address (the test crate has no ipnet).
mod ipnet_like {
    use std::net::Ipv4Addr;
    pub struct Net(u32, u32);
    impl std::str::FromStr for Net {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let (a, l) = s.split_once('/').ok_or("no prefix")?;
            let a: Ipv4Addr = a.parse().map_err(|e| format!("{e}"))?;
            let l: u32 = l.parse().map_err(|e| format!("{e}"))?;
            let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            Ok(Net(u32::from(a) & mask, mask))
        }
    }
    impl Net {
        pub fn contains(&self, a: Ipv4Addr) -> bool {
            u32::from(a) & self.1 == self.0
        }
    }
}
