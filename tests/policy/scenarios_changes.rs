//! Scenarios over time — policies updated and deleted, a namespace relabelled — and the IPv6-only ones run in
//! the dual-stack lab.
use crate::scenarios::{apply_probe, docs, np, Scenario, Step, DENY_BOTH, DENY_IN};

/// Policy changes and deletions taking effect on the live dataplane.
pub fn updates() -> Vec<Scenario> {
    use crate::scenarios::Group::Updates;
    let from = |ns: &str| {
        np(
            "x",
            "from",
            &format!(
                "{{podSelector: {{}}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: {ns}}}}}}}]}}]}}"
            ),
        )
    };
    vec![
        Scenario {
            name: "update: the allowed namespace changes from y to z",
            group: Updates,
            host_gw: true,
            steps: vec![Step::Apply(from("y")), Step::Probe, Step::Apply(from("z")), Step::Probe],
        },
        Scenario {
            name: "update: the selected pod moves from a to b",
            group: Updates,
            host_gw: false,
            steps: vec![
                Step::Apply(np("y", "sel", "{podSelector: {matchLabels: {pod: a}}}")),
                Step::Probe,
                Step::Apply(np("y", "sel", "{podSelector: {matchLabels: {pod: b}}}")),
                Step::Probe,
            ],
        },
        Scenario {
            name: "update: ports narrowed from all to 80/TCP, then widened to a range",
            group: Updates,
            host_gw: false,
            steps: vec![
                Step::Apply(np("z", "ports", "{podSelector: {}, ingress: [{}]}")),
                Step::Probe,
                Step::Apply(np("z", "ports", "{podSelector: {}, ingress: [{ports: [{port: 80}]}]}")),
                Step::Probe,
                Step::Apply(np(
                    "z",
                    "ports",
                    "{podSelector: {}, ingress: [{ports: [{port: 80, endPort: 81}, {protocol: UDP}]}]}",
                )),
                Step::Probe,
            ],
        },
        Scenario {
            name: "deletion: deny all, then deleted",
            group: Updates,
            host_gw: true,
            steps: vec![Step::Apply(np("x", "deny", DENY_BOTH)), Step::Probe, Step::Delete("x/deny"), Step::Probe],
        },
        Scenario {
            name: "deletion: removing the allowing policy of two leaves the deny",
            group: Updates,
            host_gw: false,
            steps: vec![
                Step::Apply(docs(&[np("x", "deny", DENY_IN), from("y")])),
                Step::Probe,
                Step::Delete("x/from"),
                Step::Probe,
                Step::Delete("x/deny"),
                Step::Probe,
            ],
        },
        Scenario {
            name: "update: egress deny all becomes allow all",
            group: Updates,
            host_gw: false,
            steps: vec![
                Step::Apply(np("y", "out", "{podSelector: {}, policyTypes: [Egress]}")),
                Step::Probe,
                Step::Apply(np("y", "out", "{podSelector: {}, policyTypes: [Egress], egress: [{}]}")),
                Step::Probe,
            ],
        },
        Scenario {
            name: "deletion: two policies sharing a peer selector, one deleted",
            group: Updates,
            host_gw: false,
            steps: vec![
                Step::Apply(docs(&[
                    np(
                        "x",
                        "y-80",
                        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: \
                         [{port: 80}]}]}",
                    ),
                    np(
                        "x",
                        "y-81",
                        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: \
                         [{port: 81}]}]}",
                    ),
                ])),
                Step::Probe,
                Step::Delete("x/y-80"),
                Step::Probe,
            ],
        },
        Scenario {
            name: "namespace relabelled: the namespaceSelector follows",
            group: Updates,
            host_gw: false,
            steps: vec![
                Step::Apply(np(
                    "x",
                    "blue",
                    "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]}",
                )),
                Step::Probe,
                Step::Relabel("z", &[("ns", "z"), ("team", "blue")]),
                Step::Relabel("z", &[("ns", "z")]),
            ],
        },
    ]
}

/// ipBlock and families: IPv4 blocks never match IPv6 traffic and the reverse; IPv6 blocks with except.
pub fn dual_stack() -> Vec<Scenario> {
    use crate::scenarios::Group::DualStack;
    vec![
        apply_probe(
            "IPv4 ipBlock does not admit IPv6 traffic",
            DualStack,
            false,
            np("x", "v4-only", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16}}]}]}"),
        ),
        apply_probe(
            "IPv6 egress ipBlock: node2's IPv6 pod subnet",
            DualStack,
            false,
            np("y", "to-node2-v6", "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: \"{net6:node2}\"}}]}]}"),
        ),
        apply_probe(
            "IPv6 ingress ipBlock with except one pod, beside an IPv4 block",
            DualStack,
            false,
            np(
                "z",
                "v6-but-one",
                "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: \"{net6:node1}\", except: [\"{ip6:x/a}/128\"]}}, \
                 {ipBlock: {cidr: \"{ip:y/a}/32\"}}]}]}",
            ),
        ),
    ]
}
