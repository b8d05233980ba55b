//! IPAM: which address each pod gets. [`pool`] is the pure address arithmetic (reserved addresses, next-fit);
//! [`store`] keeps reservations crash-safely in a directory of files (see its module comment for the protocol).
pub mod pool;
pub mod store;

pub use pool::Pool;
pub use store::{Damaged, GcReport, IpamError, IpamStore, Record};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::IpAddr;
    use std::path::PathBuf;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("weft-ipam-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Dir(p)
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last-reserved"))
                .collect();
            v.sort();
            v
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rec(cid: &str) -> Record {
        Record {
            container_id: cid.into(),
            ifname: "eth0".into(),
            pod_namespace: "ns".into(),
            pod_name: cid.into(),
            created_at: "2024-01-01T00:00:00Z".into(),
            network: None,
            vni: None,
        }
    }

    fn pools() -> Vec<Pool> {
        vec![Pool::new("10.5.0.0/29".parse().unwrap()), Pool::new("fd00:5::/125".parse().unwrap())]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allocate_is_idempotent_and_release_frees() {
        let d = Dir::new("idem");
        let s = IpamStore::open(&d.0).unwrap();
        let a = s.allocate(&rec("c1"), &pools()).unwrap();
        assert_eq!(a, vec![ip("10.5.0.2"), ip("fd00:5::2")]);
        assert_eq!(s.allocate(&rec("c1"), &pools()).unwrap(), a, "retried ADD gets the same addresses");
        let b = s.allocate(&rec("c2"), &pools()).unwrap();
        assert_eq!(b, vec![ip("10.5.0.3"), ip("fd00:5::3")]);
        assert_eq!(s.list().unwrap()[&ip("10.5.0.3")].as_ref().unwrap().container_id, "c2");
        assert_eq!(s.addresses_of("c1", "eth0").unwrap().len(), 2);
        let mut r = s.release("c1", "eth0").unwrap();
        r.sort();
        assert_eq!(r, a);
        assert!(s.release("c1", "eth0").unwrap().is_empty(), "second release is a no-op");
        assert!(s.release("never", "eth0").unwrap().is_empty());
        // next-fit: the freed .2 is not reused before the never-used .4
        assert_eq!(s.allocate(&rec("c3"), &pools()).unwrap()[0], ip("10.5.0.4"));
        assert_eq!(d.names().iter().filter(|n| n.starts_with("tmp.")).count(), 0);
    }

    #[test]
    fn exhaustion_releases_the_partial_allocation() {
        let d = Dir::new("full");
        let s = IpamStore::open(&d.0).unwrap();
        let small = vec![Pool::new("10.6.0.0/29".parse().unwrap()), Pool::new("fd00:6::/126".parse().unwrap())];
        s.allocate(&rec("a"), &small).unwrap();
        s.allocate(&rec("b"), &small).unwrap();
        let before = d.names();
        let err = s.allocate(&rec("c"), &small).unwrap_err();
        assert!(matches!(err, IpamError::Exhausted(ref p) if p == "fd00:6::/126"), "{err}");
        assert_eq!(d.names(), before, "the v4 address taken for c was given back");
    }

    #[test]
    fn crash_leftovers_are_reclaimed_by_release_and_gc() {
        let d = Dir::new("crash");
        let s = IpamStore::open(&d.0).unwrap();
        s.allocate(&rec("keep"), &pools()).unwrap();
        let key = crate::names::attachment_key("dead", "eth0");
        // Killed after writing the temp file and the index, before linking the address.
        std::fs::write(d.0.join(format!("tmp.{key}.999")), b"{\"containerId\":\"dead\"").unwrap();
        std::fs::write(d.0.join(format!("a.{key}.10.5.0.6")), b"x").unwrap();
        // Killed after a complete reservation (ADD never answered).
        let leaked = s.allocate(&rec("leak"), &pools()).unwrap();
        // A record damaged by a power cut.
        std::fs::write(d.0.join("10.5.0.5"), b"").unwrap();
        let released = s.release("dead", "eth0").unwrap();
        assert!(released.is_empty(), "the stale index owns nothing");
        assert!(!d.names().iter().any(|n| n.contains(&key)), "{:?}", d.names());
        let valid: HashSet<(String, String)> = [("keep".to_string(), "eth0".to_string())].into();
        let report = s.gc(&valid).unwrap();
        let mut gone = report.released;
        gone.sort();
        assert_eq!(report.damaged, vec![Damaged { ip: ip("10.5.0.5"), kept_for: None }]);
        let mut want = leaked.clone();
        want.push(ip("10.5.0.5"));
        want.sort();
        assert_eq!(gone, want);
        let names = d.names();
        assert_eq!(names.iter().filter(|n| n.parse::<IpAddr>().is_ok()).count(), 2, "{names:?}");
        assert_eq!(names.len(), 4, "keep's two reservations and two index entries: {names:?}");
    }

    /// A live pod's record truncated to nothing (or overwritten with garbage) must not free its address: the
    /// index entry of the valid attachment still names it.
    #[test]
    fn gc_keeps_a_valid_attachments_damaged_reservation_and_reports_it() {
        let d = Dir::new("damaged");
        let s = IpamStore::open(&d.0).unwrap();
        let live = s.allocate(&rec("live"), &pools()).unwrap();
        let dead = s.allocate(&rec("dead"), &pools()).unwrap();
        // In place, so the inode (and the index links to it) stays: what a torn write or a bad disk leaves. An
        // attachment's addresses share one inode (one record), so this damages both of its reservations.
        std::fs::OpenOptions::new().write(true).truncate(true).open(d.0.join(live[0].to_string())).unwrap();
        std::fs::write(d.0.join(live[1].to_string()), b"\x00\xffgarbage").unwrap();
        std::fs::write(d.0.join(dead[0].to_string()), b"").unwrap();
        let valid: HashSet<(String, String)> = [("live".to_string(), "eth0".to_string())].into();
        let report = s.gc(&valid).unwrap();
        let mut want = dead.clone();
        want.sort();
        assert_eq!(report.released, want);
        let owner = Some(("live".to_string(), "eth0".to_string()));
        let mut damaged =
            vec![Damaged { ip: live[0], kept_for: owner.clone() }, Damaged { ip: live[1], kept_for: owner }];
        damaged.extend(dead.iter().map(|ip| Damaged { ip: *ip, kept_for: None }));
        damaged.sort_by_key(|d| d.ip);
        assert_eq!(report.damaged, damaged);
        assert_eq!(s.addresses_of("live", "eth0").unwrap().len(), 2, "still reserved");
        let next = s.allocate(&rec("new"), &pools()).unwrap();
        assert!(!next.iter().any(|a| live.contains(a)), "{next:?} reuses a live pod's address {live:?}");
    }

    /// The hint is replaced by rename, never truncated and rewritten in place: a second link to the old hint
    /// keeps its content (in-place writes would change it, and a SIGKILL between truncate and write empties it).
    #[test]
    fn hint_is_replaced_atomically() {
        let d = Dir::new("hint");
        let s = IpamStore::open(&d.0).unwrap();
        s.allocate(&rec("a"), &pools()).unwrap();
        let hint = d.0.join("last-reserved-v4");
        std::fs::hard_link(&hint, d.0.join("old-hint")).unwrap();
        s.allocate(&rec("b"), &pools()).unwrap();
        assert_eq!(std::fs::read_to_string(d.0.join("old-hint")).unwrap(), "10.5.0.2");
        assert_eq!(std::fs::read_to_string(&hint).unwrap(), "10.5.0.3");
        assert!(!d.names().iter().any(|n| n.contains("tmp")), "{:?}", d.names());
    }

    #[test]
    fn parallel_allocations_never_collide() {
        let d = Dir::new("par");
        let pools = vec![Pool::new("10.8.0.0/24".parse().unwrap())];
        let got: Vec<IpAddr> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..64)
                .map(|i| {
                    let (dir, pools) = (&d.0, &pools);
                    sc.spawn(move || IpamStore::open(dir).unwrap().allocate(&rec(&format!("c{i}")), pools).unwrap()[0])
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let distinct: HashSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 64);
        let s = IpamStore::open(&d.0).unwrap();
        for i in 0..64 {
            assert_eq!(s.release(&format!("c{i}"), "eth0").unwrap().len(), 1);
        }
        assert!(s.list().unwrap().is_empty());
    }

    /// A default-network record is byte-for-byte what it was before tenant networks; a tenant record names
    /// its network and VNI, and reads back.
    #[test]
    fn records_name_the_tenant_network_only_when_there_is_one() {
        let plain = serde_json::to_string(&rec("c")).unwrap();
        assert!(!plain.contains("network") && !plain.contains("vni"), "{plain}");
        let old: Record = serde_json::from_str(r#"{"containerId":"c","ifname":"eth0"}"#).unwrap();
        assert_eq!((old.network, old.vni), (None, None), "records written before networks still read");
        let d = Dir::new("tenantrec");
        let s = IpamStore::open(&d.0).unwrap();
        let mut r = rec("t");
        (r.network, r.vni) = (Some("blue".into()), Some(100));
        s.allocate(&r, &pools()).unwrap();
        let back = s.record_of("t", "eth0").unwrap().unwrap();
        assert_eq!((back.network.as_deref(), back.vni), (Some("blue"), Some(100)));
        assert!(s.record_of("nobody", "eth0").unwrap().is_none());
        assert!(s.mentions("t", "eth0").unwrap() && !s.mentions("nobody", "eth0").unwrap());
        s.release("t", "eth0").unwrap();
        assert!(!s.mentions("t", "eth0").unwrap(), "released: nothing names it any more");
        let key = crate::names::attachment_key("k", "eth0");
        std::fs::write(d.0.join(format!("tmp.{key}.1")), b"").unwrap();
        assert!(s.mentions("k", "eth0").unwrap(), "a killed ADD's temp file counts");
    }

    #[test]
    fn subnet_change_moves_the_attachment() {
        let d = Dir::new("move");
        let s = IpamStore::open(&d.0).unwrap();
        s.allocate(&rec("c"), &[Pool::new("10.9.0.0/24".parse().unwrap())]).unwrap();
        let now = s.allocate(&rec("c"), &[Pool::new("10.10.0.0/24".parse().unwrap())]).unwrap();
        assert_eq!(now, vec![ip("10.10.0.2")]);
        assert_eq!(s.list().unwrap().len(), 1, "the address in the old subnet was released");
    }
}
