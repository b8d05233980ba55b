//! weft through a real containerd (Debian 12's 1.6): the README's standalone conflist (weft + portmap at
//! `cniVersion` 1.0.0), run by containerd's own CNI library (go-cni / libcni) via `ctr run --cni`.
//!
//! What this covers: containerd parsing the conflist, calling ADD on weft then portmap, reading weft's result
//! (a 1.1.0 list fails here with `unsupported CNI result version`), and DEL when the container is removed, with
//! containerd's runc shim creating the container's network namespace. What it does not: the CRI plugin (the
//! kubelet's path adds `K8S_*` CNI_ARGS and repeated DELs; the CNI tests cover those inputs) — `ctr` is the
//! client available without a kubelet or a CRI client.
//!
//! Isolation: containerd runs with private root, state and socket in a temp dir (its CRI plugin off); `ctr` runs
//! inside the test's node namespace and its own mount namespace, where tmpfs over /etc/cni and /opt gives go-cni
//! (which reads the fixed paths /etc/cni/net.d and /opt/cni/bin) the test's conflist and plugins. The container
//! image is a directory holding busybox-static (`--rootfs`): nothing is pulled.
#[path = "cni/kit.rs"]
mod kit;

use kit::{Node, NODE_IP, NODE_IP6};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use weft_e2e::{require_root, wait_until, TempDir};

/// containerd on a private socket, killed on drop.
struct Containerd {
    child: Child,
    dir: TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = TempDir::new("ctd");
        let d = dir.path().display().to_string();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd (scripts/deps.sh installs it)");
        let c = Containerd { child, dir };
        let up = wait_until(Duration::from_secs(20), || {
            Command::new("ctr").args(["-a", &c.socket(), "version"]).output().is_ok_and(|o| o.status.success())
        });
        assert!(up, "containerd did not come up: {}", c.log());
        c
    }

    fn socket(&self) -> String {
        self.dir.path().join("c.sock").display().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's conflist, with the IPAM data directory moved into the test's temp dir; `versions` adds the
/// README's optional `cniVersions` (which containerd 1.6's libcni must ignore).
fn documented_conflist(ipam_dir: &Path, versions: bool) -> String {
    let mut c = serde_json::json!({"cniVersion": "1.0.0", "name": "weft", "plugins": [
        {"type": "weft", "dataDir": ipam_dir, "ipam": {"subnet": "10.88.0.0/24", "subnet6": "fd00:88::/64"}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    if versions {
        c["cniVersions"] = serde_json::json!(["1.0.0", "1.1.0"]);
    }
    c.to_string()
}

/// Plugin directory and conf directory for go-cni, and a busybox rootfs.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new(conflist: &str) -> Files {
        let dir = TempDir::new("ctd-files");
        let (bin, conf, rootfs) = (dir.path().join("bin"), dir.path().join("net.d"), dir.path().join("rootfs"));
        for d in [&bin, &conf, &rootfs.join("bin"), &rootfs.join("proc"), &rootfs.join("dev"), &rootfs.join("sys")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy(weft_e2e::bin("weft"), bin.join("weft")).unwrap();
        std::fs::copy("/usr/lib/cni/portmap", bin.join("portmap")).expect("containernetworking-plugins");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
        std::fs::write(conf.join("10-weft.conflist"), conflist).unwrap();
        Files { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }
}

/// `ctr run --rm --cni` of `script` (busybox sh) in a fresh container, from inside the node namespace.
fn ctr_run(node: &Node, ctd: &Containerd, files: &Files, id: &str, script: &str) -> Output {
    let setup = format!(
        "set -e; mkdir -p /etc/cni; mount -t tmpfs cni /etc/cni; mkdir /etc/cni/net.d; cp {conf}/* /etc/cni/net.d/; \
         mount -t tmpfs opt /opt; mkdir -p /opt/cni/bin; mount --bind {bin} /opt/cni/bin; \
         exec ctr -a {sock} run --rm --cni --rootfs {rootfs} {id} /bin/busybox sh -c \"$0\"",
        conf = files.path("net.d").display(),
        bin = files.path("bin").display(),
        sock = ctd.socket(),
        rootfs = files.path("rootfs").display(),
    );
    Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path().display()))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c", &setup, script])
        .output()
        .expect("ctr run")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// One container: weft + portmap attach it (both families), its first pings reach the node, and removing it
/// (DEL through containerd) leaves no veth and no reservation behind.
#[test]
fn containerd_runs_the_documented_conflist() {
    if !require_root() {
        return;
    }
    let ctd = Containerd::start();
    for versions in [false, true] {
        let node = Node::new("k");
        let files = Files::new(&documented_conflist(&node.ipam_dir(), versions));
        let script = format!(
            "busybox ip -o addr show eth0; busybox ping -c 1 -W 5 {NODE_IP} && echo PING4-OK; \
             busybox ping -c 1 -W 5 {NODE_IP6} && echo PING6-OK"
        );
        let out = ctr_run(&node, &ctd, &files, &format!("{}c", node.token), &script);
        let t = text(&out);
        assert!(out.status.success(), "ctr run failed (cniVersions: {versions}): {t}\ncontainerd: {}", ctd.log());
        assert!(t.contains("inet 10.88.0.") && t.contains("inet6 fd00:88::"), "no weft addresses: {t}");
        assert!(t.contains("PING4-OK") && t.contains("PING6-OK"), "container could not reach the node: {t}");
        assert!(node.wait_no_links(), "host veths left after the container was removed: {:?}", node.weft_links());
        assert!(node.reservations().is_empty(), "addresses still reserved: {:?}", node.reservations());
    }
}

/// Ten containers removed at the same moment (ten DELs through containerd at once): every one is attached and
/// detached, and nothing is left once they are gone. How fast is measured in bench/src/bin/cni.rs.
#[test]
fn containerd_ten_parallel_removals_leave_nothing() {
    if !require_root() {
        return;
    }
    let ctd = Containerd::start();
    let node = Node::new("m");
    let files = Files::new(&documented_conflist(&node.ipam_dir(), false));
    // Each container waits until all ten exist (a file in the shared rootfs per container), then exits at once.
    let (ctd, node, files) = (&ctd, &node, &files);
    let started = Instant::now();
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..10)
            .map(|i| {
                s.spawn(move || {
                    let script = format!(
                        "busybox ip -o addr show eth0 | busybox grep -q 'inet 10.88.0.' && echo ATTACHED; \
                         busybox touch /ready{i}; n=0; while [ $(busybox ls / | busybox grep -c ready) -lt 10 ] \
                         && [ $n -lt 600 ]; do busybox sleep 0.05; n=$((n+1)); done"
                    );
                    ctr_run(node, ctd, files, &format!("{}p{i}", node.token), &script)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("ctr thread")).collect()
    });
    for (i, o) in outs.iter().enumerate() {
        assert!(o.status.success() && text(o).contains("ATTACHED"), "container {i}: {}", text(o));
    }
    eprintln!("10 containers run and removed in {:?}", started.elapsed());
    assert!(node.wait_no_links(), "host veths left: {:?}", node.weft_links());
    assert!(node.reservations().is_empty(), "addresses still reserved: {:?}", node.reservations());
}
