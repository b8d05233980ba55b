//! What the cipher alone costs on this machine, and the throughput ceiling that puts on any userspace tunnel.
//!
//! The ceiling: a userspace WireGuard path does at least the kernel work of the VXLAN path (both ends' TCP, the
//! veth, an IP/UDP send and receive per packet; it adds the TUN device and four copies) plus the cipher (seal at
//! the sender, open at the receiver). With every CPU busy and nothing else, GB/s ≤ CPUs / (VXLAN's system CPU
//! s/GB + the cipher's s/GB). Both terms are measured in the same run, so the ratio the target asks for can be
//! compared with what the machine can give at all.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use std::time::Instant;

/// Seconds per GB of ChaCha20-Poly1305 seal + open of `size`-byte packets on one core, with ring (the AEAD the
/// protocol core uses). Best of three rounds: the cost when nothing else runs.
pub fn cipher_seconds_per_gb(size: usize) -> f64 {
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).expect("key"));
    let count = 64 << 20 >> size.ilog2().max(1);
    let nonce = |i: u64| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&i.to_le_bytes());
        Nonce::assume_unique_for_key(n)
    };
    let mut best = f64::MAX;
    for _ in 0..3 {
        let mut packets: Vec<Vec<u8>> = (0..256).map(|_| vec![0x5a; size]).collect();
        let mut tags = Vec::with_capacity(256);
        let start = Instant::now();
        let mut opened = 0usize;
        for round in 0..count / 256 {
            tags.clear();
            for (i, p) in packets.iter_mut().enumerate() {
                let n = (round * 256 + i) as u64;
                tags.push(key.seal_in_place_separate_tag(nonce(n), Aad::empty(), p).expect("seal"));
            }
            for (i, (p, tag)) in packets.iter_mut().zip(&tags).enumerate() {
                let n = (round * 256 + i) as u64;
                p.extend_from_slice(tag.as_ref());
                opened += key.open_in_place(nonce(n), Aad::empty(), p).expect("open").len();
                p.truncate(size);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(opened, count / 256 * 256 * size);
        best = best.min(secs / ((count / 256 * 256 * size) as f64 / 1e9));
    }
    best
}

/// Busy CPU seconds of the whole machine so far (user + system + irq + softirq from /proc/stat, clock ticks of
/// 100 Hz). `nice` time is left out: background jobs run under `nice` do not count against a path.
pub fn system_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal
    (get(0) + get(2) + get(5) + get(6)) / 100.0
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Gb/s that `cpus` fully busy CPUs allow when each GB costs `path_s_per_gb + cipher_s_per_gb` CPU seconds.
pub fn ceiling_gbps(cpus: usize, path_s_per_gb: f64, cipher_s_per_gb: f64) -> f64 {
    8.0 * cpus as f64 / (path_s_per_gb + cipher_s_per_gb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_is_what_the_cpus_buy_at_that_cost() {
        // 2 CPUs, 1.25 s/GB of kernel path + 1.25 s/GB of cipher: 0.8 GB/s = 6.4 Gb/s.
        assert!((ceiling_gbps(2, 1.25, 1.25) - 6.4).abs() < 1e-9);
    }
}
