//! Choosing a store from one URL, so the agent and the CLI take a single `--store` flag and never name an
//! implementation:
//! - `embedded:///var/lib/weft/store.db` or `sqlite:///var/lib/weft/store.db` (or a bare path starting with
//!   `/` or `.`): the embedded SQLite store. `embedded://rel/path.db` is relative to the working directory.
//! - `etcd://127.0.0.1:2379` or `etcd+http://h1:2379,h2:2379`, optionally followed by a key prefix path
//!   (`etcd://h:2379/lab1` keeps keys under `/lab1/`; default `/weft/`).
//! - `etcds://h1:2379,h2:2379[/prefix]` (also `etcd+https://`, `https://`): etcd over TLS; the CA, client
//!   certificate and credentials come from [`EtcdSecurityFiles`] (weftd's `--etcd-*` flags).
use crate::embedded::EmbeddedStore;
use crate::etcd::{EtcdOptions, EtcdSecurityFiles, EtcdStore};
use crate::{Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Embedded(PathBuf),
    Etcd {
        /// `http://host:port` each.
        endpoints: Vec<String>,
        /// Starts and ends with `/`.
        prefix: String,
    },
}

fn bad(url: &str, why: &str) -> StoreError {
    StoreError::Other(format!("store URL {url:?}: {why}"))
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        if url.starts_with('/') || url.starts_with('.') {
            return Ok(StoreUrl::Embedded(PathBuf::from(url)));
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad(url, "expected scheme://"))?;
        match scheme {
            "embedded" | "sqlite" => {
                if rest.is_empty() {
                    return Err(bad(url, "no database path"));
                }
                Ok(StoreUrl::Embedded(PathBuf::from(rest)))
            }
            "etcd" | "etcd+http" | "etcds" | "etcd+https" | "https" => {
                let scheme = if matches!(scheme, "etcd" | "etcd+http") { "http" } else { "https" };
                let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
                let endpoints: Vec<String> =
                    hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("{scheme}://{h}")).collect();
                if endpoints.is_empty() {
                    return Err(bad(url, "no etcd endpoint"));
                }
                let path = path.trim_matches('/');
                let prefix =
                    if path.is_empty() { crate::etcd::DEFAULT_PREFIX.to_string() } else { format!("/{path}/") };
                Ok(StoreUrl::Etcd { endpoints, prefix })
            }
            _ => Err(bad(url, "unknown scheme (embedded://, sqlite://, etcd://, etcds://)")),
        }
    }
}

/// Opens the store `url` names, with default options and no etcd credentials.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, &EtcdSecurityFiles::default()).await
}

/// Opens the store `url` names; `etcd` gives TLS files and credentials for an etcd URL (refused for others).
pub async fn open_with(url: &str, etcd: &EtcdSecurityFiles) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url.parse::<StoreUrl>()? {
        StoreUrl::Embedded(path) => {
            if !etcd.is_empty() {
                return Err(bad(url, "etcd TLS/credential flags given for a store that is not etcd"));
            }
            Arc::new(EmbeddedStore::open(path).await?)
        }
        StoreUrl::Etcd { endpoints, prefix } => {
            let tls = endpoints.iter().all(|e| e.starts_with("https://"));
            let security = etcd.load(tls)?;
            if security.user.is_some() && !tls {
                tracing::warn!(store = url, "etcd password sent without TLS: anyone on the path can read it");
            }
            Arc::new(EtcdStore::connect(endpoints, EtcdOptions { prefix, security, ..EtcdOptions::default() }).await?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StoreUrl {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(p("embedded:///var/lib/weft/s.db"), StoreUrl::Embedded("/var/lib/weft/s.db".into()));
        assert_eq!(p("sqlite:///tmp/x.db"), StoreUrl::Embedded("/tmp/x.db".into()));
        assert_eq!(p("embedded://rel/x.db"), StoreUrl::Embedded("rel/x.db".into()));
        assert_eq!(p("/tmp/y.db"), StoreUrl::Embedded("/tmp/y.db".into()));
        assert_eq!(
            p("etcd://127.0.0.1:2379"),
            StoreUrl::Etcd { endpoints: vec!["http://127.0.0.1:2379".into()], prefix: "/weft/".into() }
        );
        assert_eq!(
            p("etcd+http://a:1,b:2/lab/one/"),
            StoreUrl::Etcd { endpoints: vec!["http://a:1".into(), "http://b:2".into()], prefix: "/lab/one/".into() }
        );
    }

    #[test]
    fn rejects_nonsense() {
        assert_eq!(
            p("etcds://a:1,b:2"),
            StoreUrl::Etcd { endpoints: vec!["https://a:1".into(), "https://b:2".into()], prefix: "/weft/".into() }
        );
        assert_eq!(p("https://a:1/x"), p("etcd+https://a:1/x"));
        for bad in ["", "etcd://", "etcds://", "redis://x", "embedded://", "weft.db"] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad} should not parse");
        }
    }
}
