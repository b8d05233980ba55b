//! weft's WireGuard datapath: a userspace WireGuard interface, wire-compatible with every WireGuard peer, built
//! to run where the kernel has no WireGuard module.
//!
//! - [`keys`]: key generation, the 0600 key file in the state dir, public key derivation.
//! - [`config`]: what the caller gives ([`TunnelConfig`], [`PeerConfig`]) and reads back ([`PeerStats`]).
//! - [`Tunnel`] (`device`): start/stop, level-triggered `set_peers`, `rotate_key`, `stats`.
//! - `peers`: per-peer protocol instances (current + retiring across key changes) and the lookup tables.
//! - `worker`: the per-queue packet loop (TUN ↔ UDP), cryptokey routing, counters.
//! - `offload`: cutting the kernel's 64 KB TSO/USO super-packets into wire packets (pure, unit-tested).
//! - `sys`: the only `unsafe` code: TUN ioctls, poll, batched UDP with GSO/GRO.
//! - `uapi`: read-only cross-platform UAPI socket for `wg show`.
//!
//! The protocol itself (Noise IK handshake, ChaCha20-Poly1305 sessions, timers, cookies) is
//! `defguard_boringtun`'s I/O-free `noise::Tunn`; this crate does the I/O around it.

#![deny(unsafe_code)]

pub mod config;
mod device;
pub mod keys;
pub mod offload;
mod peers;
#[allow(unsafe_code)]
mod sys;
pub mod uapi;
mod worker;

pub use config::{PeerConfig, PeerStats, TunnelConfig, TunnelCounters};
pub use device::{Tunnel, TunnelError};
pub use keys::{KeyError, PrivateKey, PublicKey};

/// Bytes WireGuard adds to an inner packet on an IPv4 underlay: IPv4 20 + UDP 8 + WireGuard header 16 + tag 16.
pub const OVERHEAD_V4: u32 = 60;
/// The same on an IPv6 underlay (IPv6 header 40).
pub const OVERHEAD_V6: u32 = 80;

#[cfg(test)]
mod tests {
    /// The agent holds a `Tunnel` across threads and async tasks.
    #[test]
    fn tunnel_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Tunnel>();
    }
}
