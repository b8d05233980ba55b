//! Whole agents in Kubernetes mode: weftd's library (`weft_agent::run`) with the Kubernetes store, against the
//! fake API server, on fake kernels (no root needed). This is "kube mode" end to end short of real netlink:
//! Nodes registered as a kubelet would, without podCIDRs (weft allocates; the podCIDR path is in the contract
//! tests); the agents must find each other through Node annotations, program each other, follow a Node's deletion, enforce
//! a NetworkPolicy from the API, and leave the Node clean on uninstall.
//!
//! Run: `cargo test -p weft-store-kube --test agent_kube`.
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use weft_agent::{AgentConfig, Deps};
use weft_dataplane::fake::FakeDataplane;
use weft_store_kube::fake::{resources, FakeApiServer, FakeOptions};
use weft_store_kube::KubeStore;

struct Agent {
    fake: Arc<FakeDataplane>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), weft_agent::AgentError>>,
    dir: std::path::PathBuf,
    /// The agent's HTTP endpoint (/status, /metrics).
    addr: std::net::SocketAddr,
}

/// The fake API server with weft's namespace and `nodes` registered (in that order, as a kubelet would, without
/// podCIDRs), plus a directory holding the agents' network config. Agent logs show on failure only.
async fn cluster(nodes: &[&str]) -> (FakeApiServer, tempfile::TempDir) {
    let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    let opts = FakeOptions { bookmark_interval: Duration::from_millis(200), ..FakeOptions::default() };
    let api = FakeApiServer::start("127.0.0.1:0".parse().unwrap(), opts).await.unwrap();
    let c = api.cluster();
    c.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "weft-system"}})).unwrap();
    for n in nodes {
        c.add_node(n, &[]);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("network.json"), r#"{"clusterCidr":"10.244.0.0/16","subnetLen":24}"#).unwrap();
    (api, dir)
}

async fn start(api: &FakeApiServer, dir: &std::path::Path, i: u8, extra: &[&str]) -> Agent {
    let fake = Arc::new(FakeDataplane::new());
    fake.add_link("eth0", 1500, vec![format!("172.30.{i}.1/24").parse().unwrap()]);
    let node_dir = dir.join(format!("n{i}"));
    let mut args = vec![
        "weftd".to_string(),
        format!("--node-name=n{i}"),
        format!("--node-ip=172.30.{i}.1"),
        format!("--store={}", api.store_url()),
        format!("--network-config={}", dir.join("network.json").display()),
        format!("--node-file={}", node_dir.join("node.json").display()),
        format!("--state-dir={}", node_dir.display()),
        "--resync-interval=200ms".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cfg = <AgentConfig as clap::Parser>::parse_from(args);
    let store = Arc::new(KubeStore::connect(&api.store_url()).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let deps = Deps { store, dataplane: fake.clone(), listener, shutdown: rx };
    let task = tokio::spawn(weft_agent::run(cfg, deps));
    Agent { fake, stop, task, dir: node_dir, addr }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// GET `path` from an agent's HTTP endpoint: the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

fn annotations(api: &FakeApiServer, node: &str) -> serde_json::Value {
    let nodes = resources::by_plural("", "v1", "nodes").unwrap();
    api.cluster().get(nodes, None, node).unwrap()["metadata"]["annotations"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_on_the_kubernetes_api() {
    let (api, dir) = cluster(&["n1", "n2", "n3"]).await;
    let c = api.cluster();

    let a = start(&api, dir.path(), 1, &[]).await;
    let b = start(&api, dir.path(), 2, &[]).await;
    let z = start(&api, dir.path(), 3, &["--uninstall-on-exit"]).await;
    for r in [&a, &b, &z] {
        let f = r.fake.clone();
        eventually("two peers programmed", move || f.state().routes.len() == 2 && f.state().fdbs.len() == 2).await;
    }
    let n1 = weft_types::NodeFile::load(&a.dir.join("node.json")).unwrap();
    let n2 = weft_types::NodeFile::load(&b.dir.join("node.json")).unwrap();
    assert_ne!(n2.subnet, n1.subnet);
    let pod_ip = std::net::Ipv4Addr::from(u32::from(n1.subnet.network()) + 7).to_string();
    // The VTEP MAC the agent created is what its Node publishes.
    let mac = weft_dataplane::format_mac(&b.fake.link("weft.1").expect("vxlan device").mac);
    let data: serde_json::Value =
        serde_json::from_str(annotations(&api, "n2")["weft.dev/backend-data"].as_str().unwrap()).unwrap();
    assert_eq!(data["vtepMac"], mac);

    // A NetworkPolicy from the API reaches the policy table of the node that runs the selected pod.
    c.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "default", "name": "web",
        "labels": {"app": "web"}}, "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}}))
        .unwrap();
    c.apply(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "default", "name": "deny-web"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}))
        .unwrap();
    let f = a.fake.clone();
    eventually("policy table names the pod", move || {
        f.nft_table("inet", "weft-policy").is_some_and(|t| t.contains(&pod_ip))
    })
    .await;

    // z leaves with uninstall: its annotations and its subnet claim go; a and b drop its routes.
    z.stop.send(true).unwrap();
    z.task.await.unwrap().unwrap();
    assert!(z.fake.state().is_empty());
    let anns = annotations(&api, "n3");
    assert!(anns.as_object().is_none_or(|m| m.keys().all(|k| !k.starts_with("weft.dev/"))), "{anns}");
    let leases = resources::by_plural("coordination.k8s.io", "v1", "leases").unwrap();
    let mut holders: Vec<String> = c
        .list(leases, Some("weft-system"))
        .0
        .iter()
        .map(|l| l["spec"]["holderIdentity"].as_str().unwrap().to_string())
        .collect();
    holders.sort();
    assert_eq!(holders, ["n1", "n2"], "n3's claim went with it");
    for r in [&a, &b] {
        let f = r.fake.clone();
        eventually("released peer removed", move || f.state().routes.len() == 1).await;
    }

    // A Node deleted from the API (kubectl delete node) is a peer gone.
    c.remove("Node", None, "n2").unwrap();
    let f = a.fake.clone();
    eventually("deleted node's routes removed", move || f.state().routes.is_empty()).await;
    a.stop.send(true).unwrap();
    a.task.await.unwrap().unwrap();
    b.stop.send(true).unwrap();
    let _ = b.task.await;
}

fn network_status(api: &FakeApiServer, net: &str) -> serde_json::Value {
    let nets = resources::by_plural("weft.dev", "v1alpha1", "networks").unwrap();
    api.cluster().get(nets, None, net).map(|n| n["status"]["nodes"].clone()).unwrap_or_default()
}

/// Tenant networks from the CRD: the agents serve a Network applied with kubectl, each reports its node in the
/// Network's status through the status subresource (and only its own entry), a malformed Network beside it
/// blinds nobody, and a deleted Network leaves the node files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_serve_networks_from_the_crd_and_report_their_status() {
    let (api, dir) = cluster(&["n1", "n2"]).await;
    let c = api.cluster();
    let blue: weft_types::TenantNetwork = serde_json::from_value(
        json!({"name": "blue", "cidr": "10.50.0.0/16", "vni": 100, "namespaces": {"names": ["team-a"]}}),
    )
    .unwrap();
    c.apply(weft_store_kube::network::object_of(&blue)).unwrap();
    c.apply(json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Network", "metadata": {"name": "junk"},
        "spec": {"cidr": "nope", "vni": 7}}))
        .unwrap();

    let a = start(&api, dir.path(), 1, &[]).await;
    let b = start(&api, dir.path(), 2, &[]).await;
    let served = |d: std::path::PathBuf| {
        move || {
            weft_types::NodeFile::load(&d.join("node.json"))
                .is_ok_and(|f| f.networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>() == ["blue"])
        }
    };
    eventually("n1 serves blue", served(a.dir.clone())).await;
    eventually("n2 serves blue", served(b.dir.clone())).await;
    let api_ref = &api;
    eventually("both nodes report blue ready in the Network's status", || {
        let st = network_status(api_ref, "blue");
        ["n1", "n2"].iter().all(|n| st[*n]["ready"] == true && st[*n]["subnet"].as_str().is_some())
    })
    .await;
    let st = network_status(&api, "blue");
    assert_ne!(st["n1"]["subnet"], st["n2"]["subnet"]);
    assert_eq!(st.as_object().unwrap().len(), 2, "{st}");
    let rec = c.requests();
    assert!(rec.iter().any(|r| r.resource == "networks/status" && r.verb == "patch"));
    assert!(!rec.iter().any(|r| r.group == "weft.dev" && !["list", "watch", "patch"].contains(&r.verb.as_str())));

    // Deleted with kubectl: the network leaves the node files (no pods hold addresses on it).
    c.remove("Network", None, "blue").unwrap();
    for d in [a.dir.clone(), b.dir.clone()] {
        eventually("blue left the node file", move || {
            weft_types::NodeFile::load(&d.join("node.json")).is_ok_and(|f| f.networks.is_empty())
        })
        .await;
    }
    for r in [a, b] {
        r.stop.send(true).unwrap();
        r.task.await.unwrap().unwrap();
    }
}

/// Weft's own allocation: a rogue Node older than its victim annotates the victim's subnet (what a compromised
/// agent may write on its own Node). Without its claim behind it, a third node's agent refuses it and reports
/// it, and keeps routing the subnet to the victim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_rogue_node_annotating_a_victims_subnet_is_refused_by_agents() {
    // n0 is the rogue: registered first (and first by name, should the timestamps share a second).
    let (api, dir) = cluster(&["n0", "n2", "n3"]).await;
    let c = api.cluster();
    let victim = start(&api, dir.path(), 2, &[]).await;
    let third = start(&api, dir.path(), 3, &[]).await;
    for r in [&victim, &third] {
        let f = r.fake.clone();
        eventually("one peer programmed", move || f.state().routes.len() == 1).await;
    }
    let subnet = weft_types::NodeFile::load(&victim.dir.join("node.json")).unwrap().subnet;

    let nodes = resources::by_plural("", "v1", "nodes").unwrap();
    let data = json!({"type": "vxlan", "vtepMac": "02:00:00:00:00:66"}).to_string();
    let rogue = json!({"metadata": {"annotations": {"weft.dev/node-ip": "172.30.9.1", "weft.dev/subnet":
        subnet.to_string(), "weft.dev/subnet-source": "weft", "weft.dev/backend-data": data}}});
    c.patch(nodes, None, "n0", weft_store_kube::fake::PatchKind::Merge, &rogue).unwrap();

    let addr = third.addr;
    eventually("the rogue lease reported", move || {
        let st: serde_json::Value = serde_json::from_str(&http_get(addr, "/status")).unwrap_or_default();
        st["rejectedPeers"].as_array().is_some_and(|r| {
            r.iter().any(|p| p["key"] == "n0" && p["reason"].as_str().unwrap_or_default().contains("held by \"n2\""))
        })
    })
    .await;
    assert!(http_get(addr, "/metrics").lines().any(|l| l == "weft_peers_rejected 1"), "{}", http_get(addr, "/metrics"));
    let st = third.fake.state();
    assert_eq!(st.routes.keys().map(|r| r.to_string()).collect::<Vec<_>>(), vec![subnet.to_string()]);
    let dsts: Vec<String> = st.fdbs.keys().map(|(_, _, ip)| ip.to_string()).collect();
    assert_eq!(dsts, vec!["172.30.2.1".to_string()], "the victim's subnet still goes to the victim");
    for a in [victim, third] {
        a.stop.send(true).unwrap();
        a.task.await.unwrap().unwrap();
    }
}
