//! Reaching the store from the CLI: by URL, or through a lab's state (which knows its store URL).
use crate::lab::state::LabState;
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use weft_store::{ObjectKind, Store};

/// Where the CLI finds the store: `--store URL` wins, else the lab `--lab NAME` (default "lab").
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Store URL (embedded:///path, etcd://host:port).
    #[arg(long, env = "WEFT_STORE")]
    pub store: Option<String>,
    /// The lab whose store to use: the global `--lab NAME` / `WEFT_LAB` (filled in by main).
    #[arg(skip)]
    pub lab: String,
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

impl StoreArgs {
    /// The URL, and the network namespace to reach it from (a lab's etcd lives in its fabric namespace).
    pub fn url(&self) -> Result<(String, Option<String>)> {
        if let Some(u) = &self.store {
            return Ok((u.clone(), None));
        }
        let lab = LabState::load(&self.lab).context("no --store given and no lab to take it from")?;
        let ns = matches!(lab.store.as_str(), "etcd" | "kube").then(|| lab.fabric_ns.clone());
        Ok((lab.store_url.clone(), ns))
    }

    /// The lab's etcd client certificate for weftctl, when its etcd runs TLS.
    fn etcd_security(&self) -> Result<weft_store::EtcdSecurityFiles> {
        if self.store.is_some() {
            return Ok(Default::default());
        }
        match LabState::load(&self.lab) {
            Ok(lab) if crate::lab::pki::uses_tls(&lab) => crate::lab::pki::client(&lab, "weftctl"),
            _ => Ok(Default::default()),
        }
    }

    /// The lab, when it runs the Kubernetes store (objects are then written through the API, not the store).
    pub fn kube_lab(&self) -> Result<Option<LabState>> {
        if self.store.is_some() {
            return Ok(None);
        }
        let lab = LabState::load(&self.lab)?;
        Ok((lab.store == "kube").then_some(lab))
    }

    /// Runs `f` with the store open, on a thread inside the store's namespace when it has one (sockets made
    /// there stay there), so the caller never switches namespaces itself.
    pub fn with_store<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce(Arc<dyn Store>) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let (url, ns) = self.url()?;
        let security = self.etcd_security()?;
        let body = move || -> Result<T> {
            runtime().block_on(async {
                let store = if weft_store_kube::handles(&url) {
                    weft_store_kube::open(&url).await
                } else {
                    weft_store::open_with(&url, &security).await
                };
                let store = store.with_context(|| format!("opening store {url}"))?;
                f(store).await
            })
        };
        match ns {
            None => body(),
            Some(ns) => {
                let h = weft_dataplane::netns::NetnsHandle::open(&std::path::Path::new("/var/run/netns").join(&ns))?;
                weft_dataplane::netns::run_in(&h, body)?
            }
        }
    }
}

/// Loads pods, namespaces, policies and tenant networks into the policy model.
pub async fn load_model(store: &dyn Store) -> Result<weft_policy::Model> {
    let pods = store.objects(ObjectKind::Endpoint).await?;
    let nss = store.objects(ObjectKind::Namespace).await?;
    let pols = store.objects(ObjectKind::Policy).await?;
    let (mut model, mut errors) = weft_agent::policy::model_from(&pods.items, &nss.items, &pols.items);
    // Tenant networks, resolved as the agents resolve them (a store that cannot list them has none).
    let nets = store.object_entries(ObjectKind::Network).await.map(|s| s.items).unwrap_or_default();
    if !nets.is_empty() {
        match store.network_config().await {
            Ok(cfg) => {
                let (networks, net_errors) = weft_agent::policy::model_networks(&model, &nets, &cfg);
                model.networks = networks;
                errors.extend(net_errors);
            }
            Err(e) => errors.push(format!("tenant networks (no network config: {e}); all pods taken as default")),
        }
    }
    for e in errors {
        eprintln!("warning: skipped {e}");
    }
    Ok(model)
}

/// `namespace/name` keys: a bare name means the `default` namespace.
pub fn key(namespace: Option<&str>, name: &str) -> Result<String> {
    if name.contains('/') {
        if namespace.is_some() {
            bail!("give either -n NAMESPACE or NAMESPACE/NAME, not both");
        }
        return Ok(name.to_string());
    }
    Ok(format!("{}/{name}", namespace.unwrap_or("default")))
}
