//! What only the embedded store can show: several processes sharing one file (the lab runs many agents on
//! one host), leases surviving a reopen of the file, and the change log trimming itself.
use crate::harness::{config, next, req, runtime};
use futures::StreamExt;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;
use weft_e2e::TempDir;
use weft_store::{EmbeddedOptions, EmbeddedStore, ObjectKind, Store, WatchEvent};

const LONG: Duration = Duration::from_secs(600);
const CHILD_DB: &str = "WEFT_STORE_CHILD_DB";
const CHILD_ID: &str = "WEFT_STORE_CHILD_ID";
const PROCS: usize = 5;
const PER_PROC: usize = 6;

/// Run by `processes_sharing_one_file_never_share_a_subnet` in each child process; not on its own.
#[test]
#[ignore = "child of processes_sharing_one_file_never_share_a_subnet"]
fn child_acquires() {
    let db = std::env::var(CHILD_DB).expect("run by the parent test");
    let id = std::env::var(CHILD_ID).expect("run by the parent test");
    runtime().block_on(async move {
        let mut tasks = Vec::new();
        for i in 0..PER_PROC {
            let (db, node) = (db.clone(), format!("p{id}-n{i}"));
            tasks.push(tokio::spawn(async move {
                let s = EmbeddedStore::open(&db).await.expect("open");
                s.acquire(&req(&node, LONG)).await.expect("acquire")
            }));
        }
        for t in tasks {
            let l = t.await.unwrap();
            println!("LEASE {} {}", l.node, l.subnet);
        }
    });
}

#[test]
fn processes_sharing_one_file_never_share_a_subnet() {
    let dir = TempDir::new("store-mp");
    let db = dir.path().join("shared.db");
    runtime().block_on(async {
        let s = EmbeddedStore::open(&db).await.unwrap();
        s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
    });
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCS)
        .map(|i| {
            Command::new(&exe)
                .args(["--exact", "embedded_only::child_acquires", "--ignored", "--nocapture", "--test-threads=1"])
                .env(CHILD_DB, &db)
                .env(CHILD_ID, i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut subnets = HashSet::new();
    let mut nodes = HashSet::new();
    for out in children {
        let out = out.wait_with_output().expect("child output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        // libtest prints "test <name> ... " without a newline before the test's own output: search, not prefix.
        for line in stdout.lines().filter_map(|l| l.split_once("LEASE ").map(|(_, rest)| rest)) {
            let (node, subnet) = line.split_once(' ').unwrap();
            assert!(nodes.insert(node.to_string()));
            assert!(subnets.insert(subnet.to_string()), "{subnet} handed out twice");
        }
    }
    assert_eq!(subnets.len(), PROCS * PER_PROC, "every child reported its leases");
    runtime().block_on(async {
        let listed: HashSet<_> = EmbeddedStore::open(&db)
            .await
            .unwrap()
            .leases()
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|l| l.subnet.to_string())
            .collect();
        assert_eq!(listed, subnets);
    });
}

#[test]
fn leases_and_objects_survive_reopening_the_file() {
    let dir = TempDir::new("store-reopen");
    let db = dir.path().join("sub/dir/weft.db");
    runtime().block_on(async {
        let url = format!("embedded://{}", db.display());
        let s = weft_store::open(&url).await.unwrap();
        s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
        let l = s.acquire(&req("n1", LONG)).await.unwrap();
        s.put_object(ObjectKind::Namespace, "default", &serde_json::json!({"labels": {"a": "b"}})).await.unwrap();
        let rev = s.leases().await.unwrap().revision;
        drop(s);
        let s = weft_store::open(&format!("sqlite://{}", db.display())).await.unwrap();
        let snap = s.leases().await.unwrap();
        assert_eq!(snap.items, vec![l.clone()]);
        assert_eq!(snap.revision, rev, "revisions continue across reopen");
        assert_eq!(s.objects(ObjectKind::Namespace).await.unwrap().items.len(), 1);
        assert_eq!(s.acquire(&req("n1", LONG)).await.unwrap().subnet, l.subnet);
    });
}

#[test]
fn change_log_trims_itself_and_late_watchers_reset() {
    let dir = TempDir::new("store-trim");
    runtime().block_on(async {
        let opts =
            EmbeddedOptions { changelog_keep: 10, poll_interval: Duration::from_millis(20), ..Default::default() };
        let s = EmbeddedStore::open_with(dir.path().join("t.db"), opts).await.unwrap();
        let mut last = 0;
        for i in 0..200 {
            last = s.put_object(ObjectKind::Endpoint, &format!("ns/p{}", i % 7), &serde_json::json!(i)).await.unwrap();
        }
        let mut old = s.watch_objects(ObjectKind::Endpoint, 1).await.unwrap();
        assert_eq!(next(&mut old).await, WatchEvent::Reset);
        assert!(old.next().await.is_none());
        // A recent watcher replays exactly the rows after its revision.
        let mut recent = s.watch_objects(ObjectKind::Endpoint, last - 3).await.unwrap();
        for rev in last - 2..=last {
            let i = rev - 1; // revision n was the put of i = n - 1
            assert_eq!(next(&mut recent).await, WatchEvent::Put((format!("ns/p{}", i % 7), serde_json::json!(i))));
        }
    });
}
