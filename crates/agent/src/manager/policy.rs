//! The policy manager: supervises the NetworkPolicy engine (`crate::policy`), which follows pods, namespaces and
//! policies from the store and compiles them on its own loop (its inputs are not the leases). Here it is stopped
//! before anything is uninstalled (it would re-create its table otherwise), and its table removed on uninstall,
//! also when policy was disabled on this run (`--no-policy` after a run with policy).
use super::{Manager, ManagerError, View};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_dataplane::Dataplane;
use weft_store::Store;

pub struct PolicyManager {
    dp: Arc<dyn Dataplane>,
    table: String,
    task: Option<JoinHandle<()>>,
}

impl PolicyManager {
    /// Starts `engine` (None: policy disabled) on its own task.
    pub fn start(
        dp: Arc<dyn Dataplane>,
        table: String,
        engine: Option<crate::policy::PolicyEngine>,
        store: Arc<dyn Store>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let task = engine.map(|e| tokio::spawn(e.run(store, shutdown)));
        Self { dp, table, task }
    }
}

#[async_trait]
impl Manager for PolicyManager {
    fn name(&self) -> &'static str {
        "policy"
    }

    async fn update(&mut self, _: &View<'_>) -> Result<(), ManagerError> {
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    async fn teardown(&mut self) -> Result<(), ManagerError> {
        Ok(self.dp.delete_nft("inet", &self.table).await?)
    }
}
