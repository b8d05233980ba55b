//! Attacks on weft's trust boundaries (issue 8): each test is an attack that worked before its fix, run against
//! the real binaries in throwaway namespaces or a real lab. One module per boundary under `attacks/`.
//! (`#[path]` because a bare `mod cni;` in a test crate root would load tests/cni.rs.)
#[path = "attacks/agentport.rs"]
mod agentport;
#[path = "attacks/cni.rs"]
mod cni;
#[path = "attacks/reap.rs"]
mod reap;
#[path = "attacks/spoof.rs"]
mod spoof;
#[path = "attacks/store.rs"]
mod store;
