//! The command sidecar over HTTP and Server-Sent Events, against the real
//! binary: handoffs seen live by viewers, durability across restarts and
//! kill -9, overdue status updates that survive a restart, lifecycle gates.

use commandpost_shared::AccessRole;
use serde_json::{Value, json};

use crate::support::sse::EventStream;
use crate::support::{Store as Backend, TestServer};

async fn declare(server: &TestServer, token: &str, body: Value) -> Value {
    let (status, incident) = server.post_json("/api/incidents", token, &body).await;
    assert_eq!(status, 201, "{incident}");
    incident
}

async fn ok(server: &TestServer, incident: &str, token: &str, name: &str, body: Value) -> Value {
    let (status, response) = server.command(incident, token, name, body.clone()).await;
    assert_eq!(status, 200, "{name} {body} failed: {response}");
    response
}

fn events_url(server: &TestServer, incident: &str, token: &str) -> String {
    server.url(&format!("/api/incidents/{incident}/events?token={token}"))
}

fn holder(state: &Value, role: &str) -> String {
    state["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|view| view["role"] == role)
        .unwrap_or_else(|| panic!("no role {role} in {state}"))["holder"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn get_state(server: &TestServer, incident: &str, token: &str) -> Value {
    let (status, state) = server
        .get_json(&format!("/api/incidents/{incident}/state"), token)
        .await;
    assert_eq!(status, 200, "{state}");
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_handoff_is_offered_accepted_and_broadcast_to_everyone_including_viewers() {
    let server = TestServer::start();
    let alice = server.token(AccessRole::Responder, "Alice");
    let bob = server.token(AccessRole::Responder, "Bob");
    // Bob has used the server, so commands may name him.
    assert_eq!(server.get_json("/api/me", &bob).await.0, 200);
    let viewer = server.token(AccessRole::Viewer, "Vic");
    let declared = declare(
        &server,
        &alice,
        json!({"title": "Checkout errors", "severity": "sev2",
               "criteria": {"needs_other_team": true, "customer_visible": true, "unresolved_after_hour": false},
               "summary": "Card payments fail for 30% of customers"}),
    )
    .await;
    let incident = declared["id"].as_str().unwrap().to_owned();
    assert_eq!(
        holder(&declared["state"], "incident_commander"),
        "alice",
        "the declarer is the first IC"
    );

    let viewer_stream = EventStream::open(&events_url(&server, &incident, &viewer)).await;
    let alice_stream = EventStream::open(&events_url(&server, &incident, &alice)).await;
    ok(
        &server,
        &incident,
        &alice,
        "add_exit_criterion",
        json!({"text": "error rate below 0.1%"}),
    )
    .await;

    // The offer carries a briefing the server pre-filled from the state.
    let offered = ok(
        &server,
        &incident,
        &alice,
        "offer_handoff",
        json!({"role": "incident_commander", "to": {"id": "bob", "name": "Bob"}, "notes": "rollback is half done"}),
    )
    .await;
    let offer = &offered["events"][0];
    assert_eq!(offer["type"], "handoff_offered");
    let briefing = &offer["briefing"];
    assert!(
        briefing["situation"]
            .as_str()
            .unwrap()
            .contains("Card payments fail"),
        "{briefing}"
    );
    assert!(
        briefing["objectives"]
            .to_string()
            .contains("error rate below 0.1%"),
        "{briefing}"
    );
    assert_eq!(briefing["notes"], "rollback is half done");
    let handoff = offer["handoff"].clone();

    // Everyone sees the offer; until acceptance Alice keeps command.
    assert_eq!(
        viewer_stream.wait_for("handoff_offered").await["to"]["name"],
        "Bob"
    );
    assert_eq!(
        holder(
            &get_state(&server, &incident, &viewer).await,
            "incident_commander"
        ),
        "alice"
    );

    // Only Bob may accept, from his own token.
    let (status, refused) = server
        .command(
            &incident,
            &alice,
            "accept_handoff",
            json!({"handoff": handoff}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    ok(
        &server,
        &incident,
        &bob,
        "accept_handoff",
        json!({"handoff": handoff}),
    )
    .await;

    // One confirmation event, with both names and the time, reaches the
    // viewer and the outgoing IC alike.
    for stream in [&viewer_stream, &alice_stream] {
        let accepted = stream.wait_for("handoff_accepted").await;
        assert_eq!(accepted["from"]["name"], "Alice");
        assert_eq!(accepted["to"]["name"], "Bob");
        assert!(
            accepted["at"].as_str().unwrap().ends_with('Z'),
            "UTC time: {accepted}"
        );
        assert_eq!(stream.of_kind("handoff_accepted").len(), 1);
    }
    let seqs = viewer_stream.seqs();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "events arrive in order: {seqs:?}"
    );

    let state = get_state(&server, &incident, &viewer).await;
    assert_eq!(holder(&state, "incident_commander"), "bob");
    // Alice's IC-only commands are refused now; Bob's work.
    let (status, refused) = server
        .command(
            &incident,
            &alice,
            "set_severity",
            json!({"severity": "sev1"}),
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("incident commander"),
        "{refused}"
    );
    ok(
        &server,
        &incident,
        &bob,
        "set_severity",
        json!({"severity": "sev1"}),
    )
    .await;

    // Role history shows both tenures.
    let (_, history) = server
        .get_json(&format!("/api/incidents/{incident}/roles/history"), &viewer)
        .await;
    let commanders: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|tenure| tenure["role"] == "incident_commander")
        .map(|tenure| tenure["holder"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(commanders, ["alice", "bob"]);

    // Viewers change nothing.
    let (status, _) = server
        .command(&incident, &viewer, "post_note", json!({"text": "hi"}))
        .await;
    assert_eq!(status, 403);
}

crate::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    acknowledged_command_events_survive_restart_and_kill_9_with_identical_state,
    command_events_survive_restart_and_kill_9
);
async fn command_events_survive_restart_and_kill_9(store: Backend) {
    let mut server = TestServer::start_on(store);
    let alice = server.token(AccessRole::Responder, "Alice");
    let declared = declare(&server, &alice, json!({"title": "Database failover"})).await;
    let incident = declared["id"].as_str().unwrap().to_owned();
    assert!(
        declared["state"]["severity"].is_null(),
        "severity not yet assessed"
    );
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let outcome = ok(
            &server,
            &incident,
            &alice,
            "post_note",
            json!({"text": format!("note {i}")}),
        )
        .await;
        acknowledged.push(outcome["events"][0]["seq"].as_u64().unwrap());
    }
    ok(
        &server,
        &incident,
        &alice,
        "record_change",
        json!({"what": "failover to replica", "why": "primary down", "revert": "fail back"}),
    )
    .await;
    let before = get_state(&server, &incident, &alice).await;

    assert!(server.terminate().success());
    server.restart();
    let alice = server.token(AccessRole::Responder, "Alice");
    assert_eq!(
        get_state(&server, &incident, &alice).await,
        before,
        "state after a clean restart"
    );

    // kill -9 right after the answers: answered means durable.
    for i in 0..20 {
        let outcome = ok(
            &server,
            &incident,
            &alice,
            "post_note",
            json!({"text": format!("late {i}")}),
        )
        .await;
        acknowledged.push(outcome["events"][0]["seq"].as_u64().unwrap());
    }
    let before = get_state(&server, &incident, &alice).await;
    server.kill9();
    server.restart();
    let alice = server.token(AccessRole::Responder, "Alice");
    assert_eq!(
        get_state(&server, &incident, &alice).await,
        before,
        "state after kill -9"
    );
    let (_, page) = server
        .get_json(
            &format!("/api/incidents/{incident}/timeline?limit=1000"),
            &alice,
        )
        .await;
    let stored: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    for seq in &acknowledged {
        assert!(stored.contains(seq), "acknowledged event {seq} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_status_update_is_announced_once_even_across_a_crash() {
    let mut server = TestServer::start();
    let alice = server.token(AccessRole::Responder, "Alice");
    let incident = declare(&server, &alice, json!({"title": "Overdue"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let due = chrono::Utc::now() + chrono::Duration::seconds(2);
    let pinned = ok(
        &server,
        &incident,
        &alice,
        "pin_status",
        json!({"summary": "investigating", "next_update_by": due.to_rfc3339()}),
    )
    .await;
    let pin_seq = pinned["events"][0]["seq"].as_u64().unwrap();
    // The deadline is only in durable state: crash before it passes.
    server.kill9();
    server.restart();
    let alice = server.token(AccessRole::Responder, "Alice");
    let stream = EventStream::open(&format!(
        "{}&after={pin_seq}",
        events_url(&server, &incident, &alice)
    ))
    .await;
    let overdue = stream.wait_for("update_overdue").await;
    assert_eq!(overdue["pin"].as_u64(), Some(pin_seq));
    let state = get_state(&server, &incident, &alice).await;
    assert_eq!(state["pin"]["overdue"], true, "{state}");
    // Exactly once: a later event round trip shows no second announcement.
    ok(
        &server,
        &incident,
        &alice,
        "post_note",
        json!({"text": "still here"}),
    )
    .await;
    stream.wait_for("note_posted").await;
    assert_eq!(stream.of_kind("update_overdue").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_gates_refuse_until_criteria_are_met_or_overridden_and_changes_are_settled() {
    let server = TestServer::start();
    let ic = server.token(AccessRole::Responder, "Ida");
    let other = server.token(AccessRole::Responder, "Otto");
    let incident = declare(&server, &ic, json!({"title": "Gates"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &server,
        &incident,
        &ic,
        "add_exit_criterion",
        json!({"text": "queue drained"}),
    )
    .await;

    // Freelancing is refused: only ops (here the IC, holding ops) records changes.
    let (status, refused) = server
        .command(
            &incident,
            &other,
            "record_change",
            json!({"what": "restart", "why": "x", "revert": "none"}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("operations lead"),
        "{refused}"
    );
    let change = ok(
        &server,
        &incident,
        &ic,
        "record_change",
        json!({"what": "restart workers", "why": "stuck", "revert": "none needed"}),
    )
    .await;
    let change_id = change["events"][0]["change"].clone();

    let (status, refused) = server
        .command(&incident, &ic, "set_status", json!({"status": "resolved"}))
        .await;
    assert!((400..500).contains(&status), "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit criteri"),
        "{refused}"
    );
    ok(
        &server,
        &incident,
        &ic,
        "set_status",
        json!({"status": "resolved", "override_reason": "criterion no longer relevant"}),
    )
    .await;

    let (status, refused) = server
        .command(&incident, &ic, "set_status", json!({"status": "closed"}))
        .await;
    assert!((400..500).contains(&status), "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revert"),
        "{refused}"
    );
    ok(
        &server,
        &incident,
        &ic,
        "waive_change",
        json!({"change": change_id, "reason": "restart has no lasting effect"}),
    )
    .await;
    ok(
        &server,
        &incident,
        &ic,
        "set_status",
        json!({"status": "closed"}),
    )
    .await;
    assert_eq!(get_state(&server, &incident, &ic).await["status"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_resume_after_a_sequence_number_and_bad_commands_get_clear_errors() {
    let server = TestServer::start();
    let alice = server.token(AccessRole::Responder, "Alice");
    let incident = declare(&server, &alice, json!({"title": "Resume"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..5 {
        ok(
            &server,
            &incident,
            &alice,
            "post_note",
            json!({"text": format!("n{i}")}),
        )
        .await;
    }
    // Event 1 is the declaration; resume after 4 by query and by header.
    let by_query = EventStream::open(&format!(
        "{}&after=4",
        events_url(&server, &incident, &alice)
    ))
    .await;
    let by_header = EventStream::open_with(&events_url(&server, &incident, &alice), Some(4)).await;
    ok(
        &server,
        &incident,
        &alice,
        "post_note",
        json!({"text": "live"}),
    )
    .await;
    for stream in [&by_query, &by_header] {
        crate::support::wait_until("events 5..7", || stream.seqs().len() >= 3).await;
        assert_eq!(stream.seqs(), [5, 6, 7]);
    }

    let (status, body) = server
        .command(&incident, &alice, "launch_missiles", json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_command"))
    );
    let (status, body) = server
        .command(&incident, &alice, "post_note", json!({"txt": "typo"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_body"))
    );
    let (status, _) = server
        .command("INC-99", &alice, "post_note", json!({"text": "x"}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .command(&incident, "forged", "post_note", json!({"text": "x"}))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_offer_expires_after_the_configured_time_and_the_holder_keeps_the_role() {
    let server = TestServer::start_with(&["--handoff-ttl", "1s"]);
    let alice = server.token(AccessRole::Responder, "Alice");
    let bob = server.token(AccessRole::Responder, "Bob");
    // Bob has used the server, so commands may name him.
    assert_eq!(server.get_json("/api/me", &bob).await.0, 200);
    let incident = declare(&server, &alice, json!({"title": "Expiry"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stream = EventStream::open(&events_url(&server, &incident, &alice)).await;
    let offered = ok(
        &server,
        &incident,
        &alice,
        "offer_handoff",
        json!({"role": "incident_commander", "to": {"id": "bob", "name": "Bob"}}),
    )
    .await;
    let handoff = offered["events"][0]["handoff"].clone();
    let expired = stream.wait_for("handoff_expired").await;
    assert_eq!(expired["handoff"], handoff);
    assert_eq!(
        expired["actor"]["id"], "system",
        "the server's timer expired it"
    );
    let state = get_state(&server, &incident, &alice).await;
    assert!(state["pending_handoffs"].as_array().unwrap().is_empty());
    assert_eq!(holder(&state, "incident_commander"), "alice");
    let (status, _) = server
        .command(
            &incident,
            &bob,
            "accept_handoff",
            json!({"handoff": handoff}),
        )
        .await;
    assert!(
        (400..500).contains(&status),
        "an expired offer cannot be accepted"
    );
}
