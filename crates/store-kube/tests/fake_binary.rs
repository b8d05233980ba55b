//! The `weft-fake-apiserver` binary, as the lab runs it: flags seed the cluster, the address lands in a file,
//! a store connects over plain HTTP, the admin endpoints drive a test, SIGTERM stops it.
//!
//! Run: `cargo test -p weft-store-kube --test fake_binary`.
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_store::{Store, WatchEvent};
use weft_store_kube::KubeStore;

/// Kills the server even if the test panics.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(addr: &str, method: &str, path: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_a_seeded_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("network.json");
    std::fs::write(&net, r#"{"clusterCidr":"10.244.0.0/16","subnetLen":24}"#).unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n  labels: {team: a}\n").unwrap();
    let addr_file = dir.path().join("api.addr");
    let child = Command::new(env!("CARGO_BIN_EXE_weft-fake-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--bookmark-interval", "100ms", "--node", "n1=10.244.5.0/24", "--node", "n2"])
        .arg("--network-config")
        .arg(&net)
        .arg("--seed")
        .arg(&seed)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .spawn()
        .expect("start weft-fake-apiserver");
    let mut server = Server(child);
    let t0 = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no address file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let s = KubeStore::connect(&format!("kube+http://{addr}")).await.unwrap();
    assert_eq!(s.network_config().await.unwrap().cluster_cidr.to_string(), "10.244.0.0/16");
    let req = |node: &str| weft_types::LeaseRequest {
        node: node.into(),
        node_ip: "192.0.2.1".parse().unwrap(),
        backend_data: weft_types::BackendData::HostGw,
        ttl: Duration::from_secs(60),
        hint: None,
    };
    assert_eq!(s.acquire(&req("n1")).await.unwrap().subnet.to_string(), "10.244.5.0/24");
    let ns = s.objects(weft_store::ObjectKind::Namespace).await.unwrap();
    assert!(ns.items.iter().any(|(k, v)| k == "web" && v["labels"]["team"] == "a"), "{:?}", ns.items);

    // Admin endpoints: add a node over HTTP, compact, and an old watch resets.
    let r0 = s.leases().await.unwrap().revision;
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n3"},"spec":{"podCIDR":"10.244.9.0/24"}}"#;
    assert!(http(&addr, "POST", "/admin/apply", node).contains(" 200 OK"));
    assert_eq!(s.acquire(&req("n3")).await.unwrap().subnet.to_string(), "10.244.9.0/24");
    assert!(http(&addr, "POST", "/admin/compact", "").contains(" 200 OK"));
    let mut w = s.watch_leases(r0).await.unwrap();
    use futures::StreamExt;
    assert!(matches!(w.next().await, Some(Ok(WatchEvent::Reset))));
    let reqs = http(&addr, "GET", "/admin/requests", "");
    assert!(reqs.contains(r#""verb":"patch""#), "{reqs}");

    // SIGTERM: a clean exit.
    assert!(terminate(server.0.id()), "kill -TERM");
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// `kill -TERM PID` through the kill(1) command, to keep this test free of unsafe code and extra crates.
fn terminate(pid: u32) -> bool {
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().is_ok_and(|s| s.success())
}
