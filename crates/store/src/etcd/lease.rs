//! Node leases in etcd.
//!
//! Each node lease is a key attached to its own etcd lease whose TTL is the node's: etcd deletes the key when
//! the node stops renewing, and that deletion reaches every watcher. Allocation is optimistic: list the
//! leases, let [`alloc::plan`] choose, then commit with one transaction whose compare makes the choice safe:
//! - new subnet: `create_revision(key) == 0` (nobody holds it);
//! - keeping the node's own subnet: `mod_revision(key) == seen` (nobody changed it since the list).
//!
//! A failed compare means another agent won the race: list again and retry. The scan starts at a random
//! offset so fifty agents starting together mostly pick different subnets. One etcd lease is granted per
//! acquire call and reused across retries, and revoked if the call fails, so retries leak nothing.
use super::Inner;
use crate::alloc::{self, Plan};
use crate::{Created, LeaseEntry};
use crate::{Revision, StoreError};
use etcd_client::{Compare, CompareOp, GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp};
use ipnet::Ipv4Net;
use std::collections::HashSet;
use std::time::Duration;
use weft_types::{Lease, LeaseRequest};

/// Compare-and-swap attempts before giving up; each conflict means another agent made progress.
const MAX_ATTEMPTS: u32 = 64;

/// A stored lease with the etcd facts needed to update it safely. `lease` is `Err` when the value does not
/// decode: such a key still occupies its subnet (allocation must not pick it), it just names no node.
pub(crate) struct Stored {
    pub lease: Result<Lease, String>,
    pub key: String,
    pub key_subnet: Option<Ipv4Net>,
    pub create_revision: i64,
    mod_revision: i64,
    lease_id: i64,
}

impl Stored {
    fn node(&self) -> Option<&str> {
        self.lease.as_ref().ok().map(|l| l.node.as_str())
    }

    pub fn entry(self) -> LeaseEntry {
        LeaseEntry {
            created: Created(self.create_revision, self.key.clone()),
            key: self.key,
            key_subnet: self.key_subnet,
            key_node: None,
            lease: self.lease,
        }
    }
}

fn ttl_secs(ttl: Duration) -> i64 {
    (ttl.as_millis().div_ceil(1000) as i64).max(1)
}

fn now_ms() -> u64 {
    crate::clock::Clock::now_ms(&crate::clock::SystemClock)
}

pub(crate) fn stored(keys: &super::keys::Keys, kv: &etcd_client::KeyValue) -> Stored {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    Stored {
        lease: serde_json::from_slice(kv.value()).map_err(|e| e.to_string()),
        key_subnet: keys.subnet_of(kv.key()),
        key,
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease_id: kv.lease(),
    }
}

/// Every stored lease (decodable or not) and the revision of the read.
pub(crate) async fn list(s: &Inner) -> Result<(Vec<Stored>, Revision), StoreError> {
    let dir = s.keys.leases();
    let resp = s.call(|mut c| async move { c.get(dir, Some(GetOptions::new().with_prefix())).await }).await?;
    let items = resp.kvs().iter().map(|kv| stored(&s.keys, kv)).collect();
    Ok((items, super::header_rev(resp.header())))
}

async fn revoke(s: &Inner, id: i64) {
    if id != 0 {
        // Best effort: an unrevoked lease only lives until its TTL runs out.
        let _ = s.call(|mut c| async move { c.lease_revoke(id).await }).await;
    }
}

fn remember(s: &Inner, node: &str, id: i64, ttl: i64) {
    s.granted.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), (id, ttl));
}

pub(crate) async fn acquire(s: &Inner, req: &LeaseRequest) -> Result<Lease, StoreError> {
    let cfg = s.network_config().await?;
    let ttl = ttl_secs(req.ttl);
    let id = s.call(|mut c| async move { c.lease_grant(ttl, None).await }).await?.id();
    for attempt in 0..MAX_ATTEMPTS {
        match try_acquire(s, &cfg, req, id).await {
            Ok(Some((lease, old_id))) => {
                remember(s, &req.node, id, ttl);
                if old_id != id {
                    revoke(s, old_id).await;
                }
                return Ok(lease);
            }
            Ok(None) => {
                // Lost a race: back off a little, growing, with jitter so the losers do not collide again.
                let ms = rand::random::<u64>() % (5 + 5 * u64::from(attempt.min(20)));
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Err(e) => {
                revoke(s, id).await;
                return Err(e);
            }
        }
    }
    revoke(s, id).await;
    Err(StoreError::Unavailable(format!("acquire for {}: {MAX_ATTEMPTS} conflicting attempts", req.node)))
}

/// One list + choose + compare-and-swap round. Ok(None): the compare failed, try again. On success also
/// returns the etcd lease id the node held before (0 if none), to revoke.
async fn try_acquire(
    s: &Inner,
    cfg: &weft_types::NetworkConfig,
    req: &LeaseRequest,
    id: i64,
) -> Result<Option<(Lease, i64)>, StoreError> {
    let (stored, _) = list(s).await?;
    let own = stored.iter().find(|l| l.node() == Some(&req.node) && l.key_subnet.is_some());
    // A key is taken whatever its value says, and so is the subnet a value claims.
    let taken: HashSet<Ipv4Net> =
        stored.iter().flat_map(|l| l.key_subnet.into_iter().chain(l.lease.as_ref().ok().map(|l| l.subnet))).collect();
    let plan = alloc::plan(cfg, own.and_then(|l| l.key_subnet), req.hint, &taken, rand::random());
    let mut when = Vec::new();
    let mut ops = Vec::new();
    let subnet = match plan {
        Plan::Keep(subnet) => {
            let own = own.expect("Keep only comes from an own lease");
            when.push(Compare::mod_revision(own.key.clone(), CompareOp::Equal, own.mod_revision));
            subnet
        }
        Plan::Take(subnet) => {
            if let Some(own) = own {
                // The node's old subnet is not one of this config's: give it back in the same transaction.
                when.push(Compare::mod_revision(own.key.clone(), CompareOp::Equal, own.mod_revision));
                ops.push(TxnOp::delete(own.key.clone(), None));
            }
            when.push(Compare::create_revision(s.keys.lease(subnet), CompareOp::Equal, 0));
            subnet
        }
        Plan::Exhausted => return Err(StoreError::Exhausted(cfg.cluster_cidr.to_string())),
    };
    let lease = crate::alloc::lease_for(cfg, req, subnet, now_ms() + crate::clock::ttl_ms(req.ttl));
    let json = serde_json::to_vec(&lease).map_err(|e| StoreError::Other(format!("lease: {e}")))?;
    ops.push(TxnOp::put(s.keys.lease(subnet), json, Some(PutOptions::new().with_lease(id))));
    let txn = Txn::new().when(when).and_then(ops);
    let resp = s.call(|mut c| async move { c.txn(txn).await }).await?;
    Ok(resp.succeeded().then(|| (lease, own.map_or(0, |o| o.lease_id))))
}

pub(crate) async fn renew(s: &Inner, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
    let key = s.keys.lease(lease.subnet);
    let k = key.clone();
    let resp = s.call(|mut c| async move { c.get(k, None).await }).await?;
    let lost = || StoreError::LeaseLost(lease.node.clone());
    let kv = resp.kvs().first().ok_or_else(lost)?;
    // A value that no longer decodes was overwritten by someone: the lease is not ours any more.
    let current: Lease = serde_json::from_slice(kv.value()).map_err(|_| lost())?;
    if current.node != lease.node {
        return Err(lost());
    }
    let (mut id, mod_rev, want) = (kv.lease(), kv.mod_revision(), ttl_secs(ttl));
    let cached = s.granted.lock().unwrap_or_else(|p| p.into_inner()).get(&lease.node).copied();
    let granted = match cached {
        Some((cid, t)) if cid == id => t,
        _ => {
            let ttl =
                s.call(|mut c| async move { c.lease_time_to_live(id, None::<LeaseTimeToLiveOptions>).await }).await?;
            if ttl.ttl() <= 0 {
                return Err(lost());
            }
            ttl.granted_ttl()
        }
    };
    let old = id;
    if granted != want {
        // etcd leases keep the TTL they were granted with: a new TTL needs a new etcd lease.
        id = s.call(|mut c| async move { c.lease_grant(want, None).await }).await?.id();
    } else {
        match s.call(|mut c| async move { c.lease_keep_alive(id).await }).await {
            Ok(_) => {}
            // The keep-alive reports a vanished lease as a plain (non-transport) error.
            Err(StoreError::Other(_)) => return Err(lost()),
            Err(e) => return Err(e),
        }
    }
    let mut renewed = lease.clone();
    renewed.expires_at_ms = now_ms() + crate::clock::ttl_ms(ttl);
    let json = serde_json::to_vec(&renewed).map_err(|e| StoreError::Other(format!("lease: {e}")))?;
    // Rewrite the value (fresh expiry, maybe new attributes) unless someone changed the key since our read.
    let txn = Txn::new().when([Compare::mod_revision(key.clone(), CompareOp::Equal, mod_rev)]).and_then([TxnOp::put(
        key,
        json,
        Some(PutOptions::new().with_lease(id)),
    )]);
    let resp = s.call(|mut c| async move { c.txn(txn).await }).await?;
    if !resp.succeeded() {
        if id != old {
            revoke(s, id).await;
        }
        return Err(lost());
    }
    remember(s, &lease.node, id, want);
    if id != old {
        revoke(s, old).await;
    }
    Ok(renewed)
}

pub(crate) async fn release(s: &Inner, node: &str) -> Result<(), StoreError> {
    let (stored, _) = list(s).await?;
    for l in stored.into_iter().filter(|l| l.node() == Some(node)) {
        let txn = Txn::new()
            .when([Compare::mod_revision(l.key.clone(), CompareOp::Equal, l.mod_revision)])
            .and_then([TxnOp::delete(l.key, None)]);
        s.call(|mut c| async move { c.txn(txn).await }).await?;
        revoke(s, l.lease_id).await;
    }
    s.granted.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
    Ok(())
}
