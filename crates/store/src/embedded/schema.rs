//! Opening the database file and its schema.
//!
//! Several agents (processes) share one file in the lab, so: WAL (readers never block the one writer),
//! a generous busy timeout (writers queue instead of failing), and schema creation inside a write transaction
//! so fifty agents starting at once all agree on it. `user_version` records the schema version for the day
//! a migration is needed.
//!
//! Tables:
//! - `config`: the one cluster network config (first writer wins).
//! - `leases`: one row per live lease; `subnet` is the primary key and `node` is UNIQUE, so the database
//!   itself refuses two nodes on one subnet or two subnets for one node, whatever the code above does.
//! - `objects`: endpoints, namespaces and policies as JSON, by kind and key.
//! - `changelog`: every change with its value, numbered by an AUTOINCREMENT revision. Watchers poll it; the
//!   AUTOINCREMENT (kept in `sqlite_sequence`) guarantees revisions are never reused even after trimming.
//! - `meta`: `trimmed_through`, the newest revision removed by trimming; a watcher older than that gets Reset.
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS config (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    subnet TEXT PRIMARY KEY,
    node TEXT NOT NULL UNIQUE,
    value TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at_ms);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    rev INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS changelog (
    rev INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('put', 'delete')),
    value TEXT
);
CREATE INDEX IF NOT EXISTS changelog_kind ON changelog (kind, rev);
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v INTEGER NOT NULL
);
";

/// Opens (creating if needed) the database at `path` with the settings every connection needs.
pub fn open(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // A missing directory is reported by SQLite as "unable to open": create it for a clearer life.
        let _ = std::fs::create_dir_all(dir);
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy)?;
    set_wal(&conn, busy)?;
    // NORMAL is durable across process crashes in WAL mode; only an OS crash may lose the last commits, and a
    // lost lease renewal is harmless (the agent renews again).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < SCHEMA_VERSION {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))?;
    }
    Ok(conn)
}

/// Switching to WAL needs a moment of exclusive access, and SQLite does not always run the busy handler for
/// it, so many agents opening a fresh file at once retry here until `busy` has passed.
fn set_wal(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + busy;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5 + rand::random::<u64>() % 20));
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}
