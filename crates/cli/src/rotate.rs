//! `weftctl wireguard rotate-key`: new WireGuard key pairs for running nodes, without dropping connections.
//!
//! The request goes through each agent's state directory (root's only), not its HTTP port: pods can reach no
//! part of it. Each agent serves it on its next pass (at the latest after its `--resync-interval`), stores the
//! new key, switches its tunnel and publishes the new public key in its lease; this command waits until each
//! agent runs its new key and prints old → new.
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weft_agent::backend::wireguard::rotate::{read_public_key, request};
use weft_tunnel::PublicKey;

/// One agent to rotate: a label for the output and its state directory.
pub struct Target {
    pub label: String,
    pub state_dir: PathBuf,
}

pub fn rotate_keys(targets: &[Target], timeout: Duration) -> Result<()> {
    if targets.is_empty() {
        bail!("no node given");
    }
    let mut pending: Vec<(&Target, PublicKey)> = Vec::new();
    for t in targets {
        let old = read_public_key(&t.state_dir).with_context(|| {
            format!(
                "{}: no WireGuard public key (is weftd running the wireguard backend with this --state-dir?)",
                t.label
            )
        })?;
        pending.push((t, old));
    }
    // All requests first, so several nodes rotate within one pass interval of each other.
    for (t, old) in &pending {
        request(&t.state_dir, old).with_context(|| format!("{}: writing the rotation request", t.label))?;
    }
    let deadline = Instant::now() + timeout;
    let mut late = Vec::new();
    for (t, old) in pending {
        loop {
            match read_public_key(&t.state_dir) {
                Ok(new) if new != old => {
                    println!("{}: WireGuard key rotated {old} -> {new}", t.label);
                    break;
                }
                _ if Instant::now() > deadline => {
                    late.push(t.label.clone());
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    if !late.is_empty() {
        bail!(
            "not rotated within {timeout:?}: {} (the request stays; the agent serves it on its next pass: see its log)",
            late.join(", ")
        );
    }
    Ok(())
}
