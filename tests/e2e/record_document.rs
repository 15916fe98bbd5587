//! One incident record, end to end against the real binary: the document
//! opens with the declaration; its exit-criteria block follows the sidecar
//! for every connected client (two stock Yjs clients and a yrs one), keeps
//! what people wrote around it, and survives kill -9; the postmortem of a
//! scripted incident carries every document section, the durations and the
//! handoff notes, compared with a committed expected file.

use std::path::PathBuf;

use commandpost::template;
use commandpost_shared::AccessRole;
use commandpost_shared::incident::{CriterionId, ExitCriterion};
use serde_json::{Value, json};

use crate::support::node::NodeClient;
use crate::support::yclient::{Connect, YClient};
use crate::support::{TestServer, WAIT};

/// Runs a command that must succeed; returns its answer.
async fn ok(server: &TestServer, incident: &str, token: &str, name: &str, body: Value) -> Value {
    let (status, response) = server.command(incident, token, name, body.clone()).await;
    assert_eq!(status, 200, "{name} {body}: {response}");
    response
}

/// The seq of the first event a command produced (ids of criteria, changes
/// and offers are the seq of the event that made them).
fn first_seq(response: &Value) -> u64 {
    response["events"][0]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no events in {response}"))
}

async fn declare(server: &TestServer, token: &str) -> String {
    let (status, incident) = server
        .post_json(
            "/api/incidents",
            token,
            &json!({
                "title": "Checkout errors",
                "severity": "sev2",
                "summary": "Checkout returns 500 for 30% of EU users",
                "criteria": {"needs_other_team": true, "customer_visible": true, "unresolved_after_hour": false}
            }),
        )
        .await;
    assert_eq!(status, 201, "{incident}");
    incident["id"].as_str().unwrap().to_owned()
}

/// Waits until the stock client's text contains every part.
async fn node_contains(client: &mut NodeClient, parts: &[&str]) {
    client
        .ok(json!({"cmd": "wait_contains", "parts": parts, "timeout_ms": WAIT.as_millis() as u64}))
        .await;
}

fn criterion(id: u64, text: &str, met: bool) -> ExitCriterion {
    ExitCriterion {
        criterion: CriterionId(id),
        text: text.into(),
        met,
    }
}

#[tokio::test]
async fn the_document_opens_with_the_declaration() {
    let server = TestServer::start();
    let ada = server.token(AccessRole::Responder, "Ada");
    let incident = declare(&server, &ada).await;
    let mut stock = NodeClient::spawn().await;
    stock.connect(&server.ws_base(), &incident, &ada).await;
    let text = stock.text().await;
    for part in [
        "## Summary\n\nCheckout returns 500 for 30% of EU users\n",
        "Severity SEV2. Declared by Ada at ",
        "- Another team is needed to fix it: yes\n",
        "- Visible to customers: yes\n",
        "- Unsolved after an hour of concentrated analysis: no\n",
        "## Root causes",
        "## Trigger",
        "## Detection",
        "## Resolution",
    ] {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
    assert!(
        !text.contains("What is happening, in two sentences."),
        "{text}"
    );
    assert!(!text.contains("Last updated"), "{text}");
    assert!(template::has_exit_criteria_block(&text), "{text}");
    stock.quit().await;
}

#[tokio::test]
async fn every_client_sees_the_criteria_block_follow_the_sidecar() {
    let mut server = TestServer::start();
    let ada = server.token(AccessRole::Responder, "Ada");
    let incident = declare(&server, &ada).await;
    let mut stock_a = NodeClient::spawn().await;
    let mut stock_b = NodeClient::spawn().await;
    stock_a.connect(&server.ws_base(), &incident, &ada).await;
    stock_b.connect(&server.ws_base(), &incident, &ada).await;
    let yrs_client = YClient::connect(&server.ws_url(&incident.parse().unwrap(), &ada)).await;

    // Someone writes right after the block: it must stay as written.
    let opened = stock_a.text().await;
    let end = opened.find(template::CRITERIA_END).unwrap() + template::CRITERIA_END.len() + 1;
    let mine = "Also: the EU status page is green again.\n";
    stock_a.insert(end, mine).await;
    node_contains(&mut stock_b, &[mine]).await;

    let added = ok(
        &server,
        &incident,
        &ada,
        "add_exit_criterion",
        json!({"text": "Error rate below 0.1% for 30 min"}),
    )
    .await;
    let first = first_seq(&added);
    let second = first_seq(
        &ok(
            &server,
            &incident,
            &ada,
            "add_exit_criterion",
            json!({"text": "Queue drained"}),
        )
        .await,
    );
    let unmet = template::exit_criteria_block(&[
        criterion(first, "Error rate below 0.1% for 30 min", false),
        criterion(second, "Queue drained", false),
    ]);
    node_contains(&mut stock_a, &[&unmet, mine]).await;
    node_contains(&mut stock_b, &[&unmet, mine]).await;

    ok(
        &server,
        &incident,
        &ada,
        "set_exit_criterion",
        json!({"criterion": first, "met": true}),
    )
    .await;
    let met = template::exit_criteria_block(&[
        criterion(first, "Error rate below 0.1% for 30 min", true),
        criterion(second, "Queue drained", false),
    ]);
    for client in [&mut stock_a, &mut stock_b] {
        node_contains(client, &[&met, mine]).await;
    }
    let expected = stock_a.text().await;
    yrs_client.wait_text(&expected).await;
    stock_b.wait_text(&expected).await;
    assert_eq!(
        expected.matches(template::CRITERIA_START).count(),
        1,
        "{expected}"
    );

    // An edit inside the block is replaced at the next change; the rest of
    // the document keeps what people wrote.
    let inside = expected.find("- [ ] Queue drained").unwrap();
    stock_b.insert(inside, "- [x] I typed this\n").await;
    node_contains(&mut stock_a, &["I typed this"]).await;
    ok(
        &server,
        &incident,
        &ada,
        "set_exit_criterion",
        json!({"criterion": second, "met": true}),
    )
    .await;
    let all_met = template::exit_criteria_block(&[
        criterion(first, "Error rate below 0.1% for 30 min", true),
        criterion(second, "Queue drained", true),
    ]);
    node_contains(&mut stock_a, &[&all_met, mine]).await;
    let settled = stock_a.text().await;
    assert!(!settled.contains("I typed this"), "{settled}");
    stock_b.wait_text(&settled).await;
    yrs_client.wait_text(&settled).await;
    stock_a.quit().await;
    stock_b.quit().await;
    drop(yrs_client);

    // The server's edits are stored like anyone's: a kill -9 keeps them.
    server.kill9();
    server.restart();
    let reader = YClient::connect(&server.ws_url(&incident.parse().unwrap(), &ada)).await;
    assert_eq!(reader.read(), settled);
}

/// Masks what changes from run to run (times, dates, durations) so the
/// export can be compared with a committed file.
fn normalise(markdown: &str) -> String {
    let mut out = mask(markdown, "dddd-dd-dd dd:dd:dd UTC", "<time>");
    out = mask(&out, "dd:dd UTC", "<hh:mm UTC>");
    out = mask(&out, "| Date | dddd-dd-dd |", "| Date | <date> |");
    // Times to mitigate and resolve depend on how fast the test ran; the
    // time to declare is exact (the impact start is set relative to the
    // declaration), so it stays.
    out.lines()
        .map(|line| match line.strip_prefix("| Time to ") {
            Some(rest) if rest.contains(" from ") => {
                let (what, _) = rest.split_once(" | ").unwrap_or((rest, ""));
                let from = rest.rsplit_once(" from ").map_or("|", |(_, from)| from);
                format!("| Time to {what} | <duration> from {from}")
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces every match of `pattern` (`d` is any ASCII digit, anything else
/// itself) with `with`.
fn mask(text: &str, pattern: &str, with: &str) -> String {
    let (bytes, pattern) = (text.as_bytes(), pattern.as_bytes());
    let matches_at = |at: usize| {
        at + pattern.len() <= bytes.len()
            && pattern.iter().zip(&bytes[at..]).all(|(p, b)| match p {
                b'd' => b.is_ascii_digit(),
                p => p == b,
            })
    };
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut copied = 0;
    while at < bytes.len() {
        if matches_at(at) {
            out.push_str(&text[copied..at]);
            out.push_str(with);
            at += pattern.len();
            copied = at;
        } else {
            at += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[tokio::test]
async fn the_postmortem_of_a_scripted_incident_matches_the_expected_file() {
    let server = TestServer::start();
    let ada = server.token(AccessRole::Responder, "Ada");
    let bob = server.known_token(AccessRole::Responder, "Bob").await;
    let carol = server.known_token(AccessRole::Responder, "Carol").await;
    let incident = declare(&server, &ada).await;
    // The commander says the impact began ten minutes before the declaration.
    let (_, state) = server
        .get_json(&format!("/api/incidents/{incident}/state"), &ada)
        .await;
    let declared_at: chrono::DateTime<chrono::Utc> =
        state["declared_at"].as_str().unwrap().parse().unwrap();
    let impact_start = (declared_at - chrono::Duration::minutes(10)).to_rfc3339();
    ok(
        &server,
        &incident,
        &ada,
        "set_impact_start",
        json!({"at": impact_start}),
    )
    .await;
    let person = |id: &str, name: &str| json!({"id": id, "name": name});
    for (who, assignment) in [
        (person("bob", "Bob"), "database"),
        (person("carol", "Carol"), "next shift"),
    ] {
        ok(
            &server,
            &incident,
            &ada,
            "add_responder",
            json!({"responder": who, "assignment": assignment}),
        )
        .await;
    }
    ok(
        &server,
        &incident,
        &ada,
        "assign_role",
        json!({"role": "operations_lead", "to": person("bob", "Bob")}),
    )
    .await;
    let rollback = first_seq(
        &ok(&server, &incident, &bob, "record_change", json!({"what": "Roll back deploy 42", "why": "500s began with it", "revert": "Deploy 42 again"})).await,
    );
    let pool = first_seq(
        &ok(&server, &incident, &bob, "record_change", json!({"what": "Raise the DB pool to 200", "why": "connections exhausted", "revert": "Set it back to 100"})).await,
    );
    let errors = first_seq(
        &ok(
            &server,
            &incident,
            &ada,
            "add_exit_criterion",
            json!({"text": "Error rate below 0.1% for 30 min"}),
        )
        .await,
    );
    let next_update_by = (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
    ok(
        &server,
        &incident,
        &ada,
        "pin_status",
        json!({"summary": "Rolled back; watching errors", "next_update_by": next_update_by}),
    )
    .await;

    // Carol, not the operations lead, tries a production change: refused,
    // and on the record.
    let (status, refused) = server
        .post_json(
            &format!("/api/incidents/{incident}/commands/record_change"),
            &carol,
            &json!({"what": "Restart the cache", "revert": "nothing to revert"}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    // The document, as responders write it while they work.
    let writer = YClient::connect_with(
        &server.ws_url(&incident.parse().unwrap(), &bob),
        Connect {
            saved_acks: true,
            ..Connect::default()
        },
    )
    .await;
    let write_under = |heading: &str, text: &str| {
        let body = writer.read();
        let at = body
            .find(heading)
            .unwrap_or_else(|| panic!("no {heading} in {body}"))
            + heading.len()
            + 2;
        writer.insert(at as u32, text);
    };
    write_under(
        "## Impact",
        "30% of EU card payments failed for 40 minutes.\n\n",
    );
    write_under(
        "## Root causes",
        "A cache key without the region let EU requests read US sessions.\n\n",
    );
    write_under("## Trigger", "Deploy 42 changed the key format.\n\n");
    write_under(
        "## TODO and bugs filed",
        "- [ ] prevent: Alert on checkout 500s per region (owner: bob, bug: https://bugs.example/4242)\n- [x] mitigate: Roll back deploy 42 (owner: bob)\n- [ ] process: Review cache-key changes | with two people\n",
    );
    let body = writer.read();
    writer.insert(
        body.len() as u32,
        "\n## Customer communication\n\nStatus page updated at each pin.\n",
    );
    writer.wait_saved().await;

    ok(
        &server,
        &incident,
        &ada,
        "mark_change_reverted",
        json!({"change": rollback}),
    )
    .await;
    ok(
        &server,
        &incident,
        &ada,
        "waive_change",
        json!({"change": pool, "reason": "the larger pool stays"}),
    )
    .await;
    let offer = first_seq(
        &ok(&server, &incident, &ada, "offer_handoff", json!({"role": "incident_commander", "to": person("carol", "Carol"), "notes": "End of my shift: watch the EU error rate; Bob owns the DB."})).await,
    );
    ok(
        &server,
        &incident,
        &carol,
        "accept_handoff",
        json!({"handoff": offer}),
    )
    .await;
    ok(
        &server,
        &incident,
        &carol,
        "set_status",
        json!({"status": "mitigated"}),
    )
    .await;
    ok(
        &server,
        &incident,
        &carol,
        "set_exit_criterion",
        json!({"criterion": errors, "met": true}),
    )
    .await;
    ok(
        &server,
        &incident,
        &carol,
        "set_status",
        json!({"status": "resolved"}),
    )
    .await;
    ok(
        &server,
        &incident,
        &carol,
        "set_status",
        json!({"status": "closed"}),
    )
    .await;

    let get = || async {
        let response = reqwest::Client::new()
            .get(server.url(&format!("/api/incidents/{incident}/postmortem.md")))
            .bearer_auth(&ada)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let first = get().await;
    assert_eq!(first, get().await, "exporting twice gives the same file");
    let normalised = normalise(&first);
    let expected_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/expected/postmortem.md");
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        std::fs::write(&expected_path, &normalised).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert!(
        normalised == expected,
        "the postmortem differs from {} (run with UPDATE_EXPECTED=1 to rewrite it, then review the diff):\n{normalised}",
        expected_path.display()
    );
}
