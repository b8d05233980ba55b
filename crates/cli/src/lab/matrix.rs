//! The pod-to-pod connectivity matrix: every pod pings every other pod (in parallel), printed as a table.
use super::state::LabState;
use crate::sh::ns_command;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, Table};

pub struct Matrix {
    pub names: Vec<String>,
    /// `rtt[i][j]`: milliseconds of pod i → pod j, None if unanswered; diagonal is None.
    pub rtt: Vec<Vec<Option<f64>>>,
}

impl Matrix {
    pub fn failures(&self) -> usize {
        let n = self.names.len();
        (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).filter(|&(i, j)| i != j && self.rtt[i][j].is_none()).count()
    }

    pub fn render(&self) -> String {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        let mut header = vec![Cell::new("from \\ to")];
        header.extend(self.names.iter().map(Cell::new));
        t.set_header(header);
        for (i, row) in self.rtt.iter().enumerate() {
            let mut cells = vec![Cell::new(&self.names[i])];
            for (j, v) in row.iter().enumerate() {
                cells.push(Cell::new(match (i == j, v) {
                    (true, _) => "-".to_string(),
                    (false, Some(ms)) => format!("ok {ms:.2}ms"),
                    (false, None) => "FAIL".to_string(),
                }));
            }
            t.add_row(cells);
        }
        t.to_string()
    }
}

fn ping(ns: &str, ip: &str) -> Option<f64> {
    let out = ns_command(ns, "ping").args(["-c", "1", "-W", "2", "-n", ip]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    s.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()
}

pub fn measure(lab: &LabState, v6: bool) -> Matrix {
    let pods: Vec<(String, String, Option<String>)> = lab
        .pods()
        .map(|(_, p)| (p.name.clone(), p.ns.clone(), if v6 { p.ip6.clone() } else { p.ip.clone() }))
        .collect();
    let n = pods.len();
    let mut rtt = vec![vec![None; n]; n];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let pods = &pods;
                s.spawn(move || {
                    (0..n)
                        .map(|j| {
                            if i == j {
                                return None;
                            }
                            pods[j].2.as_deref().and_then(|ip| ping(&pods[i].1, ip))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            rtt[i] = h.join().unwrap_or_else(|_| vec![None; n]);
        }
    });
    Matrix { names: pods.into_iter().map(|p| p.0).collect(), rtt }
}
