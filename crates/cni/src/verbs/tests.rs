//! The verbs against an in-memory [`PodNet`] and a real (temp-dir) IPAM store: ordering, undo on failure,
//! idempotence and GC selection, without root.
use crate::config::Attachment;
use crate::ipam::IpamStore;
use crate::names;
use crate::{run, Ctx, Outcome};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use weft_dataplane::pod::{Defaults, LinkObs, NeighObs, PodNet, PodObserved, PodSpec, RouteObs};
use weft_dataplane::DataplaneError;
use weft_types::node_file::{NodeFile, NodeFileError};

#[derive(Default)]
pub(super) struct Fake {
    /// host veth name → (ifindex, spec, up)
    pub(super) links: RefCell<BTreeMap<String, (u32, PodSpec, bool)>>,
    pub(super) next: Cell<u32>,
    pub(super) fail_create: Cell<bool>,
    pub(super) tamper: Cell<bool>,
    pub(super) calls: RefCell<Vec<String>>,
    /// Default routes the pod already has (from another attachment).
    pub(super) defaults: Cell<Defaults>,
}

impl PodNet for Fake {
    type Netns = PathBuf;
    fn open_netns(&self, path: &Path) -> Result<PathBuf, DataplaneError> {
        if path.starts_with("/gone") {
            return Err(DataplaneError::Netns {
                path: path.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Ok(path.to_path_buf())
    }
    fn existing_defaults(&self, _: &PathBuf, _: &str) -> Result<Defaults, DataplaneError> {
        Ok(self.defaults.get())
    }
    fn ensure_forwarding(&self, v4: bool, v6: bool) -> Result<(), DataplaneError> {
        self.calls.borrow_mut().push(format!("forwarding {v4} {v6}"));
        Ok(())
    }
    fn create(&self, _: &PathBuf, spec: &PodSpec) -> Result<(), DataplaneError> {
        self.next.set(self.next.get() + 1);
        // Like the kernel: the veth exists before configuration can fail.
        self.links.borrow_mut().insert(spec.host_ifname.clone(), (self.next.get(), spec.clone(), true));
        self.calls.borrow_mut().push(format!("create {}", spec.host_ifname));
        if self.fail_create.get() {
            return Err(DataplaneError::Netlink("injected failure".into()));
        }
        Ok(())
    }
    fn detach(&self, name: &str) -> Result<Option<u32>, DataplaneError> {
        self.calls.borrow_mut().push(format!("detach {name}"));
        Ok(self.links.borrow_mut().get_mut(name).map(|l| {
            l.2 = false;
            l.0
        }))
    }
    fn delete_index(&self, index: u32, name: &str) -> Result<(), DataplaneError> {
        self.calls.borrow_mut().push(format!("delete_index {index} {name}"));
        self.links.borrow_mut().retain(|n, l| !(n == name && l.0 == index));
        Ok(())
    }
    fn delete(&self, name: &str) -> Result<bool, DataplaneError> {
        self.calls.borrow_mut().push(format!("delete {name}"));
        Ok(self.links.borrow_mut().remove(name).is_some())
    }
    fn observe(&self, _: &PathBuf, spec: &PodSpec) -> Result<PodObserved, DataplaneError> {
        let links = self.links.borrow();
        let Some((idx, s, up)) = links.get(&spec.host_ifname) else { return Ok(PodObserved::default()) };
        let link = |index, name: &str, mac, peer| LinkObs {
            index,
            name: name.into(),
            mac: Some(mac),
            mtu: s.mtu,
            up: *up,
            peer_index: Some(peer),
            kind_veth: true,
            alias: None,
            group: 0,
        };
        let host_len = |ip: std::net::IpAddr| if ip.is_ipv4() { 32 } else { 128 };
        Ok(PodObserved {
            pod_link: Some(link(2, &s.pod_ifname, s.pod_mac, *idx)),
            pod_addrs: if self.tamper.get() {
                vec![]
            } else {
                s.addrs.iter().map(|a| (a.ip, host_len(a.ip))).collect()
            },
            pod_routes: s
                .routes
                .iter()
                .map(|r| RouteObs {
                    dst: r.dst.network(),
                    prefix_len: r.dst.prefix_len(),
                    gateway: Some(r.gateway),
                    oif: Some(2),
                })
                .collect(),
            pod_neighbours: s
                .addrs
                .iter()
                .map(|a| NeighObs { ip: a.gateway, mac: Some(s.host_mac), ifindex: 2, permanent: true })
                .collect(),
            host_link: Some(LinkObs { group: s.host_group(), ..link(*idx, &s.host_ifname, s.host_mac, 2) }),
            host_routes: s
                .addrs
                .iter()
                .map(|a| RouteObs { dst: a.ip, prefix_len: host_len(a.ip), gateway: None, oif: Some(*idx) })
                .collect(),
            host_neighbours: s
                .addrs
                .iter()
                .map(|a| NeighObs { ip: a.ip, mac: Some(s.pod_mac), ifindex: *idx, permanent: true })
                .collect(),
        })
    }
    fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>, DataplaneError> {
        Ok(self.links.borrow().keys().filter(|n| n.starts_with(prefix)).cloned().collect())
    }
}

pub(super) struct World {
    pub(super) fake: Fake,
    pub(super) dir: PathBuf,
    pub(super) reaped: RefCell<Vec<(u32, String)>>,
    pub(super) reap_fails: Cell<bool>,
    pub(super) node_file: RefCell<Option<NodeFile>>,
    pub(super) logs: RefCell<Vec<String>>,
}

impl World {
    pub(super) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-verbs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        World {
            fake: Fake::default(),
            dir,
            reaped: RefCell::default(),
            reap_fails: Cell::new(false),
            node_file: RefCell::new(None),
            logs: RefCell::default(),
        }
    }

    pub(super) fn conf(&self, version: &str, extra: &str) -> String {
        format!(r#"{{"cniVersion":"{version}","name":"tnet","type":"weft","dataDir":"{}"{extra}}}"#, self.dir.display())
    }

    fn static_conf(&self, version: &str) -> String {
        self.conf(version, r#","ipam":{"subnet":"10.50.0.0/24","subnet6":"fd00:50::/64"}"#)
    }

    pub(super) fn call(&self, verb: &str, cid: &str, netns: &str, stdin: &str) -> Outcome {
        self.call_in(verb, cid, netns, stdin, "")
    }

    /// `call` for a pod of Kubernetes namespace `k8s_ns` (in CNI_ARGS; none when empty).
    pub(super) fn call_in(&self, verb: &str, cid: &str, netns: &str, stdin: &str, k8s_ns: &str) -> Outcome {
        let mut env: HashMap<&str, String> = [
            ("CNI_COMMAND", verb.to_string()),
            ("CNI_CONTAINERID", cid.to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_NETNS", netns.to_string()),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
        ]
        .into();
        if !k8s_ns.is_empty() {
            env.insert("CNI_ARGS", format!("K8S_POD_NAMESPACE={k8s_ns};K8S_POD_NAME=p-{cid}"));
        }
        let reap = |i: u32, n: &str| {
            if self.reap_fails.get() {
                return Err(std::io::Error::other("no reaper"));
            }
            self.reaped.borrow_mut().push((i, n.to_string()));
            Ok(())
        };
        let load = |p: &Path| {
            self.node_file.borrow().clone().ok_or_else(|| NodeFileError::Io {
                path: p.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        };
        let log = |lines: &[String]| self.logs.borrow_mut().extend_from_slice(lines);
        let ctx = Ctx { pod: &self.fake, reap: &reap, load_node_file: &load, log: &log, now: SystemTime::UNIX_EPOCH };
        run(&|k| env.get(k).cloned(), stdin.as_bytes(), &ctx)
    }

    pub(super) fn reservations(&self) -> usize {
        IpamStore::open_existing(&self.dir).map_or(0, |s| s.list().unwrap().len())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn json(o: &Outcome) -> serde_json::Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", o.stdout))
}

#[test]
fn add_check_del_cycle() {
    let w = World::new("cycle");
    let conf = w.static_conf("1.1.0");
    let out = w.call("ADD", "c1", "/run/netns/p1", &conf);
    assert!(out.ok, "{}", out.stdout);
    let r = json(&out);
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0]["address"], "10.50.0.2/32");
    assert_eq!(r["ips"][1]["address"], "fd00:50::2/128");
    assert_eq!(r["interfaces"][1]["mtu"], 1500);
    assert_eq!(w.reservations(), 2);
    let host = names::host_veth("tnet", "c1", "eth0");
    assert_eq!(*w.fake.calls.borrow(), vec!["forwarding true true".to_string(), format!("create {host}")]);

    let with_prev = conf.replacen('{', &format!(r#"{{"prevResult":{},"#, out.stdout), 1);
    let chk = w.call("CHECK", "c1", "/run/netns/p1", &with_prev);
    assert!(chk.ok, "{}", chk.stdout);
    assert!(chk.stdout.is_empty());

    w.fake.tamper.set(true);
    let chk = w.call("CHECK", "c1", "/run/netns/p1", &with_prev);
    assert!(!chk.ok);
    let e = json(&chk);
    assert_eq!(e["code"], 102);
    assert!(e["details"].as_str().unwrap().contains("address fd00:50::2/128 is missing from eth0"), "{e}");
    w.fake.tamper.set(false);

    let del = w.call("DEL", "c1", "/run/netns/p1", &conf);
    assert!(del.ok && del.stdout.is_empty(), "{}", del.stdout);
    assert_eq!(w.reservations(), 0);
    assert_eq!(*w.reaped.borrow(), vec![(1, host.clone())], "the veth goes to the reaper");
    assert!(!w.fake.links.borrow()[&host].2, "detached (down) before DEL returned");

    let chk = w.call("CHECK", "c1", "/run/netns/p1", &with_prev);
    assert!(json(&chk)["details"].as_str().unwrap().contains("not reserved for this attachment"));
}

/// A second attachment in a pod that already has default routes (another network's) reports and installs only
/// its subnet routes; CHECK of it passes against that.
#[test]
fn secondary_attachment_gets_no_default_route() {
    let w = World::new("second");
    let conf = w.static_conf("1.1.0");
    w.fake.defaults.set(Defaults { v4: true, v6: true });
    let out = w.call("ADD", "c1", "/run/netns/p1", &conf);
    assert!(out.ok, "{}", out.stdout);
    let r = json(&out);
    assert_eq!(
        r["routes"],
        serde_json::json!([{"dst":"10.50.0.0/24","gw":"10.50.0.1"},{"dst":"fd00:50::/64","gw":"fd00:50::1"}])
    );
    let with_prev = conf.replacen('{', &format!(r#"{{"prevResult":{},"#, out.stdout), 1);
    let chk = w.call("CHECK", "c1", "/run/netns/p1", &with_prev);
    assert!(chk.ok, "{}", chk.stdout);
}

#[test]
fn results_follow_the_config_version() {
    let w = World::new("vers");
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"].iter().enumerate() {
        let out = w.call("ADD", &format!("c{i}"), "/run/netns/p", &w.static_conf(v));
        let r = json(&out);
        assert_eq!(r["cniVersion"], *v);
        assert_eq!(r["ips"][0].get("version").is_some(), v.starts_with("0."), "{v}");
        assert!(r["interfaces"][1].get("mtu").is_none(), "{v}");
    }
}

#[test]
fn add_is_idempotent_and_del_is_forgiving() {
    let w = World::new("idem");
    let conf = w.static_conf("1.0.0");
    let a = json(&w.call("ADD", "c1", "/run/netns/p", &conf));
    let b = json(&w.call("ADD", "c1", "/run/netns/p", &conf));
    assert_eq!(a["ips"], b["ips"]);
    assert_eq!(w.reservations(), 2);
    for _ in 0..2 {
        assert!(w.call("DEL", "c1", "/gone/ns", &conf).ok);
    }
    assert!(w.call("DEL", "never-added", "/run/netns/p", &conf).ok);
    assert_eq!(w.reservations(), 0);
}

#[test]
fn failed_add_leaves_nothing() {
    let w = World::new("fail");
    let conf = w.static_conf("1.1.0");
    w.fake.fail_create.set(true);
    let out = w.call("ADD", "c1", "/run/netns/p", &conf);
    assert_eq!(json(&out)["code"], 100);
    assert_eq!(w.reservations(), 0);
    assert!(w.fake.links.borrow().is_empty(), "the half-made veth was deleted");

    w.fake.fail_create.set(false);
    let out = w.call("ADD", "c1", "/gone/ns", &conf);
    assert_eq!(json(&out)["code"], 3);
    assert_eq!(w.reservations(), 0);
}

#[test]
fn node_file_drives_add_and_status() {
    let w = World::new("node");
    let conf = w.conf("1.1.0", "");
    let e = json(&w.call("ADD", "c1", "/run/netns/p", &conf));
    assert_eq!(e["code"], 11);
    assert!(e["msg"].as_str().unwrap().contains("does not exist yet"));
    assert_eq!(json(&w.call("STATUS", "", "", &conf))["code"], 50);
    *w.node_file.borrow_mut() = Some(NodeFile {
        subnet: "10.60.1.0/24".parse().unwrap(),
        subnet6: None,
        mtu: 1450,
        cluster_cidr: None,
        cluster_cidr6: None,
        networks: Vec::new(),
        pending_namespaces: Vec::new(),
    });
    let st = w.call("STATUS", "", "", &conf);
    assert!(st.ok && st.stdout.is_empty());
    let r = json(&w.call("ADD", "c1", "/run/netns/p", &conf));
    assert_eq!(r["ips"][0]["address"], "10.60.1.2/32");
    assert_eq!(r["interfaces"][1]["mtu"], 1450);
    assert_eq!(w.fake.calls.borrow()[0], "forwarding true false");
}

#[test]
fn gc_keeps_valid_attachments_only() {
    let w = World::new("gc");
    let conf = w.static_conf("1.1.0");
    for c in ["keep", "drop1", "drop2"] {
        assert!(w.call("ADD", c, "/run/netns/p", &conf).ok);
    }
    // A veth of another network and an unrelated link must survive.
    let other = names::host_veth("other-net", "drop1", "eth0");
    w.fake.links.borrow_mut().insert(other.clone(), (99, PodSpec { host_ifname: other.clone(), ..spec0() }, true));
    let valid = vec![Attachment { container_id: "keep".into(), ifname: "eth0".into() }];
    let gc_conf = conf.replacen('{', &format!(r#"{{"cni.dev/valid-attachments":{},"#, valid_json(&valid)), 1);
    let out = w.call("GC", "", "", &gc_conf);
    assert!(out.ok && out.stdout.is_empty(), "{}", out.stdout);
    let links: Vec<String> = w.fake.links.borrow().keys().cloned().collect();
    let mut want = vec![names::host_veth("tnet", "keep", "eth0"), other];
    want.sort();
    assert_eq!(links, want);
    assert_eq!(w.reservations(), 2, "keep's v4 and v6");
    assert!(w.logs.borrow().is_empty());

    // keep's record (one inode for both its addresses) is truncated: GC keeps both (keep is valid), says so.
    let held = IpamStore::open(&w.dir).unwrap().addresses_of("keep", "eth0").unwrap();
    std::fs::OpenOptions::new().write(true).truncate(true).open(w.dir.join(held[0].to_string())).unwrap();
    assert!(w.call("GC", "", "", &gc_conf).ok);
    assert_eq!(w.reservations(), 2, "the damaged reservations of a valid attachment are kept");
    let logs = w.logs.borrow();
    assert_eq!(logs.len(), 2, "{logs:?}");
    for ip in &held {
        assert!(logs
            .iter()
            .any(|l| l.contains(&format!("reservation {ip} ")) && l.contains("kept: valid attachment keep/eth0")));
    }
}

#[test]
fn reaper_failure_falls_back_to_synchronous_delete() {
    let w = World::new("reap");
    let conf = w.static_conf("1.1.0");
    assert!(w.call("ADD", "c1", "/run/netns/p", &conf).ok);
    w.reap_fails.set(true);
    assert!(w.call("DEL", "c1", "/run/netns/p", &conf).ok);
    assert!(w.fake.links.borrow().is_empty());
}

#[test]
fn version_and_error_objects() {
    let w = World::new("ver");
    let v = json(&w.call("VERSION", "", "", r#"{"cniVersion":"0.3.1"}"#));
    assert_eq!(v["cniVersion"], "0.3.1");
    assert_eq!(v["supportedVersions"], serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    let e = w.call("ADD", "c1", "/run/netns/p", r#"{"cniVersion":"0.4.0","name":"x","mtu":1}"#);
    assert!(!e.ok);
    let e = json(&e);
    assert_eq!((e["cniVersion"].as_str(), e["code"].as_u64()), (Some("0.4.0"), Some(7)));
    assert!(e["msg"].as_str().unwrap().contains("mtu 1"));
    let e = json(&w.call("ADD", "c1", "/run/netns/p", "}{"));
    assert_eq!((e["cniVersion"].as_str(), e["code"].as_u64()), (Some("1.1.0"), Some(6)));
}

fn spec0() -> PodSpec {
    PodSpec {
        host_ifname: String::new(),
        host_mac: [2, 0, 0, 0, 0, 1],
        alias: String::new(),
        pod_ifname: "eth0".into(),
        pod_mac: [2, 0, 0, 0, 0, 2],
        mtu: 1500,
        addrs: vec![],
        routes: vec![],
        network: None,
    }
}

fn valid_json(v: &[Attachment]) -> String {
    let items: Vec<String> =
        v.iter().map(|a| format!(r#"{{"containerID":"{}","ifname":"{}"}}"#, a.container_id, a.ifname)).collect();
    format!("[{}]", items.join(","))
}
