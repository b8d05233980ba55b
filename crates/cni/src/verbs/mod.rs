//! Execute step: one file per verb, each running against the [`PodNet`] trait (real netlink in the binary, an
//! in-memory fake in unit tests) and the IPAM store. [`Ctx`] carries everything that touches the outside
//! world besides those two, so tests control time and the node file.
mod add;
mod check;
mod del;
mod gc;
mod pools;
mod status;

use crate::command::Command;
use crate::error::CniError;
use crate::spec::{VersionOut, SUPPORTED_VERSIONS};
use std::path::Path;
use std::time::SystemTime;
use weft_dataplane::pod::PodNet;
use weft_dataplane::DataplaneError;
use weft_types::node_file::{NodeFile, NodeFileError};

pub struct Ctx<'a, P: PodNet> {
    pub pod: &'a P,
    /// Finishes deleting a detached host veth (ifindex, name) off the critical path; see `reaper`.
    pub reap: &'a dyn Fn(u32, &str) -> std::io::Result<()>,
    pub load_node_file: &'a dyn Fn(&Path) -> Result<NodeFile, NodeFileError>,
    /// Where log lines go (stderr in the binary): what a runtime's log should show, e.g. GC's damaged records.
    pub log: &'a dyn Fn(&[String]),
    pub now: SystemTime,
}

/// Runs a parsed command; `Some(json)` is what goes to stdout on success.
pub fn execute<P: PodNet>(ctx: &Ctx<P>, cmd: &Command) -> Result<Option<String>, CniError> {
    match cmd {
        Command::Version { answer_as } => Ok(Some(
            serde_json::to_string(&VersionOut {
                cni_version: answer_as.as_str(),
                supported_versions: SUPPORTED_VERSIONS,
            })
            .expect("serializes"),
        )),
        Command::Add(a) => add::add(ctx, a).map(Some),
        Command::Del(a) => del::del(ctx, a).map(|()| None),
        Command::Check { attach, prev } => check::check(ctx, attach, prev).map(|()| None),
        Command::Gc { conf, valid } => gc::gc(ctx, conf, valid).map(|()| None),
        Command::Status(conf) => status::status(ctx, conf).map(|()| None),
    }
}

/// A CNI_NETNS that does not exist means the container is gone (3); one that is not a netns is bad input (4).
fn netns_error(path: &Path, e: DataplaneError) -> CniError {
    match e {
        DataplaneError::Netns { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            CniError::UnknownContainer(format!("network namespace {} does not exist", path.display()))
        }
        DataplaneError::Netns { .. } => CniError::invalid_env("CNI_NETNS", e.to_string()),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tenant;
