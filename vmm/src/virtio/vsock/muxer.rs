//! The host side of vsock: the hybrid Unix socket listener, `CONNECT` handshakes, connections
//! to `<socket>_<port>` listeners, and the packets waiting for the guest's receive queue.

use super::conn::{Conn, ConnState, HostRead};
use super::packet::{
    Header, Packet, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::HOST_CID;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// First epoll token for connections and handshakes (lower ones are the queues and listener).
pub const FIRST_DYNAMIC_TOKEN: u64 = 16;
/// Token of the listener.
pub const LISTENER_TOKEN: u64 = 3;
const FIRST_LOCAL_PORT: u32 = 1 << 30;
const MAX_HANDSHAKE: usize = 64;
/// Most control packets (responses, resets, credit updates) waiting for guest receive buffers.
/// The guest makes them (a request or credit request each, a reset for every stray packet)
/// and decides when it takes them; past this, a packet is dropped and counted, and the
/// connection it was for is closed on the host side (the guest gets a reset the next time it
/// sends on it).
pub const MAX_CONTROL: usize = 1024;

struct Handshake {
    stream: UnixStream,
    buf: Vec<u8>,
}

type Key = (u32, u32); // (host port, guest port)

/// All host-side vsock state of one VM.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    handshakes: HashMap<u64, Handshake>,
    conns: HashMap<Key, Conn>,
    tokens: HashMap<u64, Key>,
    conn_tokens: HashMap<Key, u64>,
    next_token: u64,
    next_local_port: u32,
    control: VecDeque<Packet>,
    /// Control packets dropped because [`MAX_CONTROL`] were already waiting.
    control_dropped: u64,
    /// Connection requests held back until the guest has handled a transport reset.
    held: Option<Vec<Packet>>,
}

impl Muxer {
    /// Host state for `guest_cid`, listening on `listener` (bound at `uds_path`), using `epoll`.
    pub fn new(guest_cid: u64, uds_path: PathBuf, listener: UnixListener, epoll: Epoll) -> Self {
        Self {
            guest_cid,
            uds_path,
            listener,
            epoll,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            conn_tokens: HashMap::new(),
            next_token: FIRST_DYNAMIC_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            control: VecDeque::new(),
            control_dropped: 0,
            held: None,
        }
    }

    /// Whether connection requests are held back.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Holds host connection requests back (after a snapshot restore, until the guest has
    /// re-read its CID), or releases them.
    pub fn hold_requests(&mut self, hold: bool) {
        match (hold, self.held.take()) {
            (true, held) => self.held = Some(held.unwrap_or_default()),
            (false, Some(held)) => {
                for p in held {
                    self.push_control(p);
                }
            }
            (false, None) => {}
        }
    }

    /// The epoll set the event loop waits on.
    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    fn watch(&mut self, fd: i32, events: EventSet) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        if let Err(e) = self
            .epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
        {
            tracing::warn!("vsock: epoll add: {e}");
        }
        token
    }

    fn unwatch(&mut self, fd: i32) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    /// Accepts pending host connections (they start with a `CONNECT <port>` line).
    pub fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let token =
                        self.watch(stream.as_raw_fd(), EventSet::IN | EventSet::READ_HANG_UP);
                    self.handshakes.insert(
                        token,
                        Handshake {
                            stream,
                            buf: Vec::new(),
                        },
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("vsock: accept on {}: {e}", self.uds_path.display());
                    return;
                }
            }
        }
    }

    /// Handles readiness of a handshake or connection stream.
    pub fn stream_event(&mut self, token: u64, events: EventSet) {
        if self.handshakes.contains_key(&token) {
            self.handshake_readable(token);
            return;
        }
        let Some(&key) = self.tokens.get(&token) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if events.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
            conn.readable = true;
        }
        if events.contains(EventSet::OUT) && conn.has_pending() {
            if conn.flush().is_err() {
                self.reset(key);
                return;
            }
            if conn.wants_credit_update() {
                let hdr = conn.credit_update(self.guest_cid);
                self.push_control(Packet { hdr, data: vec![] });
            }
            self.after_flush(key);
        }
    }

    /// Once every byte the guest sent is written: carries out a SHUTDOWN the guest sent
    /// meanwhile (half-close of the host stream, or a reset when both directions are done).
    fn after_flush(&mut self, key: Key) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.flush().is_err() {
            self.reset(key);
            return;
        }
        if conn.has_pending() {
            return;
        }
        if conn.guest_done {
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        if conn.close_when_flushed {
            self.reset(key);
        }
    }

    fn handshake_readable(&mut self, token: u64) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        // Read byte by byte up to the newline, so no connection data is consumed.
        let line = loop {
            match hs.stream.read(&mut byte) {
                Ok(0) => break Err("closed before CONNECT".to_string()),
                Ok(_) if byte[0] == b'\n' => {
                    break Ok(String::from_utf8_lossy(&hs.buf).into_owned())
                }
                Ok(_) => {
                    hs.buf.push(byte[0]);
                    if hs.buf.len() > MAX_HANDSHAKE {
                        break Err("CONNECT line too long".to_string());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => break Err(e.to_string()),
            }
        };
        let hs = self.handshakes.remove(&token).expect("present above");
        let port = line.and_then(|l| {
            l.trim()
                .strip_prefix("CONNECT ")
                .and_then(|p| p.trim().parse::<u32>().ok())
                .ok_or(format!("expected `CONNECT <port>`, got {l:?}"))
        });
        match port {
            Ok(port) => {
                let local = self.next_local_port;
                self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
                let key = (local, port);
                if self.held.is_none() && self.control.len() >= MAX_CONTROL {
                    tracing::warn!(
                        "vsock: refused host connection: the guest is not taking packets"
                    );
                    self.unwatch(hs.stream.as_raw_fd());
                    return;
                }
                let mut conn = Conn::new(hs.stream, local, port, ConnState::AwaitResponse);
                let hdr = conn.header(self.guest_cid, OP_REQUEST, 0);
                let request = Packet { hdr, data: vec![] };
                match &mut self.held {
                    Some(held) => held.push(request),
                    None => self.push_control(request),
                }
                // Same fd, now a connection: re-register under the handshake's token.
                self.tokens.insert(token, key);
                self.conn_tokens.insert(key, token);
                let _ = self.epoll.ctl(
                    ControlOperation::Modify,
                    conn.stream.as_raw_fd(),
                    EpollEvent::new(
                        EventSet::IN
                            | EventSet::OUT
                            | EventSet::READ_HANG_UP
                            | EventSet::EDGE_TRIGGERED,
                        token,
                    ),
                );
                self.conns.insert(key, conn);
            }
            Err(why) => {
                tracing::warn!("vsock: refused host connection: {why}");
                let mut s = hs.stream;
                let fd = s.as_raw_fd();
                self.unwatch(fd);
                let _ = s.flush();
            }
        }
    }

    /// Handles a packet the guest sent (already checked against the guest's CID).
    pub fn handle_guest_packet(&mut self, pkt: Packet) {
        let h = pkt.hdr;
        let key = (h.dst_port, h.src_port);
        if h.op == OP_REQUEST {
            self.guest_connect(h);
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            if h.op != OP_RST {
                self.rst_for(&h);
            }
            return;
        };
        conn.update_peer(&h);
        match h.op {
            OP_RESPONSE if conn.state == ConnState::AwaitResponse => {
                conn.state = ConnState::Established;
                let reply = format!("OK {}\n", conn.local_port);
                if conn.stream.write_all(reply.as_bytes()).is_err() {
                    self.reset(key);
                } else {
                    conn.readable = true;
                }
            }
            OP_RW if conn.state == ConnState::Established => {
                if conn.push_from_guest(&pkt.data).is_err() {
                    tracing::warn!("vsock: guest overran its credit or host stream failed");
                    self.reset(key);
                } else if conn.wants_credit_update() {
                    let hdr = conn.credit_update(self.guest_cid);
                    self.push_control(Packet { hdr, data: vec![] });
                }
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => {
                let hdr = conn.credit_update(self.guest_cid);
                self.push_control(Packet { hdr, data: vec![] });
            }
            OP_SHUTDOWN => {
                // Data the guest sent before its SHUTDOWN still goes to the host: the host
                // side is shut (or the connection reset) only once it has all been written.
                if h.flags & SHUTDOWN_SEND != 0 {
                    conn.guest_done = true;
                }
                if h.flags & (SHUTDOWN_SEND | SHUTDOWN_RCV) == SHUTDOWN_SEND | SHUTDOWN_RCV {
                    conn.close_when_flushed = true;
                }
                self.after_flush(key);
            }
            OP_RST => self.remove(key),
            _ => self.reset(key),
        }
    }

    fn guest_connect(&mut self, h: Header) {
        let key = (h.dst_port, h.src_port);
        if self.conns.contains_key(&key) {
            self.rst_for(&h);
            return;
        }
        if self.control.len() >= MAX_CONTROL {
            // No room for the RESPONSE: the request is dropped and counted (its connect
            // times out in the guest).
            self.control_dropped += 1;
            return;
        }
        let path = format!("{}_{}", self.uds_path.display(), h.dst_port);
        let stream = match UnixStream::connect(&path) {
            Ok(s) if s.set_nonblocking(true).is_ok() => s,
            _ => {
                tracing::debug!("vsock: no host listener at {path}");
                self.rst_for(&h);
                return;
            }
        };
        let mut conn = Conn::new(stream, h.dst_port, h.src_port, ConnState::Established);
        conn.update_peer(&h);
        let hdr = conn.header(self.guest_cid, OP_RESPONSE, 0);
        self.push_control(Packet { hdr, data: vec![] });
        let token = self.watch(
            conn.stream.as_raw_fd(),
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
        );
        conn.readable = true;
        self.tokens.insert(token, key);
        self.conn_tokens.insert(key, token);
        self.conns.insert(key, conn);
    }

    fn rst_for(&mut self, h: &Header) {
        let hdr = Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            len: 0,
            type_: TYPE_STREAM,
            op: OP_RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        };
        self.push_control(Packet { hdr, data: vec![] });
    }

    /// Queues a control packet for the guest, within [`MAX_CONTROL`]. Past the cap the packet
    /// is dropped and counted, and the connection it belongs to (if any) is closed on the host
    /// side without a reset: the guest gets one when it next sends on it.
    fn push_control(&mut self, pkt: Packet) {
        if self.control.len() < MAX_CONTROL {
            self.control.push_back(pkt);
            return;
        }
        self.control_dropped += 1;
        if self.control_dropped.is_power_of_two() {
            tracing::warn!(
                "vsock: {} control packets dropped: the guest is not taking them",
                self.control_dropped
            );
        }
        let key = (pkt.hdr.src_port, pkt.hdr.dst_port);
        if pkt.hdr.op != OP_RST {
            self.remove(key);
        }
    }

    /// Control packets dropped so far because the queue was full.
    #[cfg(test)]
    pub fn control_dropped(&self) -> u64 {
        self.control_dropped
    }

    /// Tells the guest the connection is gone and forgets it.
    fn reset(&mut self, key: Key) {
        if let Some(mut conn) = self.conns.remove(&key) {
            let hdr = conn.header(self.guest_cid, OP_RST, 0);
            self.push_control(Packet { hdr, data: vec![] });
            self.forget(key, &conn);
        }
    }

    fn remove(&mut self, key: Key) {
        if let Some(mut conn) = self.conns.remove(&key) {
            let _ = conn.flush();
            self.forget(key, &conn);
        }
    }

    fn forget(&mut self, key: Key, conn: &Conn) {
        self.unwatch(conn.stream.as_raw_fd());
        if let Some(token) = self.conn_tokens.remove(&key) {
            self.tokens.remove(&token);
        }
    }

    /// The next packet for the guest, with at most `max_payload` bytes of data: control packets
    /// first, then data from host streams within the guest's credit.
    pub fn next_for_guest(&mut self, max_payload: usize) -> Option<Packet> {
        if let Some(p) = self.control.pop_front() {
            return Some(p);
        }
        let candidates: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.readable && c.state == ConnState::Established && !c.host_eof)
            .map(|(k, _)| *k)
            .collect();
        for key in candidates {
            let guest_cid = self.guest_cid;
            let conn = self.conns.get_mut(&key).expect("candidate exists");
            match conn.read_for_guest(max_payload) {
                HostRead::Data(data) => {
                    let hdr = conn.header(guest_cid, OP_RW, data.len() as u32);
                    return Some(Packet { hdr, data });
                }
                HostRead::Eof => {
                    conn.host_eof = true;
                    conn.readable = false;
                    let mut hdr = conn.header(guest_cid, OP_SHUTDOWN, 0);
                    hdr.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
                    return Some(Packet { hdr, data: vec![] });
                }
                HostRead::WouldBlock => conn.readable = false,
                HostRead::NoCredit => {}
            }
        }
        None
    }

    /// Control packets waiting for the guest.
    #[cfg(test)]
    pub fn control_len(&self) -> usize {
        self.control.len()
    }

    /// A packet to put back at the head of the queue (no guest buffer could take it).
    pub fn requeue(&mut self, pkt: Packet) {
        self.control.push_front(pkt);
    }
}
