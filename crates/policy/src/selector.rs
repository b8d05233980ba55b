//! Label selector matching with Kubernetes semantics (`labels.Selector` from `metav1.LabelSelectorAsSelector`):
//! every `matchLabels` pair and every `matchExpressions` requirement must hold; an empty selector matches all.
//! `NotIn` and `DoesNotExist` match objects that lack the key, exactly as upstream.

use std::collections::BTreeMap;

use crate::model::{LabelSelector, LabelSelectorRequirement, Operator};

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| req.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

impl LabelSelectorRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement { key: key.into(), operator, values: values.iter().map(|v| v.to_string()).collect() }
    }

    fn expr(r: LabelSelectorRequirement) -> LabelSelector {
        LabelSelector { match_expressions: vec![r], ..Default::default() }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert!(LabelSelector::default().matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn match_labels_needs_every_pair() {
        let sel = LabelSelector { match_labels: labels(&[("app", "web"), ("tier", "fe")]), ..Default::default() };
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!sel.matches(&labels(&[("app", "web")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "be")])));
    }

    #[test]
    fn operator_in() {
        let sel = expr(req("env", Operator::In, &["prod", "stage"]));
        assert!(sel.matches(&labels(&[("env", "prod")])));
        assert!(sel.matches(&labels(&[("env", "stage")])));
        assert!(!sel.matches(&labels(&[("env", "dev")])));
        assert!(!sel.matches(&labels(&[])), "In needs the key");
    }

    #[test]
    fn operator_not_in_matches_missing_key() {
        let sel = expr(req("env", Operator::NotIn, &["prod"]));
        assert!(!sel.matches(&labels(&[("env", "prod")])));
        assert!(sel.matches(&labels(&[("env", "dev")])));
        assert!(sel.matches(&labels(&[])), "NotIn matches objects without the key");
    }

    #[test]
    fn operators_exists_and_does_not_exist() {
        let exists = expr(req("env", Operator::Exists, &[]));
        let absent = expr(req("env", Operator::DoesNotExist, &[]));
        assert!(exists.matches(&labels(&[("env", "")])));
        assert!(!exists.matches(&labels(&[("other", "x")])));
        assert!(absent.matches(&labels(&[("other", "x")])));
        assert!(!absent.matches(&labels(&[("env", "dev")])));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![req("env", Operator::In, &["prod"]), req("debug", Operator::DoesNotExist, &[])],
        };
        assert!(sel.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!sel.matches(&labels(&[("app", "db"), ("env", "prod")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "prod"), ("debug", "1")])));
    }
}
