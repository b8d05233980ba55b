//! The store URL of Kubernetes mode:
//! - `kube://`: the usual client config, `KUBECONFIG` (or `~/.kube/config`) else the pod's in-cluster service
//!   account. What the DaemonSet uses.
//! - `kube+http://HOST:PORT`: plain HTTP, no authentication, no TLS. Only for the fake API server of tests and
//!   the lab; a real API server never serves this.
use weft_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeUrl {
    Infer,
    /// `http://HOST:PORT`
    Plain(String),
}

impl std::str::FromStr for KubeUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Other(format!("store URL {url:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected kube:// or kube+http://HOST:PORT"))?;
        match scheme {
            "kube" if rest.trim_matches('/').is_empty() => Ok(KubeUrl::Infer),
            "kube" => Err(bad("kube:// takes no host: the API server comes from KUBECONFIG or the in-cluster config")),
            "kube+http" => {
                let host = rest.trim_end_matches('/');
                if host.is_empty() || host.contains('/') {
                    return Err(bad("expected kube+http://HOST:PORT"));
                }
                Ok(KubeUrl::Plain(format!("http://{host}")))
            }
            "kube+https" => Err(bad("for TLS use kube:// with a kubeconfig that names the server")),
            _ => Err(bad("not a Kubernetes store URL (kube://, kube+http://HOST:PORT)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!("kube://".parse::<KubeUrl>().unwrap(), KubeUrl::Infer);
        assert_eq!("kube:///".parse::<KubeUrl>().unwrap(), KubeUrl::Infer);
        assert_eq!(
            "kube+http://127.0.0.1:6443/".parse::<KubeUrl>().unwrap(),
            KubeUrl::Plain("http://127.0.0.1:6443".into())
        );
        for bad in ["kube", "kube://host:1", "kube+https://h:1", "kube+http://", "kube+http://h:1/x", "etcd://h:1"] {
            assert!(bad.parse::<KubeUrl>().is_err(), "{bad}");
        }
    }
}
