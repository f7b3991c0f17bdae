//! The UDP and TCP listeners. Answers from the index are made inline; forwarded queries run in
//! their own task. UDP answers larger than the client's buffer (512 bytes, or its EDNS size)
//! are truncated (TC set) so the client retries over TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::answer::{self, Outcome};
use crate::{forward, Shared};

/// A socket bound with `IP_FREEBIND`: the address may appear on the node later.
fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_freebind_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Binds UDP on `addr`.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::from_std(socket(addr, Type::DGRAM, Protocol::UDP)?.into())
}

/// Binds and listens on TCP `addr`.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

enum Reply {
    Now(Vec<u8>),
    Forward(Message),
}

fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap_or_default()
}

/// Decides what `raw` gets; `limit` is the UDP size limit, None over TCP.
fn handle(shared: &Shared, raw: &[u8], limit: Option<usize>) -> Option<Reply> {
    let req = Message::from_vec(raw).ok()?;
    let idx = shared.index.read().expect("index lock").clone();
    match answer::answer(idx.as_deref(), &shared.domain, &req, shared.ttl) {
        Outcome::Answer(m) => {
            let bytes = encode(&m);
            let max = limit.map(|l| l.max(usize::from(req.max_payload())).max(512));
            Some(Reply::Now(match max {
                Some(max) if bytes.len() > max => encode(&m.truncate()),
                _ => bytes,
            }))
        }
        Outcome::Forward if shared.upstreams.is_empty() => Some(Reply::Now(encode(
            &answer::reply(&req, ResponseCode::ServFail),
        ))),
        Outcome::Forward => Some(Reply::Forward(req)),
    }
}

fn servfail(req: &Message) -> Vec<u8> {
    encode(&answer::reply(req, ResponseCode::ServFail))
}

/// Serves UDP on `sock` until the future is dropped.
pub async fn udp(sock: UdpSocket, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let raw = &buf[..n];
        match handle(&shared, raw, Some(512)) {
            Some(Reply::Now(bytes)) => {
                let _ = sock.send_to(&bytes, peer).await;
            }
            Some(Reply::Forward(req)) => {
                let (sock, shared, raw) = (sock.clone(), shared.clone(), raw.to_vec());
                tokio::spawn(async move {
                    let reply = forward::udp(&raw, &shared.upstreams)
                        .await
                        .unwrap_or_else(|| servfail(&req));
                    let _ = sock.send_to(&reply, peer).await;
                });
            }
            None => {}
        }
    }
}

/// Serves TCP on `listener` until the future is dropped.
pub async fn tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(connection(conn, shared.clone()));
    }
}

async fn connection(mut conn: TcpStream, shared: Arc<Shared>) {
    loop {
        let Ok(len) = conn.read_u16().await else {
            return;
        };
        let mut raw = vec![0u8; usize::from(len)];
        if conn.read_exact(&mut raw).await.is_err() {
            return;
        }
        let bytes = match handle(&shared, &raw, None) {
            Some(Reply::Now(b)) => b,
            Some(Reply::Forward(req)) => forward::tcp(&raw, &shared.upstreams)
                .await
                .unwrap_or_else(|| servfail(&req)),
            None => return,
        };
        let Ok(n) = u16::try_from(bytes.len()) else {
            return;
        };
        if conn.write_all(&n.to_be_bytes()).await.is_err() || conn.write_all(&bytes).await.is_err()
        {
            return;
        }
    }
}
