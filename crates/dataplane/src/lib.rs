//! Everything in weft that touches the kernel: links, addresses, routes, nexthops, neighbours, FDB, nftables.
//!
//! Layout:
//! - [`overlay`]: the overlay's kernel state as plain data (desired and actual), and [`Op`]s.
//! - [`diff`]: `diff(desired, actual) -> Vec<Op>`, pure; the reconciler's heart.
//! - [`networks`]: tenant networks' rules, table routes, neighbours and FDB entries, and their diff.
//! - [`fake`]: an in-memory [`Dataplane`] for unit tests of the agent.
//! - [`netlink`]: the real [`Dataplane`], talking rtnetlink directly, batched and pipelined.
//! - [`nft`]: applying nftables rulesets atomically through `nft -f`.
//! - [`netns`]: entering network namespaces (the only module with `unsafe`).
//! - [`pod`]: the pod side used by the CNI plugin (veth into the pod's netns, addresses, routes).
pub mod diff;
pub mod fake;
pub mod netlink;
pub mod netns;
pub mod networks;
pub mod nft;
pub mod overlay;
pub mod pod;

pub use overlay::*;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("link {0} not found")]
    NoSuchLink(String),
    #[error("no link holds address {0}")]
    NoUnderlay(std::net::IpAddr),
    #[error("nft: {0}")]
    Nft(String),
    #[error("network namespace {path}: {source}")]
    Netns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// The overlay operations the agent needs from the kernel of one node (one network namespace).
#[async_trait]
pub trait Dataplane: Send + Sync + 'static {
    /// Creates the VXLAN device or makes an existing one match `spec` (recreating it only when an attribute
    /// that cannot change in place differs: VNI, port, local). Brings it up. Idempotent.
    async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<VtepInfo, DataplaneError>;
    /// Creates or repairs a tenant network's VXLAN device as [`Dataplane::ensure_vxlan`] does, with the given MAC
    /// (the default device's, so peers reach every network at the VTEP MAC their lease publishes).
    async fn ensure_tenant_vxlan(&self, spec: &VxlanSpec, mac: Mac) -> Result<VtepInfo, DataplaneError>;
    /// The ifindex of a link, None when it does not exist.
    async fn link_index(&self, name: &str) -> Result<Option<u32>, DataplaneError>;
    /// Reads weft's tenant-network entries (see [`networks`]).
    async fn read_networks(&self, scope: &networks::NetworksScope) -> Result<networks::NetworksState, DataplaneError>;
    /// Removes a link by name; a missing link is not an error.
    async fn delete_link(&self, name: &str) -> Result<(), DataplaneError>;
    /// The link that holds `ip`, its MTU and prefix.
    async fn underlay(&self, ip: std::net::IpAddr) -> Result<UnderlayInfo, DataplaneError>;
    /// Reads weft's entries (see [`Scope`]) from the kernel.
    async fn read_state(&self, scope: &Scope) -> Result<OverlayState, DataplaneError>;
    /// Applies `ops` in order (batched and pipelined); failures are reported, not fatal.
    async fn apply(&self, ops: &[Op]) -> Result<ApplyReport, DataplaneError>;
    /// Replaces a whole nftables table atomically (`ruleset` holds `table ... { ... }` text).
    async fn apply_nft(&self, family: &str, table: &str, ruleset: &str) -> Result<(), DataplaneError>;
    /// Deletes an nftables table; a missing table is not an error.
    async fn delete_nft(&self, family: &str, table: &str) -> Result<(), DataplaneError>;
    /// Runs an nft script as one transaction (element updates on pod churn). Implementations that cannot
    /// return an error, and callers fall back to replacing the whole table.
    async fn nft_script(&self, _script: &str) -> Result<(), DataplaneError> {
        Err(DataplaneError::Nft("incremental nft scripts are not supported by this dataplane".into()))
    }
    /// Removes every conntrack entry of `zone` (either direction, any family); returns how many. Zone 0 is
    /// refused. Called before a tenant network's mark slot (and zone) is given to another network.
    async fn flush_conntrack_zone(&self, zone: u16) -> Result<usize, DataplaneError>;
    /// Named counters of a table as (name, packets, bytes); empty if the table is missing.
    async fn nft_counters(&self, _family: &str, _table: &str) -> Result<Vec<(String, u64, u64)>, DataplaneError> {
        Ok(vec![])
    }
    /// A fingerprint of the table's whole content as the kernel holds it (counter values left out), `None` if
    /// the table is missing. Equal fingerprints before and after a while mean nobody touched the table.
    async fn nft_fingerprint(&self, family: &str, table: &str) -> Result<Option<u64>, DataplaneError>;
}
