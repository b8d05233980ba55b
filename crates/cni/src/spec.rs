//! Our own serde types for the CNI wire format (results, errors, VERSION), instead of `cni-plugin` (archived,
//! no 1.1) or `rscni` (young, breaks often): the spec is small and we need exact control over the per-version
//! differences, which are:
//! - 0.3.0, 0.3.1, 0.4.0: every `ips` entry carries `"version": "4" | "6"`; no `mtu` on interfaces.
//! - 1.0.0: `ips` entries lose `version`.
//! - 1.1.0: interfaces may carry `mtu` (also `socketPath`, `pciID`, unused here); GC and STATUS exist.
//!
//! Results are built once in the newest shape and lowered with [`CniResult::for_version`]; parsing (prevResult)
//! accepts every shape.
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The spec versions this plugin speaks, oldest first (what VERSION reports).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V030,
    V031,
    V040,
    V100,
    V110,
}

impl Version {
    pub const LATEST: Version = Version::V110;

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "0.3.0" => Self::V030,
            "0.3.1" => Self::V031,
            "0.4.0" => Self::V040,
            "1.0.0" => Self::V100,
            "1.1.0" => Self::V110,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V030 => "0.3.0",
            Self::V031 => "0.3.1",
            Self::V040 => "0.4.0",
            Self::V100 => "1.0.0",
            Self::V110 => "1.1.0",
        }
    }

    /// CHECK appeared in 0.4.0.
    pub fn has_check(self) -> bool {
        self >= Self::V040
    }

    /// GC and STATUS appeared in 1.1.0.
    pub fn has_gc_and_status(self) -> bool {
        self >= Self::V110
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only in 0.3.x/0.4.0 results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// The `dns` section, in config and result alike.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

impl CniResult {
    /// Lowers a result to the shape of `v` (see the module comment).
    pub fn for_version(mut self, v: Version) -> Self {
        self.cni_version = v.as_str().to_string();
        for ip in &mut self.ips {
            ip.version = (v < Version::V100).then(|| if ip.address.addr().is_ipv4() { "4" } else { "6" }.to_string());
        }
        if v < Version::V110 {
            for i in &mut self.interfaces {
                i.mtu = None;
            }
        }
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a result always serializes")
    }
}

/// The error object printed on stdout when a verb fails.
#[derive(Debug, Serialize)]
pub struct ErrorOut<'a> {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'a str,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// The answer to VERSION.
#[derive(Debug, Serialize)]
pub struct VersionOut<'a> {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'a str,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: [&'static str; 5],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> CniResult {
        CniResult {
            cni_version: String::new(),
            interfaces: vec![
                Interface { name: "wf1".into(), mac: Some("02:00:00:00:00:01".into()), mtu: Some(1500), sandbox: None },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/x".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    version: None,
                    address: "10.1.0.5/32".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    version: None,
                    address: "fd00::5/128".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: Some("10.1.0.1".parse().unwrap()) }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn versions_parse_and_order() {
        for s in SUPPORTED_VERSIONS {
            assert_eq!(Version::parse(s).unwrap().as_str(), s);
        }
        assert!(Version::parse("0.2.0").is_none());
        assert!(Version::parse("1.2.0").is_none());
        assert!(!Version::V031.has_check() && Version::V040.has_check());
        assert!(!Version::V100.has_gc_and_status() && Version::V110.has_gc_and_status());
    }

    #[test]
    fn old_versions_get_ip_version_and_no_mtu() {
        let v: serde_json::Value = serde_json::from_str(&result().for_version(Version::V031).to_json()).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert!(v.get("dns").is_none());
    }

    #[test]
    fn new_versions_drop_ip_version_and_1_1_keeps_mtu() {
        let v: serde_json::Value = serde_json::from_str(&result().for_version(Version::V100).to_json()).unwrap();
        assert!(v["ips"][0].get("version").is_none());
        assert!(v["interfaces"][1].get("mtu").is_none());
        let v: serde_json::Value = serde_json::from_str(&result().for_version(Version::V110).to_json()).unwrap();
        assert_eq!(v["interfaces"][1]["mtu"], 1500);
        assert_eq!(v["ips"][0]["address"], "10.1.0.5/32");
    }

    #[test]
    fn parses_every_shape_back() {
        for v in [Version::V030, Version::V040, Version::V110] {
            let json = result().for_version(v).to_json();
            let back: CniResult = serde_json::from_str(&json).unwrap();
            assert_eq!(back.ips.len(), 2);
            assert_eq!(back.interfaces[1].sandbox.as_deref(), Some("/run/netns/x"));
        }
    }
}
