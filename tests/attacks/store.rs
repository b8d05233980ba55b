//! Attacks through the store (issue 8, items 3 and 4), against real labs: a pod that tries to reach etcd, a
//! rogue lease that claims another node's subnet, and a row that does not decode.
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;
use weft_e2e::{bin, require_root, unique, wait_until};

/// A lab brought down on drop, even when the test fails.
struct Lab {
    name: String,
}

impl Lab {
    fn up(args: &[&str]) -> Lab {
        let lab = Lab { name: format!("a{}", unique()) };
        let out = Command::new(bin("weftctl"))
            .args(["lab", "up", "--name", &lab.name, "--lease-ttl", "6s", "--nodes", "3", "--pods-per-node", "1"])
            .args(args)
            .output()
            .expect("weftctl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "lab up failed:\n{text}\n{}", lab.logs());
        lab
    }

    fn dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/weft-lab").join(&self.name)
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join("state.json")).expect("state")).expect("json")
    }

    fn status(&self, node: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join(node).join("status.json")).unwrap_or_default())
            .unwrap_or(Value::Null)
    }

    fn logs(&self) -> String {
        (1..=3)
            .filter_map(|i| std::fs::read_to_string(self.dir().join(format!("node{i}/weftd.log"))).ok())
            .map(|l| l.lines().rev().take(20).collect::<Vec<_>>().join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// (pod namespace, pod IPv4), node by node.
    fn pods(&self) -> Vec<(String, String)> {
        let st = self.state();
        let nodes = st["nodes"].as_array().unwrap().iter();
        let pods = nodes.flat_map(|n| n["pods"].as_array().unwrap().clone());
        pods.map(|p| (p["ns"].as_str().unwrap().to_string(), p["ip"].as_str().unwrap().to_string())).collect()
    }

    fn all_pods_ping(&self) -> bool {
        let pods = self.pods();
        pods.iter()
            .all(|(src, _)| pods.iter().all(|(_, dst)| ns_exec(src, &["ping", "-c1", "-W2", dst]).status.success()))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let _ = Command::new(bin("weftctl")).args(["lab", "down", "--name", &self.name]).output();
    }
}

fn ns_exec(ns: &str, cmd: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("ip netns exec")
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = c.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= c.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// Item 3: in the etcd lab a pod (a netns without the lab's certificates) can neither read nor write etcd,
/// neither over plain HTTP nor over TLS without a client certificate, while the agents keep working.
#[test]
fn a_pod_can_neither_read_nor_write_etcd() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--store", "etcd"]);
    let st = lab.state();
    let url = st["storeUrl"].as_str().expect("storeUrl").to_string();
    let addr = url.split("://").nth(1).unwrap().trim_end_matches('/').to_string();
    assert!(url.starts_with("etcds://"), "the etcd lab must run TLS: {url}");
    let (pod, _) = lab.pods()[0].clone();
    let rogue_key = "/weft/leases/10.244.99.0_24";
    let put = format!(r#"{{"key":"{}","value":"{}"}}"#, b64(rogue_key), b64(r#"{"node":"rogue"}"#));
    let range = format!(r#"{{"key":"{}","range_end":"{}"}}"#, b64("/weft/"), b64("/weft0"));
    for scheme in ["http", "https"] {
        for (what, body) in [("range", &range), ("put", &put)] {
            let ep = format!("{scheme}://{addr}/v3/kv/{what}");
            let out = ns_exec(&pod, &["curl", "-sk", "-m", "5", "-XPOST", "-d", body, &ep]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                !text.contains("\"kvs\"") && !text.contains("\"revision\""),
                "{what} over {scheme} answered: {text}"
            );
        }
    }
    let etcdctl = ns_exec(
        &pod,
        &[
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            "--dial-timeout=3s",
            "--command-timeout=5s",
            "--insecure-transport=false",
            "--insecure-skip-tls-verify",
            &format!("--endpoints=https://{addr}"),
            "get",
            "/weft/",
            "--prefix",
        ],
    );
    assert!(
        !etcdctl.status.success(),
        "etcdctl without a certificate read: {}",
        String::from_utf8_lossy(&etcdctl.stdout)
    );

    // Nothing was written, and with the lab's own certificate the store answers.
    let pki = lab.dir().join("pki");
    let fabric = st["fabricNs"].as_str().unwrap().to_string();
    let p = |f: &str| pki.join(f).display().to_string();
    let keys = ns_exec(
        &fabric,
        &[
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            &format!("--endpoints=https://{addr}"),
            &format!("--cacert={}", p("ca.pem")),
            &format!("--cert={}", p("client-weftctl.pem")),
            &format!("--key={}", p("client-weftctl-key.pem")),
            "get",
            "/weft/leases/",
            "--prefix",
            "--keys-only",
        ],
    );
    let keys_text = String::from_utf8_lossy(&keys.stdout);
    assert!(keys.status.success(), "etcdctl with the lab certificate: {}", String::from_utf8_lossy(&keys.stderr));
    assert_eq!(keys_text.lines().filter(|l| l.starts_with("/weft/leases/")).count(), 3, "{keys_text}");
    assert!(!keys_text.contains(rogue_key), "the pod wrote a lease");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(pki.join("ca-key.pem")).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "keys must be private (mode 0600)");
    assert!(lab.all_pods_ping(), "agents stopped working");
}

/// Items 3 and 4 on the embedded store: a rogue row whose value claims node2's subnet under another key, and
/// a row that does not decode. Running agents refuse both (status, metrics, log), node2's traffic still goes
/// to node2, and a restarted agent becomes ready with both rows present.
#[test]
fn rogue_and_garbage_leases_are_refused_and_reported() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--store", "embedded"]);
    let db = lab.dir().join("store.db");
    bad_rows_are_refused(&lab, "rogue", "junk", |subnet, node, value| {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute(
            "INSERT INTO leases (subnet, node, value, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![subnet, node, value, i64::MAX],
        )
        .unwrap();
        c.execute(
            "INSERT INTO changelog (kind, key, op, value) VALUES ('leases', ?1, 'put', ?2)",
            rusqlite::params![node, value],
        )
        .unwrap();
    });
}

/// The same on etcd, written with the lab's own client certificate (a compromised node, not a pod).
#[test]
fn rogue_and_garbage_leases_in_etcd_are_refused_and_reported() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--store", "etcd"]);
    let st = lab.state();
    let addr = st["storeUrl"].as_str().unwrap().split("://").nth(1).unwrap().to_string();
    let fabric = st["fabricNs"].as_str().unwrap().to_string();
    let pki = lab.dir().join("pki");
    let p = |f: &str| pki.join(f).display().to_string();
    let (rogue_key, junk_key) = ("/weft/leases/10.244.250.0_24", "/weft/leases/10.244.251.0_24");
    bad_rows_are_refused(&lab, rogue_key, junk_key, |subnet, _node, value| {
        let key = format!("/weft/leases/{}", subnet.replace('/', "_"));
        let out = ns_exec(
            &fabric,
            &[
                "env",
                "ETCDCTL_API=3",
                "etcdctl",
                &format!("--endpoints=https://{addr}"),
                &format!("--cacert={}", p("ca.pem")),
                &format!("--cert={}", p("client-weftctl.pem")),
                &format!("--key={}", p("client-weftctl-key.pem")),
                "put",
                &key,
                value,
            ],
        );
        assert!(out.status.success(), "etcdctl put: {}", String::from_utf8_lossy(&out.stderr));
    });
}

/// Writes a rogue lease (claiming node2's subnet under the key of 10.244.250.0/24) and an undecodable one
/// (10.244.251.0/24) with `write(subnet, node, value)`, then checks that agents refuse and report both (as
/// `rogue_key` and `junk_key`), keep node2's traffic going to node2, and that a restarted agent gets ready.
fn bad_rows_are_refused(lab: &Lab, rogue_key: &str, junk_key: &str, write: impl Fn(&str, &str, &str)) {
    let victim = lab.status("node2");
    let victim_subnet = victim["subnet"].as_str().unwrap().to_string();
    let rogue = serde_json::json!({"node": "rogue", "subnet": victim_subnet, "nodeIp": "192.0.2.66",
        "backendData": {"v": 1, "vtepMac": "02:66:66:66:66:66"}, "expiresAtMs": i64::MAX});
    write("10.244.250.0/24", "rogue", &rogue.to_string());
    write("10.244.251.0/24", "junk", "not json");
    let rejected = |node: &str| -> Vec<String> {
        lab.status(node)["rejectedPeers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["key"].as_str().map(String::from))
            .collect()
    };
    let both = |node: &str| {
        let r = rejected(node);
        r.iter().any(|k| k == rogue_key) && r.iter().any(|k| k == junk_key)
    };
    assert!(
        wait_until(Duration::from_secs(20), || both("node1")),
        "node1 did not refuse both: {:?}",
        lab.status("node1")
    );
    let st = lab.status("node1");
    let rogue_reason =
        st["rejectedPeers"].as_array().unwrap().iter().find(|r| r["key"] == rogue_key).unwrap()["reason"].clone();
    assert!(rogue_reason.as_str().unwrap().contains("key names"), "{rogue_reason}");
    let peers: Vec<&str> = st["peers"].as_array().unwrap().iter().filter_map(|p| p["node"].as_str()).collect();
    assert_eq!(peers.len(), 2, "{peers:?}");
    let n1 = lab.state()["nodes"][0]["ns"].as_str().unwrap().to_string();
    let routes = String::from_utf8_lossy(&ns_exec(&n1, &["ip", "route", "show", "proto", "201"]).stdout).into_owned();
    assert!(!routes.contains("192.0.2.66") && !routes.contains("10.244.250."), "rogue lease programmed:\n{routes}");
    let metrics = ns_exec(&n1, &["curl", "-sf", "http://127.0.0.1:9473/metrics"]);
    assert!(String::from_utf8_lossy(&metrics.stdout).contains("weft_peers_rejected 2"), "metric missing");
    let log = std::fs::read_to_string(lab.dir().join("node1/weftd.log")).unwrap();
    assert!(
        log.contains("refusing a lease") && log.contains(rogue_key) && log.contains(junk_key),
        "no log naming the keys"
    );
    let text = Command::new(bin("weftctl")).args(["status", "--lab", &lab.name, "--node", "node1"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let (r, j) = (format!("REJECTED lease {rogue_key}"), format!("REJECTED lease {junk_key}"));
    assert!(text.contains(&r) && text.contains(&j), "weftctl status: {text}");
    assert!(lab.all_pods_ping(), "the victim's traffic is broken");

    // A restarting agent becomes ready with both rows present.
    let out = Command::new(bin("weftctl")).args(["lab", "restart", "--name", &lab.name, "node1"]).output().unwrap();
    assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
    let ready = || {
        let o = ns_exec(&n1, &["curl", "-sf", "http://127.0.0.1:9473/readyz"]);
        o.status.success() && both("node1")
    };
    assert!(wait_until(Duration::from_secs(30), ready), "restarted agent not ready: {:?}", lab.status("node1"));
    assert!(lab.all_pods_ping(), "traffic broken after the restart");
}
