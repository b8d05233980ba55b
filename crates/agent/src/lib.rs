//! weftd, the node agent, as a library (the binary is a thin `main.rs`).
//!
//! Module by module, in the order a lease lives:
//! - [`config`]: flags and environment.
//! - [`lease`]: acquire the node's subnet, renew it, re-acquire if lost.
//! - [`follow`]: list + watch of one kind of store object, relist on reset (leases and policy objects).
//! - [`peers`]: watch other nodes' leases (list + watch from revision, relist on reset).
//! - [`backend`]: the `Backend` trait and one module per backend (VXLAN, host-gw), with their registry.
//! - [`desired`]: leases → desired kernel entries (pure; the shared peer checks, then the backend's entries).
//! - [`reconcile`]: desired vs actual → apply only the diff; teardown on uninstall.
//! - [`firewall`]: the `inet weft` nftables table (masquerade, VXLAN port protection, checksum workaround).
//! - [`networks`]: tenant networks (pure desired state, fwmark slots, store objects, CNI pools).
//! - [`local_pods`]: this node's pod addresses from the plugin's IPAM records (policy before the kubelet reports).
//! - [`stranded`]: local pods whose namespace left the network their address is from (named, fail closed).
//! - [`manager`]: the shared event loop and its managers (node file, overlay, networks, firewall, policy).
//! - [`agent`]: start-up order and wiring.
//! - [`status`], [`metrics`], [`http`]: what the agent tells operators.
#![forbid(unsafe_code)]

pub mod agent;
pub mod backend;
pub mod config;
pub mod desired;
pub mod firewall;
pub mod follow;
pub mod http;
pub mod lease;
pub mod local_pods;
pub mod manager;
pub mod metrics;
pub mod networks;
pub mod peers;
pub mod policy;
pub mod reconcile;
pub mod status;
pub mod stranded;

pub use agent::{run, AgentError, Deps};
pub use config::AgentConfig;
