//! A tiny blocking rtnetlink client for the CNI plugin.
//!
//! Why not `rtnetlink` (async) here: the plugin is a short-lived process that makes about ten requests and exits.
//! A blocking socket needs no runtime, and lets us *pipeline*: [`NlSocket::batch`] writes every request of a step
//! in one `send` and then collects the acks, so a whole side of the pod is configured in one round trip. The
//! kernel processes the messages of one datagram in order and acks each one, so a failure is reported against
//! the exact request that caused it and the others still run.
//!
//! A socket is bound to the network namespace it was *created* in, so [`NlSocket::open_in`] creates it with the
//! calling thread briefly inside the pod's namespace ([`crate::netns::run_here`]) and then uses it from home.
use crate::netns::{run_here, NetnsHandle};
use crate::DataplaneError;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;

/// Request flags for "create, fail if it exists".
pub const CREATE_EXCL: u16 = NLM_F_CREATE | NLM_F_EXCL;
/// Request flags for "create or replace" (idempotent ensure).
pub const CREATE_REPLACE: u16 = NLM_F_CREATE | NLM_F_REPLACE;

pub struct NlSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NlSocket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, DataplaneError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(nl_err("socket"))?;
        sock.bind_auto().map_err(nl_err("bind"))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(nl_err("connect"))?;
        // Extended acks make the kernel explain EINVAL & co; harmless if unsupported.
        let _ = sock.set_ext_ack(true);
        Ok(Self { sock, seq: 1, buf: vec![0; 128 * 1024] })
    }

    /// A socket bound to the namespace `ns` (created on a thread that entered it).
    pub fn open_in(ns: &NetnsHandle) -> Result<Self, DataplaneError> {
        run_here(ns, Self::open)?
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn encode(&mut self, out: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16) -> u32 {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let start = out.len();
        out.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut out[start..]);
        seq
    }

    /// Sends every request in one datagram (each with NLM_F_ACK) and returns one result per request, in order.
    pub fn batch(&mut self, reqs: Vec<(RouteNetlinkMessage, u16)>) -> Result<Vec<io::Result<()>>, DataplaneError> {
        if reqs.is_empty() {
            return Ok(vec![]);
        }
        let mut out = Vec::with_capacity(256 * reqs.len());
        let mut seqs = Vec::with_capacity(reqs.len());
        for (msg, flags) in reqs {
            seqs.push(self.encode(&mut out, msg, flags | NLM_F_ACK));
        }
        self.sock.send(&out, 0).map_err(nl_err("send"))?;
        let mut results: Vec<Option<io::Result<()>>> = seqs.iter().map(|_| None).collect();
        let mut pending = seqs.len();
        while pending > 0 {
            for msg in self.recv()? {
                if let NetlinkPayload::Error(e) = msg.payload {
                    if let Some(i) = seqs.iter().position(|s| *s == msg.header.sequence_number) {
                        if results[i].is_none() {
                            pending -= 1;
                        }
                        results[i] = Some(match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        });
                    }
                }
            }
        }
        Ok(results.into_iter().map(|r| r.expect("every request acked")).collect())
    }

    /// A GET that answers with one message (e.g. a link by name). `Ok(None)` when the kernel says ENODEV/ENOENT.
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> Result<Option<RouteNetlinkMessage>, DataplaneError> {
        let mut out = Vec::with_capacity(128);
        let seq = self.encode(&mut out, msg, 0);
        self.sock.send(&out, 0).map_err(nl_err("send"))?;
        loop {
            for m in self.recv()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => return Ok(Some(inner)),
                    NetlinkPayload::Error(e) => {
                        let io = e.to_io();
                        return match io.raw_os_error() {
                            Some(libc::ENODEV) | Some(libc::ENOENT) => Ok(None),
                            _ => Err(DataplaneError::Netlink(format!("get: {io}"))),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// A dump request; returns every message until NLMSG_DONE.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, DataplaneError> {
        let mut out = Vec::with_capacity(128);
        let seq = self.encode(&mut out, msg, NLM_F_DUMP);
        self.sock.send(&out, 0).map_err(nl_err("send"))?;
        let mut all = Vec::new();
        loop {
            for m in self.recv()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => all.push(inner),
                    NetlinkPayload::Done(_) => return Ok(all),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(DataplaneError::Netlink(format!("dump: {}", e.to_io())))
                    }
                    _ => {}
                }
            }
        }
    }

    /// Reads one datagram and splits it into messages.
    fn recv(&mut self) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, DataplaneError> {
        let n = self.sock.recv(&mut &mut self.buf[..], 0).map_err(nl_err("recv"))?;
        let mut msgs = Vec::new();
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().expect("4 bytes")) as usize;
            if len < 16 || off + len > n {
                break;
            }
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len])
                .map_err(|e| DataplaneError::Netlink(format!("decode: {e}")))?;
            msgs.push(m);
            off += (len + 3) & !3;
        }
        Ok(msgs)
    }
}

fn nl_err(what: &'static str) -> impl Fn(io::Error) -> DataplaneError {
    move |e| DataplaneError::Netlink(format!("netlink {what}: {e}"))
}
