//! End to end: `weftctl lab` used the way people build the upstream NetworkPolicy model by hand (namespaces x, y,
//! z × pods a, b, c): names as NAMESPACE/POD everywhere, ambiguity refused, relabelling in place (the pod keeps
//! its address and its processes, policy follows the labels), bad names rejected, and `lab status` telling pairs
//! denied by policy from broken ones.
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;
use weft_e2e::{bin, require_root, unique, wait_until};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// A lab brought down on drop, even when the test fails.
struct Lab {
    name: String,
}

impl Lab {
    fn up() -> Lab {
        let lab = Lab { name: format!("c{}", unique()) };
        // `--name` is the compatibility spelling of the global `--lab` for `lab up`.
        let out =
            lab.raw(&["lab", "up", "--name", &lab.name, "--nodes", "2", "--pods-per-node", "0", "--lease-ttl", "4s"]);
        assert!(out.status.success(), "lab up failed:\n{}", text(&out));
        lab
    }

    fn raw(&self, args: &[&str]) -> Output {
        Command::new(bin("weftctl")).args(args).output().expect("weftctl")
    }

    /// `weftctl --lab NAME ARGS` (the global flag before the subcommand, so `exec … -- CMD` stays intact).
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("weftctl")).args(["--lab", &self.name]).args(args).output().expect("weftctl")
    }

    /// Like `ctl`, panicking with the output unless it succeeded.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "weftctl {}: {}", args.join(" "), text(&out));
        text(&out)
    }

    /// Like `ctl`, panicking unless it failed; returns what it said.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(!out.status.success(), "weftctl {} should have failed: {}", args.join(" "), text(&out));
        text(&out)
    }

    fn state(&self) -> Value {
        let p = std::path::Path::new("/run/weft-lab").join(&self.name).join("state.json");
        serde_json::from_slice(&std::fs::read(p).expect("lab state")).expect("json")
    }

    /// (IPv4, netns) of pod `ns/name` from the lab's state.
    fn pod(&self, key: &str) -> (String, String) {
        let st = self.state();
        let (ns, name) = key.split_once('/').unwrap();
        let p = st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| n["pods"].as_array().unwrap().iter())
            .find(|p| p["namespace"] == ns && p["name"] == name)
            .unwrap_or_else(|| panic!("no pod {key} in the lab state"))
            .clone();
        (p["ip"].as_str().unwrap().to_string(), p["ns"].as_str().unwrap().to_string())
    }

    /// One ping from pod `from` to pod `to`, run through `lab exec NS/POD`.
    fn pings(&self, from: &str, to: &str) -> bool {
        let ip = self.pod(to).0;
        self.ctl(&["lab", "exec", from, "--", "ping", "-c", "1", "-W", "1", &ip]).status.success()
    }

    fn wait_policy(&self) {
        self.ok(&["policy", "wait", "--timeout-secs", "60"]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.raw(&["lab", "down", "--lab", &self.name]);
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn build_model(lab: &Lab) {
    for ns in NAMESPACES {
        lab.ok(&["lab", "ns-add", ns, "--label", &format!("ns={ns}")]);
    }
    for (i, (ns, pod)) in NAMESPACES.iter().flat_map(|n| PODS.iter().map(move |p| (*n, *p))).enumerate() {
        let node = format!("node{}", i % 2 + 1);
        let key = format!("{ns}/{pod}");
        let out = lab.ok(&[
            "lab",
            "pod-add",
            "--node",
            &node,
            "--pod",
            &key,
            "--label",
            &format!("pod={pod}"),
            "--port",
            "http=80/TCP",
        ]);
        assert!(out.starts_with(&format!("pod {key} ")), "pod-add said: {out}");
    }
}

const POLICIES: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: trusted-ns, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {trusted: 'yes'}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]
";

#[test]
fn lab_builds_the_policy_model_relabels_in_place_and_explains_denials() {
    if !require_root() {
        return;
    }
    let lab = Lab::up();
    build_model(&lab);

    // Bad names change nothing: Kubernetes' own rules for port names, namespaces, labels.
    let e = lab.refused(&["lab", "pod-add", "--node", "node1", "--pod", "x/d", "--port", "Bad_Name=80/TCP"]);
    assert!(e.contains("invalid port name \"Bad_Name\""), "{e}");
    assert!(lab.refused(&["lab", "pod-add", "--node", "node1", "--pod", "X_1/d"]).contains("invalid namespace"));
    assert!(lab.refused(&["lab", "ns-add", "w", "--label", "bad key=v"]).contains("invalid label key"));
    let st = lab.state().to_string();
    assert!(!st.contains("\"name\":\"d\""), "a refused pod reached the lab state: {st}");
    // An existing namespace is not silently relabelled by ns-add.
    let e = lab.refused(&["lab", "ns-add", "x", "--label", "team=red"]);
    assert!(e.contains("exists already") && e.contains("lab label ns x"), "{e}");

    // NAMESPACE/POD everywhere; a bare name only when unambiguous.
    lab.ok(&["lab", "exec", "x/a", "--", "true"]);
    lab.ok(&["lab", "exec", "node1", "--", "true"]);
    let e = lab.refused(&["lab", "exec", "a", "--", "true"]);
    assert!(e.contains("ambiguous") && e.contains("x/a, y/a, z/a"), "{e}");
    assert!(lab.refused(&["lab", "pod-del", "b"]).contains("x/b, y/b, z/b"));
    let e = lab.refused(&["policy", "explain", "--from", "c", "--to", "x/a", "--port", "80"]);
    assert!(e.contains("x/c, y/c, z/c"), "{e}");

    let file = std::env::temp_dir().join(format!("weft-labcli-{}.yaml", unique()));
    std::fs::write(&file, POLICIES).unwrap();
    lab.ok(&["policy", "apply", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    lab.wait_policy();

    // explain names pods and prints protocols as Kubernetes does.
    let out = lab.ctl(&["policy", "explain", "--from", "y/a", "--to", "x/a", "--port", "80/tcp"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let xa_ip = lab.pod("x/a").0;
    let head = format!("y/a ({}) → x/a ({xa_ip}) 80/TCP (network default): DENIED", lab.pod("y/a").0);
    assert!(said.contains(&head), "{said}");
    assert!(said.contains("x/trusted-ns") && !said.contains("Tcp"), "{said}");

    // Namespace relabel: y becomes trusted, so y/a reaches x/a; then it is removed again.
    assert!(!lab.pings("y/a", "x/a"), "x/a reachable before y was trusted");
    assert!(lab.pings("x/b", "x/c"), "an unselected pod is not reachable");
    let out = lab.ok(&["lab", "label", "ns", "y", "trusted=yes"]);
    assert!(out.contains("namespace y labeled"), "{out}");
    lab.wait_policy();
    assert!(wait_until(Duration::from_secs(15), || lab.pings("y/a", "x/a")), "relabelled namespace y not admitted");
    assert!(!lab.pings("z/a", "x/a"), "z is not trusted");
    lab.ok(&["lab", "label", "ns", "y", "trusted-"]);
    lab.wait_policy();
    assert!(!lab.pings("y/a", "x/a"), "x/a still reachable after y lost its label");

    // Pod relabel in place: z/c becomes a client of x/b; it keeps its address and the process running in it.
    let (zc_ip, zc_netns) = lab.pod("z/c");
    let mut sleeper = Command::new("ip").args(["netns", "exec", &zc_netns, "sleep", "600"]).spawn().expect("sleep");
    assert!(!lab.pings("z/c", "x/b"), "x/b reachable before z/c was a client");
    let out = lab.ok(&["lab", "label", "pod", "z/c", "role=client"]);
    assert!(out.contains("pod z/c labeled"), "{out}");
    lab.wait_policy();
    assert!(wait_until(Duration::from_secs(15), || lab.pings("z/c", "x/b")), "relabelled pod z/c not admitted");
    assert_eq!(lab.pod("z/c"), (zc_ip.clone(), zc_netns.clone()), "relabelling changed the pod");
    let addrs =
        String::from_utf8_lossy(&Command::new("ip").args(["-n", &zc_netns, "-4", "addr"]).output().unwrap().stdout)
            .into_owned();
    assert!(addrs.contains(&format!("{zc_ip}/32")), "z/c lost its address: {addrs}");
    assert!(sleeper.try_wait().unwrap().is_none(), "the pod's process died on relabel");
    // kubectl semantics: changing a value needs --overwrite; k- removes.
    let e = lab.refused(&["lab", "label", "pod", "z/c", "role=server"]);
    assert!(e.contains("--overwrite"), "{e}");
    lab.ok(&["lab", "label", "pod", "z/c", "role=server", "--overwrite", "extra=1"]);
    lab.wait_policy();
    assert!(!lab.pings("z/c", "x/b"), "x/b still reachable after z/c stopped being a client");
    assert!(lab.refused(&["lab", "label", "pod", "c", "extra-"]).contains("ambiguous"));
    assert!(lab.ok(&["lab", "label", "pod", "z/c", "extra-"]).contains("pod z/c labeled"));
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // lab status: names in rows and columns, pairs denied by policy apart from broken ones (also found through
    // WEFT_LAB instead of --lab). x/a admits trusted namespaces only, x/b clients only: 2 × 8 denied pairs.
    let status = || {
        let out = Command::new(bin("weftctl")).args(["lab", "status"]).env("WEFT_LAB", &lab.name).output().unwrap();
        (out.status.code(), text(&out))
    };
    let (code, said) = status();
    println!("{said}");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("IPv4: 56/72 pod pairs connected, 16 denied by policy, 0 broken"), "{said}");
    for want in ["x/a", "z/c", "deny(P", "denied by policy x/trusted-ns", "denied by policy x/clients"] {
        assert!(said.contains(want), "status lacks {want:?}:\n{said}");
    }
    // Break y/b (its link down): pairs policy allows become FAIL, the denied ones stay deny(P).
    assert!(Command::new("ip")
        .args(["-n", &lab.pod("y/b").1, "link", "set", "eth0", "down"])
        .status()
        .unwrap()
        .success());
    let (code, said) = status();
    println!("{said}");
    assert_eq!(code, Some(3), "{said}");
    assert!(said.contains("IPv4: 42/72 pod pairs connected, 16 denied by policy, 14 broken"), "{said}");
    assert!(said.matches("FAIL").count() > 14, "{said}");
}

#[test]
fn kube_mode_relabels_through_the_api() {
    if !require_root() {
        return;
    }
    // Against the FAKE API server: relabels are Pod/Namespace updates the agents see through their watch.
    let lab = Lab { name: format!("k{}", unique()) };
    let out = lab.ctl(&["lab", "up", "--store", "kube", "--nodes", "2", "--pods-per-node", "1", "--lease-ttl", "4s"]);
    assert!(out.status.success(), "lab up failed:\n{}", text(&out));
    let policy = "kind: NetworkPolicy\nmetadata: {name: clients, namespace: default}\nspec:\n  \
                  podSelector: {matchLabels: {node: node2}}\n  ingress:\n  \
                  - from: [{podSelector: {matchLabels: {role: client}}}]\n";
    let file = std::env::temp_dir().join(format!("weft-labcli-{}.yaml", unique()));
    std::fs::write(&file, policy).unwrap();
    lab.ok(&["policy", "apply", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    lab.wait_policy();
    assert!(!lab.pings("node1-pod1", "default/node2-pod1"), "isolated pod reached");
    let before = lab.pod("default/node1-pod1");
    assert!(lab.ok(&["lab", "label", "pod", "node1-pod1", "role=client"]).contains("pod default/node1-pod1 labeled"));
    lab.wait_policy();
    assert!(
        wait_until(Duration::from_secs(15), || lab.pings("default/node1-pod1", "default/node2-pod1")),
        "relabelled pod not admitted in kube mode"
    );
    assert_eq!(lab.pod("default/node1-pod1"), before, "relabelling changed the pod");
    // A namespace relabel keeps its other labels (the API object is merged, not replaced).
    lab.ok(&["lab", "label", "ns", "default", "team=blue"]);
    let e = lab.refused(&["lab", "ns-add", "default"]);
    assert!(e.contains("kubernetes.io/metadata.name=default") && e.contains("team=blue"), "{e}");
}
