use super::*;

type Headers = Vec<(Vec<u8>, Vec<u8>)>;
/// Decoded header blocks and DATA payloads, each with its stream id.
type ServerView = (Vec<(u32, Headers)>, Vec<(u32, Vec<u8>)>);

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    frame_header(payload.len(), kind, flags, stream_id, &mut f);
    f.extend_from_slice(payload);
    f
}

fn settings() -> Vec<u8> {
    // SETTINGS_ENABLE_PUSH = 0
    frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0])
}

fn data(stream_id: u32, body: &[u8]) -> Vec<u8> {
    frame(0x0, END_STREAM, stream_id, body)
}

/// A literal with incremental indexing and the static name `:authority` (index 1): the value
/// enters the dynamic table, as grpc-core sends it.
fn indexed_authority(value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x41];
    encode_string(value, &mut b);
    b
}

/// `:method POST`, `:scheme http`, `:path /runtime.v1.RuntimeService/Version` and `te`, with
/// `authority` (an HPACK fragment of the authority field) first.
fn request_block(authority: &[u8]) -> Vec<u8> {
    let mut b = authority.to_vec();
    b.push(0x83); // :method POST
    b.push(0x86); // :scheme http
    b.push(0x04); // :path, literal without indexing, indexed name 4
    encode_string(b"/runtime.v1.RuntimeService/Version", &mut b);
    b.push(0x00);
    encode_string(b"te", &mut b);
    encode_string(b"trailers", &mut b);
    b
}

/// The frames a server reads from `bytes` (after the preface): each complete header block
/// decoded with one decoder for the connection, as `h2` does; DATA payloads by stream.
fn server_view(bytes: &[u8]) -> ServerView {
    assert_eq!(&bytes[..PREFACE.len()], PREFACE);
    let mut rest = &bytes[PREFACE.len()..];
    let mut dec = loona_hpack::Decoder::new();
    let (mut blocks, mut datas) = (Vec::new(), Vec::new());
    let mut frag = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let (kind, flags) = (rest[3], rest[4]);
        let id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
        assert!(len <= MAX_FRAME, "frame of {len} bytes");
        match kind {
            HEADERS => frag.extend_from_slice(split_headers_payload(flags, payload).unwrap().1),
            CONTINUATION => frag.extend_from_slice(payload),
            0x0 => datas.push((id, payload.to_vec())),
            _ => {}
        }
        if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
            blocks.push((id, dec.decode(&frag).expect("server decodes the block")));
            frag.clear();
        }
        rest = &rest[FRAME_HEADER + len..];
    }
    (blocks, datas)
}

fn authority_of(h: &Headers) -> &[u8] {
    &h.iter().find(|(n, _)| n == b":authority").unwrap().1
}

/// Runs `input` through a rewriter in pieces of `chunk` bytes.
fn rewrite(input: &[u8], chunk: usize) -> (Vec<u8>, AuthorityRewriter) {
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        rw.feed(piece, &mut out).unwrap();
    }
    (out, rw)
}

#[test]
fn authorities_h2_accepts_and_refuses() {
    for ok in [
        "localhost",
        "localhost:50051",
        "10.0.0.1:80",
        "[::1]:1",
        "a_b",
        "x.y",
    ] {
        assert!(authority_ok(ok.as_bytes()), "{ok}");
    }
    // grpc-core >= 1.57 (absolute and `unix:///` targets), grpc-java, odd ones
    for bad in [
        "%2Frun%2Fkennel%2Fcri.sock",
        "run%2Fkennel%2Fcri.sock",
        "/run/kennel/cri.sock",
        "unix:/run/x",
        "",
        "a b",
    ] {
        assert!(!authority_ok(bad.as_bytes()), "{bad:?}");
    }
}

#[test]
fn good_authorities_pass_byte_for_byte_in_any_split() {
    // RFC 7541 C.4.1 (Huffman-coded :authority www.example.com, incremental indexing), then a
    // second request reusing the dynamic table entry (index 62).
    let c41 = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let mut input = PREFACE.to_vec();
    input.extend(settings());
    input.extend(frame(HEADERS, END_HEADERS, 1, &c41));
    input.extend(data(1, b"\0\0\0\0\0"));
    input.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &[0x82, 0x86, 0x84, 0xbe],
    ));
    for chunk in [1, 2, 7, 9, 10, 4096] {
        let (out, rw) = rewrite(&input, chunk);
        assert_eq!(out, input, "split {chunk}");
        assert_eq!(rw.rewritten(), 0);
        assert!(!rw.is_passthrough());
    }
    let (blocks, _) = server_view(&input);
    assert_eq!(authority_of(&blocks[1].1), b"www.example.com");
}

#[test]
fn bad_authority_becomes_localhost_and_later_blocks_stay_decodable() {
    let path = b"run%2Fkennel%2Fcri.sock";
    let mut input = PREFACE.to_vec();
    input.extend(settings());
    // stream 1 opens with the path in the dynamic table; stream 3 references it (index 62)
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &request_block(&indexed_authority(path)),
    ));
    input.extend(data(1, b"\0\0\0\0\0"));
    input.extend(frame(HEADERS, END_HEADERS, 3, &request_block(&[0xbe])));
    input.extend(data(3, b"\0\0\0\0\x02ab"));
    // stream 5: a fine authority, as a literal — re-encoded too, since the tables diverged
    let mut ok = vec![0x01];
    encode_string(b"localhost:1", &mut ok);
    input.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        5,
        &request_block(&ok),
    ));
    let (reference, _) = rewrite(&input, 1 << 20);
    for chunk in [1, 3, 9, 64] {
        let (out, rw) = rewrite(&input, chunk);
        assert_eq!(out, reference, "the same bytes in any split ({chunk})");
        assert_eq!(rw.rewritten(), 2);
    }
    let (blocks, datas) = server_view(&reference);
    let ids: Vec<u32> = blocks.iter().map(|b| b.0).collect();
    assert_eq!(ids, [1, 3, 5]);
    assert_eq!(authority_of(&blocks[0].1), b"localhost");
    assert_eq!(authority_of(&blocks[1].1), b"localhost");
    assert_eq!(authority_of(&blocks[2].1), b"localhost:1");
    let original = loona_hpack::Decoder::new()
        .decode(&request_block(&indexed_authority(path)))
        .unwrap();
    for (name, value) in &original {
        if name != b":authority" {
            assert!(
                blocks[0].1.contains(&(name.clone(), value.clone())),
                "{name:?}"
            );
        }
    }
    assert_eq!(blocks[0].1.len(), original.len());
    assert_eq!(
        datas,
        [(1, b"\0\0\0\0\0".to_vec()), (3, b"\0\0\0\0\x02ab".to_vec())]
    );
    // END_STREAM kept on stream 5 only
    let flags: Vec<u8> = frames(&reference)
        .into_iter()
        .filter(|f| f.0 == HEADERS)
        .map(|f| f.1 & END_STREAM)
        .collect();
    assert_eq!(flags, [0, 0, END_STREAM]);
}

/// (type, flags, stream) of each frame after the preface.
fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32)> {
    let mut rest = &bytes[PREFACE.len()..];
    let mut v = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        v.push((
            rest[3],
            rest[4],
            u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]),
        ));
        rest = &rest[FRAME_HEADER + len..];
    }
    v
}

#[test]
fn padded_prioritised_continued_blocks() {
    let block = request_block(&indexed_authority(b"/run/kennel/cri.sock"));
    let (a, b) = block.split_at(10);
    let mut payload = vec![3]; // pad length
    payload.extend([0x80, 0, 0, 0, 7]); // exclusive dependency on 0, weight 7
    payload.extend(a);
    payload.extend([0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
    let (out, rw) = rewrite(&input, 5);
    assert_eq!(rw.rewritten(), 1);
    assert_eq!(
        frames(&out),
        [(HEADERS, PRIORITY | END_STREAM | END_HEADERS, 1)]
    );
    assert_eq!(
        &out[PREFACE.len() + FRAME_HEADER..][..5],
        &[0x80, 0, 0, 0, 7]
    );
    let (blocks, _) = server_view(&out);
    assert_eq!(authority_of(&blocks[0].1), b"localhost");
}

#[test]
fn a_large_rewritten_block_is_cut_into_continuations() {
    let mut block = request_block(&indexed_authority(b"%2Fx"));
    block.push(0x00);
    encode_string(b"x-big", &mut block);
    encode_string(&vec![b'v'; 40_000], &mut block);
    let mut input = PREFACE.to_vec();
    for (i, piece) in block.chunks(MAX_FRAME).enumerate() {
        let last = (i + 1) * MAX_FRAME >= block.len();
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        input.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, piece));
    }
    let (out, _) = rewrite(&input, 1000);
    let kinds: Vec<u8> = frames(&out).iter().map(|f| f.0).collect();
    assert_eq!(kinds, [HEADERS, CONTINUATION, CONTINUATION]);
    let (blocks, _) = server_view(&out);
    assert_eq!(authority_of(&blocks[0].1), b"localhost");
    assert_eq!(blocks[0].1.last().unwrap().1.len(), 40_000);
}

#[test]
fn what_is_not_expected_http2_passes_untouched() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("HTTP/1.1", b"GET / HTTP/1.1\r\nHost: /x\r\n\r\n".to_vec()),
        ("HPACK garbage", {
            let mut v = PREFACE.to_vec();
            v.extend(frame(
                HEADERS,
                END_HEADERS,
                1,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ));
            v.extend(data(1, b"x"));
            v
        }),
        ("stray CONTINUATION", {
            let mut v = PREFACE.to_vec();
            v.extend(frame(CONTINUATION, END_HEADERS, 1, &request_block(b"")));
            v
        }),
        ("DATA inside a header block", {
            let mut v = PREFACE.to_vec();
            v.extend(frame(HEADERS, 0, 1, &indexed_authority(b"/x")));
            v.extend(data(1, b"x"));
            v.extend(frame(CONTINUATION, END_HEADERS, 1, &request_block(b"")));
            v
        }),
        ("padding longer than the frame", {
            let mut v = PREFACE.to_vec();
            v.extend(frame(HEADERS, PADDED | END_HEADERS, 1, &[200, 0x82]));
            v
        }),
    ];
    for (what, input) in cases {
        for chunk in [1, 4, 1 << 16] {
            let (out, rw) = rewrite(&input, chunk);
            assert_eq!(out, input, "{what}, split {chunk}");
            assert!(rw.is_passthrough(), "{what}");
        }
    }
}

#[test]
fn a_bad_block_after_a_rewrite_ends_the_connection() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &request_block(&indexed_authority(b"/x")),
    ));
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        3,
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ));
    let mut rw = AuthorityRewriter::new();
    let err = rw.feed(&input, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("HPACK"), "{err}");
}

#[test]
fn finish_hands_over_a_truncated_frame() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        HEADERS,
        0,
        1,
        &request_block(&indexed_authority(b"/x")),
    ));
    input.extend(&frame(CONTINUATION, END_HEADERS, 1, b"abc")[..5]);
    let (mut out, mut rw) = rewrite(&input, 7);
    assert_eq!(out, PREFACE, "the open block is held");
    rw.finish(&mut out);
    assert_eq!(out, input);
}

#[test]
fn hpack_integers() {
    let enc = |v, n| {
        let mut o = Vec::new();
        encode_integer(v, n, 0, &mut o);
        o
    };
    // RFC 7541 C.1
    assert_eq!(enc(10, 5), [10]);
    assert_eq!(enc(1337, 5), [31, 154, 10]);
    assert_eq!(enc(42, 8), [42]);
    assert_eq!(enc(127, 7), [127, 0]);
}
