//! The ValidatingAdmissionPolicy in deploy/weft.yaml, evaluated as the API server would, against the requests an
//! honest agent makes and those a compromised node would try.
//!
//! No API server runs on our machines, so the policy's CEL (match conditions, variables, validations) runs
//! in the `cel` crate over JSON request objects shaped like the API server's admission attributes (`request`
//! with `userInfo`, `resource`, `operation`, `name`; `object`; `oldObject`, null where Kubernetes sets it null).
//! The writes are the ones the store really sends: Node merge patches from `node::publish_patch` and
//! `node::release_patch` applied to a Node, claims shaped like `alloc`'s. What this cannot prove is the API
//! server's own CEL type checker (cel-go): the expressions stick to the core language both implement.
//!
//! Run: `cargo test -p weft-store-kube --test admission`.
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use serde_json::{json, Value};
use std::path::PathBuf;
use weft_store_kube::fake::patch::merge;
use weft_store_kube::node::{self, Source};

const AGENT: &str = "system:serviceaccount:weft-system:weft";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const CEL_ERROR: &str = "CEL error:";

fn policy() -> ValidatingAdmissionPolicy {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/weft.yaml");
    let docs = weft_store_kube::fake::parse_documents(&std::fs::read(path).unwrap()).unwrap();
    let doc = docs.into_iter().find(|d| d["kind"] == "ValidatingAdmissionPolicy").expect("an admission policy");
    serde_json::from_value(doc).expect("ValidatingAdmissionPolicy")
}

/// What the API server answers: Ok (admitted, or the policy does not apply) or the denial message.
fn admit(p: &ValidatingAdmissionPolicy, req: &Value) -> Result<(), String> {
    let spec = p.spec.as_ref().unwrap();
    let (group, op) =
        (req["request"]["resource"]["group"].as_str().unwrap(), req["request"]["operation"].as_str().unwrap());
    // A subresource is matched as `resource/subresource`, as resourceRules name it.
    let mut resource = req["request"]["resource"]["resource"].as_str().unwrap().to_string();
    if let Some(sub) = req["request"]["subResource"].as_str().filter(|s| !s.is_empty()) {
        resource = format!("{resource}/{sub}");
    }
    let rules = spec.match_constraints.as_ref().unwrap().resource_rules.as_ref().unwrap();
    let matched = rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| *x == resource)
            && r.operations.iter().flatten().any(|o| o == op)
    });
    if !matched {
        return Ok(());
    }
    let mut ctx = cel::Context::default();
    for k in ["request", "object", "oldObject"] {
        ctx.add_variable_from_value(k, cel::to_value(&req[k]).unwrap());
    }
    // failurePolicy Fail: an expression that errors denies.
    let eval = |ctx: &cel::Context, src: &str| -> Result<cel::Value, String> {
        let prog = cel::Program::compile(src).map_err(|e| format!("{CEL_ERROR} {src}: does not parse: {e}"))?;
        prog.execute(ctx).map_err(|e| format!("{CEL_ERROR} {src}: {e}"))
    };
    for c in spec.match_conditions.iter().flatten() {
        match eval(&ctx, &c.expression)? {
            cel::Value::Bool(true) => {}
            cel::Value::Bool(false) => return Ok(()),
            other => return Err(format!("{CEL_ERROR} match condition {} gave {other:?}", c.name)),
        }
    }
    // Kubernetes evaluates variables lazily; these are total (they guard their own nulls), so eagerly is the same.
    let mut vars = serde_json::Map::new();
    for v in spec.variables.iter().flatten() {
        ctx.add_variable_from_value("variables", cel::to_value(&vars).unwrap());
        let val = eval(&ctx, &v.expression)?;
        vars.insert(v.name.clone(), val.json().map_err(|e| format!("{CEL_ERROR} variable {}: {e:?}", v.name))?);
    }
    ctx.add_variable_from_value("variables", cel::to_value(&vars).unwrap());
    for v in spec.validations.iter().flatten() {
        match eval(&ctx, &v.expression)? {
            cel::Value::Bool(true) => {}
            cel::Value::Bool(false) => {
                let msg = match &v.message_expression {
                    Some(e) => match eval(&ctx, e)? {
                        cel::Value::String(s) => s.to_string(),
                        other => return Err(format!("{CEL_ERROR} messageExpression gave {other:?}")),
                    },
                    None => v.message.clone().unwrap_or_else(|| format!("failed: {}", v.expression)),
                };
                return Err(msg);
            }
            other => return Err(format!("{CEL_ERROR} validation {} gave {other:?}", v.expression)),
        }
    }
    Ok(())
}

/// A request from weft's service account on `node` (None: a token without the node claim).
fn request(node: Option<&str>, group: &str, resource: &str, op: &str, name: &str, obj: Value, old: Value) -> Value {
    let extra = match node {
        Some(n) => json!({ NODE_NAME: [n], "authentication.kubernetes.io/pod-name": ["weft-abcde"] }),
        None => json!({}),
    };
    json!({
        "request": {
            "userInfo": {"username": AGENT, "groups": ["system:serviceaccounts"], "extra": extra},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "operation": op, "name": name, "namespace": if resource == "nodes" { "" } else { "weft-system" },
        },
        "object": obj,
        "oldObject": old,
    })
}

fn k8s_node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"),
            "labels": {"kubernetes.io/hostname": name},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
    })
}

/// UPDATE of Node `target` by the agent on `caller`, with the merge patch applied as the API server would.
fn patch_node(caller: Option<&str>, target: &str, patch: &Value) -> Value {
    let old = k8s_node(target);
    let mut new = old.clone();
    merge(&mut new, patch);
    request(caller, "", "nodes", "UPDATE", target, new, old)
}

fn publish(node: &str) -> Value {
    let lease = weft_types::Lease {
        node: node.into(),
        subnet: "10.244.1.0/24".parse().unwrap(),
        subnet6: None,
        node_ip: "192.168.1.2".parse().unwrap(),
        backend_data: weft_types::BackendData::Vxlan { vtep_mac: "02:00:00:00:00:01".into() },
        expires_at_ms: 1_800_000_000_000,
    };
    node::publish_patch(&lease, Source::Weft, 1_799_999_000_000)
}

fn claim(holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "subnet-10-244-1-0-24", "namespace": "weft-system",
            "labels": {weft_store_kube::alloc::CLAIM_LABEL: "true"},
            "annotations": {node::SUBNET: "10.244.1.0/24"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": holder, "uid": format!("uid-{holder}")}]},
        "spec": {"holderIdentity": holder},
    })
}

fn lease_req(caller: Option<&str>, op: &str, holder: &str) -> Value {
    let (obj, old) = match op {
        "CREATE" => (claim(holder), Value::Null),
        _ => (Value::Null, claim(holder)),
    };
    request(caller, "coordination.k8s.io", "leases", op, "subnet-10-244-1-0-24", obj, old)
}

/// A denial by a rule that evaluated to false: an expression error also denies (failurePolicy Fail), but would
/// mean the rule is broken, not that it works.
fn denied(r: Result<(), String>, what: &str) -> String {
    let msg = r.expect_err(&format!("{what} was admitted"));
    assert!(!msg.starts_with(CEL_ERROR), "{what}: denied by an evaluation error, not by a rule: {msg}");
    msg
}

#[test]
fn an_agent_publishes_and_releases_its_own_node() {
    let p = policy();
    admit(&p, &patch_node(Some("n1"), "n1", &publish("n1"))).expect("publishing its lease on its Node");
    admit(&p, &patch_node(Some("n1"), "n1", &node::release_patch())).expect("releasing its lease on its Node");
}

#[test]
fn an_agent_cannot_touch_another_node() {
    let p = policy();
    let msg = denied(admit(&p, &patch_node(Some("n1"), "n2", &publish("n2"))), "n1 rewriting n2's weft.dev/*");
    assert!(msg.contains("n1") && msg.contains("n2"), "{msg}");
    denied(admit(&p, &patch_node(Some("n1"), "n2", &node::release_patch())), "n1 dropping n2's lease");
}

#[test]
fn on_its_own_node_an_agent_changes_only_weft_annotations() {
    let p = policy();
    for (what, patch) in [
        ("a label", json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}})),
        ("a label removed", json!({"metadata": {"labels": {"kubernetes.io/hostname": null}}})),
        ("another annotation", json!({"metadata": {"annotations": {"node.alpha.kubernetes.io/ttl": "30"}}})),
        ("an annotation removed", json!({"metadata": {"annotations": {"node.alpha.kubernetes.io/ttl": null}}})),
        ("a new annotation", json!({"metadata": {"annotations": {"example.com/x": "1"}}})),
        ("the spec", json!({"spec": {"unschedulable": true}})),
        ("the podCIDR", json!({"spec": {"podCIDR": "10.244.9.0/24"}})),
    ] {
        let msg = denied(admit(&p, &patch_node(Some("n1"), "n1", &patch)), what);
        assert!(msg.contains("weft.dev"), "{what}: {msg}");
    }
}

#[test]
fn an_agent_claims_and_releases_only_its_own_subnet() {
    let p = policy();
    admit(&p, &lease_req(Some("n1"), "CREATE", "n1")).expect("claiming a subnet for itself");
    admit(&p, &lease_req(Some("n1"), "DELETE", "n1")).expect("releasing its own claim");
    denied(admit(&p, &lease_req(Some("n1"), "CREATE", "n2")), "a claim made out to another node");
    let msg = denied(admit(&p, &lease_req(Some("n1"), "DELETE", "n2")), "deleting another node's claim");
    assert!(msg.contains("subnet-10-244-1-0-24"), "{msg}");
    let mut nameless = lease_req(Some("n1"), "CREATE", "n1");
    nameless["object"]["spec"] = json!({});
    denied(admit(&p, &nameless), "a claim without a holder");
}

#[test]
fn a_token_without_the_node_claim_is_refused() {
    let p = policy();
    let msg = denied(admit(&p, &patch_node(None, "n1", &publish("n1"))), "a write without a node name");
    assert!(msg.contains("1.30"), "the message says what is needed: {msg}");
    denied(admit(&p, &lease_req(None, "CREATE", "n1")), "a claim without a node name");
}

#[test]
fn the_policy_leaves_everyone_else_alone() {
    let p = policy();
    // An administrator (or the controller manager) is not weft: the policy does not apply.
    let mut admin = patch_node(Some("n1"), "n2", &json!({"metadata": {"labels": {"x": "y"}}}));
    admin["request"]["userInfo"]["username"] = json!("kubernetes-admin");
    admit(&p, &admin).expect("another user is not matched");
    // Writes weft does not make are not matched (RBAC refuses them anyway).
    let r = request(Some("n1"), "", "pods", "CREATE", "x", json!({"metadata": {"name": "x"}}), Value::Null);
    admit(&p, &r).expect("not a matched resource");
    // The network config ConfigMap, created by whichever agent comes first; nothing else.
    let cm = |name: &str| json!({"metadata": {"name": name, "namespace": "weft-system"}, "data": {}});
    admit(&p, &request(Some("n1"), "", "configmaps", "CREATE", "weft-config", cm("weft-config"), Value::Null))
        .expect("the network config");
    denied(admit(&p, &request(Some("n1"), "", "configmaps", "CREATE", "x", cm("x"), Value::Null)), "another ConfigMap");
}

/// UPDATE of Network `net`'s status subresource by the agent on `caller`, with the store's merge patch for
/// `node` applied to a Network whose status already has entries for n1 and n2.
fn patch_status(caller: Option<&str>, node: &str, status: Option<&weft_types::tenant::NetworkNodeStatus>) -> Value {
    let net: weft_types::TenantNetwork =
        serde_json::from_value(json!({"name": "blue", "cidr": "10.50.0.0/16", "vni": 100})).unwrap();
    let mut old = weft_store_kube::network::object_of(&net);
    old["status"] = json!({"nodes": {
        "n1": {"ready": true, "used": 0, "capacity": 253, "subnet": "10.50.1.0/24"},
        "n2": {"ready": true, "used": 3, "capacity": 253, "subnet": "10.50.2.0/24"}}});
    let mut new = old.clone();
    merge(&mut new, &weft_store_kube::network::status_patch(node, status));
    let mut r = request(caller, "weft.dev", "networks", "UPDATE", "blue", new, old);
    r["request"]["subResource"] = json!("status");
    r["request"]["resource"]["version"] = json!("v1alpha1");
    r["request"]["namespace"] = json!("");
    r
}

fn node_status(used: u32) -> weft_types::tenant::NetworkNodeStatus {
    weft_types::tenant::NetworkNodeStatus { ready: true, used, capacity: 253, ..Default::default() }
}

#[test]
fn an_agent_writes_only_its_own_entry_of_a_network_status() {
    let p = policy();
    admit(&p, &patch_status(Some("n1"), "n1", Some(&node_status(5)))).expect("its own entry");
    admit(&p, &patch_status(Some("n3"), "n3", Some(&node_status(0)))).expect("a new node adds its entry");
    admit(&p, &patch_status(Some("n1"), "n1", None)).expect("removing its own entry");
    // n1 reporting n2's usage as 0 would let `weftctl network delete` remove a network n2's pods still use.
    let msg = denied(admit(&p, &patch_status(Some("n1"), "n2", Some(&node_status(0)))), "n1 writing n2's entry");
    assert!(msg.contains("status.nodes.n1") && msg.contains("blue"), "{msg}");
    denied(admit(&p, &patch_status(Some("n1"), "n2", None)), "n1 removing n2's entry");
    let mut both = patch_status(Some("n1"), "n1", Some(&node_status(1)));
    both["object"]["status"]["nodes"]["n2"]["used"] = json!(0);
    denied(admit(&p, &both), "n1 changing its own and n2's entry at once");
    denied(admit(&p, &patch_status(None, "n1", Some(&node_status(1)))), "a status write without a node name");
    // An administrator editing a status is not weft: not matched.
    let mut admin = patch_status(Some("n1"), "n2", None);
    admin["request"]["userInfo"]["username"] = json!("kubernetes-admin");
    admit(&p, &admin).expect("another user is not matched");
}
