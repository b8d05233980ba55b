//! A real CNI client: Debian's podman 4.3 (CNI backend, runc) runs two busybox containers on a weft network
//! inside a throwaway node namespace; they ping each other; `podman rm` gives their addresses back.
//!
//! Set-up follows shared/README.md "podman as a real CNI client" and shared/recipes/podman-inner.sh: podman
//! runs under `nsenter --net=<node>` in a private mount namespace with a tmpfs on /run/netns (its netns bind
//! mounts stay private), with containers.conf / storage.conf in a temp dir, `cni_plugin_dirs` pointing at the
//! built `weft`, and an image imported from /bin/busybox (no registry).
use std::path::Path;
use std::process::Command;
use weft_e2e::{require_root, Netns, TempDir};

fn write(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// An empty rootfs with /bin/busybox and one symlink per applet.
fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    let list = weft_e2e::run("/bin/busybox", &["--list"]);
    for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    for d in ["tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
}

#[test]
fn podman_containers_on_a_weft_network_ping_each_other() {
    if !require_root() {
        return;
    }
    assert!(
        Path::new("/usr/bin/podman").exists(),
        "podman is not installed (apt-get install podman runc busybox-static)"
    );
    let weft = weft_e2e::bin("weft");
    let token = format!("wp{}", weft_e2e::unique());
    let node = Netns::new(format!("{token}n"));
    let tmp = TempDir::new("podman");
    let d = tmp.path();
    let net = format!("weft{token}");
    let ipam = d.join("ipam");
    for sub in ["net.d", "tmp", "run", "root", "rootfs"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    busybox_rootfs(&d.join("rootfs"));
    write(
        &d.join("containers.conf"),
        &format!(
            r#"[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
runtime = "runc"
tmp_dir = "{d}/tmp"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{weft_dir}", "/usr/lib/cni"]
network_config_dir = "{d}/net.d"
"#,
            d = d.display(),
            weft_dir = weft.parent().unwrap().display()
        ),
    );
    write(
        &d.join("storage.conf"),
        &format!("[storage]\ndriver = \"overlay\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/root\"\n", d.display()),
    );
    // podman 4.3 vendors libcni 1.1, which speaks spec 1.0.0 at most; portmap is what podman networks usually chain.
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [
            {"type": "weft", "dataDir": ipam, "ipam": {"subnet": "10.129.0.0/24"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    write(&d.join("net.d").join(format!("{net}.conflist")), &conflist.to_string());
    let script = format!(
        r#"set -eu
mount -t tmpfs tnetns /run/netns
export CONTAINERS_CONF={d}/containers.conf CONTAINERS_STORAGE_CONF={d}/storage.conf
trap 'podman rm -f -t 0 ca cb >/dev/null 2>&1 || true' EXIT
tar -C {d}/rootfs -c . | podman import -q --change 'CMD ["/bin/sh"]' - localhost/busybox:t >/dev/null
podman run -d --name ca --network {net} localhost/busybox:t sleep 120 >/dev/null
podman run -d --name cb --network {net} localhost/busybox:t sleep 120 >/dev/null
IPA=$(podman inspect -f '{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}' ca)
IPB=$(podman inspect -f '{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}' cb)
echo "IPA=$IPA IPB=$IPB"
echo "RESERVED=$(ls {ipam} | grep -E '^[0-9.]+$' | sort | tr '\n' ' ')"
podman exec ca ip -4 addr show eth0
podman exec ca ping -c 2 -W 2 "$IPB"
podman exec cb ping -c 2 -W 2 "$IPA"
echo PING_OK
podman rm -f -t 0 ca cb >/dev/null
echo "AFTER_RM=$(ls {ipam} | grep -vE '^(lock|last-reserved-v[46])$' | tr '\n' ' ')"
"#,
        d = d.display(),
        net = net,
        ipam = ipam.display()
    );
    write(&d.join("inner.sh"), &script);
    let out = Command::new("nsenter")
        .arg(format!("--net={}", node.path().display()))
        .args(["unshare", "--mount", "--propagation", "private", "sh"])
        .arg(d.join("inner.sh"))
        .output()
        .expect("nsenter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "podman scenario failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let field = |key: &str| -> String {
        let line = stdout.lines().find(|l| l.contains(&format!("{key}="))).unwrap_or_else(|| panic!("{key}: {stdout}"));
        line.split(&format!("{key}=")).nth(1).unwrap().split(' ').next().unwrap().to_string()
    };
    let (ipa, ipb) = (field("IPA"), field("IPB"));
    assert!(ipa.starts_with("10.129.0.") && ipb.starts_with("10.129.0.") && ipa != ipb, "{stdout}");
    let reserved = stdout.lines().find_map(|l| l.strip_prefix("RESERVED=")).unwrap().trim().to_string();
    let mut want = [ipa.clone(), ipb.clone()];
    want.sort();
    assert_eq!(reserved, want.join(" "), "weft's IPAM held exactly the two containers' addresses");
    assert!(stdout.contains(&format!("inet {ipa}/32")), "{stdout}");
    assert!(stdout.contains("PING_OK"), "{stdout}");
    let after = stdout.lines().find_map(|l| l.strip_prefix("AFTER_RM=")).unwrap().trim();
    assert_eq!(after, "", "podman rm released every address (no reservation, index or temp file left)");
    let links = || node.ip(&["-o", "link", "show"]).lines().filter(|l| l.contains(": wf")).count();
    assert!(weft_e2e::wait_until(std::time::Duration::from_secs(10), || links() == 0), "host veths left behind");
}
