//! One error type for the whole plugin, each variant tied to a CNI error code.
//!
//! Codes 1–99 are the spec's well-known ones; 100+ are ours (listed in CONFIG.md). The binary prints
//! `{"cniVersion","code","msg","details"}` on stdout and exits 1. `msg` is the one-line Display (runtimes show
//! it), `details` carries the long form when there is one (every problem CHECK found).
use crate::ipam::IpamError;
use weft_dataplane::DataplaneError;

/// Code of the answer to a panic (see [`crate::answer`]); never returned by [`CniError::code`].
pub const INTERNAL: u32 = 103;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// 1: the config's cniVersion (or the verb for that version) is not supported.
    #[error("incompatible CNI version: {0}")]
    IncompatibleVersion(String),
    /// 3: the container (its network namespace) does not exist.
    #[error("container unknown or does not exist: {0}")]
    UnknownContainer(String),
    /// 4: a CNI_* environment variable is missing or malformed.
    #[error("invalid environment variable {name}: {reason}")]
    InvalidEnv { name: &'static str, reason: String },
    /// 5: reading or writing the IPAM store failed.
    #[error("I/O failure: {0}")]
    Io(String),
    /// 6: stdin is not a JSON object.
    #[error("failed to decode the network configuration: {0}")]
    Decode(String),
    /// 7: the configuration is JSON but not valid for weft.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// 11: the node is not ready yet (the agent has not written the node file); retry later.
    #[error("try again later: {0}")]
    TryAgainLater(String),
    /// 50 (STATUS only): the plugin cannot serve ADD now.
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    /// 100: a kernel operation failed.
    #[error("kernel operation failed: {0}")]
    Kernel(String),
    /// 101: every address of the subnet is taken.
    #[error("no free address: {0}")]
    Exhausted(String),
    /// 102: CHECK found the attachment different from what ADD set up.
    #[error("CHECK failed for {what}: {}", problems.first().map(String::as_str).unwrap_or("unknown problem"))]
    CheckFailed { what: String, problems: Vec<String> },
}

impl CniError {
    pub fn code(&self) -> u32 {
        match self {
            Self::IncompatibleVersion(_) => 1,
            Self::UnknownContainer(_) => 3,
            Self::InvalidEnv { .. } => 4,
            Self::Io(_) => 5,
            Self::Decode(_) => 6,
            Self::InvalidConfig(_) => 7,
            Self::TryAgainLater(_) => 11,
            Self::NotAvailable(_) => 50,
            Self::Kernel(_) => 100,
            Self::Exhausted(_) => 101,
            Self::CheckFailed { .. } => 102,
        }
    }

    pub fn details(&self) -> String {
        match self {
            Self::CheckFailed { problems, .. } => problems.join("; "),
            _ => String::new(),
        }
    }

    pub fn invalid_env(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidEnv { name, reason: reason.into() }
    }
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> Self {
        match e {
            IpamError::Exhausted(pool) => Self::Exhausted(pool),
            other => Self::Io(other.to_string()),
        }
    }
}

impl From<DataplaneError> for CniError {
    fn from(e: DataplaneError) -> Self {
        Self::Kernel(e.to_string())
    }
}
