//! `weftctl network create|list|delete` as an operator runs it, against a real embedded store (a SQLite file in
//! a temp dir) and a real etcd (started on loopback by the test kit): the network is written and read back, each
//! refusal (bad CIDR, taken VNI, the default network's VNI, a namespace another network serves, delete while a
//! node uses it or pods are in its namespaces) exits non-zero with a clear message and changes nothing.
//!
//! The per-node statuses and pods that block a delete are written through `weft_store`, as agents and the
//! lab would write them.
//!
//! Run: `cargo test -p weftctl --test network` (needs `etcd` on PATH).
use serde_json::json;
use std::process::Output;
use std::sync::Arc;
use weft_e2e::{Etcd, TempDir};
use weft_store::{ObjectKind, Store};
use weft_types::tenant::{NetworkNodeStatus, TenantNetwork};

struct Kit {
    url: String,
    _dir: Option<TempDir>,
    _etcd: Option<Etcd>,
    rt: tokio::runtime::Runtime,
}

impl Kit {
    fn embedded() -> Kit {
        let dir = TempDir::new("netcli");
        let url = format!("embedded://{}", dir.path().join("weft.db").display());
        Kit::with(url, Some(dir), None)
    }

    fn etcd() -> Kit {
        let e = Etcd::start();
        let url = e.endpoint().replace("http://", "etcd://");
        Kit::with(url, None, Some(e))
    }

    fn with(url: String, dir: Option<TempDir>, etcd: Option<Etcd>) -> Kit {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let k = Kit { url, _dir: dir, _etcd: etcd, rt };
        // The cluster's network as the first agent stores it: VNI 1 is the default network's.
        let cfg: weft_types::NetworkConfig =
            serde_json::from_value(json!({"clusterCidr": "10.244.0.0/16", "backend": {"type": "vxlan", "vni": 1}}))
                .unwrap();
        k.rt.block_on(async { k.store().await.init_network_config(&cfg).await.unwrap() });
        k
    }

    async fn store(&self) -> Arc<dyn Store> {
        weft_store::open(&self.url).await.expect("open store")
    }

    fn weftctl(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_weftctl"))
            .args(args)
            .args(["--store", &self.url])
            .env_remove("WEFT_LAB")
            .env_remove("WEFT_STORE")
            .output()
            .expect("run weftctl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.weftctl(args);
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "weftctl {args:?} failed: {text}");
        text
    }

    fn refused(&self, args: &[&str]) -> String {
        let o = self.weftctl(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "weftctl {args:?} was accepted: {}", String::from_utf8_lossy(&o.stdout));
        assert!(err.starts_with("weftctl: "), "one clear line: {err}");
        err
    }

    fn networks(&self) -> Vec<TenantNetwork> {
        self.rt.block_on(async {
            let items = self.store().await.objects(ObjectKind::Network).await.unwrap().items;
            items.into_iter().map(|(_, v)| serde_json::from_value(v).unwrap()).collect()
        })
    }

    fn put(&self, kind: ObjectKind, key: &str, v: serde_json::Value) {
        self.rt.block_on(async { self.store().await.put_object(kind, key, &v).await.unwrap() });
    }

    fn delete(&self, kind: ObjectKind, key: &str) {
        self.rt.block_on(async { self.store().await.delete_object(kind, key).await.unwrap() });
    }

    fn keys(&self, kind: ObjectKind) -> Vec<String> {
        self.rt.block_on(async {
            self.store().await.objects(kind).await.unwrap().items.into_iter().map(|(k, _)| k).collect()
        })
    }
}

fn status(used: u32) -> serde_json::Value {
    let s = NetworkNodeStatus {
        ready: true,
        subnet: Some("10.50.1.0/24".parse().unwrap()),
        subnet6: None,
        used,
        capacity: 253,
        reason: None,
    };
    serde_json::to_value(s).unwrap()
}

fn create_list_refuse_delete(k: Kit) {
    let out = k.ok(&[
        "network",
        "create",
        "blue",
        "--cidr",
        "10.50.0.0/16",
        "--cidr6",
        "fd00:50::/48",
        "--vni",
        "100",
        "--namespace",
        "team-a",
        "--selector",
        "tenant=blue",
    ]);
    assert!(out.contains("network blue created"), "{out}");
    let nets = k.networks();
    assert_eq!(nets.len(), 1);
    let blue = &nets[0];
    assert_eq!((blue.name.as_str(), blue.vni, blue.subnet_len, blue.masquerade), ("blue", 100, 24, true));
    assert_eq!(blue.cidr6.unwrap().to_string(), "fd00:50::/48");
    assert_eq!(blue.namespaces.names, ["team-a"]);
    assert_eq!(blue.namespaces.match_labels["tenant"], "blue");
    // A second network on the same CIDR (overlap is allowed) with its own VNI.
    k.ok(&[
        "network",
        "create",
        "red",
        "--cidr",
        "10.50.0.0/16",
        "--vni",
        "200",
        "--namespace",
        "team-r",
        "--no-masquerade",
    ]);

    // Refusals: each says why, and nothing is written.
    for (args, why) in [
        (
            &["network", "create", "green", "--cidr", "10.60.0.0", "--vni", "300", "--namespace", "g"][..],
            "not an IPv4 CIDR",
        ),
        (
            &["network", "create", "green", "--cidr", "10.60.0.1/16", "--vni", "300", "--namespace", "g"],
            "host bits set",
        ),
        (&["network", "create", "green", "--cidr", "127.0.0.0/16", "--vni", "300", "--namespace", "g"], "loopback"),
        (
            &["network", "create", "green", "--cidr", "10.60.0.0/16", "--vni", "100", "--namespace", "g"],
            "VNI 100 is already used by blue",
        ),
        (
            &["network", "create", "aaa", "--cidr", "10.60.0.0/16", "--vni", "200", "--namespace", "g"],
            "VNI 200 is already used by red",
        ),
        (
            &["network", "create", "green", "--cidr", "10.60.0.0/16", "--vni", "1", "--namespace", "g"],
            "VNI 1 is already used by default",
        ),
        (
            &["network", "create", "green", "--cidr", "10.60.0.0/16", "--vni", "16777216", "--namespace", "g"],
            "out of range",
        ),
        (
            &["network", "create", "green", "--cidr", "10.60.0.0/16", "--vni", "300", "--namespace", "team-a"],
            "already served by network blue",
        ),
        (
            &["network", "create", "blue", "--cidr", "10.60.0.0/16", "--vni", "300", "--namespace", "g"],
            "already exists",
        ),
        (&["network", "create", "green", "--cidr", "10.60.0.0/16", "--vni", "300"], "it would serve none"),
        (
            &[
                "network",
                "create",
                "green",
                "--cidr",
                "10.50.0.0/17",
                "--vni",
                "300",
                "--namespace",
                "g",
                "--no-masquerade",
            ],
            "overlap those of red, whose masquerade is off too",
        ),
        (
            &[
                "network",
                "create",
                "green",
                "--cidr",
                "10.60.0.0/16",
                "--subnet-len",
                "16",
                "--vni",
                "300",
                "--namespace",
                "g",
            ],
            "subnetLen 16",
        ),
    ] {
        let e = k.refused(args);
        assert!(e.contains(why), "{args:?}: {e}");
    }
    assert_eq!(k.networks().len(), 2, "no refused network was written");

    // The list: every network, each node's status, and what the agents refuse.
    k.put(ObjectKind::NetworkStatus, "blue/n1", status(2));
    k.put(ObjectKind::NetworkStatus, "blue/n2", status(0));
    k.put(ObjectKind::Network, "junk", json!({"cidr": "nope"}));
    let list = k.ok(&["network", "list"]);
    for want in [
        "blue",
        "10.50.0.0/16 fd00:50::/48",
        "team-a,tenant=blue",
        "n1",
        "2/253",
        "n2",
        "0/253",
        "red",
        "no node reports yet",
        "network junk: undecodable",
    ] {
        assert!(list.contains(want), "{want:?} missing:\n{list}");
    }
    k.delete(ObjectKind::Network, "junk");

    // Delete: refused while a node reports addresses in use, then while a pod is in one of its namespaces
    // (by name or by label), then done, its statuses with it.
    let e = k.refused(&["network", "delete", "blue"]);
    assert!(e.contains("network blue is in use") && e.contains("node n1 reports 2 address(es) in use"), "{e}");
    k.put(ObjectKind::NetworkStatus, "blue/n1", status(0));
    k.put(ObjectKind::Namespace, "labelled", json!({"name": "labelled", "labels": {"tenant": "blue"}}));
    k.put(ObjectKind::Endpoint, "labelled/web", json!({"namespace": "labelled", "name": "web", "ips": []}));
    let e = k.refused(&["network", "delete", "blue"]);
    assert!(e.contains("pods in its namespaces exist: labelled/web"), "{e}");
    assert_eq!(k.networks().len(), 2, "a refused delete deletes nothing");
    k.delete(ObjectKind::Endpoint, "labelled/web");
    let e = k.refused(&["network", "delete", "nope"]);
    assert!(e.contains("no network nope"), "{e}");
    assert!(k.ok(&["network", "delete", "blue"]).contains("network blue deleted"));
    assert_eq!(k.networks().iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["red"]);
    assert!(k.keys(ObjectKind::NetworkStatus).is_empty(), "its nodes' statuses went with it");
    // The VNI is free again.
    k.ok(&["network", "create", "blue2", "--cidr", "10.70.0.0/16", "--vni", "100", "--namespace", "team-a"]);
    k.ok(&["network", "delete", "red"]);
    k.ok(&["network", "delete", "blue2"]);
    assert!(k.ok(&["network", "list"]).contains("no tenant networks"));
}

#[test]
fn embedded_store() {
    create_list_refuse_delete(Kit::embedded());
}

#[test]
fn etcd_store() {
    create_list_refuse_delete(Kit::etcd());
}

/// Against a Kubernetes API (the fake, in this process): the list reads the Networks and their
/// `status.nodes`; writes are the operator's kubectl, and weftctl says so without writing anything.
#[test]
fn kubernetes_store_lists_the_crd_and_leaves_writes_to_kubectl() {
    use weft_store_kube::fake::{resources::by_plural, FakeApiServer, FakeOptions, PatchKind};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(FakeApiServer::start("127.0.0.1:0".parse().unwrap(), FakeOptions::default())).unwrap();
    let c = server.cluster();
    let blue: TenantNetwork = serde_json::from_value(
        json!({"name": "blue", "cidr": "10.50.0.0/16", "vni": 100, "namespaces": {"names": ["a"]}}),
    )
    .unwrap();
    c.apply(weft_store_kube::network::object_of(&blue)).unwrap();
    let nodes = json!({"status": {"nodes": {"n1": {"ready": true, "used": 7, "capacity": 253, "subnet": "10.50.1.0/24"},
        "n2": {"ready": false, "used": 0, "capacity": 0, "reason": "no subnet"}}}});
    c.patch_status(by_plural("weft.dev", "v1alpha1", "networks").unwrap(), None, "blue", PatchKind::Merge, &nodes)
        .unwrap();
    let url = server.store_url();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weftctl"))
            .args(args)
            .args(["--store", &url])
            .env_remove("WEFT_LAB")
            .output()
            .unwrap()
    };
    let o = run(&["network", "list"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in ["blue", "10.50.0.0/16", "n1", "7/253", "10.50.1.0/24", "n2", "NO", "no subnet"] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let o = run(&["network", "create", "red", "--cidr", "10.60.0.0/16", "--vni", "200", "--namespace", "r"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("create the Network with kubectl: echo '"), "{e}");
    let object = e.split('\'').nth(1).expect("the object in quotes");
    let object: serde_json::Value = serde_json::from_str(object).expect("JSON for kubectl");
    assert_eq!((object["kind"].as_str(), object["spec"]["vni"].as_u64()), (Some("Network"), Some(200)));
    // Checked first all the same: a taken VNI is refused as such.
    let o = run(&["network", "create", "red", "--cidr", "10.60.0.0/16", "--vni", "100", "--namespace", "r"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("VNI 100 is already used by blue"));
    let o = run(&["network", "delete", "blue"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("node n1 reports 7 address(es) in use"), "{e}");
    c.patch_status(
        by_plural("weft.dev", "v1alpha1", "networks").unwrap(),
        None,
        "blue",
        PatchKind::Merge,
        &json!({"status": {"nodes": {"n1": {"used": 0}}}}),
    )
    .unwrap();
    let o = run(&["network", "delete", "blue"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("kubectl delete network blue"), "{e}");
    let nets = rt.block_on(async {
        let s = weft_store_kube::open(&url).await.unwrap();
        s.objects(ObjectKind::Network).await.unwrap().items
    });
    assert_eq!(nets.len(), 1, "nothing was written or deleted");
    rt.block_on(server.stop());
}
