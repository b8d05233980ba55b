//! The reaper: a detached copy of this binary that finishes deleting a host veth after DEL has returned
//! (why: see `verbs/del.rs`). It is the same executable started with `WEFT_REAP_LINK=<ifindex>:<name>`, no
//! stdio (so the runtime reading our stdout never waits for it), in its own process group (so a runtime that
//! kills the plugin's group on timeout does not kill it).
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

pub const ENV: &str = "WEFT_REAP_LINK";

/// Starts the reaper for link `index` named `name` and returns at once.
pub fn spawn(index: u32, name: &str) -> io::Result<()> {
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

/// In the reaper process: the link to delete.
pub fn requested(get: &dyn Fn(&str) -> Option<String>) -> Option<(u32, String)> {
    let v = get(ENV)?;
    let (index, name) = v.split_once(':')?;
    Some((index.parse().ok()?, name.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_its_request() {
        let get = |v: &'static str| move |_: &str| Some(v.to_string());
        assert_eq!(super::requested(&get("12:wfabc")), Some((12, "wfabc".into())));
        assert_eq!(super::requested(&get("x:wfabc")), None);
        assert_eq!(super::requested(&|_| None), None);
    }
}
