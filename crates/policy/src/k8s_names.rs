//! Kubernetes name and label syntax, as the API server checks it (`k8s.io/apimachinery/pkg/util/validation`):
//! whatever the API server would reject is rejected here too, with the rule it breaks, before it reaches a table,
//! a comment or a file name. Public so the CLI checks `ns-add`, `pod-add --port` and labels with the same rules.
//!
//! - namespace names: DNS-1123 label (`dns1123_label`); pod and policy names: DNS-1123 subdomain
//!   (`dns1123_subdomain`), as `ValidateObjectMeta` does for those kinds;
//! - label keys: `qualified_name` (optional DNS-1123 subdomain prefix and `/`, then a name); label values:
//!   `label_value` (may be empty);
//! - container port names: `port_name` (IANA_SVC_NAME).
//!
//! Written by hand instead of with regexes: the grammars are tiny and this crate stays dependency-light.

use std::collections::BTreeMap;

/// A name or label that the API server would reject.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {why}")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
    pub why: &'static str,
}

const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;
const PORT_NAME_MAX: usize = 15;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
                         and must start and end with an alphanumeric character, at most 63 characters";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' \
                             or '.', and must start and end with an alphanumeric character, at most 253 characters";
const QNAME_MSG: &str = "a qualified name must consist of alphanumeric characters, '-', '_' or '.', must start \
                         and end with an alphanumeric character, at most 63 characters, with an optional DNS \
                         subdomain prefix and '/'";
const VALUE_MSG: &str = "a label value must be empty or consist of alphanumeric characters, '-', '_' or '.', and \
                         must start and end with an alphanumeric character, at most 63 characters";
const PORT_MSG: &str = "a port name (IANA_SVC_NAME) must be 1-15 lowercase letters, digits or '-', contain a \
                        letter, and not start or end with '-' or contain '--'";

fn err(what: &'static str, value: &str, why: &'static str) -> NameError {
    // Keep hostile input short in messages and logs.
    let value: String = value.chars().take(80).collect();
    NameError { what, value, why }
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && alnum(&b[0]) && alnum(&b[b.len() - 1]) && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// RFC 1123 label (namespace names): `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn dns1123_label(what: &'static str, s: &str) -> Result<(), NameError> {
    if s.len() <= LABEL_MAX && is_label(s) {
        Ok(())
    } else {
        Err(err(what, s, LABEL_MSG))
    }
}

/// RFC 1123 subdomain (pod and policy names, label key prefixes): dot-separated labels, at most 253 characters.
pub fn dns1123_subdomain(what: &'static str, s: &str) -> Result<(), NameError> {
    if s.len() <= SUBDOMAIN_MAX && s.split('.').all(is_label) {
        Ok(())
    } else {
        Err(err(what, s, SUBDOMAIN_MSG))
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63: the name part of a label key, and label values.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    let ext = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b.len() <= LABEL_MAX
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(ext)
}

/// Label keys (`IsQualifiedName`): `[prefix/]name`, the prefix a DNS-1123 subdomain, the name as above.
pub fn qualified_name(what: &'static str, s: &str) -> Result<(), NameError> {
    let ok = match s.split_once('/') {
        None => is_qualified_part(s),
        Some((prefix, name)) => {
            !prefix.is_empty()
                && dns1123_subdomain(what, prefix).is_ok()
                && !name.contains('/')
                && is_qualified_part(name)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(err(what, s, QNAME_MSG))
    }
}

/// Label values (`IsValidLabelValue`): empty, or as the name part of a qualified name.
pub fn label_value(what: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() || is_qualified_part(s) {
        Ok(())
    } else {
        Err(err(what, s, VALUE_MSG))
    }
}

/// Every key and value of a label map.
pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), NameError> {
    for (k, v) in labels {
        qualified_name("label key", k)?;
        label_value("label value", v)?;
    }
    Ok(())
}

/// Named container and policy ports (`IsValidPortName`, IANA_SVC_NAME).
pub fn port_name(what: &'static str, s: &str) -> Result<(), NameError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= PORT_NAME_MAX
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(err(what, s, PORT_MSG))
    }
}

/// Namespace names.
pub fn namespace_name(s: &str) -> Result<(), NameError> {
    dns1123_label("namespace name", s)
}

/// Pod names.
pub fn pod_name(s: &str) -> Result<(), NameError> {
    dns1123_subdomain("pod name", s)
}

/// NetworkPolicy names.
pub fn policy_name(s: &str) -> Result<(), NameError> {
    dns1123_subdomain("policy name", s)
}

#[cfg(test)]
mod tests {
    //! Vectors from apimachinery's `pkg/util/validation/validation_test.go` (TestIsDNS1123Label,
    //! TestIsDNS1123Subdomain, TestIsQualifiedName, TestIsValidLabelValue, TestIsValidPortName), plus the inputs of
    //! the issue.
    use super::*;

    fn all_ok(f: impl Fn(&str) -> Result<(), NameError>, good: &[String]) {
        for g in good {
            assert!(f(g).is_ok(), "{g:?} should be accepted: {:?}", f(g));
        }
    }

    fn all_bad(f: impl Fn(&str) -> Result<(), NameError>, bad: &[String]) {
        for b in bad {
            assert!(f(b).is_err(), "{b:?} should be rejected");
        }
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dns1123_labels() {
        let mut good = v(&["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a", "1--a--b--2"]);
        good.push("a".repeat(63));
        let mut bad = v(&[
            "",
            "A",
            "ABC",
            "aBc",
            "A1",
            "A-1",
            "1-A",
            "-",
            "a-",
            "-a",
            "1-",
            "-1",
            "_",
            "a_",
            "_a",
            "a_b",
            "1_",
            "_1",
            "1_2",
            ".",
            "a.",
            ".a",
            "a.b",
            "1.",
            ".1",
            "1.2",
            " ",
            "a ",
            " a",
            "a b",
            "1 ",
            " 1",
            "1 2",
            "../../etc",
            "a/b",
            "Bad Name!",
        ]);
        bad.push("a".repeat(64));
        all_ok(|s| dns1123_label("x", s), &good);
        all_bad(|s| dns1123_label("x", s), &bad);
        all_bad(namespace_name, &bad);
    }

    #[test]
    fn dns1123_subdomains() {
        let mut good = v(&[
            "a",
            "ab",
            "abc",
            "a1",
            "a-1",
            "a--1--2--b",
            "0",
            "01",
            "012",
            "1a",
            "1-a",
            "1--a--b--2",
            "a.a",
            "ab.a",
            "abc.a",
            "a1.a",
            "a-1.a",
            "a--1--2--b.a",
            "a.1",
            "ab.1",
            "abc.1",
            "a1.1",
            "a-1.1",
            "a--1--2--b.1",
            "0.a",
            "01.a",
            "012.a",
            "1a.a",
            "1-a.a",
            "1--a--b--2",
            "0.1",
            "01.1",
            "012.1",
            "1a.1",
            "1-a.1",
            "1--a--b--2.1",
            "a.b.c.d.e",
            "aa.bb.cc.dd.ee",
            "1.2.3.4.5",
            "11.22.33.44.55",
        ]);
        good.push("a".repeat(253));
        let mut bad = v(&[
            "",
            "A",
            "ABC",
            "aBc",
            "A1",
            "A-1",
            "1-A",
            "-",
            "a-",
            "-a",
            "1-",
            "-1",
            "_",
            "a_",
            "_a",
            "a_b",
            "1_",
            "_1",
            "1_2",
            ".",
            "a.",
            ".a",
            "a..b",
            "1.",
            ".1",
            "1..2",
            " ",
            "a ",
            " a",
            "a b",
            "1 ",
            " 1",
            "1 2",
            "A.a",
            "aB.a",
            "ab.A",
            "A1.a",
            "a1.A",
            "A.1",
            "aB.1",
            "A1.1",
            "1A.1",
            "0.A",
            "01.A",
            "012.A",
            "1A.a",
            "1a.A",
            "A.B.C.D.E",
            "AA.BB.CC.DD.EE",
            "a.B.c.d.e",
            "aa.bB.cc.dd.ee",
            "a@b",
            "a,b",
            "a_b",
            "a;b",
            "a:b",
            "a%b",
            "a?b",
            "a$b",
            "a/b",
            "Bad Name!",
            "../../etc",
        ]);
        bad.push("a".repeat(254));
        bad.push("a".repeat(300));
        all_ok(|s| dns1123_subdomain("x", s), &good);
        all_bad(|s| dns1123_subdomain("x", s), &bad);
        all_bad(policy_name, &bad);
        all_bad(pod_name, &bad);
    }

    #[test]
    fn qualified_names() {
        let mut good = v(&[
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "1234",
            "simple/simple",
            "now-with-dashes/simple",
            "now-with-dashes/now-with-dashes",
            "now.with.dots/simple",
            "now-with.dashes-and.dots/simple",
            "1-num.2-num/3-num",
            "1234/5678",
            "1.2.3.4/5678",
            "Uppercase_Is_OK_123",
            "example.com/Uppercase_Is_OK_123",
            "requests.storage-foo",
            "kubernetes.io/metadata.name",
        ]);
        good.push("a".repeat(63));
        good.push(format!("{}/{}", "a".repeat(253), "b".repeat(63)));
        let mut bad = v(&[
            "nospecialchars%^=@",
            "cantendwithadash-",
            "-cantstartwithadash-",
            "only/one/slash",
            "Example.com/abc",
            "example_com/abc",
            "example.com/",
            "/simple",
            "with space",
            "",
        ]);
        bad.push("a".repeat(64));
        bad.push(format!("{}/abc", "a".repeat(254)));
        all_ok(|s| qualified_name("x", s), &good);
        all_bad(|s| qualified_name("x", s), &bad);
    }

    #[test]
    fn label_values() {
        let mut good = v(&["simple", "now-with-dashes", "1-starts-with-num", "end-with-num-1", "1234", ""]);
        good.push("a".repeat(63));
        let mut bad = v(&[
            "nospecialchars%^=@",
            "Tama-nui-te-rā.is.Māori.sun",
            "\\backslashes\\are\\bad",
            "-starts-with-dash",
            "ends-with-dash-",
            ".starts.with.dot",
            "ends.with.dot.",
            "with space",
            "a/b",
        ]);
        bad.push("a".repeat(64));
        all_ok(|s| label_value("x", s), &good);
        all_bad(|s| label_value("x", s), &bad);
        let map = |k: &str, val: &str| BTreeMap::from([(k.to_string(), val.to_string())]);
        assert!(labels(&map("app", "web")).is_ok());
        assert!(labels(&map("bad key", "web")).is_err());
        let e = labels(&map("app", "bad value")).unwrap_err();
        assert_eq!(e.what, "label value");
        assert!(e.to_string().starts_with("label value \"bad value\" is invalid: "), "{e}");
    }

    #[test]
    fn port_names() {
        let good = v(&["telnet", "re-mail-ck", "pop3", "a", "a-1", "1-a", "a-1-b-2-c", "1-a-2-b-3"]);
        let mut bad =
            v(&["longerthan15characters", "", "12345", "1-2-3-4", "-begin", "end-", "two--dashes", "whois++", "HTTP"]);
        bad.push("a".repeat(16));
        all_ok(|s| port_name("x", s), &good);
        all_bad(|s| port_name("x", s), &bad);
    }

    #[test]
    fn messages_are_bounded() {
        let e = policy_name(&"x".repeat(10_000)).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }
}
