//! Address ranges for `ipBlock`: nft interval sets cannot say "cidr minus except", so the difference is computed
//! here into disjoint inclusive ranges, which both the compiler (as set elements) and `explain` (membership) use.
//! Addresses are handled as `u128` so IPv4 and IPv6 share one code path; a range never mixes families.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

impl AddrRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4() && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// The prefix this range is exactly, if any (so rendering stays readable: `10.0.0.0/25`, not a dash range).
    pub fn as_prefix(&self) -> Option<IpNet> {
        let (s, e) = (to_u128(self.start), to_u128(self.end));
        let bits = if self.start.is_ipv4() { 32 } else { 128 };
        let size = e.wrapping_sub(s).wrapping_add(1);
        // size == 0 only for the whole IPv6 space (wrapped).
        let host_bits = if size == 0 {
            128
        } else if size.is_power_of_two() {
            size.trailing_zeros()
        } else {
            return None;
        };
        if host_bits > bits || (host_bits < 128 && s & ((1u128 << host_bits) - 1) != 0) {
            return None;
        }
        IpNet::new(self.start, (bits - host_bits) as u8).ok()
    }
}

impl fmt::Display for AddrRange {
    /// nft element syntax: an address, a prefix, or `a-b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else if let Some(net) = self.as_prefix() {
            write!(f, "{net}")
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

fn net_bounds(net: &IpNet) -> (u128, u128) {
    let net = net.trunc();
    (to_u128(net.network()), to_u128(net.broadcast()))
}

/// `cidr` minus every `except`, as sorted disjoint ranges. Excepts of the other family or outside the cidr are
/// ignored (validation rejects them; ignoring them here only ever removes less, never adds).
pub fn block_ranges(cidr: &IpNet, except: &[IpNet]) -> Vec<AddrRange> {
    let v4 = matches!(cidr, IpNet::V4(_));
    let (lo, hi) = net_bounds(cidr);
    let mut holes: Vec<(u128, u128)> =
        except.iter().filter(|e| matches!(e, IpNet::V4(_)) == v4).map(net_bounds).collect();
    holes.sort_unstable();
    let mut out = Vec::new();
    let mut cur = Some(lo);
    for (s, e) in holes {
        let Some(c) = cur else { break };
        if e < c {
            continue;
        }
        if s > hi {
            break;
        }
        if s > c {
            out.push((c, s - 1));
        }
        cur = e.checked_add(1);
    }
    if let Some(c) = cur {
        if c <= hi {
            out.push((c, hi));
        }
    }
    out.into_iter().map(|(s, e)| AddrRange { start: from_u128(v4, s), end: from_u128(v4, e) }).collect()
}

/// The union of `ranges` (all of one family) as sorted, disjoint ranges, overlapping and adjacent ones coalesced:
/// nft interval sets refuse overlapping elements, and fewer elements load and diff faster. This is how many
/// ipBlocks of one rule become one set.
pub fn union(ranges: impl IntoIterator<Item = AddrRange>) -> Vec<AddrRange> {
    let mut v: Vec<(bool, u128, u128)> =
        ranges.into_iter().map(|r| (r.start.is_ipv4(), to_u128(r.start), to_u128(r.end))).collect();
    v.sort_unstable();
    let mut out: Vec<(bool, u128, u128)> = Vec::with_capacity(v.len());
    for (fam, s, e) in v {
        match out.last_mut() {
            Some(last) if last.0 == fam && s <= last.2.saturating_add(1) => last.2 = last.2.max(e),
            _ => out.push((fam, s, e)),
        }
    }
    out.into_iter().map(|(v4, s, e)| AddrRange { start: from_u128(v4, s), end: from_u128(v4, e) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn render(r: &[AddrRange]) -> Vec<String> {
        r.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn cidr_without_except_is_one_prefix() {
        assert_eq!(render(&block_ranges(&net("10.1.2.3/16"), &[])), ["10.1.0.0/16"]);
    }

    #[test]
    fn except_splits_the_cidr() {
        let r = block_ranges(&net("10.0.0.0/24"), &[net("10.0.0.64/26"), net("10.0.0.200/32")]);
        assert_eq!(render(&r), ["10.0.0.0/26", "10.0.0.128-10.0.0.199", "10.0.0.201-10.0.0.255"]);
        assert!(r.iter().any(|r| r.contains("10.0.0.63".parse().unwrap())));
        assert!(!r.iter().any(|r| r.contains("10.0.0.64".parse().unwrap())));
        assert!(!r.iter().any(|r| r.contains("10.0.0.200".parse().unwrap())));
        assert!(r.iter().any(|r| r.contains("10.0.0.201".parse().unwrap())));
    }

    #[test]
    fn overlapping_and_edge_excepts() {
        let r = block_ranges(&net("10.0.0.0/24"), &[net("10.0.0.0/25"), net("10.0.0.0/26"), net("10.0.0.255/32")]);
        assert_eq!(render(&r), ["10.0.0.128-10.0.0.254"]);
        assert!(block_ranges(&net("10.0.0.0/24"), &[net("10.0.0.0/24")]).is_empty());
    }

    #[test]
    fn whole_spaces_do_not_overflow() {
        assert_eq!(render(&block_ranges(&net("0.0.0.0/0"), &[net("255.255.255.255/32")])), ["0.0.0.0-255.255.255.254"]);
        assert_eq!(render(&block_ranges(&net("::/0"), &[])), ["::/0"]);
        assert_eq!(render(&block_ranges(&net("::/0"), &[net("::/1")])), ["8000::/1"]);
    }

    #[test]
    fn union_coalesces_overlapping_and_adjacent_ranges() {
        let mut all = block_ranges(&net("10.0.0.0/24"), &[net("10.0.0.64/26")]);
        all.extend(block_ranges(&net("10.0.0.64/27"), &[]));
        all.extend(block_ranges(&net("10.0.1.0/24"), &[]));
        all.extend(block_ranges(&net("10.0.0.0/26"), &[]));
        all.extend(block_ranges(&net("10.0.5.0/24"), &[]));
        assert_eq!(render(&union(all)), ["10.0.0.0-10.0.0.95", "10.0.0.128-10.0.1.255", "10.0.5.0/24"]);
        assert_eq!(render(&union(block_ranges(&net("255.255.255.0/24"), &[]))), ["255.255.255.0/24"]);
        let v6 = union(block_ranges(&net("::/0"), &[]).into_iter().chain(block_ranges(&net("fd00::/8"), &[])));
        assert_eq!(render(&v6), ["::/0"], "no overflow at the top of the space");
    }

    #[test]
    fn other_family_excepts_are_ignored_and_ranges_check_family() {
        let r = block_ranges(&net("fd00::/64"), &[net("10.0.0.0/8")]);
        assert_eq!(render(&r), ["fd00::/64"]);
        assert!(!r[0].contains("10.0.0.1".parse().unwrap()));
    }
}
