//! Accepting any `:authority` on the CRI socket.
//!
//! An HTTP/2 client dialling a Unix socket has no host to name, so clients invent one: grpc-go
//! (kubelet, crictl) sends `localhost`, grpc-core 1.57 and later (Python, Ruby, C++ `grpcio`)
//! the socket path percent-encoded (`%2Frun%2Fkennel%2Fcri.sock`, or `run%2Fkennel%2Fcri.sock`
//! for `unix:///…` targets), grpc-java and grpc-swift the raw path. The `h2` crate under tonic
//! rejects a request whose `:authority` is not a valid URI authority with RST_STREAM
//! PROTOCOL_ERROR before any tonic or tower code sees it, and has no setting to relax that
//! (hyperium/h2#487, #619). The authority means nothing on a Unix socket, so kennel-cri rewrites
//! it on the way in: [`AuthorityRewriter`] sits on the bytes a client sends, decodes each
//! header block with its own HPACK decoder (tracking the client's dynamic table), and when a
//! block's `:authority` is not one `h2` accepts, re-encodes that block with the authority
//! `localhost`. Every other byte — the preface, SETTINGS, DATA, blocks without a bad authority
//! — passes through unchanged.
//!
//! Once one block has been rewritten, the server's HPACK table no longer mirrors the client's,
//! so every later block of that connection is re-encoded too, as literals that never touch the
//! server's dynamic table. Input that is not HTTP/2 as expected (another preface, a header
//! block HPACK cannot decode before anything was rewritten) is handed over untouched and the
//! rewriter steps aside, so `h2` answers it as it would have; a decoding failure after a
//! rewrite closes the connection ([`RewriteError`]).

use std::borrow::Cow;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length.
const FRAME_HEADER: usize = 9;
/// Frame types.
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
/// Frame flags.
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Rewritten blocks are cut into frames of at most the protocol's minimum SETTINGS_MAX_FRAME_SIZE,
/// which every server accepts.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is passed on untouched (`h2`'s header list limit is far
/// below it, so it refuses the block itself).
const MAX_BLOCK: usize = 1 << 20;
/// The dynamic table size the server allows the client's encoder (`h2`'s default; kennel-cri
/// does not change SETTINGS_HEADER_TABLE_SIZE).
const SERVER_TABLE_SIZE: usize = 4096;
/// What a rejected authority becomes.
pub const REPLACEMENT: &[u8] = b"localhost";

/// A client's header block could not be decoded after an earlier block was rewritten: the
/// connection cannot continue.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 header block from the client: {0}")]
pub struct RewriteError(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the connection preface (this many bytes matched so far).
    Preface(usize),
    /// Reading frames.
    Frames,
    /// Everything passes through.
    Passthrough,
}

/// The HEADERS frame that opened the block being collected.
struct OpenBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    /// The frames as received (HEADERS + CONTINUATIONs), to pass on unchanged.
    raw: Vec<u8>,
    /// The concatenated header block fragments.
    fragment: Vec<u8>,
}

/// Rewrites the client-to-server byte stream of one HTTP/2 connection (see the module docs).
pub struct AuthorityRewriter {
    phase: Phase,
    /// Received bytes not yet processed.
    pending: Vec<u8>,
    /// Payload bytes of a non-header frame still to copy through.
    skip: usize,
    block: Option<OpenBlock>,
    decoder: loona_hpack::Decoder<'static>,
    /// A block of this connection has been re-encoded.
    rewriting: bool,
    rewritten: u64,
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityRewriter {
    /// A rewriter for a new connection.
    pub fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(SERVER_TABLE_SIZE);
        Self {
            phase: Phase::Preface(0),
            pending: Vec::new(),
            skip: 0,
            block: None,
            decoder,
            rewriting: false,
            rewritten: 0,
        }
    }

    /// How many header blocks had their `:authority` replaced.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Whether the rewriter has stepped aside for the rest of the connection.
    pub fn is_passthrough(&self) -> bool {
        self.phase == Phase::Passthrough
    }

    /// Takes `input` (any split of the stream) and appends what the server should read to `out`.
    /// Bytes of an incomplete frame header or header block are held until the rest arrives.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.phase == Phase::Passthrough {
            out.extend_from_slice(input);
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        let mut at = 0;
        let r = self.process(&mut at, out);
        self.pending.drain(..at);
        r
    }

    /// The connection ended: whatever is held (a truncated frame) is handed over as it is.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.raw);
        }
        out.append(&mut self.pending);
        self.phase = Phase::Passthrough;
    }

    fn step_aside(&mut self, at: &mut usize, out: &mut Vec<u8>) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.raw);
        }
        out.extend_from_slice(&self.pending[*at..]);
        *at = self.pending.len();
        self.phase = Phase::Passthrough;
    }

    fn process(&mut self, at: &mut usize, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        loop {
            let rest = &self.pending[*at..];
            match self.phase {
                Phase::Passthrough => {
                    out.extend_from_slice(rest);
                    *at = self.pending.len();
                    return Ok(());
                }
                Phase::Preface(seen) => {
                    let n = rest.len().min(PREFACE.len() - seen);
                    if rest[..n] != PREFACE[seen..seen + n] {
                        self.step_aside(at, out);
                        return Ok(());
                    }
                    out.extend_from_slice(&rest[..n]);
                    *at += n;
                    if seen + n < PREFACE.len() {
                        self.phase = Phase::Preface(seen + n);
                        return Ok(());
                    }
                    self.phase = Phase::Frames;
                }
                Phase::Frames if self.skip > 0 => {
                    let n = rest.len().min(self.skip);
                    out.extend_from_slice(&rest[..n]);
                    *at += n;
                    self.skip -= n;
                    if self.skip > 0 {
                        return Ok(());
                    }
                }
                Phase::Frames => {
                    if rest.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
                    let kind = rest[3];
                    let is_header = kind == HEADERS || kind == CONTINUATION;
                    if !is_header {
                        if self.block.is_some() {
                            // A frame inside a header block: the server refuses the connection.
                            self.step_aside(at, out);
                            return Ok(());
                        }
                        out.extend_from_slice(&rest[..FRAME_HEADER]);
                        *at += FRAME_HEADER;
                        self.skip = len;
                        continue;
                    }
                    let collected = self.block.as_ref().map_or(0, |b| b.raw.len());
                    if collected + FRAME_HEADER + len > MAX_BLOCK {
                        self.step_aside(at, out);
                        return Ok(());
                    }
                    if rest.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame = rest[..FRAME_HEADER + len].to_vec();
                    *at += frame.len();
                    if let Some(raw) = self.header_frame(frame, out)? {
                        out.extend_from_slice(&raw);
                        self.step_aside(at, out);
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Handles one complete HEADERS or CONTINUATION frame. `Some(raw)` means the rewriter must
    /// step aside: `raw` (the open block and this frame, as received) goes on first.
    fn header_frame(
        &mut self,
        frame: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Vec<u8>>, RewriteError> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        let mut block = match (kind, self.block.take()) {
            (HEADERS, None) => match split_headers_payload(flags, payload) {
                Some((priority, fragment)) => OpenBlock {
                    stream_id,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                    raw: frame,
                },
                None => return Ok(Some(frame)),
            },
            (CONTINUATION, Some(mut b)) if b.stream_id == stream_id => {
                b.fragment.extend_from_slice(payload);
                b.raw.extend_from_slice(&frame);
                b
            }
            // HEADERS inside a block, or a stray CONTINUATION: a protocol error for the server.
            (_, open) => {
                let mut raw = open.map(|b| b.raw).unwrap_or_default();
                raw.extend_from_slice(&frame);
                return Ok(Some(raw));
            }
        };
        if flags & END_HEADERS == 0 {
            self.block = Some(block);
            return Ok(None);
        }
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let decoded = self
            .decoder
            .decode_with_cb(&block.fragment, |n: Cow<[u8]>, v: Cow<[u8]>| {
                headers.push((n.into_owned(), v.into_owned()))
            });
        if let Err(e) = decoded {
            if self.rewriting {
                return Err(RewriteError(format!("HPACK: {e}")));
            }
            return Ok(Some(block.raw));
        }
        let mut changed = false;
        for (name, value) in headers.iter_mut() {
            if name.as_slice() == b":authority" && !authority_ok(value) {
                *value = REPLACEMENT.to_vec();
                changed = true;
            }
        }
        if changed {
            self.rewritten += 1;
        }
        if changed || self.rewriting {
            self.rewriting = true;
            write_block(&block, &encode_literals(&headers), out);
        } else {
            out.append(&mut block.raw);
        }
        Ok(None)
    }
}

/// Whether `h2` accepts `value` as a request's `:authority`.
pub fn authority_ok(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// The priority fields and the header block fragment of a HEADERS payload; None if padding
/// or priority do not fit.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(<[u8; 5]>::try_from(p.get(..5)?).ok()?);
        p = &p[5..];
    }
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

/// HPACK: every field as a literal without indexing, with a literal name (RFC 7541 §6.2.2).
fn encode_literals(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        encode_string(name, &mut out);
        encode_string(value, &mut out);
    }
    out
}

/// An HPACK string literal without Huffman coding (§5.2).
fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_integer(s.len(), 7, 0x00, out);
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix (§5.1); `first` holds the bits above the prefix.
fn encode_integer(mut v: usize, n: u32, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn frame_header(len: usize, kind: u8, flags: u8, stream_id: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// A HEADERS frame (and CONTINUATIONs) carrying `encoded` for `block`'s stream.
fn write_block(block: &OpenBlock, encoded: &[u8], out: &mut Vec<u8>) {
    let prio_len = if block.priority.is_some() { 5 } else { 0 };
    let first = encoded.len().min(MAX_FRAME - prio_len);
    let mut flags = 0;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if first == encoded.len() {
        flags |= END_HEADERS;
    }
    frame_header(first + prio_len, HEADERS, flags, block.stream_id, out);
    if let Some(p) = &block.priority {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&encoded[..first]);
    let mut rest = &encoded[first..];
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let flags = if n == rest.len() { END_HEADERS } else { 0 };
        frame_header(n, CONTINUATION, flags, block.stream_id, out);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
