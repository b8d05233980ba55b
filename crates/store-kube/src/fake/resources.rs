//! The resource types the fake API server serves: the ones weft reads or writes, and nothing else, so a store
//! that starts calling something new fails against the fake (404 "the server could not find the requested
//! resource", as a real server says for an unknown type) instead of silently passing.
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    /// API group ("" for the core group).
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, lower-case: what URLs and RBAC rules name.
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Served with a `status` subresource (as a CRD with `subresources.status`): the main resource ignores
    /// `status` in writes, `/status` changes nothing but `status`.
    pub status_subresource: bool,
}

impl Resource {
    /// `v1` or `group/version`, as objects carry it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub const RESOURCES: &[Resource] = &[
    Resource { group: "", version: "v1", plural: "nodes", kind: "Node", namespaced: false, status_subresource: false },
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        status_subresource: false,
    },
    Resource { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true, status_subresource: false },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        status_subresource: false,
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        namespaced: true,
        status_subresource: false,
    },
    // weft's tenant networks, as the CRD in deploy/weft.yaml defines them.
    Resource {
        group: "weft.dev",
        version: "v1alpha1",
        plural: "networks",
        kind: "Network",
        namespaced: false,
        status_subresource: true,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        status_subresource: false,
    },
];

pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<Resource> {
    RESOURCES.iter().copied().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource an object belongs to, from its `apiVersion` and `kind`.
pub fn of_object(obj: &Value) -> Option<Resource> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    RESOURCES.iter().copied().find(|r| r.kind == kind && r.api_version() == api_version)
}

/// Parses an API path into its resource, namespace, object name and subresource. Returns None for paths the
/// fake does not serve.
pub fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    // `namespaces/NAME` is the Namespace object; `namespaces/NS/RESOURCE...` is a namespaced resource.
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    let resource = by_plural(group, version, plural)?;
    if namespace.is_some() && !resource.namespaced {
        return None;
    }
    if namespace.is_none() && name.is_some() && resource.namespaced {
        return None;
    }
    Some(Target { resource, namespace, name, subresource: sub })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: Resource,
    /// None: cluster-scoped, or every namespace for a namespaced collection.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path("/api/v1/nodes/n1").unwrap();
        assert_eq!((t.resource.plural, t.namespace, t.name), ("nodes", None, Some("n1".into())));
        let t = parse_path("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!((t.resource.plural, t.name.as_deref()), ("namespaces", Some("kube-system")));
        let t = parse_path("/api/v1/namespaces/default/pods").unwrap();
        assert_eq!((t.resource.plural, t.namespace.as_deref(), t.name), ("pods", Some("default"), None));
        let t = parse_path("/apis/coordination.k8s.io/v1/namespaces/weft-system/leases/x").unwrap();
        assert_eq!((t.resource.kind, t.name.as_deref()), ("Lease", Some("x")));
        assert_eq!(parse_path("/api/v1/pods").unwrap().namespace, None);
        let t = parse_path("/apis/weft.dev/v1alpha1/networks/blue/status").unwrap();
        assert_eq!(
            (t.resource.kind, t.name.as_deref(), t.subresource.as_deref()),
            ("Network", Some("blue"), Some("status"))
        );
        assert!(parse_path("/apis/weft.dev/v1alpha1/namespaces/x/networks").is_none(), "cluster-scoped");
        for bad in
            ["/api/v1/secrets", "/api/v1/pods/x", "/api/v1/namespaces/a/nodes", "/healthz", "/apis/apps/v1/daemonsets"]
        {
            assert!(parse_path(bad).is_none(), "{bad}");
        }
    }
}
