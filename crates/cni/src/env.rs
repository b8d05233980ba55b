//! The CNI_* environment, validated per verb (spec "Parameters"); every failure is error 4.
//!
//! Variables are read through a lookup function rather than `std::env`, so tests feed maps and the library never
//! depends on the process environment. CNI_PATH is accepted but not required: weft delegates to no other plugin.
use crate::error::CniError;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

/// Identity of the pod from CNI_ARGS (Kubernetes runtimes pass it; podman and tests may not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub verb: Verb,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub pod: PodRef,
}

impl CniEnv {
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let verb = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Verb::Add,
            Some("DEL") => Verb::Del,
            Some("CHECK") => Verb::Check,
            Some("GC") => Verb::Gc,
            Some("STATUS") => Verb::Status,
            Some("VERSION") => Verb::Version,
            Some(other) => return Err(CniError::invalid_env("CNI_COMMAND", format!("unknown command {other:?}"))),
            None => return Err(CniError::invalid_env("CNI_COMMAND", "not set")),
        };
        let attach = matches!(verb, Verb::Add | Verb::Del | Verb::Check);
        let mut env = CniEnv { verb, container_id: None, netns: None, ifname: None, pod: PodRef::default() };
        if !attach {
            return Ok(env);
        }
        let required = |name: &'static str| {
            get(name).filter(|v| !v.is_empty()).ok_or_else(|| CniError::invalid_env(name, "not set"))
        };
        let cid = required("CNI_CONTAINERID")?;
        validate_container_id(&cid)?;
        let ifname = required("CNI_IFNAME")?;
        validate_ifname(&ifname)?;
        env.netns = match get("CNI_NETNS").filter(|v| !v.is_empty()) {
            Some(p) if !p.starts_with('/') => {
                return Err(CniError::invalid_env("CNI_NETNS", format!("{p:?} is not an absolute path")))
            }
            Some(p) => Some(PathBuf::from(p)),
            // DEL must work after the namespace is gone, so it may come without one.
            None if verb == Verb::Del => None,
            None => return Err(CniError::invalid_env("CNI_NETNS", "not set")),
        };
        env.pod = parse_args(get("CNI_ARGS").as_deref().unwrap_or(""))?;
        env.container_id = Some(cid);
        env.ifname = Some(ifname);
        Ok(env)
    }
}

/// Spec: alphanumeric first, then alphanumerics, `_`, `.`, `-`.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_env("CNI_CONTAINERID", format!("{id:?} has characters outside [A-Za-z0-9_.-]")))
    }
}

/// The kernel's rules for interface names (dev_valid_name): 1–15 bytes, not `.`/`..`, no `/`, `:` or space.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| Err(CniError::invalid_env("CNI_IFNAME", format!("{name:?} {why}")));
    if name.len() > 15 {
        return bad("is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("is not a valid interface name");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        return bad("contains '/', ':' or whitespace");
    }
    Ok(())
}

/// `K=V;K=V`. Unknown keys are ignored (as if `IgnoreUnknown=1`): runtimes pass many we do not use.
fn parse_args(args: &str) -> Result<PodRef, CniError> {
    let mut pod = PodRef::default();
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::invalid_env("CNI_ARGS", format!("{pair:?} is not KEY=VALUE")));
        };
        match k {
            "K8S_POD_NAMESPACE" => pod.namespace = v.to_string(),
            "K8S_POD_NAME" => pod.name = v.to_string(),
            _ => {}
        }
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CniEnv::from_lookup(&|k| m.get(k).cloned())
    }

    const ADD: [(&str, &str); 4] =
        [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc-1"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/run/netns/x")];

    fn code(r: Result<CniEnv, CniError>) -> u32 {
        r.expect_err("should fail").code()
    }

    #[test]
    fn add_parses_with_pod_identity() {
        let mut v = ADD.to_vec();
        v.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID="));
        let e = env(&v).unwrap();
        assert_eq!(e.verb, Verb::Add);
        assert_eq!(e.container_id.as_deref(), Some("abc-1"));
        assert_eq!(e.pod, PodRef { namespace: "ns1".into(), name: "web-0".into() });
    }

    #[test]
    fn every_missing_or_bad_variable_is_code_4() {
        assert_eq!(code(env(&[])), 4);
        assert_eq!(code(env(&[("CNI_COMMAND", "FROB")])), 4);
        for (skip, (name, _)) in ADD.iter().enumerate().skip(1) {
            let v: Vec<_> = ADD.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, p)| *p).collect();
            assert_eq!(code(env(&v)), 4, "without {name}");
        }
        let with = |k: &'static str, val: &'static str| {
            let mut v = ADD.to_vec();
            v.retain(|(kk, _)| *kk != k);
            v.push((k, val));
            env(&v)
        };
        assert_eq!(code(with("CNI_CONTAINERID", "-x")), 4);
        assert_eq!(code(with("CNI_CONTAINERID", "a b")), 4);
        assert_eq!(code(with("CNI_IFNAME", "this-is-too-long0")), 4);
        assert_eq!(code(with("CNI_IFNAME", "a/b")), 4);
        assert_eq!(code(with("CNI_IFNAME", "..")), 4);
        assert_eq!(code(with("CNI_NETNS", "relative/ns")), 4);
        assert_eq!(code(with("CNI_ARGS", "K8S_POD_NAME")), 4);
    }

    #[test]
    fn del_needs_no_netns_and_gc_status_version_need_nothing() {
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")]).unwrap();
        assert_eq!(e.netns, None);
        for verb in ["GC", "STATUS", "VERSION"] {
            assert!(env(&[("CNI_COMMAND", verb)]).is_ok(), "{verb}");
        }
        assert_eq!(code(env(&[("CNI_COMMAND", "CHECK"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")])), 4);
    }
}
