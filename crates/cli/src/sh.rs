//! Running commands: `ip`, processes inside namespaces. The lab drives the same tools an operator would.
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `cmd args`, failing with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    check(cmd, args, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn check(cmd: &str, args: &[&str], out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// `ip -n NS args`.
pub fn ip(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Runs `cmd args` inside namespace `ns`.
pub fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, cmd];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// A command that will run inside namespace `ns`.
pub fn ns_command(ns: &str, cmd: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(cmd);
    c
}

/// Starts `cmd` detached (own session, output to `log`), returns its pid.
pub fn spawn_detached(mut cmd: Command, log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let f = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .process_group(0)
        .spawn()
        .context("spawning a lab process")?;
    Ok(child.id())
}

/// True when `pid` is alive and its command line mentions `needle`: a pid from a saved state file may have
/// been reused by an unrelated process after a crash, and must not be signalled then.
pub fn is_ours(pid: u32, needle: &str) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(needle))
            .unwrap_or(false)
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
}

pub fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill").args([signal, &pid.to_string()]).stderr(Stdio::null()).status();
}

pub fn netns_list() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// SIGKILLs every process inside namespace `ns`.
pub fn kill_netns_pids(ns: &str) {
    if let Ok(out) = run("ip", &["netns", "pids", ns]) {
        for pid in out.split_whitespace().filter_map(|p| p.parse().ok()) {
            kill(pid, "-KILL");
        }
    }
}
