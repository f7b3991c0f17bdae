//! Names outside the cluster domain go to the node's upstream resolvers: the client's message
//! as it came, over the transport it came on, one upstream after the other within a budget.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// The whole time a forwarded query may take before the client gets SERVFAIL.
pub const BUDGET: Duration = Duration::from_secs(2);

fn id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

fn share(upstreams: &[SocketAddr]) -> Duration {
    BUDGET / u32::try_from(upstreams.len().max(1)).unwrap_or(1)
}

/// Asks each upstream over UDP in turn; the first reply with the query's id wins.
pub async fn udp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let want = id(query)?;
    for up in upstreams {
        let local: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(sock) = UdpSocket::bind(local).await else {
            continue;
        };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        let got = timeout(share(upstreams), async {
            loop {
                let (n, from) = sock.recv_from(&mut buf).await.ok()?;
                if from == *up && id(&buf[..n]) == Some(want) {
                    return Some(buf[..n].to_vec());
                }
            }
        })
        .await;
        if let Ok(Some(reply)) = got {
            return Some(reply);
        }
        tracing::debug!(upstream = %up, "no answer");
    }
    None
}

/// Asks each upstream over TCP in turn.
pub async fn tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let len = u16::try_from(query.len()).ok()?;
    for up in upstreams {
        let got = timeout(share(upstreams), async {
            let mut s = TcpStream::connect(up).await.ok()?;
            s.write_all(&len.to_be_bytes()).await.ok()?;
            s.write_all(query).await.ok()?;
            let n = s.read_u16().await.ok()?;
            let mut buf = vec![0u8; usize::from(n)];
            s.read_exact(&mut buf).await.ok()?;
            Some(buf)
        })
        .await;
        if let Ok(Some(reply)) = got {
            return Some(reply);
        }
    }
    None
}
