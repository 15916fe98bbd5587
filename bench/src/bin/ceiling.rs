//! The ceiling server: relays every binary WebSocket frame to every other
//! connection on the same path. No CRDT work, no authentication, no storage.
//! It measures what this machine can relay at all, for the fan-out scenario.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

#[derive(Parser)]
#[command(about = "Relay-only WebSocket server: the benchmark's ceiling")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<(u64, Bytes)>>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening {}", listener.local_addr()?);
    let rooms: Rooms = Arc::default();
    let mut next = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        next += 1;
        let id = next;
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut path = String::new();
            // The error type is tungstenite's; its size is not ours to pick.
            #[allow(clippy::result_large_err)]
            let callback = |request: &Request, response: Response| {
                path = request.uri().path().to_owned();
                Ok(response)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                return;
            };
            let sender = rooms
                .lock()
                .expect("the room map lock is never poisoned: nothing panics holding it")
                .entry(path)
                .or_insert_with(|| broadcast::channel(1024).0)
                .clone();
            let mut inbox = sender.subscribe();
            let (mut sink, mut stream) = ws.split();
            loop {
                tokio::select! {
                    frame = stream.next() => match frame {
                        Some(Ok(Message::Binary(bytes))) => {
                            let _ = sender.send((id, bytes));
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    received = inbox.recv() => match received {
                        Ok((from, bytes)) => {
                            if from != id && sink.feed(Message::Binary(bytes)).await.is_err() {
                                return;
                            }
                            // Feed whatever else is queued, then flush once.
                            while let Ok((from, bytes)) = inbox.try_recv() {
                                if from != id && sink.feed(Message::Binary(bytes)).await.is_err() {
                                    return;
                                }
                            }
                            if sink.flush().await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
    }
}
