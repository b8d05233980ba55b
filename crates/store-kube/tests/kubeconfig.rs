//! `kube://` takes its API server from the environment, as `kubectl` does: here a KUBECONFIG naming the fake
//! API server. (The in-cluster service-account path cannot run outside a pod.) One test per binary, because it
//! sets a process-wide environment variable.
//!
//! Run: `cargo test -p weft-store-kube --test kubeconfig`.
use weft_store_kube::fake::{FakeApiServer, FakeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_url_uses_kubeconfig() {
    let api = FakeApiServer::start("127.0.0.1:0".parse().unwrap(), FakeOptions::default()).await.unwrap();
    api.cluster().add_node("n1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: nobody\n  \
         user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: nobody}}\ncurrent-context: fake\n",
        api.http_url()
    );
    std::fs::write(&path, kubeconfig).unwrap();
    // This binary has no other test, so nothing else reads the environment meanwhile.
    std::env::set_var("KUBECONFIG", &path);
    let s = weft_store_kube::open("kube://").await.expect("kube:// with KUBECONFIG");
    let nodes = s.leases().await.expect("list nodes through the kubeconfig's server");
    assert!(nodes.items.is_empty(), "n1 has no lease yet");
    assert!(api.cluster().requests().iter().any(|r| r.resource == "nodes" && r.verb == "list"));

    std::env::set_var("KUBECONFIG", dir.path().join("missing"));
    std::env::remove_var("KUBERNETES_SERVICE_HOST");
    match weft_store_kube::open("kube://").await {
        Err(weft_store::StoreError::Other(m)) => assert!(m.contains("no Kubernetes client config"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("no config anywhere, yet connected"),
    }
}
