//! Awareness abuse (issue 11): presence and cursors are per connection,
//! named by the token, bounded in size and relayed at a bounded rate,
//! against the real binary.

use commandpost_shared::{AccessRole, IncidentId};
use serde_json::json;

use crate::support::node::NodeClient;
use crate::support::yclient::YClient;
use crate::support::{TestServer, wait_until};

const VERA: u64 = 1_001;
const MALLORY: u64 = 2_002;

fn url(server: &TestServer, incident: &IncidentId, role: AccessRole, name: &str) -> String {
    server.ws_url(incident, &server.token(role, name))
}

/// Waits until `client` has received a state for `id` that `accept`s.
async fn wait_state(
    client: &YClient,
    id: u64,
    what: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
) {
    wait_until(what, || {
        client.awareness_state(id).is_some_and(|s| accept(&s))
    })
    .await;
}

/// The red team's impostor: one responder renamed another's cursor
/// "IMPOSTOR" and could remove it. Now a connection only sets and removes
/// the client ids it introduced, and every name is the token's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_cannot_rename_or_remove_another_responders_cursor() {
    let server = TestServer::start();
    let incident = server.create_incident("Impostor").await;
    let vera = YClient::connect(&url(&server, &incident, AccessRole::Responder, "Vera")).await;
    let mallory =
        YClient::connect(&url(&server, &incident, AccessRole::Responder, "Mallory")).await;
    let observer = YClient::connect(&url(&server, &incident, AccessRole::Viewer, "Olga")).await;
    vera.send_awareness(VERA, 1, r##"{"user":{"name":"Vera","color":"#0a0"}}"##);
    wait_state(&observer, VERA, "Vera's cursor", |_| true).await;

    // Mallory overwrites Vera's state, removes it, then announces her own
    // under Vera's name. The server handles one socket's messages in
    // order, so once her own state arrives the first two were handled.
    mallory.send_awareness(VERA, 2, r#"{"user":{"name":"IMPOSTOR"}}"#);
    mallory.send_awareness(VERA, 3, "null");
    mallory.send_awareness(MALLORY, 1, r##"{"user":{"name":"Vera","color":"#f00"}}"##);
    wait_state(&observer, MALLORY, "Mallory's own cursor", |_| true).await;

    let own = observer.awareness_state(MALLORY).unwrap();
    assert_eq!(own["user"]["name"], "Mallory", "{own}");
    assert_eq!(own["user"]["id"], "mallory", "{own}");
    assert_eq!(own["user"]["color"], "#f00", "the client's colour is kept");
    let victim = observer
        .awareness_state(VERA)
        .expect("Vera's cursor is still shown");
    assert_eq!(victim["user"]["name"], "Vera", "{victim}");
    assert_eq!(victim["user"]["color"], "#0a0", "{victim}");
    // A joiner's greeting says the same.
    let late = YClient::connect(&url(&server, &incident, AccessRole::Viewer, "Lee")).await;
    wait_state(&late, MALLORY, "the greeting", |_| true).await;
    assert_eq!(late.awareness_state(VERA).unwrap()["user"]["name"], "Vera");
    assert_eq!(
        late.awareness_state(MALLORY).unwrap()["user"]["name"],
        "Mallory"
    );
    // Refused entries are dropped with a log line; nobody is disconnected.
    assert!(mallory.seen.lock().closed.is_none());
    assert!(vera.seen.lock().closed.is_none());
    let logs = server.logs();
    assert!(
        logs.contains("dropped an awareness state for a client id another connection owns"),
        "{logs}"
    );
    assert!(logs.contains("tried to remove"), "{logs}");
}

/// Stock y-websocket clients send every awareness update they receive back
/// to the server: that echo must neither be refused nor rename anyone, and
/// the name shown comes from the token whatever the client set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_clients_cursor_is_named_by_its_token_and_echoes_are_harmless() {
    let server = TestServer::start();
    let incident = server.create_incident("Stock names").await;
    let room = incident.to_string();
    let mut ada = NodeClient::spawn().await;
    let mut bob = NodeClient::spawn().await;
    let token = |name| server.token(AccessRole::Responder, name);
    let ada_id = ada.connect(&server.ws_base(), &room, &token("Ada")).await;
    let bob_id = bob.connect(&server.ws_base(), &room, &token("Bob")).await;
    ada.ok(
        json!({"cmd": "set_awareness", "state": {"user": {"name": "Not Ada", "color": "#c33"}}}),
    )
    .await;
    bob.ok(
        json!({"cmd": "wait_awareness", "client_id": ada_id, "present": true, "timeout_ms": 20000}),
    )
    .await;
    // Bob echoed Ada's state when it arrived; his own state comes after it
    // on the same socket, so once Ada sees his, the echo was handled.
    bob.ok(json!({"cmd": "set_awareness", "state": {"user": {"name": "Bob", "color": "#33c"}}}))
        .await;
    ada.ok(
        json!({"cmd": "wait_awareness", "client_id": bob_id, "present": true, "timeout_ms": 20000}),
    )
    .await;
    let states = bob.ok(json!({"cmd": "awareness"})).await;
    let state = states["states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry[0].as_u64() == Some(ada_id))
        .expect("Ada's state reached Bob")[1]
        .clone();
    assert_eq!(state["user"]["name"], json!("Ada"), "{state}");
    assert_eq!(state["user"]["id"], json!("ada"), "{state}");
    assert_eq!(state["user"]["color"], json!("#c33"), "{state}");
    let logs = server.logs();
    assert!(
        !logs.contains("another connection owns"),
        "an echo was treated as spoofing:\n{logs}"
    );
    ada.quit().await;
    bob.quit().await;
}

/// The red team's 16 MB message announced 15,000 fake clients that every
/// joiner then received. Now a connection introduces at most a few client
/// ids with a bounded state each; beyond that it is closed with 4400 and
/// nothing of the message applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_crowds_and_huge_states_close_with_4400_and_apply_nothing() {
    let server = TestServer::start();
    let incident = server.create_incident("Crowd").await;
    let vera = YClient::connect(&url(&server, &incident, AccessRole::Responder, "Vera")).await;
    vera.send_awareness(VERA, 1, r#"{"user":{"name":"Vera"}}"#);

    let crowd = YClient::connect(&url(&server, &incident, AccessRole::Responder, "Crowd")).await;
    let fakes: Vec<(u64, u32, String)> = (0..15_000u64)
        .map(|i| {
            (
                50_000 + i,
                1,
                format!(r#"{{"user":{{"name":"fake {i}"}}}}"#),
            )
        })
        .collect();
    crowd.send_awareness_entries(&fakes);
    let (code, reason) = crowd.wait_closed().await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.contains("client ids"), "{reason}");

    let big = YClient::connect(&url(&server, &incident, AccessRole::Responder, "Big")).await;
    let state = format!(
        r#"{{"user":{{"name":"Big"}},"pad":"{}"}}"#,
        "x".repeat(64 * 1024)
    );
    big.send_awareness(MALLORY, 1, &state);
    let (code, reason) = big.wait_closed().await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.contains("bytes"), "{reason}");

    // A joiner's greeting holds Vera and nobody else; Vera is unaffected.
    let late = YClient::connect(&url(&server, &incident, AccessRole::Viewer, "Lee")).await;
    wait_state(&late, VERA, "Vera in the greeting", |_| true).await;
    let seen = late.seen.lock();
    let shown: Vec<&u64> = seen
        .awareness
        .iter()
        .filter(|(_, json)| json.as_str() != "null")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(shown, [&VERA], "only Vera is shown");
    assert!(vera.seen.lock().closed.is_none());
}

/// The red team's 5,700–10,000 awareness messages a second were all
/// relayed. Now a connection's changes are relayed at most
/// `--awareness-per-second` times a second; what arrives in between is
/// coalesced, and the latest state still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awareness_flood_is_coalesced_and_the_latest_state_still_arrives() {
    let server = TestServer::start_with(&["--awareness-per-second", "2"]);
    let incident = server.create_incident("Flood").await;
    let flood = YClient::connect(&url(&server, &incident, AccessRole::Responder, "Flo")).await;
    let observer = YClient::connect(&url(&server, &incident, AccessRole::Viewer, "Olga")).await;
    let sent = 200u32;
    for clock in 1..=sent {
        flood.send_awareness(
            MALLORY,
            clock,
            &format!(r#"{{"user":{{"name":"Flo"}},"cursor":{clock}}}"#),
        );
    }
    wait_state(&observer, MALLORY, "the latest state", |state| {
        state["cursor"] == sent
    })
    .await;
    let relayed = observer.seen.lock().awareness_received[&MALLORY];
    // Two a second: 200 relays would take the whole test 100 s.
    assert!(
        relayed < u64::from(sent) / 2,
        "{relayed} of {sent} changes were relayed one by one"
    );
    // The sender hears its own state back too (what keeps a lone stock
    // client's connection alive), and stays connected.
    wait_state(&flood, MALLORY, "the sender's echo", |state| {
        state["cursor"] == sent
    })
    .await;
    assert!(flood.seen.lock().closed.is_none());
    assert_ne!(
        server.metric("commandpost_awareness_coalesced_total").await,
        Some(0.0)
    );
}
