//! The channel framing of the `*.channel.k8s.io` WebSocket protocols: every binary message starts
//! with one byte naming its channel; the base64 variants send text messages whose first character
//! is the channel as an ASCII digit and whose rest is base64. `v5.channel.k8s.io` adds the close
//! signal: a message `[255, channel]` ends that channel's data from its sender.

use base64::Engine;
use bytes::{Bytes, BytesMut};
use tokio_tungstenite::tungstenite::Message;

/// The exec/attach channels.
pub mod id {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// The exit status (`metav1.Status` JSON from v4 on).
    pub const ERROR: u8 = 3;
    /// Terminal sizes, as JSON objects.
    pub const RESIZE: u8 = 4;
    /// v5: the close signal's marker byte.
    pub const CLOSE: u8 = 255;
}

/// How messages carry bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Binary messages, raw bytes.
    Binary,
    /// Text messages, base64 bytes.
    Base64,
}

/// A message from the client, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Data for a channel.
    Data { channel: u8, data: Bytes },
    /// v5 close signal: the client sends no more on this channel.
    Close { channel: u8 },
    /// Nothing for the protocol (an empty message, ping or pong).
    Nothing,
    /// The client closed the WebSocket.
    Closed,
}

/// Malformed channel messages.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("a close signal must be followed by exactly one channel byte (got {0} bytes)")]
    BadClose(usize),
    #[error("{0} message where the protocol uses {1}")]
    WrongKind(&'static str, &'static str),
    #[error("base64 message with channel character {0:?}")]
    BadChannelDigit(char),
    #[error("bad base64 in a message: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// Decodes a client message. `close_signals` is true for v5.
pub fn decode(msg: Message, codec: Codec, close_signals: bool) -> Result<Inbound, ChannelError> {
    let (channel, data) = match (msg, codec) {
        (Message::Binary(b), Codec::Binary) => {
            if b.is_empty() {
                return Ok(Inbound::Nothing);
            }
            if close_signals && b[0] == id::CLOSE {
                if b.len() != 2 {
                    return Err(ChannelError::BadClose(b.len() - 1));
                }
                return Ok(Inbound::Close { channel: b[1] });
            }
            (b[0], b.slice(1..))
        }
        (Message::Text(t), Codec::Base64) => {
            let t = t.as_bytes();
            let Some(&first) = t.first() else {
                return Ok(Inbound::Nothing);
            };
            // Upstream writes the channel as '0' + channel, one byte (':' for 10, and so on).
            if !(b'0'..=b'0' + 79).contains(&first) {
                return Err(ChannelError::BadChannelDigit(char::from(first)));
            }
            let data = base64::engine::general_purpose::STANDARD.decode(&t[1..])?;
            let channel = first - b'0';
            (channel, Bytes::from(data))
        }
        (Message::Binary(_), Codec::Base64) => {
            return Err(ChannelError::WrongKind("binary", "text"));
        }
        (Message::Text(_), Codec::Binary) => {
            return Err(ChannelError::WrongKind("text", "binary"));
        }
        (Message::Close(_), _) => return Ok(Inbound::Closed),
        (Message::Ping(_) | Message::Pong(_) | Message::Frame(_), _) => {
            return Ok(Inbound::Nothing);
        }
    };
    Ok(Inbound::Data { channel, data })
}

/// Encodes data for a channel.
pub fn encode(channel: u8, data: &[u8], codec: Codec) -> Message {
    match codec {
        Codec::Binary => {
            let mut b = BytesMut::with_capacity(1 + data.len());
            b.extend_from_slice(&[channel]);
            b.extend_from_slice(data);
            Message::Binary(b.freeze())
        }
        Codec::Base64 => {
            let mut t = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            // Channels above 79 would leave ASCII; no protocol here has that many.
            t.push(char::from(b'0' + channel.min(79)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut t);
            Message::text(t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(b: &[u8]) -> Message {
        Message::Binary(Bytes::copy_from_slice(b))
    }

    #[test]
    fn binary_channels() {
        assert_eq!(
            decode(bin(b"\x00hi\n"), Codec::Binary, true).unwrap(),
            Inbound::Data {
                channel: id::STDIN,
                data: Bytes::from_static(b"hi\n")
            }
        );
        let mut resize = vec![id::RESIZE];
        resize.extend_from_slice(br#"{"Width":80,"Height":24}"#);
        assert_eq!(
            decode(bin(&resize), Codec::Binary, true).unwrap(),
            Inbound::Data {
                channel: 4,
                data: Bytes::from_static(br#"{"Width":80,"Height":24}"#)
            }
        );
        assert_eq!(
            decode(bin(b""), Codec::Binary, true).unwrap(),
            Inbound::Nothing
        );
        assert_eq!(encode(id::STDOUT, b"out", Codec::Binary), bin(b"\x01out"));
        assert_eq!(encode(id::ERROR, b"", Codec::Binary), bin(b"\x03"));
    }

    #[test]
    fn v5_close_signal() {
        assert_eq!(
            decode(bin(&[255, 0]), Codec::Binary, true).unwrap(),
            Inbound::Close { channel: 0 }
        );
        assert!(matches!(
            decode(bin(&[255]), Codec::Binary, true),
            Err(ChannelError::BadClose(0))
        ));
        assert!(matches!(
            decode(bin(&[255, 0, 1]), Codec::Binary, true),
            Err(ChannelError::BadClose(2))
        ));
        // Before v5, 255 is just a channel number.
        assert_eq!(
            decode(bin(&[255, 0]), Codec::Binary, false).unwrap(),
            Inbound::Data {
                channel: 255,
                data: Bytes::from_static(&[0])
            }
        );
    }

    #[test]
    fn base64_channels() {
        assert_eq!(
            decode(Message::text("0aGkK"), Codec::Base64, false).unwrap(),
            Inbound::Data {
                channel: 0,
                data: Bytes::from_static(b"hi\n")
            }
        );
        assert_eq!(
            encode(id::STDOUT, b"out", Codec::Base64),
            Message::text("1b3V0")
        );
        assert_eq!(encode(11, b"x", Codec::Base64), Message::text(";eA=="));
        assert_eq!(
            decode(Message::text(";eA=="), Codec::Base64, false).unwrap(),
            Inbound::Data {
                channel: 11,
                data: Bytes::from_static(b"x")
            }
        );
        assert!(matches!(
            decode(Message::text("0%%%"), Codec::Base64, false),
            Err(ChannelError::Base64(_))
        ));
        assert!(matches!(
            decode(Message::text(" aGk="), Codec::Base64, false),
            Err(ChannelError::BadChannelDigit(' '))
        ));
        assert!(matches!(
            decode(bin(b"\x00x"), Codec::Base64, false),
            Err(ChannelError::WrongKind("binary", "text"))
        ));
        assert!(matches!(
            decode(Message::text("0"), Codec::Binary, false),
            Err(ChannelError::WrongKind("text", "binary"))
        ));
    }

    #[test]
    fn control_messages() {
        assert_eq!(
            decode(Message::Ping(Bytes::new()), Codec::Binary, true).unwrap(),
            Inbound::Nothing
        );
        assert_eq!(
            decode(Message::Close(None), Codec::Binary, true).unwrap(),
            Inbound::Closed
        );
    }
}
