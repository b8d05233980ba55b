//! Transport security and authentication to etcd: TLS (server verified against a CA, optionally a client
//! certificate for etcd's `--client-cert-auth`) and username/password (etcd `auth enable`).
//!
//! Everything is read from files once, when the store is opened, so a missing or unreadable file is a startup
//! error that names it, and a running agent never depends on the files again. The password and the private key
//! never appear in `Debug` output or logs. TLS is chosen by the URL (`etcds://`, `etcd+https://`,
//! `https://`); TLS files with a plain `etcd://` URL are refused rather than silently ignored, so an operator
//! who meant to encrypt never runs in plaintext by a typo.
use crate::StoreError;
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use std::path::{Path, PathBuf};

/// Where the secrets come from, as the flags name them (flannel's names: `--etcd-cafile`, ...).
#[derive(Clone, Default)]
pub struct EtcdSecurityFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Read the password from this file (first line) instead: keeps it out of the process list.
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for EtcdSecurityFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurityFiles")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// Loaded secrets, ready for every (re)connect.
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and private key (PEM).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.identity.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

fn read(what: &str, p: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(p).map_err(|e| StoreError::Other(format!("etcd {what} {}: {e}", p.display())))
}

impl EtcdSecurityFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none()
            && self.cert_file.is_none()
            && self.key_file.is_none()
            && self.username.is_none()
            && self.password.is_none()
            && self.password_file.is_none()
    }

    /// Reads the files. `tls` says whether the URL asked for TLS.
    pub fn load(&self, tls: bool) -> Result<EtcdSecurity, StoreError> {
        let bad = |why: &str| Err(StoreError::Other(format!("etcd security: {why}")));
        let wants_tls = self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some();
        if wants_tls && !tls {
            return bad("CA/certificate/key files given but the store URL is plain etcd:// (use etcds://)");
        }
        if tls && self.ca_file.is_none() {
            return bad("a TLS store URL needs --etcd-cafile (the CA that signed etcd's certificate)");
        }
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((read("certificate", c)?, read("key", k)?)),
            (None, None) => None,
            _ => return bad("--etcd-certfile and --etcd-keyfile go together"),
        };
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => return bad("give the password or a password file, not both"),
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => {
                let text = String::from_utf8(read("password file", f)?)
                    .map_err(|_| StoreError::Other(format!("etcd password file {} is not UTF-8", f.display())))?;
                Some(text.lines().next().unwrap_or_default().to_string())
            }
            (None, None) => None,
        };
        let user = match (&self.username, password) {
            (Some(u), Some(p)) => Some((u.clone(), p)),
            (None, None) => None,
            _ => return bad("--etcd-username and a password go together"),
        };
        let ca_pem = self.ca_file.as_deref().map(|p| read("CA file", p)).transpose()?;
        Ok(EtcdSecurity { ca_pem, identity, user })
    }
}

impl EtcdSecurity {
    /// Adds TLS and credentials to the connect options.
    pub(crate) fn apply(&self, mut opts: ConnectOptions) -> ConnectOptions {
        if let Some(ca) = &self.ca_pem {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(tls);
        }
        if let Some((u, p)) = &self.user {
            // etcd's simple tokens expire after a few idle minutes: refresh instead of failing every call.
            opts = opts.with_user(u.clone(), p.clone()).with_auto_token_refresh(true);
        }
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_half_configs_and_never_shows_secrets() {
        let ca = Some(PathBuf::from("/nonexistent/ca.pem"));
        let f = EtcdSecurityFiles { ca_file: ca.clone(), ..Default::default() };
        assert!(f.load(false).unwrap_err().to_string().contains("etcds://"));
        assert!(f.load(true).unwrap_err().to_string().contains("/nonexistent/ca.pem"));
        assert!(EtcdSecurityFiles::default().load(true).unwrap_err().to_string().contains("--etcd-cafile"));
        let half = EtcdSecurityFiles { ca_file: ca, cert_file: Some("/c".into()), ..Default::default() };
        assert!(half.load(true).unwrap_err().to_string().contains("go together"));
        let user = EtcdSecurityFiles { username: Some("root".into()), ..Default::default() };
        assert!(user.load(false).is_err());
        let both =
            EtcdSecurityFiles { username: Some("root".into()), password: Some("s3cret".into()), ..Default::default() };
        let loaded = both.load(false).unwrap();
        assert!(!format!("{both:?} {loaded:?}").contains("s3cret"));
    }
}
