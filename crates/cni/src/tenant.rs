//! Tenant networks on the plugin's side, pure: which network a pod's namespace is on (from the node file's
//! `networks`), whether that entry may be used, and where each network's IPAM pool lives.
//!
//! The node file is hostile input (whoever can write its path writes the pods' addresses and routes), so the
//! entry serving the pod's namespace is checked as strictly as the default subnet: a usable name (it names a
//! directory), a VNI in 1..=16777215 (it selects the route table and link group, [`NetworkIds`]), pod subnets
//! weft accepts inside the network's CIDRs, an MTU in range, and no other entry claiming the same name or VNI
//! with the other half different. A bad entry fails the ADD of *its* namespaces' pods (error 5, nothing
//! changed); it never sends them to the default network, and it does not affect pods of other namespaces.
//! Two entries listing one namespace: the first one in the file wins (the agent writes them sorted by name).
use crate::error::CniError;
use crate::plan::Subnets;
use crate::subnet::{pod_subnet_v4, pod_subnet_v6};
use std::path::{Path, PathBuf};
use weft_types::node_file::{NodeFile, NodeNetwork};
use weft_types::tenant::NetworkIds;

/// Prefix of a tenant network's IPAM directory inside the config's `dataDir`.
pub const POOL_PREFIX: &str = "net-";

/// What an attachment's reservations record about its network, and what DEL, GC and CHECK go by when the node
/// file no longer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRef {
    pub name: String,
    pub vni: u32,
}

impl NetworkRef {
    pub fn ids(&self) -> NetworkIds {
        NetworkIds::of(self.vni)
    }
}

/// The IPAM directory of `network` (None: the default network's, `dataDir` itself).
pub fn pool_dir(data_dir: &Path, network: Option<&NetworkRef>) -> PathBuf {
    match network {
        None => data_dir.to_path_buf(),
        Some(n) => data_dir.join(format!("{POOL_PREFIX}{}", n.name)),
    }
}

/// Every tenant pool directory under `data_dir` (sorted; none when `data_dir` does not exist). Only names a
/// network may have are taken, so a stray `net-../x` can never make GC walk out of the store.
pub fn tenant_pool_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(data_dir) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let net = name.strip_prefix(POOL_PREFIX)?;
            (is_network_name(net) && e.file_type().ok()?.is_dir()).then(|| e.path())
        })
        .collect();
    dirs.sort();
    dirs
}

/// A DNS-1123 label of at most 32 characters (what network admission requires); also a safe directory name.
pub fn is_network_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The subnets of the tenant network serving `namespace` on this node, or `None` when the pod is on the
/// default network (no namespace given, or no entry lists it). `conf_mtu` (the config's `mtu`) wins over the
/// entry's, as it does over the node file's.
pub fn resolve(
    nf: &NodeFile,
    namespace: &str,
    conf_mtu: Option<u32>,
    path: &Path,
) -> Result<Option<Subnets>, CniError> {
    if namespace.is_empty() {
        return Ok(None);
    }
    let Some(n) = nf.network_of(namespace) else {
        if nf.pending_namespaces.iter().any(|p| p == namespace) {
            return Err(CniError::TryAgainLater(format!(
                "namespace {namespace} is on a tenant network that this node does not serve yet (see weftctl \
                 network list); its pods are never put on the default network instead"
            )));
        }
        return Ok(None);
    };
    let bad = |why: String| CniError::Io(format!("node file {}: network {:?}: {why}", path.display(), n.name));
    check(nf, n, conf_mtu).map(Some).map_err(bad)
}

fn check(nf: &NodeFile, n: &NodeNetwork, conf_mtu: Option<u32>) -> Result<Subnets, String> {
    if !is_network_name(&n.name) || n.name == weft_types::tenant::DEFAULT_NETWORK {
        return Err("the name must be a DNS-1123 label of at most 32 characters, not \"default\"".into());
    }
    if n.vni == 0 || n.vni > 0xff_ffff {
        return Err(format!("VNI {} is out of range (1..=16777215)", n.vni));
    }
    if let Some(o) = nf.networks.iter().find(|o| (o.name == n.name) != (o.vni == n.vni)) {
        return Err(format!("conflicts with the entry {:?} (VNI {}): one name, one VNI", o.name, o.vni));
    }
    let v4 = pod_subnet_v4(n.subnet).map_err(|e| format!("subnet {e}"))?;
    let cidr = n.cidr.trunc();
    if cidr.prefix_len() < 8 || !cidr.contains(&v4) {
        return Err(format!("subnet {v4} is not inside the network's cidr {}", n.cidr));
    }
    let v6 = n.subnet6.map(pod_subnet_v6).transpose().map_err(|e| format!("subnet6 {e}"))?;
    let cidr6 = match (v6, n.cidr6.map(|c| c.trunc())) {
        (Some(s), Some(c)) if c.prefix_len() < 16 || !c.contains(&s) => {
            return Err(format!("subnet6 {s} is not inside the network's cidr6 {c}"))
        }
        (Some(_), c) => c,
        (None, _) => None,
    };
    if conf_mtu.is_none() && !(68..=65535).contains(&n.mtu) {
        return Err(format!("mtu {} is outside 68..=65535", n.mtu));
    }
    Ok(Subnets {
        v4,
        v6,
        mtu: conf_mtu.unwrap_or(n.mtu),
        cluster_v4: Some(cidr),
        cluster_v6: cidr6,
        network: Some(NetworkRef { name: n.name.clone(), vni: n.vni }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(name: &str, vni: u32, subnet: &str, cidr: &str, ns: &[&str]) -> serde_json::Value {
        json!({"name": name, "vni": vni, "subnet": subnet, "cidr": cidr, "mtu": 1450, "namespaces": ns})
    }

    fn nf(networks: Vec<serde_json::Value>) -> NodeFile {
        serde_json::from_value(json!({"subnet": "10.244.3.0/24", "mtu": 1450, "networks": networks})).unwrap()
    }

    fn get(nf: &NodeFile, ns: &str) -> Result<Option<Subnets>, CniError> {
        resolve(nf, ns, None, Path::new("/run/weft/node.json"))
    }

    #[test]
    fn namespaces_land_on_their_network_or_the_default() {
        let f = nf(vec![
            entry("blue", 100, "10.50.3.0/24", "10.50.0.0/16", &["team-a"]),
            entry("red", 200, "10.50.3.0/24", "10.50.0.0/16", &["team-b"]),
        ]);
        let a = get(&f, "team-a").unwrap().unwrap();
        assert_eq!(a.network, Some(NetworkRef { name: "blue".into(), vni: 100 }));
        assert_eq!((a.v4.to_string(), a.mtu), ("10.50.3.0/24".into(), 1450));
        assert_eq!(a.cluster_v4.unwrap().to_string(), "10.50.0.0/16", "a secondary attachment routes the cidr");
        let b = get(&f, "team-b").unwrap().unwrap();
        assert_eq!(b.v4, a.v4, "the same CIDR on two networks");
        assert_eq!(b.network.as_ref().unwrap().ids().table, 0x5700_00c8);
        assert!(get(&f, "other").unwrap().is_none());
        assert!(get(&f, "").unwrap().is_none(), "no K8S_POD_NAMESPACE: the default network");
        let c = resolve(&f, "team-a", Some(1300), Path::new("/x")).unwrap().unwrap();
        assert_eq!(c.mtu, 1300, "the config's mtu wins");
        assert_eq!(pool_dir(Path::new("/d"), c.network.as_ref()), Path::new("/d/net-blue"));
        assert_eq!(pool_dir(Path::new("/d"), None), Path::new("/d"));
    }

    #[test]
    fn dual_stack_entry() {
        let mut e = entry("blue", 100, "10.50.3.0/24", "10.50.0.0/16", &["a"]);
        e["subnet6"] = json!("fd00:50:0:3::/80");
        e["cidr6"] = json!("fd00:50::/48");
        let s = get(&nf(vec![e.clone()]), "a").unwrap().unwrap();
        assert_eq!(s.v6.unwrap().to_string(), "fd00:50:0:3::/80");
        assert_eq!(s.cluster_v6.unwrap().to_string(), "fd00:50::/48");
        e["cidr6"] = json!("fd00:51::/48");
        let err = get(&nf(vec![e]), "a").unwrap_err();
        assert!(err.to_string().contains("not inside the network's cidr6"), "{err}");
    }

    #[test]
    fn hostile_entries_are_refused_with_code_5_and_a_reason() {
        let cases = [
            (entry("blue", 100, "0.0.0.0/0", "0.0.0.0/0", &["a"]), "too large"),
            (entry("blue", 100, "127.0.0.0/24", "127.0.0.0/8", &["a"]), "loopback"),
            (entry("blue", 100, "10.50.3.0/31", "10.50.0.0/16", &["a"]), "too small"),
            (entry("blue", 100, "10.60.3.0/24", "10.50.0.0/16", &["a"]), "not inside the network's cidr"),
            (entry("blue", 100, "10.50.3.0/24", "10.0.0.0/4", &["a"]), "not inside the network's cidr"),
            (entry("blue", 0, "10.50.3.0/24", "10.50.0.0/16", &["a"]), "VNI 0 is out of range"),
            (entry("blue", 1 << 24, "10.50.3.0/24", "10.50.0.0/16", &["a"]), "out of range"),
            (entry("../etc", 100, "10.50.3.0/24", "10.50.0.0/16", &["a"]), "DNS-1123"),
            (entry("default", 100, "10.50.3.0/24", "10.50.0.0/16", &["a"]), "DNS-1123"),
            (entry("Blue", 100, "10.50.3.0/24", "10.50.0.0/16", &["a"]), "DNS-1123"),
        ];
        for (e, why) in cases {
            let err = get(&nf(vec![e.clone()]), "a").unwrap_err();
            assert_eq!(err.code(), 5, "{e}: {err}");
            assert!(err.to_string().contains(why), "{e}: {err}");
        }
        let mut e = entry("blue", 100, "10.50.3.0/24", "10.50.0.0/16", &["a"]);
        e["mtu"] = json!(0);
        assert!(get(&nf(vec![e.clone()]), "a").unwrap_err().to_string().contains("mtu 0"));
        assert_eq!(resolve(&nf(vec![e]), "a", Some(1400), Path::new("/x")).unwrap().unwrap().mtu, 1400);
        let mut e = entry("blue", 100, "10.50.3.0/24", "10.50.0.0/16", &["a"]);
        e["subnet6"] = json!("fe80::/64");
        assert!(get(&nf(vec![e]), "a").unwrap_err().to_string().contains("link-local"));
    }

    /// A bad entry blinds only its own namespaces: they fail (never fall back to the default network), the
    /// other networks' and the default network's pods are served.
    #[test]
    fn one_bad_entry_fails_only_its_namespaces() {
        let f = nf(vec![
            entry("bad", 0, "10.50.3.0/24", "10.50.0.0/16", &["team-a"]),
            entry("good", 7, "10.60.3.0/24", "10.60.0.0/16", &["team-b"]),
        ]);
        assert_eq!(get(&f, "team-a").unwrap_err().code(), 5);
        assert_eq!(get(&f, "team-b").unwrap().unwrap().network.unwrap().name, "good");
        assert!(get(&f, "other").unwrap().is_none());
    }

    #[test]
    fn duplicate_namespace_first_entry_wins_and_conflicting_ids_are_refused() {
        let f = nf(vec![
            entry("blue", 100, "10.50.3.0/24", "10.50.0.0/16", &["x", "team-a"]),
            entry("red", 200, "10.60.3.0/24", "10.60.0.0/16", &["team-a"]),
        ]);
        for _ in 0..3 {
            assert_eq!(get(&f, "team-a").unwrap().unwrap().network.unwrap().name, "blue", "deterministic");
        }
        let f = nf(vec![
            entry("red", 200, "10.60.3.0/24", "10.60.0.0/16", &["team-a"]),
            entry("blue", 100, "10.50.3.0/24", "10.50.0.0/16", &["team-a"]),
        ]);
        assert_eq!(get(&f, "team-a").unwrap().unwrap().network.unwrap().name, "red", "first in the file");
        // Same VNI under two names, or one name with two VNIs: the table or the pool would be shared.
        for (n2, v2) in [("red", 100), ("blue", 200)] {
            let f = nf(vec![
                entry("blue", 100, "10.50.3.0/24", "10.50.0.0/16", &["team-a"]),
                entry(n2, v2, "10.60.3.0/24", "10.60.0.0/16", &["team-b"]),
            ]);
            let e = get(&f, "team-a").unwrap_err();
            assert!(e.to_string().contains("conflicts with the entry"), "{e}");
            assert_eq!(get(&f, "team-b").unwrap_err().code(), 5);
        }
    }

    #[test]
    fn pool_dirs_are_only_network_named_directories() {
        let d = std::env::temp_dir().join(format!("weft-tenant-pools-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["net-blue", "net-red", "net-Bad", "net-", "other"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("net-file"), b"").unwrap();
        let got: Vec<String> =
            tenant_pool_dirs(&d).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(got, ["net-blue", "net-red"]);
        assert!(tenant_pool_dirs(&d.join("missing")).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
