//! Measures the time from a handoff acceptance to its arrival at connected
//! viewers' live event streams (Server-Sent Events), on loopback.
//!
//! ```text
//! cargo run --release -p commandpost --example handoff_fanout [-- --viewers 100 --rounds 50]
//! ```
//!
//! Each round, the current commander offers command to the other responder,
//! who accepts; the clock starts just before the accept request is sent and
//! stops when each viewer has parsed the `handoff_accepted` event.

use std::time::{Duration, Instant};

use commandpost::config::ServerConfig;
use commandpost::server::Server;
use commandpost_shared::AccessRole;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let viewers = arg("--viewers", 100);
    let rounds = arg("--rounds", 50);
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().expect("a UTF-8 temporary path");
    let mut config = ServerConfig::from_args(["--data", data])?;
    config.secret = Some("handoff-fanout-benchmark-secret-0123456789".into());
    let server = Server::new(config)?;
    let keys = server.keys().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.serve(listener, shutdown.clone()));

    let ttl = Duration::from_secs(3600);
    let people = [
        (
            "alice",
            keys.mint("alice", "Alice", AccessRole::Responder, None, ttl),
        ),
        (
            "bob",
            keys.mint("bob", "Bob", AccessRole::Responder, None, ttl),
        ),
    ];
    let client = reqwest::Client::new();
    // Commands may only name people the server knows: each uses it once.
    for (_, token) in &people {
        client
            .get(format!("{base}/api/me"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?;
    }
    let declared: Value = client
        .post(format!("{base}/api/incidents"))
        .bearer_auth(&people[0].1)
        .json(&json!({"title": "Handoff fan-out"}))
        .send()
        .await?
        .json()
        .await?;
    let incident = declared["id"]
        .as_str()
        .expect("a declared incident has an id")
        .to_owned();

    let (arrivals, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    for v in 0..viewers {
        let token = keys.mint(
            &format!("viewer{v}"),
            "Viewer",
            AccessRole::Viewer,
            None,
            ttl,
        );
        let response = client
            .get(format!(
                "{base}/api/incidents/{incident}/events?token={token}&after=1"
            ))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "viewer {v} refused");
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                for data in commandpost::client::take_sse_data(&mut buffer) {
                    let event: Value = serde_json::from_str(&data).expect("events are JSON");
                    if event["type"] == "handoff_accepted" {
                        let _ = arrivals.send((
                            event["handoff"]
                                .as_u64()
                                .expect("a handoff event names its handoff"),
                            Instant::now(),
                        ));
                    }
                }
            }
        });
    }

    let mut latencies = Vec::with_capacity(viewers * rounds);
    for round in 0..rounds {
        let (from, to) = (&people[round % 2], &people[(round + 1) % 2]);
        let offered: Value = client
            .post(format!("{base}/api/incidents/{incident}/commands/offer_handoff"))
            .bearer_auth(&from.1)
            .json(&json!({"role": "incident_commander", "to": {"id": to.0, "name": to.0}, "notes": ""}))
            .send()
            .await?
            .json()
            .await?;
        let handoff = offered["events"][0]["handoff"]
            .as_u64()
            .unwrap_or_else(|| panic!("the offer was refused: {offered}"));
        let started = Instant::now();
        let accepted = client
            .post(format!(
                "{base}/api/incidents/{incident}/commands/accept_handoff"
            ))
            .bearer_auth(&to.1)
            .json(&json!({"handoff": handoff}))
            .send()
            .await?;
        anyhow::ensure!(accepted.status() == 200, "accept failed");
        let mut count = 0;
        while count < viewers {
            let (id, at) = tokio::time::timeout(Duration::from_secs(30), arrived.recv())
                .await?
                .expect("viewers alive");
            if id == handoff {
                latencies.push(at.duration_since(started));
                count += 1;
            }
        }
    }
    latencies.sort();
    let pick =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    println!(
        "handoff acceptance to {viewers} viewers over {rounds} handoffs ({} deliveries): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    shutdown.cancel();
    serving.await??;
    Ok(())
}
