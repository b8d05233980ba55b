//! Test kit shared by every weft test that needs the real kernel or a real peer.
//!
//! - [`require_root`]: root-only tests skip with a message on a laptop, but fail loudly when `CI=true`.
//! - [`Netns`]: a network namespace with a unique name, deleted on drop (also on panic), with its processes.
//! - [`unique`]: short unique tokens for namespace and link names, so tests run in parallel.
//! - [`Etcd`]: a real etcd on loopback with a temp data dir and free ports, killed on drop.
//! - [`bin`]: path of a workspace binary (`weft`, `weftd`, `weftctl`), built by `cargo build` before the tests.
#![forbid(unsafe_code)]

pub mod agent_node;
pub mod pki;
pub mod wg;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when the test may run; false (after printing why) when it must be skipped.
/// Panics when `CI=true` and we are not root: CI must never silently skip a kernel test.
pub fn require_root() -> bool {
    let root = nix_euid_is_root();
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs root and network namespaces, and CI=true: refusing to skip");
        }
        eprintln!("SKIP: this test needs root (network namespaces); run the suite as root");
    }
    root
}

fn nix_euid_is_root() -> bool {
    // `id -u` avoids an unsafe geteuid call in a forbid(unsafe_code) crate.
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short token unique across parallel tests and processes: `<pid base36><counter>`, at most 7 chars.
pub fn unique() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 46656; // 3 base-36 chars
    format!("{}{}", base36(pid, 3), base36(n % 1296, 2))
}

fn base36(mut v: u32, width: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = digits[(v % 36) as usize];
        v /= 36;
    }
    String::from_utf8(out).expect("ascii")
}

/// Runs a command, panicking with its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output whatever the exit status.
pub fn try_run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// A named network namespace, deleted (with every process inside) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `name` (which should contain a [`unique`] token) with loopback up.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let _ = try_run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// `ip -n NAME args...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `cmd args...` inside the namespace, panicking on failure.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, cmd];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `cmd args...` inside the namespace and returns its output whatever the status.
    pub fn try_exec(&self, cmd: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name, cmd];
        all.extend_from_slice(args);
        try_run("ip", &all)
    }

    /// A command prepared to run inside the namespace (spawn it yourself).
    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, cmd]);
        c
    }

    /// One ping, true if answered within a second.
    pub fn ping(&self, dst: &str) -> bool {
        self.try_exec("ping", &["-c", "1", "-W", "1", dst]).status.success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside (servers a test started), then delete the namespace.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// Deletes a link in the root namespace on drop (underlay veths a test made outside any namespace).
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).stderr(Stdio::null()).status();
    }
}

/// A free TCP port on loopback (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("weft-{tag}-{}", unique()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real etcd server on loopback, free ports, temp data dir; killed on drop.
pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    pub dir: TempDir,
    /// Set for a server started with [`Etcd::start_tls`]: clients must present `pki.client`.
    pub pki: Option<pki::Pki>,
    /// Root's password once [`Etcd::enable_auth`] ran.
    pub root_password: Option<String>,
}

impl Etcd {
    /// Starts etcd and waits until it answers /health. Panics if `etcd` is missing (CI installs etcd-server).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts etcd serving clients over TLS only, with `--client-cert-auth`: a client needs a certificate
    /// signed by the test CA (in `pki`).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let dir = TempDir::new("etcd");
        let pki = tls.then(|| pki::generate(&dir.path().join("pki"), &["127.0.0.1".parse().unwrap()]));
        let mut e = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            dir,
            pki,
            root_password: None,
        };
        e.spawn();
        e
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// etcdctl's flags for this server (endpoint, certificates, root user once auth is on).
    pub fn etcdctl_args(&self) -> Vec<String> {
        let mut a = vec![format!("--endpoints={}", self.endpoint())];
        if let Some(p) = &self.pki {
            a.push(format!("--cacert={}", p.ca.display()));
            a.push(format!("--cert={}", p.client.cert.display()));
            a.push(format!("--key={}", p.client.key.display()));
        }
        if let Some(pw) = &self.root_password {
            a.push(format!("--user=root:{pw}"));
        }
        a
    }

    /// Runs etcdctl (v3 API) against this server.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3").args(self.etcdctl_args()).args(args);
        c.output().expect("etcdctl not installed (apt-get install etcd-client)")
    }

    /// Turns on etcd authentication with a root user whose password is `password`.
    pub fn enable_auth(&mut self, password: &str) {
        for args in [
            vec!["user", "add", "root", &format!("--new-user-password={password}")],
            vec!["user", "grant-role", "root", "root"],
            vec!["auth", "enable"],
        ] {
            let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
            let out = self.etcdctl(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            // etcd 3.4 creates the root role with the user; granting it again is harmless.
            assert!(out.status.success() || err.contains("already"), "etcdctl {args:?}: {err}");
        }
        self.root_password = Some(password.to_string());
    }

    fn spawn(&mut self) {
        let c = self.endpoint();
        let p = format!("http://127.0.0.1:{}", self.peer_port);
        let m = format!("http://127.0.0.1:{}", self.metrics_port);
        let data = self.dir.path().join("data");
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "t", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
            .args(["--initial-cluster", &format!("t={p}"), "--initial-cluster-state", "new"])
            .args(["--listen-metrics-urls", &m, "--log-level", "warn", "--logger", "zap"]);
        if let Some(k) = &self.pki {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&k.ca)
                .arg("--cert-file")
                .arg(&k.server.cert)
                .arg("--key-file")
                .arg(&k.server.key);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd not installed (apt-get install etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // /metrics on the plain metrics port answers whatever the client TLS settings are.
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_ok()
                && try_run("curl", &["-sf", &format!("{m}/health")]).status.success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not become healthy on {c}");
    }

    /// Stops the server (data kept), e.g. to test an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Path of a binary of this workspace, built by `cargo build` before the tests run
/// (`scripts/test.sh` does that). Honours `WEFT_BIN_DIR`, else `<target>/debug`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("WEFT_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| target_dir().join("debug"));
    let p = dir.join(name);
    assert!(p.exists(), "{} not built: run `cargo build --workspace --bins` first", p.display());
    p
}

fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target")
}

/// Polls `f` until it returns true or `timeout` passes; returns whether it succeeded.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `weft-probe matrix` (the binary at `probe`) per job, all in parallel, each from its namespace to its
/// targets with UDP source ports from its base: (job key, target) → reached. Panics if a probe fails.
pub fn probe_matrix<K: Ord + Clone>(
    probe: &str,
    timeout_ms: u64,
    jobs: Vec<(K, &str, u16, &[String])>,
) -> std::collections::BTreeMap<(K, String), bool> {
    let children: Vec<(K, Child)> = jobs
        .into_iter()
        .map(|(key, netns, udp_base, targets)| {
            let child = Command::new("ip")
                .args(["netns", "exec", netns, probe, "matrix"])
                .args(["--timeout-ms", &timeout_ms.to_string(), "--udp-src-base", &udp_base.to_string()])
                .args(targets)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("weft-probe matrix");
            (key, child)
        })
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for (key, child) in children {
        let o = child.wait_with_output().expect("weft-probe matrix");
        assert!(o.status.success(), "weft-probe matrix: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("matrix JSON");
        for (target, ok) in v.as_object().expect("object") {
            out.insert((key.clone(), target.clone()), ok.as_bool().expect("bool"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_tokens_differ_and_are_short() {
        let a = unique();
        let b = unique();
        assert_ne!(a, b);
        assert_eq!(a.len(), 5);
    }
}
