//! `weftctl`: thin entry point; the command line is in `cli.rs`, each command lives in its own module.
mod cli;
mod lab;
mod labels;
mod names;
mod network;
mod policy;
mod rotate;
mod sh;
mod status;
mod store;
mod target;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Cmd, LabCmd, LabNetworkCmd, LabelKind, NetworkCmd, PolicyCmd, WireguardCmd};
use std::path::PathBuf;

fn main() {
    // One line per cause ("…: …"), not anyhow's Debug form with a backtrace: this is what an operator reads.
    if let Err(e) = run(Cli::parse()) {
        eprintln!("weftctl: {e:#}");
        std::process::exit(1);
    }
}

fn run(Cli { lab: lab_name, cmd }: Cli) -> Result<()> {
    let with_lab = |mut s: store::StoreArgs| {
        s.lab = lab_name.clone();
        s
    };
    match cmd {
        Cmd::Status { state_dir, node, json } => match node {
            Some(n) => status::show(&lab::state::lab_dir(&lab_name).join(n), json),
            None => status::show(&state_dir, json),
        },
        Cmd::Policy { cmd } => match cmd {
            PolicyCmd::Apply { file, store } => policy::apply(&with_lab(store), &file),
            PolicyCmd::Delete { names, namespace, all, store } => {
                policy::delete(&with_lab(store), namespace.as_deref(), &names, all)
            }
            PolicyCmd::List { store } => policy::list(&with_lab(store)),
            PolicyCmd::Explain { from, to, port, store } => {
                let allowed = policy::explain_cmd(&with_lab(store), &from, &to, &port)?;
                std::process::exit(if allowed { 0 } else { 1 });
            }
            PolicyCmd::Wait { timeout_secs, store } => {
                policy::wait(&with_lab(store), std::time::Duration::from_secs(timeout_secs))
            }
        },
        Cmd::Network { cmd } => match cmd {
            NetworkCmd::Create {
                name,
                cidr,
                cidr6,
                subnet_len,
                subnet_len6,
                vni,
                namespaces,
                selectors,
                no_masquerade,
                store,
            } => {
                let n = network::NewNetwork {
                    name,
                    cidr,
                    cidr6,
                    subnet_len,
                    subnet_len6,
                    vni,
                    namespaces,
                    selectors,
                    no_masquerade,
                };
                network::create(&with_lab(store), &n)
            }
            NetworkCmd::List { store } => network::list(&with_lab(store)),
            NetworkCmd::Delete { name, store } => network::delete(&with_lab(store), &name),
        },
        Cmd::Lab { cmd } => lab_cmd(&lab_name, cmd),
        Cmd::Wireguard { cmd: WireguardCmd::RotateKey { state_dirs, nodes, all, timeout_secs } } => {
            let node = |n: String| rotate::Target { state_dir: lab::state::lab_dir(&lab_name).join(&n), label: n };
            let targets: Vec<rotate::Target> = if all {
                lab::state::LabState::load(&lab_name)?.nodes.into_iter().map(|n| node(n.name)).collect()
            } else if nodes.is_empty() && state_dirs.is_empty() {
                vec![rotate::Target { label: "this node".into(), state_dir: PathBuf::from("/run/weft") }]
            } else {
                let dirs =
                    state_dirs.into_iter().map(|d| rotate::Target { label: d.display().to_string(), state_dir: d });
                nodes.into_iter().map(node).chain(dirs).collect()
            };
            rotate::rotate_keys(&targets, std::time::Duration::from_secs(timeout_secs))
        }
    }
}

fn lab_cmd(name: &str, cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::Up { nodes, pods_per_node, backend, store, underlay, ipv6, lease_ttl, bin_dir, networks } => {
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default(),
            };
            let name = name.to_string();
            let networks =
                networks.iter().map(|n| lab::networks::parse_up_flag(n, ipv6)).collect::<Result<Vec<_>>>()?;
            let o = lab::UpOptions {
                name,
                nodes,
                pods_per_node,
                backend,
                store,
                underlay,
                ipv6,
                lease_ttl,
                bin_dir,
                networks,
            };
            let l = lab::up(&o)?;
            lab::print_nodes(&l);
            if !l.networks.is_empty() {
                lab::networks::print(&l)?;
            }
            let fails = lab::print_matrix(&l);
            let flag = if l.name == "lab" { String::new() } else { format!(" --lab {}", l.name) };
            println!("lab {:?} is up. Try: weftctl lab exec{flag} default/node1-pod1 -- ping -c3 <ip>; weftctl lab down{flag}", l.name);
            if fails > 0 {
                std::process::exit(3);
            }
            Ok(())
        }
        LabCmd::Down => lab::down(name),
        LabCmd::Restart { node, kill } => lab::restart(name, &node, kill),
        LabCmd::Etcd { action } => lab::etcd(name, &action),
        LabCmd::Status => {
            let fails = lab::status(name)?;
            std::process::exit(i32::from(fails > 0) * 3);
        }
        LabCmd::PodAdd { node, namespace, pod, labels, ports, pending } => {
            let (ns, pod) = match pod {
                Some(p) => target::split(namespace.as_deref(), &p).map_err(anyhow::Error::msg)?,
                None => (namespace, String::new()),
            };
            let new = lab::workloads::NewPod {
                node,
                namespace: ns.unwrap_or_else(|| "default".into()),
                name: (!pod.is_empty()).then_some(pod),
                labels: labels::parse_set(&labels)?,
                ports: lab::workloads::ports(&ports)?,
                pending,
            };
            let p = lab::workloads::add_pod(name, new)?;
            println!("pod {}/{} {} {}", p.namespace, p.name, p.ip.unwrap_or_default(), p.ns);
            Ok(())
        }
        LabCmd::PodDel { namespace, pod } => {
            let target = match target::split(namespace.as_deref(), &pod).map_err(anyhow::Error::msg)? {
                (Some(ns), p) => format!("{ns}/{p}"),
                (None, p) => p,
            };
            lab::workloads::del_pod(name, &target)
        }
        LabCmd::NsAdd { namespace, labels, network } => {
            let labels = labels::parse_set(&labels)?;
            match network {
                Some(net) => {
                    lab::networks::attach_new_namespace(name, &namespace, labels, &net)?;
                    println!("namespace {namespace} created on network {net}");
                }
                None => {
                    let l = lab::state::LabState::load(name)?;
                    lab::workloads::add_namespace(&l, &namespace, labels)?;
                    println!("namespace {namespace} created");
                }
            }
            Ok(())
        }
        LabCmd::Network { cmd } => lab_network_cmd(name, cmd),
        LabCmd::Label { kind, target, changes, overwrite } => {
            let changes = labels::parse_changes(&changes)?;
            match kind {
                LabelKind::Ns => {
                    let out = lab::label::label_namespace(name, &target, &changes, overwrite)?;
                    lab::label::report("namespace", &target, &out);
                }
                LabelKind::Pod => {
                    let (key, out) = lab::label::label_pod(name, &target, &changes, overwrite)?;
                    lab::label::report("pod", &key, &out);
                }
            }
            Ok(())
        }
        LabCmd::Exec { target, cmd } => std::process::exit(lab::exec(name, &target, &cmd)?),
    }
}

fn lab_network_cmd(name: &str, cmd: LabNetworkCmd) -> Result<()> {
    match cmd {
        LabNetworkCmd::Create {
            name: net,
            cidr,
            cidr6,
            subnet_len,
            subnet_len6,
            vni,
            namespaces,
            selector,
            no_masquerade,
            no_wait,
        } => {
            let args = lab::networks::NetworkArgs {
                name: net,
                cidr,
                cidr6,
                subnet_len,
                subnet_len6,
                vni,
                namespaces,
                selector: labels::parse_set(&selector)?,
                no_masquerade,
            };
            let n = lab::networks::create(name, &args, !no_wait)?;
            println!("network {} created (VNI {}, {})", n.name, n.vni, n.cidr);
            Ok(())
        }
        LabNetworkCmd::List => lab::networks::print(&lab::state::LabState::load(name)?),
        LabNetworkCmd::Delete { name: net, no_wait } => {
            lab::networks::delete(name, &net, !no_wait)?;
            println!("network {net} deleted");
            Ok(())
        }
    }
}
