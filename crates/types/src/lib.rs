//! Types shared by every weft component.
//!
//! They sit at the bottom of the workspace so that the small, synchronous CNI plugin can read what the agent
//! writes without pulling in the agent's async machinery:
//! - [`node_file`]: the node file (`/run/weft/node.json`), the agent → plugin hand-off (pod subnet, MTU).
//! - [`network`]: the cluster network config (cluster CIDR, subnet length, backend) that every agent reads.
//! - [`lease`]: a node's subnet lease as published in the store.
//! - [`tenant`]: tenant networks (one VNI each, CIDRs may overlap) and their kernel ids.
#![forbid(unsafe_code)]

pub mod digest;
pub mod lease;
pub mod network;
pub mod node_file;
pub mod tenant;

pub use lease::{BackendData, Lease, LeaseRequest};
pub use network::{BackendKind, NetworkConfig};
pub use node_file::{NodeFile, NodeNetwork};
pub use tenant::{NetworkIds, TenantNetwork};
