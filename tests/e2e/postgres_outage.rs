//! PostgreSQL itself stopped (`pg_ctl stop -m immediate`, as a crash) and
//! started again while two stock Yjs clients type: `/readyz` goes 503 and
//! back, nothing acknowledged is lost, what was typed meanwhile is not
//! acknowledged but kept by the clients and saved once the database
//! returns, the clients converge without a reload, and the server process
//! never exits.
//!
//! The test stops its own PostgreSQL server (not the one the other tests
//! of this process share).

use commandpost_shared::AccessRole;
use serde_json::json;

use crate::support::node::NodeClient;
use crate::support::test_postgres::PgServer;
use crate::support::yclient::{Connect, YClient};
use crate::support::{TestServer, wait_until};

const SAVED: Connect = Connect {
    saved_acks: true,
    client_id: None,
};

async fn ready(server: &TestServer) -> u16 {
    reqwest::get(server.url("/readyz"))
        .await
        .map_or(0, |response| response.status().as_u16())
}

/// Waits until `/readyz` answers `status`.
async fn wait_ready(server: &TestServer, status: u16) {
    let started = std::time::Instant::now();
    while ready(server).await != status {
        assert!(
            started.elapsed() < crate::support::WAIT,
            "timed out waiting for /readyz to answer {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until both stock clients hold the same text, containing `parts`.
async fn wait_converged(a: &mut NodeClient, b: &mut NodeClient, parts: &[&str]) -> String {
    let started = std::time::Instant::now();
    loop {
        let (text_a, text_b) = (a.text().await, b.text().await);
        if text_a == text_b && parts.iter().all(|part| text_a.contains(part)) {
            return text_a;
        }
        assert!(
            started.elapsed() < crate::support::WAIT,
            "the stock clients did not converge on {parts:?}:\n{text_a:?}\n{text_b:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_nothing_acknowledged_and_clients_converge_without_reload() {
    let database = PgServer::start().unwrap_or_else(|error| panic!("{error}"));
    let url = database.create_database();
    // A short pool wait, so that writes during the outage fail soon.
    let mut server = TestServer::start_on_url(&url, &["--store-timeout", "2s"]);
    let incident = server.create_incident("Database outage").await;
    let room = incident.to_string();
    let ada = server.token(AccessRole::Responder, "Ada");
    let bob = server.token(AccessRole::Responder, "Bob");
    let mut stock_a = NodeClient::spawn().await;
    let mut stock_b = NodeClient::spawn().await;
    stock_a.connect(&server.ws_base(), &room, &ada).await;
    stock_b.connect(&server.ws_base(), &room, &bob).await;

    // Before: typed, and acknowledged as saved (the stock client has no
    // acknowledgements; a yrs client asking for them stands in).
    stock_a.insert(0, "A before. ").await;
    stock_b.insert(0, "B before. ").await;
    let witness = YClient::connect_with(&server.ws_url(&incident, &ada), SAVED).await;
    wait_converged(&mut stock_a, &mut stock_b, &["A before. ", "B before. "]).await;
    witness.push("\nsaved before the outage");
    witness.wait_saved().await;
    let acknowledged_before = witness.saved();
    let note = server
        .command(&room, &ada, "post_note", json!({"text": "note before"}))
        .await;
    assert_eq!(note.0, 200, "{}", note.1);
    assert_eq!(ready(&server).await, 200);

    database.stop_immediate();
    wait_ready(&server, 503).await;

    // During: edits are not acknowledged, commands fail.
    witness.push("\nwitness edit during the outage");
    let (code, reason) = witness.wait_closed().await;
    assert!(
        code == 1011 || code == 1012,
        "an unsaved edit closes with a retryable code, got {code} {reason}"
    );
    assert_eq!(
        witness.saved(),
        acknowledged_before,
        "nothing typed during the outage is acknowledged"
    );
    let (status, body) = server
        .command(&room, &ada, "post_note", json!({"text": "note during"}))
        .await;
    assert!(
        status >= 500,
        "a command during the outage fails: {status} {body}"
    );
    stock_a.insert(0, "A during. ").await;
    stock_b.insert(0, "B during. ").await;
    assert!(server.is_running(), "the server process exited");
    assert_eq!(ready(&server).await, 503);

    database.restart();
    wait_ready(&server, 200).await;

    // After: the stock clients reconnect by themselves, hand back what the
    // server did not save, and converge without a reload.
    wait_converged(
        &mut stock_a,
        &mut stock_b,
        &["A before. ", "B before. ", "A during. ", "B during. "],
    )
    .await;
    let (status, body) = server
        .command(&room, &ada, "post_note", json!({"text": "note after"}))
        .await;
    assert_eq!(status, 200, "{body}");
    stock_a.insert(0, "A after. ").await;
    wait_converged(&mut stock_a, &mut stock_b, &["A after. "]).await;
    // A saved acknowledgement after everything above: all of it is durable.
    let after = YClient::connect_with(&server.ws_url(&incident, &ada), SAVED).await;
    wait_until("the yrs client to hold the converged text", || {
        after.read().contains("A after. ")
    })
    .await;
    after.push("\nsaved after the outage");
    after.wait_saved().await;
    let expected = after.read();
    drop(after);
    assert!(server.is_running(), "the server process exited");
    assert!(
        !server.logs().contains("panicked"),
        "the server panicked:\n{}",
        server.logs()
    );

    // Everything acknowledged survives a crash of the server.
    server.kill9();
    server.restart();
    let reader = YClient::connect(&server.ws_url(&incident, &bob)).await;
    let text = reader.read();
    assert_eq!(text, expected);
    for part in [
        "saved before the outage",
        "A before. ",
        "B before. ",
        "A during. ",
        "B during. ",
        "A after. ",
        "saved after the outage",
    ] {
        assert!(text.contains(part), "{part:?} lost: {text:?}");
    }
    let (status, timeline) = server
        .get_json(&format!("/api/incidents/{room}/timeline?limit=1000"), &ada)
        .await;
    assert_eq!(status, 200, "{timeline}");
    let timeline = timeline.to_string();
    assert!(timeline.contains("note before"), "{timeline}");
    assert!(timeline.contains("note after"), "{timeline}");
    assert!(!timeline.contains("note during"), "{timeline}");
    stock_a.quit().await;
    stock_b.quit().await;
}
