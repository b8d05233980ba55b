//! Attacks on weft's trust boundaries, each turned into a test (issue 8). One module per boundary.
#[path = "attacks/store.rs"]
mod store;
