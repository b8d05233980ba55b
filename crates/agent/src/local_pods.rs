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

/// Reserved addresses by pod (`namespace`, `name`), each with the network whose pool holds it.
pub type Addresses = BTreeMap<(String, String), Vec<(IpAddr, String)>>;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(default)]
    pod_namespace: String,
    #[serde(default)]
    pod_name: String,
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
    use std::io::Read as _;
    let mut out = Addresses::new();
    for (network, dir) in pools(data_dir) {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
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
            out.entry((r.pod_namespace, r.pod_name)).or_default().push((ip, network.clone()));
        }
    }
    out
}

/// Gives this node's pods that have no addresses yet (their Pod object not yet updated by the kubelet) the
/// addresses the plugin reserved for them. Returns how many pods got addresses this way.
pub fn fill(model: &mut Model, node: &str, addrs: &Addresses) -> usize {
    let mut filled = 0;
    for p in model.pods.iter_mut().filter(|p| p.node == node && p.ips.is_empty()) {
        if let Some(a) = addrs.get(&(p.namespace.clone(), p.name.clone())) {
            p.ips = a.iter().map(|(ip, _)| *ip).collect();
            p.ips.sort();
            p.ips.dedup();
            filled += 1;
        }
    }
    filled
}

/// Changes whenever a reservation is made or released in any pool (or a pool appears or goes): the
/// modification times of the pool directories, whose entries the plugin links and unlinks.
pub fn stamp(data_dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut h = weft_types::digest::Fnv1a::default();
    for (name, dir) in pools(data_dir) {
        let m = std::fs::metadata(&dir).map(|m| (m.mtime(), m.mtime_nsec(), m.ino())).unwrap_or_default();
        h.update(name.as_bytes());
        h.update(&m.0.to_le_bytes());
        h.update(&m.1.to_le_bytes());
        h.update(&m.2.to_le_bytes());
    }
    h.finish()
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
        let ips = |i: usize| model.pods[i].ips.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(ips(0), ["10.244.1.7", "fd00::1:7"]);
        assert_eq!(ips(1), ["10.60.1.99"]);
        assert!(ips(2).is_empty() && ips(3).is_empty());
    }

    #[test]
    fn the_stamp_moves_when_a_reservation_comes_or_goes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s0 = stamp(d);
        // Directory times have a coarse clock on some filesystems: wait for a change rather than assume one.
        let moved = |before: u64, act: &dyn Fn()| {
            for _ in 0..200 {
                act();
                if stamp(d) != before {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            false
        };
        assert!(moved(s0, &|| reserve(d, "blue", "10.60.1.2", "y", "b")), "a new pool");
        let s1 = stamp(d);
        assert!(moved(s1, &|| {
            let _ = std::fs::remove_file(d.join("net-blue/10.60.1.3"));
            reserve(d, "blue", "10.60.1.3", "y", "c");
        }));
        let s2 = stamp(d);
        assert_eq!(stamp(d), s2, "nothing changed, same stamp");
    }
}
