//! Concurrency and crash tests: 64 parallel ADDs, SIGKILL at random points of ADD followed by GC or DEL, and
//! GC keeping exactly the valid attachments.
use super::kit::{finish, ping, Node};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};
use weft_e2e::{require_root, Netns};

#[test]
fn sixty_four_parallel_adds_get_distinct_addresses_and_dels_free_them() {
    if !require_root() {
        return;
    }
    let node = Node::new("x");
    let conf = node.static_conf("1.0.0", false);
    let pods: Vec<Netns> = (0..64).map(|i| node.pod(i)).collect();
    let bin = super::kit::weft_bin();
    let spawn_all = |verb: &str| -> Vec<_> {
        pods.iter()
            .enumerate()
            .map(|(i, p)| {
                let path = p.path().display().to_string();
                let cid = format!("par{i}");
                let env =
                    [("CNI_COMMAND", verb), ("CNI_CONTAINERID", &cid), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", &path)];
                node.command(&bin, &env).spawn().expect("spawn")
            })
            .collect()
    };
    let results: Vec<_> = spawn_all("ADD").into_iter().map(|c| finish(c, &conf).expect_ok()).collect();
    let ips: HashSet<String> = results.iter().map(|r| r.ip(false)).collect();
    assert_eq!(ips.len(), 64, "every ADD got its own address");
    assert_eq!(node.reservations().len(), 64);
    assert_eq!(node.weft_links().len(), 64);
    assert!(ping(&pods[0], &results[63].ip(false)) && ping(&pods[63], &results[0].ip(false)));
    for c in spawn_all("DEL") {
        finish(c, &conf).expect_ok();
    }
    assert!(node.reservations().is_empty());
    assert_eq!(node.ipam_files(), Vec::<String>::new(), "no index or temp file left");
    assert!(node.wait_no_links(), "left: {:?}", node.weft_links());
}

/// A tiny xorshift so the kill points vary per run but can be replayed from the printed seed.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn sigkill_during_add_is_reclaimed_by_gc_and_del() {
    if !require_root() {
        return;
    }
    let node = Node::new("s");
    let conf = node.static_conf("1.1.0", true);
    let survivor = node.pod(99);
    // Warm up (page cache, dentries) so the timed ADD below is representative.
    node.weft("ADD", "warm", Some(&survivor), &conf).expect_ok();
    node.weft("DEL", "warm", Some(&survivor), &conf).expect_ok();
    let t0 = std::time::Instant::now();
    let kept = node.weft("ADD", "survivor", Some(&survivor), &conf).expect_ok();
    // Kill points are spread over the duration of a whole ADD on this machine right now (load varies).
    let span = t0.elapsed().as_micros() as u64 * 6 / 5 / 24 + 1;
    let mut seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill-point seed {seed}");
    let bin = super::kit::weft_bin();
    let (mut before_any, mut midway, mut completed) = (0, 0, 0);
    for round in 0..24u64 {
        let pod = node.pod(round as usize);
        let (path, cid) = (pod.path().display().to_string(), format!("k{round}"));
        let env =
            [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", cid.as_str()), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", &path)];
        let state = || node.reservations().len() + node.weft_links().len();
        let before = state();
        let mut child = node.command(&bin, &env).spawn().expect("spawn");
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
        }
        std::thread::sleep(Duration::from_micros(round * span + rng(&mut seed) % span));
        let _ = child.kill();
        match (child.wait().unwrap().success(), state() > before) {
            (true, _) => completed += 1,
            (false, true) => midway += 1,
            (false, false) => before_any += 1,
        }
        // Every other round the runtime retries with DEL for the same container instead of waiting for GC.
        if round % 2 == 1 {
            node.weft("DEL", &cid, Some(&pod), &conf).expect_ok();
        }
    }
    eprintln!("kill -9 during ADD: {before_any} before any change, {midway} midway, {completed} completed");
    assert!(midway > 0, "no kill landed inside an ADD; the test proved nothing");
    let gc = node.conf(
        "1.1.0",
        json!({"ipam": {"subnet": "10.123.0.0/24", "subnet6": "fd00:123::/64"},
               "cni.dev/valid-attachments": [{"containerID": "survivor", "ifname": "eth0"}]}),
    );
    node.weft_at("GC", "", None, &gc).expect_ok();
    let left: Vec<String> = node.reservations().iter().map(|i| i.to_string()).collect();
    let mut want = vec![kept.ip(false), kept.ip(true)];
    want.sort();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    assert_eq!(left_sorted, want, "only the survivor's addresses remain");
    assert_eq!(node.ipam_files().len(), 4, "survivor's 2 reservations + 2 index entries: {:?}", node.ipam_files());
    assert!(
        weft_e2e::wait_until(Duration::from_secs(10), || node.weft_links().len() == 1),
        "only the survivor's veth remains: {:?}",
        node.weft_links()
    );
    assert!(ping(&survivor, super::kit::NODE_IP), "GC did not touch the valid attachment");
}

#[test]
fn gc_releases_exactly_the_invalid_attachments() {
    if !require_root() {
        return;
    }
    let node = Node::new("g");
    let conf = node.static_conf("1.1.0", false);
    let pods: Vec<Netns> = (0..3).map(|i| node.pod(i)).collect();
    let ips: Vec<String> =
        (0..3).map(|i| node.weft("ADD", &format!("g{i}"), Some(&pods[i]), &conf).expect_ok().ip(false)).collect();
    // A foreign link whose name merely starts like ours must survive.
    node.ns.ip(&["link", "add", "wfforeign", "type", "veth", "peer", "name", "wfforeign2"]);
    let gc = node.conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": "g1", "ifname": "eth0"}, {"containerID": "zz", "ifname": "eth0"}]}),
    );
    node.weft_at("GC", "", None, &gc).expect_ok();
    assert_eq!(node.reservations().iter().map(|i| i.to_string()).collect::<Vec<_>>(), vec![ips[1].clone()]);
    let mut links = node.weft_links();
    links.sort();
    assert_eq!(links.len(), 3, "g1's veth and the two foreign links: {links:?}");
    assert!(links.contains(&"wfforeign".to_string()));
    assert!(ping(&pods[1], super::kit::NODE_IP));
    assert!(!ping(&pods[0], super::kit::NODE_IP), "g0 was garbage-collected");
}
