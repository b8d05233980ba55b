//! `weftctl lab label ns NS …` and `weftctl lab label pod NS/POD …`: relabelling in place, as `kubectl label`
//! does. Only the store object changes (the pod keeps its namespace, address and processes); every agent's policy
//! engine sees the update through its watch and recompiles, exactly as for a relabel through the API server.
//!
//! The current labels are read from the store, not from the lab's state file: the store is what policy acts on.
//! Both commands hold the lab's lock, so two relabels of one object cannot lose each other's change.
use super::state::LabState;
use super::workloads::{namespace_labels, put_namespace, store_of};
use crate::labels::{Changes, Labels, Outcome};
use anyhow::{bail, Context, Result};
use weft_store::ObjectKind;

pub fn label_namespace(lab_name: &str, namespace: &str, changes: &Changes, overwrite: bool) -> Result<Outcome> {
    crate::names::namespace(namespace)?;
    changes.check_namespace(namespace)?;
    LabState::update(lab_name, |lab| {
        let Some(current) = namespace_labels(lab, namespace)? else {
            bail!("no namespace {namespace:?} in lab {lab_name:?} (create it with `weftctl lab ns-add {namespace}`)");
        };
        let out = changes.apply(&current, overwrite)?;
        if out.changed {
            put_namespace(lab, namespace, &out.labels)?;
        }
        Ok(out)
    })
}

/// Relabels the pod `target` names; returns its `namespace/name` and the outcome.
pub fn label_pod(lab_name: &str, target: &str, changes: &Changes, overwrite: bool) -> Result<(String, Outcome)> {
    LabState::update(lab_name, |lab| {
        let (ni, pi) = lab.resolve_pod(target)?;
        let (node, pod) = (lab.nodes[ni].clone(), lab.nodes[ni].pods[pi].clone());
        let key = format!("{}/{}", pod.namespace, pod.name);
        let k = key.clone();
        let stored = store_of(lab).with_store(|store| async move {
            let items = store.objects(ObjectKind::Endpoint).await?.items;
            Ok(items.into_iter().find(|(key, _)| *key == k).map(|(_, v)| v))
        })?;
        let mut obj = stored.with_context(|| format!("pod {key} is not registered in the store"))?;
        let current: Labels = serde_json::from_value(obj["labels"].clone()).unwrap_or_default();
        let out = changes.apply(&current, overwrite)?;
        if out.changed {
            let mut relabelled = pod.clone();
            relabelled.labels = out.labels.clone();
            if lab.store == "kube" {
                let ports = obj["ports"].as_array().cloned().unwrap_or_default();
                super::kube::apply(lab, &super::kube::pod_object(&node, &relabelled, &ports))?;
            } else {
                obj["labels"] = serde_json::to_value(&out.labels)?;
                let k = key.clone();
                store_of(lab).with_store(|store| async move {
                    store.put_object(ObjectKind::Endpoint, &k, &obj).await?;
                    Ok(())
                })?;
            }
            lab.nodes[ni].pods[pi] = relabelled;
        }
        Ok((key, out))
    })
}

/// kubectl's wording: `pod x/a labeled`, or `not labeled` when nothing changed.
pub fn report(kind: &str, name: &str, out: &Outcome) {
    for k in &out.not_found {
        println!("label {k:?} not found.");
    }
    let shown: Vec<String> = out.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let verb = if out.changed { "labeled" } else { "not labeled" };
    println!("{kind} {name} {verb} ({})", shown.join(","));
}
