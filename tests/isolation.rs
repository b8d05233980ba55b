//! The isolation firewall of tenant networks (`weft_policy::isolation`, table `inet weft-net`) in the kernel.
//!
//! Two networks A and B with the same CIDR (10.50.0.0/16) and pods with the same addresses in both, a
//! default-network pod, an outside host (see `isolation/fixture.rs`). Each crossing is first tried with the
//! table loaded (nothing arrives, the network's drop counter grows), then with the table's forward and input
//! rules removed (packets still marked, so routed by their network's table): the route alone delivers, so the
//! checks are what stopped it.
#[path = "isolation/fixture.rs"]
mod fixture;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fixture::{reaches, Fixture, Pod, A, B, DEFAULT_POD, NODE_IP, OUTSIDE_IP, PROBE};
use weft_e2e::{require_root, Netns};

/// One TCP SYN, one UDP datagram and one ping from `from` to `dst`, from `src` (a forged source when given).
fn attempt(from: &Pod, dst: &str, src: Option<&str>) {
    let v6 = dst.contains(':');
    let own = if v6 { from.ip6.as_str() } else { from.ip };
    let src = src.unwrap_or(own);
    let sock = if v6 { format!("[{dst}]:80") } else { format!("{dst}:80") };
    let _ = from.ns.try_exec(PROBE, &["send", "--src", src, "--count", "3", &format!("{sock}/udp")]);
    let _ = from.ns.try_exec("ping", &["-c", "2", "-i", "0.2", "-W", "1", "-I", src, dst]);
    if src == own {
        let _ = from.ns.try_exec(PROBE, &["matrix", "--timeout-ms", "300", &format!("{sock}/tcp")]);
    }
}

/// `attempt` with the table loaded must deliver nothing and count the drops for `net`; without the table the
/// same packets arrive (`arrived` says how that shows).
fn crossing(f: &Fixture, net: &fixture::Net, from: &Pod, dst: &str, src: Option<&str>, arrived: &dyn Fn() -> u64) {
    let (before, dropped) = (arrived(), f.dropped(net));
    attempt(from, dst, src);
    assert_eq!(arrived(), before, "{} -> {dst} (source {src:?}) crossed networks", from.ns.name);
    assert!(f.dropped(net) >= dropped + 4, "drops of {} not counted: {dropped} -> {}", net.name, f.dropped(net));
    f.unload();
    attempt(from, dst, src);
    let without = arrived();
    f.load();
    assert!(without > before, "{} -> {dst}: the route does not deliver even without the table", from.ns.name);
}

#[test]
fn within_a_network_tcp_udp_and_icmp_pass() {
    if !require_root() {
        return;
    }
    let mut f = Fixture::new();
    for ns in [&f.a2.ns, &f.b2.ns] {
        let s = fixture::serve(ns, "80");
        f.servers.push(s);
    }
    // a1 and b1 have the same address and talk to the same address: each reaches its own network's pod only.
    for (from, to, other) in [(&f.a1, &f.a2, &f.b2), (&f.b1, &f.b2, &f.a2)] {
        let other_before = other.seen();
        for target in ["10.50.0.3:80/tcp", "10.50.0.3:80/udp"] {
            assert!(reaches(&from.ns, target), "{} -> {target}", from.ns.name);
        }
        assert!(from.ns.ping("10.50.0.3"), "{} ping", from.ns.name);
        assert!(to.seen() > 0);
        assert_eq!(other.seen(), other_before, "{} reached the other network", from.ns.name);
    }
    assert_eq!((f.dropped(&A), f.dropped(&B)), (0, 0));
}

#[test]
fn across_networks_nothing_passes_by_route_or_forged_source() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let node = &f.node;
    // A -> B: a hand route in A's table sends 10.50.0.3 to B's pod.
    node.ip(&["route", "replace", "10.50.0.3", "dev", &f.b2.host_if, "table", &A.table()]);
    crossing(&f, &A, &f.a1, "10.50.0.3", None, &|| f.b2.seen());
    // A -> default: the main table (A's table has no route for it) delivers to the default pod.
    crossing(&f, &A, &f.a1, DEFAULT_POD, None, &|| f.d1.seen());
    // ... also from forged sources: a default pod's address and B's pod address.
    for forged in ["10.244.1.9", "10.50.0.3"] {
        f.a1.ns.ip(&["addr", "add", &format!("{forged}/32"), "dev", "eth0"]);
        crossing(&f, &A, &f.a1, DEFAULT_POD, Some(forged), &|| f.d1.seen());
        f.a1.ns.ip(&["addr", "del", &format!("{forged}/32"), "dev", "eth0"]);
    }
    // default -> A: a hand route in main to A's pod.
    node.ip(&["route", "add", "10.50.0.2", "dev", &f.a1.host_if]);
    crossing(&f, &A, &f.d1, "10.50.0.2", None, &|| f.a1.seen());
    // B -> A by a hand route in B's table, spoofing a default pod's address on the way.
    node.ip(&["route", "replace", "10.50.0.3", "dev", &f.a2.host_if, "table", &B.table()]);
    f.b1.ns.ip(&["addr", "add", "10.244.1.7/32", "dev", "eth0"]);
    crossing(&f, &B, &f.b1, "10.50.0.3", Some("10.244.1.7"), &|| f.a2.seen());
    // Into another network's tunnel: A -> B's device, default -> A's device.
    node.ip(&["route", "add", "10.50.200.0/24", "dev", &B.device(), "table", &A.table()]);
    node.ip(&["neigh", "add", "10.50.200.9", "lladdr", "02:cc:00:00:00:01", "dev", &B.device(), "nud", "permanent"]);
    crossing(&f, &A, &f.a1, "10.50.200.9", None, &|| f.tunnel_tx(&B));
    node.ip(&["route", "add", "10.50.100.0/24", "dev", &A.device()]);
    node.ip(&["neigh", "add", "10.50.100.9", "lladdr", "02:cc:00:00:00:02", "dev", &A.device(), "nud", "permanent"]);
    crossing(&f, &A, &f.d1, "10.50.100.9", None, &|| f.tunnel_tx(&A));
}

/// A network's tunnel carries that network's traffic only: a remote pod (same address in A and B) reaches its
/// own network's pod, never the other network's or the default network, and nothing unmarked enters it.
#[test]
fn tunnels_carry_their_own_network_only() {
    if !require_root() {
        return;
    }
    let mut f = Fixture::new();
    let s = [f.a1.serve(), f.b1.serve()];
    f.servers.extend(s);
    for (remote, own, other) in [(&f.remote_a, &f.a1, &f.b1), (&f.remote_b, &f.b1, &f.a1)] {
        let other_before = other.seen();
        assert!(reaches(&remote.ns, "10.50.0.2:80/tcp"), "{} -> its network's pod", remote.ns.name);
        assert!(reaches(&remote.ns, "10.50.0.2:80/udp"), "{} -> its network's pod (UDP)", remote.ns.name);
        assert!(remote.ns.ping("10.50.0.2"));
        assert!(own.seen() > 0);
        assert_eq!(other.seen(), other_before, "{} reached the other network", remote.ns.name);
    }
    // From A's tunnel to the default pod (main routes it): dropped, counted for A.
    crossing(&f, &A, &f.remote_a, DEFAULT_POD, None, &|| f.d1.seen());
    // From A's tunnel into B's pod by a hand route in A's table.
    f.node.ip(&["route", "replace", "10.50.0.3", "dev", &f.b2.host_if, "table", &A.table()]);
    crossing(&f, &A, &f.remote_a, "10.50.0.3", None, &|| f.b2.seen());
    // A default pod into A's tunnel (a hand route in main to the remote pod).
    f.node.ip(&["route", "add", "10.50.5.2", "dev", &A.device()]);
    crossing(&f, &A, &f.d1, "10.50.5.2", None, &|| f.remote_a.seen());
}

/// The same over IPv6: within A, A -> default and default -> A dropped, both networks' pods (same address)
/// masqueraded to the outside host.
#[test]
fn ipv6_within_across_and_to_the_outside() {
    if !require_root() {
        return;
    }
    let mut f = Fixture::new();
    let s = [f.a2.serve(), fixture::serve(&f.outside, "8080")];
    f.servers.extend(s);
    assert!(reaches(&f.a1.ns, "[fd00:50::3]:80/tcp"), "a1 -> a2 over IPv6");
    assert!(reaches(&f.a1.ns, "[fd00:50::3]:80/udp"), "a1 -> a2 over IPv6 (UDP)");
    assert!(f.a1.ns.ping("fd00:50::3"));
    assert_eq!(f.b2.seen(), 0, "a1 reached B's pod");
    crossing(&f, &A, &f.a1, "fd00:244::2", None, &|| f.d1.seen());
    f.node.ip(&["-6", "route", "add", "fd00:50::2", "dev", &f.a1.host_if]);
    crossing(&f, &A, &f.d1, "fd00:50::2", None, &|| f.a1.seen());
    for pod in [&f.a1, &f.b1] {
        assert!(
            reaches(&pod.ns, &format!("[{}]:8080/tcp", fixture::OUTSIDE_IP6)),
            "{} -> outside over IPv6",
            pod.ns.name
        );
    }
    let seen = f.outside.exec("ss", &["-tanH", "sport", "= :8080"]);
    assert!(!seen.contains("fd00:50::") && seen.contains(fixture::NODE_IP6), "masqueraded: {seen}");
}

/// Run inside a pod by `same_source_port` (re-exec of this test binary): connects from a fixed source port
/// and reports `CHILD ok|fail` for each line read from stdin, until stdin closes.
#[test]
#[ignore = "a helper the tests below run inside pod namespaces"]
fn child_same_port() {
    let (Ok(dst), Ok(proto)) = (std::env::var("ISO_DST"), std::env::var("ISO_PROTO")) else { return };
    let dst: std::net::SocketAddr = dst.parse().unwrap();
    let src: std::net::SocketAddr = "0.0.0.0:40000".parse().unwrap();
    let timeout = Duration::from_secs(5);
    let report = |ok: bool| {
        println!("CHILD {}", if ok { "ok" } else { "fail" });
        let _ = std::io::stdout().flush();
    };
    let stdin = std::io::stdin();
    if proto == "tcp" {
        use std::io::Read;
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&src.into()).unwrap();
        let ok = s.connect_timeout(&dst.into(), timeout).is_ok() && {
            let mut t: std::net::TcpStream = s.into();
            t.set_read_timeout(Some(timeout)).unwrap();
            let mut buf = [0u8; 3];
            let ok = t.read_exact(&mut buf).is_ok() && &buf == b"ok\n";
            std::mem::forget(t); // held open (with the conntrack entry) until the process ends
            ok
        };
        report(ok);
        for _ in stdin.lock().lines() {}
    } else {
        let s = std::net::UdpSocket::bind(src).unwrap();
        s.connect(dst).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        for _ in stdin.lock().lines() {
            let mut buf = [0u8; 8];
            report(s.send(b"x").is_ok() && s.recv(&mut buf).is_ok_and(|n| &buf[..n] == b"ok"));
        }
    }
}

struct Child {
    proc: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Child {
    fn start(pod: &Pod, proto: &str) -> Child {
        let mut proc = pod
            .ns
            .command(std::env::current_exe().unwrap().to_str().unwrap())
            .args(["child_same_port", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("ISO_DST", format!("{OUTSIDE_IP}:8080"))
            .env("ISO_PROTO", proto)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(proc.stdout.take().unwrap());
        Child { proc, out }
    }

    /// Asks for one exchange (UDP) and returns its result; TCP reports once, at connect.
    fn result(&mut self, ask: bool) -> bool {
        if ask {
            writeln!(self.proc.stdin.as_mut().unwrap()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut line = String::new();
        while Instant::now() < deadline {
            line.clear();
            if self.out.read_line(&mut line).unwrap_or(0) == 0 {
                return false;
            }
            // libtest prints `test child_same_port ... ` before the first report, on the same line.
            if let Some(r) = line.split("CHILD ").nth(1) {
                return r.trim() == "ok";
            }
        }
        false
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

#[test]
fn same_address_and_port_in_two_networks_reach_the_outside_at_once() {
    if !require_root() {
        return;
    }
    let mut f = Fixture::new();
    let s = fixture::serve(&f.outside, "8080");
    f.servers.push(s);
    // TCP: a1 connects and holds the connection; b1 (same address, same source port) connects meanwhile.
    let mut a = Child::start(&f.a1, "tcp");
    assert!(a.result(false), "a1 -> outside over TCP");
    let mut b = Child::start(&f.b1, "tcp");
    assert!(b.result(false), "b1 -> outside over TCP while a1's connection from the same address and port is open");
    // UDP: both flows alive at once, each answered in turn.
    let mut a = Child::start(&f.a1, "udp");
    let mut b = Child::start(&f.b1, "udp");
    for round in 0..3 {
        assert!(a.result(true), "a1 UDP round {round}");
        assert!(b.result(true), "b1 UDP round {round}");
    }
    // The outside host saw the node's address only (masquerade), never a pod address, from two different ports:
    // the two connections' replies are told apart in zone 0 by the port masquerade picked.
    let seen = f.outside.exec("ss", &["-tanH", "sport", "= :8080"]);
    assert!(!seen.contains("10.50.0.2"), "{seen}");
    let peers: std::collections::BTreeSet<&str> =
        seen.split_whitespace().filter(|w| w.trim_start_matches("[::ffff:").starts_with(NODE_IP)).collect();
    assert_eq!(peers.len(), 2, "two TCP connections from the node's address: {seen}");
}

#[test]
fn tenant_pods_cannot_open_connections_to_the_node_but_its_probes_are_answered() {
    if !require_root() {
        return;
    }
    let mut f = Fixture::new();
    let s = [fixture::serve(&f.node, "9999"), f.a1.serve()];
    f.servers.extend(s);
    let node = &f.node;
    // The node reaches A's pod (kubelet probes): the design routes the node's own traffic into the table of a
    // network whose CIDR overlaps no other; here by hand for a1's address.
    node.ip(&["rule", "add", "pref", "999", "iif", "lo", "to", "10.50.0.2", "lookup", &A.table()]);
    assert!(reaches(node, "10.50.0.2:80/tcp"), "node -> tenant pod (probe) gets its reply");
    assert!(reaches(node, "10.50.0.2:80/udp"), "node -> tenant pod over UDP gets its reply");
    let dropped = f.dropped(&A);
    for target in [format!("{NODE_IP}:9999/tcp"), format!("{NODE_IP}:9999/udp")] {
        assert!(!reaches(&f.a1.ns, &target), "a1 -> node {target}");
    }
    assert!(f.dropped(&A) > dropped, "drops to the node are counted");
    f.unload();
    assert!(reaches(&f.a1.ns, &format!("{NODE_IP}:9999/tcp")), "without the table a1 would reach the node");
    f.load();
}

/// The table of `n` networks (names `net-<i>`, slots 1..=n, all on 10.50.0.0/16).
fn networks(n: u32) -> weft_policy::isolation::Isolation {
    let mut input = Fixture::input();
    let proto = input.networks[0].clone();
    input.networks = (1..=n)
        .map(|i| {
            let mut net = proto.clone();
            net.name = format!("net-{i}");
            net.vni = 1000 + i;
            net.slot = u8::try_from(i).unwrap();
            net.group = weft_policy::isolation::TENANT_GROUP_BASE | net.vni;
            net.device = format!("wn{}", net.vni);
            net
        })
        .collect();
    weft_policy::isolation::isolation(&input)
}

/// Loads with `nft -f` into a fresh namespace; returns the wall time of `nft`.
fn load_time(script: &str) -> Duration {
    let ns = Netns::new(format!("iso-{}-load", weft_e2e::unique()));
    let dir = weft_e2e::TempDir::new("isoload");
    let path = dir.path().join("t.nft");
    std::fs::write(&path, script).unwrap();
    let t0 = Instant::now();
    let out =
        Command::new("ip").args(["netns", "exec", &ns.name, "nft", "-f", path.to_str().unwrap()]).output().unwrap();
    let took = t0.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    took
}

/// 100 networks load (printed beside one network, same run; timing is reported, not asserted).
#[test]
fn a_hundred_networks_load_with_nft() {
    if !require_root() {
        return;
    }
    let (one, hundred) = (networks(1), networks(100));
    assert!(hundred.refused.is_empty());
    let t1 = load_time(&one.table.render_replace());
    let t100 = load_time(&hundred.table.render_replace());
    eprintln!(
        "isolation table load: 1 network {} rules {t1:?}; 100 networks {} rules {t100:?}",
        one.table.rule_count(),
        hundred.table.rule_count()
    );
    let ns = Netns::new(format!("iso-{}-100", weft_e2e::unique()));
    let dir = weft_e2e::TempDir::new("iso100");
    let path = dir.path().join("t.nft");
    std::fs::write(&path, hundred.table.render_replace()).unwrap();
    ns.exec("nft", &["-f", path.to_str().unwrap()]);
    let listed = ns.exec("nft", &["list", "map", "inet", "weft-net", "pre_group"]);
    assert_eq!(listed.matches("goto pre_net_").count(), 100, "{listed}");
}

/// weft's own table (`inet weft`, the agent's firewall) checks a pod's source with the packet's mark, so in its
/// network's table: a tenant pod's own address passes (in main it has no route and would read as spoofed), a
/// forged one is dropped; a default pod (mark 0) is checked in main as before.
#[test]
fn the_source_check_looks_in_the_pods_network_table() {
    if !require_root() {
        return;
    }
    let mut f = Fixture::new();
    let spec = weft_agent::firewall::FirewallSpec {
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        cluster_cidr6: None,
        vxlan_port: None,
        node_ips: vec![NODE_IP.parse().unwrap()],
        masquerade: true,
        agent_port: None,
        vxlan_sources: None,
    };
    f.nft(&format!("add table inet weft\ndelete table inet weft\n{}", weft_agent::firewall::render(&spec)));
    let s = [fixture::serve(&f.a2.ns, "80"), fixture::serve(&f.outside, "8080")];
    f.servers.extend(s);
    fixture::count_arrivals(&f.outside, "u0");
    let spoofed = || fixture::counter(&f.node, "inet weft", "spoofed");
    assert!(reaches(&f.a1.ns, "10.50.0.3:80/tcp"), "a tenant pod's own source passes");
    assert!(reaches(&f.a1.ns, &format!("{OUTSIDE_IP}:8080/tcp")), "a tenant pod reaches the outside");
    assert!(reaches(&f.d1.ns, &format!("{OUTSIDE_IP}:8080/tcp")), "a default pod reaches the outside");
    assert_eq!(spoofed(), 0);
    let outside = || fixture::counter(&f.outside, "inet seen", "seen");
    // Forged: another pod of the same network (routed in A's table through a2's veth), a default pod.
    for forged in ["10.50.0.3", DEFAULT_POD] {
        f.a1.ns.ip(&["addr", "add", &format!("{forged}/32"), "dev", "eth0"]);
        let (before, dropped) = (outside(), spoofed());
        let target = format!("{OUTSIDE_IP}:8080/udp");
        let _ = f.a1.ns.try_exec(PROBE, &["send", "--src", forged, "--count", "3", &target]);
        assert_eq!(outside(), before, "a1 sent to the outside from {forged}");
        assert!(spoofed() >= dropped + 3, "a1 forging {forged} not counted as spoofed");
        f.a1.ns.ip(&["addr", "del", &format!("{forged}/32"), "dev", "eth0"]);
    }
}

/// The node's conntrack entries that carry conntrack zone `zone`, in either form the kernel lists it.
fn zone_lines(ns: &Netns, zone: u16) -> Vec<String> {
    let tags = [format!("zone={zone}"), format!("zone-orig={zone}"), format!("zone-reply={zone}")];
    ns.exec("cat", &["/proc/net/nf_conntrack"])
        .lines()
        .filter(|l| l.split_whitespace().any(|w| tags.iter().any(|t| t == w)))
        .map(str::to_string)
        .collect()
}

/// The agent empties a mark slot's conntrack zone before giving the slot to another network
/// (`Dataplane::flush_conntrack_zone`). Both forms a tenant network leaves are removed: `ct zone set S`
/// (destination inside the network, IPv4 and IPv6) and `ct original zone set S` (towards the outside); another
/// zone and zone 0 (the node's own and the default network's flows) are left alone, and zone 0 itself is refused.
#[test]
fn a_zone_flush_removes_that_zone_only_in_both_forms() {
    if !require_root() {
        return;
    }
    let ns = Netns::new(format!("wct{}", weft_e2e::unique()));
    ns.ip(&["link", "set", "lo", "up"]);
    // Entries that stay while the test runs, however loaded the machine (ICMP entries last 30 s by default).
    ns.exec("sysctl", &["-qw", "net.netfilter.nf_conntrack_icmp_timeout=600"]);
    ns.exec("sysctl", &["-qw", "net.netfilter.nf_conntrack_icmpv6_timeout=600"]);
    let rules = "table inet zones {
        chain out { type filter hook output priority raw;
            ip daddr 127.0.0.5 ct zone set 5
            ip daddr 127.0.0.6 ct original zone set 5
            ip6 daddr ::1 ct zone set 5
            ip daddr 127.0.0.7 ct zone set 6
        }
    }";
    let mut nft = ns.command("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().unwrap();
    nft.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success(), "nft refused the test's zone rules");
    for dst in ["127.0.0.5", "127.0.0.6", "::1", "127.0.0.7", "127.0.0.8"] {
        assert!(ns.ping(dst), "ping {dst}");
    }
    let before = zone_lines(&ns, 5);
    assert!(before.len() >= 3, "zone 5 entries (both ways v4 and v6, original only): {before:#?}");
    assert!(before.iter().any(|l| l.contains("zone-orig=5")), "{before:#?}");
    assert!(before.iter().any(|l| l.contains("ipv6")), "{before:#?}");
    assert!(!zone_lines(&ns, 6).is_empty());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let handle = weft_dataplane::netns::NetnsHandle::open(&ns.path()).unwrap();
    let dp = weft_dataplane::netlink::NetlinkDataplane::in_netns(&handle).unwrap();
    use weft_dataplane::Dataplane;
    let n = rt.block_on(dp.flush_conntrack_zone(5)).unwrap();
    assert_eq!(n, before.len(), "deleted {n} of {before:#?}");
    assert!(zone_lines(&ns, 5).is_empty(), "left in zone 5: {:#?}", zone_lines(&ns, 5));
    assert!(!zone_lines(&ns, 6).is_empty(), "zone 6 was flushed too");
    let all = ns.exec("cat", &["/proc/net/nf_conntrack"]);
    assert!(all.contains("dst=127.0.0.8"), "zone 0 was flushed too:\n{all}");
    assert_eq!(rt.block_on(dp.flush_conntrack_zone(5)).unwrap(), 0, "idempotent");
    assert!(rt.block_on(dp.flush_conntrack_zone(0)).is_err(), "zone 0 is never flushed");
    assert!(ns.exec("cat", &["/proc/net/nf_conntrack"]).contains("dst=127.0.0.8"));
}
