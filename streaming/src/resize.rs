//! Terminal resize events: the resize stream (SPDY) or channel 4 (WebSocket) carries a sequence of
//! JSON objects `{"Width":80,"Height":24}`, read as upstream's `json.Decoder` does: one object after
//! another, however the bytes are split across frames.

use serde::{Deserialize, Serialize};

/// The most bytes of an unfinished resize object kept while waiting for its end.
const MAX_PENDING: usize = 4096;

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width", alias = "width")]
    pub width: u16,
    #[serde(rename = "Height", alias = "height")]
    pub height: u16,
}

/// Errors of the resize stream; after one, upstream stops reading resizes (the session goes on).
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error("resize event is not a terminal size object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("resize event longer than {MAX_PENDING} bytes")]
    TooLong,
}

/// Splits a byte stream into resize events.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

impl ResizeDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns every complete event they finish.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<TerminalSize>, ResizeError> {
        self.pending.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut used = 0;
        {
            let mut events =
                serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
            loop {
                match events.next() {
                    Some(Ok(size)) => {
                        sizes.push(size);
                        used = events.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(e.into()),
                    None => {
                        used = events.byte_offset();
                        break;
                    }
                }
            }
        }
        self.pending.drain(..used);
        if self.pending.len() > MAX_PENDING {
            return Err(ResizeError::TooLong);
        }
        Ok(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn size(width: u16, height: u16) -> TerminalSize {
        TerminalSize { width, height }
    }

    #[test]
    fn upstream_json() {
        let mut d = ResizeDecoder::new();
        assert_eq!(
            d.push(br#"{"Width":80,"Height":24}"#).unwrap(),
            vec![size(80, 24)]
        );
        assert_eq!(
            serde_json::to_string(&size(100, 40)).unwrap(),
            r#"{"Width":100,"Height":40}"#
        );
    }

    #[test]
    fn events_split_and_joined() {
        let mut d = ResizeDecoder::new();
        assert!(d.push(br#"{"Width":1"#).unwrap().is_empty());
        assert!(d.push(br#"20,"Heig"#).unwrap().is_empty());
        assert_eq!(
            d.push(b"ht\":50}\n{\"width\":90,\"height\":30}{\"Width\":7")
                .unwrap(),
            vec![size(120, 50), size(90, 30)]
        );
        assert_eq!(d.push(br#","Height":8}"#).unwrap(), vec![size(7, 8)]);
        assert!(d.push(b"  \n").unwrap().is_empty());
    }

    #[test]
    fn bad_events() {
        assert!(ResizeDecoder::new().push(b"true").is_err());
        assert!(ResizeDecoder::new()
            .push(br#"{"Width":70000,"Height":1}"#)
            .is_err());
        assert!(ResizeDecoder::new().push(b"hello").is_err());
        let mut d = ResizeDecoder::new();
        let long = format!(r#"{{"Width":1,"x":"{}"#, "a".repeat(MAX_PENDING));
        assert!(matches!(d.push(long.as_bytes()), Err(ResizeError::TooLong)));
    }
}
