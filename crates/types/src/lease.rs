//! A node's lease on a pod subnet, as the store publishes it to every other node.
//!
//! The lease carries what its node's backend publishes for peers ([`BackendData`]): typed, and tagged with the
//! backend's name, so a reader knows which backend wrote it (flannel's `LeaseAttrs.BackendType`) and every field
//! has one meaning. The store itself only stores and returns it.
//!
//! Wire shape, and compatibility with leases written before the tag existed:
//! - written: `{"type":"vxlan","vtepMac":"02:.."}`, `{"type":"host-gw"}`. The VXLAN field keeps its old name, so
//!   an agent of the previous version (which reads only `vtepMac`) still programs a new agent's lease during a
//!   rolling upgrade.
//! - read: also the untagged shape of earlier versions, `{"v":1,"vtepMac":".."}` (VXLAN) and `{"v":1}`, `null` or
//!   a missing field (host-gw, which published nothing), so existing stores and Node annotations keep working.
//! - an unknown `type` is an error naming the known ones: a lease from a backend this agent does not have is
//!   not guessed at.
//!
//! Field *values* are not judged here (a malformed MAC still parses): that is the backend's validation of a peer,
//! which skips one bad peer instead of failing the whole lease list.
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// What a node's backend publishes in its lease for the other nodes. Adding a backend adds a variant here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum BackendData {
    /// The node's VXLAN device MAC (the VTEP): peers put it in their neighbour and FDB entries.
    Vxlan {
        #[serde(rename = "vtepMac")]
        vtep_mac: String,
    },
    /// host-gw publishes nothing: peers route via the node IP.
    #[default]
    HostGw,
    /// The node's WireGuard public key (base64, as `wg pubkey` prints it) and UDP port: peers make it a
    /// WireGuard peer at `nodeIp:port`. Judged by the agent's backend (the key must parse, the port be non-zero).
    #[serde(rename_all = "camelCase")]
    Wireguard { public_key: String, port: u16 },
}

impl BackendData {
    /// Reads backend data in any shape a weft version wrote (see the module comment): tagged, or untagged legacy.
    pub fn from_value(v: serde_json::Value) -> Result<Self, String> {
        let obj = match &v {
            serde_json::Value::Null => return Ok(BackendData::HostGw),
            serde_json::Value::Object(o) => o,
            other => return Err(format!("backend data must be an object, not {other}")),
        };
        if obj.contains_key("type") {
            return BackendData::deserialize(v).map_err(|e| format!("backend data: {e}"));
        }
        // Before the tag only VXLAN published anything: its MAC.
        match obj.get("vtepMac") {
            Some(serde_json::Value::String(m)) => Ok(BackendData::Vxlan { vtep_mac: m.clone() }),
            Some(other) => Err(format!("backend data: vtepMac must be a string, not {other}")),
            None => Ok(BackendData::HostGw),
        }
    }
}

fn any_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BackendData, D::Error> {
    BackendData::from_value(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub node: String,
    pub subnet: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    /// The node's underlay address: VXLAN destination, host-gw next hop.
    pub node_ip: IpAddr,
    #[serde(default, deserialize_with = "any_version")]
    pub backend_data: BackendData,
    /// Unix time (ms) when the lease lapses unless renewed. Informational for etcd, whose server enforces TTLs.
    #[serde(default)]
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    pub node: String,
    pub node_ip: IpAddr,
    pub backend_data: BackendData,
    pub ttl: Duration,
    /// The subnet this node had before (from its node file): taken again if still free.
    pub hint: Option<Ipv4Net>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Through a whole lease, as the stores read it.
    fn parse(data: serde_json::Value) -> Result<BackendData, String> {
        let lease = json!({"node": "n1", "subnet": "10.244.1.0/24", "nodeIp": "192.0.2.1", "backendData": data});
        serde_json::from_value::<Lease>(lease).map(|l| l.backend_data).map_err(|e| e.to_string())
    }

    #[test]
    fn tagged_round_trip() {
        let vx = BackendData::Vxlan { vtep_mac: "02:00:00:00:00:01".into() };
        let text = serde_json::to_value(&vx).unwrap();
        assert_eq!(text, json!({"type": "vxlan", "vtepMac": "02:00:00:00:00:01"}));
        assert_eq!(parse(text).unwrap(), vx);
        let wg = BackendData::Wireguard { public_key: "k".into(), port: 51820 };
        let v = serde_json::to_value(&wg).unwrap();
        assert_eq!(v, json!({"type": "wireguard", "publicKey": "k", "port": 51820}));
        assert_eq!(parse(v).unwrap(), wg);
        let hg = serde_json::to_value(BackendData::HostGw).unwrap();
        assert_eq!(hg, json!({"type": "host-gw"}));
        assert_eq!(parse(hg).unwrap(), BackendData::HostGw);
    }

    #[test]
    fn legacy_untagged_shapes_are_read() {
        assert_eq!(
            parse(json!({"v": 1, "vtepMac": "02:00:00:00:00:01"})).unwrap(),
            BackendData::Vxlan { vtep_mac: "02:00:00:00:00:01".into() }
        );
        assert_eq!(parse(json!({"v": 1})).unwrap(), BackendData::HostGw);
        assert_eq!(parse(json!(null)).unwrap(), BackendData::HostGw);
        let old: Lease = serde_json::from_value(
            json!({"node": "n1", "subnet": "10.244.1.0/24", "nodeIp": "192.0.2.1", "expiresAtMs": 5}),
        )
        .unwrap();
        assert_eq!(old.backend_data, BackendData::HostGw);
    }

    #[test]
    fn unknown_type_is_rejected_clearly() {
        let e = parse(json!({"type": "geneve", "vni": 5})).unwrap_err();
        assert!(e.contains("unknown variant `geneve`, expected one of `vxlan`, `host-gw`, `wireguard`"), "{e}");
        let e = parse(json!({"type": 7})).unwrap_err();
        assert!(e.starts_with("backend data:"), "{e}");
        assert_eq!(
            BackendData::from_value(json!({"type": "vxlan", "vtepMac": "m"})).unwrap(),
            BackendData::Vxlan { vtep_mac: "m".into() }
        );
        let e = parse(json!({"type": "vxlan"})).unwrap_err();
        assert!(e.contains("vtepMac"), "{e}");
        assert!(parse(json!("vxlan")).is_err());
        assert!(parse(json!({"vtepMac": 5})).is_err());
    }

    #[test]
    fn values_are_not_judged_here_and_extra_fields_are_ignored() {
        // A bad MAC is the VXLAN backend's call (one peer skipped), not a lease that fails to parse.
        assert_eq!(
            parse(json!({"type": "vxlan", "vtepMac": "nope"})).unwrap(),
            BackendData::Vxlan { vtep_mac: "nope".into() }
        );
        // A newer agent may add fields; this one reads what it knows.
        assert_eq!(parse(json!({"type": "host-gw", "future": true})).unwrap(), BackendData::HostGw);
    }
}
