//! NetworkPolicy enforcement on this node: store objects → model → one nftables table, applied atomically.
//!
//! Pods (endpoints), namespaces and policies are followed from the store like leases are. On any change the
//! whole model is compiled again (compiling is pure and fast: see the policy crate); what reaches the kernel is
//! as small as possible: `weft_policy::plan` diffs the new table against the one the kernel holds, so pod churn
//! is a few element updates and one policy added, changed or removed is that policy's chain, sets and counters
//! plus one dispatch bucket — one nft transaction either way, so no packet ever sees half a policy. The table is
//! replaced whole only at start, when a plan is impossible, or when nft rejects one (drift: the fallback repairs).
//!
//! The periodic pass checks that the table is still there by listing one small set (milliseconds; listing the
//! counters makes nft fetch the whole table, about a second at 1 000 policies), and reads the drop counters for
//! metrics only every `COUNTER_EVERY` passes.
//!
//! No pod starts unprotected: the compiled table drops forwarded traffic from/to pod interfaces whose address is
//! not yet in `@ready` (pods this agent has compiled). A pod created a moment ago is therefore isolated until the
//! agent has taken it into account; it never runs with an allow-all it should not have had.
//!
//! Tenant networks (issue 11): networks are followed too, admitted and resolved with the networks manager's own
//! functions (`networks::parse_networks` with the cluster's VNI, `desired::resolve_namespaces`; none unless the
//! backend is VXLAN), so each namespace is on the first admitted network (by name) whose selector picks it, else
//! the default network, exactly as the node file tells the CNI plugin. The
//! compiler then scopes every pod's rules to its network's link group. Until networks are listed (or when the
//! store cannot list them) the model has none: a tenant pod is then compiled into group 0, which its host veth is
//! not in, so it stays default-deny (`@ready` misses it) rather than being matched as a default-network pod.
use crate::follow::{follow, Listed, Source};
use crate::metrics::Metrics;
use crate::status::{now_ms, PolicyStatus, SharedStatus};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weft_dataplane::Dataplane;
use weft_policy::nft::CounterKind;
use weft_policy::{compile, plan, CompileOptions, Model, Namespace, Pod, Ruleset};
use weft_store::{Object, ObjectEntry, ObjectKind, Revision, Snapshot, Store, StoreError, WatchStream};
use weft_types::{BackendKind, NetworkConfig, NetworkIds};

/// How often the plugin's IPAM directories are checked for new or released reservations.
const IPAM_POLL: Duration = Duration::from_millis(200);
/// Drop counters are exported every this many periodic passes (once a minute with the default 10 s resync).
const COUNTER_EVERY: u32 = 6;
/// Tables up to this size (rules + set elements) are fingerprinted right after each change, so any later edit
/// by hand is found at the next check. Listing a larger one costs up to seconds (10 000 pods × 1 000 policies:
/// ~1.5 s), too much per change: it is fingerprinted at the first check after a change instead, so an edit
/// made between a change and that check goes unnoticed until the next change.
const FINGERPRINT_AFTER_CHANGE_MAX: usize = 20_000;

struct Objects(Arc<dyn Store>, ObjectKind);

impl Source<Object> for Objects {
    fn list(&self) -> BoxFuture<'_, Result<Snapshot<Object>, StoreError>> {
        self.0.objects(self.1)
    }
    fn watch(&self, after: Revision) -> BoxFuture<'_, Result<WatchStream<Object>, StoreError>> {
        self.0.watch_objects(self.1, after)
    }
    fn key(&self, o: &Object) -> String {
        o.0.clone()
    }
    fn what(&self) -> &'static str {
        self.1.as_str()
    }
}

fn same(a: &Object, b: &Object) -> bool {
    a.1 == b.1
}

pub struct PolicyEngine {
    pub dp: Arc<dyn Dataplane>,
    pub node: String,
    pub opts: CompileOptions,
    pub status: SharedStatus,
    pub metrics: Arc<Metrics>,
    pub resync: Duration,
    /// Where status.json goes (written after every policy change, so waiters see it at once).
    pub state_dir: std::path::PathBuf,
    /// The CNI plugin's IPAM `dataDir`: local pods' addresses before their Pod objects have them, and which
    /// network each came from (`local_pods`, `stranded`).
    pub cni_data_dir: std::path::PathBuf,
}

/// Builds the model from the store's objects; objects that do not parse are skipped and reported.
pub fn model_from<'a>(
    pods: impl IntoIterator<Item = &'a Object>,
    namespaces: impl IntoIterator<Item = &'a Object>,
    policies: impl IntoIterator<Item = &'a Object>,
) -> (Model, Vec<String>) {
    let mut errors = vec![];
    let mut m = Model::default();
    // One bad object is skipped (and named in the status and the log); the rest is still compiled. A pod or
    // namespace the API server would reject never reaches the table.
    for (k, v) in pods {
        match serde_json::from_value::<Pod>(v.clone()).map_err(|e| e.to_string()) {
            Ok(p) => match p.validate() {
                Ok(()) => m.pods.push(p),
                Err(e) => errors.push(format!("endpoint {k}: {e}")),
            },
            Err(e) => errors.push(format!("endpoint {k}: {e}")),
        }
    }
    for (k, v) in namespaces {
        match serde_json::from_value::<Namespace>(v.clone()).map_err(|e| e.to_string()) {
            Ok(n) => match n.validate() {
                Ok(()) => m.namespaces.push(n),
                Err(e) => errors.push(format!("namespace {k}: {e}")),
            },
            Err(e) => errors.push(format!("namespace {k}: {e}")),
        }
    }
    for (k, v) in policies {
        match weft_policy::parse_policies_json(&v.to_string()) {
            Ok(ps) => m.policies.extend(ps),
            Err(e) => errors.push(format!("policy {k}: {e}")),
        }
    }
    (m, errors)
}

/// The tenant networks of the model (see the module comment): admitted as the networks manager admits them,
/// with the namespaces each serves among those the model knows (namespace objects and namespaces pods name).
/// Objects that do not parse or are refused are reported; the rest are used.
pub fn model_networks<'a>(
    model: &Model,
    networks: impl IntoIterator<Item = &'a ObjectEntry>,
    cfg: &NetworkConfig,
) -> (Vec<weft_policy::Network>, Vec<String>) {
    // The networks manager's own admission and namespace resolution, so both always agree on which namespace
    // is on which network.
    let (admitted, mut errors) = crate::networks::parse_networks(networks, cfg);
    if cfg.backend.kind != BackendKind::Vxlan {
        if !admitted.is_empty() {
            errors.push("networks: tenant networks need the vxlan backend; every pod is on the default network".into());
        }
        return (Vec::new(), errors);
    }
    let mut namespaces: BTreeMap<String, BTreeMap<String, String>> =
        model.pods.iter().map(|p| (p.namespace.clone(), BTreeMap::new())).collect();
    for ns in &model.namespaces {
        namespaces.insert(ns.name.clone(), ns.labels.clone());
    }
    // The networks manager's node-file budget too: a network it refuses serves no pod.
    let (admitted, _) = crate::networks::budget::fit(admitted, &namespaces);
    let (mut by_net, _conflicts) = crate::networks::desired::resolve_namespaces(&admitted, &namespaces);
    let out = admitted
        .iter()
        .map(|n| weft_policy::Network {
            name: n.name.clone(),
            group: NetworkIds::of(n.vni).group,
            namespaces: by_net.remove(&n.name).unwrap_or_default(),
        })
        .collect();
    (out, errors)
}

/// One digest of everything policy depends on (pods, namespaces, policies, by key and content), so "this node
/// enforces what the store holds" can be checked exactly, label changes included (`weftctl policy wait`).
pub fn model_digest<'a>(
    pods: impl IntoIterator<Item = &'a Object>,
    namespaces: impl IntoIterator<Item = &'a Object>,
    policies: impl IntoIterator<Item = &'a Object>,
) -> String {
    model_digest_with_networks(pods, namespaces, policies, [])
}

/// [`model_digest`] including the tenant network objects; with none it equals `model_digest`.
pub fn model_digest_with_networks<'a>(
    pods: impl IntoIterator<Item = &'a Object>,
    namespaces: impl IntoIterator<Item = &'a Object>,
    policies: impl IntoIterator<Item = &'a Object>,
    networks: impl IntoIterator<Item = &'a Object>,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (kind, objs) in [
        ("pod", pods.into_iter().collect::<Vec<_>>()),
        ("ns", namespaces.into_iter().collect()),
        ("pol", policies.into_iter().collect()),
        ("net", networks.into_iter().collect()),
    ] {
        let mut v: Vec<String> =
            objs.iter().map(|(k, o)| format!("{kind}/{k}@{}", weft_types::digest::digest(o))).collect();
        v.sort();
        parts.extend(v);
    }
    weft_types::digest::digest(&serde_json::Value::from(parts))
}

impl PolicyEngine {
    pub async fn run(self, store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
        // The cluster's VNI and backend decide which tenant networks exist (as for the networks manager). The
        // agent read the config before starting us, so this normally answers at once.
        let cfg = loop {
            match store.network_config().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "policy: reading the network config; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait_for(|v| *v) => return,
                    }
                }
            }
        };
        let mut rxs = vec![];
        let mut tasks = vec![];
        for kind in [ObjectKind::Endpoint, ObjectKind::Namespace, ObjectKind::Policy] {
            let (tx, rx) = watch::channel::<Listed<Object>>(None);
            rxs.push(rx);
            let src = Objects(store.clone(), kind);
            tasks.push(tokio::spawn(follow(src, tx, same, self.metrics.clone(), shutdown.clone())));
        }
        // Networks with their creation order, as the networks manager follows them (the oldest wins).
        let (tx, nets_rx) = watch::channel::<Listed<ObjectEntry>>(None);
        let src = crate::networks::Entries(store.clone(), ObjectKind::Network);
        tasks.push(tokio::spawn(follow(src, tx, crate::networks::same_entry, self.metrics.clone(), shutdown.clone())));
        self.enforce(rxs, nets_rx, &cfg, shutdown).await;
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn enforce(
        &self,
        mut rxs: Vec<watch::Receiver<Listed<Object>>>,
        mut d: watch::Receiver<Listed<ObjectEntry>>,
        cfg: &NetworkConfig,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut last: Option<Ruleset> = None;
        let mut passes: u32 = 0;
        let mut last_errors: Vec<String> = Vec::new();
        let mut last_stranded: Vec<String> = Vec::new();
        let mut last_good = std::collections::BTreeMap::new();
        // The table as we left it (see FINGERPRINT_AFTER_CHANGE_MAX); None: not taken since the last change.
        let mut fingerprint: Option<u64> = None;
        let mut tick = tokio::time::interval(self.resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The plugin's reservations are files, not store objects: look at their directories' times often (a
        // few stat calls), so a new pod's policy is compiled right after its ADD (see local_pods).
        let mut ipam_tick = tokio::time::interval(IPAM_POLL);
        ipam_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ipam = crate::local_pods::Watch::new(&self.cni_data_dir);
        loop {
            let [a, b, c] = &mut rxs[..] else { unreachable!("three kinds") };
            let periodic = tokio::select! {
                _ = tick.tick() => true,
                r = a.changed() => { if r.is_err() { return; } false }
                r = b.changed() => { if r.is_err() { return; } false }
                r = c.changed() => { if r.is_err() { return; } false }
                r = d.changed() => { if r.is_err() { return; } false }
                _ = ipam_tick.tick() => {
                    if !ipam.changed() {
                        continue;
                    }
                    false
                }
                _ = shutdown.wait_for(|v| *v) => return,
            };
            // Coalesce bursts (a namespace of pods created at once) into one compile.
            if !periodic {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let lists = (a.borrow_and_update().clone(), b.borrow_and_update().clone(), c.borrow_and_update().clone());
            // Networks are optional (see the module comment): not listed yet is "none", which fails closed.
            let nets = d.borrow_and_update().clone().unwrap_or_default();
            // Compile only once pods, namespaces and policies have all been listed: an empty or partial model
            // would replace the table with one that admits pods before their policies are known (allow-all).
            // Until then the table in the kernel (from before a restart, or none) stays as it is.
            let (Some(pods), Some(nss), Some(pols)) = lists else { continue };
            let t0 = Instant::now();
            let pols_used = self.last_good_policies(&mut last_good, pols.values());
            let (mut model, mut errors) = model_from(pods.values(), nss.values(), pols_used.iter());
            let (networks, net_errors) = model_networks(&model, nets.values(), cfg);
            model.networks = networks;
            let addrs = ipam.addresses(periodic);
            let filled = crate::local_pods::fill(&mut model, &self.node, addrs);
            errors.extend(net_errors);
            for e in errors.iter().filter(|e| !last_errors.contains(*e)) {
                tracing::warn!(object = %e, "skipping an invalid object; everything else is enforced");
            }
            last_errors.clone_from(&errors);
            let rs = compile(&model, &self.node, &self.opts);
            // A periodic pass checks that the table is still there instead of reloading it (a full load of a large
            // table costs seconds of kernel time). If someone deleted the table, it is loaded again in full.
            let mut counters = None;
            if periodic && last.is_some() {
                passes = passes.wrapping_add(1);
                if !self.table_present(&rs.table).await {
                    tracing::warn!("policy table missing (deleted behind our back?); loading it again");
                    self.count_repair(&rs.table);
                    last = None;
                } else if passes % COUNTER_EVERY == 1 {
                    counters = self.dp.nft_counters("inet", &rs.table).await.ok();
                    if let Ok(Some(now)) = self.dp.nft_fingerprint("inet", &rs.table).await {
                        match fingerprint {
                            Some(mine) if mine != now => {
                                tracing::warn!("policy table edited behind our back; loading it again");
                                self.count_repair(&rs.table);
                                last = None;
                            }
                            Some(_) => {}
                            None => fingerprint = Some(now),
                        }
                    }
                }
            }
            let planned = last.as_ref().and_then(|old| plan(old, &rs));
            let result = match planned {
                Some(p) if p.is_empty() => Ok("unchanged"),
                Some(p) => match self.dp.nft_script(&p.render()).await {
                    Ok(()) => Ok("incremental"),
                    Err(e) => {
                        tracing::debug!(error = %e, "incremental policy update refused; replacing the table");
                        self.replace(&rs).await.map(|_| "full")
                    }
                },
                None => self.replace(&rs).await.map(|_| "full"),
            };
            let elapsed = t0.elapsed();
            if matches!(result, Ok(mode) if mode != "unchanged") {
                fingerprint = if rs.rule_count() + rs.element_count() <= FINGERPRINT_AFTER_CHANGE_MAX {
                    self.dp.nft_fingerprint("inet", &rs.table).await.ok().flatten()
                } else {
                    None
                };
            }
            let local: Vec<&Pod> = model.pods.iter().filter(|p| p.node == self.node).collect();
            let stranded = crate::stranded::stranded(&model, &self.node, addrs);
            for s in stranded.iter().filter(|s| !last_stranded.contains(*s)) {
                tracing::warn!(pod = %s, "pod cut off: its namespace is on another network now");
            }
            self.metrics.policy_stranded_pods.set(stranded.len() as i64);
            last_stranded.clone_from(&stranded);
            let mut applied: Vec<String> =
                pols.iter().map(|(k, (_, v))| format!("{k}@{}", weft_types::digest::digest(v))).collect();
            applied.sort();
            let ok = result.is_ok();
            {
                let mut st = self.status.write().expect("status lock");
                match result {
                    Ok(mode) => {
                        if mode != "unchanged" {
                            tracing::debug!(
                                mode,
                                rules = rs.rule_count(),
                                elements = rs.element_count(),
                                ?elapsed,
                                "policy applied"
                            );
                        }
                        let mode = if mode == "unchanged" { st.policy.last_mode.clone() } else { mode.to_string() };
                        st.policy = PolicyStatus {
                            local_pods: local.len(),
                            ready_pods: local.iter().filter(|p| !p.ips.is_empty()).count(),
                            policies: applied,
                            // Of the objects as stored (what `weftctl policy wait` computes from the store).
                            model_digest: model_digest_with_networks(
                                pods.values(),
                                nss.values(),
                                pols.values(),
                                nets.values().map(|e| e.clone().into_object()).collect::<Vec<_>>().iter(),
                            ),
                            rules: rs.rule_count(),
                            elements: rs.element_count(),
                            last_mode: mode,
                            last_apply_us: elapsed.as_micros() as u64,
                            applied_at_ms: now_ms(),
                            errors,
                            from_ipam: filled,
                            stranded,
                            last_error: None,
                        };
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "applying the policy table failed; retrying at the next resync");
                        st.policy.last_error = Some(e.to_string());
                    }
                }
            }
            crate::status::write_file(&self.state_dir, &self.status);
            if ok {
                if let Some(c) = counters {
                    self.export_counters(&rs, &c);
                }
                last = Some(rs);
            } else {
                last = None;
            }
        }
    }

    /// Policies to compile: each key's current version if it parses, else its last good version (fail closed: a
    /// broken update must not silently turn the pods that policy isolates into allow-all). Deleted keys go.
    fn last_good_policies<'a>(
        &self,
        last_good: &mut std::collections::BTreeMap<String, serde_json::Value>,
        current: impl Iterator<Item = &'a Object>,
    ) -> Vec<Object> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (k, v) in current {
            seen.insert(k.clone());
            if weft_policy::parse_policies_json(&v.to_string()).is_ok() {
                last_good.insert(k.clone(), v.clone());
                out.push((k.clone(), v.clone()));
            } else if let Some(good) = last_good.get(k) {
                tracing::error!(policy = %k, "policy update does not parse; enforcing its last good version");
                out.push((k.clone(), good.clone()));
            } else {
                out.push((k.clone(), v.clone())); // reported as an error by model_from
            }
        }
        last_good.retain(|k, _| seen.contains(k));
        out
    }

    /// Puts the table's drop counters into metrics (each resync).
    fn export_counters(&self, rs: &Ruleset, values: &[(String, u64, u64)]) {
        for c in &rs.counters {
            let Some((_, packets, _)) = values.iter().find(|(n, _, _)| *n == c.name) else { continue };
            let labels = match &c.counts {
                CounterKind::Dropped(d) => vec![("direction".into(), dir(*d)), ("policy".into(), String::new())],
                CounterKind::DroppedForPolicy(d, p) => {
                    vec![("direction".into(), dir(*d)), ("policy".into(), p.to_string())]
                }
                CounterKind::DroppedUnready => {
                    vec![("direction".into(), "unready".into()), ("policy".into(), String::new())]
                }
            };
            self.metrics.policy_dropped.get_or_create(&labels).set(*packets as i64);
        }
    }

    fn count_repair(&self, table: &str) {
        self.metrics.nft_tables_repaired.get_or_create(&vec![("table".into(), format!("inet {table}"))]).inc();
    }

    /// Cheap presence check: `list set` of one set that every compiled table has makes nft fetch only that set.
    /// Dataplanes without scripts (the fake) answer through the counter listing instead.
    async fn table_present(&self, table: &str) -> bool {
        if self.dp.nft_script(&format!("list set inet {table} iso_in_v4\n")).await.is_ok() {
            return true;
        }
        !self.dp.nft_counters("inet", table).await.unwrap_or_default().is_empty()
    }

    async fn replace(&self, rs: &Ruleset) -> Result<(), weft_dataplane::DataplaneError> {
        self.dp.apply_nft("inet", &rs.table, &rs.render()).await
    }
}

fn dir(d: weft_policy::Direction) -> String {
    match d {
        weft_policy::Direction::Ingress => "ingress".into(),
        weft_policy::Direction::Egress => "egress".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(k: &str, v: serde_json::Value) -> Object {
        (k.to_string(), v)
    }

    #[test]
    fn one_bad_object_is_skipped_and_named_the_rest_is_kept() {
        let pods = [
            obj("default/good", json!({"namespace": "default", "name": "good", "ips": ["10.0.0.2"], "node": "n1"})),
            obj("x/../../etc", json!({"namespace": "../../etc", "name": "p", "ips": ["10.0.0.3"], "node": "n1"})),
            obj("default/bad-label", json!({"namespace": "default", "name": "bl", "labels": {"a b": "c"}})),
            obj(
                "default/bad-port",
                json!({"namespace": "default", "name": "bp", "ports": [{"name": "Bad Port", "port": 80}]}),
            ),
            obj("default/garbage", json!("not a pod")),
        ];
        let nss = [
            obj("default", json!({"name": "default", "labels": {"team": "a"}})),
            obj("Bad Name!", json!({"name": "Bad Name!"})),
            obj("v", json!({"name": "v", "labels": {"team": "with space"}})),
        ];
        let long = "a".repeat(300);
        let pols = [
            obj("default/ok", json!({"kind": "NetworkPolicy", "metadata": {"name": "ok", "namespace": "default"}})),
            obj("default/a/b", json!({"kind": "NetworkPolicy", "metadata": {"name": "a/b", "namespace": "default"}})),
            obj("default/long", json!({"kind": "NetworkPolicy", "metadata": {"name": long, "namespace": "default"}})),
            obj(
                "default/sel",
                json!({"kind": "NetworkPolicy", "metadata": {"name": "sel"},
                       "spec": {"podSelector": {"matchLabels": {"app": "has space"}}}}),
            ),
        ];
        let (m, errors) = model_from(pods.iter(), nss.iter(), pols.iter());
        assert_eq!(m.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["good"]);
        assert_eq!(m.namespaces.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["default"]);
        assert_eq!(m.policies.iter().map(|p| p.metadata.name.as_str()).collect::<Vec<_>>(), ["ok"]);
        for key in [
            "endpoint x/../../etc",
            "endpoint default/bad-label",
            "endpoint default/bad-port",
            "endpoint default/garbage",
            "namespace Bad Name!",
            "namespace v",
            "policy default/a/b",
            "policy default/long",
            "policy default/sel",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(&format!("{key}: "))), "{key} not reported: {errors:#?}");
        }
        assert_eq!(errors.len(), 9, "{errors:#?}");
        // What is left still compiles into a table.
        let rs = compile(&m, "n1", &CompileOptions::default());
        assert!(rs.set("ready_v4").is_some_and(|s| s.elements.len() == 1));
    }

    #[test]
    fn namespaces_go_to_the_first_admitted_network_selecting_them() {
        let pods = [
            obj("a/p", json!({"namespace": "a", "name": "p", "ips": ["10.0.0.2"], "node": "n1"})),
            obj("b/p", json!({"namespace": "b", "name": "p", "ips": ["10.0.0.2"], "node": "n1"})),
            obj("c/p", json!({"namespace": "c", "name": "p", "ips": ["10.0.0.3"], "node": "n1"})),
        ];
        let nss = [obj("b", json!({"name": "b", "labels": {"tenant": "red"}}))];
        let (model, _) = model_from(pods.iter(), nss.iter(), []);
        let nets = [
            obj(
                "blue",
                json!({"name": "blue", "cidr": "10.0.0.0/16", "vni": 100, "namespaces": {"names": ["a", "q"]}}),
            ),
            obj(
                "red",
                json!({"name": "red", "cidr": "10.0.0.0/16", "vni": 200,
                "namespaces": {"names": ["a"], "matchLabels": {"tenant": "red"}}}),
            ),
            obj(
                "same-vni",
                json!({"name": "same-vni", "cidr": "10.1.0.0/16", "vni": 1, "namespaces": {"names": ["c"]}}),
            ),
            obj("liar", json!({"name": "other", "cidr": "10.2.0.0/16", "vni": 5, "namespaces": {"names": ["c"]}})),
            obj("junk", json!({"name": "junk", "cidr": "10.2.0.0/16", "vni": 6, "table": 254})),
        ];
        let cfg: NetworkConfig = serde_json::from_value(json!({"clusterCidr": "10.244.0.0/16"})).unwrap();
        assert_eq!(cfg.backend.vni, 1);
        let nets: Vec<ObjectEntry> = nets.into_iter().map(ObjectEntry::by_key).collect();
        let (networks, errors) = model_networks(&model, nets.iter(), &cfg);
        let got: Vec<(&str, u32, Vec<&str>)> = networks
            .iter()
            .map(|n| (n.name.as_str(), n.group, n.namespaces.iter().map(String::as_str).collect()))
            .collect();
        // q has no pods and no object, but blue names it: on blue, as in the node file.
        assert_eq!(got, [("blue", 0x5700_0064, vec!["a", "q"]), ("red", 0x5700_00c8, vec!["b"])]);
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors.iter().any(|e| e.contains("same-vni") && e.contains("default")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("network liar: names itself")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("network junk: ")), "{errors:#?}");
        // The compiled table scopes a/p and b/p (same address) to their own groups.
        let mut model = model;
        model.networks = networks;
        let rs = compile(&model, "n1", &CompileOptions::default());
        let ready = &rs.set("ready_v4").expect("ready set").elements;
        assert_eq!(ready.len(), 3);
        // Other backends: no tenant networks at all (the networks manager serves none).
        for kind in [BackendKind::Wireguard, BackendKind::HostGw] {
            let mut other = cfg.clone();
            other.backend.kind = kind;
            let (none, errors) = model_networks(&model, nets.iter(), &other);
            assert!(none.is_empty() && errors.iter().any(|e| e.contains("vxlan backend")), "{errors:#?}");
        }
    }

    #[test]
    fn the_digest_without_networks_is_the_old_one() {
        let pods = [obj("a/p", json!({"namespace": "a", "name": "p"}))];
        let net = [obj("blue", json!({"name": "blue"}))];
        let old = model_digest(pods.iter(), [], []);
        assert_eq!(old, model_digest_with_networks(pods.iter(), [], [], []));
        assert_ne!(old, model_digest_with_networks(pods.iter(), [], [], net.iter()));
    }
}
