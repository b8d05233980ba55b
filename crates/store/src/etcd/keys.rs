//! The etcd key layout, in one place so that tools reading etcd by hand and the code agree:
//!
//! ```text
//! <prefix>config                     the cluster NetworkConfig (JSON), created once
//! <prefix>leases/10.244.3.0_24       a Lease (JSON), attached to an etcd lease with the node's TTL
//! <prefix>objects/<kind>/<key>       endpoints, namespaces, policies, networks, network-status (JSON); <key> may contain '/'
//! ```
//! Leases are keyed by subnet, not node: "no two nodes on one subnet" then is "create this key only if it
//! does not exist" (`create_revision == 0`), a single compare-and-swap.
use crate::ObjectKind;
use ipnet::Ipv4Net;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` should start and end with '/'; a missing trailing '/' is added.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    pub fn config(&self) -> String {
        format!("{}config", self.prefix)
    }

    pub fn leases(&self) -> String {
        format!("{}leases/", self.prefix)
    }

    pub fn lease(&self, subnet: Ipv4Net) -> String {
        format!("{}{}", self.leases(), subnet.to_string().replace('/', "_"))
    }

    /// The subnet a full lease key names, if it is one.
    pub fn subnet_of(&self, key: &[u8]) -> Option<Ipv4Net> {
        strip(&self.leases(), key)?.replacen('_', "/", 1).parse().ok()
    }

    pub fn objects(&self, kind: ObjectKind) -> String {
        format!("{}objects/{}/", self.prefix, kind.as_str())
    }

    pub fn object(&self, kind: ObjectKind, key: &str) -> String {
        format!("{}{key}", self.objects(kind))
    }
}

/// The object key of a full etcd key under `dir` (what [`Keys::objects`] returned).
pub fn strip<'a>(dir: &str, key: &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(key).ok()?.strip_prefix(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("/weft");
        assert_eq!(k.config(), "/weft/config");
        assert_eq!(k.lease("10.244.3.0/24".parse().unwrap()), "/weft/leases/10.244.3.0_24");
        let dir = k.objects(ObjectKind::Endpoint);
        assert_eq!(k.object(ObjectKind::Endpoint, "ns/pod"), "/weft/objects/endpoints/ns/pod");
        assert_eq!(strip(&dir, b"/weft/objects/endpoints/ns/pod"), Some("ns/pod"));
        assert_eq!(strip(&dir, b"/weft/objects/policies/ns/p"), None);
        assert_eq!(k.subnet_of(b"/weft/leases/10.244.3.0_24"), Some("10.244.3.0/24".parse().unwrap()));
        assert_eq!(k.subnet_of(b"/weft/leases/garbage"), None);
    }
}
