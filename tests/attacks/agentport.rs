//! Pods read the agent (issue 8, item 11): `/status` gives every node IP, VTEP MAC, subnet and policy name, and
//! `/metrics` more. The agent listens on loopback by default; where an operator listens on the node IP to scrape
//! metrics (deploy/weft.yaml's old `0.0.0.0:9473`), `inet weft` still keeps pods away from the port: a pod on the
//! same node (to the node IP and to the node's tunnel address) and a pod on another node (to the node IP, and to
//! the tunnel address through the overlay) get nothing and are counted; the node itself still reads it.
use crate::spoof::{ns_exec, Lab};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weft_e2e::{bin, require_root, wait_until};

/// node1's agent, started by the test itself (to choose `--listen`), killed on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Replaces node1's lab agent with one that takes the same flags but listens on `listen`.
fn restart_listening_on(lab: &Lab, listen: &str) -> Agent {
    let pid = lab.state()["nodes"][0]["agentPid"].as_u64().expect("agent pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("agent cmdline");
    let mut args: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect();
    args.remove(0);
    let i = args.iter().position(|a| a == "--listen").expect("--listen flag");
    args[i + 1] = listen.to_string();
    lab.ok(&["lab", "restart", "--name", &lab.name, "node1", "--kill"], &[]);
    let (ns, _) = lab.node(0);
    let log = std::fs::File::create(lab.dir().join("node1/weftd-test.log")).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(bin("weftd"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("weftd");
    Agent(child)
}

/// HTTP GET from namespace `ns`: the body, or None if nothing answered within 2 s.
fn get(ns: &str, url: &str) -> Option<String> {
    let o = ns_exec(ns, &["curl", "-sf", "-m", "2", url]);
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn pods_cannot_read_the_agent_even_on_the_node_ip() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&["--nodes", "2"]);
    let local = lab.add_pod("node1", "local", "role=client");
    let remote = lab.add_pod("node2", "remote", "role=client");
    let ((n1, n1_ip), (n2, _)) = (lab.node(0), lab.node(1));
    let tunnel_ip = lab.status("node1")["subnet"].as_str().unwrap().split('/').next().unwrap().to_string();
    let _agent = restart_listening_on(&lab, "0.0.0.0:9473");
    let status = format!("http://{n1_ip}:9473/status");
    // The node itself reads it on its own address (a scraper on the node network would too).
    assert!(
        wait_until(Duration::from_secs(20), || get(&n1, &status).is_some_and(|b| b.contains("\"ready\":true"))),
        "node1 cannot read its agent on {n1_ip}: {}",
        lab.logs()
    );
    let before = (Lab::counter(&n1, "agent_port_rejected"), Lab::counter(&n2, "agent_port_rejected"));
    for (who, ns) in [("same-node pod", &local.netns), ("other-node pod", &remote.netns)] {
        for host in [&n1_ip, &tunnel_ip] {
            for path in ["status", "metrics", "readyz"] {
                let url = format!("http://{host}:9473/{path}");
                assert_eq!(get(ns, &url), None, "a {who} read {url}");
            }
        }
    }
    let after = (Lab::counter(&n1, "agent_port_rejected"), Lab::counter(&n2, "agent_port_rejected"));
    // node1 drops the local pod's attempts and the remote pod's through the tunnel; node2 drops its own pod's
    // attempts on node1's underlay address (masqueraded, node1 could not tell them from node2 itself).
    assert!(after.0 >= before.0 + 9, "node1 did not count the pods' attempts: {before:?} → {after:?}");
    assert!(after.1 >= before.1 + 3, "node2 did not count its pod's attempts on node1's IP: {before:?} → {after:?}");
    // The pods still reach each other and the node's other services: only the agent's port is closed.
    assert!(ns_exec(&local.netns, &["ping", "-c", "1", "-W", "2", &n1_ip]).status.success());
    assert!(ns_exec(&local.netns, &["ping", "-c", "1", "-W", "2", &remote.ip]).status.success());
    // The node still reads everything.
    assert!(get(&n1, &format!("http://{n1_ip}:9473/metrics")).is_some_and(|m| m.contains("weft_agent_port_rejected")));
}
