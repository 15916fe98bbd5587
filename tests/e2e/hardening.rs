//! Hardening: web security, revocation, limits, dead peers, shutdown,
//! readiness, metrics and backups, each against the real binary.

use std::time::{Duration, Instant};

use commandpost_shared::AccessRole;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::yclient::{Connect, YClient};
use crate::support::{Store as Backend, TestServer, wait_until};

fn jti(server: &TestServer, token: &str) -> String {
    server.keys().verify(token).unwrap().jti
}

/// Opens a WebSocket with an `Origin` header; the HTTP status when refused.
async fn upgrade_status(url: &str, origin: Option<&str>) -> u16 {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(error) => panic!("unexpected error: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_served_with_security_headers_and_foreign_origins_cannot_open_sockets() {
    let server = TestServer::start_with(&["--allowed-origin", "https://status.example.com"]);
    for path in ["/", "/incidents/INC-1", "/api/incidents", "/healthz"] {
        let response = reqwest::get(server.url(path)).await.unwrap();
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            csp.contains("script-src 'self';"),
            "{path}: no inline script: {csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }

    let incident = server.create_incident("Origins").await;
    let url = server.ws_url(&incident, &server.token(AccessRole::Viewer, "Vic"));
    let own = format!("http://{}", server.addr);
    assert_eq!(upgrade_status(&url, None).await, 101, "non-browser clients");
    assert_eq!(upgrade_status(&url, Some(&own)).await, 101, "same origin");
    assert_eq!(
        upgrade_status(&url, Some("https://status.example.com")).await,
        101,
        "allow-listed origin"
    );
    assert_eq!(
        upgrade_status(&url, Some("https://evil.example")).await,
        403
    );
    assert!(server.logs().contains("origin_not_allowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_the_logs() {
    let server = TestServer::start_logging("debug,commandpost=trace", &[]);
    let incident = server.create_incident("Quiet logs").await;
    let responder = server.token(AccessRole::Responder, "Ada");
    let viewer = server.token(AccessRole::Viewer, "Vic");
    let expired = {
        let mut claims = server.keys().verify(&viewer).unwrap();
        claims.exp = claims.iat - 10;
        server.keys().sign(&claims)
    };
    // A document socket and an event stream with ?token=, API calls with a
    // bearer header, and refused attempts with bad tokens in both places.
    let editor = YClient::connect(&server.ws_url(&incident, &responder)).await;
    editor.push("hello");
    let (status, _) = server
        .post_json(
            &format!("/api/incidents/{incident}/commands/post_note"),
            &responder,
            &serde_json::json!({ "text": "a note" }),
        )
        .await;
    assert_eq!(status, 200);
    let stream =
        reqwest::get(server.url(&format!("/api/incidents/{incident}/events?token={viewer}")))
            .await
            .unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);
    let refused = reqwest::get(server.url(&format!("/api/me?token={expired}")))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let _ = tokio_tungstenite::connect_async(server.ws_url(&incident, &expired)).await;
    let _ = tokio_tungstenite::connect_async(server.ws_url(&incident, "not.a.jwt")).await;
    editor.close();
    wait_until("the server logged the requests", || {
        server.logs().contains("expired")
    })
    .await;
    let logs = server.logs();
    assert!(logs.lines().count() > 10, "debug logging must be on");
    for token in [&responder, &viewer, &expired] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(token.as_str()), "a token is in the logs");
        assert!(
            !logs.contains(signature),
            "a token signature is in the logs"
        );
    }
    // JWTs start with `eyJ`; the help text may mention `?token=` itself.
    let leaking: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("token=eyJ") || l.contains("token=not."))
        .collect();
    assert!(
        leaking.is_empty(),
        "a ?token= query is in the logs: {leaking:#?}"
    );
}

crate::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_revoked_token_is_refused_and_its_live_connections_close_within_a_second,
    revocation_closes_connections_and_survives_a_restart
);
async fn revocation_closes_connections_and_survives_a_restart(store: Backend) {
    let mut server = TestServer::start_on(store);
    let incident = server.create_incident("Revocation").await;
    let admin = server.token(AccessRole::Admin, "Admin");
    let viewer = server.token(AccessRole::Viewer, "Vic");
    let other = server.token(AccessRole::Viewer, "Val");
    let revoked_socket = YClient::connect(&server.ws_url(&incident, &viewer)).await;
    let bystander = YClient::connect(&server.ws_url(&incident, &other)).await;
    let mut events =
        reqwest::get(server.url(&format!("/api/incidents/{incident}/events?token={viewer}")))
            .await
            .unwrap()
            .bytes_stream();

    // Only an admin may revoke.
    let id = jti(&server, &viewer);
    let (status, _) = server
        .post_json(
            &format!("/api/tokens/{id}/revoke"),
            &other,
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 403);
    let started = Instant::now();
    let (status, body) = server
        .post_json(
            &format!("/api/tokens/{id}/revoke"),
            &admin,
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jti"], id.as_str());
    let (code, reason) = revoked_socket.wait_closed().await;
    let closed_after = started.elapsed();
    assert_eq!(code, 4401, "{reason}");
    assert!(
        closed_after < Duration::from_secs(1),
        "the socket closed {closed_after:?} after the revocation"
    );
    // The event stream ends too.
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = events.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream must end within a second");
    // Others are unaffected.
    assert!(bystander.seen.lock().closed.is_none());

    // New attempts are refused, before and after a restart.
    for restart in [false, true] {
        if restart {
            server.terminate();
            server.restart();
        }
        let (status, body) = server.get_json("/api/me", &viewer).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "revoked_token");
        let refused = tokio_tungstenite::connect_async(server.ws_url(&incident, &viewer)).await;
        assert!(refused.is_err(), "a revoked token must not open a socket");
        let (status, _) = server.get_json("/api/me", &other).await;
        assert_eq!(status, 200);
    }
    let (_, listed) = server.get_json("/api/tokens/revoked", &admin).await;
    assert_eq!(listed[0]["jti"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_revokes_a_token() {
    let server = TestServer::start();
    let admin = server.token(AccessRole::Admin, "Admin");
    let viewer = server.token(AccessRole::Viewer, "Vic");
    let id = jti(&server, &viewer);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_commandpost"))
        .args(["token", "revoke", &id])
        .env("COMMANDPOST_SERVER", server.url(""))
        .env("COMMANDPOST_TOKEN", &admin)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&id));
    let (status, _) = server.get_json("/api/me", &viewer).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_extra_sockets_and_free_slots_on_close() {
    let server =
        TestServer::start_with(&["--max-connections", "3", "--max-connections-per-token", "2"]);
    let incident = server.create_incident("Limits").await;
    // The per-token limit is for tokens that can write; read-only share
    // links are bounded by the total (see share::a_viewer_link_admits_…).
    let writer = server.token(AccessRole::Responder, "Writer");
    let url = server.ws_url(&incident, &writer);
    let first = YClient::connect(&url).await;
    let _second = YClient::connect(&url).await;
    assert_eq!(
        upgrade_status(&url, None).await,
        429,
        "third socket for one token"
    );
    let other = server.ws_url(&incident, &server.token(AccessRole::Viewer, "Other"));
    let _third = YClient::connect(&other).await;
    let fourth = server.ws_url(&incident, &server.token(AccessRole::Viewer, "Fourth"));
    assert_eq!(
        upgrade_status(&fourth, None).await,
        503,
        "server-wide limit"
    );
    // Closing one frees its slot.
    first.close();
    let mut status = 0;
    for _ in 0..200 {
        status = upgrade_status(&fourth, None).await;
        if status == 101 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 101, "a closed connection must free its slot");
    let logs = server.logs();
    assert!(logs.contains("per-token connection limit reached"));
    assert!(logs.contains("server connection limit reached"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_beyond_the_rate_limit_are_refused_and_nothing_is_lost() {
    let server = TestServer::start_with(&["--commands-per-minute", "6", "--command-burst", "3"]);
    let incident = server.create_incident("Rate").await;
    let ada = server.token(AccessRole::Responder, "Ada");
    let bob = server.token(AccessRole::Responder, "Bob");
    let path = format!("/api/incidents/{incident}/commands/post_note");
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..6 {
        let text = format!("note {i}");
        let (status, body) = server
            .post_json(&path, &ada, &serde_json::json!({ "text": text }))
            .await;
        match status {
            200 => accepted.push(text),
            429 => {
                refused = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let refused = refused.expect("the burst of 3 must run out within 6 notes");
    assert_eq!(refused["error"]["code"], "rate_limited");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retry in")
    );
    assert!(accepted.len() >= 3);
    // Another token is not limited by Ada's use.
    let (status, _) = server
        .post_json(&path, &bob, &serde_json::json!({ "text": "bob's note" }))
        .await;
    assert_eq!(status, 200);
    let (_, page) = server
        .get_json(
            &format!("/api/incidents/{incident}/timeline?limit=1000"),
            &ada,
        )
        .await;
    let timeline = page.to_string();
    for text in &accepted {
        assert!(timeline.contains(text.as_str()), "{text} is missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_document_refuses_edits_and_stays_readable() {
    let server = TestServer::start_with(&["--max-document-bytes", "60000"]);
    let incident = server.create_incident("Size").await;
    let editor = YClient::connect_with(
        &server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada")),
        Connect {
            saved_acks: true,
            client_id: None,
        },
    )
    .await;
    let chunk = "x".repeat(8 * 1024);
    // Change numbers the server acknowledges count every change message
    // this client sent, its initial sync included.
    let base = *editor.changes_sent.lock();
    let mut pushed = 0;
    let (code, reason) = loop {
        editor.push(&format!("[{pushed}]{chunk}"));
        pushed += 1;
        assert!(pushed < 20, "the size limit was never enforced");
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(closed) = editor.seen.lock().closed.clone() {
            break closed;
        }
    };
    assert_eq!(code, 4413, "{reason}");
    assert!(reason.contains("size limit"), "{reason}");
    let saved = editor.seen.lock().saved;
    assert!(saved >= 1, "edits before the limit were saved");
    // Readers still get the document, with everything that was saved.
    let viewer =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Viewer, "Vic"))).await;
    let text = viewer.read();
    let saved_edits = saved.saturating_sub(base).min(pushed);
    assert!(saved_edits >= 1, "edits before the limit were saved");
    for i in 0..saved_edits as usize {
        assert!(
            text.contains(&format!("[{i}]")),
            "saved edit {i} is missing"
        );
    }
    assert!(server.logs().contains("document size limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_no_request_is_disconnected_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(&["--handshake-timeout", "500ms"]);
    // One client sends nothing; another starts a request and stalls.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    trickle
        .write_all(b"GET /api/me HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for (name, stream) in [("silent", &mut silent), ("trickling", &mut trickle)] {
        let mut buffer = [0u8; 512];
        // The server closes the connection (EOF, or a 408 then EOF).
        let closed = tokio::time::timeout(crate::support::WAIT, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the {name} connection must be closed");
    }
    // Normal requests are unaffected.
    assert_eq!(
        reqwest::get(server.url("/healthz")).await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_is_dropped_by_ping_and_its_cursor_removed() {
    let server =
        TestServer::start_with(&["--ping-interval", "200ms", "--room-idle-timeout", "100ms"]);
    let incident = server.create_incident("Dead peers").await;
    let url = server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada"));
    let dead = YClient::connect(&url).await;
    let watcher = YClient::connect(&url).await;
    dead.send_awareness(4242, 1, r#"{"user":{"name":"Ada"}}"#);
    let seen = watcher.seen.clone();
    wait_until("the watcher sees the peer's cursor", || {
        seen.lock()
            .awareness
            .get(&4242)
            .is_some_and(|s| s != "null")
    })
    .await;
    // The peer stops reading (so it answers no ping) but keeps its socket.
    dead.pause_reading();
    wait_until("the dead peer's cursor is removed", || {
        seen.lock()
            .awareness
            .get(&4242)
            .is_some_and(|s| s == "null")
    })
    .await;
    assert!(server.logs().contains("peer stopped answering pings"));
    assert!(
        watcher.seen.lock().closed.is_none(),
        "live peers stay connected"
    );
    // With everyone gone, the room unloads.
    watcher.close();
    wait_until("the empty room unloads", || {
        server.logs().contains("room unloaded after idle timeout")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_with_1012_exits_0_promptly_and_the_restart_replays_no_log() {
    let mut server = TestServer::start();
    let incident = server.create_incident("Shutdown").await;
    let editor = YClient::connect_with(
        &server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada")),
        Connect {
            saved_acks: true,
            client_id: None,
        },
    )
    .await;
    for i in 0..50 {
        editor.push(&format!("<{i}>"));
    }
    editor.wait_saved().await;
    let expected = editor.read();
    let started = Instant::now();
    let status = server.terminate();
    let took = started.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    let (code, _) = editor.wait_closed().await;
    assert_eq!(code, 1012);
    let logs = server.logs();
    assert!(logs.contains("compacted document logs"));
    assert!(logs.contains("shut down cleanly"));

    server.restart();
    let viewer =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Viewer, "Vic"))).await;
    viewer.wait_text(&expected).await;
    let logs = server.logs();
    let loaded: Vec<&str> = logs.lines().filter(|l| l.contains("room loaded")).collect();
    let last = loaded
        .last()
        .expect("the room was loaded after the restart");
    assert!(
        last.contains("log_updates=0"),
        "the restart replayed a log: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_metrics_report_what_happens() {
    let server = TestServer::start();
    assert_eq!(
        reqwest::get(server.url("/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let incident = server.create_incident("Metrics").await;
    let ada = server.token(AccessRole::Responder, "Ada");
    let editor = YClient::connect_with(
        &server.ws_url(&incident, &ada),
        Connect {
            saved_acks: true,
            client_id: None,
        },
    )
    .await;
    let _viewer =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Viewer, "Vic"))).await;
    editor.push("metrics");
    editor.wait_saved().await;
    let (status, _) = server
        .post_json(
            &format!("/api/incidents/{incident}/commands/post_note"),
            &ada,
            &serde_json::json!({ "text": "counted" }),
        )
        .await;
    assert_eq!(status, 200);
    let response = reqwest::get(server.url("/metrics")).await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    let text = response.text().await.unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no `{line_start}` in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("commandpost_connections{role=\"editor\"}"), 1.0);
    assert_eq!(value("commandpost_connections{role=\"viewer\"}"), 1.0);
    assert_eq!(value("commandpost_rooms_loaded"), 1.0);
    assert!(value("commandpost_updates_total") >= 1.0);
    assert!(value("commandpost_bytes_out_total") > 0.0);
    assert!(value("commandpost_events_total{event_type=\"note_posted\"}") >= 1.0);
    assert!(value("commandpost_store_flush_seconds_count") >= 1.0);
    for name in [
        "commandpost_lagging_resyncs_total",
        "commandpost_overdue_updates_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    editor.close();
    let seen = editor.seen.clone();
    wait_until("editor closed", || seen.lock().ended).await;
    let started = Instant::now();
    while server
        .metric("commandpost_disconnects_total{reason=\"peer\"}")
        .await
        != Some(1.0)
    {
        assert!(
            started.elapsed() < crate::support::WAIT,
            "the editor's disconnect is never counted"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

crate::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    an_online_backup_restores_into_a_working_server,
    online_backup_restores
);
async fn online_backup_restores(store: Backend) {
    let server = TestServer::start_on(store);
    let incident = server.create_incident("Backed up").await;
    let ada = server.token(AccessRole::Responder, "Ada");
    let admin = server.token(AccessRole::Admin, "Admin");
    let editor = YClient::connect_with(
        &server.ws_url(&incident, &ada),
        Connect {
            saved_acks: true,
            client_id: None,
        },
    )
    .await;
    editor.push("safe and sound");
    editor.wait_saved().await;
    let expected = editor.read();
    let (status, _) = server
        .post_json(
            &format!("/api/incidents/{incident}/commands/post_note"),
            &ada,
            &serde_json::json!({ "text": "before the backup" }),
        )
        .await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.gz");
    let cli = |args: &[&str], token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_commandpost"))
            .args(args)
            .env("COMMANDPOST_SERVER", server.url(""))
            .env("COMMANDPOST_TOKEN", token)
            .output()
            .unwrap()
    };
    // Viewers and responders cannot take backups.
    let refused = cli(&["backup", "--out", file.to_str().unwrap()], &ada);
    assert!(!refused.status.success());
    // While the server keeps running and taking edits.
    let output = cli(&["backup", "--out", file.to_str().unwrap()], &admin);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    editor.push(" (after)");
    // Restored into a new data directory, or on PostgreSQL into a new,
    // empty database; a second restore into it is refused.
    let restored = dir.path().join("restored");
    let target: Vec<String> = match store {
        Backend::Sled => vec!["--data".into(), restored.to_str().unwrap().into()],
        Backend::Postgres => vec![
            "--store".into(),
            crate::support::test_postgres::fresh_database(),
        ],
    };
    let mut args = vec!["restore", "--from", file.to_str().unwrap()];
    args.extend(target.iter().map(String::as_str));
    let output = cli(&args, &admin);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let again = cli(&args, &admin);
    assert!(!again.status.success());
    let refusal = String::from_utf8_lossy(&again.stderr);
    assert!(
        refusal.contains("already exists") || refusal.contains("already holds data"),
        "{refusal}"
    );

    // A server on the restored store (same secret) has the incident, its
    // text as of the backup and its timeline.
    let served = crate::support::Served::start(&target, server.secret());
    let addr = served.addr;
    let viewer_token = server.token(AccessRole::Viewer, "Vic");
    let url = format!("ws://{addr}/ws/{incident}?token={viewer_token}");
    let viewer = YClient::connect(&url).await;
    viewer.wait_text(&expected).await;
    let timeline: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/incidents/{incident}/timeline?limit=1000"
        ))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(timeline.to_string().contains("before the backup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_incident_and_connection_of_each_socket() {
    let server = TestServer::start_with(&["--log-format", "json"]);
    let incident = server.create_incident("Structured logs").await;
    let client =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada")))
            .await;
    client.close();
    wait_until("the connection's lines are logged", || {
        server.logs().contains("disconnected")
    })
    .await;
    let logs = server.logs();
    let mut socket_lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON log line ({error}): {line}"));
        if value["fields"]["message"] == "connected" || value["fields"]["message"] == "disconnected"
        {
            socket_lines += 1;
            let span = &value["span"];
            assert_eq!(span["incident"], incident.to_string(), "{line}");
            assert!(
                span["conn"].as_u64().is_some() || span["conn"].as_str().is_some(),
                "{line}"
            );
        }
    }
    assert_eq!(socket_lines, 2, "{logs}");
}
