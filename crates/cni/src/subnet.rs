//! Which pod subnets weft accepts, from the config (`ipam.subnet`, `ipam.subnet6`) or from the node file. Pure.
//!
//! A pod subnet becomes routes on the node and in every pod, so a hostile or mistyped one rewrites the node's
//! routing: `0.0.0.0/0` makes every pod address a "pod", `127.0.0.0/8` puts pods on loopback addresses. Refused:
//! - prefixes shorter than /8 (IPv4) or /48 (IPv6): no node has that many pods, and such a prefix covers other
//!   people's networks (`0.0.0.0/0`, `::/0` included);
//! - subnets too small for the gateway plus one pod (longer than /30, /126);
//! - any overlap with a special range: unspecified/"this network" (`0.0.0.0/8`, `::/128`), loopback
//!   (`127.0.0.0/8`, `::1`), link-local (`169.254.0.0/16`, `fe80::/10`), multicast (`224.0.0.0/4`, `ff00::/8`),
//!   the reserved class E and broadcast (`240.0.0.0/4`), IPv4-mapped IPv6 (`::ffff:0:0/96`).
use ipnet::{Ipv4Net, Ipv6Net};

pub const MIN_PREFIX_V4: u8 = 8;
pub const MAX_PREFIX_V4: u8 = 30;
pub const MIN_PREFIX_V6: u8 = 48;
pub const MAX_PREFIX_V6: u8 = 126;

const SPECIAL_V4: [(&str, &str); 5] = [
    ("0.0.0.0/8", "unspecified (\"this network\")"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (class E, broadcast)"),
];

const SPECIAL_V6: [(&str, &str); 5] = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// The subnet with host bits cleared, or why it cannot be a pod subnet.
pub fn pod_subnet_v4(net: Ipv4Net) -> Result<Ipv4Net, String> {
    let net = net.trunc();
    if net.prefix_len() < MIN_PREFIX_V4 {
        return Err(format!("{net} is too large for a pod subnet: at least /{MIN_PREFIX_V4}"));
    }
    if net.prefix_len() > MAX_PREFIX_V4 {
        return Err(format!("{net} is too small: at most /{MAX_PREFIX_V4} (gateway + one pod)"));
    }
    for (range, what) in SPECIAL_V4 {
        let r: Ipv4Net = range.parse().expect("constant");
        if r.contains(&net) || net.contains(&r) {
            return Err(format!("{net} overlaps {range}, which is {what}"));
        }
    }
    Ok(net)
}

/// The subnet with host bits cleared, or why it cannot be a pod subnet.
pub fn pod_subnet_v6(net: Ipv6Net) -> Result<Ipv6Net, String> {
    let net = net.trunc();
    if net.prefix_len() < MIN_PREFIX_V6 {
        return Err(format!("{net} is too large for a pod subnet: at least /{MIN_PREFIX_V6}"));
    }
    if net.prefix_len() > MAX_PREFIX_V6 {
        return Err(format!("{net} is too small: at most /{MAX_PREFIX_V6} (gateway + one pod)"));
    }
    for (range, what) in SPECIAL_V6 {
        let r: Ipv6Net = range.parse().expect("constant");
        if r.contains(&net) || net.contains(&r) {
            return Err(format!("{net} overlaps {range}, which is {what}"));
        }
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_pod_subnets_pass_with_host_bits_cleared() {
        for s in ["10.244.3.0/24", "10.0.0.0/8", "192.168.1.0/30", "100.64.0.0/10", "172.16.5.7/24"] {
            assert!(pod_subnet_v4(s.parse().unwrap()).is_ok(), "{s}");
        }
        assert_eq!(pod_subnet_v4("10.88.0.7/24".parse().unwrap()).unwrap().to_string(), "10.88.0.0/24");
        for s in ["fd00:10:244:3::/64", "2001:db8::/48", "fd00::/126"] {
            assert!(pod_subnet_v6(s.parse().unwrap()).is_ok(), "{s}");
        }
    }

    #[test]
    fn hostile_subnets_are_refused_with_a_reason() {
        let bad4 = [
            ("0.0.0.0/0", "too large"),
            ("10.0.0.0/7", "too large"),
            ("10.0.0.0/31", "too small"),
            ("10.0.0.1/32", "too small"),
            ("127.0.0.0/8", "loopback"),
            ("127.1.0.0/24", "loopback"),
            ("169.254.1.0/24", "link-local"),
            ("224.1.0.0/24", "multicast"),
            ("0.1.0.0/16", "unspecified"),
            ("255.255.255.0/24", "reserved"),
        ];
        for (s, why) in bad4 {
            let e = pod_subnet_v4(s.parse().unwrap()).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
        let bad6 = [
            ("::/0", "too large"),
            ("fd00::/47", "too large"),
            ("fd00::/127", "too small"),
            ("::/64", "unspecified"),
            ("::/127", "too small"),
            ("fe80::/64", "link-local"),
            ("ff02::/64", "multicast"),
            ("::ffff:10.0.0.0/120", "IPv4-mapped"),
        ];
        for (s, why) in bad6 {
            let e = pod_subnet_v6(s.parse().unwrap()).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
