//! The embedded store's operations as plain synchronous functions on a connection, one SQLite transaction
//! each. They run on a blocking thread (see `mod.rs`); keeping them free of async makes each one a short,
//! obviously atomic unit.
//!
//! Every write starts with `BEGIN IMMEDIATE`, which takes the database's single write lock up front: two
//! agents allocating at once are serialised by SQLite, so the free-subnet choice inside cannot race (and the
//! `leases` table's keys would refuse a duplicate anyway). Each write also sweeps expired leases first, logging
//! a delete for each, so an expired lease's subnet is free to the very transaction that wants it and watchers
//! learn the lease is gone.
use super::schema::is_busy;
use crate::alloc::{self, Plan};
use crate::{Created, LeaseEntry, Object, ObjectEntry, Revision, Snapshot, StoreError};
use ipnet::Ipv4Net;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::collections::HashSet;
use std::time::Duration;
use weft_types::{Lease, LeaseRequest, NetworkConfig};

/// The change log's kind for leases (objects use `ObjectKind::as_str`).
pub const LEASES: &str = "leases";
/// Trim the change log once every this many revisions, not on every write.
const TRIM_EVERY: u64 = 64;

/// What a transaction needs to know besides its arguments.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub now_ms: u64,
    /// How many change log rows to keep when trimming.
    pub keep: u64,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if is_busy(&e) {
            StoreError::Unavailable(format!("database busy: {e}"))
        } else {
            StoreError::Other(format!("sqlite: {e}"))
        }
    }
}

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn write(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// The newest revision ever logged (0 on a fresh database); never goes back, even after trimming.
pub fn head(conn: &Connection) -> Result<Revision, StoreError> {
    let seq: Option<i64> =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'changelog'", [], |r| r.get(0)).optional()?;
    Ok(seq.unwrap_or(0) as Revision)
}

fn trimmed_through(conn: &Connection) -> Result<Revision, StoreError> {
    let v: Option<i64> =
        conn.query_row("SELECT v FROM meta WHERE k = 'trimmed_through'", [], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0) as Revision)
}

/// Appends a change and returns its revision.
fn log(tx: &Transaction, ctx: Ctx, kind: &str, key: &str, value: Option<&str>) -> Result<Revision, StoreError> {
    let op = if value.is_some() { "put" } else { "delete" };
    tx.execute("INSERT INTO changelog (kind, key, op, value) VALUES (?1, ?2, ?3, ?4)", params![kind, key, op, value])?;
    let rev = tx.last_insert_rowid() as Revision;
    if rev.is_multiple_of(TRIM_EVERY) {
        trim(tx, rev, ctx.keep)?;
    }
    Ok(rev)
}

/// Drops change log rows older than the newest `keep`, remembering how far it went.
pub fn trim(conn: &Connection, head: Revision, keep: u64) -> Result<(), StoreError> {
    let through = head.saturating_sub(keep);
    if through == 0 || through <= trimmed_through(conn)? {
        return Ok(());
    }
    conn.execute("DELETE FROM changelog WHERE rev <= ?1", [through as i64])?;
    conn.execute(
        "INSERT INTO meta (k, v) VALUES ('trimmed_through', ?1) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        [through as i64],
    )?;
    Ok(())
}

/// Trims the log now (tests, operators); normal writes trim on their own.
pub fn trim_now(conn: &mut Connection, keep: u64) -> Result<(), StoreError> {
    let tx = write(conn)?;
    let h = head(&tx)?;
    trim(&tx, h, keep)?;
    Ok(tx.commit()?)
}

/// Deletes expired leases, logging a delete for each. Returns how many went.
fn sweep(tx: &Transaction, ctx: Ctx) -> Result<usize, StoreError> {
    let nodes: Vec<String> = tx
        .prepare("DELETE FROM leases WHERE expires_at_ms <= ?1 RETURNING node")?
        .query_map([ctx.now_ms as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for node in &nodes {
        log(tx, ctx, LEASES, node, None)?;
    }
    Ok(nodes.len())
}

/// Sweeps only if something expired: the watch poller calls this often, and a read costs no write lock.
pub fn sweep_if_due(conn: &mut Connection, ctx: Ctx) -> Result<usize, StoreError> {
    let due: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM leases WHERE expires_at_ms <= ?1)", [ctx.now_ms as i64], |r| {
            r.get(0)
        })?;
    if !due {
        return Ok(0);
    }
    let tx = write(conn)?;
    let n = sweep(&tx, ctx)?;
    tx.commit()?;
    Ok(n)
}

fn config(conn: &Connection) -> Result<Option<NetworkConfig>, StoreError> {
    let raw: Option<String> = conn.query_row("SELECT value FROM config WHERE id = 1", [], |r| r.get(0)).optional()?;
    raw.map(|s| serde_json::from_str(&s).map_err(|e| corrupt("network config", e))).transpose()
}

pub fn network_config(conn: &mut Connection) -> Result<NetworkConfig, StoreError> {
    config(conn)?.ok_or(StoreError::NoNetworkConfig)
}

pub fn init_network_config(conn: &mut Connection, cfg: &NetworkConfig) -> Result<NetworkConfig, StoreError> {
    let tx = write(conn)?;
    if let Some(stored) = config(&tx)? {
        return Ok(stored);
    }
    let json = serde_json::to_string(cfg).map_err(|e| corrupt("network config", e))?;
    tx.execute("INSERT INTO config (id, value) VALUES (1, ?1)", [json])?;
    tx.commit()?;
    Ok(cfg.clone())
}

fn expiry(ctx: Ctx, ttl: Duration) -> u64 {
    ctx.now_ms + crate::clock::ttl_ms(ttl)
}

fn lease_json(lease: &Lease) -> Result<String, StoreError> {
    serde_json::to_string(lease).map_err(|e| StoreError::Other(format!("lease does not serialize: {e}")))
}

fn parse_subnet(s: &str) -> Result<Ipv4Net, StoreError> {
    s.parse().map_err(|e| StoreError::Corrupt(format!("lease subnet {s:?}: {e}")))
}

pub fn acquire(conn: &mut Connection, ctx: Ctx, req: &LeaseRequest) -> Result<Lease, StoreError> {
    let tx = write(conn)?;
    sweep(&tx, ctx)?;
    let cfg = config(&tx)?.ok_or(StoreError::NoNetworkConfig)?;
    let own: Option<String> =
        tx.query_row("SELECT subnet FROM leases WHERE node = ?1", [&req.node], |r| r.get(0)).optional()?;
    let own = own.as_deref().map(parse_subnet).transpose()?;
    let taken: HashSet<Ipv4Net> = tx
        .prepare("SELECT subnet FROM leases")?
        .query_map([], |r| r.get::<_, String>(0))?
        .map(|s| parse_subnet(&s?))
        .collect::<Result<_, StoreError>>()?;
    let subnet = match alloc::plan(&cfg, own, req.hint, &taken, 0) {
        Plan::Keep(s) => s,
        Plan::Take(s) => {
            if own.is_some() {
                // The node holds a subnet that is not one of this config's: give it back first.
                tx.execute("DELETE FROM leases WHERE node = ?1", [&req.node])?;
                log(&tx, ctx, LEASES, &req.node, None)?;
            }
            s
        }
        Plan::Exhausted => return Err(StoreError::Exhausted(cfg.cluster_cidr.to_string())),
    };
    let lease = crate::alloc::lease_for(&cfg, req, subnet, expiry(ctx, req.ttl));
    let json = lease_json(&lease)?;
    tx.execute(
        "INSERT INTO leases (subnet, node, value, expires_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (subnet) DO UPDATE SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
        params![subnet.to_string(), req.node, json, lease.expires_at_ms as i64],
    )?;
    log(&tx, ctx, LEASES, &req.node, Some(&json))?;
    tx.commit()?;
    Ok(lease)
}

pub fn renew(conn: &mut Connection, ctx: Ctx, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
    let tx = write(conn)?;
    sweep(&tx, ctx)?;
    let mut renewed = lease.clone();
    renewed.expires_at_ms = expiry(ctx, ttl);
    let json = lease_json(&renewed)?;
    let n = tx.execute(
        "UPDATE leases SET value = ?1, expires_at_ms = ?2 WHERE node = ?3 AND subnet = ?4",
        params![json, renewed.expires_at_ms as i64, lease.node, lease.subnet.to_string()],
    )?;
    if n == 0 {
        return Err(StoreError::LeaseLost(lease.node.clone()));
    }
    log(&tx, ctx, LEASES, &lease.node, Some(&json))?;
    tx.commit()?;
    Ok(renewed)
}

pub fn release(conn: &mut Connection, ctx: Ctx, node: &str) -> Result<(), StoreError> {
    let tx = write(conn)?;
    sweep(&tx, ctx)?;
    if tx.execute("DELETE FROM leases WHERE node = ?1", [node])? > 0 {
        log(&tx, ctx, LEASES, node, None)?;
    }
    Ok(tx.commit()?)
}

/// Live leases and the revision they are current at. Expired but not yet swept leases are left out; their
/// delete event follows when the sweep runs. A row whose value does not decode is left out with a warning.
pub fn leases(conn: &mut Connection, ctx: Ctx) -> Result<Snapshot<Lease>, StoreError> {
    let snap = lease_entries(conn, ctx)?;
    let items = snap
        .items
        .into_iter()
        .filter_map(|e| match e.lease {
            Ok(l) => Some(l),
            Err(why) => {
                tracing::warn!(key = %e.key, error = %why, "skipping an undecodable lease row");
                None
            }
        })
        .collect();
    Ok(Snapshot { items, revision: snap.revision })
}

/// Live lease rows as entries: keyed by node (the change log's key), naming the row's subnet, ordered by
/// rowid. Without AUTOINCREMENT a new row gets the largest rowid plus one, so rowid order is creation order
/// among live rows, and an update keeps the rowid.
pub fn lease_entries(conn: &mut Connection, ctx: Ctx) -> Result<Snapshot<LeaseEntry>, StoreError> {
    let tx = conn.transaction()?;
    let items = tx
        .prepare("SELECT rowid, subnet, node, value FROM leases WHERE expires_at_ms > ?1 ORDER BY subnet")?
        .query_map([ctx.now_ms as i64], |r| {
            Ok(lease_entry(r.get(0)?, r.get::<_, String>(1)?, r.get(2)?, &r.get::<_, String>(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let revision = head(&tx)?;
    Ok(Snapshot { items, revision })
}

pub fn lease_entry(rowid: i64, subnet: String, node: String, value: &str) -> LeaseEntry {
    LeaseEntry {
        key: node.clone(),
        // A subnet column that does not parse names no subnet: the value cannot agree with it.
        key_subnet: Some(subnet.parse().unwrap_or(Ipv4Net::default())),
        key_node: Some(node.clone()),
        created: Created(rowid, node),
        lease: serde_json::from_str(value).map_err(|e| e.to_string()),
    }
}

pub fn put_object(
    conn: &mut Connection,
    ctx: Ctx,
    kind: &str,
    key: &str,
    value: &serde_json::Value,
) -> Result<Revision, StoreError> {
    let tx = write(conn)?;
    let json = value.to_string();
    let rev = log(&tx, ctx, kind, key, Some(&json))?;
    tx.execute(
        "INSERT INTO objects (kind, key, value, rev) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, rev = excluded.rev",
        params![kind, key, json, rev as i64],
    )?;
    tx.commit()?;
    Ok(rev)
}

pub fn delete_object(conn: &mut Connection, ctx: Ctx, kind: &str, key: &str) -> Result<(), StoreError> {
    let tx = write(conn)?;
    if tx.execute("DELETE FROM objects WHERE kind = ?1 AND key = ?2", [kind, key])? > 0 {
        log(&tx, ctx, kind, key, None)?;
    }
    Ok(tx.commit()?)
}

pub fn objects(conn: &mut Connection, kind: &str) -> Result<Snapshot<Object>, StoreError> {
    let snap = object_entries(conn, kind)?;
    Ok(Snapshot { items: snap.items.into_iter().map(ObjectEntry::into_object).collect(), revision: snap.revision })
}

/// Objects with their creation order: the rowid, which an upsert keeps and a new row gets above every live one.
pub fn object_entries(conn: &mut Connection, kind: &str) -> Result<Snapshot<ObjectEntry>, StoreError> {
    let tx = conn.transaction()?;
    let items = tx
        .prepare("SELECT rowid, key, value FROM objects WHERE kind = ?1 ORDER BY key")?
        .query_map([kind], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        .filter_map(|row| match row {
            Err(e) => Some(Err(StoreError::from(e))),
            Ok((rowid, k, v)) => match serde_json::from_str(&v) {
                Ok(value) => Some(Ok(ObjectEntry { created: Created(rowid, k.clone()), key: k, value })),
                Err(e) => {
                    tracing::warn!(kind, key = %k, error = %e, "skipping an undecodable object row");
                    None
                }
            },
        })
        .collect::<Result<Vec<ObjectEntry>, StoreError>>()?;
    let revision = head(&tx)?;
    Ok(Snapshot { items, revision })
}

/// One logged change: key, the value after it (None for a delete), and the row's current rowid (and for leases
/// its subnet; empty for objects) if it still exists.
pub type Change = (String, Option<String>, Option<(i64, String)>);

/// What a watcher gets from one poll.
#[derive(Debug)]
pub enum Changes {
    /// The changes of `kind` after the watcher's revision, up to `head`, oldest first.
    Rows { head: Revision, rows: Vec<Change> },
    /// The watcher's revision was trimmed away: it must relist.
    Reset,
}

/// Changes of `kind` after revision `after`. Cheap when nothing changed: one read of `sqlite_sequence`.
pub fn changes(conn: &mut Connection, kind: &str, after: Revision, limit: usize) -> Result<Changes, StoreError> {
    let tx = conn.transaction()?;
    let h = head(&tx)?;
    if h <= after {
        return Ok(Changes::Rows { head: after, rows: vec![] });
    }
    if trimmed_through(&tx)? > after {
        return Ok(Changes::Reset);
    }
    let mut rows = Vec::new();
    let mut last = after;
    let mut stmt = tx.prepare(
        "SELECT c.rev, c.key, c.value, COALESCE(l.rowid, o.rowid), COALESCE(l.subnet, '') FROM changelog c
         LEFT JOIN leases l ON c.kind = 'leases' AND l.node = c.key
         LEFT JOIN objects o ON c.kind <> 'leases' AND o.kind = c.kind AND o.key = c.key
         WHERE c.kind = ?1 AND c.rev > ?2 AND c.rev <= ?3 ORDER BY c.rev LIMIT ?4",
    )?;
    let mut q = stmt.query(params![kind, after as i64, h as i64, limit as i64])?;
    while let Some(r) = q.next()? {
        last = r.get::<_, i64>(0)? as Revision;
        let row: Option<i64> = r.get(3)?;
        rows.push((r.get(1)?, r.get(2)?, row.zip(r.get::<_, Option<String>>(4)?)));
    }
    // A full page may stop short of the head: resume from its last row, not from the head.
    let head = if rows.len() == limit { last } else { h };
    Ok(Changes::Rows { head, rows })
}
