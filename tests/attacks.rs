//! Attacks on weft's trust boundaries (issue 8), each as an attacker would try it against a real lab; every
//! test failed on the code before its fix. One file per attack under `attacks/`.
#[path = "attacks/agentport.rs"]
mod agentport;
#[path = "attacks/spoof.rs"]
mod spoof;
