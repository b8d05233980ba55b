//! Naming a pod on the command line: `NAMESPACE/POD` always works; a bare `POD` only when exactly one namespace
//! has a pod of that name. Silently picking one of `x/a`, `y/a`, `z/a` would run a command or a policy question
//! against the wrong pod, so an ambiguous name is an error that lists the candidates.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    NotFound { target: String },
    Ambiguous { target: String, candidates: Vec<String> },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound { target } => write!(f, "no pod {target:?}"),
            ResolveError::Ambiguous { target, candidates } => {
                write!(f, "pod name {target:?} is ambiguous: it is {}; say NAMESPACE/POD", candidates.join(", "))
            }
        }
    }
}

impl std::error::Error for ResolveError {}

/// Index of the pod `target` names among `pods` (`(namespace, name)` pairs).
pub fn resolve<'a>(pods: impl IntoIterator<Item = (&'a str, &'a str)>, target: &str) -> Result<usize, ResolveError> {
    let pods: Vec<(&str, &str)> = pods.into_iter().collect();
    if let Some((ns, name)) = target.split_once('/') {
        return pods
            .iter()
            .position(|&(n, p)| n == ns && p == name)
            .ok_or_else(|| ResolveError::NotFound { target: target.to_string() });
    }
    let hits: Vec<usize> = pods.iter().enumerate().filter(|(_, &(_, p))| p == target).map(|(i, _)| i).collect();
    match hits.as_slice() {
        [] => Err(ResolveError::NotFound { target: target.to_string() }),
        [i] => Ok(*i),
        many => {
            let mut candidates: Vec<String> = many.iter().map(|&i| format!("{}/{}", pods[i].0, pods[i].1)).collect();
            candidates.sort();
            Err(ResolveError::Ambiguous { target: target.to_string(), candidates })
        }
    }
}

/// `NAMESPACE/POD`, or `POD` with `-n NAMESPACE`, or a bare `POD` (namespace `None`: resolve it).
pub fn split(namespace: Option<&str>, target: &str) -> Result<(Option<String>, String), String> {
    match (namespace, target.split_once('/')) {
        (Some(_), Some(_)) => Err(format!("give either -n NAMESPACE or NAMESPACE/POD, not both ({target:?})")),
        (Some(ns), None) => Ok((Some(ns.to_string()), target.to_string())),
        (None, Some((ns, p))) => Ok((Some(ns.to_string()), p.to_string())),
        (None, None) => Ok((None, target.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: [(&str, &str); 5] = [("x", "a"), ("y", "a"), ("z", "a"), ("x", "b"), ("default", "web")];

    #[test]
    fn namespace_slash_pod_is_exact() {
        assert_eq!(resolve(PODS, "y/a"), Ok(1));
        assert_eq!(resolve(PODS, "x/b"), Ok(3));
        assert_eq!(resolve(PODS, "y/b"), Err(ResolveError::NotFound { target: "y/b".into() }));
    }

    #[test]
    fn bare_name_only_when_unambiguous() {
        assert_eq!(resolve(PODS, "b"), Ok(3));
        assert_eq!(resolve(PODS, "web"), Ok(4));
        let e = resolve(PODS, "a").unwrap_err();
        assert_eq!(
            e,
            ResolveError::Ambiguous { target: "a".into(), candidates: vec!["x/a".into(), "y/a".into(), "z/a".into()] }
        );
        assert!(e.to_string().contains("x/a, y/a, z/a"), "{e}");
        assert!(matches!(resolve(PODS, "c"), Err(ResolveError::NotFound { .. })));
    }

    #[test]
    fn split_takes_either_form() {
        assert_eq!(split(None, "x/a"), Ok((Some("x".into()), "a".into())));
        assert_eq!(split(Some("x"), "a"), Ok((Some("x".into()), "a".into())));
        assert_eq!(split(None, "a"), Ok((None, "a".into())));
        assert!(split(Some("x"), "y/a").is_err());
    }
}
