//! etcd outages: the drill in the issue stops etcd and starts it again. The agent's store object must report
//! `Unavailable` promptly (never hang), work again after the restart without being rebuilt, and a watch
//! resumed from the last listed revision must see what happened after the restart.
use crate::harness::{config, etcd_store, next, req, runtime};
use futures::StreamExt;
use std::time::{Duration, Instant};
use weft_e2e::Etcd;
use weft_store::{Store, StoreError, WatchEvent};

const LONG: Duration = Duration::from_secs(60);

#[test]
fn outage_reports_unavailable_then_the_same_store_recovers() {
    let mut etcd = Etcd::start();
    runtime().block_on(async move {
        let s = etcd_store(&etcd).await;
        s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
        let l1 = s.acquire(&req("n1", LONG)).await.unwrap();
        let snap = s.leases().await.unwrap();
        let mut w = s.watch_leases(snap.revision).await.unwrap();

        tokio::task::block_in_place(|| etcd.stop());

        // The open watch fails (error or end), it does not pretend all is well.
        match tokio::time::timeout(Duration::from_secs(15), w.next()).await {
            Ok(Some(Err(StoreError::Unavailable(_)))) | Ok(None) => {}
            other => panic!("watch during outage: {other:?}"),
        }
        // Calls fail fast with Unavailable (op timeout 2 s in the harness), twice in a row.
        for _ in 0..2 {
            let t = Instant::now();
            assert!(matches!(s.leases().await, Err(StoreError::Unavailable(_))));
            assert!(matches!(s.acquire(&req("n2", LONG)).await, Err(StoreError::Unavailable(_))));
            assert!(t.elapsed() < Duration::from_secs(10), "calls must not hang: {:?}", t.elapsed());
            eprintln!("two calls failed in {:?} during the outage", t.elapsed());
        }

        // The issue's drill is 30 s; 3 s here keeps the suite quick (WEFT_OUTAGE_SECS=30 for the real drill).
        let outage = std::env::var("WEFT_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
        tokio::time::sleep(Duration::from_secs(outage)).await;
        tokio::task::block_in_place(|| etcd.restart());

        // The same store object recovers.
        let t = Instant::now();
        loop {
            match s.leases().await {
                Ok(now) => {
                    assert_eq!(now.items, vec![l1.clone()], "the lease survived the outage");
                    break;
                }
                Err(StoreError::Unavailable(e)) if t.elapsed() < Duration::from_secs(20) => {
                    eprintln!("still unavailable after {:?}: {e}", t.elapsed());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("store did not recover: {e}"),
            }
        }
        eprintln!("store answered again {:?} after etcd restarted", t.elapsed());

        // Changes after the restart reach a watch resumed from the last listed revision.
        let l2 = etcd_store(&etcd).await.acquire(&req("n2", LONG)).await.unwrap();
        let mut w = s.watch_leases(snap.revision).await.unwrap();
        assert_eq!(next(&mut w).await, WatchEvent::Put(l2));
        let renewed = s.renew(&l1, LONG).await.unwrap();
        assert_eq!(next(&mut w).await, WatchEvent::Put(renewed));
    });
}

#[test]
fn connect_to_a_dead_endpoint_fails_fast() {
    let port = weft_e2e::free_port();
    runtime().block_on(async move {
        let t = Instant::now();
        let r = weft_store::open(&format!("etcd://127.0.0.1:{port}")).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "got {:?}", r.err());
        assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    });
}

#[test]
fn open_by_url_with_a_prefix_isolates_clusters() {
    let etcd = Etcd::start();
    runtime().block_on(async move {
        let a = weft_store::open(&format!("etcd://127.0.0.1:{}/lab-a", etcd.client_port)).await.unwrap();
        let b = weft_store::open(&format!("etcd+http://127.0.0.1:{}/lab-b", etcd.client_port)).await.unwrap();
        let ca = config("10.244.0.0/16", 24);
        let cb = config("10.50.0.0/16", 24);
        assert_eq!(a.init_network_config(&ca).await.unwrap(), ca);
        assert_eq!(b.init_network_config(&cb).await.unwrap(), cb, "another prefix is another cluster");
        a.acquire(&req("n1", LONG)).await.unwrap();
        assert!(b.leases().await.unwrap().items.is_empty());
        drop(etcd);
    });
}

/// The store's own security options from the test server's files.
fn files(e: &Etcd, client: Option<&weft_e2e::pki::CertFiles>) -> weft_store::EtcdSecurityFiles {
    let pki = e.pki.as_ref().expect("a TLS etcd");
    weft_store::EtcdSecurityFiles {
        ca_file: Some(pki.ca.clone()),
        cert_file: client.map(|c| c.cert.clone()),
        key_file: client.map(|c| c.key.clone()),
        ..Default::default()
    }
}

fn url(e: &Etcd) -> String {
    format!("etcds://127.0.0.1:{}", e.client_port)
}

/// Leases and watches work over TLS with a client certificate; without one, with a stranger's, or in
/// plaintext, etcd answers nothing.
#[test]
fn tls_with_client_certificates() {
    let etcd = Etcd::start_tls();
    let pki = etcd.pki.clone().unwrap();
    runtime().block_on(async move {
        let s = weft_store::open_with(&url(&etcd), &files(&etcd, Some(&pki.client))).await.expect("TLS connect");
        s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
        let snap = s.leases().await.unwrap();
        let mut w = s.watch_leases(snap.revision).await.unwrap();
        let l = s.acquire(&req("n1", LONG)).await.unwrap();
        assert_eq!(next(&mut w).await, WatchEvent::Put(l.clone()));
        assert_eq!(s.leases().await.unwrap().items, vec![l]);

        for (what, client) in [("no client certificate", None), ("a stranger's certificate", Some(&pki.stranger))] {
            let r = weft_store::open_with(&url(&etcd), &files(&etcd, client)).await;
            assert!(r.is_err(), "{what}: etcd must refuse the connection");
        }
        let plain = weft_store::open(&format!("etcd://127.0.0.1:{}", etcd.client_port)).await;
        assert!(plain.is_err(), "plaintext to a TLS etcd must fail");
        // And the CLI tools an attacker would use.
        let ep = format!("https://127.0.0.1:{}/v3/kv/range", etcd.client_port);
        let cacert = format!("--cacert={}", pki.ca.display());
        let curl = weft_e2e::try_run("curl", &["-sf", "-m", "5", &cacert, "-XPOST", "-d", r#"{"key":"Lw=="}"#, &ep]);
        assert!(!curl.status.success(), "curl without a client certificate read etcd");
    });
}

/// etcd `auth enable`: the right user and password work (also from a file), a wrong one is refused.
#[test]
fn username_and_password() {
    let mut etcd = Etcd::start();
    etcd.enable_auth("rootpw");
    let dir = weft_e2e::TempDir::new("etcd-pw");
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "rootpw\n").unwrap();
    runtime().block_on(async move {
        let u = format!("etcd://127.0.0.1:{}", etcd.client_port);
        let creds = |pw: Option<&str>, file: Option<std::path::PathBuf>| weft_store::EtcdSecurityFiles {
            username: Some("root".into()),
            password: pw.map(String::from),
            password_file: file,
            ..Default::default()
        };
        let s = weft_store::open_with(&u, &creds(Some("rootpw"), None)).await.expect("root connects");
        s.init_network_config(&config("10.244.0.0/16", 24)).await.unwrap();
        let l = s.acquire(&req("n1", LONG)).await.unwrap();
        let from_file = weft_store::open_with(&u, &creds(None, Some(pw_file))).await.expect("password file");
        assert_eq!(from_file.leases().await.unwrap().items, vec![l]);

        let wrong = weft_store::open_with(&u, &creds(Some("nope"), None)).await;
        assert!(wrong.is_err(), "a wrong password must be refused");
        // Connecting proves nothing by itself (status needs no auth); reading must fail.
        if let Ok(anon) = weft_store::open(&u).await {
            assert!(anon.leases().await.is_err(), "an anonymous client read the leases");
        }
    });
}
