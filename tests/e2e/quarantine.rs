//! Corrupt storage: a stored document update or sidecar event that no longer
//! decodes is moved to the quarantine with one error line, the rest of the
//! incident keeps loading, and admins can list the quarantine.

use commandpost_shared::{AccessRole, IncidentId};
use serde_json::{Value, json};

use crate::support::test_postgres::psql;
use crate::support::yclient::{Connect, YClient};
use crate::support::{Store as Backend, TestServer, wait_until};

const SAVED: Connect = Connect {
    saved_acks: true,
    client_id: None,
};

/// What the corrupted entries were stored as, and what they now hold.
const BAD_UPDATE: &[u8] = b"\xff\xfe\xfd not a Yjs update";
const BAD_EVENT: &[u8] = b"{\"seq\": oops";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The server's error lines about moving something to the quarantine.
fn quarantine_lines(server: &TestServer) -> Vec<String> {
    server
        .logs()
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains("to the quarantine"))
        .map(str::to_owned)
        .collect()
}

async fn post_note(server: &TestServer, incident: &IncidentId, token: &str, text: &str) -> u64 {
    let (status, outcome) = server
        .post_json(
            &format!("/api/incidents/{incident}/commands/post_note"),
            token,
            &json!({ "text": text }),
        )
        .await;
    assert_eq!(status, 200, "{outcome}");
    outcome["events"][0]["seq"].as_u64().unwrap()
}

async fn timeline(server: &TestServer, incident: &IncidentId, token: &str) -> Vec<Value> {
    let (status, page) = server
        .get_json(
            &format!("/api/incidents/{incident}/timeline?limit=1000"),
            token,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().unwrap().clone()
}

fn notes(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event["type"] == "note_posted")
        .map(|event| event["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Overwrites, in the stopped server's database, the log entry holding
/// `update_marker` and the event holding `event_marker`; returns their seqs.
fn corrupt(
    server: &TestServer,
    incident: &IncidentId,
    update_marker: &str,
    event_marker: &str,
) -> (u64, u64) {
    let contains = |value: &[u8], marker: &str| {
        value
            .windows(marker.len())
            .any(|window| window == marker.as_bytes())
    };
    if let Some(url) = server.postgres_url() {
        return corrupt_rows(url, incident, update_marker, event_marker);
    }
    let db = sled::open(server.data_dir().join("db")).unwrap();
    // docs: `incident (8) | 1 | seq (8)` → one v1 update of the log.
    let docs = db.open_tree("docs").unwrap();
    let mut prefix = incident.number().to_be_bytes().to_vec();
    prefix.push(1);
    let log: Vec<_> = docs.scan_prefix(&prefix).map(Result::unwrap).collect();
    assert!(
        log.len() >= 5,
        "one log entry per edit expected, found {}",
        log.len()
    );
    let (key, _) = log
        .iter()
        .find(|(_, value)| contains(value, update_marker))
        .expect("the log entry of the doomed edit");
    let update_seq = u64::from_be_bytes(key[9..17].try_into().unwrap());
    docs.insert(key, BAD_UPDATE).unwrap();
    // events: `incident (8) | seq (8)` → one event, JSON.
    let events = db.open_tree("events").unwrap();
    let stored: Vec<_> = events
        .scan_prefix(incident.number().to_be_bytes())
        .map(Result::unwrap)
        .collect();
    let (key, _) = stored
        .iter()
        .find(|(_, value)| contains(value, event_marker))
        .expect("the doomed note's event");
    let event_seq = u64::from_be_bytes(key[8..16].try_into().unwrap());
    events.insert(key, BAD_EVENT).unwrap();
    db.flush().unwrap();
    (update_seq, event_seq)
}

/// [`corrupt`] on PostgreSQL: overwrites the rows with `psql`.
fn corrupt_rows(
    url: &str,
    incident: &IncidentId,
    update_marker: &str,
    event_marker: &str,
) -> (u64, u64) {
    let number = incident.number();
    let sql = |sql: &str| psql(url, sql).unwrap_or_else(|error| panic!("{error}"));
    let log: u64 = sql(&format!(
        "SELECT count(*) FROM doc_updates WHERE incident = {number}"
    ))
    .trim()
    .parse()
    .unwrap();
    assert!(log >= 5, "one log entry per edit expected, found {log}");
    let overwrite = |table: &str, column: &str, marker: &str, bad: &[u8]| -> u64 {
        sql(&format!(
            "UPDATE {table} SET {column} = '\\x{}'::bytea WHERE (incident, seq) = \
             (SELECT incident, seq FROM {table} WHERE incident = {number} \
             AND position(convert_to('{marker}', 'UTF8') in {column}) > 0 ORDER BY seq LIMIT 1) \
             RETURNING seq",
            hex(bad)
        ))
        .trim()
        .parse()
        .unwrap_or_else(|error| panic!("no {table} row holding {marker:?}: {error}"))
    };
    (
        overwrite("doc_updates", "body", update_marker, BAD_UPDATE),
        overwrite("events", "event", event_marker, BAD_EVENT),
    )
}

crate::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_corrupt_update_and_event_are_quarantined_and_the_rest_of_the_incident_loads,
    corrupt_update_and_event
);
async fn corrupt_update_and_event(store: Backend) {
    // Rooms unload quickly once idle, so shutdown has no live room to
    // compact and the edits stay separate log entries.
    let mut server = TestServer::start_on_with(store, &["--room-idle-timeout", "100ms"]);
    let incident = server.create_incident("Corrupt storage").await;
    let ada = server.token(AccessRole::Responder, "Ada");
    let writer = YClient::connect_with(&server.ws_url(&incident, &ada), SAVED).await;
    let other = YClient::connect_with(&server.ws_url(&incident, &ada), SAVED).await;
    // One update (one log entry) per edit. Appended text depends only on
    // the text before it. The doomed edit comes from another client (a
    // client's later updates depend on its earlier ones) and goes to the
    // very start, where nothing written later refers to it.
    for edit in ["\nkept-1", "\nkept-2", "doomed-3 ", "\nkept-4", "\nkept-5"] {
        if edit.starts_with("doomed") {
            other.insert(0, edit);
            other.wait_saved().await;
        } else {
            writer.push(edit);
            writer.wait_saved().await;
        }
    }
    // The writer has every edit once the other client's reached it.
    wait_until("the doomed edit to reach the writer", || {
        writer.read().starts_with("doomed-3 ")
    })
    .await;
    let full = writer.read();
    assert!(
        full.ends_with("\nkept-1\nkept-2\nkept-4\nkept-5"),
        "{full:?}"
    );
    let expected = full.replacen("doomed-3 ", "", 1);
    drop((writer, other));
    let first_note = post_note(&server, &incident, &ada, "note kept").await;
    let doomed_note = post_note(&server, &incident, &ada, "note doomed").await;
    let last_note = post_note(&server, &incident, &ada, "note after").await;
    wait_until("the room to unload", || {
        server.logs().contains("room unloaded after idle timeout")
    })
    .await;
    assert!(server.terminate().success());

    let (update_seq, event_seq) = corrupt(&server, &incident, "doomed-3", "note doomed");
    assert_eq!(event_seq, doomed_note);

    server.restart();
    let response = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200, "the server is up");

    // The document loads with every other edit.
    let reader = YClient::connect(&server.ws_url(&incident, &ada)).await;
    assert_eq!(reader.read(), expected);
    assert!(reader.seen.lock().closed.is_none());
    drop(reader);

    // The timeline keeps the other events, and numbering goes on after the
    // quarantined one.
    let events = timeline(&server, &incident, &ada).await;
    assert_eq!(notes(&events), ["note kept", "note after"]);
    assert!(events.iter().all(|event| event["seq"] != event_seq));
    assert!(
        events
            .iter()
            .any(|event| event["seq"].as_u64() == Some(first_note))
    );
    let next = post_note(&server, &incident, &ada, "note after restart").await;
    assert_eq!(next, last_note + 1);

    // One error line per quarantined entry, naming incident, seq and reason.
    wait_until("two quarantine log lines", || {
        quarantine_lines(&server).len() >= 2
    })
    .await;
    let lines = quarantine_lines(&server);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let update_line = lines
        .iter()
        .find(|line| line.contains("document update"))
        .expect("a line for the update");
    assert!(
        update_line.contains(&format!("incident={incident}")),
        "{update_line}"
    );
    assert!(
        update_line.contains(&format!("seq={update_seq}")),
        "{update_line}"
    );
    assert!(
        update_line.contains("not a valid Yjs update"),
        "{update_line}"
    );
    let event_line = lines
        .iter()
        .find(|line| line.contains("stored event"))
        .expect("a line for the event");
    assert!(
        event_line.contains(&format!("incident={incident}")),
        "{event_line}"
    );
    assert!(
        event_line.contains(&format!("seq={event_seq}")),
        "{event_line}"
    );
    assert!(event_line.contains("not a valid event"), "{event_line}");

    // Admins see both, without the bytes unless they ask.
    let admin = server.token(AccessRole::Admin, "Admin");
    let (status, listing) = server.get_json("/api/admin/quarantine", &admin).await;
    assert_eq!(status, 200, "{listing}");
    let entries = listing.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listing}");
    let entry = |kind: &str| {
        entries
            .iter()
            .find(|entry| entry["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {listing}"))
            .clone()
    };
    let update = entry("update");
    assert_eq!(update["incident"], incident.to_string());
    assert_eq!(update["seq"], update_seq);
    assert_eq!(update["size"], BAD_UPDATE.len());
    assert!(
        update["reason"]
            .as_str()
            .unwrap()
            .contains("not a valid Yjs update"),
        "{update}"
    );
    assert!(update.get("bytes").is_none(), "{update}");
    let event = entry("event");
    assert_eq!(event["incident"], incident.to_string());
    assert_eq!(event["seq"], event_seq);
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("not a valid event"),
        "{event}"
    );
    let (status, with_bytes) = server
        .get_json("/api/admin/quarantine?bytes=true", &admin)
        .await;
    assert_eq!(status, 200, "{with_bytes}");
    let kept: Vec<(&str, &str)> = with_bytes
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["kind"].as_str().unwrap(),
                entry["bytes"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        kept.contains(&("update", hex(BAD_UPDATE).as_str())),
        "{kept:?}"
    );
    assert!(
        kept.contains(&("event", hex(BAD_EVENT).as_str())),
        "{kept:?}"
    );

    // Nobody else does.
    for role in [AccessRole::Responder, AccessRole::Viewer] {
        let token = server.token(role, "Someone");
        let (status, body) = server.get_json("/api/admin/quarantine", &token).await;
        assert_eq!(status, 403, "{role:?}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
    }
    let scoped = server.scoped_token(AccessRole::Admin, "Scoped", &incident);
    let (status, body) = server.get_json("/api/admin/quarantine", &scoped).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server.get_json("/api/admin/quarantine", "").await;
    assert_eq!(status, 401, "{body}");

    // The entries were moved: another restart quarantines nothing again.
    assert!(server.terminate().success());
    server.restart();
    let reader = YClient::connect(&server.ws_url(&incident, &ada)).await;
    assert_eq!(reader.read(), expected);
    let events = timeline(&server, &incident, &ada).await;
    assert_eq!(
        notes(&events),
        ["note kept", "note after", "note after restart"]
    );
    let admin = server.token(AccessRole::Admin, "Admin");
    let (_, listing) = server.get_json("/api/admin/quarantine", &admin).await;
    assert_eq!(listing.as_array().unwrap().len(), 2, "{listing}");
    assert_eq!(quarantine_lines(&server).len(), 2);
}
