//! vsock packets: the 44-byte header and its checks. Pure parsing, testable without KVM.

/// Header length on the wire.
pub const HEADER_LEN: usize = 44;
/// Largest payload we accept from the guest or send to it in one packet.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Stream socket type.
pub const TYPE_STREAM: u16 = 1;

/// Operations.
pub const OP_REQUEST: u16 = 1;
/// Connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Connection reset.
pub const OP_RST: u16 = 3;
/// One or both directions shut down.
pub const OP_SHUTDOWN: u16 = 4;
/// Data.
pub const OP_RW: u16 = 5;
/// Credit information.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// Asks for credit information.
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet header (all fields little-endian on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

/// Why a packet from the guest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer than 44 bytes.
    #[error("vsock header truncated ({0} bytes)")]
    Short(usize),
    /// Not a stream packet.
    #[error("unsupported vsock socket type {0}")]
    Type(u16),
    /// Source CID is not the guest's.
    #[error("packet from CID {0}, not the guest's")]
    SourceCid(u64),
    /// Destination is not the host.
    #[error("packet to CID {0}, only the host (2) is reachable")]
    DestinationCid(u64),
    /// Length field and buffer disagree, or too large.
    #[error(
        "payload length {len} does not match the {available} bytes supplied (max {MAX_PAYLOAD})"
    )]
    Length {
        /// Declared length.
        len: u32,
        /// Bytes after the header.
        available: usize,
    },
    /// Unknown operation.
    #[error("unknown vsock op {0}")]
    Op(u16),
}

impl Header {
    /// Decodes a header from the first 44 bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<Header, PacketError> {
        if b.len() < HEADER_LEN {
            return Err(PacketError::Short(b.len()));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes"));
        Ok(Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Checks a header the guest sent, with `available` payload bytes after it.
    pub fn check_from_guest(&self, guest_cid: u64, available: usize) -> Result<(), PacketError> {
        if self.type_ != TYPE_STREAM {
            return Err(PacketError::Type(self.type_));
        }
        if self.src_cid != guest_cid {
            return Err(PacketError::SourceCid(self.src_cid));
        }
        if self.dst_cid != super::HOST_CID {
            return Err(PacketError::DestinationCid(self.dst_cid));
        }
        if self.len as usize > available || self.len as usize > MAX_PAYLOAD {
            return Err(PacketError::Length {
                len: self.len,
                available,
            });
        }
        if !(OP_REQUEST..=OP_CREDIT_REQUEST).contains(&self.op) {
            return Err(PacketError::Op(self.op));
        }
        Ok(())
    }
}

/// A packet: header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Header (its `len` matches `data`).
    pub hdr: Header,
    /// Payload.
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1024,
            dst_port: 5000,
            len: 3,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 7,
        }
    }

    #[test]
    fn round_trip() {
        let h = hdr();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn guest_checks() {
        let h = hdr();
        assert!(h.check_from_guest(3, 3).is_ok());
        assert_eq!(h.check_from_guest(4, 3), Err(PacketError::SourceCid(3)));
        assert!(matches!(
            h.check_from_guest(3, 2),
            Err(PacketError::Length { .. })
        ));
        let mut bad = h;
        bad.type_ = 2;
        assert_eq!(bad.check_from_guest(3, 3), Err(PacketError::Type(2)));
        let mut bad = h;
        bad.dst_cid = 9;
        assert_eq!(
            bad.check_from_guest(3, 3),
            Err(PacketError::DestinationCid(9))
        );
        let mut bad = h;
        bad.op = 99;
        assert_eq!(bad.check_from_guest(3, 3), Err(PacketError::Op(99)));
        assert_eq!(Header::decode(&[0; 10]), Err(PacketError::Short(10)));
    }
}
