//! VXLAN: the kernel's VXLAN device, one per node, statically programmed (flannel's design).
//!
//! For a peer reached through the tunnel, a permanent neighbour "peer gateway address → peer VTEP MAC" and an FDB
//! entry "peer VTEP MAC → peer node IP" go in first, then a nexthop "peer gateway address, onlink, dev vxlan" and
//! a route to the peer subnet through it (the diff orders them so): the kernel never ARPs or floods, because it
//! knows every answer before the first packet. The gateway address is the peer subnet's network address, which
//! the peer puts on its own device. Learning is off, so a forged inner MAC teaches the kernel nothing.
//!
//! Direct routing: a peer whose node IP lies in our underlay prefix shares our L2 segment, and is routed via its
//! node IP without encapsulation (IPv4 pod subnets over an IPv4 underlay; other families stay in the tunnel).
use super::{add_direct, Backend, BackendError, LocalNode, Peer, PeerError, PeerPath, Setup};
use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use weft_dataplane::{
    format_mac, parse_mac, Dataplane, Fdb, Mac, Neigh, Nexthop, OverlayState, Route, RouteTarget, Scope, VtepInfo,
    VxlanSpec,
};
use weft_types::{BackendData, Lease};

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) header bytes.
pub const OVERHEAD_IPV4: u32 = 50;
/// Outer IPv6 (40) + UDP (8) + VXLAN (8) + inner Ethernet (14) header bytes.
pub const OVERHEAD_IPV6: u32 = 70;

pub struct Vxlan {
    spec: VxlanSpec,
    direct_routing: bool,
    vtep: Option<VtepInfo>,
}

pub fn build(s: &Setup<'_>) -> Result<Box<dyn Backend>, BackendError> {
    let overhead = if s.local.node_ip.is_ipv4() { OVERHEAD_IPV4 } else { OVERHEAD_IPV6 };
    let spec = VxlanSpec {
        name: s.device.to_string(),
        vni: s.config.vni,
        port: s.config.port,
        local: s.local.node_ip,
        underlay_ifindex: s.local.underlay.ifindex,
        mtu: s.local.underlay.mtu.saturating_sub(overhead),
        address: None,
        address6: None,
    };
    Ok(Box::new(Vxlan { spec, direct_routing: s.config.direct_routing, vtep: None }))
}

/// The VTEP MAC a lease publishes, if it is a VXLAN lease with a well-formed one.
pub fn vtep_mac(data: &BackendData) -> Option<Mac> {
    match data {
        BackendData::Vxlan { vtep_mac } => parse_mac(vtep_mac),
        _ => None,
    }
}

/// A peer's VTEP MAC, which goes into permanent neighbour and FDB entries: it must be a unicast address (a
/// multicast or zero MAC there would make the kernel flood or blackhole the peer's traffic).
fn peer_mac(data: &BackendData) -> Result<Mac, PeerError> {
    let BackendData::Vxlan { vtep_mac } = data else { return Err("lease has no VTEP MAC".into()) };
    let mac = parse_mac(vtep_mac).ok_or_else(|| format!("VTEP MAC {vtep_mac:?} is not a MAC address"))?;
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(format!("VTEP MAC {} is not a unicast address", format_mac(&mac)));
    }
    Ok(mac)
}

/// The gateway addresses the device carries: the node subnets' network addresses, as host routes.
fn gateways(subnet: Ipv4Net, subnet6: Option<Ipv6Net>) -> (Option<IpNet>, Option<IpNet>) {
    (
        Some(IpNet::V4(Ipv4Net::new(subnet.network(), 32).expect("/32"))),
        subnet6.map(|s| IpNet::V6(Ipv6Net::new(s.network(), 128).expect("/128"))),
    )
}

#[async_trait]
impl Backend for Vxlan {
    fn name(&self) -> &'static str {
        "vxlan"
    }

    fn mtu_overhead(&self, ipv6_underlay: bool) -> u32 {
        if ipv6_underlay {
            OVERHEAD_IPV6
        } else {
            OVERHEAD_IPV4
        }
    }

    fn udp_port(&self) -> Option<u16> {
        Some(self.spec.port)
    }

    fn set_subnets(&mut self, subnet: Ipv4Net, subnet6: Option<Ipv6Net>) {
        (self.spec.address, self.spec.address6) = gateways(subnet, subnet6);
    }

    async fn ensure_device(&mut self, dp: &dyn Dataplane) -> Result<BackendData, BackendError> {
        let v = dp.ensure_vxlan(&self.spec).await?;
        self.vtep = Some(v);
        Ok(BackendData::Vxlan { vtep_mac: format_mac(&v.mac) })
    }

    fn device_ifindex(&self) -> Option<u32> {
        self.vtep.map(|v| v.ifindex)
    }

    fn scope(&self) -> Scope {
        Scope { vxlan_ifindex: self.device_ifindex() }
    }

    fn validate_peer(&self, data: &BackendData) -> Result<(), PeerError> {
        peer_mac(data).map(|_| ())
    }

    fn path_to(&self, local: &LocalNode, peer: &Lease) -> PeerPath {
        if self.direct_routing && local.underlay.network.contains(&peer.node_ip) {
            PeerPath::Direct
        } else {
            PeerPath::Tunnel
        }
    }

    fn add_peer(&self, local: &LocalNode, peer: &Peer<'_>, st: &mut OverlayState) -> Result<(), PeerError> {
        let mac = peer_mac(&peer.lease.backend_data)?;
        let direct = self.path_to(local, peer.lease) == PeerPath::Direct;
        // Direct routes need a gateway of the prefix's family: other prefixes stay in the tunnel.
        let routed_direct = |dst: &IpNet| direct && dst.addr().is_ipv4() == peer.lease.node_ip.is_ipv4();
        let vx = match self.device_ifindex() {
            Some(vx) => vx,
            None if peer.subnets.iter().all(|(dst, _)| routed_direct(dst)) => 0,
            None => return Err("no VXLAN device".into()),
        };
        for &(dst, id) in &peer.subnets {
            if routed_direct(&dst) {
                add_direct(st, local, peer.lease, dst, id);
            } else {
                add_tunnel(st, vx, peer.lease, dst, id, mac);
            }
        }
        Ok(())
    }

    async fn teardown(&mut self, dp: &dyn Dataplane) -> Result<(), BackendError> {
        Ok(dp.delete_link(&self.spec.name).await?)
    }
}

fn add_tunnel(st: &mut OverlayState, vx: u32, peer: &Lease, dst: IpNet, id: u32, mac: Mac) {
    let gw = dst.network();
    st.add_neigh(Neigh { ifindex: vx, ip: gw, mac });
    st.add_fdb(Fdb { ifindex: vx, mac, dst: peer.node_ip });
    st.add_nexthop(Nexthop { id, gateway: gw, ifindex: vx, onlink: true });
    st.add_route(Route { dst, target: RouteTarget::Nexthop(id) });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_mac_must_be_a_unicast_mac() {
        let d = |m: &str| BackendData::Vxlan { vtep_mac: m.into() };
        assert_eq!(peer_mac(&d("02:00:00:00:00:01")).unwrap(), [2, 0, 0, 0, 0, 1]);
        assert!(peer_mac(&d("nope")).unwrap_err().contains("not a MAC address"));
        assert!(peer_mac(&d("ff:ff:ff:ff:ff:ff")).unwrap_err().contains("unicast"));
        assert!(peer_mac(&d("01:00:5e:00:00:01")).unwrap_err().contains("unicast"));
        assert!(peer_mac(&d("00:00:00:00:00:00")).unwrap_err().contains("unicast"));
        assert_eq!(peer_mac(&BackendData::HostGw).unwrap_err(), "lease has no VTEP MAC");
        assert_eq!(vtep_mac(&d("02:00:00:00:00:0A")), Some([2, 0, 0, 0, 0, 10]));
    }
}
