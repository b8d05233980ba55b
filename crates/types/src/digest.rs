//! A short content digest of a stored JSON object (FNV-1a 64 over its canonical text).
//!
//! The agent reports which policy versions it enforces as `namespace/name@digest`; `weftctl policy wait`
//! computes the same from the store, so "every node enforces what the store holds" is checkable without clocks.
//! serde_json maps are sorted, so the text (and the digest) does not depend on key order.
pub fn digest(v: &serde_json::Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
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
}
