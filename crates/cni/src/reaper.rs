//! The reaper: a detached process that finishes deleting a host veth after DEL has returned (why: see
//! `verbs/del.rs`). It has no stdio (so a runtime reading our stdout never waits for it) and its own session
//! (so a runtime that kills the plugin's process group on timeout does not kill it).
//!
//! It is normally a plain `fork()` of the plugin: the parent goes on at once, where `posix_spawn` of a new
//! executable makes the parent wait until the child has exec'd (4 ms on a loaded 2-core machine, more than
//! the rest of DEL). This is the only module of the crate with `unsafe`, for that one call. If the process
//! has more than one thread (never, on the DEL path), fork would be unsound, so it falls back to spawning
//! this executable again with `WEFT_REAP_LINK=<ifindex>:<name>`, which `main` recognises.
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use weft_dataplane::pod::{NetlinkPodNet, PodNet};

pub const ENV: &str = "WEFT_REAP_LINK";

/// Starts the reaper for link `index` named `name` and returns at once.
pub fn spawn(index: u32, name: &str) -> io::Result<()> {
    if !single_threaded() {
        return spawn_exec(index, name);
    }
    let devnull = File::options().read(true).write(true).open("/dev/null")?;
    // SAFETY: the process has exactly one thread (checked just above, and nothing on this path starts one), so
    // the child is an exact copy in which no lock can be held by a thread that no longer exists: it may run
    // ordinary Rust code (allocate, open a socket) before it exits.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { .. } => Ok(()),
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::dup2_stdin(&devnull);
            let _ = nix::unistd::dup2_stdout(&devnull);
            let _ = nix::unistd::dup2_stderr(&devnull);
            let _ = nix::unistd::setsid();
            let ok = NetlinkPodNet::new().delete_index(index, name).is_ok();
            std::process::exit(if ok { 0 } else { 1 })
        }
    }
}

fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false)
}

fn spawn_exec(index: u32, name: &str) -> io::Result<()> {
    Command::new(std::env::current_exe()?)
        .env(ENV, format!("{index}:{name}"))
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}

/// In a reaper started by [`spawn_exec`]: the link to delete.
pub fn requested(get: &dyn Fn(&str) -> Option<String>) -> Option<(u32, String)> {
    // The reaper is re-executed without CNI_COMMAND; a CNI call that also carries the variable (hostile or stray
    // env) is a CNI call and must get its CNI answer, not a silent reaper run.
    if get("CNI_COMMAND").is_some() {
        return None;
    }
    let v = get(ENV)?;
    let (index, name) = v.split_once(':')?;
    Some((index.parse().ok()?, name.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_its_request() {
        let get = |v: &'static str| move |k: &str| (k == super::ENV).then(|| v.to_string());
        assert_eq!(super::requested(&get("12:wfabc")), Some((12, "wfabc".into())));
        assert_eq!(super::requested(&get("x:wfabc")), None);
        let cni_call = |k: &str| Some(if k == "CNI_COMMAND" { "ADD".to_string() } else { "12:wfabc".to_string() });
        assert_eq!(super::requested(&cni_call), None, "a CNI call is never a reaper run");
        assert_eq!(super::requested(&|_| None), None);
    }
}
