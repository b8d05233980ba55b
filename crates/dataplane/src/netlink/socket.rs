//! A blocking rtnetlink socket that sends many requests per `send` and matches the answers by sequence number.
//!
//! Why: programming 10 000 peers is 40 000 kernel requests. Awaiting each one (send, wait for the ack, send the
//! next) costs two syscalls and a wake-up per entry; one process per entry is 100x worse. The kernel processes every
//! message of a datagram in order inside the `send` call and keeps going after a failure, so we pack up to
//! `batch_bytes` of messages into one datagram. Only the chunk's *last* message asks for an ack (NLM_F_ACK): the
//! kernel always answers a failed request with an error message carrying its sequence number, ack flag or not, so
//! "every error, then the last ack" tells exactly which requests failed, with one `recv` per chunk instead of one
//! per request, and the receive buffer never fills with thousands of acks.
//!
//! If the receive buffer overflows anyway (ENOBUFS: answers were lost, so we cannot know which requests failed),
//! the queue is drained and the chunk is sent again in smaller pieces, with fresh sequence numbers. That is safe because every request weft batches is idempotent: adds
//! replace (or append an FDB destination that is already there), and callers treat "not found" on a delete as done.
//!
//! Dumps are answered one datagram at a time as we read, so they cannot overflow; an interrupted dump
//! (NLM_F_DUMP_INTR: the table changed under it) is restarted.
use super::parse::{error_of, frames, Frame};
use super::wire::{set_ack, set_seq, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP_INTR};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};

/// Receive buffer asked for (SO_RCVBUFFORCE, as root; falls back to SO_RCVBUF, capped by rmem_max).
const RCVBUF: usize = 8 << 20;
/// Default bytes of requests per datagram (the kernel refuses datagrams above the socket's send buffer).
pub const DEFAULT_BATCH_BYTES: usize = 64 << 10;
const RX_BYTES: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}{}", std::io::Error::from_raw_os_error(*errno), msg.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel { errno: i32, msg: Option<String> },
    #[error("{0}")]
    Protocol(String),
}

impl NlError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> NlError {
    move |source| NlError::Io { op, source }
}

/// Requests laid out back to back; [`NlSocket::execute`] numbers them when it sends them.
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    starts: Vec<usize>,
}

impl Batch {
    pub fn with_capacity(requests: usize) -> Self {
        Batch { buf: Vec::with_capacity(requests * 64), starts: Vec::with_capacity(requests) }
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Appends one request written by `encode` (given a placeholder sequence number).
    pub fn push(&mut self, encode: impl FnOnce(&mut Vec<u8>, u32)) {
        self.starts.push(self.buf.len());
        encode(&mut self.buf, 0);
    }

    fn end_of(&self, i: usize) -> usize {
        self.starts.get(i + 1).copied().unwrap_or(self.buf.len())
    }
}

pub struct NlSocket {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
    pub batch_bytes: usize,
}

impl NlSocket {
    /// Opens a socket in the calling thread's network namespace (it stays bound to it afterwards).
    pub fn open() -> Result<Self, NlError> {
        Self::open_protocol(NETLINK_ROUTE)
    }

    /// [`NlSocket::open`] for another netlink family (`NETLINK_NETFILTER` for conntrack).
    pub fn open_protocol(protocol: isize) -> Result<Self, NlError> {
        let mut sock = Socket::new(protocol).map_err(io("socket"))?;
        sock.bind_auto().map_err(io("bind"))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(io("connect"))?;
        // Best effort: short acks, error strings, and kernel-side dump filters (we filter again anyway).
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_netlink_get_strict_chk(true);
        if setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = sock.set_rx_buf_sz(RCVBUF);
        }
        // Never hang forever on a kernel that does not answer.
        let timeout = nix::sys::time::TimeVal::new(30, 0);
        setsockopt(&sock, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| NlError::Io { op: "SO_RCVTIMEO", source: std::io::Error::from_raw_os_error(e as i32) })?;
        Ok(NlSocket { sock, seq: 0, rx: Vec::with_capacity(RX_BYTES), batch_bytes: DEFAULT_BATCH_BYTES })
    }

    /// Shrinks (or grows) the receive buffer: tests use a tiny one to force the ENOBUFS fallback.
    pub fn set_receive_buffer(&self, bytes: usize) -> Result<(), NlError> {
        self.sock.set_rx_buf_sz(bytes).map_err(io("SO_RCVBUF"))
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Receives one datagram into `self.rx`.
    fn recv(&mut self) -> Result<(), NlError> {
        loop {
            self.rx.clear();
            match self.sock.recv(&mut self.rx, libc::MSG_TRUNC) {
                Ok(n) if n > self.rx.capacity() => {
                    return Err(NlError::Protocol(format!("datagram of {n} bytes truncated")));
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("recv")(e)),
            }
        }
    }

    /// Reads and discards everything queued. After an overrun the kernel drops *every* answer (without a new
    /// ENOBUFS) until the queue has been emptied once, so a resend must come after this.
    fn drain(&mut self) {
        loop {
            self.rx.clear();
            match self.sock.recv(&mut self.rx, libc::MSG_DONTWAIT | libc::MSG_TRUNC) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EINTR)) => {}
                Err(_) => return, // EAGAIN: empty
            }
        }
    }

    /// Sends every request of `batch` and returns one result per request, in order.
    pub fn execute(&mut self, mut batch: Batch) -> Vec<Result<(), NlError>> {
        let n = batch.len();
        let mut out: Vec<Result<(), NlError>> = (0..n).map(|_| Ok(())).collect();
        let (mut i, mut limit, mut overruns) = (0, self.batch_bytes.max(1), 0);
        while i < n {
            let start = batch.starts[i];
            let mut j = i + 1;
            while j < n && batch.end_of(j) - start <= limit {
                j += 1;
            }
            // Fresh sequence numbers for every attempt, so answers to an abandoned attempt are never taken
            // for answers to this one.
            let lo = self.seq.wrapping_add(1);
            for (k, &at) in batch.starts[i..j].iter().enumerate() {
                set_seq(&mut batch.buf, at, lo.wrapping_add(k as u32));
            }
            self.seq = self.seq.wrapping_add((j - i) as u32);
            let hi = self.seq;
            set_ack(&mut batch.buf, batch.starts[j - 1], true);
            let sent = self.sock.send(&batch.buf[start..batch.end_of(j - 1)], 0);
            let result = match sent {
                Ok(_) => self.collect(lo, hi, &mut out[i..j]),
                Err(e) if j - i > 1 && e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    limit = (limit / 2).max(1);
                    continue;
                }
                Err(e) => Err(io("send")(e)),
            };
            match result {
                Ok(()) => i = j,
                Err(NlError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOBUFS) && overruns < 16 => {
                    // Answers were lost: resend this chunk (idempotent requests), smaller.
                    overruns += 1;
                    self.drain();
                    limit = (limit / 4).max(1);
                    out[i..j].iter_mut().for_each(|r| *r = Ok(()));
                }
                Err(e) => {
                    let text = e.to_string();
                    out[i..j].iter_mut().for_each(|r| *r = Err(NlError::Protocol(text.clone())));
                    i = j;
                }
            }
        }
        out
    }

    /// Reads answers until the ack (or error) of `hi` arrives, recording errors for sequence numbers `lo..=hi`.
    fn collect(&mut self, lo: u32, hi: u32, out: &mut [Result<(), NlError>]) -> Result<(), NlError> {
        loop {
            self.recv()?;
            let mut done = false;
            for f in frames(&self.rx) {
                let idx = f.seq.wrapping_sub(lo) as usize;
                if f.ty != NLMSG_ERROR || idx >= out.len() {
                    continue; // a stale answer from an abandoned request
                }
                let (errno, msg) = error_of(&f);
                if errno != 0 {
                    out[idx] = Err(NlError::Kernel { errno, msg });
                }
                done |= f.seq == hi;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Sends one request built by `encode` (given its sequence number) and waits for its ack, handing every
    /// reply message to `on_reply` (a GET's answer).
    pub fn request(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>, u32),
        mut on_reply: impl FnMut(&Frame<'_>),
    ) -> Result<(), NlError> {
        let seq = self.next_seq();
        let mut buf = Vec::with_capacity(256);
        encode(&mut buf, seq);
        set_ack(&mut buf, 0, true);
        self.sock.send(&buf, 0).map_err(io("send"))?;
        loop {
            self.recv()?;
            for f in frames(&self.rx) {
                if f.seq != seq {
                    continue;
                }
                if f.ty == NLMSG_ERROR {
                    let (errno, msg) = error_of(&f);
                    return if errno == 0 { Ok(()) } else { Err(NlError::Kernel { errno, msg }) };
                }
                on_reply(&f);
            }
        }
    }

    /// Runs a dump request built by `encode` and returns what `parse` keeps of each message. Restarts when the
    /// kernel says the dump was interrupted by a concurrent change.
    pub fn dump<T>(
        &mut self,
        encode: impl Fn(&mut Vec<u8>, u32),
        mut parse: impl FnMut(&Frame<'_>) -> Option<T>,
    ) -> Result<Vec<T>, NlError> {
        let mut attempts = 0;
        'again: loop {
            attempts += 1;
            let seq = self.next_seq();
            let mut buf = Vec::with_capacity(64);
            encode(&mut buf, seq);
            self.sock.send(&buf, 0).map_err(io("send"))?;
            let (mut items, mut interrupted) = (Vec::new(), false);
            loop {
                match self.recv() {
                    Ok(()) => {}
                    Err(NlError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOBUFS) && attempts < 5 => {
                        self.drain();
                        continue 'again;
                    }
                    Err(e) => return Err(e),
                }
                for f in frames(&self.rx) {
                    if f.seq != seq {
                        continue;
                    }
                    interrupted |= f.flags & NLM_F_DUMP_INTR != 0;
                    match f.ty {
                        NLMSG_DONE | NLMSG_ERROR => {
                            // NLMSG_DONE carries the dump's own status as an int (no original header).
                            let (errno, msg) = match f.ty {
                                NLMSG_DONE => (done_status(&f), None),
                                _ => error_of(&f),
                            };
                            if errno != 0 {
                                return Err(NlError::Kernel { errno, msg });
                            }
                            if interrupted && attempts < 5 {
                                continue 'again;
                            }
                            return Ok(items);
                        }
                        _ => items.extend(parse(&f)),
                    }
                }
            }
        }
    }
}

fn done_status(f: &Frame<'_>) -> i32 {
    f.payload.get(0..4).map_or(0, |b| -i32::from_ne_bytes(b.try_into().expect("4 bytes")))
}
