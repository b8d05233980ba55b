//! A short content digest of a stored JSON object (FNV-1a 64 over its canonical text).
//!
//! The agent reports which policy versions it enforces as `namespace/name@digest`; `weftctl policy wait`
//! computes the same from the store, so "every node enforces what the store holds" is checkable without clocks.
//! serde_json maps are sorted, so the text (and the digest) does not depend on key order.
pub fn digest(v: &serde_json::Value) -> String {
    format!("{:016x}", fnv1a(v.to_string().as_bytes()))
}

/// FNV-1a, 64 bits, fed in pieces: stable across runs, platforms and Rust versions (unlike `DefaultHasher`), the
/// one hash weft uses wherever a name or a fingerprint must come out the same every time. Not a security
/// boundary anywhere it is used.
#[derive(Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a of `bytes` in one go.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    Fnv1a::default().update(bytes).finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_order_does_not_matter() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"b":[1,2],"a":1}"#).unwrap();
        let c: serde_json::Value = serde_json::from_str(r#"{"b":[2,1],"a":1}"#).unwrap();
        assert_eq!(super::digest(&a), super::digest(&b));
        assert_ne!(super::digest(&a), super::digest(&c));
    }

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(super::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::Fnv1a::default().update(b"a").update(b"b").finish(), super::fnv1a(b"ab"));
    }
}
