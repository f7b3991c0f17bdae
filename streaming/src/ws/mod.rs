//! WebSocket (RFC 6455, via tungstenite): the channel framing, exec and attach, kubelet's
//! port-forward protocol, and the SPDY-over-WebSocket tunnel of port-forward.

pub mod channel;
pub(crate) mod exec;
pub(crate) mod portforward;
pub mod tunnel;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::limits::Limits;

/// Wraps an upgraded connection (the 101 answer already sent) as the server side of a WebSocket.
pub async fn accept<T>(io: T, limits: &Limits) -> WebSocketStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // A message is one channel byte (or base64 of) the largest frame.
    let max = limits.max_frame_len.saturating_mul(4) / 3 + 16;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}
