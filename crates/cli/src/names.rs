//! Kubernetes name syntax, checked where the lab takes names from the command line, so the lab never registers
//! an object the API server would reject (a port name the policy engine then cannot match, a label no selector
//! can express). The rules are the API server's (k8s.io/apimachinery `validation`): DNS-1123 labels for
//! namespaces, DNS-1123 subdomains for pods, IANA_SVC_NAME for container port names, qualified names for label
//! keys.
//!
//! The canonical validators are being written in the policy crate at the same time; this module keeps the CLI
//! independent of them until the two are folded into one.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    /// What was checked ("namespace", "pod name", "port name", "label key", "label value").
    pub what: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.what, self.value, self.why)
    }
}

impl std::error::Error for NameError {}

fn err(what: &'static str, value: &str, why: &'static str) -> NameError {
    NameError { what, value: value.to_string(), why }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn dns1123_label(what: &'static str, s: &str) -> Result<(), NameError> {
    const WHY: &str = "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit";
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1]);
    if ok {
        Ok(())
    } else {
        Err(err(what, s, WHY))
    }
}

/// Namespace names: a DNS-1123 label.
pub fn namespace(s: &str) -> Result<(), NameError> {
    dns1123_label("namespace", s)
}

/// Pod names: a DNS-1123 subdomain (dot-separated DNS-1123 labels, at most 253 characters).
pub fn pod(s: &str) -> Result<(), NameError> {
    subdomain("pod name", s)
}

fn subdomain(what: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() || s.len() > 253 || s.split('.').any(|part| dns1123_label(what, part).is_err()) {
        return Err(err(what, s, "must be dot-separated DNS labels (lowercase letters, digits, '-'), at most 253"));
    }
    Ok(())
}

/// Container port names (IANA_SVC_NAME): at most 15 characters, lowercase letters, digits and '-', at least one
/// letter, no '-' at either end and no "--".
pub fn port_name(s: &str) -> Result<(), NameError> {
    const WHY: &str =
        "must be at most 15 lowercase letters, digits or '-', with a letter, no '-' at either end, no \"--\"";
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 15
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(err("port name", s, WHY))
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63: the name part of a label key, and a label value.
fn qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Label keys: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name 1-63 of `[-A-Za-z0-9_.]` starting and
/// ending alphanumeric.
pub fn label_key(s: &str) -> Result<(), NameError> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if subdomain("label key", p).is_err() {
            return Err(err("label key", s, "the prefix before '/' must be a DNS subdomain (e.g. example.com)"));
        }
    }
    if !qualified_part(name) {
        return Err(err(
            "label key",
            s,
            "the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// Label values: empty, or 1-63 of `[-A-Za-z0-9_.]` starting and ending alphanumeric.
pub fn label_value(s: &str) -> Result<(), NameError> {
    if s.is_empty() || qualified_part(s) {
        Ok(())
    } else {
        Err(err(
            "label value",
            s,
            "must be empty or 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_iana_svc_name() {
        for ok in ["http", "dns-tcp", "h2", "a", "web-8080", "abcdefghijklmno"] {
            assert!(port_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Bad_Name",
            "HTTP",
            "",
            "80",
            "-http",
            "http-",
            "dns--tcp",
            "abcdefghijklmnop", // 16
            "web.1",
            "web_1",
        ] {
            assert!(port_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces_are_dns_labels_and_pods_subdomains() {
        for ok in ["x", "default", "kube-system", "a1", &"a".repeat(63)] {
            assert!(namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", "X", "-x", "x-", "x.y", "x_y", "x/y", &"a".repeat(64)] {
            assert!(namespace(bad).is_err(), "{bad}");
        }
        assert!(pod("web-0.canary").is_ok());
        for bad in ["", "A", "a..b", ".a", "a.", "a/b", "a b"] {
            assert!(pod(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes() {
        for ok in ["app", "App_1", "a.b-c", "example.com/app", "kubernetes.io/metadata.name", "x"] {
            assert!(label_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-app", "app-", "a b", "Example.com/app", "/app", "example.com/", "a/b/c", &"k".repeat(64)] {
            assert!(label_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "v", "V1.2_3-x"] {
            assert!(label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["-v", "v-", "a b", "a/b", "a=b", &"v".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad}");
        }
        let e = port_name("Bad_Name").unwrap_err().to_string();
        assert!(e.contains("port name") && e.contains("Bad_Name"), "{e}");
    }
}
