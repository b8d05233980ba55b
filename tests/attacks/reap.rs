//! `WEFT_REAP_LINK=<ifindex>:<name>` makes `weft` a reaper that deletes a host veth (DEL hands the slow
//! unregister to it). The variable is input like any other: whoever can run the plugin with an environment of
//! their choosing must not get it to delete the node's links. Only a veth with weft's name prefix *and* weft's
//! ifalias is ever deleted; everything else, including a weft-looking name without the alias, stays.
use std::process::Command;
use weft_e2e::{bin, require_root, unique, Netns};

/// The ifindex of `name` in `ns`, or `None` if it does not exist.
fn index(ns: &Netns, name: &str) -> Option<u32> {
    let out = ns.try_exec("cat", &[&format!("/sys/class/net/{name}/ifindex")]);
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Runs `weft` in `ns` exactly as a spawned reaper would be (no CNI_* at all, just the variable).
fn reap(ns: &Netns, request: &str) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(bin("weft"))
        .env_clear()
        .env("WEFT_REAP_LINK", request)
        .output()
        .expect("run weft");
    // Its exit status carries nothing the attacker could use; what matters is what is left on the node.
    drop(out);
}

#[test]
fn reaper_deletes_only_weft_host_veths() {
    if !require_root() {
        return;
    }
    let node = Netns::new(format!("wa{}r", unique()));
    // The node's own uplink-like veth, a bridge and a veth that borrowed weft's prefix: none of them weft's.
    node.ip(&["link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"]);
    node.ip(&["link", "add", "wf00aabbccddeef", "type", "veth", "peer", "name", "wfpeer"]);
    node.ip(&["link", "add", "wfbr0", "type", "bridge"]);
    node.ip(&["link", "set", "wfbr0", "alias", "weft:net:ctr:eth0"]);
    // And one that *is* weft's (prefix and alias), the only one the reaper may delete.
    node.ip(&["link", "add", "wf11aabbccddeef", "type", "veth", "peer", "name", "wfpod"]);
    node.ip(&["link", "set", "wf11aabbccddeef", "alias", "weft:net:ctr:eth0"]);

    for name in ["lo", "uplink0", "wf00aabbccddeef", "wfbr0"] {
        let idx = index(&node, name).expect(name);
        reap(&node, &format!("{idx}:{name}"));
        assert!(index(&node, name).is_some(), "the reaper deleted {name}, a link weft did not create");
    }
    // A request naming weft's veth but the index of another link deletes neither.
    let uplink = index(&node, "uplink0").unwrap();
    reap(&node, &format!("{uplink}:wf11aabbccddeef"));
    assert!(index(&node, "uplink0").is_some() && index(&node, "wf11aabbccddeef").is_some());

    // DEL puts detached veths into weft's reap group so one request deletes them all; a foreign link that
    // someone put in that group must make the reaper fall back to deleting just its own veth.
    const REAP_GROUP: &str = "2003134068"; // 0x77656674, "weft"
    node.ip(&["link", "set", "uplink0", "group", REAP_GROUP]);
    node.ip(&["link", "set", "wf11aabbccddeef", "group", REAP_GROUP]);
    let ours = index(&node, "wf11aabbccddeef").unwrap();
    reap(&node, &format!("{ours}:wf11aabbccddeef"));
    assert!(index(&node, "uplink0").is_some(), "the reaper deleted the reap group with a foreign link in it");
    assert!(
        weft_e2e::wait_until(std::time::Duration::from_secs(10), || index(&node, "wf11aabbccddeef").is_none()),
        "weft's own host veth must still be reaped"
    );
}
