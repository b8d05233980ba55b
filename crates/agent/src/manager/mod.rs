//! The agent as a supervisor of managers (Calico felix's dataplane driver, in small): one loop owns the events,
//! each manager owns one part of the node and is shown the same view on every pass.
//!
//! The loop wakes on a change of our lease or of the peer set, or on the resync timer; a burst of watch events
//! (a thousand nodes joining) is coalesced into one pass. Then every manager, in order, brings its part of the
//! kernel to what the view says. Managers are level-triggered: they are never told what changed or why they run,
//! only what is (our lease, the peers, whether this is a full pass that also checks for things removed behind
//! our back). Until the peers have been listed, managers that depend on them leave the kernel exactly as it is.
//!
//! Managers, in pass order: [`node_file`] (the CNI plugin's hand-off), [`overlay`] (the backend's device and the
//! routes to every peer), [`networks`] (tenant networks), [`firewall`] (the `inet weft` table), [`policy`] (NetworkPolicy; it follows its own
//! store objects and runs its own loop, see `crate::policy`, and is supervised here for stop and uninstall).
use crate::backend::BackendError;
use crate::metrics::Metrics;
use crate::peers::PeerMap;
use crate::status::SharedStatus;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weft_dataplane::DataplaneError;
use weft_types::Lease;

pub mod firewall;
pub mod networks;
pub mod node_file;
pub mod overlay;
pub mod policy;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    Other(String),
}

/// What every manager is shown on a pass.
pub struct View<'a> {
    /// This node's lease as it is now.
    pub me: &'a Lease,
    /// Every other node's lease; None until the store has been listed once (not the same as "no peers").
    pub peers: Option<Peers<'a>>,
    /// The resync timer fired: also look for what was removed behind our back.
    pub periodic: bool,
    /// `periodic`, or no pass has succeeded yet (a restart must check the kernel once, whatever woke it).
    pub full: bool,
}

/// The other nodes' leases, borrowed from the followed map (never copied: at 10 000 peers a copy per pass is
/// megabytes of churn).
#[derive(Clone, Copy)]
pub struct Peers<'a> {
    pub all: &'a BTreeMap<String, Lease>,
    /// Our own node name, left out.
    pub me: &'a str,
}

impl<'a> Peers<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a Lease> + Clone + Send + 'a {
        let me = self.me;
        self.all.values().filter(move |l| l.node != me)
    }
    pub fn len(self) -> usize {
        self.all.len() - usize::from(self.all.contains_key(self.me))
    }
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
pub trait Manager: Send {
    fn name(&self) -> &'static str;
    /// Brings this manager's part of the node to what `view` says. Idempotent.
    async fn update(&mut self, view: &View<'_>) -> Result<(), ManagerError>;
    /// The agent is exiting: end whatever runs on its own (tasks), leave the kernel as it is.
    async fn stop(&mut self) {}
    /// Uninstall: remove everything this manager put on the node. Missing things are not errors.
    async fn teardown(&mut self) -> Result<(), ManagerError>;
}

/// Inputs of the shared loop.
pub struct Inputs {
    pub lease: watch::Receiver<Lease>,
    pub peers: watch::Receiver<Option<PeerMap>>,
    /// Other inputs a manager follows itself (tenant networks, namespaces) wake the loop through this.
    pub kick: watch::Receiver<u64>,
    pub shutdown: watch::Receiver<bool>,
}

pub struct Supervisor {
    pub managers: Vec<Box<dyn Manager>>,
    pub metrics: Arc<Metrics>,
    pub status: SharedStatus,
    pub state_dir: PathBuf,
    pub resync: Duration,
}

/// How long a burst of watch events may take to settle before a pass.
const COALESCE: Duration = Duration::from_millis(20);

impl Supervisor {
    /// Runs passes until shutdown (or an input closes).
    pub async fn run(&mut self, mut inputs: Inputs) {
        let mut resync = tokio::time::interval(self.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut succeeded = false;
        loop {
            let periodic = tokio::select! {
                _ = resync.tick() => true,
                r = inputs.peers.changed() => { if r.is_err() { break; } false }
                r = inputs.lease.changed() => { if r.is_err() { break; } false }
                r = inputs.kick.changed() => { if r.is_err() { break; } false }
                _ = inputs.shutdown.wait_for(|v| *v) => break,
            };
            if !periodic {
                tokio::time::sleep(COALESCE).await;
            }
            let me = inputs.lease.borrow_and_update().clone();
            let listed = inputs.peers.borrow_and_update().clone();
            let peers = listed.as_deref().map(|all| Peers { all, me: &me.node });
            let view = View { me: &me, peers, periodic, full: periodic || !succeeded };
            if view.peers.is_some() {
                self.metrics.reconciles.inc();
            }
            let t0 = Instant::now();
            let mut ok = true;
            for m in &mut self.managers {
                if let Err(e) = m.update(&view).await {
                    ok = false;
                    tracing::error!(manager = m.name(), error = %e, "pass failed; retrying at the next resync");
                    self.status.write().expect("status lock").last_error = Some(e.to_string());
                }
            }
            if view.peers.is_none() {
                continue; // nothing was reconciled: the status stays as it was
            }
            if ok {
                self.metrics.reconcile_seconds.observe(t0.elapsed().as_secs_f64());
                succeeded = true;
            } else {
                self.metrics.reconcile_errors.inc();
            }
            crate::status::write_file(&self.state_dir, &self.status);
        }
    }

    /// Stops every manager's own tasks, in order.
    pub async fn stop(&mut self) {
        for m in &mut self.managers {
            m.stop().await;
        }
    }

    /// Uninstall: every manager removes what it put on the node; one failure does not stop the others.
    pub async fn teardown(&mut self) -> Vec<(&'static str, ManagerError)> {
        let mut errors = Vec::new();
        for m in &mut self.managers {
            if let Err(e) = m.teardown().await {
                errors.push((m.name(), e));
            }
        }
        errors
    }
}

/// True when `family table` must be loaded again: it is missing, or it differs from `mine`, the fingerprint taken
/// right after our last apply (None: unknown, then only a missing table counts). Drift (a change after we had
/// it in place) is logged and counted per table. A failed listing says nothing: the next full pass looks again.
pub(crate) async fn nft_drifted(
    dp: &dyn weft_dataplane::Dataplane,
    family: &str,
    table: &str,
    mine: Option<u64>,
    metrics: &crate::metrics::Metrics,
) -> bool {
    let (reload, drifted) = match dp.nft_fingerprint(family, table).await {
        // Missing before we ever saw it in place (the first pass of a fresh boot) is not drift, only a load.
        Ok(None) => (true, mine.is_some()),
        Ok(Some(now)) => {
            let d = mine.is_some_and(|m| m != now);
            (d, d)
        }
        Err(e) => {
            tracing::debug!(error = %e, family, table, "listing the table for the drift check failed");
            (false, false)
        }
    };
    if drifted {
        tracing::warn!(family, table, "nft table missing or edited behind our back; loading it again");
        metrics.nft_tables_repaired.get_or_create(&vec![("table".into(), format!("{family} {table}"))]).inc();
    }
    reload
}
