//! SPDY/3 name/value header blocks: the block layout (a count, then length-prefixed names and
//! values; several values of one name are joined by NUL) and the zlib streams that carry them. Each
//! direction of a connection has one zlib stream, primed with the SPDY/3 dictionary and flushed
//! (Z_SYNC_FLUSH) at the end of every block, so a decoder must see every block of its direction in
//! order, including those of frames it otherwise ignores.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::dictionary;

/// The most bytes one decompressed header block may take (upstream clients send a few dozen).
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Errors of header blocks and their compression.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("zlib: {0}")]
    Zlib(String),
    #[error("the header block asks for zlib dictionary {0:#010x}, not SPDY/3's")]
    WrongDictionary(u32),
    #[error("the header block's zlib stream ended")]
    StreamEnded,
    #[error("decompressed header block larger than {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    #[error("header block truncated: {0}")]
    Truncated(&'static str),
    #[error("header block has {0} trailing bytes")]
    Trailing(usize),
    #[error("header name is empty or not UTF-8")]
    BadName,
    #[error("header value of {0:?} is not UTF-8")]
    BadValue(String),
}

/// The headers of a SYN_STREAM, SYN_REPLY or HEADERS frame, in wire order. Names are lowercase
/// (upper case in a peer's block is folded); a value of several NUL-joined values becomes one entry
/// per value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (compared without regard to case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Adds one value.
    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// The uncompressed block: names in first-seen order, values of a name joined by NUL.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut names: Vec<&str> = Vec::new();
        for (n, _) in &self.0 {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(names.len() as u32).to_be_bytes());
        for name in names {
            let values: Vec<&str> = self
                .0
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            let value = values.join("\0");
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Parses an uncompressed block.
    pub fn decode_block(block: &[u8]) -> Result<Headers, HeaderError> {
        let mut rest = block;
        let count = take_u32(&mut rest, "pair count")? as usize;
        // Every pair takes at least 8 bytes: refuse a count the block cannot hold before allocating.
        if count > rest.len() / 8 {
            return Err(HeaderError::Truncated("fewer pairs than counted"));
        }
        let mut headers = Headers(Vec::with_capacity(count));
        for _ in 0..count {
            let name = take_str(&mut rest, "name")?;
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| !n.is_empty())
                .ok_or(HeaderError::BadName)?
                .to_ascii_lowercase();
            let value = take_str(&mut rest, "value")?;
            let value =
                std::str::from_utf8(value).map_err(|_| HeaderError::BadValue(name.clone()))?;
            for v in value.split('\0') {
                headers.0.push((name.clone(), v.to_string()));
            }
        }
        if !rest.is_empty() {
            return Err(HeaderError::Trailing(rest.len()));
        }
        Ok(headers)
    }
}

fn take_u32(rest: &mut &[u8], what: &'static str) -> Result<u32, HeaderError> {
    if rest.len() < 4 {
        return Err(HeaderError::Truncated(what));
    }
    let (head, tail) = rest.split_at(4);
    *rest = tail;
    Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
}

fn take_str<'a>(rest: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], HeaderError> {
    let len = take_u32(rest, what)? as usize;
    if rest.len() < len {
        return Err(HeaderError::Truncated(what));
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

/// Compresses the header blocks of one direction.
pub struct HeaderEncoder {
    z: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderEncoder {
    /// A fresh zlib stream primed with the SPDY/3 dictionary.
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // A fresh stream always takes a dictionary; a failure here would be a zlib bug.
        if let Err(e) = z.set_dictionary(dictionary()) {
            tracing::error!("SPDY header compressor refused its dictionary: {e}");
        }
        Self { z }
    }

    /// Compresses one block, ending it with a sync flush.
    pub fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, HeaderError> {
        let input = headers.encode_block();
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            consumed += (self.z.total_in() - before) as usize;
            // Done once every input byte is in and zlib left room in the output (nothing pending).
            if consumed == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decompresses the header blocks of one direction.
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecoder {
    /// A decoder for a fresh zlib stream.
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    /// Decompresses one block's bytes and parses the block.
    pub fn decode(&mut self, input: &[u8]) -> Result<Headers, HeaderError> {
        let block = self.inflate(input)?;
        Headers::decode_block(&block)
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            let result = self
                .z
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.z.total_in() - before_in) as usize;
            match result {
                Ok(Status::Ok) | Ok(Status::BufError) => {}
                Ok(Status::StreamEnd) => {
                    if consumed < input.len() {
                        return Err(HeaderError::StreamEnded);
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(id) => {
                        let want = self
                            .z
                            .set_dictionary(dictionary())
                            .map_err(|e| HeaderError::Zlib(e.to_string()))?;
                        if id != want {
                            return Err(HeaderError::WrongDictionary(id));
                        }
                        continue;
                    }
                    None => return Err(HeaderError::Zlib(e.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(HeaderError::TooLarge);
            }
            let progressed = self.z.total_in() != before_in || self.z.total_out() != before_out;
            if consumed == input.len() && (out.len() < out.capacity() || !progressed) {
                return Ok(out);
            }
            if !progressed {
                return Err(HeaderError::Zlib("no progress".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3s() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert_eq!(&dict[..11], b"\0\0\0\x07options");
        assert!(dict.ends_with(b",utf-,*,enq=0."));
        // The id every SPDY/3 header stream's zlib header names.
        let mut z = Compress::new(Compression::default(), true);
        assert_eq!(z.set_dictionary(dict).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn block_round_trip_with_multiple_values() {
        let mut h = Headers::default();
        h.push("X-Stream-Protocol-Version", "v4.channel.k8s.io");
        h.push("x-stream-protocol-version", "v3.channel.k8s.io");
        h.push("streamType", "stdin");
        let block = h.encode_block();
        // Two names; the first with both values NUL-joined.
        assert_eq!(&block[..4], &2u32.to_be_bytes());
        assert!(block
            .windows(35)
            .any(|w| w == b"v4.channel.k8s.io\0v3.channel.k8s.io"));
        assert_eq!(Headers::decode_block(&block).unwrap(), h);

        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        for _ in 0..3 {
            let wire = enc.encode(&h).unwrap();
            // Sync-flushed: every block ends with the empty stored block.
            assert!(wire.ends_with(&[0, 0, 0xff, 0xff]));
            assert_eq!(dec.decode(&wire).unwrap(), h);
        }
    }

    #[test]
    fn empty_block() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        let wire = enc.encode(&Headers::default()).unwrap();
        assert_eq!(dec.decode(&wire).unwrap(), Headers::default());
    }

    #[test]
    fn oversized_blocks_are_refused() {
        let mut h = Headers::default();
        h.push("big", &"x".repeat(MAX_HEADER_BLOCK + 1));
        let wire = HeaderEncoder::new().encode(&h).unwrap();
        assert!(matches!(
            HeaderDecoder::new().decode(&wire),
            Err(HeaderError::TooLarge)
        ));
    }
}
