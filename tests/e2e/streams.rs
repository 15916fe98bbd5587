//! What one client can make the server hold: event streams that stop
//! reading, long replays, texts over their limits, bodies that trickle in,
//! and malformed query strings.

use std::time::Duration;

use commandpost_shared::AccessRole;
use commandpost_shared::limits::{NAME_CHARS, NOTE_CHARS, SUMMARY_CHARS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::sse::EventStream;
use crate::support::{TestServer, WAIT, wait_until};

async fn post_note(server: &TestServer, token: &str, text: &str) -> (u16, serde_json::Value) {
    server
        .post_json(
            "/api/incidents/INC-1/commands/post_note",
            token,
            &json!({ "text": text }),
        )
        .await
}

/// Opens a connection with a small receive buffer, asks for the event
/// stream and then never reads.
async fn stalled_stream(server: &TestServer, token: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let request = format!(
        "GET /api/incidents/INC-1/events?token={token} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the stream was refused");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_that_stops_reading_is_dropped_and_the_others_carry_on() {
    let server = TestServer::start_with(&["--ping-interval", "1s", "--commands-per-minute", "0"]);
    server.create_incident("Noisy").await;
    let token = server.token(AccessRole::Responder, "Rita");
    let _stalled = stalled_stream(&server, &token).await;
    let reader =
        EventStream::open(&server.url(&format!("/api/incidents/INC-1/events?token={token}"))).await;
    let note = "n".repeat(NOTE_CHARS);
    let mut posted = 0;
    // Enough of the largest notes to fill the socket buffers between the
    // server and the stalled client; bounded, and it stops as soon as the
    // server gave the client up.
    while !server
        .logs()
        .contains("event stream dropped: the client stopped reading")
    {
        assert!(
            posted < 4_000,
            "the server still holds a stream that has not read for {posted} notes"
        );
        for _ in 0..25 {
            let (status, body) = post_note(&server, &token, &note).await;
            assert_eq!(status, 200, "{body}");
            posted += 1;
        }
        // Let the stall timer run while the buffers are full.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The reading stream missed nothing: the declaration, then every note.
    let events = reader.events.clone();
    wait_until("the reading stream to get every note", || {
        events.lock().len() == posted + 1
    })
    .await;
    let seqs: Vec<u64> = events
        .lock()
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=posted as u64 + 1).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_is_replayed_in_order_from_any_point() {
    let server = TestServer::start_with(&["--commands-per-minute", "0"]);
    server.create_incident("Long").await;
    let token = server.token(AccessRole::Responder, "Rita");
    for n in 0..60 {
        let (status, _) = post_note(&server, &token, &format!("note {n}")).await;
        assert_eq!(status, 200);
    }
    for after in [0u64, 17] {
        let stream = EventStream::open(&server.url(&format!(
            "/api/incidents/INC-1/events?token={token}&after={after}"
        )))
        .await;
        let events = stream.events.clone();
        wait_until("the whole backlog", || {
            events.lock().len() as u64 == 61 - after
        })
        .await;
        let seqs: Vec<u64> = events
            .lock()
            .iter()
            .map(|event| event["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (after + 1..=61).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_over_their_limits_are_refused_naming_the_field() {
    let server = TestServer::start();
    server.create_incident("Limits").await;
    let token = server.token(AccessRole::Admin, "Ada");
    let (status, body) = post_note(&server, &token, &"x".repeat(NOTE_CHARS + 1)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["message"],
        format!(
            "`text` is {} characters; the limit is {NOTE_CHARS}",
            NOTE_CHARS + 1
        )
    );
    let (status, body) = post_note(&server, &token, &"é".repeat(NOTE_CHARS)).await;
    assert_eq!(
        status, 200,
        "the limit counts characters, not bytes: {body}"
    );

    let next = (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
    for (command, body) in [
        (
            "pin_status",
            json!({"summary": "s".repeat(SUMMARY_CHARS + 1), "next_update_by": next}),
        ),
        (
            "assign_role",
            json!({"role": "operations_lead", "to": {"id": "ops", "name": "n".repeat(NAME_CHARS + 1)}}),
        ),
        (
            "record_change",
            json!({"what": "w".repeat(2_000), "revert": "r"}),
        ),
    ] {
        let (status, answer) = server
            .post_json(
                &format!("/api/incidents/INC-1/commands/{command}"),
                &token,
                &body,
            )
            .await;
        assert_eq!(status, 422, "{command}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the limit is"),
            "{command}: {answer}"
        );
    }
    let (status, body) = server
        .post_json(
            "/api/incidents",
            &token,
            &json!({"title": "t", "summary": "s".repeat(SUMMARY_CHARS + 1)}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    // A body far beyond any command: 413, in the JSON error shape.
    let (status, body) = post_note(&server, &token, &"x".repeat(200 * 1024)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body", "{body}");
    // Nothing of it was stored.
    let (_, timeline) = server
        .get_json("/api/incidents/INC-1/timeline", &token)
        .await;
    assert_eq!(
        timeline["events"].as_array().unwrap().len(),
        2,
        "{timeline}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_query_strings_get_the_json_error_shape() {
    let server = TestServer::start();
    server.create_incident("Queries").await;
    let token = server.token(AccessRole::Viewer, "Val");
    for path in [
        "/api/incidents/INC-1/timeline?limit=abc".to_owned(),
        "/api/incidents/INC-1/timeline?after=-1".to_owned(),
        format!("/api/incidents/INC-1/events?after=-1&token={token}"),
    ] {
        let response = reqwest::Client::new()
            .get(server.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{path}: {body}");
    }
}

/// Sends a POST whose headers promise `length` bytes of body, and the first
/// byte of it.
async fn trickling_post(server: &TestServer, token: &str, length: usize) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/incidents/INC-1/commands/post_note HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_timed_out_and_counted_against_its_token() {
    let server = TestServer::start();
    server.create_incident("Slow").await;
    let token = server.token(AccessRole::Responder, "Sid");
    let mut slow = trickling_post(&server, &token, 100).await;
    // Keep trickling until the server answers; it must answer 408.
    let mut answer = Vec::new();
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < WAIT,
            "a trickling body was never timed out"
        );
        let mut chunk = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(500), slow.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
            Ok(Err(_)) => break,
            Err(_) => {
                let _ = slow.write_all(b" ").await;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");

    // Such requests count against the token: once 32 are being read, the
    // next one is refused.
    let mut held = Vec::new();
    for _ in 0..commandpost::limits::BODIES_PER_TOKEN {
        held.push(trickling_post(&server, &token, 100).await);
    }
    let metrics_url = server.url("/metrics");
    let mut reading = 0.0;
    while reading < commandpost::limits::BODIES_PER_TOKEN as f64 {
        assert!(
            started.elapsed() < WAIT * 2,
            "the server never held every body"
        );
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        reading = text
            .lines()
            .find_map(|line| line.strip_prefix("commandpost_request_bodies_reading "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0);
        tokio::task::yield_now().await;
    }
    let (status, refused) = post_note(&server, &token, "at last").await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(
        refused["error"]["code"], "too_many_requests_for_token",
        "{refused}"
    );
    // Another token is not affected.
    let other = server.token(AccessRole::Responder, "Ola");
    let (status, _) = post_note(&server, &other, "unaffected").await;
    assert_eq!(status, 200);
    drop(held);
}
