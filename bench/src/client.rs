//! A minimal y-websocket client for the load generator: connect (from a
//! chosen source address), authenticate where the flavour needs it, and
//! sync.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::servers::DocTarget;
use crate::wire::{Flavor, Incoming, SYNC_STEP_1};

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// How long a handshake or sync may take before it counts as failed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Source addresses in 127.0.0.0/8, so thousands of connections never run
/// short of ephemeral ports.
pub(crate) fn source_address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        (1 + (i / 250) % 4) as u8,
        (1 + i % 250) as u8,
    ))
}

fn config() -> WebSocketConfig {
    // Small buffers: the load generator holds thousands of connections.
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// Opens the WebSocket.
pub(crate) async fn open(url: &str, source: Option<IpAddr>) -> Result<Ws> {
    Ok(open_with_response(url, source).await?.0)
}

/// Opens the WebSocket; also returns the server's handshake response (a
/// load balancer's headers say which node answered).
pub(crate) async fn open_with_response(
    url: &str,
    source: Option<IpAddr>,
) -> Result<(
    Ws,
    tokio_tungstenite::tungstenite::handshake::client::Response,
)> {
    let parsed = url
        .strip_prefix("ws://")
        .context("only ws:// URLs are supported")?;
    let authority = parsed.split('/').next().unwrap_or(parsed);
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("server address {authority} must be ip:port"))?;
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(addr).await.context("TCP connect")?;
    stream.set_nodelay(true)?;
    tokio_tungstenite::client_async_with_config(url, stream, Some(config()))
        .await
        .context("WebSocket handshake")
}

/// Authenticates (Hocuspocus) and syncs from an empty state; returns the
/// server's sync step 2 payload.
pub(crate) async fn sync(ws: &mut Ws, flavor: &Flavor) -> Result<Vec<u8>> {
    if let Some(auth) = flavor.auth("benchmark") {
        ws.send(Message::binary(auth)).await?;
        loop {
            let bytes = next_binary(ws).await?;
            match flavor.decode(&bytes)? {
                Incoming::AuthOk => break,
                Incoming::AuthDenied => bail!("authentication denied"),
                _ => {}
            }
        }
    }
    // An empty state vector: zero clients.
    ws.send(Message::binary(flavor.sync(SYNC_STEP_1, &[0])))
        .await?;
    loop {
        let bytes = next_binary(ws).await?;
        match flavor.decode(&bytes)? {
            Incoming::Step2(update) => return Ok(update.to_vec()),
            Incoming::AuthDenied => bail!("permission denied"),
            _ => {}
        }
    }
}

/// The next binary frame; errors on close.
pub(crate) async fn next_binary(ws: &mut Ws) -> Result<bytes::Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes),
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Opens and syncs one connection; returns it and the time from WebSocket
/// open to the end of sync.
pub(crate) async fn join(
    url: &str,
    doc: &DocTarget,
    source: Option<IpAddr>,
) -> Result<(Ws, Duration, Vec<u8>)> {
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut ws = open(url, source).await?;
        let opened = Instant::now();
        let state = if doc.kind.syncs() {
            sync(&mut ws, &doc.flavor).await?
        } else {
            Vec::new()
        };
        Ok((ws, opened.elapsed(), state))
    })
    .await
    .context("timed out connecting")?
}
