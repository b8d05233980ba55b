//! Key rotation under traffic (`weftctl wireguard rotate-key`): a TCP stream (node1 → node2) and a 100 pps ping
//! (node1 → node3) run while node1's key is rotated, then every node's at once. The stream must survive; the
//! pings lost are printed. Afterwards each rotated node publishes its new public key in its lease, its old
//! private key is in no file of its state directory, and every pair of nodes completed a handshake after the
//! rotation (the per-peer handshake time in the agents' status, as `wg show`'s "latest handshake").
use crate::kit::{now_ms, received_bytes, Lab, Traffic};
use std::time::{Duration, Instant};
use weft_e2e::{require_root, wait_until};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// Every file under `dir` (the node's state directory), read whole: none may hold `secret`.
fn files_holding(dir: &std::path::Path, secret: &str) -> Vec<std::path::PathBuf> {
    let mut hits = vec![];
    for e in std::fs::read_dir(dir).expect("state dir").flatten() {
        let p = e.path();
        if p.is_file() && std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(secret)) {
            hits.push(p);
        }
    }
    hits
}

/// Rotates `nodes` with weftctl and checks what a rotation must leave behind; returns how long it took until
/// every pair involving a rotated node had shaken hands again.
fn rotate_and_check(lab: &Lab, nodes: &[&str]) -> Duration {
    let before: Vec<(String, String)> = nodes.iter().map(|n| (lab.private_key(n), lab.lease_key(n))).collect();
    let t0 = Instant::now();
    let at = now_ms();
    let mut args = vec!["wireguard", "rotate-key"];
    if nodes.len() == NODES.len() {
        args.push("--all");
    } else {
        for n in nodes {
            args.extend(["--node", n]);
        }
    }
    let out = lab.ok(&args);
    println!("{}", out.trim());
    for (n, (old_private, old_public)) in nodes.iter().zip(&before) {
        assert!(out.contains(&format!("{n}: WireGuard key rotated {old_public} -> ")), "weftctl said: {out}");
        // The lease carries the new public key (the keeper publishes it in the same pass).
        let published = wait_until(Duration::from_secs(20), || lab.lease_key(n) != *old_public);
        assert!(published, "{n}'s lease still carries its old key {old_public}");
        let new_public = lab.lease_key(n);
        assert!(out.contains(&format!("{old_public} -> {new_public}")), "{n}: lease {new_public}, weftctl: {out}");
        // The old private key is gone from disk; the new one is 0600.
        let dir = lab.dir().join(n);
        assert_eq!(files_holding(&dir, old_private), Vec::<std::path::PathBuf>::new(), "{n}: old key left on disk");
        let key = dir.join("wireguard.key");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{key:?}");
        assert_ne!(lab.private_key(n), *old_private);
        let log = std::fs::read_to_string(dir.join("weftd.log")).unwrap_or_default();
        assert!(!log.contains(&lab.private_key(n)) && !log.contains(old_private), "a private key is in {n}'s log");
    }
    // Handshakes after the rotation on both ends of every pair that has a rotated node in it.
    let pairs: Vec<(&str, &str)> = NODES
        .iter()
        .flat_map(|a| NODES.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| a != b && (nodes.contains(a) || nodes.contains(b)))
        .collect();
    let shook = wait_until(Duration::from_secs(30), || {
        pairs.iter().all(|(a, b)| lab.handshake_at_ms(a, b).is_some_and(|t| t >= at))
    });
    let took = t0.elapsed();
    let ages: Vec<String> = pairs
        .iter()
        .map(|(a, b)| format!("{a}→{b}: {:?}", lab.handshake_at_ms(a, b).map(|t| t as i64 - at as i64)))
        .collect();
    assert!(shook, "no handshake with the new keys (ms after the rotation): {}", ages.join(", "));
    took
}

#[test]
fn wireguard_lab_key_rotation_keeps_a_tcp_stream() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&[]);
    let pods = lab.pods();
    let (client, server, pinger, target) = (&pods[0], &pods[2], &pods[1], &pods[4]);
    assert!(client.node == "node1" && server.node == "node2" && target.node == "node3");
    let traffic = Traffic::start(client, server, pinger, &target.ip, 30);
    std::thread::sleep(Duration::from_secs(3));
    let one = rotate_and_check(&lab, &["node1"]);
    // Past node1's settling time (the old sessions retire 5 s after the new ones are up), so that all three
    // rotate within one pass of each other: pairs where both ends change keys before either knows the other's.
    std::thread::sleep(Duration::from_secs(8));
    let all = rotate_and_check(&lab, &NODES);
    let (json, ok, sent, lost) = traffic.finish();
    println!(
        "key rotation under traffic: node1 rotated (all handshakes again after {one:?}), then all three nodes at once \
         ({all:?}); 100 pps ping node1→node3: {lost} of {sent} lost; TCP stream node1→node2: {} MB, {} retransmits",
        received_bytes(&json) / 1_000_000,
        json["end"]["sum_sent"]["retransmits"]
    );
    assert!(ok && received_bytes(&json) > 10_000_000, "the TCP stream did not survive the rotations: {json}");
    assert!(sent > 0, "the ping did not run");
    // `weftctl status` names the key the node runs, which is the one its lease carries.
    let shown = lab.ok(&["status", "--node", "node1"]);
    assert!(shown.contains(&format!("WireGuard public key {}", lab.lease_key("node1"))), "status: {shown}");
    // Still connected with only the new keys, after the old sessions retired (5 s after the new ones came up).
    std::thread::sleep(Duration::from_secs(6));
    for a in &pods {
        for b in &pods {
            assert!(crate::kit::ping(&a.ns, &b.ip), "{} cannot reach {} after the rotations", a.ns, b.ip);
        }
    }
}

/// Scheduled rotation (`--wireguard-rotate-every`, here `WEFT_WIREGUARD_ROTATE_EVERY=10s` for every agent):
/// each node rotates its key by itself, again and again, while a TCP stream and a 100 pps ping cross nodes;
/// the stream survives, every node publishes a new key each time, and afterwards every pod still reaches
/// every other with only the newest keys.
#[test]
fn wireguard_lab_scheduled_rotation_rotates_every_node_repeatedly_under_traffic() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_env(&[], &[("WEFT_WIREGUARD_ROTATE_EVERY", "10s")]);
    let pods = lab.pods();
    let (client, server, pinger, target) = (&pods[0], &pods[2], &pods[1], &pods[4]);
    let traffic = Traffic::start(client, server, pinger, &target.ip, 40);
    let mut seen: Vec<Vec<String>> = NODES.iter().map(|n| vec![lab.lease_key(n)]).collect();
    let mut private: Vec<String> = NODES.iter().map(|n| lab.private_key(n)).collect();
    // Two rotations per node: the schedule repeats (a due key is rotated once the previous rotation settled).
    let rotated_twice = wait_until(Duration::from_secs(90), || {
        for (n, keys) in NODES.iter().zip(seen.iter_mut()) {
            let k = lab.lease_key(n);
            if !keys.contains(&k) {
                keys.push(k);
            }
            let p = lab.private_key(n);
            if !private.contains(&p) {
                private.push(p);
            }
        }
        seen.iter().all(|k| k.len() >= 3)
    });
    let (json, ok, sent, lost) = traffic.finish();
    println!(
        "scheduled rotation every 10 s: keys seen per node {:?}; 100 pps ping node1→node3: {lost} of {sent} lost; \
         TCP stream node1→node2: {} MB, {} retransmits",
        seen.iter().map(Vec::len).collect::<Vec<_>>(),
        received_bytes(&json) / 1_000_000,
        json["end"]["sum_sent"]["retransmits"]
    );
    assert!(rotated_twice, "not every node rotated twice by itself: {seen:?}\n{}", lab.logs());
    assert!(ok && received_bytes(&json) > 10_000_000, "the TCP stream did not survive the rotations: {json}");
    assert!(sent > 0, "the ping did not run");
    // (Loss is printed, not asserted: the pinger shares node1's tunnel with a saturating stream on a 2-CPU
    // machine, so congestion alone may drop some. The manual-rotation test above measures the same way.)
    for n in NODES {
        let p = lab.private_key(n);
        if !private.contains(&p) {
            private.push(p);
        }
    }
    for n in NODES {
        let log = std::fs::read_to_string(lab.dir().join(n).join("weftd.log")).unwrap_or_default();
        assert!(log.contains("WireGuard key is due for rotation"), "{n} does not say why it rotated");
        for p in &private {
            assert!(!log.contains(p.as_str()), "a private key (current or retired) is in {n}'s log");
        }
    }
    // The keys keep changing; connectivity must hold across whatever rotation is under way.
    for a in &pods {
        for b in &pods {
            assert!(crate::kit::reaches(&a.ns, &b.ip, 20), "{} cannot reach {} with rotating keys", a.ns, b.ip);
        }
    }
}
