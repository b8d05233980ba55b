//! Kubernetes name syntax where the lab takes names from the command line, so the lab never registers an object
//! the API server would reject. The rules are the policy crate's (`weft_policy::k8s_names`, the API server's
//! own); this module only names what the CLI checks and words the error as the CLI prints it.
use std::fmt;
use weft_policy::k8s_names as k8s;

/// A name the API server would reject, printed `invalid <what> "<value>": <rule>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(k8s::NameError);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.0.what, self.0.value, self.0.why)
    }
}

impl std::error::Error for NameError {}

fn check(r: Result<(), k8s::NameError>) -> Result<(), NameError> {
    r.map_err(NameError)
}

/// Namespaces: DNS-1123 labels.
pub fn namespace(s: &str) -> Result<(), NameError> {
    check(k8s::dns1123_label("namespace", s))
}

/// Pods: DNS-1123 subdomains.
pub fn pod(s: &str) -> Result<(), NameError> {
    check(k8s::dns1123_subdomain("pod name", s))
}

/// Container port names: IANA_SVC_NAME.
pub fn port_name(s: &str) -> Result<(), NameError> {
    check(k8s::port_name("port name", s))
}

/// Label keys: qualified names with an optional DNS subdomain prefix.
pub fn label_key(s: &str) -> Result<(), NameError> {
    check(k8s::qualified_name("label key", s))
}

/// Label values: empty, or a qualified name without prefix.
pub fn label_value(s: &str) -> Result<(), NameError> {
    check(k8s::label_value("label value", s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_what_and_value_and_share_the_policy_rules() {
        assert_eq!(
            port_name("Bad_Name").unwrap_err().to_string().split(':').next(),
            Some("invalid port name \"Bad_Name\"")
        );
        assert!(namespace("X_1").unwrap_err().to_string().starts_with("invalid namespace"));
        assert!(label_key("bad key").unwrap_err().to_string().starts_with("invalid label key"));
        assert!(pod("a.b-c").is_ok() && pod("-a").is_err());
        assert!(label_value("").is_ok() && label_value("-x").is_err());
        assert!(port_name("http").is_ok() && port_name("a--b").is_err() && port_name("1234").is_err());
        assert!(label_key("weft.dev/role").is_ok() && label_key("a/b/c").is_err());
    }
}
