//! This node's pod addresses as the CNI plugin recorded them: every reservation in its IPAM pools (the default
//! network's in `dataDir`, a tenant network's in `dataDir/net-NAME`, one file per address, named by it) holds
//! the pod's namespace and name from the runtime's `CNI_ARGS`.
//!
//! Why the agent reads them: in Kubernetes mode a Pod object carries its addresses only once the kubelet has
//! reported the sandbox (seconds after the ADD). Until then the pod would sit in the new-pod default-deny, so an
//! init container that needs the network at once fails. With the reservations the pod's policy is compiled as
//! soon as the plugin has its address: the labels come from the Pod object (the API's word), the addresses from
//! the plugin (this node's word), never a Pod object's claim to an address on this node.
//!
//! The same records tell which network each address came from, so `stranded` names pods exactly, also when
//! networks overlap.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use weft_policy::{Model, DEFAULT_NETWORK};

/// A record larger than this is not the plugin's (its records are ~200 bytes): skipped.
const MAX_RECORD: u64 = 4096;

/// Reserved addresses by pod (`namespace`, `name`).
pub type Addresses = BTreeMap<(String, String), Vec<Held>>;

/// One reservation: the address, the network whose pool holds it, the sandbox (container id) it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub ip: IpAddr,
    pub network: String,
    pub container: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(default)]
    container_id: String,
    #[serde(default)]
    pod_namespace: String,
    #[serde(default)]
    pod_name: String,
}

/// The network each namespace of the model is on: the first network listing it, as the compiler decides
/// (weft_policy::eval); namespaces not listed are on the default network.
pub fn namespace_networks(model: &Model) -> BTreeMap<&str, &str> {
    let mut ns_net: BTreeMap<&str, &str> = BTreeMap::new();
    for n in &model.networks {
        for ns in &n.namespaces {
            ns_net.entry(ns.as_str()).or_insert(n.name.as_str());
        }
    }
    ns_net
}

/// The pools in `data_dir`: (network name, directory).
fn pools(data_dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut out = vec![(DEFAULT_NETWORK.to_string(), data_dir.to_path_buf())];
    if let Ok(dir) = std::fs::read_dir(data_dir) {
        for e in dir.flatten() {
            let Some(name) =
                e.file_name().to_str().and_then(|f| f.strip_prefix(crate::networks::POOL_PREFIX)).map(str::to_string)
            else {
                continue;
            };
            if !name.is_empty() && e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push((name, e.path()));
            }
        }
    }
    out.sort();
    out
}

/// Every reservation of every pool. Unreadable, oversized or foreign files are skipped: one bad file never hides
/// the others.
pub fn scan(data_dir: &Path) -> Addresses {
    scan_pools(&pools(data_dir))
}

fn scan_pools(pools: &[(String, std::path::PathBuf)]) -> Addresses {
    use std::io::Read as _;
    let mut out = Addresses::new();
    for (network, dir) in pools {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let Ok(ip) = e.file_name().to_string_lossy().parse::<IpAddr>() else { continue };
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let mut text = String::new();
            let read = std::fs::File::open(e.path()).and_then(|f| f.take(MAX_RECORD + 1).read_to_string(&mut text));
            if read.is_err() || text.len() as u64 > MAX_RECORD {
                continue;
            }
            let Ok(r) = serde_json::from_str::<Record>(&text) else { continue };
            if r.pod_namespace.is_empty() || r.pod_name.is_empty() {
                continue;
            }
            let held = Held { ip, network: network.clone(), container: r.container_id };
            out.entry((r.pod_namespace, r.pod_name)).or_default().push(held);
        }
    }
    out
}

/// Gives this node's pods that have no addresses yet (their Pod object not yet updated by the kubelet) the
/// addresses the plugin reserved for them, from the pool of their namespace's network only: the compiler puts
/// a pod's addresses in that network's link group, and an address of another pool (the namespace moved while
/// the pod was pending) could be a different pod's there when networks overlap. Reservations for more than one
/// sandbox (a stale one beside the new one) are ambiguous: nothing is filled, the pod waits for its Pod object.
/// Returns how many pods got addresses this way.
pub fn fill(model: &mut Model, node: &str, addrs: &Addresses) -> usize {
    let ns_net: BTreeMap<String, String> =
        namespace_networks(model).into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let mut filled = 0;
    for p in model.pods.iter_mut().filter(|p| p.node == node && p.ips.is_empty()) {
        let Some(held) = addrs.get(&(p.namespace.clone(), p.name.clone())) else { continue };
        let want = ns_net.get(&p.namespace).map_or(DEFAULT_NETWORK, String::as_str);
        let mine: Vec<&Held> = held.iter().filter(|h| h.network == want).collect();
        let sandboxes: std::collections::BTreeSet<&str> = mine.iter().map(|h| h.container.as_str()).collect();
        if sandboxes.len() != 1 {
            continue;
        }
        p.ips = mine.iter().map(|h| h.ip).collect();
        p.ips.sort();
        p.ips.dedup();
        filled += 1;
    }
    filled
}

/// Watches the pools cheaply: [`Watch::changed`] is one stat per pool directory (their entries are what the
/// plugin links and unlinks; the default pool is `data_dir` itself, so a pool coming or going shows there too).
/// Directories are listed and records read again only after a change.
pub struct Watch {
    data_dir: std::path::PathBuf,
    pools: Vec<(String, std::path::PathBuf)>,
    stamp: u64,
    addrs: Addresses,
}

impl Watch {
    pub fn new(data_dir: &Path) -> Watch {
        let mut w = Watch { data_dir: data_dir.to_path_buf(), pools: vec![], stamp: 0, addrs: Addresses::new() };
        w.rescan();
        w
    }

    fn current(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut h = weft_types::digest::Fnv1a::default();
        for (name, dir) in &self.pools {
            let m = std::fs::metadata(dir).map(|m| (m.mtime(), m.mtime_nsec(), m.ino())).unwrap_or_default();
            h.update(name.as_bytes());
            h.update(&m.0.to_le_bytes());
            h.update(&m.1.to_le_bytes());
            h.update(&m.2.to_le_bytes());
        }
        h.finish()
    }

    /// Lists the pools, takes their stamp, then reads the records: a change made while reading shows as a new
    /// stamp at the next look.
    fn rescan(&mut self) {
        self.pools = pools(&self.data_dir);
        self.stamp = self.current();
        self.addrs = scan_pools(&self.pools);
    }

    /// Whether a reservation was made or released (or a pool came or went) since the last look; the records
    /// are read again when so.
    pub fn changed(&mut self) -> bool {
        if self.current() == self.stamp {
            return false;
        }
        self.rescan();
        true
    }

    /// The records as of the last change (`full`: read them all again, as a periodic pass does, in case a
    /// change fell within one tick of the directory clock).
    pub fn addresses(&mut self, full: bool) -> &Addresses {
        if full {
            self.rescan();
        }
        &self.addrs
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A reservation as the plugin writes it.
    pub(crate) fn reserve(dir: &Path, pool: &str, ip: &str, ns: &str, name: &str) {
        let d = if pool == DEFAULT_NETWORK { dir.to_path_buf() } else { dir.join(format!("net-{pool}")) };
        std::fs::create_dir_all(&d).unwrap();
        let rec = serde_json::json!({"containerId": "c1", "ifname": "eth0", "podNamespace": ns, "podName": name});
        std::fs::write(d.join(ip), rec.to_string()).unwrap();
    }

    #[test]
    fn a_pod_without_addresses_gets_what_the_plugin_reserved_for_it_and_only_on_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        reserve(d, DEFAULT_NETWORK, "10.244.1.7", "x", "a");
        reserve(d, DEFAULT_NETWORK, "fd00::1:7", "x", "a");
        reserve(d, "blue", "10.60.1.2", "y", "b");
        // Index entries, hints, foreign and oversized files are not records.
        std::fs::write(d.join("a.abc.10.244.1.7"), b"{}").unwrap();
        std::fs::write(d.join("last-reserved-v4"), b"10.244.1.7").unwrap();
        std::fs::write(d.join("10.244.1.8"), b"not json").unwrap();
        std::fs::write(d.join("10.244.1.9"), vec![b' '; 10_000]).unwrap();
        let addrs = scan(d);
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        let pod = |ns: &str, name: &str, node: &str, ips: &[&str]| weft_policy::Pod {
            namespace: ns.into(),
            name: name.into(),
            node: node.into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ..Default::default()
        };
        let mut model = Model {
            pods: vec![
                pod("x", "a", "n1", &[]),
                pod("y", "b", "n1", &["10.60.1.99"]), // the Pod object's own addresses win once it has them
                pod("x", "a-twin", "n1", &[]),        // no reservation: stays without addresses
                pod("y", "b", "n2", &[]),             // another node's: its reservations are not here
            ],
            ..Default::default()
        };
        assert_eq!(fill(&mut model, "n1", &addrs), 1);
        let ips = |m: &Model, i: usize| m.pods[i].ips.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(ips(&model, 0), ["10.244.1.7", "fd00::1:7"]);
        assert_eq!(ips(&model, 1), ["10.60.1.99"]);
        assert!(ips(&model, 2).is_empty() && ips(&model, 3).is_empty());

        // y/b pending, its namespace on the default network now, its only reservation in blue's pool: not
        // filled (in the default group the address could be another pod's).
        let mut m2 = Model { pods: vec![pod("y", "b", "n1", &[])], ..Default::default() };
        assert_eq!(fill(&mut m2, "n1", &addrs), 0);
        m2.networks = vec![weft_policy::Network { name: "blue".into(), group: 7, namespaces: vec!["y".into()] }];
        assert_eq!(fill(&mut m2, "n1", &addrs), 1, "on blue it is filled");
        assert_eq!(ips(&m2, 0), ["10.60.1.2"]);
        // Two sandboxes' reservations for one pod (a stale one and a new one): ambiguous, nothing filled.
        let stale = tempfile::tempdir().unwrap();
        reserve(stale.path(), DEFAULT_NETWORK, "10.244.1.20", "x", "a");
        let rec = serde_json::json!({"containerId": "c2", "ifname": "eth0", "podNamespace": "x", "podName": "a"});
        std::fs::write(stale.path().join("10.244.1.21"), rec.to_string()).unwrap();
        let mut m3 = Model { pods: vec![pod("x", "a", "n1", &[])], ..Default::default() };
        assert_eq!(fill(&mut m3, "n1", &scan(stale.path())), 0);
    }

    #[test]
    fn the_watch_sees_a_reservation_come_or_go_and_rereads_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut w = Watch::new(d);
        assert!(!w.changed(), "nothing happened");
        // Directory times have a coarse clock on some filesystems: act until a change shows rather than assume
        // one per action.
        let mut seen = |act: &dyn Fn()| {
            for _ in 0..200 {
                act();
                if w.changed() {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            false
        };
        assert!(seen(&|| reserve(d, "blue", "10.60.1.2", "y", "b")), "a new pool");
        assert!(seen(&|| {
            let _ = std::fs::remove_file(d.join("net-blue/10.60.1.3"));
            reserve(d, "blue", "10.60.1.3", "y", "c");
        }));
        assert!(!w.changed(), "nothing changed since");
        assert!(w.addresses(false).contains_key(&("y".to_string(), "c".to_string())), "records read again");
    }
}
