//! `weftctl`: thin entry point; each command lives in its own module.
mod lab;
mod policy;
mod sh;
mod status;
mod store;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "weftctl", version, about = "weft: lab clusters in namespaces, node status, policies")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    /// What this node's agent holds and programmed.
    Status {
        /// The agent's --state-dir.
        #[arg(long, default_value = "/run/weft")]
        state_dir: PathBuf,
        /// A lab node instead (its state dir): `weftctl status --node node1 [--lab NAME]`.
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value = "lab")]
        lab: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Apply Kubernetes NetworkPolicy YAML (several documents per file; `-` for stdin).
    Apply {
        #[arg(short = 'f', long)]
        file: String,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Delete policies by name (`NAME` in -n NAMESPACE, or NAMESPACE/NAME), or --all.
    Delete {
        names: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// List policies.
    List {
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Would FROM reach TO on PORT? Which policy and rule decide? (FROM/TO: NAMESPACE/POD, POD, or an IP)
    Explain {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// PORT[/TCP|UDP|SCTP]
        #[arg(long)]
        port: String,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Wait until every lab node enforces exactly the store's policies.
    Wait {
        #[arg(long, default_value = "30")]
        timeout_secs: u64,
        #[command(flatten)]
        store: store::StoreArgs,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the lab, show nodes and the connectivity matrix, leave it running.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 2)]
        pods_per_node: usize,
        /// vxlan or host-gw.
        #[arg(long, default_value = "vxlan")]
        backend: String,
        /// embedded or etcd.
        #[arg(long, default_value = "embedded")]
        store: String,
        /// l2 (one segment) or routed (a segment per node); default: routed for vxlan, l2 for host-gw.
        #[arg(long)]
        underlay: Option<String>,
        /// Dual-stack pods (IPv6 pod subnets too).
        #[arg(long)]
        ipv6: bool,
        #[arg(long, default_value = "10s")]
        lease_ttl: String,
        #[arg(long, default_value = "lab")]
        name: String,
        /// Where weft and weftd are (default: next to weftctl).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Remove the lab (also after a crash).
    Down {
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Nodes, agents and a fresh connectivity matrix.
    Status {
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Restart a node's agent (SIGTERM, start again): the kernel state stays, traffic keeps flowing.
    Restart {
        #[arg(long, default_value = "lab")]
        name: String,
        node: String,
        /// Stop it without starting it again (SIGKILL: no goodbye, its lease lapses after the TTL).
        #[arg(long)]
        kill: bool,
    },
    /// Stop or start the lab's etcd (store outage drills).
    Etcd {
        #[arg(long, default_value = "lab")]
        name: String,
        /// stop or start
        action: String,
    },
    /// Add a pod (through the CNI plugin) with labels and named ports, registered for policy.
    PodAdd {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(long)]
        node: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Pod name (default: NODE-podN).
        #[arg(long)]
        pod: Option<String>,
        /// key=value (repeat).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// name=port/PROTO (repeat), e.g. http=80/TCP.
        #[arg(long = "port")]
        ports: Vec<String>,
    },
    /// Delete a pod (CNI DEL, unregistered).
    PodDel {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        pod: String,
    },
    /// Create or relabel a namespace.
    NsAdd {
        #[arg(long, default_value = "lab")]
        name: String,
        namespace: String,
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Run a command in a pod's (or node's) namespace: `weftctl lab exec node1-pod1 -- ping 10.244.2.2`.
    Exec {
        #[arg(long, default_value = "lab")]
        name: String,
        target: String,
        #[arg(last = true)]
        cmd: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Status { state_dir, node, lab, json } => match node {
            Some(n) => status::show(&lab::state::lab_dir(&lab).join(n), json),
            None => status::show(&state_dir, json),
        },
        Cmd::Policy { cmd } => match cmd {
            PolicyCmd::Apply { file, store } => policy::apply(&store, &file),
            PolicyCmd::Delete { names, namespace, all, store } => {
                policy::delete(&store, namespace.as_deref(), &names, all)
            }
            PolicyCmd::List { store } => policy::list(&store),
            PolicyCmd::Explain { from, to, port, store } => {
                let allowed = policy::explain_cmd(&store, &from, &to, &port)?;
                std::process::exit(if allowed { 0 } else { 1 });
            }
            PolicyCmd::Wait { timeout_secs, store } => {
                policy::wait(&store, std::time::Duration::from_secs(timeout_secs))
            }
        },
        Cmd::Lab { cmd } => match cmd {
            LabCmd::Up { nodes, pods_per_node, backend, store, underlay, ipv6, lease_ttl, name, bin_dir } => {
                let bin_dir = match bin_dir {
                    Some(d) => d,
                    None => std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default(),
                };
                let o =
                    lab::UpOptions { name, nodes, pods_per_node, backend, store, underlay, ipv6, lease_ttl, bin_dir };
                let l = lab::up(&o)?;
                lab::print_nodes(&l);
                let fails = lab::print_matrix(&l);
                println!("lab {:?} is up. Try: weftctl lab exec node1-pod1 -- ping -c3 <ip>; weftctl lab down", l.name);
                if fails > 0 {
                    std::process::exit(3);
                }
                Ok(())
            }
            LabCmd::Down { name } => lab::down(&name),
            LabCmd::Restart { name, node, kill } => lab::restart(&name, &node, kill),
            LabCmd::Etcd { name, action } => lab::etcd(&name, &action),
            LabCmd::Status { name } => {
                let fails = lab::status(&name)?;
                std::process::exit(i32::from(fails > 0) * 3);
            }
            LabCmd::PodAdd { name, node, namespace, pod, labels, ports } => {
                let new = lab::workloads::NewPod {
                    node,
                    namespace,
                    name: pod,
                    labels: lab::workloads::labels(&labels)?,
                    ports: lab::workloads::ports(&ports)?,
                };
                let p = lab::workloads::add_pod(&name, new)?;
                println!("pod {}/{} {} {}", p.namespace, p.name, p.ip.unwrap_or_default(), p.ns);
                Ok(())
            }
            LabCmd::PodDel { name, namespace, pod } => lab::workloads::del_pod(&name, &namespace, &pod),
            LabCmd::NsAdd { name, namespace, labels } => {
                let l = lab::state::LabState::load(&name)?;
                lab::workloads::add_namespace(&l, &namespace, lab::workloads::labels(&labels)?)
            }
            LabCmd::Exec { name, target, cmd } => std::process::exit(lab::exec(&name, &target, &cmd)?),
        },
    }
}
