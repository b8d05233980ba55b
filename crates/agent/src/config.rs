//! The agent's settings: flags (and WEFT_* environment variables, which the DaemonSet uses).
use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(name = "weftd", version, about = "weft node agent: subnet lease, peers, overlay dataplane")]
pub struct AgentConfig {
    /// This node's name (default: the host name).
    #[arg(long, env = "WEFT_NODE_NAME")]
    pub node_name: Option<String>,
    /// Underlay address of this node (default: the source address of the default route).
    #[arg(long, env = "WEFT_NODE_IP")]
    pub node_ip: Option<IpAddr>,
    /// Store URL: embedded:///path/store.db, etcd://host:port[,host:port] or etcds://host:port (TLS).
    #[arg(long, env = "WEFT_STORE", default_value = "embedded:///var/lib/weft/store.db")]
    pub store: String,
    /// etcd: CA certificate (PEM) that signed etcd's server certificate; needs an etcds:// store URL.
    #[arg(long, env = "WEFT_ETCD_CAFILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// etcd: client certificate (PEM), for etcd's --client-cert-auth.
    #[arg(long, env = "WEFT_ETCD_CERTFILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// etcd: the client certificate's private key (PEM).
    #[arg(long, env = "WEFT_ETCD_KEYFILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// etcd: username (etcd `auth enable`).
    #[arg(long, env = "WEFT_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// etcd: password. Prefer WEFT_ETCD_PASSWORD or --etcd-password-file: a flag shows in the process list.
    #[arg(long, env = "WEFT_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<Secret>,
    /// etcd: file whose first line is the password.
    #[arg(long, env = "WEFT_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// Cluster network config (JSON); stored on first start, and the stored one wins afterwards.
    #[arg(long, env = "WEFT_NETWORK_CONFIG")]
    pub network_config: Option<PathBuf>,
    /// Where to write the node file the CNI plugin reads.
    #[arg(long, env = "WEFT_NODE_FILE", default_value = weft_types::node_file::DEFAULT_PATH)]
    pub node_file: PathBuf,
    /// The CNI plugin's IPAM data directory (its `dataDir`): tenant networks' pools are `<dir>/net-<name>/`,
    /// counted for status and to drain a deleted network only once no local pod holds an address in it.
    #[arg(long, env = "WEFT_CNI_DATA_DIR", default_value = "/var/lib/weft/ipam/weft")]
    pub cni_data_dir: PathBuf,
    /// Where to write status.json (read by `weftctl status`).
    #[arg(long, env = "WEFT_STATE_DIR", default_value = "/run/weft")]
    pub state_dir: PathBuf,
    /// Lease time to live; renewed every third of it.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub lease_ttl: Duration,
    /// Full resync (read the kernel, repair drift) every so often, even when nothing changed.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub resync_interval: Duration,
    /// VXLAN device name.
    #[arg(long, default_value = "weft.1")]
    pub vxlan_device: String,
    /// `wireguard` backend: serve the read-only cross-platform UAPI socket `<dir>/<device>.sock` here, so `wg show`
    /// (which looks in /var/run/wireguard) lists the peers; `off` serves none. The lab gives each node its own.
    #[arg(long, env = "WEFT_WIREGUARD_UAPI_DIR", default_value = "/var/run/wireguard")]
    pub wireguard_uapi_dir: String,
    /// `wireguard` backend: rotate this node's key pair once it is this old (its file's age; e.g. `24h`, at
    /// least 10s), as `weftctl wireguard rotate-key` does, without dropping connections. Default: on request only.
    #[arg(long, env = "WEFT_WIREGUARD_ROTATE_EVERY", value_parser = parse_rotation)]
    pub wireguard_rotate_every: Option<Duration>,
    /// Metrics (/metrics), health (/healthz, /readyz) and status (/status) listener. Loopback by default: /status
    /// names every node IP, VTEP MAC and policy. On another address the agent's firewall still drops pods' packets
    /// to this port (crates/agent/src/firewall.rs).
    #[arg(long, env = "WEFT_LISTEN", default_value = "127.0.0.1:9473")]
    pub listen: SocketAddr,
    /// On SIGTERM remove the device, routes, nftables table, node file and release the lease.
    #[arg(long, env = "WEFT_UNINSTALL")]
    pub uninstall_on_exit: bool,
    /// Do not masquerade pod traffic leaving the cluster network.
    #[arg(long)]
    pub no_masquerade: bool,
    /// Do not enforce NetworkPolicy (no `inet weft-policy` table).
    #[arg(long, env = "WEFT_NO_POLICY")]
    pub no_policy: bool,
    /// Log packets dropped by policy (`weft-drop` prefix in the kernel log).
    #[arg(long)]
    pub log_drops: bool,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

/// A value that must not reach logs: `Debug` shows only that it is set.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl AgentConfig {
    /// `--wireguard-uapi-dir`, `None` when `off` (or empty).
    pub fn uapi_dir(&self) -> Option<&std::path::Path> {
        let d = self.wireguard_uapi_dir.as_str();
        (!d.is_empty() && d != "off").then(|| std::path::Path::new(d))
    }

    /// The etcd TLS files and credentials the flags name.
    pub fn etcd_security(&self) -> weft_store::EtcdSecurityFiles {
        weft_store::EtcdSecurityFiles {
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
            username: self.etcd_username.clone(),
            password: self.etcd_password.as_ref().map(|p| p.0.clone()),
            password_file: self.etcd_password_file.clone(),
        }
    }
}

/// A key rotation interval: a duration of at least 10 s (a shorter one would keep every peer re-handshaking).
fn parse_rotation(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(10) {
        return Err(format!("{s}: a key rotation interval must be at least 10s"));
    }
    Ok(d)
}

/// Parses `250ms`, `10s`, `5m`, `24h`, `7d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = s.strip_suffix('d') {
        (n, 86_400.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("invalid duration {s:?}"))?;
    if v < 0.0 || !v.is_finite() {
        return Err(format!("invalid duration {s:?}"));
    }
    Duration::try_from_secs_f64(v * mul).map_err(|_| format!("duration {s:?} out of range"))
}

/// The address the kernel would use to reach the outside world: connect() on a UDP socket sends nothing, it
/// only asks the routing table for a source address.
pub fn default_source_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        // Out of range is an error, not a panic.
        assert!(parse_duration("1e30d").is_err());
    }

    #[test]
    fn key_rotation_interval_is_off_by_default_and_at_least_10s() {
        let c = AgentConfig::try_parse_from(["weftd"]).unwrap();
        assert_eq!(c.wireguard_rotate_every, None);
        let c = AgentConfig::try_parse_from(["weftd", "--wireguard-rotate-every", "24h"]).unwrap();
        assert_eq!(c.wireguard_rotate_every, Some(Duration::from_secs(86_400)));
        for bad in ["5s", "0", "x"] {
            assert!(AgentConfig::try_parse_from(["weftd", "--wireguard-rotate-every", bad]).is_err(), "{bad}");
        }
        assert_eq!(c.uapi_dir(), Some(std::path::Path::new("/var/run/wireguard")));
        let off = AgentConfig::try_parse_from(["weftd", "--wireguard-uapi-dir", "off"]).unwrap();
        assert_eq!(off.uapi_dir(), None);
    }

    #[test]
    fn flags_parse_with_defaults() {
        let c = AgentConfig::try_parse_from(["weftd", "--node-name", "n1", "--lease-ttl", "5s"]).unwrap();
        assert_eq!(c.node_name.as_deref(), Some("n1"));
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.vxlan_device, "weft.1");
    }

    #[test]
    fn etcd_flags_have_flannels_names() {
        let c = AgentConfig::try_parse_from([
            "weftd",
            "--etcd-cafile",
            "/ca",
            "--etcd-certfile",
            "/c",
            "--etcd-keyfile",
            "/k",
            "--etcd-username",
            "u",
            "--etcd-password-file",
            "/p",
        ])
        .unwrap();
        let s = c.etcd_security();
        assert_eq!(s.ca_file.as_deref(), Some(std::path::Path::new("/ca")));
        assert_eq!((s.username.as_deref(), s.password_file.is_some()), (Some("u"), true));
        let c = AgentConfig::try_parse_from(["weftd", "--etcd-username", "u", "--etcd-password", "s3cret"]).unwrap();
        assert_eq!(c.etcd_security().password.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"), "the password must not reach Debug output");
    }
}
