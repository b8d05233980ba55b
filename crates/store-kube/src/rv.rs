//! resourceVersion ↔ store [`Revision`].
//!
//! The store trait counts revisions in `u64`; Kubernetes calls resourceVersions opaque strings. In practice
//! kube-apiserver's are etcd revisions in decimal, and the fake's are a decimal counter, so a numeric one is
//! passed through unchanged. Anything else (an aggregated API server, a future apiserver) gets a token from
//! the top half of the `u64` space, remembered here and turned back into the exact string when the caller
//! watches from it. Tokens are only meaningful to the store instance that issued them, which is how the agent
//! uses revisions (list, then watch from that list's revision, on the same store).
use std::collections::HashMap;
use std::sync::Mutex;
use weft_store::Revision;

const TOKEN_BASE: u64 = 1 << 63;

#[derive(Default)]
pub(crate) struct RvMap {
    inner: Mutex<(HashMap<u64, String>, u64)>,
}

impl RvMap {
    pub fn to_revision(&self, rv: &str) -> Revision {
        if let Ok(n) = rv.parse::<u64>() {
            if n < TOKEN_BASE {
                return n;
            }
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, _)) = g.0.iter().find(|(_, s)| s.as_str() == rv) {
            return *t;
        }
        g.1 += 1;
        let token = TOKEN_BASE + g.1;
        g.0.insert(token, rv.to_string());
        token
    }

    /// The resourceVersion to watch from. Revision 0 is "0": every object as ADDED, then changes.
    pub fn to_resource_version(&self, r: Revision) -> String {
        if r >= TOKEN_BASE {
            if let Some(s) = self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.get(&r) {
                return s.clone();
            }
        }
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_pass_through_opaque_strings_round_trip() {
        let m = RvMap::default();
        assert_eq!(m.to_revision("12345"), 12345);
        assert_eq!(m.to_resource_version(12345), "12345");
        let t = m.to_revision("opaque/AbC==");
        assert!(t >= TOKEN_BASE);
        assert_eq!(m.to_revision("opaque/AbC=="), t, "same string, same token");
        assert_eq!(m.to_resource_version(t), "opaque/AbC==");
        assert_ne!(m.to_revision("other"), t);
    }
}
