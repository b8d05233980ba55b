//! host-gw: no device, no encapsulation. A peer's subnet is routed via its node IP on the underlay link, which
//! needs every node on one L2 segment (the underlay's switch does the rest). Nothing is published in the lease.
//!
//! Pod prefixes of the other family than the underlay (IPv6 pods over an IPv4 underlay) have no gateway to go
//! through and are left out.
use super::{add_direct, Backend, BackendError, LocalNode, Peer, PeerError, PeerPath, Setup};
use async_trait::async_trait;
use ipnet::{Ipv4Net, Ipv6Net};
use weft_dataplane::{Dataplane, OverlayState};
use weft_types::{BackendData, Lease};

pub struct HostGw;

pub fn build(_: &Setup<'_>) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(HostGw))
}

#[async_trait]
impl Backend for HostGw {
    fn name(&self) -> &'static str {
        "host-gw"
    }

    fn mtu_overhead(&self, _ipv6_underlay: bool) -> u32 {
        0
    }

    fn udp_port(&self) -> Option<u16> {
        None
    }

    fn set_subnets(&mut self, _: Ipv4Net, _: Option<Ipv6Net>) {}

    async fn ensure_device(&mut self, _: &dyn Dataplane) -> Result<BackendData, BackendError> {
        Ok(BackendData::HostGw)
    }

    fn device_ifindex(&self) -> Option<u32> {
        None
    }

    /// Routes via the node IP need nothing from the peer's backend data.
    fn validate_peer(&self, _: &BackendData) -> Result<(), PeerError> {
        Ok(())
    }

    fn path_to(&self, _: &LocalNode, _: &Lease) -> PeerPath {
        PeerPath::Direct
    }

    fn add_peer(&self, local: &LocalNode, peer: &Peer<'_>, st: &mut OverlayState) -> Result<(), PeerError> {
        for &(dst, id) in peer.subnets.iter().filter(|(d, _)| d.addr().is_ipv4() == peer.lease.node_ip.is_ipv4()) {
            add_direct(st, local, peer.lease, dst, id);
        }
        Ok(())
    }

    async fn teardown(&mut self, _: &dyn Dataplane) -> Result<(), BackendError> {
        Ok(())
    }
}
