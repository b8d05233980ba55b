//! Attacks on weft's trust boundaries (issue 8): each test is an attack that worked before its fix, run against
//! the real binaries in throwaway namespaces. One module per boundary.
#[path = "attacks/cni.rs"]
mod cni;
