//! Prometheus metrics of the agent (text format on `/metrics`).
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    pub registry: Registry,
    pub peers: Gauge,
    pub store_up: Gauge,
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub ops_applied: Counter,
    pub ops_failed: Counter,
    pub drift_repaired: Counter,
    pub lease_renewals: Counter,
    pub lease_renew_failures: Counter,
    pub reconcile_seconds: Histogram,
    /// Packets dropped by policy, by direction and (for per-policy counters) policy; read from nft counters.
    pub policy_dropped: Family<Vec<(String, String)>, Gauge>,
    /// Local pods cut off because their namespace left the network they were created on (`stranded`).
    pub policy_stranded_pods: Gauge,
    pub vxlan_rejected: Gauge,
    /// VXLAN packets from a known node whose inner source is not one of that node's (`vxlan_spoofed_inner`).
    pub vxlan_spoofed_inner: Gauge,
    /// Packets from pods with a source address that is not theirs, and packets from pods to the agent's port.
    pub spoofed_dropped: Gauge,
    pub agent_port_rejected: Gauge,
    /// Stored leases refused by admission (see `peers`).
    pub peers_rejected: Gauge,
    /// Per-peer counters of the agent's own datapath (WireGuard), labelled `peer` = node name.
    pub tunnel_rx_bytes: Family<Vec<(String, String)>, Gauge>,
    pub tunnel_tx_bytes: Family<Vec<(String, String)>, Gauge>,
    pub tunnel_decrypt_failures: Family<Vec<(String, String)>, Gauge>,
    /// Milliseconds since the peer's last handshake (absent before the first).
    pub tunnel_handshake_age_ms: Family<Vec<(String, String)>, Gauge>,
    /// Packets the agent's own datapath dropped before any peer saw them, by `reason` (see `DeviceDrops`).
    /// Counters mirroring the device's own (which only grow while it runs), so a restarted device reads as a
    /// counter reset, as Prometheus expects.
    pub tunnel_dropped: Family<Vec<(String, String)>, Counter>,
    /// Per tenant network (label `network`): 1 when ready on this node; addresses held; addresses offered; peers.
    pub network_ready: Family<Vec<(String, String)>, Gauge>,
    pub network_used: Family<Vec<(String, String)>, Gauge>,
    pub network_capacity: Family<Vec<(String, String)>, Gauge>,
    pub network_peers: Family<Vec<(String, String)>, Gauge>,
    /// Packets the isolation table (`inet weft-net`) dropped, by network (`(none)`: tenant interfaces of none).
    pub network_isolation_dropped: Family<Vec<(String, String)>, Gauge>,
    /// nft tables found edited behind weft's back (their fingerprint changed) and loaded again, by `table`.
    pub nft_tables_repaired: Family<Vec<(String, String)>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let m = Metrics {
            peers: Gauge::default(),
            store_up: Gauge::default(),
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            ops_applied: Counter::default(),
            ops_failed: Counter::default(),
            drift_repaired: Counter::default(),
            lease_renewals: Counter::default(),
            lease_renew_failures: Counter::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.0005, 4.0, 10)),
            policy_dropped: Family::default(),
            policy_stranded_pods: Gauge::default(),
            vxlan_rejected: Gauge::default(),
            vxlan_spoofed_inner: Gauge::default(),
            spoofed_dropped: Gauge::default(),
            agent_port_rejected: Gauge::default(),
            peers_rejected: Gauge::default(),
            tunnel_rx_bytes: Family::default(),
            tunnel_tx_bytes: Family::default(),
            tunnel_decrypt_failures: Family::default(),
            tunnel_handshake_age_ms: Family::default(),
            tunnel_dropped: Family::default(),
            network_ready: Family::default(),
            network_used: Family::default(),
            network_capacity: Family::default(),
            network_peers: Family::default(),
            network_isolation_dropped: Family::default(),
            nft_tables_repaired: Family::default(),
            registry: Registry::default(),
        };
        registry.register("peers", "Peers (other nodes' leases) known", m.peers.clone());
        registry.register("network_ready", "1 when the tenant network is ready on this node", m.network_ready.clone());
        registry.register(
            "network_addresses_used",
            "Addresses local pods hold in the tenant network",
            m.network_used.clone(),
        );
        registry.register(
            "network_addresses_capacity",
            "Addresses this node's subnet of the tenant network offers",
            m.network_capacity.clone(),
        );
        registry.register("network_peers", "Peer nodes programmed for the tenant network", m.network_peers.clone());
        registry.register(
            "network_isolation_dropped_packets",
            "Packets the tenant-network isolation table dropped, by network",
            m.network_isolation_dropped.clone(),
        );
        registry.register(
            "peers_rejected",
            "Stored leases refused by admission (undecodable, hijacking, overlapping, invalid)",
            m.peers_rejected.clone(),
        );
        registry.register(
            "nft_tables_repaired",
            "nft tables found edited behind weft's back and loaded again, by table",
            m.nft_tables_repaired.clone(),
        );
        registry.register("store_up", "1 when the last store call succeeded", m.store_up.clone());
        registry.register("reconciles", "Reconcile passes", m.reconciles.clone());
        registry.register("reconcile_errors", "Reconcile passes that failed", m.reconcile_errors.clone());
        registry.register("dataplane_ops_applied", "Kernel changes applied", m.ops_applied.clone());
        registry.register("dataplane_ops_failed", "Kernel changes the kernel refused", m.ops_failed.clone());
        registry.register(
            "drift_repaired",
            "Entries a periodic resync found wrong and repaired",
            m.drift_repaired.clone(),
        );
        registry.register("lease_renewals", "Successful lease renewals", m.lease_renewals.clone());
        registry.register("lease_renew_failures", "Failed lease renewals", m.lease_renew_failures.clone());
        registry.register(
            "policy_dropped_packets",
            "Packets dropped by NetworkPolicy (labels: direction, policy; policy=\"\" for all policies)",
            m.policy_dropped.clone(),
        );
        registry.register(
            "policy_stranded_pods",
            "Local pods whose namespace is now on another network than their address; dropped until re-created",
            m.policy_stranded_pods.clone(),
        );
        registry.register(
            "vxlan_rejected_packets",
            "VXLAN packets from unknown sources dropped",
            m.vxlan_rejected.clone(),
        );
        registry.register(
            "vxlan_spoofed_inner_packets",
            "VXLAN packets from a known node whose inner source is not in that node's pod subnets, dropped",
            m.vxlan_spoofed_inner.clone(),
        );
        registry.register(
            "spoofed_dropped_packets",
            "Packets from pods whose source address is not the pod's own, dropped",
            m.spoofed_dropped.clone(),
        );
        registry.register(
            "agent_port_rejected_packets",
            "Packets from pods to the agent's HTTP port, dropped",
            m.agent_port_rejected.clone(),
        );
        registry.register("reconcile_duration_seconds", "Time of a reconcile pass", m.reconcile_seconds.clone());
        registry.register("tunnel_peer_rx_bytes", "Bytes decrypted from a peer (WireGuard)", m.tunnel_rx_bytes.clone());
        registry.register("tunnel_peer_tx_bytes", "Bytes encrypted to a peer (WireGuard)", m.tunnel_tx_bytes.clone());
        registry.register(
            "tunnel_peer_decrypt_failures",
            "Packets for a peer's sessions that failed authentication (WireGuard)",
            m.tunnel_decrypt_failures.clone(),
        );
        registry.register(
            "tunnel_peer_handshake_age_ms",
            "Milliseconds since the last handshake with a peer (WireGuard)",
            m.tunnel_handshake_age_ms.clone(),
        );
        registry.register(
            "tunnel_dropped_packets",
            "Packets the WireGuard device dropped before reaching any peer, by reason: unknown_peer (handshake \
             from a key no peer has), unknown_index (unknown session), malformed, no_route (no peer for the \
             destination)",
            m.tunnel_dropped.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Replaces the per-peer tunnel gauges with `stats` (a peer that left loses its series).
    pub fn set_tunnel_stats(&self, stats: &[crate::backend::PeerStats]) {
        for f in
            [&self.tunnel_rx_bytes, &self.tunnel_tx_bytes, &self.tunnel_decrypt_failures, &self.tunnel_handshake_age_ms]
        {
            f.clear();
        }
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for s in stats {
            let labels = vec![("peer".to_string(), s.node.clone())];
            self.tunnel_rx_bytes.get_or_create(&labels).set(g(s.rx_bytes));
            self.tunnel_tx_bytes.get_or_create(&labels).set(g(s.tx_bytes));
            self.tunnel_decrypt_failures.get_or_create(&labels).set(g(s.decrypt_failures));
            if let Some(age) = s.handshake_age_ms {
                self.tunnel_handshake_age_ms.get_or_create(&labels).set(g(age));
            }
        }
    }

    /// Sets the device-wide drop counters to the device's values; a backend without its own datapath (None) has
    /// no series.
    pub fn set_tunnel_drops(&self, drops: Option<&crate::backend::DeviceDrops>) {
        let Some(d) = drops else {
            self.tunnel_dropped.clear();
            return;
        };
        for (reason, n) in d.by_reason() {
            let labels = vec![("reason".to_string(), reason.to_string())];
            // A mirror of the device's counter: store its value rather than add to it.
            self.tunnel_dropped.get_or_create(&labels).inner().store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Per-network gauges from the networks manager's status list (networks gone disappear).
    pub fn set_networks(&self, nets: &[crate::status::NetworkStatus]) {
        for f in [&self.network_ready, &self.network_used, &self.network_capacity, &self.network_peers] {
            f.clear();
        }
        for n in nets {
            let labels = vec![("network".to_string(), n.name.clone())];
            self.network_ready.get_or_create(&labels).set(i64::from(n.ready));
            self.network_used.get_or_create(&labels).set(i64::from(n.used));
            self.network_capacity.get_or_create(&labels).set(i64::from(n.capacity));
            self.network_peers.get_or_create(&labels).set(i64::try_from(n.peers).unwrap_or(i64::MAX));
        }
    }

    pub fn set_isolation_drops(&self, per_net: &[(String, u64)]) {
        self.network_isolation_dropped.clear();
        for (net, packets) in per_net {
            let labels = vec![("network".to_string(), net.clone())];
            self.network_isolation_dropped.get_or_create(&labels).set(i64::try_from(*packets).unwrap_or(i64::MAX));
        }
    }

    /// Takes the `inet weft` counters the metrics export from a counter listing (name, packets, bytes).
    pub fn set_firewall_counters(&self, counters: &[(String, u64, u64)]) {
        for (name, packets, _) in counters {
            let gauge = match name.as_str() {
                "vxlan_rejected" => &self.vxlan_rejected,
                "vxlan_spoofed_inner" => &self.vxlan_spoofed_inner,
                "spoofed" => &self.spoofed_dropped,
                "agent_port_rejected" => &self.agent_port_rejected,
                _ => continue,
            };
            gauge.set(*packets as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_peer_stats_are_exported_and_a_departed_peer_loses_its_series() {
        let m = Metrics::default();
        let peer = |node: &str, age| crate::backend::PeerStats {
            node: node.into(),
            rx_bytes: 10,
            tx_bytes: 20,
            handshake_age_ms: age,
            decrypt_failures: 3,
        };
        m.set_tunnel_stats(&[peer("n2", Some(1500)), peer("n3", None)]);
        let text = m.encode();
        assert!(text.contains("weft_tunnel_peer_rx_bytes{peer=\"n2\"} 10\n"), "{text}");
        assert!(text.contains("weft_tunnel_peer_tx_bytes{peer=\"n3\"} 20\n"), "{text}");
        assert!(text.contains("weft_tunnel_peer_decrypt_failures{peer=\"n2\"} 3\n"), "{text}");
        assert!(text.contains("weft_tunnel_peer_handshake_age_ms{peer=\"n2\"} 1500\n"), "{text}");
        assert!(!text.contains("weft_tunnel_peer_handshake_age_ms{peer=\"n3\"}"), "{text}");
        m.set_tunnel_stats(&[peer("n3", None)]);
        assert!(!m.encode().contains("peer=\"n2\""));
    }

    #[test]
    fn tunnel_drops_are_counters_by_reason_and_absent_without_a_tunnel() {
        let m = Metrics::default();
        m.set_tunnel_drops(None);
        assert!(!m.encode().contains("weft_tunnel_dropped_packets_total{"), "{}", m.encode());
        let d = crate::backend::DeviceDrops { unknown_peer: 7, unknown_index: 2, malformed: 1, no_route: 0 };
        m.set_tunnel_drops(Some(&d));
        let text = m.encode();
        assert!(text.contains("# TYPE weft_tunnel_dropped_packets counter\n"), "{text}");
        assert!(text.contains("weft_tunnel_dropped_packets_total{reason=\"unknown_peer\"} 7\n"), "{text}");
        assert!(text.contains("weft_tunnel_dropped_packets_total{reason=\"unknown_index\"} 2\n"), "{text}");
        assert!(text.contains("weft_tunnel_dropped_packets_total{reason=\"malformed\"} 1\n"), "{text}");
        assert!(text.contains("weft_tunnel_dropped_packets_total{reason=\"no_route\"} 0\n"), "{text}");
        // The device's value, not a sum of what was seen: a second pass with the same counters changes nothing.
        m.set_tunnel_drops(Some(&crate::backend::DeviceDrops { unknown_peer: 9, ..d }));
        m.set_tunnel_drops(Some(&crate::backend::DeviceDrops { unknown_peer: 9, ..d }));
        assert!(m.encode().contains("weft_tunnel_dropped_packets_total{reason=\"unknown_peer\"} 9\n"));
        m.set_tunnel_drops(None);
        assert!(!m.encode().contains("reason=\"unknown_peer\""));
    }

    #[test]
    fn firewall_counters_are_exported() {
        let m = Metrics::default();
        let c = |n: &str, p| (n.to_string(), p, p * 100);
        m.set_firewall_counters(&[
            c("masqueraded", 9),
            c("spoofed", 3),
            c("vxlan_rejected", 2),
            c("agent_port_rejected", 1),
            c("vxlan_spoofed_inner", 4),
        ]);
        let text = m.encode();
        assert!(text.contains("weft_spoofed_dropped_packets 3\n"), "{text}");
        assert!(text.contains("weft_vxlan_rejected_packets 2\n"));
        assert!(text.contains("weft_agent_port_rejected_packets 1\n"));
        assert!(text.contains("weft_vxlan_spoofed_inner_packets 4\n"), "{text}");
    }
}
