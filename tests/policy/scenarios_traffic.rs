//! Scenarios on ports and protocols, egress, ipBlock, policyTypes defaulting and unions (the isolation and
//! selector scenarios, and the step types, are in `scenarios.rs`; changes over time in `scenarios_changes.rs`).
use crate::scenarios::{apply_probe, docs, np, Scenario};

/// Numeric, named and ranged ports, protocols.
pub fn ports() -> Vec<Scenario> {
    use crate::scenarios::Group::Ports;
    vec![
        apply_probe(
            "port 80/TCP only",
            Ports,
            true,
            np("x", "p80", "{podSelector: {}, ingress: [{ports: [{protocol: TCP, port: 80}]}]}"),
        ),
        apply_probe(
            "port 81/UDP only",
            Ports,
            false,
            np("x", "p81u", "{podSelector: {}, ingress: [{ports: [{protocol: UDP, port: 81}]}]}"),
        ),
        apply_probe(
            "protocol defaults to TCP",
            Ports,
            false,
            np("x", "p81", "{podSelector: {}, ingress: [{ports: [{port: 81}]}]}"),
        ),
        apply_probe(
            "named port serve-80-tcp",
            Ports,
            true,
            np("x", "named", "{podSelector: {}, ingress: [{ports: [{port: serve-80-tcp}]}]}"),
        ),
        apply_probe(
            "named UDP port serve-81-udp",
            Ports,
            false,
            np("x", "named-udp", "{podSelector: {}, ingress: [{ports: [{protocol: UDP, port: serve-81-udp}]}]}"),
        ),
        apply_probe(
            "named port resolved per destination pod (web: a=80, b=81, c=none)",
            Ports,
            true,
            np("x", "web", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}], ports: [{port: web}]}]}"),
        ),
        apply_probe(
            "named port with the wrong protocol matches nothing",
            Ports,
            false,
            np("x", "wrong", "{podSelector: {}, ingress: [{ports: [{protocol: UDP, port: serve-80-tcp}]}]}"),
        ),
        apply_probe(
            "endPort 80-81/TCP",
            Ports,
            true,
            np("x", "range", "{podSelector: {}, ingress: [{ports: [{port: 80, endPort: 81}]}]}"),
        ),
        apply_probe(
            "endPort 81-90/UDP",
            Ports,
            false,
            np("x", "range-udp", "{podSelector: {}, ingress: [{ports: [{protocol: UDP, port: 81, endPort: 90}]}]}"),
        ),
        apply_probe(
            "an SCTP-only rule allows no TCP or UDP",
            Ports,
            true,
            np("x", "sctp", "{podSelector: {}, ingress: [{ports: [{protocol: SCTP, port: 80}]}]}"),
        ),
        apply_probe(
            "protocol without port: every UDP port",
            Ports,
            false,
            np("x", "udp", "{podSelector: {}, ingress: [{ports: [{protocol: UDP}]}]}"),
        ),
        apply_probe(
            "rule without ports: every port from y",
            Ports,
            false,
            np("x", "y-any", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}"),
        ),
        apply_probe(
            "numeric and named ports in one rule",
            Ports,
            false,
            np(
                "x",
                "mixed",
                "{podSelector: {}, ingress: [{ports: [{port: 81}, {protocol: UDP, port: serve-80-udp}]}]}",
            ),
        ),
        apply_probe(
            "several numeric ports of two protocols, shared by two policies",
            Ports,
            false,
            docs(&[
                np("x", "list-a", "{podSelector: {}, ingress: [{ports: [{protocol: UDP, port: 80}, {port: 81}]}]}"),
                np(
                    "y",
                    "list-b",
                    "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81}, {protocol: UDP, port: 80}]}]}",
                ),
            ]),
        ),
        apply_probe(
            "egress to a named port resolves on the destination",
            Ports,
            true,
            np(
                "y",
                "out-web",
                "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}], ports: [{port: web}]}]}",
            ),
        ),
    ]
}

/// Egress, ipBlock, policyTypes, unions across policies and rules.
pub fn egress() -> Vec<Scenario> {
    use crate::scenarios::Group::Egress;
    vec![
        apply_probe(
            "egress to DNS-like UDP 80 in z only",
            Egress,
            true,
            np(
                "x",
                "dns",
                "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: \
                 {matchLabels: {ns: z}}}], ports: [{protocol: UDP, port: 80}]}]}",
            ),
        ),
        apply_probe(
            "egress to namespace y only",
            Egress,
            false,
            np("x", "to-y", "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}"),
        ),
        apply_probe(
            "egress to pods c anywhere on 81/TCP",
            Egress,
            false,
            np(
                "y",
                "to-c",
                "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}, podSelector: \
                 {matchLabels: {pod: c}}}], ports: [{port: 81}]}]}",
            ),
        ),
        apply_probe(
            "egress ipBlock: node2's pod subnet",
            Egress,
            true,
            np("x", "to-node2", "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: \"{net:node2}\"}}]}]}"),
        ),
        apply_probe(
            "ingress ipBlock with except: the cluster minus node1's pods",
            Egress,
            true,
            np(
                "x",
                "block",
                "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [\"{net:node1}\"]}}]}]}",
            ),
        ),
        apply_probe(
            "ingress ipBlock except one pod",
            Egress,
            false,
            np(
                "y",
                "but-one",
                "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [\"{ip:x/b}/32\"]}}]}]}",
            ),
        ),
        apply_probe(
            "egress ipBlock with except: node2's pods but one",
            Egress,
            false,
            np(
                "z",
                "out-block",
                "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: \"{net:node2}\", except: \
                 [\"{ip:x/b}/32\"]}}]}]}",
            ),
        ),
        apply_probe(
            "ipBlock and selector peers in one rule are ORed",
            Egress,
            false,
            np(
                "y",
                "mixed-peers",
                "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: \"{ip:x/a}/32\"}}, {namespaceSelector: \
                 {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: c}}}]}]}",
            ),
        ),
        apply_probe(
            "ingress ipBlock of one pod",
            Egress,
            false,
            np("z", "one", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: \"{ip:y/c}/32\"}}]}]}"),
        ),
        apply_probe(
            "ipBlock 0.0.0.0/0 allows every pod",
            Egress,
            false,
            np("x", "world", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0}}]}]}"),
        ),
        apply_probe(
            "ingress and egress are independent",
            Egress,
            true,
            np(
                "x",
                "both",
                "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress, Egress], \
                 ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}], \
                 egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}",
            ),
        ),
        apply_probe(
            "policyTypes [Egress] ignores ingress rules",
            Egress,
            false,
            np(
                "x",
                "egress-only",
                "{podSelector: {}, policyTypes: [Egress], ingress: [{from: [{podSelector: {matchLabels: \
                 {pod: nobody}}}]}], egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}}]}]}",
            ),
        ),
        apply_probe(
            "policyTypes omitted with egress rules: both directions",
            Egress,
            false,
            np("x", "implied", "{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}"),
        ),
        apply_probe(
            "policyTypes [Ingress] ignores egress rules",
            Egress,
            false,
            np(
                "x",
                "ingress-only",
                "{podSelector: {}, policyTypes: [Ingress], ingress: [{}], \
                 egress: [{to: [{podSelector: {matchLabels: {pod: nobody}}}]}]}",
            ),
        ),
        apply_probe("empty egress list does not isolate egress", Egress, false, np("x", "empty-egress", "{podSelector: {}, egress: []}")),
        apply_probe(
            "two policies on one pod are unioned",
            Egress,
            true,
            docs(&[
                np(
                    "x",
                    "from-y-80",
                    "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: \
                     {matchLabels: {ns: y}}}], ports: [{port: 80}]}]}",
                ),
                np(
                    "x",
                    "from-z-81u",
                    "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: \
                     {matchLabels: {ns: z}}}], ports: [{protocol: UDP, port: 81}]}]}",
                ),
            ]),
        ),
        apply_probe(
            "two rules in one policy are unioned",
            Egress,
            false,
            np(
                "x",
                "two-rules",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: \
                 [{port: 80}]}, {from: [{podSelector: {matchLabels: {pod: c}}}]}]}",
            ),
        ),
        apply_probe(
            "source egress and destination ingress must both allow",
            Egress,
            true,
            docs(&[
                np(
                    "x",
                    "out-to-y",
                    "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
                ),
                np(
                    "y",
                    "in-from-x-80",
                    "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}], ports: [{port: 80}]}]}",
                ),
            ]),
        ),
    ]
}
