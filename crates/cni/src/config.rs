//! The network configuration on stdin, parsed into a typed [`NetConf`]. Every key is documented in CONFIG.md.
//!
//! Three stages, so each failure gets its spec code: not a JSON object → 6; an unsupported `cniVersion` → 1;
//! anything else wrong (types, values, unknown `ipam` keys) → 7. Unknown *top-level* keys are ignored, because
//! runtimes add their own (`runtimeConfig`, `args`, `capabilities`, `cniVersions`…); inside `ipam`, which only
//! weft reads, an unknown key is a typo and is refused.
use crate::error::CniError;
use crate::spec::{CniResult, Dns, Version, SUPPORTED_VERSIONS};
use crate::subnet::{pod_subnet_v4, pod_subnet_v6};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use std::path::PathBuf;

pub const DEFAULT_DATA_ROOT: &str = "/var/lib/weft/ipam";
pub const DEFAULT_MTU: u32 = 1500;

/// Where the pod subnet(s) come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetSource {
    /// `ipam.subnet` (+ `ipam.subnet6`) in the config: standalone use, no agent.
    Static { v4: Ipv4Net, v6: Option<Ipv6Net> },
    /// The node file the agent writes (default `/run/weft/node.json`).
    NodeFile(PathBuf),
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub mtu: Option<u32>,
    pub subnets: SubnetSource,
    pub data_dir: PathBuf,
    pub dns: Dns,
    pub prev_result: Option<CniResult>,
    pub valid_attachments: Option<Vec<Attachment>>,
    /// `ipam.fsync` (default true): reservations are fsynced before ADD answers.
    pub fsync: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    cni_version: Option<String>,
    name: Option<String>,
    mtu: Option<u32>,
    node_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    ipam: Option<RawIpam>,
    #[serde(default)]
    dns: Dns,
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpam {
    #[serde(rename = "type")]
    kind: Option<String>,
    subnet: Option<IpNet>,
    subnet6: Option<IpNet>,
    fsync: Option<bool>,
}

/// The `cniVersion` of a config, best effort (for the error object when the rest does not parse).
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: serde_json::Value =
            serde_json::from_slice(stdin).map_err(|e| CniError::Decode(format!("stdin is not JSON: {e}")))?;
        if !value.is_object() {
            return Err(CniError::Decode("stdin is not a JSON object".into()));
        }
        let version_str = match value.get("cniVersion") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err(CniError::InvalidConfig("cniVersion must be a string".into())),
            None => return Err(CniError::InvalidConfig("cniVersion is required".into())),
        };
        let version = Version::parse(&version_str).ok_or_else(|| {
            CniError::IncompatibleVersion(format!(
                "cniVersion {version_str} is not supported; weft supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ))
        })?;
        let raw: Raw = serde_json::from_value(value).map_err(|e| CniError::InvalidConfig(e.to_string()))?;
        debug_assert_eq!(raw.cni_version.as_deref(), Some(version_str.as_str()));
        let name = raw.name.ok_or_else(|| CniError::InvalidConfig("name is required".into()))?;
        validate_name(&name)?;
        if let Some(mtu) = raw.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::InvalidConfig(format!("mtu {mtu} is outside 68..=65535")));
            }
        }
        let fsync = raw.ipam.as_ref().and_then(|i| i.fsync).unwrap_or(true);
        let subnets = subnet_source(raw.ipam, raw.node_file)?;
        let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_ROOT).join(&name));
        if !data_dir.is_absolute() {
            return Err(CniError::InvalidConfig(format!("dataDir {} is not an absolute path", data_dir.display())));
        }
        let prev_result = match raw.prev_result {
            None => None,
            Some(v) => {
                Some(serde_json::from_value(v).map_err(|e| CniError::InvalidConfig(format!("prevResult: {e}")))?)
            }
        };
        Ok(NetConf {
            version,
            name,
            mtu: raw.mtu,
            subnets,
            data_dir,
            dns: raw.dns,
            prev_result,
            valid_attachments: raw.valid_attachments,
            fsync,
        })
    }
}

/// Spec: alphanumeric first, then alphanumerics, `_`, `.`, `-`. (It also names the IPAM directory.)
fn validate_name(name: &str) -> Result<(), CniError> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::InvalidConfig(format!("name {name:?} must match [A-Za-z0-9][A-Za-z0-9_.-]*")))
    }
}

fn subnet_source(ipam: Option<RawIpam>, node_file: Option<PathBuf>) -> Result<SubnetSource, CniError> {
    let bad = |m: String| Err(CniError::InvalidConfig(m));
    let node =
        || SubnetSource::NodeFile(node_file.clone().unwrap_or_else(|| weft_types::node_file::DEFAULT_PATH.into()));
    let Some(ipam) = ipam else { return Ok(node()) };
    if let Some(kind) = ipam.kind.as_deref().filter(|k| *k != "weft") {
        return bad(format!("ipam.type {kind:?}: weft does its own IPAM and delegates to no IPAM plugin"));
    }
    let v4 = match ipam.subnet {
        None if ipam.subnet6.is_some() => {
            return bad("ipam.subnet6 needs ipam.subnet (dual-stack, not IPv6-only)".into())
        }
        None => return Ok(node()),
        Some(IpNet::V4(n)) => pod_subnet_v4(n).map_err(|e| CniError::InvalidConfig(format!("ipam.subnet {e}")))?,
        Some(IpNet::V6(n)) => return bad(format!("ipam.subnet {n} is not IPv4 (use ipam.subnet6)")),
    };
    let v6 = match ipam.subnet6 {
        None => None,
        Some(IpNet::V6(n)) => Some(pod_subnet_v6(n).map_err(|e| CniError::InvalidConfig(format!("ipam.subnet6 {e}")))?),
        Some(IpNet::V4(n)) => return bad(format!("ipam.subnet6 {n} is not IPv6")),
    };
    Ok(SubnetSource::Static { v4, v6 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes())
    }

    fn code(s: &str) -> u32 {
        parse(s).expect_err(s).code()
    }

    #[test]
    fn minimal_config_uses_every_default() {
        let c = parse(r#"{"cniVersion":"1.1.0","name":"pods","type":"weft"}"#).unwrap();
        assert_eq!(c.version, Version::V110);
        assert_eq!(c.mtu, None);
        assert_eq!(c.subnets, SubnetSource::NodeFile("/run/weft/node.json".into()));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/weft/ipam/pods"));
        assert!(c.dns.is_empty() && c.prev_result.is_none() && c.valid_attachments.is_none());
        assert!(c.fsync);
        let c = parse(r#"{"cniVersion":"1.1.0","name":"pods","ipam":{"fsync":false}}"#).unwrap();
        assert!(!c.fsync);
        assert_eq!(c.subnets, SubnetSource::NodeFile("/run/weft/node.json".into()));
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"{"cniVersion":"0.4.0","name":"n1","type":"weft","mtu":1400,"nodeFile":"/tmp/nf.json",
                "dataDir":"/tmp/ipam","ipam":{"type":"weft","subnet":"10.88.0.7/24","subnet6":"fd00:88::/64"},
                "dns":{"nameservers":["10.96.0.10"],"search":["svc"]},
                "runtimeConfig":{"portMappings":[]},"args":{"x":1},"cniVersions":["0.4.0"],
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],
                "prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.88.0.2/32"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(
            c.subnets,
            SubnetSource::Static { v4: "10.88.0.0/24".parse().unwrap(), v6: Some("fd00:88::/64".parse().unwrap()) }
        );
        assert_eq!(c.data_dir, PathBuf::from("/tmp/ipam"));
        assert_eq!(c.dns.nameservers, vec!["10.96.0.10".to_string()]);
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "c1");
        assert_eq!(c.prev_result.unwrap().ips[0].address.to_string(), "10.88.0.2/32");
        let c = parse(r#"{"cniVersion":"1.0.0","name":"n","nodeFile":"/x/node.json"}"#).unwrap();
        assert_eq!(c.subnets, SubnetSource::NodeFile("/x/node.json".into()));
    }

    #[test]
    fn error_codes() {
        assert_eq!(code("not json"), 6);
        assert_eq!(code("[1,2]"), 6);
        assert_eq!(code(r#"{"cniVersion":"0.2.0","name":"n"}"#), 1);
        assert_eq!(code(r#"{"cniVersion":"9.9.9","name":"n"}"#), 1);
        assert_eq!(code(r#"{"name":"n"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":1,"name":"n"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"-bad"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"a/b"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","mtu":10}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","mtu":"1500"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","dataDir":"rel"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/31"}}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"fd00::/64"}}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/33"}}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet6":"fd00::/64"}}"#), 7);
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/24","subnet6":"10.1.0.0/24"}}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/24","subnet6":"fd00::/127"}}"#),
            7
        );
        for hostile in ["0.0.0.0/0", "127.0.0.0/8", "224.0.0.0/24", "169.254.0.0/16", "10.0.0.0/7"] {
            let c = format!(r#"{{"cniVersion":"1.1.0","name":"n","ipam":{{"subnet":"{hostile}"}}}}"#);
            assert_eq!(code(&c), 7, "{hostile}");
        }
        for hostile in ["::/0", "fe80::/64", "ff00::/64", "::1/128", "fd00::/40"] {
            let c = format!(
                r#"{{"cniVersion":"1.1.0","name":"n","ipam":{{"subnet":"10.0.0.0/24","subnet6":"{hostile}"}}}}"#
            );
            assert_eq!(code(&c), 7, "{hostile}");
        }
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local"}}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/24","gateway":"x"}}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","dns":{"nameserver":["x"]}}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","prevResult":{"ips":[{"address":"nope"}]}}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"ifname":"e"}]}"#), 7);
    }

    #[test]
    fn peek_version_is_best_effort() {
        assert_eq!(peek_version(br#"{"cniVersion":"0.4.0","name":5}"#).as_deref(), Some("0.4.0"));
        assert_eq!(peek_version(b"garbage"), None);
    }
}
