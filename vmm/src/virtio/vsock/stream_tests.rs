//! Byte-exact streams through the muxer and the queue logic, without KVM: rx chains split over
//! several descriptors of odd sizes, short writes to a slow host reader, SHUTDOWN with data
//! still pending, and the control queue's cap (issue 23).

use super::event::{drain_tx, fill_rx};
use super::muxer::{Muxer, FIRST_DYNAMIC_TOKEN, LISTENER_TOKEN, MAX_CONTROL};
use super::packet::{
    Header, HEADER_LEN, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST,
    OP_RW, OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use crate::virtio::testutil::{get, memory, put, TestQueue, WRITE};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use vmm_sys_util::epoll::{Epoll, EpollEvent};

const CID: u64 = 3;
const GUEST_PORT: u32 = 1000;
const HOST_PORT: u32 = 5000;
const BUFS: u64 = 0x10_0000;

/// Bytes without zero runs, so a zero-filled hole shows.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8) | 1
        })
        .collect()
}

struct Rig {
    _dir: tempfile::TempDir,
    muxer: Muxer,
    host: UnixStream,
    _listener: UnixListener,
}

/// A muxer with one guest-initiated connection (guest port 1000 → host listener `_5000`).
fn rig(guest_buf_alloc: u32) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let listener = UnixListener::bind(&uds).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port_listener = UnixListener::bind(format!("{}_{HOST_PORT}", uds.display())).unwrap();
    let epoll = Epoll::new().unwrap();
    let mut muxer = Muxer::new(CID, uds, listener, epoll);
    muxer.handle_guest_packet(super::packet::Packet {
        hdr: guest_hdr(OP_REQUEST, 0, guest_buf_alloc, 0),
        data: vec![],
    });
    let (host, _) = port_listener.accept().unwrap();
    let resp = muxer.next_for_guest(0).expect("RESPONSE queued");
    assert_eq!(resp.hdr.op, OP_RESPONSE);
    Rig {
        _dir: dir,
        muxer,
        host,
        _listener: port_listener,
    }
}

fn guest_hdr(op: u16, len: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: 2,
        src_port: GUEST_PORT,
        dst_port: HOST_PORT,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc,
        fwd_cnt,
    }
}

/// Delivers pending epoll readiness to the muxer, as the worker does.
fn pump(m: &mut Muxer) {
    let mut events = vec![EpollEvent::default(); 16];
    let n = m.epoll().wait(0, &mut events).unwrap();
    for ev in &events[..n] {
        match ev.data() {
            LISTENER_TOKEN => m.accept(),
            t if t >= FIRST_DYNAMIC_TOKEN => m.stream_event(t, ev.event_set()),
            _ => {}
        }
    }
}

/// Rx chain layouts (descriptor lengths): the header alone, split headers, tiny tails.
const LAYOUTS: &[&[u32]] = &[
    &[4096],
    &[44, 4052],
    &[16, 28, 100, 3952],
    &[45],
    &[10, 34, 1, 7, 64],
    &[44, 16, 16, 16],
    &[4000, 96],
    &[3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 8, 100],
];

/// Posts one round of rx chains, runs the rx logic and returns the packets the guest got,
/// reassembled from its descriptors.
fn rx_round(
    mem: &crate::memory::GuestMemoryMmap,
    m: &mut Muxer,
    round: usize,
) -> Vec<(Header, Vec<u8>)> {
    let mut tq = TestQueue::new(mem, 256);
    let mut chains = Vec::new();
    let mut addr = BUFS;
    for i in 0..8 {
        let layout = LAYOUTS[(round + i) % LAYOUTS.len()];
        let descs: Vec<(u64, u32, u16)> = layout
            .iter()
            .map(|&len| {
                let d = (addr, len, WRITE);
                // Leave a gap so a write past a descriptor's end lands outside every buffer.
                addr += u64::from(len) + 64;
                d
            })
            .collect();
        tq.add(&descs);
        chains.push(descs);
    }
    let mut q = tq.queue();
    fill_rx(mem, &mut q, m);
    let mut got = Vec::new();
    for i in 0..tq.used_idx() {
        let (id, len) = tq.used(i);
        let chain = chain_of(&chains, id as usize);
        let mut bytes = Vec::new();
        for &(a, l, _) in chain {
            bytes.extend(get(mem, a, l as usize));
        }
        bytes.truncate(len as usize);
        assert!(
            bytes.len() >= HEADER_LEN,
            "used length {len} shorter than a header"
        );
        let h = Header::decode(&bytes).unwrap();
        assert_eq!(
            h.len as usize + HEADER_LEN,
            len as usize,
            "used length and header length"
        );
        got.push((h, bytes[HEADER_LEN..].to_vec()));
    }
    got
}

/// The chain whose head descriptor index is `head`.
fn chain_of(chains: &[Vec<(u64, u32, u16)>], head: usize) -> &[(u64, u32, u16)] {
    let mut idx = 0;
    for c in chains {
        if idx == head {
            return c;
        }
        idx += c.len();
    }
    panic!("no chain with head {head}");
}

#[test]
fn host_to_guest_stream_is_exact_over_split_descriptors_and_short_writes() {
    let mut r = rig(64 * 1024);
    r.host.set_nonblocking(true).unwrap();
    let sent = pattern(300_001, 1);
    let mut off = 0;
    let mut got = Vec::new();
    let mut fwd_cnt = 0u32;
    let mem = memory();
    for round in 0..20_000 {
        // Short writes of odd sizes, as much as the socket takes.
        while off < sent.len() {
            let n = [1, 4095, 17, 4097, 65536, 3][round % 6].min(sent.len() - off);
            match r.host.write(&sent[off..off + n]) {
                Ok(k) => off += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            if round % 3 == 0 {
                break;
            }
        }
        pump(&mut r.muxer);
        for (h, data) in rx_round(&mem, &mut r.muxer, round) {
            assert_eq!((h.src_port, h.dst_port), (HOST_PORT, GUEST_PORT));
            if h.op == OP_RW {
                got.extend_from_slice(&data);
            }
        }
        // The guest consumes everything and says so now and then.
        if round % 4 == 0 && fwd_cnt != got.len() as u32 {
            fwd_cnt = got.len() as u32;
            r.muxer.handle_guest_packet(super::packet::Packet {
                hdr: guest_hdr(OP_CREDIT_UPDATE, 0, 64 * 1024, fwd_cnt),
                data: vec![],
            });
        }
        if got.len() == sent.len() {
            break;
        }
    }
    assert_eq!(got.len(), sent.len(), "bytes delivered");
    if let Some(at) = got.iter().zip(&sent).position(|(a, b)| a != b) {
        panic!("stream differs from byte {at}");
    }
}

#[test]
fn guest_to_host_stream_is_exact_with_a_slow_reader() {
    let mut r = rig(64 * 1024);
    let sent = pattern(1 << 20, 2);
    let mem = memory();
    let mut off = 0usize;
    let mut got = Vec::new();
    let mut credit_fwd = 0u32;
    // The RESPONSE advertised the host's buffer.
    let mut credit_alloc = super::conn::BUF_ALLOC;
    let mut buf = vec![0u8; 65536];
    r.host.set_nonblocking(true).unwrap();
    let mut stalled = false;
    for round in 0..20_000 {
        // The guest sends within the host's credit, each packet split over descriptors.
        let in_flight = off as u32 - credit_fwd;
        let credit = credit_alloc.saturating_sub(in_flight) as usize;
        stalled |= credit == 0;
        if credit == 0 && round % 50 == 0 {
            // A stalled guest asks, as Linux does.
            r.muxer.handle_guest_packet(super::packet::Packet {
                hdr: guest_hdr(OP_CREDIT_REQUEST, 0, 64 * 1024, 0),
                data: vec![],
            });
        }
        let n = [4052, 1, 65536, 333, 4097][round % 5]
            .min(sent.len() - off)
            .min(credit);
        if n > 0 || off == sent.len() {
            let mut tq = TestQueue::new(&mem, 16);
            let hdr = guest_hdr(OP_RW, n as u32, 64 * 1024, 0).encode();
            let mut bytes = hdr.to_vec();
            bytes.extend_from_slice(&sent[off..off + n]);
            // Header split 20/24+some data, then the rest.
            let cut1 = 20;
            let cut2 = (HEADER_LEN + 7).min(bytes.len());
            put(&mem, BUFS, &bytes[..cut1]);
            put(&mem, BUFS + 0x2_0000, &bytes[cut1..cut2]);
            put(&mem, BUFS + 0x4_0000, &bytes[cut2..]);
            let mut descs = vec![
                (BUFS, cut1 as u32, 0),
                (BUFS + 0x2_0000, (cut2 - cut1) as u32, 0),
            ];
            if bytes.len() > cut2 {
                descs.push((BUFS + 0x4_0000, (bytes.len() - cut2) as u32, 0));
            }
            if n > 0 {
                tq.add(&descs);
                let mut q = tq.queue();
                drain_tx(&mem, &mut q, &mut r.muxer, CID);
                off += n;
            }
        }
        // The host reads nothing for a while (the guest runs out of credit), then in pieces.
        if round > 200 {
            let piece = if off == sent.len() { 3 } else { round % 4 };
            match r.host.read(&mut buf[..[4096, 7, 1, 65536][piece]]) {
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        pump(&mut r.muxer);
        for (h, _) in rx_round(&mem, &mut r.muxer, round) {
            assert_ne!(h.op, OP_RST, "the muxer reset the connection");
            credit_alloc = h.buf_alloc;
            credit_fwd = h.fwd_cnt;
        }
        if got.len() == sent.len() {
            break;
        }
    }
    assert!(stalled, "the guest never ran out of credit");
    assert_eq!(got.len(), sent.len());
    if let Some(at) = got.iter().zip(&sent).position(|(a, b)| a != b) {
        panic!("stream differs from byte {at}");
    }
}

#[test]
fn shutdown_waits_for_pending_data() {
    let mut r = rig(64 * 1024);
    let mem = memory();
    // Far more than the host socket buffers hold: the muxer keeps the rest pending.
    let sent = pattern(200_000, 3);
    let mut off = 0;
    while off < sent.len() {
        let n = 60_000.min(sent.len() - off);
        let mut bytes = guest_hdr(OP_RW, n as u32, 64 * 1024, 0).encode().to_vec();
        bytes.extend_from_slice(&sent[off..off + n]);
        put(&mem, BUFS, &bytes);
        let mut tq = TestQueue::new(&mem, 16);
        tq.add(&[(BUFS, bytes.len() as u32, 0)]);
        drain_tx(&mem, &mut tq.queue(), &mut r.muxer, CID);
        off += n;
    }
    let mut h = guest_hdr(OP_SHUTDOWN, 0, 64 * 1024, 0);
    h.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    r.muxer.handle_guest_packet(super::packet::Packet {
        hdr: h,
        data: vec![],
    });
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        r.host.read_to_end(&mut v).unwrap();
        v
    });
    for _ in 0..10_000 {
        pump(&mut r.muxer);
        if reader.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let got = reader.join().unwrap();
    assert_eq!(
        got.len(),
        sent.len(),
        "bytes before SHUTDOWN reach the host"
    );
    assert!(got == sent);
}

#[test]
fn the_control_queue_is_capped() {
    let mut r = rig(64 * 1024);
    // A guest that floods packets for unknown connections and never posts rx buffers.
    for i in 0..(3 * MAX_CONTROL as u32) {
        let mut h = guest_hdr(OP_CREDIT_REQUEST, 0, 0, 0);
        h.src_port = 20_000 + i;
        r.muxer.handle_guest_packet(super::packet::Packet {
            hdr: h,
            data: vec![],
        });
    }
    assert_eq!(r.muxer.control_len(), MAX_CONTROL);
    assert_eq!(r.muxer.control_dropped(), 2 * MAX_CONTROL as u64);
    // A credit request on the live connection past the cap closes it on the host side.
    r.muxer.handle_guest_packet(super::packet::Packet {
        hdr: guest_hdr(OP_CREDIT_REQUEST, 0, 0, 0),
        data: vec![],
    });
    let mut b = [0u8; 1];
    assert_eq!(r.host.read(&mut b).unwrap(), 0, "host stream closed");
}
