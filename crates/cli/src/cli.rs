//! The command line, as clap types: parsing produces one of these enums before anything acts.
//!
//! The lab's name is one global flag, `--lab NAME` (or `WEFT_LAB`), accepted before or after any subcommand,
//! so `lab`, `policy` and `status` spell it the same way. `--name` stays as a hidden alias: scripts written for
//! `lab up --name` keep working.
use crate::store::StoreArgs;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "weftctl", version, about = "weft: lab clusters in namespaces, node status, policies")]
pub struct Cli {
    /// The lab to act on (lab, policy and status commands).
    #[arg(long, global = true, env = "WEFT_LAB", default_value = "lab", value_name = "NAME", alias = "name")]
    pub lab: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// A whole weft cluster in network namespaces on this machine.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// NetworkPolicy in the store: apply, delete, list, explain, wait.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Tenant networks in the store: create, list (with each node's status), delete.
    Network {
        #[command(subcommand)]
        cmd: NetworkCmd,
    },
    /// What this node's agent holds and programmed.
    Status {
        /// The agent's --state-dir.
        #[arg(long, default_value = "/run/weft")]
        state_dir: PathBuf,
        /// A lab node instead (its state dir): `weftctl status --node node1 [--lab NAME]`.
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The WireGuard backend: key rotation.
    Wireguard {
        #[command(subcommand)]
        cmd: WireguardCmd,
    },
}

#[derive(Subcommand)]
pub enum WireguardCmd {
    /// New key pairs for running nodes; established connections keep flowing. Asks each agent through its
    /// state directory and waits until it runs the new key (published in its lease at once).
    RotateKey {
        /// An agent's --state-dir (repeat for several; default /run/weft).
        #[arg(long = "state-dir", value_name = "DIR")]
        state_dirs: Vec<PathBuf>,
        /// A lab node instead (repeat): `--node node1 [--lab NAME]`.
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
        /// Every node of the lab.
        #[arg(long, conflicts_with_all = ["nodes", "state_dirs"])]
        all: bool,
        /// How long to wait for the agents (each serves the request on its next pass).
        #[arg(long, default_value = "60")]
        timeout_secs: u64,
    },
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Apply Kubernetes NetworkPolicy YAML (several documents per file; `-` for stdin).
    Apply {
        #[arg(short = 'f', long)]
        file: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete policies by name (`NAME` in -n NAMESPACE, or NAMESPACE/NAME), or --all.
    Delete {
        names: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List policies.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Would FROM reach TO on PORT? Which policy and rule decide?
    Explain {
        /// NAMESPACE/POD, a POD name unique across namespaces, or an IP address.
        #[arg(long)]
        from: String,
        /// NAMESPACE/POD, a POD name unique across namespaces, or an IP address.
        #[arg(long)]
        to: String,
        /// PORT[/TCP|UDP|SCTP] (TCP when omitted).
        #[arg(long)]
        port: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Wait until every lab node enforces exactly the store's policies.
    Wait {
        #[arg(long, default_value = "30")]
        timeout_secs: u64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create a tenant network: an isolated overlay with its own VNI for the namespaces it serves.
    Create {
        /// The network's name (a DNS label of at most 32 characters; not "default").
        name: String,
        /// IPv4 CIDR of the network, e.g. 10.50.0.0/16 (may overlap other networks).
        #[arg(long)]
        cidr: String,
        /// IPv6 CIDR, for dual-stack pods, e.g. fd00:50::/48.
        #[arg(long)]
        cidr6: Option<String>,
        /// Prefix length of each node's IPv4 subnet (default 24).
        #[arg(long)]
        subnet_len: Option<u8>,
        /// Prefix length of each node's IPv6 subnet (default 80).
        #[arg(long)]
        subnet_len6: Option<u8>,
        /// VXLAN network identifier, 1..=16777215, unused by the default network and every other network.
        #[arg(long)]
        vni: u32,
        /// A namespace the network serves (repeat for more).
        #[arg(long = "namespace", value_name = "NS")]
        namespaces: Vec<String>,
        /// Serve the namespaces with this label, key=value (repeat: all must match).
        #[arg(long = "selector", value_name = "KEY=VALUE")]
        selectors: Vec<String>,
        /// Do not masquerade the network's traffic leaving the cluster.
        #[arg(long)]
        no_masquerade: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List networks with each node's status (ready, subnet, addresses used/capacity, reason).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a network (refused while a node reports addresses in use or pods exist in its namespaces).
    Delete {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LabelKind {
    /// A namespace: `lab label ns x team=red`.
    #[value(alias = "namespace")]
    Ns,
    /// A pod: `lab label pod x/a role=db`.
    Pod,
}

#[derive(Subcommand)]
pub enum LabCmd {
    /// Build the lab, show nodes and the connectivity matrix, leave it running.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 2)]
        pods_per_node: usize,
        /// vxlan or host-gw.
        #[arg(long, default_value = "vxlan")]
        backend: String,
        /// embedded, etcd, or kube (a fake Kubernetes API server).
        #[arg(long, default_value = "embedded")]
        store: String,
        /// l2 (one segment), routed (a segment per node) or routed6 (the same over IPv6 only; embedded store,
        /// not host-gw); default: routed for vxlan and wireguard, l2 for host-gw.
        #[arg(long)]
        underlay: Option<String>,
        /// Dual-stack pods (IPv6 pod subnets too).
        #[arg(long)]
        ipv6: bool,
        /// Agents' lease TTL (a node that dies without goodbye disappears after it).
        #[arg(long, default_value = "10s")]
        lease_ttl: String,
        /// Where weft and weftd are (default: next to weftctl).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// A tenant network, NAME:CIDR:VNI[:ns1,ns2] (repeat for more): its namespaces get pods too, as
        /// "default" does (with --ipv6 it gets an IPv6 CIDR derived from the IPv4 one).
        #[arg(long = "network", value_name = "NAME:CIDR:VNI[:NS,..]")]
        networks: Vec<String>,
    },
    /// Tenant networks in the lab's store: create, list, delete.
    Network {
        #[command(subcommand)]
        cmd: LabNetworkCmd,
    },
    /// Remove the lab (also after a crash).
    Down,
    /// Nodes, agents and a fresh connectivity matrix (policy denials shown as deny(P), breakage as FAIL).
    Status,
    /// Restart a node's agent (SIGTERM, start again): the kernel state stays, traffic keeps flowing.
    Restart {
        node: String,
        /// Stop it without starting it again (SIGKILL: no goodbye, its lease lapses after the TTL).
        #[arg(long)]
        kill: bool,
    },
    /// Stop or start the lab's etcd (store outage drills).
    Etcd {
        /// stop or start
        action: String,
    },
    /// Add a pod (through the CNI plugin) with labels and named ports, registered for policy.
    PodAdd {
        /// Node to run the pod on (node1, node2, …).
        #[arg(long)]
        node: String,
        /// Namespace of the pod (default: "default"; or give --pod NAMESPACE/POD).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Pod name, or NAMESPACE/POD (default: NODE-podN in "default").
        #[arg(long)]
        pod: Option<String>,
        /// A pod label, key=value (repeat for more), e.g. --label app=web.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A named container port, name=port[/PROTO] (repeat), e.g. --port http=80/TCP; names as in Kubernetes
        /// (at most 15 lowercase letters, digits, '-').
        #[arg(long = "port", value_name = "NAME=PORT/PROTO")]
        ports: Vec<String>,
        /// Register the pod without its addresses, as a Pod object is before the kubelet reports the sandbox:
        /// the agents then take them from the plugin's IPAM records on the pod's node.
        #[arg(long)]
        pending: bool,
    },
    /// Delete a pod (CNI DEL, unregistered).
    PodDel {
        /// Namespace of the pod (or give NAMESPACE/POD).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// NAMESPACE/POD, or a POD name unique across namespaces.
        pod: String,
    },
    /// Create a namespace with labels (an existing one is refused: change labels with `lab label ns`).
    NsAdd {
        /// Namespace name (a DNS label: lowercase letters, digits and '-').
        namespace: String,
        /// A namespace label, key=value (repeat for more), e.g. --label team=red.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Put the namespace on this tenant network (added to the network's namespace list).
        #[arg(long)]
        network: Option<String>,
    },
    /// Change labels in place, as `kubectl label`: `lab label pod x/a k=v k2-`, `lab label ns x k=v`.
    ///
    /// Only the store object changes: the pod keeps its address and processes, and every agent's policy
    /// follows the new labels.
    Label {
        /// ns or pod.
        kind: LabelKind,
        /// The namespace, or NAMESPACE/POD (a POD name unique across namespaces also works).
        target: String,
        /// k=v adds a label (or changes it, with --overwrite); k- removes it.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        changes: Vec<String>,
        /// Allow changing the value of a label that is already set.
        #[arg(long)]
        overwrite: bool,
    },
    /// Run a command in a pod's (or node's) namespace: `weftctl lab exec x/a -- ping 10.244.2.2`.
    Exec {
        /// NAMESPACE/POD, a POD name unique across namespaces, or a node (node1).
        target: String,
        #[arg(last = true)]
        cmd: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum LabNetworkCmd {
    /// Create a tenant network (refused: a taken name or VNI, a namespace already on a network or with pods).
    Create {
        /// DNS label, at most 32 characters, not "default".
        name: String,
        /// IPv4 CIDR of the network (may overlap another network's).
        #[arg(long)]
        cidr: String,
        #[arg(long)]
        cidr6: Option<String>,
        /// Prefix length of each node's subnet (default 24).
        #[arg(long)]
        subnet_len: Option<u8>,
        /// Prefix length of each node's IPv6 subnet (default 80).
        #[arg(long)]
        subnet_len6: Option<u8>,
        /// VXLAN network identifier (default: the lowest free one from 100).
        #[arg(long)]
        vni: Option<u32>,
        /// A namespace the network serves (repeat for more).
        #[arg(long = "namespace", short = 'n', value_name = "NS")]
        namespaces: Vec<String>,
        /// Serve namespaces with these labels too, key=value (repeat: all must match).
        #[arg(long = "selector", value_name = "KEY=VALUE")]
        selector: Vec<String>,
        /// Do not masquerade the network's traffic leaving the cluster.
        #[arg(long)]
        no_masquerade: bool,
        /// Return once written, without waiting for every node to serve it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Networks, their namespaces and lab pods, and each node's status.
    List,
    /// Delete a network (refused while pods hold addresses in it).
    Delete {
        name: String,
        /// Return once deleted, without waiting for every node to let go of it.
        #[arg(long)]
        no_wait: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("weftctl").chain(args.iter().copied())).expect("parses")
    }

    #[test]
    fn lab_is_one_flag_everywhere() {
        for args in [
            &["lab", "status", "--lab", "np"][..],
            &["--lab", "np", "lab", "status"],
            &["lab", "ns-add", "--lab", "np", "x"],
            &["policy", "list", "--lab", "np"],
            &["policy", "list", "--name", "np"],
            &["network", "list", "--lab", "np"],
            &["lab", "up", "--name", "np"],
            &["status", "--node", "node1", "--lab", "np"],
        ] {
            assert_eq!(parse(args).lab, "np", "{args:?}");
        }
        assert_eq!(parse(&["lab", "down"]).lab, "lab");
    }

    #[test]
    fn network_create_takes_repeated_namespaces_and_selectors() {
        let c = parse(&[
            "network",
            "create",
            "blue",
            "--cidr",
            "10.50.0.0/16",
            "--vni",
            "100",
            "--namespace",
            "a",
            "--namespace",
            "b",
            "--selector",
            "tenant=blue",
            "--no-masquerade",
            "--subnet-len6",
            "96",
        ]);
        match c.cmd {
            Cmd::Network {
                cmd: NetworkCmd::Create { name, namespaces, selectors, no_masquerade, subnet_len6, .. },
            } => {
                assert_eq!((name.as_str(), no_masquerade, subnet_len6), ("blue", true, Some(96)));
                assert_eq!(
                    (namespaces, selectors),
                    (vec!["a".to_string(), "b".into()], vec!["tenant=blue".to_string()])
                );
            }
            _ => panic!("not network create"),
        }
        assert!(Cli::try_parse_from(["weftctl", "network", "create", "x", "--cidr", "10.0.0.0/8"]).is_err(), "--vni");
    }

    #[test]
    fn rotate_key_takes_nodes_state_dirs_or_all() {
        let c = parse(&["wireguard", "rotate-key", "--node", "node1", "--node", "node2", "--lab", "w1"]);
        match c.cmd {
            Cmd::Wireguard { cmd: WireguardCmd::RotateKey { nodes, state_dirs, all, .. } } => {
                assert_eq!((nodes, state_dirs.len(), all), (vec!["node1".to_string(), "node2".into()], 0, false));
            }
            _ => panic!("not wireguard rotate-key"),
        }
        assert!(Cli::try_parse_from(["weftctl", "wireguard", "rotate-key", "--all", "--node", "node1"]).is_err());
    }

    #[test]
    fn label_takes_removals_and_overwrite() {
        let c = parse(&["lab", "label", "pod", "x/a", "app=web", "tier-", "--overwrite"]);
        match c.cmd {
            Cmd::Lab { cmd: LabCmd::Label { kind, target, changes, overwrite } } => {
                assert_eq!((kind, target.as_str(), overwrite), (LabelKind::Pod, "x/a", true));
                assert_eq!(changes, ["app=web", "tier-"]);
            }
            _ => panic!("not lab label"),
        }
        assert!(Cli::try_parse_from(["weftctl", "lab", "label", "ns", "x"]).is_err(), "no change given");
    }

    #[test]
    fn networks_on_up_and_as_their_own_commands() {
        let c = parse(&["lab", "up", "--network", "blue:10.50.0.0/16:100:a,b", "--network", "red:10.50.0.0/16:101"]);
        match c.cmd {
            Cmd::Lab { cmd: LabCmd::Up { networks, .. } } => assert_eq!(networks.len(), 2),
            _ => panic!("not lab up"),
        }
        let c = parse(&["lab", "network", "create", "blue", "--cidr", "10.50.0.0/16", "-n", "a", "--namespace", "b"]);
        match c.cmd {
            Cmd::Lab { cmd: LabCmd::Network { cmd: LabNetworkCmd::Create { name, namespaces, vni, .. } } } => {
                assert_eq!((name.as_str(), namespaces.len(), vni), ("blue", 2, None));
            }
            _ => panic!("not lab network create"),
        }
        assert!(Cli::try_parse_from(["weftctl", "lab", "network", "create", "blue"]).is_err(), "--cidr is required");
        let c = parse(&["lab", "ns-add", "x", "--network", "blue", "--lab", "np"]);
        assert!(matches!(c.cmd, Cmd::Lab { cmd: LabCmd::NsAdd { network: Some(_), .. } }));
    }
}
