//! Whole agents (start-up, lease, peer watch, reconcile loop, HTTP) against a real embedded store and fake
//! kernels: no root needed, so these run everywhere.
use std::sync::Arc;
use std::time::Duration;
use weft_agent::{AgentConfig, Deps};
use weft_dataplane::fake::FakeDataplane;

struct Running {
    fake: Arc<FakeDataplane>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), weft_agent::AgentError>>,
    port: u16,
    dir: std::path::PathBuf,
}

async fn start(dir: &std::path::Path, i: u8, extra: &[&str]) -> Running {
    let fake = Arc::new(FakeDataplane::new());
    fake.add_link("eth0", 1500, vec![format!("172.30.{i}.1/24").parse().unwrap()]);
    start_on(dir, i, extra, fake).await
}

/// Starts agent `i` on an existing fake kernel (a restart keeps the kernel).
async fn start_on(dir: &std::path::Path, i: u8, extra: &[&str], fake: Arc<FakeDataplane>) -> Running {
    let node_dir = dir.join(format!("n{i}"));
    let db = format!("embedded://{}", dir.join("store.db").display());
    let net = dir.join("net.json");
    let mut args = vec![
        "weftd".to_string(),
        format!("--node-name=n{i}"),
        format!("--node-ip=172.30.{i}.1"),
        format!("--store={db}"),
        format!("--network-config={}", net.display()),
        format!("--node-file={}", node_dir.join("node.json").display()),
        format!("--state-dir={}", node_dir.display()),
        "--lease-ttl=3s".into(),
        "--resync-interval=200ms".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cfg = <AgentConfig as clap::Parser>::parse_from(args);
    let store = weft_store::open(&db).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let deps = Deps { store, dataplane: fake.clone(), listener, shutdown: rx };
    let task = tokio::spawn(weft_agent::run(cfg, deps));
    Running { fake, stop, task, port, dir: node_dir }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("net.json"), r#"{"clusterCidr":"10.244.0.0/16","subnetLen":24}"#).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_program_each_other_and_forget_a_stopped_one() {
    let d = tempdir();
    let a = start(d.path(), 1, &[]).await;
    let b = start(d.path(), 2, &[]).await;
    let c = start(d.path(), 3, &["--uninstall-on-exit"]).await;
    for r in [&a, &b, &c] {
        let f = r.fake.clone();
        eventually("two peers programmed", move || f.state().routes.len() == 2 && f.state().fdbs.len() == 2).await;
    }
    // Node files for the CNI plugin: distinct subnets, MTU = 1500 - 50.
    let subnets: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|r| {
            let nf = weft_types::NodeFile::load(&r.dir.join("node.json")).unwrap();
            assert_eq!(nf.mtu, 1450);
            nf.subnet.to_string()
        })
        .collect();
    assert_eq!(subnets.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);

    // Health, readiness, metrics, status.
    assert!(http_get(a.port, "/healthz").await.contains("200 OK"));
    assert!(http_get(a.port, "/readyz").await.contains("200 OK"));
    let m = http_get(a.port, "/metrics").await;
    assert!(m.contains("weft_peers 2"), "{m}");
    let st = http_get(a.port, "/status").await;
    assert!(st.contains("\"peers\""), "{st}");

    // c leaves with uninstall: it releases its lease, removes its kernel state; a and b drop its entries.
    c.stop.send(true).unwrap();
    c.task.await.unwrap().unwrap();
    assert!(c.fake.state().is_empty());
    assert!(c.fake.link("weft.1").is_none());
    assert!(!c.dir.join("node.json").exists());
    for r in [&a, &b] {
        let f = r.fake.clone();
        eventually("released peer removed", move || f.state().routes.len() == 1).await;
    }

    // b dies without a goodbye: its lease lapses after the TTL (3 s) and a forgets it.
    b.task.abort();
    let f = a.fake.clone();
    eventually("expired peer removed", move || f.state().routes.is_empty()).await;
    a.stop.send(true).unwrap();
    a.task.await.unwrap().unwrap();
    assert!(!a.fake.state().is_empty() || a.fake.link("weft.1").is_some(), "no uninstall: kernel state kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_subnet_and_applies_nothing() {
    let d = tempdir();
    let a = start(d.path(), 1, &[]).await;
    let b = start(d.path(), 2, &[]).await;
    let f = a.fake.clone();
    eventually("peer programmed", move || f.state().routes.len() == 1).await;
    let before = weft_types::NodeFile::load(&a.dir.join("node.json")).unwrap();
    a.stop.send(true).unwrap();
    a.task.await.unwrap().unwrap();
    let fake = a.fake.clone();
    fake.take_applied();
    // Same node, same kernel, new process: same subnet, nothing re-applied.
    let _ = std::fs::remove_file(a.dir.join("status.json"));
    let a2 = start_on(d.path(), 1, &[], fake.clone()).await;
    eventually("ready after restart", || a2.dir.join("status.json").exists()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = weft_types::NodeFile::load(&a2.dir.join("node.json")).unwrap();
    assert_eq!(before.subnet, after.subnet);
    assert!(fake.take_applied().is_empty(), "restart touched the kernel");
    a2.stop.send(true).unwrap();
    b.stop.send(true).unwrap();
}

/// A store whose lease listing is slow (etcd far away, a loaded API server).
struct SlowLeases(Arc<dyn weft_store::Store>);

#[async_trait::async_trait]
impl weft_store::Store for SlowLeases {
    async fn network_config(&self) -> Result<weft_types::NetworkConfig, weft_store::StoreError> {
        self.0.network_config().await
    }
    async fn init_network_config(
        &self,
        c: &weft_types::NetworkConfig,
    ) -> Result<weft_types::NetworkConfig, weft_store::StoreError> {
        self.0.init_network_config(c).await
    }
    async fn acquire(&self, r: &weft_types::LeaseRequest) -> Result<weft_types::Lease, weft_store::StoreError> {
        self.0.acquire(r).await
    }
    async fn renew(&self, l: &weft_types::Lease, t: Duration) -> Result<weft_types::Lease, weft_store::StoreError> {
        self.0.renew(l, t).await
    }
    async fn release(&self, n: &str) -> Result<(), weft_store::StoreError> {
        self.0.release(n).await
    }
    async fn leases(&self) -> Result<weft_store::Snapshot<weft_types::Lease>, weft_store::StoreError> {
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.0.leases().await
    }
    async fn watch_leases(
        &self,
        after: weft_store::Revision,
    ) -> Result<weft_store::WatchStream<weft_types::Lease>, weft_store::StoreError> {
        self.0.watch_leases(after).await
    }
    async fn put_object(
        &self,
        k: weft_store::ObjectKind,
        key: &str,
        v: &serde_json::Value,
    ) -> Result<weft_store::Revision, weft_store::StoreError> {
        self.0.put_object(k, key, v).await
    }
    async fn delete_object(&self, k: weft_store::ObjectKind, key: &str) -> Result<(), weft_store::StoreError> {
        self.0.delete_object(k, key).await
    }
    async fn objects(
        &self,
        k: weft_store::ObjectKind,
    ) -> Result<weft_store::Snapshot<weft_store::Object>, weft_store::StoreError> {
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.0.objects(k).await
    }
    async fn watch_objects(
        &self,
        k: weft_store::ObjectKind,
        after: weft_store::Revision,
    ) -> Result<weft_store::WatchStream<weft_store::Object>, weft_store::StoreError> {
        self.0.watch_objects(k, after).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_slow_store_touches_nothing_before_peers_are_listed() {
    let d = tempdir();
    let a = start(d.path(), 1, &[]).await;
    let b = start(d.path(), 2, &[]).await;
    let f = a.fake.clone();
    eventually("peer programmed", move || f.state().routes.len() == 1).await;
    a.stop.send(true).unwrap();
    a.task.await.unwrap().unwrap();
    let fake = a.fake.clone();
    let policy_table = fake.nft_table("inet", "weft-policy");
    fake.take_applied();

    let db = format!("embedded://{}", d.path().join("store.db").display());
    let node_dir = d.path().join("n1");
    let cfg = <AgentConfig as clap::Parser>::parse_from([
        "weftd".to_string(),
        "--node-name=n1".into(),
        "--node-ip=172.30.1.1".into(),
        format!("--store={db}"),
        format!("--node-file={}", node_dir.join("node.json").display()),
        format!("--state-dir={}", node_dir.display()),
        "--lease-ttl=3s".into(),
        "--resync-interval=100ms".into(),
    ]);
    let store: Arc<dyn weft_store::Store> = Arc::new(SlowLeases(weft_store::open(&db).await.unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let deps = Deps { store, dataplane: fake.clone(), listener, shutdown: rx };
    let task = tokio::spawn(weft_agent::run(cfg, deps));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let applied = fake.take_applied();
    assert!(applied.is_empty(), "restart changed the kernel while the store was slow: {applied:?}");
    assert_eq!(fake.state().routes.len(), 1);
    assert_eq!(fake.nft_table("inet", "weft-policy"), policy_table, "policy table replaced before listing");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    b.stop.send(true).unwrap();
}
