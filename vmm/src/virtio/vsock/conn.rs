//! One vsock stream connection between a guest port and a host Unix stream, with the credit
//! accounting of virtio 1.1, 5.10.6.3: we never send the guest more than it has room for, and we
//! tell it how much room we have.

use super::packet::{Header, OP_CREDIT_UPDATE, TYPE_STREAM};
use super::HOST_CID;
use std::io::{Read, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

/// Receive buffer we advertise to the guest, per connection.
pub const BUF_ALLOC: u32 = 256 * 1024;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: REQUEST sent to the guest, waiting for RESPONSE.
    AwaitResponse,
    /// Data flows both ways.
    Established,
}

/// What reading the host stream gave.
#[derive(Debug, PartialEq, Eq)]
pub enum HostRead {
    /// Bytes for the guest.
    Data(Vec<u8>),
    /// The host closed its side.
    Eof,
    /// Nothing to read now.
    WouldBlock,
    /// The guest has no room.
    NoCredit,
}

/// A connection.
pub struct Conn {
    /// The host side.
    pub stream: UnixStream,
    /// Host-side port.
    pub local_port: u32,
    /// Guest-side port.
    pub peer_port: u32,
    /// State.
    pub state: ConnState,
    /// The host stream may have data to read.
    pub readable: bool,
    /// The host stream reached end of file.
    pub host_eof: bool,
    /// The guest sent SHUTDOWN(send): shut the host stream's write side once flushed.
    pub guest_done: bool,
    /// The guest shut both directions: reset once every byte it sent is flushed.
    pub close_when_flushed: bool,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    to_host: Vec<u8>,
}

impl Conn {
    /// A connection over `stream` (already non-blocking).
    pub fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: ConnState) -> Self {
        Self {
            stream,
            local_port,
            peer_port,
            state,
            readable: false,
            host_eof: false,
            guest_done: false,
            close_when_flushed: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            to_host: Vec::new(),
        }
    }

    /// Bytes the guest can still receive.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Records the credit fields of a packet from the guest.
    pub fn update_peer(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
    }

    /// A header from the host side of this connection.
    pub fn header(&mut self, guest_cid: u64, op: u16, len: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Queues data from the guest for the host stream and writes what the stream takes.
    /// Fails when the guest overran the credit we gave it.
    pub fn push_from_guest(&mut self, data: &[u8]) -> Result<(), ()> {
        if self.to_host.len() + data.len() > BUF_ALLOC as usize {
            return Err(());
        }
        self.to_host.extend_from_slice(data);
        self.flush().map_err(|_| ())
    }

    /// Writes pending guest data to the host stream.
    pub fn flush(&mut self) -> std::io::Result<()> {
        while !self.to_host.is_empty() {
            match self.stream.write(&self.to_host) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether pending guest data is waiting for the host stream.
    pub fn has_pending(&self) -> bool {
        !self.to_host.is_empty()
    }

    /// Whether the guest should hear about freed buffer space.
    pub fn wants_credit_update(&self) -> bool {
        (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= BUF_ALLOC / 4
    }

    /// A CREDIT_UPDATE header.
    pub fn credit_update(&mut self, guest_cid: u64) -> Header {
        self.header(guest_cid, OP_CREDIT_UPDATE, 0)
    }

    /// Reads up to `max` bytes for the guest, within its credit.
    pub fn read_for_guest(&mut self, max: usize) -> HostRead {
        let room = (self.peer_credit() as usize).min(max);
        if room == 0 {
            return HostRead::NoCredit;
        }
        let mut buf = vec![0u8; room];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return HostRead::Eof,
                Ok(n) => {
                    buf.truncate(n);
                    self.rx_cnt += Wrapping(n as u32);
                    return HostRead::Data(buf);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return HostRead::WouldBlock
                }
                Err(_) => return HostRead::Eof,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Conn::new(a, 1 << 30, 1024, ConnState::Established), b)
    }

    #[test]
    fn no_credit_until_the_guest_advertises_it() {
        let (mut c, mut host) = pair();
        host.write_all(b"hello").unwrap();
        assert_eq!(c.read_for_guest(100), HostRead::NoCredit);
        c.update_peer(&Header {
            buf_alloc: 3,
            ..Default::default()
        });
        assert_eq!(c.read_for_guest(100), HostRead::Data(b"hel".to_vec()));
        assert_eq!(c.peer_credit(), 0);
        c.update_peer(&Header {
            buf_alloc: 3,
            fwd_cnt: 3,
            ..Default::default()
        });
        assert_eq!(c.read_for_guest(100), HostRead::Data(b"lo".to_vec()));
        assert_eq!(c.read_for_guest(100), HostRead::WouldBlock);
        drop(host);
        assert_eq!(c.read_for_guest(100), HostRead::Eof);
    }

    #[test]
    fn guest_data_reaches_the_host_and_counts_as_forwarded() {
        let (mut c, mut host) = pair();
        c.push_from_guest(b"ping").unwrap();
        let mut buf = [0u8; 4];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(c.header(3, 5, 0).fwd_cnt, 4);
    }

    #[test]
    fn overrunning_our_buffer_is_refused() {
        let (mut c, _host) = pair();
        // The host never reads: fill the socket buffer and then our advertised buffer.
        let chunk = vec![0u8; 64 * 1024];
        let mut refused = false;
        for _ in 0..64 {
            if c.push_from_guest(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }
}
