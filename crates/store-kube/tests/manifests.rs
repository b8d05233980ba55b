//! deploy/weft.yaml is what operators apply, and nothing runs it on our machines, so this test reads it as the
//! API server would: every document parses into its k8s-openapi type; the DaemonSet has what a CNI DaemonSet
//! needs; its environment names only flags weftd has; RBAC equals `API_CALLS` exactly; the admission policy
//! matches exactly the writes in `API_CALLS` (its CEL rules are evaluated in tests/admission.rs); the Network
//! CRD names what the store calls, its schema has exactly the fields of the Rust types and accepts what weft
//! writes and refuses what it must (tests/manifests/crd.rs).
//!
//! Run: `cargo test -p weft-store-kube --test manifests`.
use clap::CommandFactory;
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use weft_store_kube::{KubeUrl, API_CALLS, CONFIG_KEY, CONFIG_MAP, SYSTEM_NAMESPACE};

#[path = "manifests/crd.rs"]
mod crd;

struct Manifest {
    namespace: Namespace,
    service_account: ServiceAccount,
    cluster_role: ClusterRole,
    cluster_role_binding: ClusterRoleBinding,
    role: Role,
    role_binding: RoleBinding,
    config_map: ConfigMap,
    daemon_set: DaemonSet,
    admission_policy: ValidatingAdmissionPolicy,
    admission_binding: ValidatingAdmissionPolicyBinding,
    network_crd: CustomResourceDefinition,
}

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn typed<T: DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{} does not parse: {e}", doc["kind"]))
}

fn load() -> Manifest {
    let text = std::fs::read(deploy_dir().join("weft.yaml")).expect("deploy/weft.yaml");
    let docs = weft_store_kube::fake::parse_documents(&text).expect("YAML");
    let mut by_kind: BTreeMap<String, Value> = BTreeMap::new();
    for d in docs {
        let kind = d["kind"].as_str().expect("every document has a kind").to_string();
        assert!(by_kind.insert(kind.clone(), d).is_none(), "one {kind} only");
    }
    let take = |k: &str| by_kind.get(k).unwrap_or_else(|| panic!("deploy/weft.yaml has no {k}")).clone();
    let m = Manifest {
        namespace: typed(&take("Namespace")),
        service_account: typed(&take("ServiceAccount")),
        cluster_role: typed(&take("ClusterRole")),
        cluster_role_binding: typed(&take("ClusterRoleBinding")),
        role: typed(&take("Role")),
        role_binding: typed(&take("RoleBinding")),
        config_map: typed(&take("ConfigMap")),
        daemon_set: typed(&take("DaemonSet")),
        admission_policy: typed(&take("ValidatingAdmissionPolicy")),
        admission_binding: typed(&take("ValidatingAdmissionPolicyBinding")),
        network_crd: typed(&take("CustomResourceDefinition")),
    };
    assert_eq!(by_kind.len(), 11, "unexpected documents: {:?}", by_kind.keys().collect::<Vec<_>>());
    m
}

#[test]
fn every_yaml_in_deploy_parses() {
    let mut seen = 0;
    for e in std::fs::read_dir(deploy_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let docs = weft_store_kube::fake::parse_documents(&std::fs::read(&p).unwrap()).unwrap();
            assert!(!docs.is_empty(), "{} is empty", p.display());
            seen += 1;
        }
    }
    assert!(seen >= 1);
    load();
}

/// (group, resource, verb) triples a set of rules grants, refusing anything broader than a plain list.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none(), "unexpected rule shape: {r:?}");
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    assert!(g != "*" && res != "*" && v != "*", "wildcards grant more than weft calls: {r:?}");
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

fn declared(namespace: Option<&str>) -> BTreeSet<(String, String, String)> {
    API_CALLS
        .iter()
        .filter(|c| c.namespace == namespace)
        .map(|c| (c.group.to_string(), c.resource.to_string(), c.verb.to_string()))
        .collect()
}

fn bound_to_our_account(role_ref: &RoleRef, kind: &str, name: &str, subjects: &Option<Vec<Subject>>, m: &Manifest) {
    assert_eq!((role_ref.kind.as_str(), role_ref.name.as_str()), (kind, name));
    let sa = &m.service_account.metadata;
    let subjects = subjects.as_ref().expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), sa.name.as_ref());
    assert_eq!(subjects[0].namespace, sa.namespace);
}

#[test]
fn rbac_grants_exactly_the_api_calls() {
    let m = load();
    assert_eq!(m.namespace.metadata.name.as_deref(), Some(SYSTEM_NAMESPACE));
    assert_eq!(m.service_account.metadata.namespace.as_deref(), Some(SYSTEM_NAMESPACE));
    assert_eq!(grants(m.cluster_role.rules.as_deref().unwrap_or_default()), declared(None), "ClusterRole vs API_CALLS");
    assert_eq!(m.role.metadata.namespace.as_deref(), Some(SYSTEM_NAMESPACE));
    assert_eq!(
        grants(m.role.rules.as_deref().unwrap_or_default()),
        declared(Some(SYSTEM_NAMESPACE)),
        "Role vs API_CALLS"
    );
    assert!(API_CALLS.iter().all(|c| c.namespace.is_none() || c.namespace == Some(SYSTEM_NAMESPACE)));
    let cr = m.cluster_role.metadata.name.clone().unwrap();
    bound_to_our_account(&m.cluster_role_binding.role_ref, "ClusterRole", &cr, &m.cluster_role_binding.subjects, &m);
    let r = m.role.metadata.name.clone().unwrap();
    assert_eq!(m.role_binding.metadata.namespace.as_deref(), Some(SYSTEM_NAMESPACE));
    bound_to_our_account(&m.role_binding.role_ref, "Role", &r, &m.role_binding.subjects, &m);
}

#[test]
fn config_map_holds_a_valid_network_config_and_the_conflist() {
    let m = load();
    assert_eq!(m.config_map.metadata.name.as_deref(), Some(CONFIG_MAP));
    assert_eq!(m.config_map.metadata.namespace.as_deref(), Some(SYSTEM_NAMESPACE));
    let data = m.config_map.data.expect("data");
    let net: weft_types::NetworkConfig = serde_json::from_str(&data[CONFIG_KEY]).expect("network.json");
    net.validate().expect("a valid network config");
    let conflist: Value = serde_json::from_str(&data["10-weft.conflist"]).expect("conflist JSON");
    assert_eq!(
        conflist,
        serde_json::json!({"cniVersion": "1.0.0", "name": "weft", "plugins": [
            {"type": "weft"}, {"type": "portmap", "capabilities": {"portMappings": true}}]})
    );
}

fn env<'a>(c: &'a Container, name: &str) -> &'a k8s_openapi::api::core::v1::EnvVar {
    c.env.iter().flatten().find(|e| e.name == name).unwrap_or_else(|| panic!("{} has no env {name}", c.name))
}

fn field_ref(c: &Container, name: &str) -> String {
    env(c, name).value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("fieldRef").field_path.clone()
}

/// The hostPath behind a container's mount at `path`.
fn host_path(m: &Manifest, c: &Container, path: &str) -> Option<String> {
    let spec = m.daemon_set.spec.as_ref()?.template.spec.as_ref()?;
    let mount = c.volume_mounts.iter().flatten().find(|v| v.mount_path == path)?;
    let vol = spec.volumes.iter().flatten().find(|v| v.name == mount.name)?;
    vol.host_path.as_ref().map(|h| h.path.clone())
}

#[test]
fn daemon_set_has_what_a_cni_needs() {
    let m = load();
    let ds = m.daemon_set.spec.as_ref().expect("spec");
    let pod = ds.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name, m.service_account.metadata.name);
    // Tolerating everything: an Exists toleration with no key and no effect.
    assert!(pod
        .tolerations
        .iter()
        .flatten()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()));

    let init = &pod.init_containers.as_ref().expect("init containers")[0];
    let script = init.command.as_ref().unwrap().join(" ");
    assert!(script.contains("/host/opt/cni/bin/weft") && script.contains("/host/etc/cni/net.d/10-weft.conflist"));
    assert_eq!(host_path(&m, init, "/host/opt/cni/bin").as_deref(), Some("/opt/cni/bin"));
    assert_eq!(host_path(&m, init, "/host/etc/cni/net.d").as_deref(), Some("/etc/cni/net.d"));

    let agent = &pod.containers[0];
    assert_eq!(field_ref(agent, "WEFT_NODE_NAME"), "spec.nodeName");
    assert_eq!(field_ref(agent, "WEFT_NODE_IP"), "status.hostIP");
    let store = env(agent, "WEFT_STORE").value.clone().unwrap();
    assert_eq!(store.parse::<KubeUrl>().unwrap(), KubeUrl::Infer);
    assert_eq!(env(agent, "WEFT_UNINSTALL").value.as_deref(), Some("false"), "a rolling update must not uninstall");
    let node_file = env(agent, "WEFT_NODE_FILE").value.clone().unwrap();
    assert_eq!(node_file, weft_types::node_file::DEFAULT_PATH, "the plugin reads the default node file");
    assert_eq!(host_path(&m, agent, "/run/weft").as_deref(), Some("/run/weft"));
    let net = env(agent, "WEFT_NETWORK_CONFIG").value.clone().unwrap();
    let mount = agent.volume_mounts.iter().flatten().find(|v| net.starts_with(&v.mount_path)).expect("config mount");
    let vol = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
    assert_eq!(vol.config_map.as_ref().map(|c| c.name.as_str()), Some(CONFIG_MAP));
    assert!(net.ends_with(CONFIG_KEY));

    // The agent listens on the node's loopback only (pods must not read /status), and the probes go there
    // (hostNetwork: the kubelet's 127.0.0.1 is the agent's).
    let listen: std::net::SocketAddr = env(agent, "WEFT_LISTEN").value.as_ref().unwrap().parse().unwrap();
    assert!(listen.ip().is_loopback(), "weftd listens on {listen}: pods could read /status and /metrics");
    for (probe, path) in [(&agent.readiness_probe, "/readyz"), (&agent.liveness_probe, "/healthz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("httpGet probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.host.as_deref(), Some(listen.ip().to_string().as_str()), "probe {path} misses the listener");
        assert_eq!(get.port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i32::from(listen.port())));
    }
    assert!(agent.ports.is_none(), "a containerPort suggests the agent is reachable on the pod (node) address");

    // The capabilities it needs and no more.
    let sc = agent.security_context.as_ref().expect("securityContext");
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string()][..]));
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
}

/// Every WEFT_* variable the DaemonSet sets is one weftd reads: a renamed flag breaks this test, not a cluster.
#[test]
fn daemon_set_env_names_only_flags_weftd_has() {
    let m = load();
    let known: BTreeSet<String> = weft_agent::AgentConfig::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    let pod = m.daemon_set.spec.unwrap().template.spec.unwrap();
    for e in pod.containers[0].env.iter().flatten() {
        assert!(known.contains(&e.name), "weftd has no flag reading {} (known: {known:?})", e.name);
    }
}

/// The admission policy matches exactly the writes weft makes (each `API_CALLS` write, as its admission
/// operation), only requests of weft's service account, fails closed, and is bound with Deny.
#[test]
fn admission_policy_matches_exactly_the_writes() {
    let m = load();
    let spec = m.admission_policy.spec.as_ref().expect("policy spec");
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"), "an unevaluable rule must deny, not allow");
    let mut matched = BTreeSet::new();
    for r in spec.match_constraints.as_ref().and_then(|c| c.resource_rules.as_ref()).expect("resourceRules") {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for op in r.operations.iter().flatten() {
                    assert!(g != "*" && res != "*" && op != "*", "wildcards match more than weft writes: {r:?}");
                    matched.insert((g.clone(), res.clone(), op.clone()));
                }
            }
        }
    }
    let writes: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .filter_map(|c| Some((c.group.to_string(), c.resource.to_string(), c.admission_operation()?.to_string())))
        .collect();
    assert_eq!(matched, writes, "admission policy vs the writes in API_CALLS");
    let sa = &m.service_account.metadata;
    let user = format!("system:serviceaccount:{}:{}", sa.namespace.as_deref().unwrap(), sa.name.as_deref().unwrap());
    let conditions = spec.match_conditions.as_ref().expect("matchConditions");
    assert!(conditions.iter().any(|c| c.expression.contains(&format!("'{user}'"))), "not keyed on {user}");
    assert!(spec.validations.as_ref().is_some_and(|v| !v.is_empty()));

    let binding = m.admission_binding.spec.as_ref().expect("binding spec");
    assert_eq!(binding.policy_name.as_deref(), m.admission_policy.metadata.name.as_deref());
    assert_eq!(binding.validation_actions.as_deref(), Some(&["Deny".to_string()][..]));
    assert!(binding.param_ref.is_none() && spec.param_kind.is_none(), "the policy takes no parameters");
}
