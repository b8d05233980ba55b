//! The attack suite: each test is an attack on a trust boundary of weft (issue 8), run against the real binaries
//! in throwaway namespaces; it failed before the fix it names and must keep failing the attacker.
#[path = "attacks/reap.rs"]
mod reap;
