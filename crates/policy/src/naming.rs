//! Stable nft names for the objects of the policy table.
//!
//! Why names derived from content and identity instead of list positions: a name like `sel3` shifts when a policy
//! is added before it, so one new policy would rename (and rewrite) everything after it. Deriving every name from
//! what the object stands for — a policy from its `namespace/name`, a shared peer set from its selector, a port
//! set from its entries — keeps the names of everything else unchanged, so `plan` can apply one policy change as
//! a handful of commands. A 48-bit FNV-1a hash keeps names short; the rare collision is resolved by a suffix
//! (deterministic for a given model, and harmless otherwise: a renamed object is just replaced).

use std::collections::HashMap;

/// FNV-1a, 64 bits: stable across runs, platforms and Rust versions (unlike `DefaultHasher`).
pub(crate) fn fnv64(s: &str) -> u64 {
    weft_types::digest::fnv1a(s.as_bytes())
}

/// Hands out `prefix` + 12 hex digits of the key's hash, unique within one compile.
#[derive(Default)]
pub(crate) struct Names {
    taken: HashMap<String, String>,
}

impl Names {
    pub(crate) fn name(&mut self, prefix: &str, key: &str) -> String {
        let base = format!("{prefix}{:012x}", fnv64(key) & 0xffff_ffff_ffff);
        let mut candidate = base.clone();
        let mut n = 0;
        loop {
            match self.taken.get(&candidate) {
                Some(k) if k == key => return candidate,
                Some(_) => {
                    n += 1;
                    candidate = format!("{base}x{n}");
                }
                None => {
                    self.taken.insert(candidate.clone(), key.to_string());
                    return candidate;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_unique() {
        let mut a = Names::default();
        let x = a.name("p", "shop/web");
        assert_eq!(x, a.name("p", "shop/web"));
        assert_eq!(x.len(), 13);
        let mut b = Names::default();
        b.name("p", "other/one");
        assert_eq!(b.name("p", "shop/web"), x, "a name does not depend on the other objects");
        assert_eq!(fnv64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64("a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a reference value");
    }

    #[test]
    fn collisions_get_a_suffix() {
        let mut n = Names::default();
        let first = n.name("p", "k1");
        // Force a collision by pre-taking the name the next key would get.
        let other = format!("p{:012x}", fnv64("k2") & 0xffff_ffff_ffff);
        n.taken.insert(other.clone(), "someone else".into());
        assert_eq!(n.name("p", "k2"), format!("{other}x1"));
        assert_ne!(first, other);
    }
}
