//! What a running lab is made of, saved as JSON so `status`, `exec` and `down` work from another shell, and
//! `down` also after a crash (it then falls back to deleting every namespace with the lab's prefix).
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const ROOT: &str = "/run/weft-lab";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    pub name: String,
    pub prefix: String,
    pub backend: String,
    pub store: String,
    /// Store URL as the agents see it.
    pub store_url: String,
    pub underlay: String,
    pub fabric_ns: String,
    pub nodes: Vec<NodeState>,
    #[serde(default)]
    /// etcd or the fake API server, when the lab runs one.
    pub store_pid: Option<u32>,
    pub bin_dir: PathBuf,
    /// Tenant networks the lab created (the store is the truth; this tells a kube lab whether to ask for them).
    #[serde(default)]
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub name: String,
    pub ns: String,
    pub ip: String,
    pub dir: PathBuf,
    #[serde(default)]
    pub agent_pid: Option<u32>,
    pub pods: Vec<PodState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub name: String,
    pub ns: String,
    pub container_id: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub ip6: Option<String>,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The tenant network the pod was created on (None: the default network); fixed for the pod's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Lab names become namespace prefixes and directory names: short letters and digits only, so `wl{name}-` can
/// never be a prefix of another lab's namespaces and the name can never escape /run/weft-lab.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 10 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        anyhow::bail!("lab name {name:?} must be 1-10 lowercase letters or digits");
    }
    Ok(())
}

pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(ROOT).join(name)
}

impl LabState {
    pub fn dir(&self) -> PathBuf {
        lab_dir(&self.name)
    }

    pub fn save(&self) -> Result<()> {
        let p = self.dir().join("state.json");
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))
    }

    /// Runs `f` on the lab's state under an exclusive lock and saves the result: concurrent `pod-add`,
    /// `pod-del` and `restart` on one lab each see the others' changes.
    pub fn update<T>(name: &str, f: impl FnOnce(&mut LabState) -> Result<T>) -> Result<T> {
        validate_name(name)?;
        let lock_path = lab_dir(name).join("state.lock");
        let lock = std::fs::File::create(&lock_path).with_context(|| format!("no lab {name:?}"))?;
        lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
        let mut lab = Self::load(name)?;
        // Saved only when the step succeeded: a failed step has undone its own partial work.
        let out = f(&mut lab)?;
        lab.save()?;
        Ok(out)
    }

    pub fn load(name: &str) -> Result<Self> {
        validate_name(name)?;
        let p = lab_dir(name).join("state.json");
        let b = std::fs::read(&p).with_context(|| format!("no lab {name:?} (missing {})", p.display()))?;
        serde_json::from_slice(&b).with_context(|| format!("reading {}", p.display()))
    }

    pub fn pods(&self) -> impl Iterator<Item = (&NodeState, &PodState)> {
        self.nodes.iter().flat_map(|n| n.pods.iter().map(move |p| (n, p)))
    }

    /// (node index, pod index) of the pod `target` names: `NAMESPACE/POD`, or a bare `POD` when only one
    /// namespace has a pod of that name.
    pub fn resolve_pod(&self, target: &str) -> Result<(usize, usize)> {
        let index: Vec<(usize, usize)> =
            self.nodes.iter().enumerate().flat_map(|(ni, n)| (0..n.pods.len()).map(move |pi| (ni, pi))).collect();
        let names = index.iter().map(|&(ni, pi)| {
            let p = &self.nodes[ni].pods[pi];
            (p.namespace.as_str(), p.name.as_str())
        });
        let i = crate::target::resolve(names, target).map_err(|e| anyhow::anyhow!("{e} in lab {:?}", self.name))?;
        Ok(index[i])
    }
}

/// Namespace prefix of a lab: short, so link and namespace names stay short.
pub fn prefix_for(name: &str) -> String {
    format!("wl{name}")
}
