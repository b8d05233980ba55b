//! The pod-to-pod connectivity matrix: every pod pings every other pod (in parallel), rows and columns named
//! `namespace/pod`. Each cell is read against what policy says (`verdict.rs`), so a pair that policy denies
//! shows as `deny(P1)` (expected) and only a pair policy allows but that does not answer is `FAIL` (broken).
//!
//! With tenant networks, each pair is first read by network: a pair inside one network against that network's
//! policy (the model cut down to its pods, so equal addresses of overlapping networks never mix); a pair across
//! networks is expected silent, `iso`, and one that answers is `LEAK(net)`. A destination address that a pod
//! of the source's own network also holds (overlapping CIDRs) reaches that pod, so it is not probed: `=own`.
use super::state::LabState;
use super::verdict::{Expect, PolicyView};
use crate::sh::ns_command;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, Table};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use weft_policy::PolicyRef;

/// Pings in flight at once: enough to finish a 9-pod deny-all matrix in a few seconds, few enough for a 2-core
/// machine.
const PARALLEL: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum CellState {
    Diagonal,
    Ok(f64),
    /// Silent, as policy says (indexes into `Matrix::policies`).
    Denied(Vec<usize>),
    /// Silent although policy allows it (or the pod has no address of this family).
    Fail,
    /// Answered although policy denies it: enforcement is missing (or not compiled yet).
    Leak(Vec<usize>),
    /// Across networks and silent, as isolation says.
    Isolated,
    /// Across networks and answered: isolation is broken.
    NetLeak,
    /// Across networks, but the address is also a pod's of the source's own network: not probed.
    Shadowed,
}

pub struct Matrix {
    pub names: Vec<String>,
    pub cells: Vec<Vec<CellState>>,
    /// Policies named in the cells, shown as P1, P2, … in the legend.
    pub policies: Vec<PolicyRef>,
    /// Why cells could not be read against policy (store unreachable), if so.
    pub policy_error: Option<String>,
    /// Some pod is on a tenant network (the legend explains the cross-network cells).
    pub networks: bool,
}

impl Matrix {
    fn count(&self, f: impl Fn(&CellState) -> bool) -> usize {
        self.cells.iter().flatten().filter(|c| f(c)).count()
    }

    /// Broken pairs: FAIL, LEAK and LEAK across networks.
    pub fn failures(&self) -> usize {
        self.count(|c| matches!(c, CellState::Fail | CellState::Leak(_) | CellState::NetLeak))
    }

    pub fn connected(&self) -> usize {
        self.count(|c| matches!(c, CellState::Ok(_) | CellState::Leak(_) | CellState::NetLeak))
    }

    pub fn isolated(&self) -> usize {
        self.count(|c| matches!(c, CellState::Isolated))
    }

    pub fn shadowed(&self) -> usize {
        self.count(|c| matches!(c, CellState::Shadowed))
    }

    pub fn leaks_across(&self) -> usize {
        self.count(|c| matches!(c, CellState::NetLeak))
    }

    pub fn denied(&self) -> usize {
        self.count(|c| matches!(c, CellState::Denied(_)))
    }

    fn tags(ps: &[usize]) -> String {
        ps.iter().map(|p| format!("P{}", p + 1)).collect::<Vec<_>>().join(",")
    }

    pub fn render(&self) -> String {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        let mut header = vec![Cell::new("from \\ to")];
        header.extend(self.names.iter().map(Cell::new));
        t.set_header(header);
        for (i, row) in self.cells.iter().enumerate() {
            let mut cells = vec![Cell::new(&self.names[i])];
            cells.extend(row.iter().map(|c| {
                Cell::new(match c {
                    CellState::Diagonal => "-".to_string(),
                    CellState::Ok(ms) => format!("ok {ms:.2}ms"),
                    CellState::Denied(ps) => format!("deny({})", Self::tags(ps)),
                    CellState::Fail => "FAIL".to_string(),
                    CellState::Leak(ps) => format!("LEAK({})", Self::tags(ps)),
                    CellState::Isolated => "iso".to_string(),
                    CellState::NetLeak => "LEAK(net)".to_string(),
                    CellState::Shadowed => "=own".to_string(),
                })
            }));
            t.add_row(cells);
        }
        t.to_string()
    }

    pub fn legend(&self) -> String {
        let mut s = String::from(
            "legend: ok = answered   deny(Pn) = no answer, as policy Pn says (expected)\n        \
             FAIL = no answer although policy allows it (broken)   LEAK(Pn) = answered although policy Pn denies it",
        );
        if self.networks {
            s += "\n        iso = across networks, no answer (expected)   LEAK(net) = answered across networks (broken)\n        \
                  =own = across networks, but a pod of the source's network has that address (not probed)\n        \
                  NAME@NET = a pod on tenant network NET (no @: the default network)";
        }
        for (i, p) in self.policies.iter().enumerate() {
            s += &format!("\n  P{} = denied by policy {p}", i + 1);
        }
        if let Some(e) = &self.policy_error {
            s += &format!("\n  (policy unknown, every silent pair counts as FAIL: {e})");
        }
        s
    }
}

fn ping(ns: &str, ip: &str, wait_s: u32) -> Option<f64> {
    let out = ns_command(ns, "ping").args(["-c", "1", "-W", &wait_s.to_string(), "-n", ip]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    s.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// One pod as the matrix sees it.
struct Probed {
    name: String,
    netns: String,
    ip: Option<IpAddr>,
    network: Option<String>,
    key: String,
}

/// The model cut down to the pods of one network (None: the default network): each network's policy is
/// evaluated only among its own pods, so an address another network also uses cannot match.
fn model_of(model: &weft_policy::Model, pods: &[Probed], network: &Option<String>) -> weft_policy::Model {
    let mine: std::collections::BTreeSet<&str> =
        pods.iter().filter(|p| &p.network == network).map(|p| p.key.as_str()).collect();
    let tenant: std::collections::BTreeSet<&str> =
        pods.iter().filter(|p| p.network.is_some()).map(|p| p.key.as_str()).collect();
    let mut m = model.clone();
    m.pods.retain(|p| {
        let k = format!("{}/{}", p.namespace, p.name);
        // Pods the lab does not know (registered by hand) count as the default network's.
        mine.contains(k.as_str()) || (network.is_none() && !tenant.contains(k.as_str()))
    });
    m
}

/// Pings every pair; `model` is the store's policy model (`Err` when it could not be read).
pub fn measure(lab: &LabState, v6: bool, model: &Result<weft_policy::Model, String>) -> Matrix {
    let mut pods: Vec<Probed> = lab
        .pods()
        .map(|(_, p)| {
            let ip = if v6 { p.ip6.as_deref() } else { p.ip.as_deref() };
            let key = format!("{}/{}", p.namespace, p.name);
            let name = match &p.network {
                Some(n) => format!("{key}@{n}"),
                None => key.clone(),
            };
            Probed { name, netns: p.ns.clone(), ip: ip.and_then(|s| s.parse().ok()), network: p.network.clone(), key }
        })
        .collect();
    // Rows and columns by network, then namespace/pod (x/a, x/b, … y/a): the model reads as a grid per network.
    pods.sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
    let n = pods.len();
    let mut nets: Vec<Option<String>> = pods.iter().map(|p| p.network.clone()).collect();
    nets.dedup();
    let models: Vec<weft_policy::Model> = match model {
        Ok(m) => nets.iter().map(|net| model_of(m, &pods, net)).collect(),
        Err(_) => vec![],
    };
    let views: Vec<PolicyView> = models.iter().map(PolicyView::new).collect();
    let view_of = |net: &Option<String>| nets.iter().position(|x| x == net).and_then(|i| views.get(i));
    #[derive(Clone)]
    enum Plan {
        Inside(Expect),
        Across,
        Shadowed,
    }
    let plan = |i: usize, j: usize| {
        if pods[i].network != pods[j].network {
            let own = pods.iter().any(|p| p.network == pods[i].network && p.ip.is_some() && p.ip == pods[j].ip);
            return if own { Plan::Shadowed } else { Plan::Across };
        }
        Plan::Inside(match (view_of(&pods[i].network), pods[i].ip, pods[j].ip) {
            (Some(v), Some(s), Some(d)) => v.ping(s, d),
            _ => Expect::Allowed,
        })
    };
    let pairs: Vec<(usize, usize, Plan)> = (0..n)
        .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
        .map(|(i, j)| (i, j, plan(i, j)))
        .collect();
    let rtt = Mutex::new(vec![vec![None; n]; n]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(pairs.len()) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((i, j, e)) = pairs.get(k) else { break };
                // A pair expected silent (denied, across networks) gets a shorter wait: a deny-all matrix stays quick.
                let wait = match e {
                    Plan::Shadowed => continue,
                    Plan::Inside(Expect::Allowed) => 2,
                    _ => 1,
                };
                let r = pods[*j].ip.and_then(|ip| ping(&pods[*i].netns, &ip.to_string(), wait));
                rtt.lock().expect("rtt lock")[*i][*j] = r;
            });
        }
    });
    let rtt = rtt.into_inner().expect("rtt lock");
    let mut policies: Vec<PolicyRef> = vec![];
    let mut index = |ps: &[PolicyRef]| -> Vec<usize> {
        ps.iter()
            .map(|p| match policies.iter().position(|q| q == p) {
                Some(i) => i,
                None => {
                    policies.push(p.clone());
                    policies.len() - 1
                }
            })
            .collect()
    };
    let mut cells = vec![vec![CellState::Diagonal; n]; n];
    for (i, j, e) in &pairs {
        cells[*i][*j] = match e {
            Plan::Inside(e) => classify(rtt[*i][*j], e, &mut index),
            Plan::Shadowed => CellState::Shadowed,
            Plan::Across if rtt[*i][*j].is_some() => CellState::NetLeak,
            Plan::Across => CellState::Isolated,
        };
    }
    Matrix {
        networks: pods.iter().any(|p| p.network.is_some()),
        names: pods.into_iter().map(|p| p.name).collect(),
        cells,
        policies,
        policy_error: model.as_ref().err().cloned(),
    }
}

/// A cell from the ping's answer and what policy expects; `index` numbers the policies for the legend.
fn classify(rtt: Option<f64>, e: &Expect, index: &mut impl FnMut(&[PolicyRef]) -> Vec<usize>) -> CellState {
    match (rtt, e) {
        (Some(ms), Expect::Allowed) => CellState::Ok(ms),
        (Some(_), Expect::Denied(ps)) => CellState::Leak(index(ps)),
        (None, Expect::Denied(ps)) => CellState::Denied(index(ps)),
        (None, Expect::Allowed) => CellState::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_fail_only_where_policy_allows() {
        let p = vec![PolicyRef { namespace: "x".into(), name: "deny-all".into() }];
        let mut index = |ps: &[PolicyRef]| vec![0; ps.len()];
        assert_eq!(classify(None, &Expect::Denied(p.clone()), &mut index), CellState::Denied(vec![0]));
        assert_eq!(classify(None, &Expect::Allowed, &mut index), CellState::Fail);
        assert_eq!(classify(Some(0.1), &Expect::Allowed, &mut index), CellState::Ok(0.1));
        assert_eq!(classify(Some(0.1), &Expect::Denied(p), &mut index), CellState::Leak(vec![0]));
    }

    #[test]
    fn renders_names_denials_and_failures_apart() {
        let m = Matrix {
            names: vec!["x/a".into(), "y/a".into()],
            cells: vec![
                vec![CellState::Diagonal, CellState::Fail],
                vec![CellState::Denied(vec![0]), CellState::Diagonal],
            ],
            policies: vec![PolicyRef { namespace: "x".into(), name: "deny-all".into() }],
            policy_error: None,
            networks: false,
        };
        let t = m.render();
        assert!(t.contains("x/a") && t.contains("y/a") && t.contains("deny(P1)") && t.contains("FAIL"), "{t}");
        assert!(m.legend().contains("P1 = denied by policy x/deny-all"), "{}", m.legend());
        assert_eq!((m.failures(), m.denied(), m.connected()), (1, 1, 0));
        assert!(!m.legend().contains("iso ="), "no network legend without networks");
    }

    #[test]
    fn across_networks_silence_is_expected_and_an_answer_is_a_leak() {
        let m = Matrix {
            names: vec!["x/a@blue".into(), "y/a@red".into(), "z/a".into()],
            cells: vec![
                vec![CellState::Diagonal, CellState::Isolated, CellState::NetLeak],
                vec![CellState::Shadowed, CellState::Diagonal, CellState::Isolated],
                vec![CellState::Isolated, CellState::Isolated, CellState::Diagonal],
            ],
            policies: vec![],
            policy_error: None,
            networks: true,
        };
        let t = m.render();
        assert!(t.contains("iso") && t.contains("LEAK(net)") && t.contains("=own"), "{t}");
        assert!(m.legend().contains("answered across networks (broken)"), "{}", m.legend());
        assert_eq!((m.failures(), m.isolated(), m.shadowed(), m.leaks_across()), (1, 4, 1, 1));
    }
}
