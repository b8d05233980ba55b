//! Errors of Kubernetes API calls, with what an operator needs to fix them in the message: the API URL when it
//! is unreachable, the missing RBAC rule on a 403. The store turns them into [`StoreError`]s at its edge;
//! inside, callers match on the HTTP code (404 absent, 409 lost a race, 410 history gone).
use weft_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API at {url} is unreachable ({verb} {resource}): {detail}")]
    Unreachable { url: String, verb: &'static str, resource: String, detail: String },
    #[error(
        "RBAC: the weft service account needs verb {verb:?} on {resource} {scope} (see the ClusterRole/Role in \
         deploy/weft.yaml); the API server said: {message}"
    )]
    Forbidden { verb: &'static str, resource: String, scope: String, message: String },
    #[error("{verb} {resource}: HTTP {code} {reason}: {message}")]
    Api { verb: &'static str, resource: String, code: u16, reason: String, message: String },
    #[error("{verb} {resource}: the API answered something that is not the expected object: {detail}")]
    Decode { verb: &'static str, resource: String, detail: String },
    #[error("{verb} {resource}: not declared in API_CALLS, so RBAC would not allow it (a weft bug)")]
    Undeclared { verb: &'static str, resource: String },
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
}

impl KubeError {
    /// The HTTP code the API server answered, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            KubeError::Forbidden { .. } => Some(403),
            _ => None,
        }
    }

    /// Classifies a client error. `scope` reads "at the cluster scope" or "in namespace weft-system".
    pub(crate) fn from_kube(e: kube::Error, url: &str, verb: &'static str, resource: &str, scope: &str) -> Self {
        let resource = resource.to_string();
        match e {
            kube::Error::Api(s) => {
                let code = s.code;
                match code {
                    403 => KubeError::Forbidden { verb, resource, scope: scope.to_string(), message: s.message },
                    // The server is there but cannot serve: as good as unreachable for the caller, who retries.
                    429 | 500 | 502 | 503 | 504 => KubeError::Unreachable {
                        url: url.to_string(),
                        verb,
                        resource,
                        detail: format!("HTTP {code} {}: {}", s.reason, s.message),
                    },
                    _ => KubeError::Api { verb, resource, code, reason: s.reason, message: s.message },
                }
            }
            kube::Error::SerdeError(e) => KubeError::Decode { verb, resource, detail: e.to_string() },
            kube::Error::InferConfig(e) => KubeError::Config(e.to_string()),
            other => KubeError::Unreachable { url: url.to_string(), verb, resource, detail: other.to_string() },
        }
    }
}

impl From<KubeError> for StoreError {
    fn from(e: KubeError) -> Self {
        match e {
            KubeError::Unreachable { .. } => StoreError::Unavailable(e.to_string()),
            KubeError::Decode { .. } => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        }
    }
}
