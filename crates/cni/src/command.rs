//! Parse step: CNI environment + stdin → one typed [`Command`], or the error the spec asks for.
//!
//! Nothing here touches the system; everything the later steps need is validated here, so a bad request is
//! refused before any state changes ("nothing changed on error"). Order of checks, which decides the code
//! when several things are wrong: environment (4), then stdin decoding (6), version (1), config (7), then
//! verb-specific rules (CHECK needs ≥0.4.0 and a prevResult, GC/STATUS need ≥1.1.0, GC needs its list).
use crate::config::{Attachment, NetConf};
use crate::env::{CniEnv, PodRef, Verb};
use crate::error::CniError;
use crate::spec::{CniResult, Version};
use std::path::PathBuf;

/// One attachment: a container's interface on this network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    pub conf: NetConf,
    pub container_id: String,
    pub ifname: String,
    /// Absent only for DEL.
    pub netns: Option<PathBuf>,
    pub pod: PodRef,
}

impl Attach {
    pub fn ids(&self) -> crate::plan::AttachIds<'_> {
        crate::plan::AttachIds { network: &self.conf.name, cid: &self.container_id, ifname: &self.ifname }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// VERSION: answer in the requested version's format when we speak it.
    Version {
        answer_as: Version,
    },
    Add(Attach),
    Del(Attach),
    Check {
        attach: Attach,
        prev: CniResult,
    },
    Gc {
        conf: NetConf,
        valid: Vec<Attachment>,
    },
    Status(NetConf),
}

pub fn parse(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Command, CniError> {
    let env = CniEnv::from_lookup(get)?;
    if env.verb == Verb::Version {
        let answer_as = crate::config::peek_version(stdin).and_then(|v| Version::parse(&v)).unwrap_or(Version::LATEST);
        return Ok(Command::Version { answer_as });
    }
    let conf = NetConf::parse(stdin)?;
    let v = conf.version;
    let too_old = |verb: &str, since: &str| {
        CniError::IncompatibleVersion(format!(
            "{verb} needs cniVersion {since} or later, the config says {}",
            v.as_str()
        ))
    };
    match env.verb {
        Verb::Gc | Verb::Status if !v.has_gc_and_status() => {
            Err(too_old(if env.verb == Verb::Gc { "GC" } else { "STATUS" }, "1.1.0"))
        }
        Verb::Gc => {
            let valid = conf.valid_attachments.clone().ok_or_else(|| {
                CniError::InvalidConfig("GC needs cni.dev/valid-attachments (an empty list releases everything)".into())
            })?;
            Ok(Command::Gc { conf, valid })
        }
        Verb::Status => Ok(Command::Status(conf)),
        Verb::Check if !v.has_check() => Err(too_old("CHECK", "0.4.0")),
        Verb::Add | Verb::Del | Verb::Check => {
            let attach = Attach {
                conf,
                container_id: env.container_id.expect("validated by env"),
                ifname: env.ifname.expect("validated by env"),
                netns: env.netns,
                pod: env.pod,
            };
            match env.verb {
                Verb::Add => Ok(Command::Add(attach)),
                Verb::Del => Ok(Command::Del(attach)),
                _ => {
                    let prev = attach
                        .conf
                        .prev_result
                        .clone()
                        .ok_or_else(|| CniError::InvalidConfig("CHECK needs prevResult".into()))?;
                    Ok(Command::Check { attach, prev })
                }
            }
        }
        Verb::Version => unreachable!("answered above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(verb: &str, stdin: &str) -> Result<Command, CniError> {
        let m: HashMap<&str, String> = [
            ("CNI_COMMAND", verb.to_string()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_NETNS", "/run/netns/p".into()),
        ]
        .into();
        parse(&|k| m.get(k).cloned(), stdin.as_bytes())
    }

    const V110: &str = r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.1.0.0/24"}}"#;
    const PREV: &str =
        r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/32"}]}}"#;

    #[test]
    fn each_verb_becomes_its_command() {
        assert!(matches!(run("ADD", V110), Ok(Command::Add(a)) if a.container_id == "c1" && a.ifname == "eth0"));
        assert!(matches!(run("DEL", V110), Ok(Command::Del(_))));
        assert!(matches!(run("STATUS", V110), Ok(Command::Status(_))));
        assert!(matches!(run("CHECK", PREV), Ok(Command::Check { prev, .. }) if prev.ips.len() == 1));
        let gc = r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[]}"#;
        assert!(matches!(run("GC", gc), Ok(Command::Gc { valid, .. }) if valid.is_empty()));
    }

    #[test]
    fn version_answers_in_the_asked_format() {
        assert_eq!(run("VERSION", r#"{"cniVersion":"0.4.0"}"#).unwrap(), Command::Version { answer_as: Version::V040 });
        assert_eq!(run("VERSION", "").unwrap(), Command::Version { answer_as: Version::V110 });
        assert_eq!(run("VERSION", r#"{"cniVersion":"0.1.0"}"#).unwrap(), Command::Version { answer_as: Version::V110 });
    }

    #[test]
    fn verb_version_rules_and_required_inputs() {
        let code = |verb: &str, stdin: &str| run(verb, stdin).unwrap_err().code();
        assert_eq!(code("GC", r#"{"cniVersion":"1.0.0","name":"n","cni.dev/valid-attachments":[]}"#), 1);
        assert_eq!(code("STATUS", r#"{"cniVersion":"0.4.0","name":"n"}"#), 1);
        assert_eq!(code("CHECK", r#"{"cniVersion":"0.3.1","name":"n","prevResult":{}}"#), 1);
        assert_eq!(code("CHECK", r#"{"cniVersion":"1.0.0","name":"n"}"#), 7);
        assert_eq!(code("GC", r#"{"cniVersion":"1.1.0","name":"n"}"#), 7);
        assert_eq!(code("ADD", "{"), 6);
        assert_eq!(code("ADD", r#"{"cniVersion":"0.2.0","name":"n"}"#), 1);
    }
}
