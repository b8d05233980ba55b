//! Label arguments, with `kubectl label` semantics: `k=v` adds a label (changing an existing value needs
//! `--overwrite`), `k-` removes one. Pure: parse the arguments into [`Changes`], then [`Changes::apply`] them to
//! the current labels; the caller writes the result to the store only when something changed.
use crate::names;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// Kubernetes sets this label on every namespace to its name; the API server does not let it change.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Parses `--label k=v` flags (repeatable) into labels, validating keys and values.
pub fn parse_set(items: &[String]) -> Result<Labels> {
    let mut out = Labels::new();
    for s in items {
        let Some((k, v)) = s.split_once('=') else { bail!("label {s:?} is not key=value") };
        names::label_key(k)?;
        names::label_value(v)?;
        if out.get(k).is_some_and(|old| old != v) {
            bail!("label {k:?} given twice with different values");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub set: Labels,
    pub remove: Vec<String>,
}

/// Parses `k=v` / `k-` arguments of `lab label`.
pub fn parse_changes(items: &[String]) -> Result<Changes> {
    if items.is_empty() {
        bail!("at least one label update is required (k=v adds or changes, k- removes)");
    }
    let mut c = Changes::default();
    let mut set_args = vec![];
    for s in items {
        if s.contains('=') {
            set_args.push(s.clone());
        } else if let Some(k) = s.strip_suffix('-') {
            names::label_key(k)?;
            if !c.remove.iter().any(|r| r == k) {
                c.remove.push(k.to_string());
            }
        } else {
            bail!("{s:?} is neither k=v (add or change a label) nor k- (remove it)");
        }
    }
    c.set = parse_set(&set_args)?;
    if let Some(k) = c.remove.iter().find(|k| c.set.contains_key(*k)) {
        bail!("cannot both change and remove label {k:?} in one command");
    }
    Ok(c)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub labels: Labels,
    pub changed: bool,
    /// Removals of labels that were not there (kubectl says so and goes on).
    pub not_found: Vec<String>,
}

impl Changes {
    /// Applies the changes to `current`. Without `overwrite`, changing an existing label to a different value is
    /// an error (as in kubectl); setting it to the value it has is not.
    pub fn apply(&self, current: &Labels, overwrite: bool) -> Result<Outcome> {
        let clashes: Vec<String> = self
            .set
            .iter()
            .filter_map(|(k, v)| current.get(k).filter(|old| *old != v).map(|old| format!("{k:?} (now {old:?})")))
            .collect();
        if !overwrite && !clashes.is_empty() {
            bail!("label {} already set; pass --overwrite to change it", clashes.join(", "));
        }
        let mut labels = current.clone();
        let mut not_found = vec![];
        for k in &self.remove {
            if labels.remove(k).is_none() {
                not_found.push(k.clone());
            }
        }
        labels.extend(self.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Outcome { changed: labels != *current, labels, not_found })
    }

    /// Refuses to touch `kubernetes.io/metadata.name` (namespaces only: the API server pins it to the name).
    pub fn check_namespace(&self, namespace: &str) -> Result<()> {
        let touches = self.remove.iter().any(|k| k == NAMESPACE_NAME_LABEL)
            || self.set.get(NAMESPACE_NAME_LABEL).is_some_and(|v| v != namespace);
        if touches {
            bail!("{NAMESPACE_NAME_LABEL} is always the namespace's name; it cannot be changed or removed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn labels(a: &[(&str, &str)]) -> Labels {
        a.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_set_and_remove() {
        let c = parse_changes(&args(&["app=web", "tier-", "example.com/x=", "env=prod"])).unwrap();
        assert_eq!(c.set, labels(&[("app", "web"), ("example.com/x", ""), ("env", "prod")]));
        assert_eq!(c.remove, vec!["tier".to_string()]);
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [&[][..], &["app"], &["app=web", "app-"], &["Bad Key=1"], &["k=bad value"], &["-k"], &["a=1", "a=2"]]
        {
            assert!(parse_changes(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(parse_set(&args(&["noequals"])).is_err());
        assert!(parse_set(&args(&["a=1", "a=1"])).is_ok());
    }

    #[test]
    fn overwrite_is_needed_to_change_a_value() {
        let cur = labels(&[("app", "web"), ("tier", "db")]);
        let c = parse_changes(&args(&["app=api"])).unwrap();
        let e = c.apply(&cur, false).unwrap_err().to_string();
        assert!(e.contains("--overwrite") && e.contains("app"), "{e}");
        let o = c.apply(&cur, true).unwrap();
        assert_eq!(o.labels, labels(&[("app", "api"), ("tier", "db")]));
        assert!(o.changed);
        // The same value again is no change and needs no --overwrite.
        let same = parse_changes(&args(&["app=web"])).unwrap().apply(&cur, false).unwrap();
        assert!(!same.changed);
    }

    #[test]
    fn add_and_remove_keep_other_labels() {
        let cur = labels(&[("app", "web"), ("tier", "db")]);
        let o = parse_changes(&args(&["env=prod", "tier-", "gone-"])).unwrap().apply(&cur, false).unwrap();
        assert_eq!(o.labels, labels(&[("app", "web"), ("env", "prod")]));
        assert_eq!(o.not_found, vec!["gone".to_string()]);
        assert!(o.changed);
    }

    #[test]
    fn namespace_name_label_is_pinned() {
        let rm = parse_changes(&args(&["kubernetes.io/metadata.name-"])).unwrap();
        assert!(rm.check_namespace("x").is_err());
        let other = parse_changes(&args(&["kubernetes.io/metadata.name=y"])).unwrap();
        assert!(other.check_namespace("x").is_err());
        let same = parse_changes(&args(&["kubernetes.io/metadata.name=x"])).unwrap();
        assert!(same.check_namespace("x").is_ok());
    }
}
