//! The IPAM store: a directory of plain files, crash-safe by construction (SIGKILL at any instruction).
//!
//! Layout of `<dataDir>` (one directory per network):
//! - `10.88.0.5`, `fd00::5` — a **reservation**: the file's *name* is the address, its content a JSON
//!   [`Record`] (containerId, ifname, podNamespace, podName, createdAt).
//! - `a.<key>.<address>` — an **index** entry: a second hard link to the same inode, where `<key>` is
//!   [`attachment_key`]`(containerID, ifname)`. DEL and idempotent ADD find an attachment's addresses from
//!   directory *names* alone (one `getdents`), without opening every reservation.
//! - `tmp.<key>.<pid>` — a record being written; `lock` — the flock file; `last-reserved-v4|v6` — next-fit hints.
//!
//! Reserving address A for attachment K: write the record to `tmp.K.pid`, `link()` it to `a.K.A`, then `link()`
//! it to `A`. `link()` is atomic and fails with EEXIST if `A` exists, so two allocators can never both own A, and
//! there is never a half-written reservation: `A` appears with its full content or not at all. A SIGKILL leaves
//! at worst a `tmp.K.*` file and/or an `a.K.A` entry *without* `A` — both recognisable as stale (a temp file,
//! or an index whose inode differs from `A`'s) and removed by the next DEL of K or any GC. Release removes `A`
//! first, then the index, so a crash there leaves only a stale index too.
//!
//! An exclusive `flock` on `lock` serialises allocate/release/gc of one network: it keeps next-fit fair under 64
//! parallel ADDs and lets GC remove temp files knowing no ADD is writing one. Correctness never depends on the
//! lock (only `link()` decides ownership), so a stale lock holder cannot corrupt anything, and a killed holder's
//! flock dies with it.
//!
//! Power loss: a reservation is durable before ADD answers. The record and then the directory are fsynced after
//! the links (the names are what owns an address), so after a power cut a pod that was told its address still
//! holds it; a release is fsynced too, so a freed address does not come back as a leak. (`fsync:
//! false` in the config skips both, for a store on tmpfs.) A record that is unreadable anyway (a disk that lies,
//! a hand edit) never frees a live pod's address: GC keeps every reservation that a valid attachment's index
//! entry still names, whatever its content, and reports every damaged record it sees.
//!
//! The next-fit hints are replaced atomically (temp file + rename): a hint truncated in place by a SIGKILL would
//! make the next ADD start from the beginning and reuse freshly released addresses early.
use super::pool::Pool;
use crate::names::attachment_key;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("IPAM store {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("subnet {0} is full")]
    Exhausted(String),
}

/// Who owns a reservation (the content of the reservation file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub pod_namespace: String,
    #[serde(default)]
    pub pod_name: String,
    #[serde(default)]
    pub created_at: String,
    /// The tenant network (name and VNI) the address belongs to; absent on the default network, whose
    /// records look exactly as before networks existed. DEL, GC and CHECK read it, so they work without the
    /// node file and after the network has left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

impl Record {
    fn key(&self) -> String {
        attachment_key(&self.container_id, &self.ifname)
    }
}

pub struct IpamStore {
    dir: PathBuf,
    sync: bool,
}

/// What GC did: the addresses it released, and every reservation whose record it could not read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub released: Vec<IpAddr>,
    pub damaged: Vec<Damaged>,
}

/// A reservation whose record is unreadable (empty, truncated, not JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    pub ip: IpAddr,
    /// `Some((containerID, ifname))`: kept, because that valid attachment's index entry names it.
    pub kept_for: Option<(String, String)>,
}

/// The directory as seen by one `read_dir`.
#[derive(Default)]
struct Scan {
    addrs: HashSet<IpAddr>,
    /// (key, address, file name)
    index: Vec<(String, IpAddr, String)>,
    temps: Vec<String>,
}

impl IpamStore {
    /// Opens (creating if needed) the store at `dir`.
    pub fn open(dir: &Path) -> Result<Self, IpamError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
            // A new store's own name must survive a power cut too, or its reservations vanish with it.
            if let Some(parent) = dir.parent() {
                File::open(parent).and_then(|d| d.sync_all()).map_err(io_at(parent))?;
            }
        }
        Ok(IpamStore { dir: dir.to_path_buf(), sync: true })
    }

    /// Opens an existing store; `None` if it was never created (nothing to release).
    pub fn open_existing(dir: &Path) -> Option<Self> {
        dir.is_dir().then(|| IpamStore { dir: dir.to_path_buf(), sync: true })
    }

    /// Whether writes are fsynced (default: yes). Off only for a store on tmpfs or for measuring the cost.
    pub fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Makes the directory's entries (links, unlinks, renames) durable.
    fn sync_dir(&self) -> Result<(), IpamError> {
        if self.sync {
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_at(&self.dir))?;
        }
        Ok(())
    }

    fn lock(&self) -> Result<Flock<File>, IpamError> {
        let path = self.dir.join("lock");
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_at(&path))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io_at(&path)(io::Error::from(e)))
    }

    fn scan(&self) -> Result<Scan, IpamError> {
        let mut s = Scan::default();
        for entry in fs::read_dir(&self.dir).map_err(io_at(&self.dir))? {
            let name = entry.map_err(io_at(&self.dir))?.file_name().to_string_lossy().into_owned();
            if let Ok(ip) = name.parse::<IpAddr>() {
                s.addrs.insert(ip);
            } else if let Some(rest) = name.strip_prefix("a.") {
                if let Some((key, ip)) = rest.split_once('.').and_then(|(k, a)| Some((k, a.parse().ok()?))) {
                    s.index.push((key.to_string(), ip, name));
                }
            } else if name.starts_with("tmp.") {
                s.temps.push(name);
            }
        }
        Ok(s)
    }

    /// True when `a` and `b` are the same inode (an index entry and the reservation it belongs to).
    fn same_file(&self, a: &str, b: &str) -> bool {
        match (fs::metadata(self.dir.join(a)), fs::metadata(self.dir.join(b))) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }

    fn read_record(&self, ip: IpAddr) -> Option<Record> {
        serde_json::from_slice(&fs::read(self.dir.join(ip.to_string())).ok()?).ok()
    }

    /// The attachment's live reservations; removes its stale index entries on the way.
    fn owned(&self, scan: &Scan, cid: &str, ifname: &str) -> Vec<IpAddr> {
        let key = attachment_key(cid, ifname);
        let mut out = Vec::new();
        for (k, ip, name) in scan.index.iter().filter(|(k, ..)| *k == key) {
            if !self.same_file(name, &ip.to_string()) {
                let _ = fs::remove_file(self.dir.join(name));
                continue;
            }
            // Guard against a 64-bit key collision: the record must name this attachment (unreadable = ours).
            match self.read_record(*ip) {
                Some(r) if r.container_id != cid || r.ifname != ifname => continue,
                _ => {}
            }
            debug_assert_eq!(k, &key);
            out.push(*ip);
        }
        out
    }

    /// Reserves one address per pool for the attachment and returns them (pool order). An attachment that
    /// already holds an address in a pool keeps it (a retried ADD gets the same answer). On error nothing
    /// new stays reserved.
    pub fn allocate(&self, record: &Record, pools: &[Pool]) -> Result<Vec<IpAddr>, IpamError> {
        let _lock = self.lock()?;
        let scan = self.scan()?;
        let mine = self.owned(&scan, &record.container_id, &record.ifname);
        let key = record.key();
        let tmp = format!("tmp.{key}.{}", std::process::id());
        let mut used = scan.addrs.clone();
        let mut out: Vec<IpAddr> = Vec::new();
        let mut fresh: Vec<IpAddr> = Vec::new();
        let mut tmp_file: Option<File> = None;
        let mut result = Ok(());
        for pool in pools {
            if let Some(ip) = mine.iter().find(|ip| pool.is_assignable(**ip)) {
                out.push(*ip);
                continue;
            }
            if tmp_file.is_none() {
                match self.write_tmp(&tmp, record) {
                    Ok(f) => tmp_file = Some(f),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            match self.reserve_one(pool, &tmp, &key, &mut used) {
                Ok(ip) => {
                    out.push(ip);
                    fresh.push(ip);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Durable before ADD answers: the record's content, then the directory's names. The names are what owns
        // an address, and a record that lost its content to a power cut is still owned (see `gc`, `owned`), so
        // the content does not have to reach the disk before the links; syncing it after them lets one journal
        // commit carry both on ext4 (the directory sync then finds little left to do): 2 commits cost ~15 ms.
        if result.is_ok() && self.sync {
            if let Some(f) = &tmp_file {
                result = f.sync_all().map_err(io_at(&self.dir.join(&tmp))).and_then(|()| self.sync_dir());
            }
        }
        if tmp_file.is_some() {
            let _ = fs::remove_file(self.dir.join(&tmp));
        }
        if let Err(e) = result {
            for ip in fresh {
                self.remove_reservation(&key, ip);
            }
            return Err(e);
        }
        // Addresses this attachment held outside today's pools (the node's subnet changed) are let go.
        let moved: Vec<IpAddr> = mine.iter().filter(|ip| !out.contains(ip)).copied().collect();
        for ip in &moved {
            self.remove_reservation(&key, *ip);
        }
        if !moved.is_empty() {
            self.sync_dir()?;
        }
        Ok(out)
    }

    fn write_tmp(&self, tmp: &str, record: &Record) -> Result<File, IpamError> {
        let path = self.dir.join(tmp);
        let mut f = File::create(&path).map_err(io_at(&path))?;
        f.write_all(&serde_json::to_vec(record).expect("record serializes")).map_err(io_at(&path))?;
        Ok(f)
    }

    /// Replaces a hint file atomically; the hint only steers next-fit, so a failure costs nothing.
    fn write_hint(&self, hint_file: &Path, ip: IpAddr) {
        let tmp = hint_file.with_extension(format!("tmp.{}", std::process::id()));
        if fs::write(&tmp, ip.to_string()).and_then(|()| fs::rename(&tmp, hint_file)).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    fn reserve_one(&self, pool: &Pool, tmp: &str, key: &str, used: &mut HashSet<IpAddr>) -> Result<IpAddr, IpamError> {
        let hint_file = self.dir.join(if pool.is_v4() { "last-reserved-v4" } else { "last-reserved-v6" });
        let mut hint = fs::read_to_string(&hint_file).ok().and_then(|s| s.trim().parse().ok());
        let src = self.dir.join(tmp);
        loop {
            let ip = pool.next_free(hint, used).ok_or_else(|| IpamError::Exhausted(pool.net().to_string()))?;
            let index = self.dir.join(format!("a.{key}.{ip}"));
            // A leftover index of ours for this address (crash between the two links) is simply replaced.
            let _ = fs::remove_file(&index);
            fs::hard_link(&src, &index).map_err(io_at(&index))?;
            let target = self.dir.join(ip.to_string());
            match fs::hard_link(&src, &target) {
                Ok(()) => {
                    self.write_hint(&hint_file, ip);
                    used.insert(ip);
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Reserved by someone who does not take our lock (or a scan race): skip it.
                    let _ = fs::remove_file(&index);
                    used.insert(ip);
                    hint = Some(ip);
                }
                Err(e) => {
                    let _ = fs::remove_file(&index);
                    return Err(io_at(&target)(e));
                }
            }
        }
    }

    /// Removes reservation `ip` if it belongs to `key` (same inode as its index), then the index.
    fn remove_reservation(&self, key: &str, ip: IpAddr) {
        let index = format!("a.{key}.{ip}");
        if self.same_file(&index, &ip.to_string()) {
            let _ = fs::remove_file(self.dir.join(ip.to_string()));
        }
        let _ = fs::remove_file(self.dir.join(index));
    }

    /// Releases every address of the attachment (and its leftovers); returns the released addresses.
    pub fn release(&self, cid: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let _lock = self.lock()?;
        let scan = self.scan()?;
        let key = attachment_key(cid, ifname);
        let mine = self.owned(&scan, cid, ifname);
        for ip in &mine {
            self.remove_reservation(&key, *ip);
        }
        for t in scan.temps.iter().filter(|t| t.starts_with(&format!("tmp.{key}."))) {
            let _ = fs::remove_file(self.dir.join(t));
        }
        if !mine.is_empty() {
            self.sync_dir()?;
        }
        Ok(mine)
    }

    /// The attachment's current addresses (for CHECK).
    pub fn addresses_of(&self, cid: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let scan = self.scan()?;
        let key = attachment_key(cid, ifname);
        Ok(scan
            .index
            .iter()
            .filter(|(k, ip, name)| *k == key && self.same_file(name, &ip.to_string()))
            .map(|(_, ip, _)| *ip)
            .collect())
    }

    /// The record of the attachment's first live reservation, if it has one and it is readable (CHECK learns the
    /// attachment's network from it).
    pub fn record_of(&self, cid: &str, ifname: &str) -> Result<Option<Record>, IpamError> {
        Ok(self.addresses_of(cid, ifname)?.into_iter().find_map(|ip| self.read_record(ip)))
    }

    /// Whether any entry of the directory names the attachment (an index entry or a temp file), read without
    /// the lock: a cheap test that lets DEL skip the pools an attachment never touched (one `getdents`, no lock
    /// file created). An ADD of the same attachment racing with its DEL is not a sequence runtimes produce.
    pub fn mentions(&self, cid: &str, ifname: &str) -> Result<bool, IpamError> {
        let key = attachment_key(cid, ifname);
        let (index, tmp) = (format!("a.{key}."), format!("tmp.{key}."));
        for e in fs::read_dir(&self.dir).map_err(io_at(&self.dir))? {
            let e = e.map_err(io_at(&self.dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&index) || name.starts_with(&tmp) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes every reservation no valid attachment holds, every stale index entry and every temp file.
    ///
    /// A reservation is kept when a valid attachment's index entry is a link to it (the same inode): that is
    /// the ownership ADD created, and it does not depend on the record's content, so a truncated or garbage
    /// record of a running pod is kept (and reported), never handed out again. A readable record naming a
    /// valid attachment is kept too (a reservation whose index was lost). Everything else is released.
    pub fn gc(&self, valid: &HashSet<(String, String)>) -> Result<GcReport, IpamError> {
        let _lock = self.lock()?;
        let scan = self.scan()?;
        let keys: HashMap<String, &(String, String)> = valid.iter().map(|a| (attachment_key(&a.0, &a.1), a)).collect();
        let mut held: HashMap<IpAddr, &(String, String)> = HashMap::new();
        for (key, ip, name) in &scan.index {
            if let Some(owner) = keys.get(key) {
                if self.same_file(name, &ip.to_string()) {
                    held.insert(*ip, owner);
                }
            }
        }
        let mut report = GcReport::default();
        for ip in &scan.addrs {
            let record = self.read_record(*ip);
            let by_index = held.get(ip).copied();
            let by_record =
                record.as_ref().is_some_and(|r| valid.contains(&(r.container_id.clone(), r.ifname.clone())));
            if record.is_none() {
                report.damaged.push(Damaged { ip: *ip, kept_for: by_index.cloned() });
            }
            if by_index.is_none() && !by_record {
                let _ = fs::remove_file(self.dir.join(ip.to_string()));
                report.released.push(*ip);
            }
        }
        for (_, ip, name) in &scan.index {
            if !self.same_file(name, &ip.to_string()) {
                let _ = fs::remove_file(self.dir.join(name));
            }
        }
        for t in &scan.temps {
            let _ = fs::remove_file(self.dir.join(t));
        }
        if !report.released.is_empty() {
            self.sync_dir()?;
        }
        report.released.sort();
        report.damaged.sort_by_key(|d| d.ip);
        Ok(report)
    }

    /// Every reservation and its owner, if readable (tests and debugging).
    pub fn list(&self) -> Result<HashMap<IpAddr, Option<Record>>, IpamError> {
        Ok(self.scan()?.addrs.into_iter().map(|ip| (ip, self.read_record(ip))).collect())
    }
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> IpamError + '_ {
    move |source| IpamError::Io { path: path.display().to_string(), source }
}
