//! Probing the full matrix and comparing it with the reference model.
//!
//! A probe round runs one `weft-probe matrix` per source (9 pods and the 2 nodes) in parallel, each probing all
//! its targets at once, so a round costs about one timeout however many cells are denied. Cells observed denied
//! where the model expects allowed are probed once more with a long timeout before they count as failures (a
//! busy 2-core machine can delay an answer); cells observed allowed where the model expects denied are never
//! retried — a packet that got through is a real failure. Every round uses fresh UDP source ports (see
//! weft-probe), so no probe rides on the conntrack entry of an earlier, allowed one.
use crate::harness::{probe_bin, PolicyLab, SERVICES};
use crate::model::Family;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

const PROBE_TIMEOUT_MS: u64 = 300;
const RETRY_TIMEOUT_MS: u64 = 1500;
/// UDP source ports handed out to rounds: below the kernel's ephemeral range, and not reused within a lab's
/// lifetime in practice (20 000 ports, at most 72 per source and round).
pub const UDP_PORTS: (u16, u16) = (10_000, 30_000);

/// The UDP source-port base of each of `lens` probe jobs (one port per target), from `next` on, wrapping inside
/// UDP_PORTS, so no probe reuses a recent probe's ports (and its conntrack entry).
pub fn udp_bases(next: &mut u16, lens: impl Iterator<Item = usize>) -> Vec<u16> {
    lens.map(|n| {
        let base = *next;
        *next += n as u16;
        if *next > UDP_PORTS.1 {
            *next = UDP_PORTS.0;
        }
        base
    })
    .collect()
}

/// (source label, source netns, targets).
type Job = (String, String, Vec<String>);
/// (source label, target) → allowed.
type Cells = BTreeMap<(String, String), bool>;

fn target(ip: IpAddr, (port, proto): (u16, &str)) -> String {
    format!("{}/{}", SocketAddr::new(ip, port), proto.to_lowercase())
}

impl PolicyLab {
    /// Every source's probes, in parallel.
    fn run_probes(&mut self, jobs: &[Job], timeout_ms: u64) -> Cells {
        let bases = udp_bases(&mut self.udp_port, jobs.iter().map(|j| j.2.len()));
        let jobs = jobs
            .iter()
            .zip(bases)
            .map(|((label, netns, targets), base)| (label.clone(), netns.as_str(), base, targets.as_slice()))
            .collect();
        weft_e2e::probe_matrix(probe_bin(), timeout_ms, jobs)
    }

    /// Probes the full matrix (pods × pods × services × address families, plus every node to its own pods) and
    /// compares it with the model; returns the rendered truth tables of the differences, or None if they agree.
    pub fn check(&mut self) -> Option<String> {
        let mut jobs = vec![];
        let mut expected = BTreeMap::new();
        for src in &self.pods {
            let mut targets = vec![];
            for f in &self.families {
                for dst in &self.pods {
                    let ip = dst.pod.addr(*f).expect("pod address of a probed family");
                    for s in SERVICES {
                        let t = target(ip, s);
                        let want = self.world.allowed(&src.pod, &dst.pod, s.0, s.1, *f);
                        expected.insert((src.pod.key(), t.clone()), want);
                        targets.push(t);
                    }
                }
            }
            jobs.push((src.pod.key(), src.netns.clone(), targets));
        }
        // Kubernetes requires node → local pod (kubelet probes) to pass whatever the policies say.
        for (node, netns, _) in &self.nodes {
            let mut targets = vec![];
            for f in &self.families {
                for dst in self.pods.iter().filter(|p| &p.pod.node == node) {
                    for s in SERVICES {
                        let t = target(dst.pod.addr(*f).expect("address"), s);
                        expected.insert((node.clone(), t.clone()), true);
                        targets.push(t);
                    }
                }
            }
            jobs.push((node.clone(), netns.clone(), targets));
        }
        self.rounds += 1;
        let mut observed = self.run_probes(&jobs, PROBE_TIMEOUT_MS);
        // Expected allowed, seen denied: ask again, patiently, before calling it a failure.
        let retry: Vec<Job> = jobs
            .iter()
            .filter_map(|(label, netns, targets)| {
                let t: Vec<String> = targets
                    .iter()
                    .filter(|t| {
                        let k = (label.clone(), (*t).clone());
                        expected[&k] && !observed[&k]
                    })
                    .cloned()
                    .collect();
                (!t.is_empty()).then(|| (label.clone(), netns.clone(), t))
            })
            .collect();
        if !retry.is_empty() {
            self.retried += retry.iter().map(|r| r.2.len()).sum::<usize>();
            observed.extend(self.run_probes(&retry, RETRY_TIMEOUT_MS));
        }
        let wrong = expected.keys().filter(|k| expected[*k] != observed[*k]).count();
        (wrong > 0).then(|| self.render(&expected, &observed, wrong))
    }

    /// Kubernetes-style truth tables, one per service and family that differs: `.` allowed and expected, `x`
    /// denied and expected, `A!` allowed but expected denied, `D!` denied but expected allowed; nodes probe
    /// only their own pods.
    fn render(&self, expected: &Cells, observed: &Cells, wrong: usize) -> String {
        let mut s = format!("{wrong} cells differ from the reference model\n");
        let sources: Vec<String> =
            self.pods.iter().map(|p| p.pod.key()).chain(self.nodes.iter().map(|n| n.0.clone())).collect();
        for f in &self.families {
            for svc in SERVICES {
                let key = |src: &String, d: &crate::harness::LabPod| {
                    (src.clone(), target(d.pod.addr(*f).expect("address"), svc))
                };
                let differs =
                    |src: &String| self.pods.iter().any(|d| expected.get(&key(src, d)) != observed.get(&key(src, d)));
                if !sources.iter().any(differs) {
                    s += &format!("\n{}/{} {f:?}: as expected\n", svc.0, svc.1);
                    continue;
                }
                s += &format!("\n{}/{} {f:?}   (rows: from, columns: to)\n{:>8}", svc.0, svc.1, "");
                for d in &self.pods {
                    s += &format!("{:>5}", d.pod.key());
                }
                s += "\n";
                for src in &sources {
                    s += &format!("{src:>8}");
                    for d in &self.pods {
                        s += match (expected.get(&key(src, d)), observed.get(&key(src, d))) {
                            (None, _) | (_, None) => "    -",
                            (Some(true), Some(true)) => "    .",
                            (Some(false), Some(false)) => "    x",
                            (Some(false), Some(true)) => "   A!",
                            (Some(true), Some(false)) => "   D!",
                        };
                    }
                    s += "\n";
                }
            }
        }
        let placement: Vec<String> = self.pods.iter().map(|p| format!("{}@{}", p.pod.key(), p.pod.node)).collect();
        s += &format!("\npods: {}\npolicies:\n", placement.join(" "));
        for (k, v) in &self.world.policies {
            s += &format!("  {k}: {v}\n");
        }
        s
    }
}

/// The address families probed in a lab: IPv4, and IPv6 too when the pods are dual-stack.
pub fn families(dual_stack: bool) -> Vec<Family> {
    if dual_stack {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}
