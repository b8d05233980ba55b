//! Attacks through the CNI boundary: whoever can call the plugin (a runtime, or anything that can exec it as
//! root with its own env and stdin) feeds it hostile CNI_* values, configs and node files. Every test runs the
//! real `weft` binary exactly as a runtime does (env + stdin) inside a throwaway "node" namespace, against
//! throwaway pod namespaces; none touches the machine's own namespace.
#[path = "../cni/kit.rs"]
mod kit;

use kit::{weft_bin, with_prev, Node};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use weft_e2e::{require_root, Netns, TempDir};

/// Runs `cmd` with `stdin`, killing it (and failing the test) if it has not answered within `limit`. The stdin
/// writer ignores a closed pipe: a plugin that refuses an oversized stdin stops reading it.
fn run_bounded(mut cmd: Command, stdin: Vec<u8>, limit: Duration) -> (Output, Duration) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().expect("spawn plugin");
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&stdin);
    });
    while child.try_wait().expect("wait").is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("no answer within {limit:?} (killed): {out:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t.elapsed();
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    (out, took)
}

/// The plugin in the node namespace with at most 1 GiB of address space, so an unbounded read fails fast
/// instead of eating the machine.
fn plugin(node: &Node, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", node.ns.path().display()));
    c.args(["prlimit", "--as=1073741824", "--"]).arg(weft_bin());
    c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// The answer must be a CNI answer: exit 0 with nothing or a JSON object, or exit 1 with an error object.
fn assert_cni_answer(out: &Output, what: &str) -> Option<Value> {
    assert!(out.status.signal().is_none(), "{what}: killed by signal {:?}: {out:?}", out.status.signal());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stdout = stdout.trim();
    match out.status.code() {
        Some(0) if stdout.is_empty() => None,
        Some(0) => Some(serde_json::from_str::<Value>(stdout).unwrap_or_else(|e| panic!("{what}: {e}: {out:?}"))),
        Some(1) => {
            let v: Value =
                serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{what}: no error JSON ({e}): {out:?}"));
            assert!(v["code"].is_u64(), "{what}: {v}");
            assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
            assert!(v["cniVersion"].is_string(), "{what}: {v}");
            Some(v)
        }
        other => panic!("{what}: exit status {other:?}: {out:?}"),
    }
}

fn code(v: &Option<Value>) -> u64 {
    v.as_ref().and_then(|v| v["code"].as_u64()).unwrap_or_else(|| panic!("expected an error, got {v:?}"))
}

fn routes(ns: &Netns, family: &str) -> String {
    ns.ip(&[family, "route", "show", "default"])
}

/// Item 1: ADD with CNI_NETNS = the plugin's own (the node's) namespace, under its /run/netns path and as
/// /proc/self/ns/net, replaced the node's default routes with ones via the pod gateway (and DEL then left the
/// node without any). Now refused with error 4 and nothing changes.
#[test]
fn add_into_the_plugins_own_namespace_is_refused() {
    if !require_root() {
        return;
    }
    let node = Node::new("a1");
    node.ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    node.ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "up0"]);
    node.ns.ip(&["-6", "addr", "add", "2001:db8:1::1/64", "dev", "up0", "nodad"]);
    node.ns.ip(&["link", "set", "up0", "up"]);
    node.ns.ip(&["link", "set", "up1", "up"]);
    node.ns.ip(&["route", "add", "default", "via", "192.0.2.254"]);
    node.ns.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::fe"]);
    let (v4, v6) = (routes(&node.ns, "-4"), routes(&node.ns, "-6"));
    assert!(v4.contains("192.0.2.254") && v6.contains("2001:db8:1::fe"), "{v4} {v6}");
    let conf = node.static_conf("1.1.0", true);
    let own = node.ns.path().display().to_string();
    for netns in [own.as_str(), "/proc/self/ns/net"] {
        let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "evil"), ("CNI_IFNAME", "eth9"), ("CNI_NETNS", netns)];
        let (out, _) = run_bounded(plugin(&node, &env), conf.clone().into_bytes(), Duration::from_secs(60));
        let v = assert_cni_answer(&out, netns);
        assert_eq!(code(&v), 4, "{netns}: {v:?}");
        assert!(v.unwrap()["msg"].as_str().unwrap().contains("own network namespace"));
        let env = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "evil"), ("CNI_IFNAME", "eth9"), ("CNI_NETNS", netns)];
        let (out, _) = run_bounded(plugin(&node, &env), conf.clone().into_bytes(), Duration::from_secs(60));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(routes(&node.ns, "-4"), v4, "the node's IPv4 default route is untouched");
        assert_eq!(routes(&node.ns, "-6"), v6, "the node's IPv6 default route is untouched");
    }
    assert!(node.reservations().is_empty());
    assert!(node.weft_links().is_empty());
    assert!(!node.ns.ip(&["link", "show"]).contains("eth9"));
}

/// Item 2: a second weft attachment in the same pod (another network, `net1`, as Multus adds it) replaced the
/// first one's default routes; after its DEL the pod had none and CHECK of the first failed.
#[test]
fn second_attachment_never_breaks_the_first() {
    if !require_root() {
        return;
    }
    let node = Node::new("a2");
    let pod = node.pod(1);
    let p = pod.path().display().to_string();
    let first = node.static_conf("1.1.0", true);
    let second_dir = node.data.path().join("ipam2");
    let second = json!({"cniVersion": "1.1.0", "name": format!("{}-b", node.net), "type": "weft",
        "dataDir": second_dir, "ipam": {"subnet": "10.124.0.0/24", "subnet6": "fd00:124::/64"}})
    .to_string();
    let call = |verb: &str, ifname: &str, stdin: &str| {
        let env = [("CNI_COMMAND", verb), ("CNI_CONTAINERID", "pod1"), ("CNI_IFNAME", ifname), ("CNI_NETNS", &p)];
        node.run(&weft_bin(), &env, stdin)
    };
    let ra = call("ADD", "eth0", &first).expect_ok().json();
    let (d4, d6) = (routes(&pod, "-4"), routes(&pod, "-6"));
    assert!(d4.contains("via 10.123.0.1 dev eth0") && d6.contains("via fd00:123::1 dev eth0"), "{d4} {d6}");

    let rb = call("ADD", "net1", &second).expect_ok().json();
    assert_eq!(
        rb["routes"],
        json!([{"dst": "10.124.0.0/24", "gw": "10.124.0.1"}, {"dst": "fd00:124::/64", "gw": "fd00:124::1"}]),
        "a secondary attachment routes only its own network"
    );
    assert_eq!(routes(&pod, "-4"), d4, "the first attachment's IPv4 default route is untouched");
    assert_eq!(routes(&pod, "-6"), d6, "the first attachment's IPv6 default route is untouched");
    let all = pod.ip(&["route", "show"]);
    assert!(all.contains("10.124.0.0/24 via 10.124.0.1 dev net1 proto 201 onlink"), "{all}");
    let check_a = with_prev(&first, &ra);
    let check_b = with_prev(&second, &rb);
    call("CHECK", "eth0", &check_a).expect_ok();
    call("CHECK", "net1", &check_b).expect_ok();

    call("DEL", "net1", &second).expect_ok();
    assert_eq!(routes(&pod, "-4"), d4);
    assert_eq!(routes(&pod, "-6"), d6);
    call("CHECK", "eth0", &check_a).expect_ok();
    assert!(kit::ping(&pod, kit::NODE_IP) && kit::ping(&pod, kit::NODE_IP6), "the first attachment still works");
    call("DEL", "eth0", &first).expect_ok();
}

/// Item 7: a long container ID with a non-ASCII CNI_IFNAME panicked in the alias truncation (byte 255 inside a
/// character), and an alias of 255 bytes (a long network name) made every ADD fail: the kernel takes 254.
#[test]
fn long_names_and_non_ascii_ifnames_attach_cleanly() {
    if !require_root() {
        return;
    }
    let node = Node::new("a7");
    let pod = node.pod(1);
    let p = pod.path().display().to_string();
    // "weft:" + net + ":" + cid + ":" is 250 bytes, then 2-byte characters: byte 255 falls inside one of them.
    let prefix = 5 + node.net.len() + 1;
    let cid = "c".repeat(250 - prefix - 1);
    let conf = node.static_conf("1.1.0", false);
    let long_net = json!({"cniVersion": "1.1.0", "name": "n".repeat(300), "type": "weft",
        "dataDir": node.data.path().join("ipam-long"), "ipam": {"subnet": "10.125.0.0/24"}})
    .to_string();
    for (stdin, cid, ifname) in [(&conf, cid.as_str(), "ééééééé"), (&conf, "c2", "éth1"), (&long_net, "c3", "eth2")]
    {
        let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", cid), ("CNI_IFNAME", ifname), ("CNI_NETNS", &p)];
        let (out, _) = run_bounded(plugin(&node, &env), stdin.clone().into_bytes(), Duration::from_secs(60));
        let r = assert_cni_answer(&out, ifname).unwrap_or_else(|| panic!("{ifname}: no result"));
        assert!(r.get("code").is_none(), "{ifname}: {r}");
        let host = r["interfaces"][0]["name"].as_str().unwrap();
        let shown = node.ns.ip(&["-d", "link", "show", host]);
        let alias = shown.lines().find_map(|l| l.trim().strip_prefix("alias ")).expect("alias set");
        assert!(alias.starts_with("weft:") && alias.len() <= 254, "{} bytes: {alias}", alias.len());
        assert!(pod.ip(&["link", "show"]).contains(ifname));
    }
}

/// Item 8: a node file pointing at /dev/zero was read without limit (GBs of RSS); CNI_NETNS naming a FIFO
/// blocked forever; an endless stdin had no limit either. Each now gets a clear error at once.
#[test]
fn unbounded_and_blocking_inputs_are_refused_at_once() {
    if !require_root() {
        return;
    }
    let node = Node::new("a8");
    let pod = node.pod(1);
    let p = pod.path().display().to_string();
    let tmp = TempDir::new("attack-fifo");
    let fifo = tmp.path().join("fifo");
    weft_e2e::run("mkfifo", &[fifo.to_str().unwrap()]);
    let big = tmp.path().join("big.json");
    std::fs::write(&big, vec![b' '; 2 << 20]).unwrap();
    let plain = tmp.path().join("plain");
    std::fs::write(&plain, b"not a namespace").unwrap();
    let add = |netns: &str| {
        vec![("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", netns)]
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect::<Vec<_>>()
    };
    let limit = Duration::from_secs(30);
    // (what, env, stdin, expected code, text the message must hold)
    type Case<'a> = (String, Vec<(&'a str, String)>, Vec<u8>, u64, &'a str);
    let cases: Vec<Case> = vec![
        (
            "node file /dev/zero".into(),
            add(&p),
            node.conf("1.1.0", json!({"nodeFile": "/dev/zero"})).into(),
            5,
            "device",
        ),
        ("node file FIFO".into(), add(&p), node.conf("1.1.0", json!({"nodeFile": fifo})).into(), 5, "FIFO"),
        ("node file 2 MiB".into(), add(&p), node.conf("1.1.0", json!({"nodeFile": big})).into(), 5, "larger than"),
        ("CNI_NETNS FIFO".into(), add(fifo.to_str().unwrap()), node.static_conf("1.1.0", false).into(), 4, "namespace"),
        (
            "CNI_NETNS file".into(),
            add(plain.to_str().unwrap()),
            node.static_conf("1.1.0", false).into(),
            4,
            "namespace",
        ),
        ("CNI_NETNS /dev/zero".into(), add("/dev/zero"), node.static_conf("1.1.0", false).into(), 4, "namespace"),
        ("stdin 2 MiB".into(), add(&p), vec![b' '; 2 << 20], 6, "larger than"),
    ];
    for (what, env, stdin, want, text) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (out, took) = run_bounded(plugin(&node, &env), stdin, limit);
        let v = assert_cni_answer(&out, &what);
        assert_eq!(code(&v), want, "{what}: {v:?}");
        assert!(v.as_ref().unwrap()["msg"].as_str().unwrap().contains(text), "{what}: {v:?}");
        assert!(took < limit, "{what}");
    }
    assert!(node.reservations().is_empty() && node.weft_links().is_empty());
}

/// Item 9 (CNI part): subnets that are not pod subnets (everything, loopback, link-local, multicast, too large
/// or too small), from the config or from the node file, are refused before anything changes.
#[test]
fn hostile_pod_subnets_are_refused() {
    if !require_root() {
        return;
    }
    let node = Node::new("a9");
    let pod = node.pod(1);
    for (subnet, subnet6) in [
        ("0.0.0.0/0", None),
        ("127.0.0.0/8", None),
        ("169.254.0.0/16", None),
        ("224.0.0.0/24", None),
        ("10.0.0.0/6", None),
        ("10.0.0.0/31", None),
        ("10.126.0.0/24", Some("::/0")),
        ("10.126.0.0/24", Some("::1/128")),
        ("10.126.0.0/24", Some("fe80::/64")),
        ("10.126.0.0/24", Some("ff02::/64")),
    ] {
        let mut ipam = json!({"subnet": subnet});
        if let Some(s6) = subnet6 {
            ipam["subnet6"] = json!(s6);
        }
        let r = node.weft("ADD", "c1", Some(&pod), &node.conf("1.1.0", json!({ "ipam": ipam })));
        assert_eq!(r.code(), 7, "{subnet} {subnet6:?}: {r:?}");
    }
    let nf = node.data.path().join("node.json");
    for bad in [r#"{"subnet":"0.0.0.0/0","mtu":1450}"#, r#"{"subnet":"127.0.0.0/8","mtu":1450}"#] {
        std::fs::write(&nf, bad).unwrap();
        let r = node.weft("ADD", "c1", Some(&pod), &node.conf("1.1.0", json!({"nodeFile": nf})));
        assert_eq!(r.code(), 5, "{bad}: {r:?}");
    }
    assert!(node.reservations().is_empty() && node.weft_links().is_empty());
    assert_eq!(pod.ip(&["-4", "addr", "show", "dev", "lo"]).matches("inet ").count(), 1, "pod untouched");
}

/// Item 6: GC deleted a running pod's reservation when its record file was truncated, and the next ADD got the
/// same address (two pods, one IP). Now GC keeps it (the index link of the valid attachment names it) and
/// reports it on stderr.
#[test]
fn gc_keeps_a_live_pods_damaged_reservation() {
    if !require_root() {
        return;
    }
    let node = Node::new("a6");
    let conf = node.static_conf("1.1.0", false);
    let (a, b) = (node.pod(1), node.pod(2));
    let ip_a = node.weft("ADD", "live", Some(&a), &conf).expect_ok().ip(false);
    let rec = node.ipam_dir().join(&ip_a);
    std::fs::OpenOptions::new().write(true).truncate(true).open(&rec).unwrap();
    let gc = with_gc(&conf, &[("live", "eth0")]);
    let out = node.weft_at("GC", "", None, &gc).expect_ok();
    assert!(rec.exists(), "GC freed the live pod's address {ip_a}");
    assert!(out.stderr.contains(&format!("reservation {ip_a} ")) && out.stderr.contains("kept"), "{}", out.stderr);
    let ip_b = node.weft("ADD", "next", Some(&b), &conf).expect_ok().ip(false);
    assert_ne!(ip_a, ip_b, "two pods, one address");
}

/// Item 6: a reservation is on disk (record file, then the directory) before ADD answers.
#[test]
fn add_fsyncs_the_record_and_the_directory() {
    if !require_root() {
        return;
    }
    let node = Node::new("a6s");
    let pod = node.pod(1);
    let trace = node.data.path().join("strace.out");
    let conf = node.static_conf("1.1.0", false);
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", node.ns.path().display()));
    c.args(["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o"]).arg(&trace).arg(weft_bin());
    let p = pod.path().display().to_string();
    for (k, v) in [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", &p)] {
        c.env(k, v);
    }
    let (out, _) = run_bounded(c, conf.into_bytes(), Duration::from_secs(60));
    assert!(out.status.success(), "{out:?}");
    let t = std::fs::read_to_string(&trace).unwrap();
    let dir = node.ipam_dir().display().to_string();
    assert!(t.lines().any(|l| l.contains(&format!("<{dir}/tmp."))), "record not fsynced: {t}");
    assert!(t.lines().any(|l| l.contains(&format!("<{dir}>"))), "directory not fsynced: {t}");
}

fn with_gc(conf: &str, valid: &[(&str, &str)]) -> String {
    let mut c: Value = serde_json::from_str(conf).unwrap();
    c["cni.dev/valid-attachments"] =
        valid.iter().map(|(cid, ifname)| json!({"containerID": cid, "ifname": ifname})).collect();
    c.to_string()
}

/// Deterministic xorshift64*: reproducible "random" inputs without a dependency (the seed is in every message).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        // No NUL: an environment string cannot hold one.
        (0..n).map(|_| (self.next() % 255 + 1) as u8).collect()
    }
    /// Mostly plausible values (that reach deep code), sometimes raw bytes.
    fn ifname(&mut self) -> Vec<u8> {
        const PARTS: [&str; 8] = ["eth", "é", "网", "\u{1f980}", "0", "-", ".", "net"];
        match self.below(4) {
            0 => self.bytes(20),
            _ => {
                let mut s = String::new();
                for _ in 0..=self.below(4) {
                    s.push_str(PARTS[self.below(PARTS.len())]);
                }
                s.into_bytes()
            }
        }
    }
    fn args(&mut self) -> Vec<u8> {
        if self.below(3) == 0 {
            return self.bytes(200);
        }
        let mut v = b"IgnoreUnknown=1;K8S_POD_NAMESPACE=".to_vec();
        v.extend(self.bytes(40).into_iter().filter(|b| *b != b';'));
        v.extend_from_slice(b";K8S_POD_NAME=");
        v.extend(self.bytes(40).into_iter().filter(|b| *b != b';'));
        v
    }
    /// `edge`: the length at which the alias (`weft:<network>:<cid>:<ifname>`) reaches 255 bytes right at the
    /// start of the ifname; lengths just below it put the kernel's limit inside CNI_IFNAME.
    fn container_id(&mut self, edge: usize) -> Vec<u8> {
        match self.below(3) {
            0 => self.bytes(300),
            _ => {
                const OK: &[u8] = b"abcdefABCDEF0123456789_.-";
                let n = match self.below(3) {
                    0 => 1 + self.below(300),
                    _ => edge - self.below(12),
                };
                (0..n).map(|i| if i == 0 { b'a' } else { OK[self.below(OK.len())] }).collect()
            }
        }
    }
}

/// Item 7: whatever the runtime puts in CNI_IFNAME, CNI_CONTAINERID, CNI_ARGS, CNI_PATH and CNI_NETNS, the
/// plugin answers with a CNI success or a CNI error object and exits 0 or 1, never dies without an answer.
#[test]
fn hostile_environment_always_gets_a_cni_answer() {
    if !require_root() {
        return;
    }
    let node = Node::new("a7f");
    let pod = node.pod(1);
    let p = pod.path().display().to_string();
    let conf = node.static_conf("1.1.0", true);
    let seed = 0x5eed_cafe_f00d_u64 ^ u64::from(std::process::id());
    let mut rng = Rng(seed | 1);
    let verbs = ["ADD", "ADD", "ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"];
    let mut seen = std::collections::BTreeMap::new();
    let edge = 255 - ("weft:".len() + node.net.len() + 1) - 1;
    for case in 0..200 {
        let verb = verbs[rng.below(verbs.len())];
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", node.ns.path().display())).arg(weft_bin());
        cmd.env_clear();
        cmd.env("CNI_COMMAND", verb);
        cmd.env("CNI_CONTAINERID", OsString::from_vec(rng.container_id(edge)));
        cmd.env("CNI_IFNAME", OsString::from_vec(rng.ifname()));
        cmd.env("CNI_ARGS", OsString::from_vec(rng.args()));
        cmd.env("CNI_PATH", OsString::from_vec(rng.bytes(200)));
        if rng.below(4) == 0 {
            cmd.env("CNI_NETNS", OsString::from_vec(rng.bytes(50)));
        } else {
            cmd.env("CNI_NETNS", &p);
        }
        let stdin = match rng.below(6) {
            0 => rng.bytes(300),
            1 => with_gc(&conf, &[]).into_bytes(),
            _ => conf.clone().into_bytes(),
        };
        let what = format!("seed {seed:#x} case {case} {verb}: {cmd:?}");
        let (out, _) = run_bounded(cmd, stdin, Duration::from_secs(60));
        let v = assert_cni_answer(&out, &what);
        if std::env::var_os("WEFT_FUZZ_VERBOSE").is_some() {
            eprintln!("{verb}: {}", String::from_utf8_lossy(&out.stdout).trim());
        }
        *seen.entry(format!("{verb} {}", v.as_ref().and_then(|v| v["code"].as_u64()).unwrap_or(0))).or_insert(0) += 1;
    }
    eprintln!("answers (verb code: count): {seen:?}");
}
