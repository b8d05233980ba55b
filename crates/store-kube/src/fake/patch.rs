//! The patch formats the fake accepts, on plain JSON values:
//! - JSON merge patch (RFC 7386, `application/merge-patch+json`).
//! - Strategic merge patch (`application/strategic-merge-patch+json`), applied as a JSON merge patch. The two
//!   differ only for lists with a merge key (containers, conditions...); for the maps weft patches
//!   (`metadata.annotations`) they are the same. A list in a strategic patch is refused rather than guessed.
//! - JSON patch (RFC 6902, `application/json-patch+json`): add, remove, replace and test, which is enough for
//!   compare-and-swap through `test`. move and copy are refused.
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// The patch is malformed or uses what the fake does not implement (HTTP 400/415).
    BadRequest(String),
    /// A JSON patch `test` failed or a path is missing (HTTP 422, as the real server answers).
    Invalid(String),
}

pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn has_list(v: &Value) -> bool {
    match v {
        Value::Array(_) => true,
        Value::Object(m) => m.values().any(has_list),
        _ => false,
    }
}

pub fn strategic(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if has_list(patch) {
        return Err(PatchError::BadRequest(
            "fake apiserver: strategic merge patches with lists are not implemented (use a JSON merge patch)".into(),
        ));
    }
    merge(target, patch);
    Ok(())
}

/// Splits an RFC 6901 pointer into unescaped tokens (`~1` is `/`, `~0` is `~`).
fn tokens(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(vec![]);
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| PatchError::BadRequest(format!("JSON pointer {pointer:?} must start with /")))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn parent<'a>(root: &'a mut Value, toks: &[String], path: &str) -> Result<&'a mut Value, PatchError> {
    let mut cur = root;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::Invalid(format!("path {path} does not exist")))?;
    }
    Ok(cur)
}

pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), PatchError> {
    let ops = ops.as_array().ok_or_else(|| PatchError::BadRequest("a JSON patch is a list of operations".into()))?;
    // All or nothing, as the API server applies a patch.
    let mut work = target.clone();
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let mut toks = tokens(path)?;
        let last = toks.pop().ok_or_else(|| PatchError::BadRequest("cannot patch the whole object".into()))?;
        let value = op.get("value").cloned();
        let p = parent(&mut work, &toks, path)?;
        match (name, p) {
            ("test", p) => {
                let have = match p {
                    Value::Object(m) => m.get(&last),
                    Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                if have != value.as_ref() {
                    return Err(PatchError::Invalid(format!("test failed at {path}")));
                }
            }
            ("add" | "replace", Value::Object(m)) => {
                if name == "replace" && !m.contains_key(&last) {
                    return Err(PatchError::Invalid(format!("replace: {path} does not exist")));
                }
                m.insert(last, value.ok_or_else(|| PatchError::BadRequest(format!("{name} needs a value")))?);
            }
            ("remove", Value::Object(m)) => {
                m.remove(&last).ok_or_else(|| PatchError::Invalid(format!("remove: {path} does not exist")))?;
            }
            ("add" | "replace" | "remove", _) => {
                return Err(PatchError::BadRequest(format!("fake apiserver: {name} inside lists is not implemented")))
            }
            (other, _) => {
                return Err(PatchError::BadRequest(format!(
                    "fake apiserver: JSON patch op {other:?} is not implemented"
                )))
            }
        }
    }
    *target = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut o = json!({"metadata": {"name": "n", "annotations": {"a": "1", "b": "2"}}});
        merge(&mut o, &json!({"metadata": {"annotations": {"a": null, "c": "3"}}}));
        assert_eq!(o, json!({"metadata": {"name": "n", "annotations": {"b": "2", "c": "3"}}}));
        assert!(strategic(&mut o, &json!({"spec": {"taints": []}})).is_err());
    }

    #[test]
    fn json_patch_escapes_and_tests() {
        let mut o = json!({"metadata": {"annotations": {"weft.dev/subnet": "x"}}});
        let ok = json!([
            {"op": "test", "path": "/metadata/annotations/weft.dev~1subnet", "value": "x"},
            {"op": "replace", "path": "/metadata/annotations/weft.dev~1subnet", "value": "y"},
            {"op": "add", "path": "/metadata/annotations/k", "value": "v"}
        ]);
        json_patch(&mut o, &ok).unwrap();
        assert_eq!(o["metadata"]["annotations"], json!({"weft.dev/subnet": "y", "k": "v"}));
        let before = o.clone();
        let failing = json!([
            {"op": "remove", "path": "/metadata/annotations/k"},
            {"op": "test", "path": "/metadata/annotations/weft.dev~1subnet", "value": "x"}
        ]);
        assert!(matches!(json_patch(&mut o, &failing), Err(PatchError::Invalid(_))));
        assert_eq!(o, before, "a failed patch changes nothing");
    }
}
