//! Node keys: generation, the private key file, public key derivation.
//!
//! The private key lives only in memory and in one file (`<state dir>/wireguard.key`, mode 0600, the same base64
//! text `wg genkey` writes, so `wg` tools can read it). It is created atomically on first start (a complete
//! temp file, then `rename`), a file readable by group or others is refused rather than used, and the type has
//! no `Display` and a redacting `Debug`, so it cannot reach a log or a status by accident.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use defguard_boringtun::x25519;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// File name of the private key inside the state directory.
pub const KEY_FILE: &str = "wireguard.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a WireGuard key is 32 bytes of base64 (44 characters)")]
    BadEncoding,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is readable by group or others (mode {mode:o}); refusing to use it, chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_path_buf(), source }
}

/// A Curve25519 private key. Zeroed on drop; never printed.
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A fresh key from the OS random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        // Clamped as `wg genkey` does, so the file is byte-identical in form to one made by wireguard-tools.
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        PrivateKey(bytes)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(PrivateKey)
    }

    /// Base64 text, for the key file and the UAPI socket only.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.secret()).to_bytes())
    }

    pub(crate) fn secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keeps the compiler from eliding the fill of memory about to be freed.
        std::hint::black_box(&self.0);
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A Curve25519 public key; displayed and (de)serialized as base64, the form `wg` and leases use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(PublicKey)
    }
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        PublicKey::from_base64(s)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PublicKey::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = B64.decode(text.trim()).map_err(|_| KeyError::BadEncoding)?;
    bytes.try_into().map_err(|_| KeyError::BadEncoding)
}

/// Reads `<dir>/wireguard.key`, or creates it (and `dir`, mode 0700) with a new key when it does not exist.
pub fn load_or_create(dir: &Path) -> Result<PrivateKey, KeyError> {
    let path = dir.join(KEY_FILE);
    match read_key_file(&path) {
        Ok(key) => Ok(key),
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::generate();
            store(dir, &key)?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// Reads a key file, refusing one that group or others can read.
pub fn read_key_file(path: &Path) -> Result<PrivateKey, KeyError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.to_path_buf(), mode });
    }
    let text = fs::read_to_string(path).map_err(io(path))?;
    PrivateKey::from_base64(&text)
}

/// Writes `key` to `<dir>/wireguard.key` atomically (mode 0600 from creation, then rename), replacing any old one.
/// Used on first start and after a rotation.
pub fn store(dir: &Path, key: &PrivateKey) -> Result<(), KeyError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    let path = dir.join(KEY_FILE);
    let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    let written = f.write_all(format!("{}\n", key.to_base64()).as_bytes()).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    fs::rename(&tmp, &path).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_once_with_mode_0600_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let a = load_or_create(&state).unwrap();
        let mode = fs::metadata(state.join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&state).unwrap();
        assert_eq!(a.public_key(), b.public_key());
    }

    #[test]
    fn world_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &PrivateKey::generate()).unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(KeyError::Permissions { .. })));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = PrivateKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.to_base64()));
    }

    #[test]
    fn public_key_matches_wireguard_tools() {
        // `echo YNqH... | wg pubkey` with wireguard-tools gave this.
        let key = PrivateKey::from_base64("YNqHbfBQKaGvzefSSLXiHY4Ghcmqhr7O9IBd3Nq0mW4=").unwrap();
        assert_eq!(key.public_key().to_base64(), "mYlNKXMdvErYoFxHsW5/hsbljwNDVtI6B3uEp/0BnhU=");
    }

    #[test]
    fn garbage_keys_are_rejected() {
        assert!(PublicKey::from_base64("not a key").is_err());
        assert!(PublicKey::from_base64("AAAA").is_err());
    }
}
