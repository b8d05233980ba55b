//! The `networks.weft.dev` CRD in deploy/weft.yaml, read as the API server would: it names the group, version,
//! kind and plural the store calls, has a status subresource and the printer columns, and its OpenAPI schema
//! has exactly the fields of `TenantNetwork` (minus `name`) and `NetworkNodeStatus`. The schema is then run
//! over objects: what weft writes passes, hostile or broken values fail. No API server runs here, so a small
//! structural-schema checker stands in for it (the keywords the CRD uses: type, properties, required,
//! additionalProperties, items, pattern with RE2 syntax, minimum/maximum, maxLength/maxItems/maxProperties),
//! and the `x-kubernetes-validations` rules run in the `cel` crate. Unknown fields, which the API server would
//! prune silently, are errors here: they mean the schema and the Rust types drifted apart.
use super::load;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use weft_store_kube::network::{self, object_of, status_patch};
use weft_types::tenant::{NetworkNodeStatus, TenantNetwork};

fn schema() -> Value {
    let m = load();
    let v = &m.network_crd.spec.versions[0];
    let s = v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("openAPIV3Schema");
    serde_json::to_value(s).unwrap()
}

/// Errors of `v` against `s` at `path` (empty: valid).
fn check(s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    let ty = s["type"].as_str().unwrap_or_else(|| panic!("{path}: a structural schema gives every node a type"));
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        other => panic!("{path}: type {other} is not used by this CRD"),
    };
    if !ok {
        errs.push(format!("{path}: not a {ty}: {v}"));
        return;
    }
    if let Some(p) = s["pattern"].as_str() {
        if !regex::Regex::new(p).unwrap().is_match(v.as_str().unwrap()) {
            errs.push(format!("{path}: {v} does not match {p}"));
        }
    }
    // k8s-openapi holds minimum/maximum as f64: exact for every integer bound this CRD uses (< 2^53).
    if let (Some(min), Some(n)) = (s["minimum"].as_f64(), v.as_f64()) {
        if n < min {
            errs.push(format!("{path}: {n} < minimum {min}"));
        }
    }
    if let (Some(max), Some(n)) = (s["maximum"].as_f64(), v.as_f64()) {
        if n > max {
            errs.push(format!("{path}: {n} > maximum {max}"));
        }
    }
    let len = |k: &str, have: usize| {
        s[k].as_u64().filter(|max| have as u64 > *max).map(|max| format!("{path}: length {have} > {k} {max}"))
    };
    errs.extend(v.as_str().and_then(|x| len("maxLength", x.chars().count())));
    errs.extend(v.as_array().and_then(|a| len("maxItems", a.len())));
    errs.extend(v.as_object().and_then(|o| len("maxProperties", o.len())));
    if let Some(items) = v.as_array() {
        for (i, x) in items.iter().enumerate() {
            check(&s["items"], x, &format!("{path}[{i}]"), errs);
        }
    }
    if let Some(o) = v.as_object() {
        for r in s["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !o.contains_key(r) {
                errs.push(format!("{path}: {r} is required"));
            }
        }
        for (k, x) in o {
            let p = format!("{path}.{k}");
            match (s["properties"].get(k), s.get("additionalProperties")) {
                (Some(ps), _) => check(ps, x, &p, errs),
                (None, Some(ap)) if ap.is_object() => check(ap, x, &p, errs),
                // metadata is the API server's (ObjectMeta), not the CRD's.
                _ if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) => {}
                _ => errs.push(format!("{p}: unknown field (the API server would prune it)")),
            }
        }
    }
}

/// The CRD's root `x-kubernetes-validations`, evaluated over the object as `self`: the messages of the rules
/// that fail.
fn cel_rules(s: &Value, obj: &Value) -> Vec<String> {
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("self", cel::to_value(obj).unwrap());
    let mut out = Vec::new();
    for r in s["x-kubernetes-validations"].as_array().expect("root validations") {
        let rule = r["rule"].as_str().unwrap();
        let prog = cel::Program::compile(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
        match prog.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => out.push(r["message"].as_str().unwrap().to_string()),
            other => panic!("{rule} gave {other:?}"),
        }
    }
    out
}

fn validate(obj: &Value) -> Vec<String> {
    let s = schema();
    let mut errs = Vec::new();
    check(&s, obj, "", &mut errs);
    errs.extend(cel_rules(&s, obj));
    errs
}

fn full_network() -> TenantNetwork {
    serde_json::from_value(json!({"name": "blue", "cidr": "10.50.0.0/16", "subnetLen": 24, "vni": 16777215,
        "cidr6": "fd00:50::/48", "subnetLen6": 80, "masquerade": false,
        "namespaces": {"names": ["team-a", "b"], "matchLabels": {"tenant": "blue", "example.com/x": ""}}}))
    .unwrap()
}

fn full_status() -> NetworkNodeStatus {
    NetworkNodeStatus {
        ready: false,
        subnet: Some("10.50.3.0/24".parse().unwrap()),
        subnet6: Some("fd00:50:0:0:3::/80".parse().unwrap()),
        used: 4_294_967_295,
        capacity: 253,
        reason: Some("namespace team-a is claimed by network red too".into()),
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn the_crd_is_what_the_store_calls() {
    let crd = load().network_crd;
    assert_eq!(crd.metadata.name.as_deref(), Some("networks.weft.dev"));
    let spec = &crd.spec;
    assert_eq!((spec.group.as_str(), spec.scope.as_str()), (network::GROUP, "Cluster"));
    assert_eq!((spec.names.kind.as_str(), spec.names.plural.as_str()), (network::KIND, network::PLURAL));
    assert_eq!(spec.versions.len(), 1);
    let v = &spec.versions[0];
    assert_eq!(v.name, network::VERSION);
    assert!(v.served && v.storage);
    assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "status subresource");
    let cols: Vec<(&str, &str)> =
        v.additional_printer_columns.iter().flatten().map(|c| (c.name.as_str(), c.json_path.as_str())).collect();
    for want in [("CIDR", ".spec.cidr"), ("VNI", ".spec.vni")] {
        assert!(cols.contains(&want), "printer column {want:?} in {cols:?}");
    }
}

#[test]
fn the_schema_has_exactly_the_fields_of_the_rust_types() {
    let s = schema();
    let spec = &s["properties"]["spec"];
    let mut want = keys(&serde_json::to_value(full_network()).unwrap());
    want.remove("name");
    assert_eq!(keys(&spec["properties"]), want, "spec vs TenantNetwork");
    let ns = serde_json::to_value(&full_network().namespaces).unwrap();
    assert_eq!(keys(&spec["properties"]["namespaces"]["properties"]), keys(&ns), "namespaces vs NamespaceSelector");
    // The API server refuses what every agent would refuse (the node file's size bounds).
    let sel = &spec["properties"]["namespaces"]["properties"];
    assert_eq!(sel["names"]["maxItems"], json!(weft_types::tenant::MAX_NAMES));
    assert_eq!(sel["matchLabels"]["maxProperties"], json!(weft_types::tenant::MAX_LABELS));
    let node = &s["properties"]["status"]["properties"]["nodes"]["additionalProperties"];
    assert_eq!(keys(&node["properties"]), keys(&serde_json::to_value(full_status()).unwrap()), "vs NetworkNodeStatus");
    // The serde defaults and the schema defaults agree (the API server fills them in).
    let minimal: TenantNetwork = serde_json::from_value(json!({"name": "x", "cidr": "10.0.0.0/8", "vni": 5})).unwrap();
    assert_eq!(spec["properties"]["subnetLen"]["default"], json!(minimal.subnet_len));
    assert_eq!(spec["properties"]["subnetLen6"]["default"], json!(minimal.subnet_len6));
    assert_eq!(spec["properties"]["masquerade"]["default"], json!(minimal.masquerade));
}

#[test]
fn what_weft_writes_passes_the_schema() {
    for net in [
        full_network(),
        serde_json::from_value(json!({"name": "b", "cidr": "192.168.0.0/24", "subnetLen": 30,
        "vni": 1}))
        .unwrap(),
    ] {
        let obj = object_of(&net);
        assert_eq!(validate(&obj), Vec::<String>::new(), "{obj}");
        // With every node's status as the store's merge patch writes it (the nulls are removed by the patch).
        let mut with_status = obj.clone();
        for node in ["n1", "node-2.example.com"] {
            weft_store_kube::fake::patch::merge(&mut with_status, &status_patch(node, Some(&full_status())));
        }
        let minimal = NetworkNodeStatus { ready: true, used: 0, capacity: 0, ..Default::default() };
        weft_store_kube::fake::patch::merge(&mut with_status, &status_patch("n3", Some(&minimal)));
        assert_eq!(validate(&with_status), Vec::<String>::new(), "{with_status}");
    }
}

#[test]
fn the_schema_refuses_hostile_and_broken_networks() {
    let good = object_of(&full_network());
    let cases: Vec<(&str, Value)> = vec![
        ("/spec/cidr", json!("10.50.0.0")),
        ("/spec/cidr", json!("10.50.0.0/33")),
        ("/spec/cidr", json!("0.0.0.0/0")),
        ("/spec/cidr", json!("10.500.0.0/16")),
        ("/spec/cidr", json!("10.50.0.0/16; rm -rf /")),
        ("/spec/cidr6", json!("fd00:50::")),
        ("/spec/cidr6", json!("::/0")),
        ("/spec/cidr6", json!("fd00:50::/129")),
        ("/spec/cidr6", json!("10.0.0.0/16")),
        ("/spec/vni", json!(0)),
        ("/spec/vni", json!(16777216)),
        ("/spec/vni", json!("100")),
        ("/spec/subnetLen", json!(31)),
        ("/spec/subnetLen", json!(8)),
        ("/spec/subnetLen6", json!(121)),
        ("/spec/masquerade", json!("yes")),
        ("/spec/namespaces/names", json!(["Team-A"])),
        ("/spec/namespaces/names", json!("team-a")),
        ("/spec/namespaces/matchLabels", json!({"tenant": 1})),
        ("/spec/table", json!(254)),
        ("/status/nodes/n1", json!({"ready": true, "used": -1, "capacity": 1})),
        ("/status/nodes/n1", json!({"ready": true, "used": 0})),
        ("/status/nodes/n1", json!({"ready": true, "used": 0, "capacity": 4294967296u64})),
        ("/status/nodes/n1", json!({"ready": true, "used": 0, "capacity": 1, "subnet": "x"})),
        ("/status/nodes/n1", json!({"ready": true, "used": 0, "capacity": 1, "reason": "x".repeat(1025)})),
    ];
    for (path, bad) in cases {
        let mut o = good.clone();
        let (parent, field) = path.rsplit_once('/').unwrap();
        if o.pointer(parent).is_none() {
            o["status"] = json!({"nodes": {}});
        }
        o.pointer_mut(parent).unwrap()[field] = bad.clone();
        assert!(!validate(&o).is_empty(), "{path} = {bad} was accepted");
    }
    let mut no_vni = good.clone();
    no_vni["spec"].as_object_mut().unwrap().remove("vni");
    assert!(validate(&no_vni).iter().any(|e| e.contains("vni is required")));
    for name in ["default", "Blue", "a-very-long-network-name-of-33-chars", "-x", "x.y"] {
        let mut o = good.clone();
        o["metadata"]["name"] = json!(name);
        assert!(!validate(&o).is_empty(), "name {name} was accepted");
    }
    let mut longest = good.clone();
    longest["metadata"]["name"] = json!("a".repeat(32));
    assert_eq!(validate(&longest), Vec::<String>::new());
}
