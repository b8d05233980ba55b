//! Key rotation, asked for through the state directory (root's only; pods never see it, unlike the agent's
//! HTTP port), served by the agent's next pass.
//!
//! `weftctl wireguard rotate-key` writes `<state dir>/wireguard.rotate` holding the public key to retire (read
//! from `wireguard.pub`, which the agent keeps equal to the key it runs). A request is level-triggered and
//! idempotent: the pass that finds it rotates only while the running key is still the named one, then removes
//! it; a request naming any other key is already served (e.g. the agent stored the new key and restarted before
//! removing the request) and is just removed. So a crash at any point rotates at most once per request.
//!
//! One rotation at a time: a request that arrives while the previous rotation is still completing (some peer has
//! not shaken hands with the new key yet, or did so less than [`SETTLE`] ago, while the old sessions retire) waits
//! in place, because the tunnel remembers only one previous key for answering handshakes.
//!
//! Order inside the pass: the new private key is stored first (atomic rename, 0600), so a restart at any later
//! point runs the new key; the file holding the old key is overwritten before it is closed; then the tunnel
//! switches (old sessions keep carrying traffic, see `weft_tunnel::Tunnel::rotate_key`); then `wireguard.pub`,
//! and the pass returns the new public key as the lease data, which the lease keeper publishes at once.
use std::fs;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};
use weft_tunnel::{keys, PeerStats, PrivateKey, PublicKey, Tunnel};

/// The request: the public key (base64) to retire.
pub const REQUEST_FILE: &str = "wireguard.rotate";
/// The public key the agent runs (not secret; 0644), for operators and `weftctl`.
pub const PUBLIC_KEY_FILE: &str = "wireguard.pub";

/// After every peer has shaken hands with the new key, how long the old sessions still live in the tunnel (its
/// retirement grace, 5 s, plus a pass).
pub const SETTLE: Duration = Duration::from_secs(6);
/// A rotation is over after this whatever the peers did (WireGuard's REJECT_AFTER_TIME: the tunnel drops the old
/// sessions and key by then).
pub const SETTLE_MAX: Duration = Duration::from_secs(180);

/// What the backend remembers of its last rotation between passes.
#[derive(Debug, Default)]
pub struct Rotations {
    last: Option<Instant>,
    /// When every peer was first seen with a handshake newer than the last rotation.
    all_new_since: Option<Instant>,
    waiting_said: bool,
}

impl Rotations {
    /// Whether a new rotation may start now, given the tunnel's per-peer stats.
    fn ready(&mut self, stats: &[PeerStats], now: Instant) -> bool {
        let Some(at) = self.last else { return true };
        let since = now.saturating_duration_since(at);
        if since >= SETTLE_MAX {
            return true;
        }
        // Each peer's latest handshake, if it is newer than the rotation (so made with the new keys).
        let ages: Option<Vec<Duration>> = stats.iter().map(|s| s.handshake_age.filter(|&age| age < since)).collect();
        let Some(ages) = ages else {
            self.all_new_since = None;
            return false;
        };
        // The first new handshake is at least as old as the latest: SETTLE ago for every peer means the old
        // sessions are gone. A younger one may be a rekey of an older new session: then watch SETTLE pass.
        if ages.iter().all(|&age| age >= SETTLE) {
            return true;
        }
        let t = *self.all_new_since.get_or_insert(now);
        now.saturating_duration_since(t) >= SETTLE
    }

    fn rotated(&mut self, now: Instant) {
        *self = Rotations { last: Some(now), ..Rotations::default() };
    }

    /// After a restart: the last rotation is as old as the key file (a rotation stores a new one), so one that
    /// completed just before the restart still settles before the next may start.
    pub fn resume(dir: &Path, now: Instant) -> Rotations {
        let age = key_written(dir).and_then(|t| std::time::SystemTime::now().duration_since(t).ok());
        match age.filter(|a| *a < SETTLE_MAX).and_then(|a| now.checked_sub(a)) {
            Some(at) => Rotations { last: Some(at), ..Rotations::default() },
            None => Rotations::default(),
        }
    }
}

/// A key file dated this much in the future is taken as due (clock skew within it is not).
const FUTURE_SLACK: Duration = Duration::from_secs(60);

/// Longest request accepted (a base64 key is 44 bytes plus a newline): the file is input, bound the read.
const MAX_REQUEST: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// (`error`, not `source`: the message already says it, so a cause chain would print it twice.)
    #[error("{path}: {error}")]
    Io { path: std::path::PathBuf, error: std::io::Error },
    #[error("{0}")]
    Key(#[from] keys::KeyError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RotateError + '_ {
    move |error| RotateError::Io { path: path.to_path_buf(), error }
}

/// Writes `name` in `dir` atomically (complete temp file, then rename) with `mode` from creation.
fn write_atomic(dir: &Path, name: &str, text: &str, mode: u32) -> Result<(), RotateError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io(&tmp))?;
    if let Err(e) = f.write_all(text.as_bytes()).and_then(|()| f.sync_all()) {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    fs::rename(&tmp, &path).map_err(io(&path))
}

/// Records the public key the agent runs.
pub fn write_public_key(dir: &Path, key: &PublicKey) -> Result<(), RotateError> {
    write_atomic(dir, PUBLIC_KEY_FILE, &format!("{key}\n"), 0o644)
}

/// The public key the agent in `dir` runs, as it recorded it.
pub fn read_public_key(dir: &Path) -> Result<PublicKey, RotateError> {
    let path = dir.join(PUBLIC_KEY_FILE);
    let text = read_bounded(&path)?;
    Ok(PublicKey::from_base64(&text)?)
}

/// Asks the agent in `dir` to retire `current` (what `weftctl` does).
pub fn request(dir: &Path, current: &PublicKey) -> Result<(), RotateError> {
    write_atomic(dir, REQUEST_FILE, &format!("{current}\n"), 0o600)
}

fn read_bounded(path: &Path) -> Result<String, RotateError> {
    let mut text = String::new();
    fs::File::open(path).and_then(|f| f.take(MAX_REQUEST).read_to_string(&mut text)).map_err(io(path))?;
    Ok(text)
}

/// What a request asks of an agent running `running`.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    None,
    Rotate,
    /// Already served, or not a key: remove it.
    Stale(String),
}

fn judge(request: Result<String, RotateError>, running: &PublicKey) -> Ask {
    match request {
        Err(RotateError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => Ask::None,
        Err(e) => Ask::Stale(format!("unreadable rotation request: {e}")),
        Ok(text) => match PublicKey::from_base64(&text) {
            Ok(k) if k == *running => Ask::Rotate,
            Ok(k) => Ask::Stale(format!("rotation request for key {k}, which is not the running one: already done")),
            Err(_) => Ask::Stale("rotation request is not a public key; ignored".into()),
        },
    }
}

/// Serves a pending request, if any: called on every pass with the running tunnel. Failures are logged and
/// leave the old key running (and the request in place, so the next pass tries again).
pub fn serve_request(dir: &Path, tunnel: &Tunnel, rotations: &mut Rotations) {
    let path = dir.join(REQUEST_FILE);
    let old = tunnel.public_key();
    match judge(read_bounded(&path), &old) {
        Ask::None => return,
        Ask::Stale(why) => {
            tracing::info!("{why}");
            let _ = fs::remove_file(&path);
            return;
        }
        Ask::Rotate => {}
    }
    if !rotations.ready(&tunnel.stats(), Instant::now()) {
        if !std::mem::replace(&mut rotations.waiting_said, true) {
            tracing::info!("WireGuard key rotation requested; waiting until every peer has the previous one");
        }
        return;
    }
    let new = PrivateKey::generate();
    let new_public = new.public_key();
    if let Err(e) = store_replacing(dir, &new) {
        tracing::error!("WireGuard key rotation failed, the old key stays: {e}");
        return;
    }
    tunnel.rotate_key(new);
    rotations.rotated(Instant::now());
    let _ = fs::remove_file(&path);
    if let Err(e) = write_public_key(dir, &new_public) {
        tracing::warn!("{e}");
    }
    tracing::info!(old = %old, new = %new_public, "WireGuard key rotated; publishing the new public key in the lease");
}

/// Scheduled rotation: once the key file is `every` old (its modification time: a rotation stores a new file,
/// a restart keeps it, so the schedule survives restarts), writes the same request `weftctl` would, for the
/// running key, unless one is pending. Serving it is then [`serve_request`]'s, with its one-at-a-time rule.
pub fn schedule(dir: &Path, running: &PublicKey, every: Duration, now: std::time::SystemTime) {
    if due(dir, every, now) {
        match request(dir, running) {
            Ok(()) => tracing::info!(key = %running, every = ?every, "WireGuard key is due for rotation"),
            Err(e) => tracing::warn!("scheduling the WireGuard key rotation: {e}"),
        }
    }
}

/// When the key file in `dir` was last written: the last rotation (or the first start).
fn key_written(dir: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(dir.join(keys::KEY_FILE)).and_then(|m| m.modified()).ok()
}

/// Whether the key file in `dir` is at least `every` old and no request is pending.
fn due(dir: &Path, every: Duration, now: std::time::SystemTime) -> bool {
    if dir.join(REQUEST_FILE).exists() {
        return false;
    }
    let Some(written) = key_written(dir) else { return false };
    match now.duration_since(written) {
        Ok(age) => age >= every,
        // Dated well in the future (the clock was set back, or the file was touched): its age is unknown, and
        // waiting for the clock could take years. Rotate; the new file has a sane date.
        Err(e) => e.duration() > FUTURE_SLACK,
    }
}

/// Stores `new` as the node's key (atomically, 0600) and overwrites the old key file's contents once it is
/// no longer linked, so the old private key does not linger in the freed blocks or pages (best effort: a
/// copy-on-write or journalled-data filesystem may keep old blocks anyway).
fn store_replacing(dir: &Path, new: &PrivateKey) -> Result<(), RotateError> {
    let path = dir.join(keys::KEY_FILE);
    let old = fs::OpenOptions::new().write(true).open(&path).ok();
    keys::store(dir, new)?;
    if let Some(mut f) = old {
        let len = f.metadata().map(|m| m.len()).unwrap_or(64).min(4096) as usize;
        let wiped = f.rewind().and_then(|()| f.write_all(&vec![0u8; len])).and_then(|()| f.sync_all());
        if let Err(e) = wiped {
            tracing::warn!("overwriting the retired key file: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_rotation_asks_once_the_key_file_is_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let every = Duration::from_secs(3600);
        let now = std::time::SystemTime::now();
        assert!(!due(d, every, now), "no key file: nothing to rotate");
        let key = PrivateKey::generate();
        keys::store(d, &key).unwrap();
        let file = fs::File::options().write(true).open(d.join(keys::KEY_FILE)).unwrap();
        file.set_modified(now - Duration::from_secs(60)).unwrap();
        assert!(!due(d, every, now), "a minute old");
        file.set_modified(now - Duration::from_secs(3600)).unwrap();
        assert!(due(d, every, now), "an hour old");
        // The request names the running key, as weftctl's does; while it is pending nothing more is asked.
        schedule(d, &key.public_key(), every, now);
        assert_eq!(judge(read_bounded(&d.join(REQUEST_FILE)), &key.public_key()), Ask::Rotate);
        assert!(!due(d, every, now));
        fs::remove_file(d.join(REQUEST_FILE)).unwrap();
        // A key file a little in the future (clock skew) is not due; one far in the future (the clock was set
        // back) has an unknown age and is rotated rather than kept for years.
        file.set_modified(now + Duration::from_secs(30)).unwrap();
        assert!(!due(d, every, now));
        file.set_modified(now + Duration::from_secs(7200)).unwrap();
        assert!(due(d, every, now));
        // After a restart, a rotation made a moment ago still settles first.
        file.set_modified(std::time::SystemTime::now()).unwrap();
        assert!(Rotations::resume(d, Instant::now()).last.is_some(), "a fresh key file is a recent rotation");
        file.set_modified(std::time::SystemTime::now() - SETTLE_MAX).unwrap();
        assert!(Rotations::resume(d, Instant::now()).last.is_none(), "an old key file is no recent rotation");
    }

    #[test]
    fn a_request_rotates_only_the_key_it_names() {
        let running = PrivateKey::generate().public_key();
        let other = PrivateKey::generate().public_key();
        let missing = || Err(RotateError::Io { path: "x".into(), error: std::io::ErrorKind::NotFound.into() });
        assert_eq!(judge(missing(), &running), Ask::None);
        assert_eq!(judge(Ok(format!("{running}\n")), &running), Ask::Rotate);
        assert!(matches!(judge(Ok(format!("{other}\n")), &running), Ask::Stale(w) if w.contains("already done")));
        assert!(matches!(judge(Ok("rm -rf /".into()), &running), Ask::Stale(w) if w.contains("not a public key")));
        let denied = Err(RotateError::Io { path: "x".into(), error: std::io::ErrorKind::PermissionDenied.into() });
        assert!(matches!(judge(denied, &running), Ask::Stale(_)));
    }

    fn peer(handshake_age: Option<Duration>) -> PeerStats {
        PeerStats {
            public_key: PrivateKey::generate().public_key(),
            endpoint: "192.0.2.1:51820".parse().unwrap(),
            last_handshake: None,
            handshake_age,
            handshakes: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            decrypt_failures: 0,
            spoofed_source: 0,
        }
    }

    #[test]
    fn one_rotation_at_a_time() {
        let t0 = Instant::now();
        let mut r = Rotations::default();
        let s = Duration::from_secs;
        assert!(r.ready(&[peer(None)], t0), "the first rotation never waits");
        r.rotated(t0);
        // 2 s later: one peer shook hands after the rotation (age 1 s), one not yet (age 30 s, the old session).
        assert!(!r.ready(&[peer(Some(s(1))), peer(Some(s(30)))], t0 + s(2)));
        // Both have new handshakes: the old sessions still retire for SETTLE.
        let both = [peer(Some(s(1))), peer(Some(s(2)))];
        assert!(!r.ready(&both, t0 + s(3)));
        assert!(!r.ready(&both, t0 + s(8)));
        assert!(r.ready(&both, t0 + s(3) + SETTLE));
        // A peer that never answers does not block rotations forever.
        let mut r = Rotations::default();
        r.rotated(t0);
        assert!(!r.ready(&[peer(None)], t0 + s(100)));
        assert!(r.ready(&[peer(None)], t0 + SETTLE_MAX));
        // New handshakes long enough ago: ready at once, whenever the request comes.
        let mut r = Rotations::default();
        r.rotated(t0);
        assert!(r.ready(&[peer(Some(s(7))), peer(Some(SETTLE))], t0 + s(10)));
        assert!(!r.ready(&[peer(Some(s(7))), peer(Some(s(11)))], t0 + s(10)), "a handshake from before the rotation");
        // No peers: no old sessions to wait for.
        assert!(r.ready(&[], t0 + s(1)));
    }

    #[test]
    fn request_and_public_key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate().public_key();
        write_public_key(dir.path(), &key).unwrap();
        assert_eq!(read_public_key(dir.path()).unwrap(), key);
        request(dir.path(), &key).unwrap();
        assert_eq!(judge(read_bounded(&dir.path().join(REQUEST_FILE)), &key), Ask::Rotate);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir.path().join(REQUEST_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn storing_a_new_key_wipes_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let old = keys::load_or_create(dir.path()).unwrap();
        // A second link to the old inode shows what became of its contents after the rename.
        let witness = dir.path().join("witness");
        fs::hard_link(dir.path().join(keys::KEY_FILE), &witness).unwrap();
        let new = PrivateKey::generate();
        store_replacing(dir.path(), &new).unwrap();
        let now = keys::read_key_file(&dir.path().join(keys::KEY_FILE)).unwrap();
        assert_eq!(now.public_key(), new.public_key());
        let left = fs::read(&witness).unwrap();
        assert!(left.iter().all(|&b| b == 0), "the old key file still holds data");
        assert!(!String::from_utf8_lossy(&left).contains(&old.to_base64()));
    }
}
