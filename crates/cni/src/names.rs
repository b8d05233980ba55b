//! Deterministic names derived from an attachment `(network, containerID, ifname)`.
//!
//! Determinism is what makes DEL and GC work without any saved state: the host veth of an attachment can be
//! found (and deleted) without the pod's namespace, and GC can tell a stray veth of *this* network from
//! everything else on the node by its prefix alone — even one whose ADD was killed before it set the ifalias.
//!
//! Host veth: `wf` + 4 hex digits of hash(network) + 9 hex digits of hash(network, cid, ifname) = 15 bytes, the
//! kernel's limit. The hash is FNV-1a 64, fixed forever (std's hasher is not stable across Rust releases).
//! Collisions: two weft networks on one node share a prefix with probability 2^-16; two attachments of a network
//! share a name with probability ~n²/2^37 (≈5·10⁻⁷ for 256 pods), and then the ADD of the second fails: the
//! dataplane refuses to replace a veth whose ifalias names another attachment.

/// FNV-1a over the parts, each followed by a NUL so ("ab","c") and ("a","bc") differ.
pub fn fnv64(parts: &[&str]) -> u64 {
    let mut h = weft_types::digest::Fnv1a::default();
    for p in parts {
        h.update(p.as_bytes()).update(&[0]);
    }
    h.finish()
}

/// Prefix shared by every host veth of `network`.
pub fn veth_prefix(network: &str) -> String {
    format!("wf{:04x}", fnv64(&[network]) & 0xffff)
}

pub fn host_veth(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{}{:09x}", veth_prefix(network), fnv64(&[network, container_id, ifname]) & 0xf_ffff_ffff)
}

/// Key of an attachment in the IPAM store's index names (16 hex digits).
pub fn attachment_key(container_id: &str, ifname: &str) -> String {
    format!("{:016x}", fnv64(&[container_id, ifname]))
}

/// A locally administered unicast MAC (first byte 0x02) derived from the attachment and a salt.
fn mac(salt: &str, network: &str, container_id: &str, ifname: &str) -> [u8; 6] {
    let h = fnv64(&[salt, network, container_id, ifname]).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

pub fn host_mac(network: &str, container_id: &str, ifname: &str) -> [u8; 6] {
    mac("host", network, container_id, ifname)
}

pub fn pod_mac(network: &str, container_id: &str, ifname: &str) -> [u8; 6] {
    mac("pod", network, container_id, ifname)
}

/// Longest ifalias the kernel takes: `dev_set_alias` refuses `len >= IFALIASZ` (256), and the length it sees
/// includes the NUL that netlink strings carry, so 254 bytes of text.
pub const ALIAS_MAX: usize = 254;

/// `ifalias` of the host veth: `weft:<network>:<containerID>:<ifname>`, cut to [`ALIAS_MAX`] bytes at a char
/// boundary (CNI_IFNAME may be any UTF-8 the kernel takes as a name, so a byte cut could split a character).
/// A cut alias still starts with `weft:` (what GC and ADD's "is this ours?" test look at) and stays unique
/// enough for humans; identity comes from the veth name, never from the alias.
pub fn alias(network: &str, container_id: &str, ifname: &str) -> String {
    let mut a = format!("weft:{network}:{container_id}:{ifname}");
    if a.len() > ALIAS_MAX {
        let cut = (0..=ALIAS_MAX).rev().find(|&i| a.is_char_boundary(i)).unwrap_or(0);
        a.truncate(cut);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_fit_the_kernel_limit() {
        // Pinned values: changing the hash would orphan every veth and index on upgraded nodes.
        assert_eq!(fnv64(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(&["a"]), fnv64(&["a"]));
        assert_ne!(fnv64(&["ab", "c"]), fnv64(&["a", "bc"]));
        let n = host_veth("pods", "0123456789abcdef", "eth0");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with(&veth_prefix("pods")));
        assert_ne!(n, host_veth("pods", "0123456789abcdef", "eth1"));
        assert_ne!(veth_prefix("pods"), veth_prefix("pods2"));
        assert_eq!(attachment_key("c", "eth0").len(), 16);
    }

    #[test]
    fn alias_fits_the_kernel_and_never_splits_a_char() {
        let cid = "c".repeat(240);
        for ifname in ["eth0", "é", "ééééééé", "网卡零", "\u{1f980}\u{1f980}\u{1f980}"] {
            for pad in 0..8 {
                let a = alias(&"n".repeat(pad), &cid, ifname);
                assert!(a.len() <= ALIAS_MAX, "{} bytes", a.len());
                assert!(a.starts_with("weft:"));
            }
        }
        assert_eq!(alias(&"n".repeat(300), "c", "eth0").len(), ALIAS_MAX);
        assert_eq!(alias("n", "c", "eth0"), "weft:n:c:eth0");
    }

    proptest::proptest! {
        #[test]
        fn alias_is_a_prefix_cut_at_a_boundary(net in "[a-z]{0,300}", cid in "[a-z0-9]{1,300}", ifname in "\\PC{1,5}") {
            let full = format!("weft:{net}:{cid}:{ifname}");
            let a = alias(&net, &cid, &ifname);
            proptest::prop_assert!(a.len() <= ALIAS_MAX);
            proptest::prop_assert!(full.starts_with(&a));
            proptest::prop_assert!(a.len() == full.len() || a.len() + 4 > ALIAS_MAX);
        }
    }

    #[test]
    fn macs_are_local_unicast_and_differ_per_side() {
        let h = host_mac("n", "c", "eth0");
        let p = pod_mac("n", "c", "eth0");
        assert_ne!(h, p);
        for m in [h, p] {
            assert_eq!(m[0] & 0x03, 0x02, "locally administered, unicast");
        }
    }
}
