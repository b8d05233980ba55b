//! A lease, as weft publishes it on its Node object, with no I/O.
//!
//! The pod subnet comes from `spec.podCIDRs` (`spec.podCIDR` on old clusters) when the controller manager
//! allocates them (`--allocate-node-cidrs`), else from weft's own allocation. Either way weft writes what
//! peers need as annotations, so one Node watch tells every agent everything:
//!
//! | annotation                | value                                                      |
//! |---------------------------|------------------------------------------------------------|
//! | `weft.dev/subnet`         | the IPv4 pod subnet (copied from podCIDR, or weft's own)   |
//! | `weft.dev/subnet6`        | the IPv6 pod subnet, if any                                |
//! | `weft.dev/subnet-source`  | `podCIDR` or `weft`                                        |
//! | `weft.dev/node-ip`        | underlay address: VXLAN destination, host-gw next hop      |
//! | `weft.dev/backend-data`   | the backend's data, JSON (`{"type":"vxlan","vtepMac":..}`) |
//! | `weft.dev/renewed-at`     | RFC 3339, last write (on change, else every 5 min at most) |
//! | `weft.dev/expires-at`     | RFC 3339, renewed-at + TTL (informational: nothing expires)|
//!
//! Backend data written by earlier versions (`{"v":1,"vtepMac":..}`, untagged) is still read (see
//! `weft_types::lease`); an unknown backend type makes the Node's lease malformed (skipped, reported).
//!
//! A Node has a lease when it has `weft.dev/node-ip` and a subnet. Kubernetes does not expire anything: a
//! lease ends when the agent releases it (annotations removed) or the Node is deleted.
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};
use std::net::IpAddr;
use weft_types::{BackendData, Lease};

pub const PREFIX: &str = "weft.dev/";
pub const SUBNET: &str = "weft.dev/subnet";
pub const SUBNET6: &str = "weft.dev/subnet6";
pub const SOURCE: &str = "weft.dev/subnet-source";
pub const NODE_IP: &str = "weft.dev/node-ip";
pub const BACKEND_DATA: &str = "weft.dev/backend-data";
pub const RENEWED_AT: &str = "weft.dev/renewed-at";
pub const EXPIRES_AT: &str = "weft.dev/expires-at";
/// Every annotation weft owns on a Node; release removes exactly these.
pub const ANNOTATIONS: [&str; 7] = [SUBNET, SUBNET6, SOURCE, NODE_IP, BACKEND_DATA, RENEWED_AT, EXPIRES_AT];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    PodCidr,
    Weft,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::PodCidr => "podCIDR",
            Source::Weft => "weft",
        }
    }
}

pub fn name(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The Node's allocated pod CIDRs, first IPv4 and first IPv6. Unparsable entries are an error: they mean the
/// cluster is not what weft thinks it is, and guessing would route pods into the void.
pub fn pod_cidrs(node: &Node) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>), String> {
    let spec = node.spec.as_ref();
    let mut all: Vec<&String> = spec.and_then(|s| s.pod_cidrs.as_ref()).map(|v| v.iter().collect()).unwrap_or_default();
    if all.is_empty() {
        all.extend(spec.and_then(|s| s.pod_cidr.as_ref()));
    }
    let (mut v4, mut v6) = (None, None);
    for c in all {
        match c.parse::<IpNet>().map_err(|e| format!("Node {} has an invalid podCIDR {c:?}: {e}", name(node)))? {
            IpNet::V4(n) => v4 = v4.or(Some(n)),
            IpNet::V6(n) => v6 = v6.or(Some(n)),
        }
    }
    Ok((v4, v6))
}

/// Milliseconds since the epoch from an RFC 3339 annotation.
fn parse_time(s: &str) -> Option<u64> {
    let t: k8s_openapi::jiff::Timestamp = s.parse().ok()?;
    u64::try_from(t.as_millisecond()).ok()
}

pub fn format_time(ms: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms as i64).map(|t| t.to_string()).unwrap_or_default()
}

/// When weft last published on this Node (`weft.dev/renewed-at`), in ms since the epoch.
pub fn renewed_at(node: &Node) -> Option<u64> {
    annotation(node, RENEWED_AT).and_then(parse_time)
}

/// The Node's lease, None if weft has not published one. Err if weft's annotations are malformed.
pub fn lease_of(node: &Node) -> Result<Option<Lease>, String> {
    let Some(ip) = annotation(node, NODE_IP) else { return Ok(None) };
    let n = name(node);
    let bad = |what: &str, v: &str| format!("Node {n}: annotation {what}={v:?} is malformed");
    let node_ip: IpAddr = ip.parse().map_err(|_| bad(NODE_IP, ip))?;
    let (cidr4, cidr6) = pod_cidrs(node)?;
    let subnet = match (cidr4, annotation(node, SUBNET)) {
        (Some(s), _) => s,
        (None, Some(a)) => a.parse().map_err(|_| bad(SUBNET, a))?,
        (None, None) => return Ok(None),
    };
    let subnet6 = match (cidr6, annotation(node, SUBNET6)) {
        (Some(s), _) => Some(s),
        (None, Some(a)) => Some(a.parse().map_err(|_| bad(SUBNET6, a))?),
        (None, None) => None,
    };
    let backend_data = match annotation(node, BACKEND_DATA) {
        Some(b) => serde_json::from_str(b)
            .map_err(|e| e.to_string())
            .and_then(BackendData::from_value)
            .map_err(|e| format!("{}: {e}", bad(BACKEND_DATA, b)))?,
        None => BackendData::default(),
    };
    let expires_at_ms = annotation(node, EXPIRES_AT).and_then(parse_time).unwrap_or(0);
    Ok(Some(Lease { node: n, subnet, subnet6, node_ip, backend_data, expires_at_ms }))
}

/// The merge patch that publishes `lease` (renewed at `now_ms`) on its Node.
pub fn publish_patch(lease: &Lease, source: Source, now_ms: u64) -> Value {
    json!({"metadata": {"annotations": {
        SUBNET: lease.subnet.to_string(),
        SUBNET6: lease.subnet6.map(|s| s.to_string()),
        SOURCE: source.as_str(),
        NODE_IP: lease.node_ip.to_string(),
        BACKEND_DATA: serde_json::to_string(&lease.backend_data).expect("backend data serializes"),
        RENEWED_AT: format_time(now_ms),
        EXPIRES_AT: format_time(lease.expires_at_ms),
    }}})
}

/// The merge patch that removes every weft annotation (and nothing else).
pub fn release_patch() -> Value {
    let anns: serde_json::Map<String, Value> = ANNOTATIONS.iter().map(|k| (k.to_string(), Value::Null)).collect();
    json!({"metadata": {"annotations": anns}})
}

pub fn has_weft_annotations(node: &Node) -> bool {
    node.metadata.annotations.as_ref().is_some_and(|a| a.keys().any(|k| k.starts_with(PREFIX)))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn publish_then_read_back() {
        let lease = Lease {
            node: "n1".into(),
            subnet: "10.244.3.0/24".parse().unwrap(),
            subnet6: Some("fd00::/80".parse().unwrap()),
            node_ip: "192.0.2.7".parse().unwrap(),
            backend_data: BackendData::Vxlan { vtep_mac: "02:00:00:00:00:01".into() },
            expires_at_ms: 1_700_000_060_123,
        };
        let mut n = node(json!({"metadata": {"name": "n1", "annotations": {"other": "kept"}}}));
        let mut v = serde_json::to_value(&n).unwrap();
        crate::fake::patch::merge(&mut v, &publish_patch(&lease, Source::Weft, 1_700_000_000_000));
        n = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(lease_of(&n).unwrap(), Some(lease.clone()));
        assert_eq!(n.metadata.annotations.as_ref().unwrap()[RENEWED_AT], "2023-11-14T22:13:20Z");
        crate::fake::patch::merge(&mut v, &release_patch());
        n = serde_json::from_value(v).unwrap();
        assert_eq!(lease_of(&n).unwrap(), None);
        assert!(!has_weft_annotations(&n));
        assert_eq!(n.metadata.annotations.unwrap()["other"], "kept");
    }

    #[test]
    fn pod_cidr_wins_and_bad_values_are_errors() {
        let n = node(json!({"metadata": {"name": "n", "annotations": {NODE_IP: "10.0.0.1", SUBNET: "10.244.9.0/24"}},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]}}));
        let l = lease_of(&n).unwrap().unwrap();
        assert_eq!(l.subnet.to_string(), "10.244.1.0/24");
        assert_eq!(l.subnet6.unwrap().to_string(), "fd00:1::/64");
        let legacy = node(json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.2.0/24"}}));
        assert_eq!(pod_cidrs(&legacy).unwrap().0.unwrap().to_string(), "10.244.2.0/24");
        let bad = node(json!({"metadata": {"name": "n", "annotations": {NODE_IP: "nope"}}}));
        assert!(lease_of(&bad).unwrap_err().contains("weft.dev/node-ip"));
        let bad = node(json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "x"}}));
        assert!(pod_cidrs(&bad).is_err());
        let unknown = node(json!({"metadata": {"name": "n", "annotations": {NODE_IP: "10.0.0.1",
            SUBNET: "10.244.9.0/24", BACKEND_DATA: r#"{"type":"geneve"}"#}}}));
        let e = lease_of(&unknown).unwrap_err();
        assert!(e.contains("weft.dev/backend-data") && e.contains("unknown variant `geneve`"), "{e}");
    }

    #[test]
    fn backend_data_of_earlier_versions_is_read() {
        let old = node(json!({"metadata": {"name": "n", "annotations": {NODE_IP: "10.0.0.1",
            SUBNET: "10.244.9.0/24", BACKEND_DATA: r#"{"v":1,"vtepMac":"02:00:00:00:00:09"}"#}}}));
        let l = lease_of(&old).unwrap().unwrap();
        assert_eq!(l.backend_data, BackendData::Vxlan { vtep_mac: "02:00:00:00:00:09".into() });
        let patch = publish_patch(&l, Source::Weft, 0);
        let written: Value =
            serde_json::from_str(patch["metadata"]["annotations"][BACKEND_DATA].as_str().unwrap()).unwrap();
        assert_eq!(
            written,
            json!({"type": "vxlan", "vtepMac": "02:00:00:00:00:09"}),
            "agents of the previous version read vtepMac"
        );
    }
}
