//! Peers and the lookup tables the workers read.
//!
//! A [`Peer`] owns one or two protocol instances (`noise::Tunn`): the current one and, during a key change, the
//! retiring one. A key change is either ours (`rotate_key`) or the peer's (it shows up in `set_peers` as a new
//! public key with the same endpoint or allowed IPs). In both cases the retiring instance keeps the established
//! sessions: it keeps carrying traffic until the current one has completed a handshake, so no packet waits for
//! the new handshake. [`Tables`] are immutable snapshots (swapped whole under an `RwLock<Arc<_>>`), so workers
//! never hold a lock across a batch.

use crate::keys::PublicKey;
use defguard_boringtun::noise::Tunn;
use defguard_boringtun::x25519;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a retiring instance stays after the current one has its first session: packets already in flight
/// under the old keys still decrypt.
pub(crate) const RETIRE_GRACE: Duration = Duration::from_secs(5);
/// Upper bound for a retiring instance (WireGuard's REJECT_AFTER_TIME: its sessions are dead by then anyway).
pub(crate) const RETIRE_MAX: Duration = Duration::from_secs(180);

pub(crate) struct Instance {
    pub tunn: Tunn,
    /// 24-bit local index (receiver index >> 8 on the wire).
    pub index: u32,
    pub remote: PublicKey,
    pub local: PublicKey,
}

pub(crate) struct Retiring {
    pub inst: Instance,
    pub since: Instant,
    /// When the current instance was first seen with a session.
    pub successor_up: Option<Instant>,
}

pub(crate) struct PeerState {
    pub current: Instance,
    pub retiring: Option<Retiring>,
    pub endpoint: SocketAddr,
    pub keepalive: Option<u16>,
}

impl PeerState {
    /// Makes `next` current and keeps the instance that carries traffic as the retiring one: the old current
    /// one, unless it never completed a handshake while a retiring one has sessions. That happens when both
    /// ends change keys before either has learnt the other's new key (every node rotating at once): the second
    /// change must not throw away the only sessions still working, or traffic stops until the newest keys meet.
    pub fn succeed(&mut self, next: Instance) {
        let old = std::mem::replace(&mut self.current, next);
        let old_up = old.tunn.time_since_last_handshake().is_some();
        let retiring_up = self.retiring.as_ref().is_some_and(|r| r.inst.tunn.time_since_last_handshake().is_some());
        if old_up || !retiring_up {
            self.retiring = Some(Retiring { inst: old, since: Instant::now(), successor_up: None });
        }
    }
}

impl PeerState {
    /// The instance to encrypt with: the current one once it has a session, the retiring one until then.
    pub fn sender(&mut self) -> &mut Instance {
        // Only asked when there is a retiring instance: it reads the clock, and this runs once per super-packet.
        if let Some(r) = &mut self.retiring {
            if self.current.tunn.time_since_last_handshake().is_none() {
                return &mut r.inst;
            }
        }
        &mut self.current
    }

    pub fn by_index(&mut self, index: u32) -> Option<&mut Instance> {
        if self.current.index == index {
            return Some(&mut self.current);
        }
        self.retiring.as_mut().map(|r| &mut r.inst).filter(|i| i.index == index)
    }

    pub fn by_keys(&mut self, remote: &PublicKey, local: &PublicKey) -> Option<&mut Instance> {
        if self.current.remote == *remote && self.current.local == *local {
            return Some(&mut self.current);
        }
        self.retiring.as_mut().map(|r| &mut r.inst).filter(|i| i.remote == *remote && i.local == *local)
    }
}

#[derive(Default)]
pub(crate) struct PeerCounters {
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub decrypt_failures: AtomicU64,
    pub spoofed_source: AtomicU64,
    pub handshakes: AtomicU64,
}

/// One remote node. The object (and its counters) survives key changes on either side: only its instances change.
pub(crate) struct Peer {
    pub state: Mutex<PeerState>,
    pub counters: PeerCounters,
}

impl Peer {
    pub fn lock(&self) -> MutexGuard<'_, PeerState> {
        // A worker that panicked mid-packet leaves a usable state (counters and a Tunn): keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Our static key pair(s): the current one, and the previous one while a rotation completes.
#[derive(Clone)]
pub(crate) struct OwnKey {
    pub secret: x25519::StaticSecret,
    pub public: x25519::PublicKey,
}

impl OwnKey {
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.public.to_bytes())
    }
}

/// Longest-prefix match over allowed IPs: one hash map per prefix length present, longest first.
#[derive(Default)]
pub(crate) struct Router {
    v4: Vec<(u8, HashMap<IpAddr, Arc<Peer>>)>,
    v6: Vec<(u8, HashMap<IpAddr, Arc<Peer>>)>,
}

impl Router {
    /// Adds `net → peer`; false when another peer already holds exactly this prefix (first one wins).
    pub fn insert(&mut self, net: IpNet, peer: Arc<Peer>) -> bool {
        let net = net.trunc();
        let table = if net.addr().is_ipv4() { &mut self.v4 } else { &mut self.v6 };
        let len = net.prefix_len();
        let pos = match table.iter().position(|(l, _)| *l <= len) {
            Some(p) if table[p].0 == len => p,
            Some(p) => {
                table.insert(p, (len, HashMap::new()));
                p
            }
            None => {
                table.push((len, HashMap::new()));
                table.len() - 1
            }
        };
        let map = &mut table[pos].1;
        if map.contains_key(&net.addr()) {
            return false;
        }
        map.insert(net.addr(), peer);
        true
    }

    pub fn lookup(&self, addr: IpAddr) -> Option<&Arc<Peer>> {
        let table = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
        table.iter().find_map(|(len, map)| {
            let net = IpNet::new(addr, *len).ok()?.trunc();
            map.get(&net.addr())
        })
    }
}

/// One immutable snapshot of everything a worker looks up per packet.
pub(crate) struct Tables {
    pub keys: Vec<OwnKey>,
    pub by_key: HashMap<PublicKey, Arc<Peer>>,
    pub by_index: HashMap<u32, Arc<Peer>>,
    pub router: Router,
    pub peers: Vec<Arc<Peer>>,
}

impl Tables {
    pub fn empty(key: OwnKey) -> Self {
        Tables {
            keys: vec![key],
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            router: Router::default(),
            peers: Vec::new(),
        }
    }
}

/// Destination address of an inner IP packet.
pub(crate) fn dst_addr(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?)),
        6 if packet.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use defguard_boringtun::noise::TunnResult;

    fn dummy_peer(n: u8) -> Arc<Peer> {
        let secret = x25519::StaticSecret::from([n; 32]);
        let public = x25519::PublicKey::from(&secret);
        let tunn = Tunn::new(secret, public, None, None, u32::from(n), None);
        Arc::new(Peer {
            state: Mutex::new(PeerState {
                current: Instance { tunn, index: u32::from(n), remote: PublicKey([n; 32]), local: PublicKey([0; 32]) },
                retiring: None,
                endpoint: "192.0.2.1:51820".parse().unwrap(),
                keepalive: None,
            }),
            counters: PeerCounters::default(),
        })
    }

    fn instance(own: &x25519::StaticSecret, remote: &x25519::StaticSecret, index: u32) -> Instance {
        let (own_pub, remote_pub) = (x25519::PublicKey::from(own), x25519::PublicKey::from(remote));
        let tunn = Tunn::new(own.clone(), remote_pub, None, None, index, None);
        Instance { tunn, index, remote: PublicKey(remote_pub.to_bytes()), local: PublicKey(own_pub.to_bytes()) }
    }

    /// Runs a handshake between two instances in memory, so both have a session.
    fn shake(a: &mut Instance, b: &mut Instance) {
        let (mut m1, mut m2, mut m3) = ([0u8; 256], [0u8; 256], [0u8; 256]);
        let TunnResult::WriteToNetwork(init) = a.tunn.format_handshake_initiation(&mut m1, false) else { panic!() };
        let TunnResult::WriteToNetwork(resp) = b.tunn.decapsulate(None, init, &mut m2) else { panic!() };
        let TunnResult::WriteToNetwork(keepalive) = a.tunn.decapsulate(None, resp, &mut m3) else { panic!() };
        // The initiator's first data packet (here the keepalive) makes the responder's session current.
        let mut m4 = [0u8; 256];
        assert!(matches!(b.tunn.decapsulate(None, keepalive, &mut m4), TunnResult::Done));
        assert!(a.tunn.time_since_last_handshake().is_some() && b.tunn.time_since_last_handshake().is_some());
    }

    #[test]
    fn a_second_key_change_keeps_the_sessions_that_still_work() {
        let keys: Vec<x25519::StaticSecret> = (1..=4u8).map(|n| x25519::StaticSecret::from([n; 32])).collect();
        let (a, a2, b, b2) = (&keys[0], &keys[1], &keys[2], &keys[3]);
        let mut working = instance(a, b, 1);
        let mut other_side = instance(b, a, 9);
        shake(&mut working, &mut other_side);
        let endpoint = "192.0.2.1:51820".parse().unwrap();
        let mut st = PeerState { current: working, retiring: None, endpoint, keepalive: None };
        // We rotate: the working instance retires, the new one has no session yet and carries nothing.
        st.succeed(instance(a2, b, 2));
        assert_eq!(st.sender().index, 1);
        // Before that handshake completes, the peer's new key arrives: the working sessions must stay.
        st.succeed(instance(a2, b2, 3));
        assert_eq!(st.current.index, 3);
        assert_eq!(st.retiring.as_ref().map(|r| r.inst.index), Some(1), "the instance with sessions was dropped");
        assert_eq!(st.sender().index, 1);
        // Once the current instance is up it carries traffic and a later change retires it, not the old one.
        let mut peer_new = instance(b2, a2, 10);
        shake(&mut st.current, &mut peer_new);
        assert_eq!(st.sender().index, 3);
        st.succeed(instance(a2, b2, 4));
        assert_eq!(st.retiring.as_ref().map(|r| r.inst.index), Some(3));
    }

    #[test]
    fn longest_prefix_wins_and_duplicates_are_refused() {
        let mut r = Router::default();
        let (a, b) = (dummy_peer(1), dummy_peer(2));
        assert!(r.insert("10.0.0.0/8".parse().unwrap(), a.clone()));
        assert!(r.insert("10.1.0.0/16".parse().unwrap(), b.clone()));
        assert!(!r.insert("10.1.0.0/16".parse().unwrap(), a.clone()));
        assert!(Arc::ptr_eq(r.lookup("10.1.2.3".parse().unwrap()).unwrap(), &b));
        assert!(Arc::ptr_eq(r.lookup("10.2.2.3".parse().unwrap()).unwrap(), &a));
        assert!(r.lookup("11.0.0.1".parse().unwrap()).is_none());
        assert!(r.lookup("fd00::1".parse().unwrap()).is_none());
    }
}
