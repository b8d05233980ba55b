//! The scenarios as data: each is a list of steps (apply YAML, delete a policy, relabel a namespace, probe the
//! full matrix). Expected results are never written here — the reference model computes them from the same YAML —
//! so a scenario only says *what* to apply, and covering a new semantic is one more entry.
//!
//! The cluster: namespaces x (team=red), y (team=blue), z, all labelled ns=<name>; pods a (tier=frontend),
//! b (tier=backend), c, labelled pod=<name>, alternating over node1 and node2. Placeholders: `{ip:y/b}` is a pod's
//! address, `{net:node1}` a node's pod subnet, `{ip6:..}` / `{net6:..}` the same in IPv6 (dual-stack scenarios
//! only); quote them, braces are YAML flow syntax.

/// When the probe after a step must match: at once (the step has a wait handle), or eventually.
pub enum Step {
    Apply(String),
    /// `namespace/name`.
    Delete(&'static str),
    /// `weftctl policy wait`, then the full matrix must match the model.
    Probe,
    /// Relabel a namespace (a change `policy wait` cannot see), then probe until the matrix matches.
    Relabel(&'static str, &'static [(&'static str, &'static str)]),
}

pub struct Scenario {
    pub name: &'static str,
    pub group: Group,
    /// Part of the smaller set also run on host-gw.
    pub host_gw: bool,
    pub steps: Vec<Step>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Isolation,
    Selectors,
    Ports,
    Egress,
    Updates,
    /// Only meaningful with IPv6 addresses: run in the dual-stack lab alone.
    DualStack,
}

/// One NetworkPolicy document; `spec` is YAML flow syntax.
pub fn np(ns: &str, name: &str, spec: &str) -> String {
    format!("kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n")
}

pub fn docs(d: &[String]) -> String {
    d.join("---\n")
}

pub fn apply_probe(name: &'static str, group: Group, host_gw: bool, yaml: String) -> Scenario {
    Scenario { name, group, host_gw, steps: vec![Step::Apply(yaml), Step::Probe] }
}

pub const DENY_IN: &str = "{podSelector: {}}";
pub const DENY_BOTH: &str = "{podSelector: {}, policyTypes: [Ingress, Egress]}";

pub fn all() -> Vec<Scenario> {
    use Group::*;
    let mut v = vec![
        Scenario { name: "no policy: nothing is isolated", group: Isolation, host_gw: true, steps: vec![Step::Probe] },
        apply_probe("deny all ingress in x", Isolation, true, np("x", "deny", DENY_IN)),
        apply_probe(
            "deny all ingress everywhere",
            Isolation,
            false,
            docs(&[np("x", "deny", DENY_IN), np("y", "deny", DENY_IN), np("z", "deny", DENY_IN)]),
        ),
        apply_probe(
            "deny all egress in x",
            Isolation,
            true,
            np("x", "deny", "{podSelector: {}, policyTypes: [Egress]}"),
        ),
        apply_probe("deny all ingress and egress in x", Isolation, false, np("x", "deny", DENY_BOTH)),
        apply_probe("allow all ingress in x", Isolation, false, np("x", "open", "{podSelector: {}, ingress: [{}]}")),
        apply_probe(
            "deny all and allow all are unioned: allowed",
            Isolation,
            false,
            docs(&[np("x", "deny", DENY_IN), np("x", "open", "{podSelector: {}, ingress: [{}]}")]),
        ),
        apply_probe(
            "allow ingress from the own namespace",
            Isolation,
            true,
            np("x", "same-ns", "{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}"),
        ),
        apply_probe(
            "policy selecting no pod changes nothing",
            Isolation,
            false,
            np("x", "nobody", "{podSelector: {matchLabels: {pod: nobody}}, policyTypes: [Ingress, Egress]}"),
        ),
        apply_probe(
            "deny everything everywhere except x/a to x/b on 80/TCP",
            Isolation,
            true,
            docs(&[
                np("x", "deny", DENY_BOTH),
                np("y", "deny", DENY_BOTH),
                np("z", "deny", DENY_BOTH),
                np(
                    "x",
                    "a-out",
                    "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], \
                     egress: [{to: [{podSelector: {matchLabels: {pod: b}}}]}]}",
                ),
                np(
                    "x",
                    "b-in",
                    "{podSelector: {matchLabels: {pod: b}}, \
                     ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}], ports: [{port: 80}]}]}",
                ),
            ]),
        ),
        // Selectors.
        apply_probe(
            "allow ingress from namespace y (matchLabels)",
            Selectors,
            true,
            np("x", "from-y", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}"),
        ),
        apply_probe(
            "allow from every namespace (empty namespaceSelector)",
            Selectors,
            false,
            np("x", "all-ns", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"),
        ),
        apply_probe(
            "isolate x/a only, allow from x/b",
            Selectors,
            false,
            np(
                "x",
                "a-from-b",
                "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}",
            ),
        ),
        apply_probe(
            "namespaceSelector AND podSelector in one peer",
            Selectors,
            true,
            np(
                "x",
                "and",
                "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: \
                 {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]}",
            ),
        ),
        apply_probe(
            "namespaceSelector OR podSelector as two peers",
            Selectors,
            false,
            np(
                "x",
                "or",
                "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: \
                 {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]}]}",
            ),
        ),
        apply_probe(
            "namespaceSelector NotIn",
            Selectors,
            false,
            np(
                "x",
                "notin",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: \
                 {matchExpressions: [{key: ns, operator: NotIn, values: [y]}]}}]}]}",
            ),
        ),
        apply_probe(
            "target podSelector In",
            Selectors,
            false,
            np("x", "in", "{podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}}"),
        ),
        apply_probe(
            "peers with label Exists in every namespace",
            Selectors,
            false,
            np(
                "y",
                "exists",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: \
                 {matchExpressions: [{key: tier, operator: Exists}]}}]}]}",
            ),
        ),
        apply_probe(
            "peers with label DoesNotExist in every namespace",
            Selectors,
            true,
            np(
                "y",
                "absent",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: \
                 {matchExpressions: [{key: tier, operator: DoesNotExist}]}}]}]}",
            ),
        ),
        apply_probe(
            "namespace label Exists",
            Selectors,
            false,
            np(
                "z",
                "team",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: \
                 {matchExpressions: [{key: team, operator: Exists}]}}]}]}",
            ),
        ),
        apply_probe(
            "namespace label DoesNotExist",
            Selectors,
            false,
            np(
                "x",
                "no-team",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: \
                 {matchExpressions: [{key: team, operator: DoesNotExist}]}}]}]}",
            ),
        ),
        apply_probe(
            "namespace by its implied kubernetes.io/metadata.name label",
            Selectors,
            false,
            np(
                "x",
                "by-name",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: \
                 {matchLabels: {kubernetes.io/metadata.name: z}}}]}]}",
            ),
        ),
        apply_probe(
            "matchLabels and several matchExpressions are ANDed",
            Selectors,
            false,
            np(
                "x",
                "anded",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}, \
                 matchExpressions: [{key: ns, operator: In, values: [x, y]}]}, podSelector: {matchExpressions: \
                 [{key: tier, operator: NotIn, values: [frontend]}, {key: pod, operator: NotIn, values: [b]}]}}]}]}",
            ),
        ),
        apply_probe(
            "all pods named a in every namespace",
            Selectors,
            false,
            np(
                "z",
                "all-a",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}]}]}",
            ),
        ),
    ];
    v.extend(crate::scenarios_traffic::ports());
    v.extend(crate::scenarios_traffic::egress());
    v.extend(crate::scenarios_changes::updates());
    v.extend(crate::scenarios_changes::dual_stack());
    v
}
