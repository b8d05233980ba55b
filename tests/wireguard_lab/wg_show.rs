//! `wg show` on a node: the agent serves the cross-platform UAPI socket (read-only) that wireguard-tools reads.
//! The lab gives each node its own socket directory (`/var/run/wireguard` is one for the whole host), so the
//! test runs `wg` in a mount namespace where that directory is the node's, as on a real node.
use crate::kit::{reaches, Lab};
use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use weft_e2e::require_root;

/// `wg ARGS` in node namespace `ns`, with `dir` as /run/wireguard (private mount: nothing leaks to the host).
fn wg(ns: &str, dir: &Path, args: &[&str]) -> Output {
    let script = format!("mkdir -p /run/wireguard && mount --bind {} /run/wireguard && exec wg \"$@\"", dir.display());
    Command::new("ip")
        .args(["netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", &script, "wg"])
        .args(args)
        .output()
        .expect("wg")
}

fn dump(ns: &str, dir: &Path) -> String {
    let out = wg(ns, dir, &["show", "weft.1", "dump"]);
    assert!(out.status.success(), "wg show dump: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// (public key, endpoint, allowed IPs) of every peer line of a dump.
fn peers(dump: &str) -> BTreeSet<(String, String, String)> {
    dump.lines()
        .skip(1)
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .map(|f| (f[0].into(), f[2].into(), f[3].into()))
        .collect()
}

/// `wg show` lists exactly the node's peers as the store has them (key, endpoint, pod subnet), with a recent
/// handshake and bytes both ways once pods talked; the socket is root-only, the private key never leaves the
/// agent, and `wg set` changes nothing (configuration comes from the store alone).
#[test]
fn wireguard_lab_wg_show_reads_the_agents_socket_and_cannot_set() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&[]);
    let (ns1, _) = lab.node(0);
    let dir = lab.dir().join("node1/wireguard");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "socket directory is root-only");
    let sock = dir.join("weft.1.sock");
    assert!(std::fs::metadata(&sock).expect("socket").file_type().is_socket());
    assert_eq!(mode(&sock), 0o600, "socket is root-only");

    let pods = lab.pods();
    let (a, b) = (pods.iter().find(|p| p.node == "node1").unwrap(), pods.iter().find(|p| p.node == "node2").unwrap());
    assert!(reaches(&a.ns, &b.ip, 10));

    let want: BTreeSet<_> = lab.status("node1")["peers"]
        .as_array()
        .expect("peers in status")
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            (
                lab.lease_key(node),
                format!("{}:{}", p["nodeIp"].as_str().unwrap(), crate::kit::WG_PORT),
                p["subnet"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(want.len(), 2, "node1 has two peers");
    let before = dump(&ns1, &dir);
    assert_eq!(peers(&before), want, "wg show:\n{before}");
    let iface: Vec<&str> = before.lines().next().unwrap().split('\t').collect();
    assert_eq!((iface[0], iface[2]), ("(none)", crate::kit::WG_PORT), "no private key over the socket: {before}");
    assert!(!before.contains(&lab.private_key("node1")));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for l in before.lines().skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        let (hs, rx, tx): (u64, u64, u64) = (f[4].parse().unwrap(), f[5].parse().unwrap(), f[6].parse().unwrap());
        assert!(hs > now - 300 && hs <= now + 5, "latest handshake {hs} is not recent (now {now}): {l}");
        assert!(rx > 0 && tx > 0, "bytes both ways: {l}");
    }
    let human = String::from_utf8(wg(&ns1, &dir, &["show", "weft.1"]).stdout).unwrap();
    assert!(human.contains("latest handshake") && human.contains("allowed ips: "), "wg show:\n{human}");

    let node2_key = lab.lease_key("node2");
    for set in [vec!["set", "weft.1", "peer", node2_key.as_str(), "remove"], vec!["set", "weft.1", "listen-port", "1"]]
    {
        let out = wg(&ns1, &dir, &set);
        assert!(!out.status.success(), "wg {set:?} must be refused");
    }
    assert_eq!(peers(&dump(&ns1, &dir)), want, "wg set changed nothing");
    assert!(reaches(&a.ns, &b.ip, 10), "pods still talk after the refused wg set");

    // A crashed agent leaves its socket file behind; nobody answers on it, and the next agent takes it over.
    let (ns2, _) = lab.node(1);
    let dir2 = lab.dir().join("node2/wireguard");
    lab.ok(&["lab", "restart", "node2", "--kill"]);
    assert!(dir2.join("weft.1.sock").exists(), "SIGKILL left the socket file");
    lab.ok(&["lab", "restart", "node2"]);
    assert!(
        weft_e2e::wait_until(std::time::Duration::from_secs(20), || {
            let out = wg(&ns2, &dir2, &["show", "weft.1", "dump"]);
            out.status.success() && peers(&String::from_utf8_lossy(&out.stdout)).len() == 2
        }),
        "node2's restarted agent does not serve `wg show`\n{}",
        lab.logs()
    );

    // A socket path another process serves (connects are answered): a restarted agent does not take it over and
    // starts without `wg show` rather than without pod traffic.
    lab.ok(&["lab", "restart", "node3", "--kill"]);
    let sock3 = lab.dir().join("node3/wireguard/weft.1.sock");
    let _ = std::fs::remove_file(&sock3);
    let foreign = std::os::unix::net::UnixListener::bind(&sock3).expect("foreign listener");
    lab.ok(&["lab", "restart", "node3"]);
    let pod3 = pods.iter().find(|p| p.node == "node3").unwrap();
    assert!(reaches(&pod3.ns, &a.ip, 20), "node3 carries pod traffic without its `wg show` socket\n{}", lab.logs());
    assert!(
        weft_e2e::wait_until(std::time::Duration::from_secs(10), || std::fs::read_to_string(
            lab.dir().join("node3/weftd.log")
        )
        .unwrap_or_default()
        .contains("no `wg show` socket")),
        "the agent says why there is no socket\n{}",
        lab.logs()
    );
    assert!(std::fs::metadata(&sock3).is_ok_and(|m| m.file_type().is_socket()), "the foreign socket is left alone");
    drop(foreign);
}
