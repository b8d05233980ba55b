//! Address arithmetic of one pod subnet, pure (no I/O), so the allocator's rules are property-tested.
//!
//! Reserved, never handed out: the network address (IPv6: the subnet-router anycast address), the gateway
//! (first host, e.g. 10.88.0.1 — the pods' default route points at it) and, for IPv4, the broadcast address.
//! Allocation is next-fit: the first free address after the last one handed out, wrapping around, so a
//! just-released address is reused as late as possible (stale conntrack entries and ARP caches elsewhere
//! then have time to expire). Addresses are handled as offsets in u128 so one code path serves both families.
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    net: IpNet,
}

impl Pool {
    /// `net` must leave room for one pod (IPv4 ≤ /30, IPv6 ≤ /126); config validation guarantees it.
    pub fn new(net: IpNet) -> Self {
        debug_assert!(net.prefix_len() + 2 <= net.max_prefix_len());
        Pool { net: net.trunc() }
    }

    pub fn net(&self) -> IpNet {
        self.net
    }

    pub fn is_v4(&self) -> bool {
        matches!(self.net, IpNet::V4(_))
    }

    fn base(&self) -> u128 {
        to_u128(self.net.network())
    }

    fn size(&self) -> u128 {
        1u128.checked_shl(u32::from(self.net.max_prefix_len() - self.net.prefix_len())).unwrap_or(u128::MAX)
    }

    fn at(&self, off: u128) -> IpAddr {
        from_u128(self.base() + off, self.is_v4())
    }

    fn offset(&self, ip: IpAddr) -> Option<u128> {
        (ip.is_ipv4() == self.is_v4() && self.net.contains(&ip)).then(|| to_u128(ip) - self.base())
    }

    /// The gateway of the pods' default route: the first host address.
    pub fn gateway(&self) -> IpAddr {
        self.at(1)
    }

    /// First and last offsets a pod may get.
    fn range(&self) -> (u128, u128) {
        let last = if self.is_v4() { self.size() - 2 } else { self.size() - 1 };
        (2, last)
    }

    /// Number of addresses pods may get.
    pub fn capacity(&self) -> u128 {
        let (first, last) = self.range();
        last - first + 1
    }

    pub fn is_assignable(&self, ip: IpAddr) -> bool {
        let (first, last) = self.range();
        self.offset(ip).is_some_and(|o| o >= first && o <= last)
    }

    /// The first assignable address after `hint` (or from the start) that is not in `used`; `None` when full.
    /// Cost is O(|used|): at most |used ∩ range| + 1 candidates are looked at.
    pub fn next_free(&self, hint: Option<IpAddr>, used: &HashSet<IpAddr>) -> Option<IpAddr> {
        let (first, last) = self.range();
        let start = match hint.and_then(|h| self.offset(h)) {
            Some(o) if o >= first && o < last => o + 1,
            _ => first,
        };
        let taken = used.iter().filter(|ip| self.is_assignable(**ip)).count() as u128;
        let tries = self.capacity().min(taken + 1);
        let mut off = start;
        for _ in 0..tries {
            let ip = self.at(off);
            if !used.contains(&ip) {
                return Some(ip);
            }
            off = if off == last { first } else { off + 1 };
        }
        None
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(s: &str) -> Pool {
        Pool::new(s.parse().unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reserved_addresses_and_capacity() {
        let p = pool("10.88.0.0/24");
        assert_eq!(p.gateway(), ip("10.88.0.1"));
        assert_eq!(p.capacity(), 253);
        for r in ["10.88.0.0", "10.88.0.1", "10.88.0.255", "10.89.0.5", "fd00::5"] {
            assert!(!p.is_assignable(ip(r)), "{r}");
        }
        assert!(p.is_assignable(ip("10.88.0.2")) && p.is_assignable(ip("10.88.0.254")));
        let p6 = pool("fd00:1::/64");
        assert_eq!(p6.gateway(), ip("fd00:1::1"));
        assert!(!p6.is_assignable(ip("fd00:1::")) && p6.is_assignable(ip("fd00:1::ffff:ffff:ffff:ffff")));
        assert_eq!(pool("10.0.0.0/30").capacity(), 1);
        assert_eq!(pool("fd00::/126").capacity(), 2);
    }

    #[test]
    fn next_fit_wraps_and_reports_full() {
        let p = pool("10.0.0.0/29"); // .2 ..= .6
        let mut used = HashSet::new();
        assert_eq!(p.next_free(None, &used), Some(ip("10.0.0.2")));
        assert_eq!(p.next_free(Some(ip("10.0.0.4")), &used), Some(ip("10.0.0.5")));
        assert_eq!(p.next_free(Some(ip("10.0.0.6")), &used), Some(ip("10.0.0.2")), "wraps after the last");
        assert_eq!(p.next_free(Some(ip("10.9.9.9")), &used), Some(ip("10.0.0.2")), "foreign hint ignored");
        used.extend(["10.0.0.5", "10.0.0.6", "10.0.0.2"].map(ip));
        assert_eq!(p.next_free(Some(ip("10.0.0.4")), &used), Some(ip("10.0.0.3")));
        used.extend(["10.0.0.3", "10.0.0.4"].map(ip));
        assert_eq!(p.next_free(Some(ip("10.0.0.4")), &used), None);
    }

    #[test]
    fn huge_v6_pool_is_cheap() {
        let p = pool("fd00::/64");
        let used: HashSet<IpAddr> =
            (2..1000u16).map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i))).collect();
        assert_eq!(p.next_free(None, &used), Some(ip("fd00::3e8")));
    }

    proptest! {
        /// Allocate until full with random releases in between: never a duplicate, never a reserved address,
        /// and exactly `capacity` live addresses when the pool reports full.
        #[test]
        fn allocator_never_duplicates_or_hands_out_reserved(
            prefix in 26u8..=30, ops in proptest::collection::vec(any::<(bool, u8)>(), 1..300), v6 in any::<bool>()
        ) {
            let p = if v6 { pool(&format!("fd00:9::/{}", prefix + 96)) } else { pool(&format!("10.7.3.0/{prefix}")) };
            let mut used: HashSet<IpAddr> = HashSet::new();
            let mut order: Vec<IpAddr> = Vec::new();
            let mut hint = None;
            for (release, pick) in ops {
                if release && !order.is_empty() {
                    let gone = order.remove(pick as usize % order.len());
                    used.remove(&gone);
                    continue;
                }
                match p.next_free(hint, &used) {
                    Some(a) => {
                        prop_assert!(p.is_assignable(a), "{} reserved or outside", a);
                        prop_assert!(a != p.gateway());
                        prop_assert!(used.insert(a), "{} handed out twice", a);
                        order.push(a);
                        hint = Some(a);
                    }
                    None => prop_assert_eq!(used.len() as u128, p.capacity()),
                }
            }
        }

        /// After a release, next-fit prefers every never-used address before reusing the released one.
        #[test]
        fn released_address_is_reused_last(n in 1usize..20) {
            let p = pool("10.1.0.0/24");
            let mut used = HashSet::new();
            let mut hint = None;
            for _ in 0..n {
                let a = p.next_free(hint, &used).unwrap();
                used.insert(a);
                hint = Some(a);
            }
            let first = ip("10.1.0.2");
            used.remove(&first);
            let next = p.next_free(hint, &used).unwrap();
            prop_assert_ne!(next, first);
        }
    }
}
