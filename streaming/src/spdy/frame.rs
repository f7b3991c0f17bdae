//! The SPDY/3.1 frame codec. Every frame starts with 8 bytes: a control frame with the control bit,
//! the version (3) and its type, then flags and a 24-bit length; a data frame with the 31-bit stream
//! id, then flags and length. Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) go through the
//! connection's two zlib streams, so one codec serves one connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::header::{HeaderDecoder, HeaderEncoder, HeaderError, Headers};

/// The SPDY version this codec speaks.
pub const VERSION: u16 = 3;
/// FIN: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM only: the recipient may not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The frame header size.
pub const HEAD_LEN: usize = 8;
/// The largest length the 24-bit field holds.
pub const MAX_LENGTH: usize = (1 << 24) - 1;

/// Control frame types.
pub mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const STREAM_IN_USE: u32 = 8;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
}

/// One setting of a SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A decoded frame (header blocks decompressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        slot: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        settings: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
}

/// Malformed or unacceptable frames. Any of these ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY version {0} (only 3 is spoken)")]
    UnsupportedVersion(u16),
    #[error("unknown control frame type {0}")]
    UnknownType(u16),
    #[error("frame of {len} bytes is larger than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("{what} frame has a wrong length {len}")]
    BadLength { what: &'static str, len: usize },
    #[error("{0} frame with stream id 0")]
    ZeroStreamId(&'static str),
    #[error("RST_STREAM with status 0")]
    ZeroStatus,
    #[error("PING frame with id 0")]
    ZeroPingId,
    #[error("{what} frame's header block: {source}")]
    Header {
        what: &'static str,
        #[source]
        source: HeaderError,
    },
    #[error("connection closed inside a frame ({0} bytes of it received)")]
    Truncated(usize),
}

/// Reads the frames of one direction of a connection (it owns that direction's zlib stream).
pub struct FrameDecoder {
    decoder: HeaderDecoder,
    max_len: usize,
}

/// Writes the frames of one direction of a connection.
#[derive(Default)]
pub struct FrameEncoder {
    encoder: HeaderEncoder,
}

impl FrameDecoder {
    /// A decoder that refuses frames whose payload is longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            decoder: HeaderDecoder::new(),
            max_len: max_len.min(MAX_LENGTH),
        }
    }

    /// Takes one frame off the front of `buf`; `Ok(None)` while it is incomplete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEAD_LEN {
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        let control = first & 0x8000_0000 != 0;
        if control {
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
            let ty = (first & 0xffff) as u16;
            if !matches!(
                ty,
                kind::SYN_STREAM
                    | kind::SYN_REPLY
                    | kind::RST_STREAM
                    | kind::SETTINGS
                    | kind::PING
                    | kind::GOAWAY
                    | kind::HEADERS
                    | kind::WINDOW_UPDATE
            ) {
                return Err(FrameError::UnknownType(ty));
            }
        }
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        if buf.len() < HEAD_LEN + len {
            buf.reserve(HEAD_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEAD_LEN);
        let payload = buf.split_to(len).freeze();
        if control {
            self.decode_control((first & 0xffff) as u16, flags, payload)
                .map(Some)
        } else {
            let stream_id = first & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId("DATA"));
            }
            Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: payload,
            }))
        }
    }

    fn decode_control(&mut self, ty: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        let len = p.len();
        let need = |what: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(FrameError::BadLength { what, len })
            }
        };
        let header = |what: &'static str| move |source| FrameError::Header { what, source };
        match ty {
            kind::SYN_STREAM => {
                need("SYN_STREAM", len >= 10)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                // Decode before validating the id so the zlib stream stays in step.
                let headers = self.decoder.decode(&p).map_err(header("SYN_STREAM"))?;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId("SYN_STREAM"));
                }
                Ok(Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    flags,
                    headers,
                })
            }
            kind::SYN_REPLY | kind::HEADERS => {
                let what = if ty == kind::SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                need(what, len >= 4)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.decoder.decode(&p).map_err(header(what))?;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId(what));
                }
                Ok(if ty == kind::SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                })
            }
            kind::RST_STREAM => {
                need("RST_STREAM", len == 8)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let status = p.get_u32();
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId("RST_STREAM"));
                }
                if status == 0 {
                    return Err(FrameError::ZeroStatus);
                }
                Ok(Frame::RstStream { stream_id, status })
            }
            kind::SETTINGS => {
                need("SETTINGS", len >= 4)?;
                let count = p.get_u32() as usize;
                need("SETTINGS", count <= (len - 4) / 8 && len == 4 + count * 8)?;
                let settings = (0..count)
                    .map(|_| {
                        let word = p.get_u32();
                        Setting {
                            flags: (word >> 24) as u8,
                            id: word & 0x00ff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Ok(Frame::Settings { flags, settings })
            }
            kind::PING => {
                need("PING", len == 4)?;
                let id = p.get_u32();
                if id == 0 {
                    return Err(FrameError::ZeroPingId);
                }
                Ok(Frame::Ping { id })
            }
            kind::GOAWAY => {
                need("GOAWAY", len == 8)?;
                Ok(Frame::GoAway {
                    last_good: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                })
            }
            kind::WINDOW_UPDATE => {
                need("WINDOW_UPDATE", len == 8)?;
                Ok(Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                })
            }
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

impl FrameEncoder {
    /// An encoder with a fresh zlib stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the wire form of `frame` to `dst`.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let header = |what: &'static str| move |source| FrameError::Header { what, source };
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if *stream_id == 0 {
                    return Err(FrameError::ZeroStreamId("DATA"));
                }
                check_len(data.len())?;
                dst.reserve(HEAD_LEN + data.len());
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32((u32::from(*flags) << 24) | data.len() as u32);
                dst.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                headers,
            } => {
                let block = self.encoder.encode(headers).map_err(header("SYN_STREAM"))?;
                let mut body = Vec::with_capacity(10 + block.len());
                body.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                body.push(priority << 5);
                body.push(*slot);
                body.extend_from_slice(&block);
                put_control(dst, kind::SYN_STREAM, *flags, &body)?;
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let (ty, what) = if matches!(frame, Frame::SynReply { .. }) {
                    (kind::SYN_REPLY, "SYN_REPLY")
                } else {
                    (kind::HEADERS, "HEADERS")
                };
                let block = self.encoder.encode(headers).map_err(header(what))?;
                let mut body = Vec::with_capacity(4 + block.len());
                body.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&block);
                put_control(dst, ty, *flags, &body)?;
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = [0u8; 8];
                body[..4].copy_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                body[4..].copy_from_slice(&status.to_be_bytes());
                put_control(dst, kind::RST_STREAM, 0, &body)?;
            }
            Frame::Settings { flags, settings } => {
                let mut body = Vec::with_capacity(4 + 8 * settings.len());
                body.extend_from_slice(&(settings.len() as u32).to_be_bytes());
                for s in settings {
                    let word = (u32::from(s.flags) << 24) | (s.id & 0x00ff_ffff);
                    body.extend_from_slice(&word.to_be_bytes());
                    body.extend_from_slice(&s.value.to_be_bytes());
                }
                put_control(dst, kind::SETTINGS, *flags, &body)?;
            }
            Frame::Ping { id } => put_control(dst, kind::PING, 0, &id.to_be_bytes())?,
            Frame::GoAway { last_good, status } => {
                let mut body = [0u8; 8];
                body[..4].copy_from_slice(&(last_good & 0x7fff_ffff).to_be_bytes());
                body[4..].copy_from_slice(&status.to_be_bytes());
                put_control(dst, kind::GOAWAY, 0, &body)?;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = [0u8; 8];
                body[..4].copy_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                body[4..].copy_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                put_control(dst, kind::WINDOW_UPDATE, 0, &body)?;
            }
        }
        Ok(())
    }
}

fn check_len(len: usize) -> Result<(), FrameError> {
    if len > MAX_LENGTH {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_LENGTH,
        });
    }
    Ok(())
}

fn put_control(dst: &mut BytesMut, ty: u16, flags: u8, body: &[u8]) -> Result<(), FrameError> {
    check_len(body.len())?;
    dst.reserve(HEAD_LEN + body.len());
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(ty);
    dst.put_u32((u32::from(flags) << 24) | body.len() as u32);
    dst.extend_from_slice(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut dec = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut buf)? {
            frames.push(f);
        }
        if !buf.is_empty() {
            return Err(FrameError::Truncated(buf.len()));
        }
        Ok(frames)
    }

    /// Two SYN_STREAMs as a client writes them, one zlib stream across both header blocks
    /// (compressed by the reference zlib with the SPDY/3 dictionary, id 0xe3c6a7c2).
    const SYN_STREAMS: &str = "80030001000000280000000100000000000078f9e3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff\
                               800300010000002e0000000300000000000002a54748d15c04ce0516061606409ab308129599a024ce6880a119540e2502000000ffff";

    #[test]
    fn reference_syn_streams() {
        let frames = decode_all(&hex(SYN_STREAMS)).unwrap();
        let Frame::SynStream {
            stream_id, headers, ..
        } = &frames[0]
        else {
            panic!("{frames:?}")
        };
        assert_eq!(*stream_id, 1);
        assert_eq!(headers.get("streamType"), Some("error"));
        let Frame::SynStream {
            stream_id, headers, ..
        } = &frames[1]
        else {
            panic!("{frames:?}")
        };
        assert_eq!(*stream_id, 3);
        assert_eq!(headers.get("streamtype"), Some("data"));
        assert_eq!(headers.get("port"), Some("8080"));
        assert_eq!(headers.get("requestid"), Some("0"));
    }

    #[test]
    fn control_frame_bytes() {
        let cases: Vec<(&str, Frame)> = vec![
            (
                "80030003 00000008 00000001 00000005",
                Frame::RstStream {
                    stream_id: 1,
                    status: rst::CANCEL,
                },
            ),
            ("80030006 00000004 00000001", Frame::Ping { id: 1 }),
            (
                "80030007 00000008 00000005 00000000",
                Frame::GoAway {
                    last_good: 5,
                    status: goaway::OK,
                },
            ),
            (
                "80030009 00000008 00000001 00010000",
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 65536,
                },
            ),
            (
                "80030004 0000000c 00000001 00000007 00010000",
                Frame::Settings {
                    flags: 0,
                    settings: vec![Setting {
                        flags: 0,
                        id: 7,
                        value: 65536,
                    }],
                },
            ),
            (
                "00000001 01000003 616263",
                Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"abc"),
                },
            ),
        ];
        for (wire, frame) in cases {
            let wire = hex(wire);
            assert_eq!(decode_all(&wire).unwrap(), vec![frame.clone()]);
            let mut out = BytesMut::new();
            FrameEncoder::new().encode(&frame, &mut out).unwrap();
            assert_eq!(out.to_vec(), wire, "{frame:?}");
        }
    }

    #[test]
    fn header_frames_round_trip_across_one_zlib_stream() {
        let mut enc = FrameEncoder::new();
        let mut dec = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut sent = Vec::new();
        for i in 0..20u32 {
            let mut headers = Headers::default();
            headers.push("streamType", if i % 2 == 0 { "data" } else { "error" });
            headers.push("port", &(8000 + i).to_string());
            headers.push("requestID", &i.to_string());
            headers.push("multi", "a");
            headers.push("multi", "b");
            let frame = match i % 3 {
                0 => Frame::SynStream {
                    stream_id: 2 * i + 1,
                    associated_to: 0,
                    priority: 7,
                    slot: 0,
                    flags: 0,
                    headers,
                },
                1 => Frame::SynReply {
                    stream_id: 2 * i + 1,
                    flags: FLAG_FIN,
                    headers,
                },
                _ => Frame::Headers {
                    stream_id: 2 * i + 1,
                    flags: 0,
                    headers,
                },
            };
            enc.encode(&frame, &mut buf).unwrap();
            sent.push(frame);
        }
        let mut got = Vec::new();
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn partial_input_waits() {
        let wire = hex(SYN_STREAMS);
        let mut dec = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut frames = 0;
        for b in wire {
            buf.extend_from_slice(&[b]);
            while dec.decode(&mut buf).unwrap().is_some() {
                frames += 1;
            }
        }
        assert_eq!(frames, 2);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let too_large = hex("00000001 00100000");
        assert!(matches!(
            FrameDecoder::new(1024).decode(&mut BytesMut::from(&too_large[..])),
            Err(FrameError::TooLarge {
                len: 1048576,
                max: 1024
            })
        ));
        let unknown = hex("80030005 00000000");
        assert!(matches!(
            decode_all(&unknown),
            Err(FrameError::UnknownType(5))
        ));
        let credential = hex("8003000a 00000000");
        assert!(matches!(
            decode_all(&credential),
            Err(FrameError::UnknownType(10))
        ));
        let version2 = hex("80020006 00000004 00000001");
        assert!(matches!(
            decode_all(&version2),
            Err(FrameError::UnsupportedVersion(2))
        ));
        let short_rst = hex("80030003 00000004 00000001");
        assert!(matches!(
            decode_all(&short_rst),
            Err(FrameError::BadLength { .. })
        ));
        let zero_status = hex("80030003 00000008 00000001 00000000");
        assert!(matches!(
            decode_all(&zero_status),
            Err(FrameError::ZeroStatus)
        ));
        let zero_data = hex("00000000 00000001 61");
        assert!(matches!(
            decode_all(&zero_data),
            Err(FrameError::ZeroStreamId("DATA"))
        ));
        let zero_ping = hex("80030006 00000004 00000000");
        assert!(matches!(
            decode_all(&zero_ping),
            Err(FrameError::ZeroPingId)
        ));
        let settings_count = hex("80030004 0000000c 00000002 00000007 00010000");
        assert!(matches!(
            decode_all(&settings_count),
            Err(FrameError::BadLength { .. })
        ));
        let short_syn = hex("80030001 00000004 00000001");
        assert!(matches!(
            decode_all(&short_syn),
            Err(FrameError::BadLength { .. })
        ));
        let truncated = &hex(SYN_STREAMS)[..20];
        assert!(matches!(
            decode_all(truncated),
            Err(FrameError::Truncated(20))
        ));
    }

    /// Upstream's malformed-zlib examples (a corrupted zlib header), moved to SPDY/3.
    #[test]
    fn bad_zlib_is_an_error() {
        for b64 in [
            "gAIAAQAAABgAAAACAAAAAAAAF/nfolGyYmAAAAAA//8=",
            "gAIAAgAAABQAAAACAAAX+d+iUbJiYAAAAAD//w==",
            "gAIACAAAABQAAAACAAAX+d+iUbJiYAAAAAD//w==",
        ] {
            let mut wire = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            wire[1] = 3;
            let err = decode_all(&wire).unwrap_err();
            assert!(
                matches!(
                    err,
                    FrameError::Header {
                        source: HeaderError::Zlib(_),
                        ..
                    }
                ),
                "{err}"
            );
        }
        // Not zlib at all.
        let garbage = hex("80030002 0000000c 00000001 0102030405060708");
        assert!(matches!(
            decode_all(&garbage),
            Err(FrameError::Header { .. })
        ));
    }

    #[test]
    fn lying_header_counts_are_errors() {
        // A block that claims a billion pairs.
        let mut block = Vec::new();
        block.extend_from_slice(&1_000_000_000u32.to_be_bytes());
        block.extend_from_slice(&4u32.to_be_bytes());
        block.extend_from_slice(b"port");
        let err = Headers::decode_block(&block).unwrap_err();
        assert!(matches!(err, HeaderError::Truncated(_)), "{err}");
        let mut name_too_long = Vec::new();
        name_too_long.extend_from_slice(&1u32.to_be_bytes());
        name_too_long.extend_from_slice(&u32::MAX.to_be_bytes());
        name_too_long.extend_from_slice(b"port");
        assert!(Headers::decode_block(&name_too_long).is_err());
    }

    /// Whatever the bytes, decoding ends in frames or an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed = hex(SYN_STREAMS);
        for round in 0..2000 {
            let mut bytes = if round % 2 == 0 {
                seed.clone()
            } else {
                (0..(next() % 64)).map(|_| next() as u8).collect()
            };
            // Flip a few bytes of the valid frames, keeping their start plausible.
            for _ in 0..(next() % 4) {
                if !bytes.is_empty() {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
            }
            let _ = decode_all(&bytes);
        }
    }
}
