//! One incident record (issue 13), through the HTTP API of the real binary:
//! the people a command may name (`GET /api/people`, unknown ids refused),
//! refused attempts on the timeline, the impact start, the final pin, gate
//! refusals that name what blocks them, and presence on the event stream.

use commandpost_shared::AccessRole;
use serde_json::{Value, json};

use crate::support::TestServer;

#[track_caller]
fn expect(result: (u16, Value), status: u16) -> Value {
    assert_eq!(result.0, status, "{}", result.1);
    result.1
}

async fn declare(server: &TestServer, token: &str, title: &str) -> String {
    let (status, incident) = server
        .post_json("/api/incidents", token, &json!({ "title": title }))
        .await;
    assert_eq!(status, 201, "{incident}");
    incident["id"].as_str().unwrap().to_owned()
}

async fn people(server: &TestServer, token: &str, query: &str) -> Vec<(String, String)> {
    let (status, body) = server.get_json(&format!("/api/people{query}"), token).await;
    assert_eq!(status, 200, "{body}");
    body["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|person| {
            (
                person["id"].as_str().unwrap().to_owned(),
                person["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_token_holders_and_the_people_of_incidents_searchable_and_not_for_viewers() {
    let server = TestServer::start();
    let mary = server.known_token(AccessRole::Responder, "Mary").await;
    let josephine = server.keys().mint(
        "josephine",
        "Josephine Ng",
        AccessRole::Responder,
        None,
        std::time::Duration::from_secs(3600),
    );
    // Minted elsewhere and never used: not known yet. The start-up admin
    // token is recorded when the server starts.
    assert_eq!(
        people(&server, &mary, "").await,
        pairs(&[("admin", "Admin"), ("mary", "Mary")]),
        "only tokens the server has seen"
    );
    let (status, _) = server.get_json("/api/me", &josephine).await;
    assert_eq!(status, 200);
    let incident = declare(&server, &mary, "Checkout down").await;
    // A share link records its holder at once.
    let (status, link) = server
        .post_json(
            &format!("/api/incidents/{incident}/share"),
            &mary,
            &json!({"role": "responder", "name": "Sam Share", "ttl_hours": 1}),
        )
        .await;
    assert_eq!(status, 200, "{link}");
    let sam = link["user"].as_str().unwrap().to_owned();
    let viewer = server.known_token(AccessRole::Viewer, "Vera").await;
    let listed = people(&server, &mary, "").await;
    assert_eq!(
        listed,
        pairs(&[
            ("admin", "Admin"),
            ("josephine", "Josephine Ng"),
            ("mary", "Mary"),
            (&sam, "Sam Share"),
            ("vera", "Vera"),
        ]),
        "sorted by name, each once"
    );
    // `q` matches ids or names, ignoring case.
    assert_eq!(
        people(&server, &mary, "?q=NG").await,
        pairs(&[("josephine", "Josephine Ng")])
    );
    assert_eq!(
        people(&server, &mary, "?q=sam").await,
        pairs(&[(&sam, "Sam Share")])
    );
    assert!(people(&server, &mary, "?q=nobody").await.is_empty());
    // A newer token of the same subject renames them: the latest name wins
    // (issued in the same second, the one recorded last).
    let renamed = server.keys().mint(
        "josephine",
        "Josephine Ng-Larsen",
        AccessRole::Responder,
        None,
        std::time::Duration::from_secs(7200),
    );
    let (status, _) = server.get_json("/api/me", &renamed).await;
    assert_eq!(status, 200);
    assert_eq!(
        people(&server, &mary, "?q=josephine").await,
        pairs(&[("josephine", "Josephine Ng-Larsen")])
    );
    // Viewers name nobody in commands: they cannot list people.
    let (status, body) = server.get_json("/api/people", &viewer).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    // A token limited to the incident still lists token holders.
    let scoped = server.scoped_token(AccessRole::Responder, "Rhea", &incident.parse().unwrap());
    let listed = people(&server, &scoped, "").await;
    assert!(
        listed.contains(&("mary".into(), "Mary".into())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("rhea".into(), "Rhea".into())),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_list_holds_at_most_fifty() {
    let server = TestServer::start();
    let mary = server.known_token(AccessRole::Responder, "Mary").await;
    for n in 0..60 {
        server
            .known_token(AccessRole::Responder, &format!("P{n:02}"))
            .await;
    }
    let listed = people(&server, &mary, "").await;
    assert_eq!(listed.len(), 50, "the documented limit");
    assert_eq!(listed[0], ("admin".to_string(), "Admin".to_string()));
    assert_eq!(listed[1], ("mary".to_string(), "Mary".to_string()));
    assert_eq!(listed[2], ("p00".to_string(), "P00".to_string()));
    assert_eq!(people(&server, &mary, "?q=p5").await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_naming_a_person_refuses_an_unknown_id_and_uses_the_known_name() {
    let server = TestServer::start();
    let mary = server.known_token(AccessRole::Responder, "Mary").await;
    let admin = server.known_token(AccessRole::Admin, "Root").await;
    let josephine = server.keys().mint(
        "josephine",
        "Josephine Ng",
        AccessRole::Responder,
        None,
        std::time::Duration::from_secs(3600),
    );
    let (status, _) = server.get_json("/api/me", &josephine).await;
    assert_eq!(status, 200);
    let incident = declare(&server, &mary, "Checkout down").await;
    let typo = json!({"id": "josephin", "name": "Josephine"});
    let attempts = [
        (
            &mary,
            "assign_role",
            json!({"role": "operations_lead", "to": typo}),
        ),
        (
            &mary,
            "add_responder",
            json!({"responder": typo, "assignment": "db"}),
        ),
        (
            &mary,
            "offer_handoff",
            json!({"role": "incident_commander", "to": typo}),
        ),
        (
            &admin,
            "force_assign_role",
            json!({"role": "planning_lead", "to": typo, "reason": "asleep"}),
        ),
        (&mary, "set_next_commander", json!({"next": typo})),
    ];
    for (token, name, body) in attempts {
        let refused = expect(server.command(&incident, token, name, body).await, 422);
        assert_eq!(refused["error"]["code"], "unknown_person", "{name}");
        assert_eq!(refused["error"]["person"], "josephin", "{name}");
        assert_eq!(
            refused["error"]["message"],
            "no one known as `josephin`; pick someone from GET /api/people",
            "{name}"
        );
    }
    // A rule refusal comes first: a non-commander is told the rule.
    let sam = server.known_token(AccessRole::Responder, "Sam").await;
    let refused = expect(
        server
            .command(
                &incident,
                &sam,
                "assign_role",
                json!({"role": "operations_lead", "to": typo}),
            )
            .await,
        403,
    );
    assert_eq!(refused["error"]["code"], "forbidden");
    // The real Josephine, with a name typed differently, is recorded under
    // the name she is known by: no second "person".
    let outcome = expect(
        server
            .command(
                &incident,
                &mary,
                "assign_role",
                json!({"role": "operations_lead", "to": {"id": "josephine", "name": "Jo"}}),
            )
            .await,
        200,
    );
    assert_eq!(outcome["events"][0]["holder"]["name"], "Josephine Ng");
    // And she may now record changes as the operations lead.
    expect(
        server
            .command(
                &incident,
                &josephine,
                "record_change",
                json!({"what": "restart db", "revert": "nothing"}),
            )
            .await,
        200,
    );
    // Someone listed on an incident is known there.
    expect(
        server
            .command(
                &incident,
                &mary,
                "add_responder",
                json!({"responder": {"id": "sam", "name": "Sam"}, "assignment": "comms"}),
            )
            .await,
        200,
    );
}

/// Mary declares; Olga (signed in) leads operations.
async fn staffed(server: &TestServer) -> (String, String, String) {
    let mary = server.known_token(AccessRole::Responder, "Mary").await;
    let olga = server.known_token(AccessRole::Responder, "Olga").await;
    let incident = declare(server, &mary, "Checkout down").await;
    expect(
        server
            .command(
                &incident,
                &mary,
                "assign_role",
                json!({"role": "operations_lead", "to": {"id": "olga", "name": "Olga"}}),
            )
            .await,
        200,
    );
    (incident, mary, olga)
}

async fn timeline(server: &TestServer, incident: &str, token: &str) -> Vec<Value> {
    let (status, page) = server
        .get_json(
            &format!("/api/incidents/{incident}/timeline?limit=1000"),
            token,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freelancers_refused_change_is_on_the_timeline_once_a_minute() {
    let server = TestServer::start();
    let (incident, mary, olga) = staffed(&server).await;
    let fred = server.known_token(AccessRole::Responder, "Fred").await;
    let viewer = server.known_token(AccessRole::Viewer, "Vera").await;
    let change = json!({"what": "restart db", "revert": "nothing to revert"});
    let refused = expect(
        server
            .command(&incident, &fred, "record_change", change.clone())
            .await,
        403,
    );
    assert_eq!(refused["error"]["code"], "forbidden");
    let traces: Vec<Value> = timeline(&server, &incident, &mary)
        .await
        .into_iter()
        .filter(|event| event["type"] == "attempt_refused")
        .collect();
    assert_eq!(traces.len(), 1, "{traces:?}");
    let trace = &traces[0];
    assert_eq!(trace["actor"]["id"], "system");
    assert_eq!(trace["by"], json!({"id": "fred", "name": "Fred"}));
    assert_eq!(trace["command"], "record_change");
    assert_eq!(trace["reason"], "not the operations lead");
    assert_eq!(trace["detail"], "restart db");
    let state = server
        .get_json(&format!("/api/incidents/{incident}/state"), &mary)
        .await
        .1;
    assert!(
        state["changes"].as_array().unwrap().is_empty(),
        "still refused"
    );
    assert!(
        state["recent_timeline"].to_string().contains(
            "Refused: Fred (not the operations lead) tried to record a change: restart db"
        ),
        "{state}"
    );
    // Again within the minute: refused, not recorded again; the commander
    // (operations is delegated) is traced separately; viewers never.
    expect(
        server
            .command(&incident, &fred, "record_change", change.clone())
            .await,
        403,
    );
    expect(
        server
            .command(&incident, &mary, "record_change", change.clone())
            .await,
        403,
    );
    expect(
        server
            .command(&incident, &viewer, "record_change", change.clone())
            .await,
        403,
    );
    let by: Vec<Value> = timeline(&server, &incident, &mary)
        .await
        .into_iter()
        .filter(|event| event["type"] == "attempt_refused")
        .map(|event| event["by"]["id"].clone())
        .collect();
    assert_eq!(
        by,
        [json!("fred"), json!("mary")],
        "one per person and command a minute"
    );
    // The operations lead records it.
    expect(
        server
            .command(&incident, &olga, "record_change", change)
            .await,
        200,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_from_outside_the_response_is_posted_and_marked_for_the_commander() {
    let server = TestServer::start();
    let (incident, mary, olga) = staffed(&server).await;
    let fred = server.known_token(AccessRole::Responder, "Fred").await;
    let rita = server.known_token(AccessRole::Responder, "Rita").await;
    expect(
        server
            .command(
                &incident,
                &mary,
                "add_responder",
                json!({"responder": {"id": "rita", "name": "Rita"}, "assignment": "database"}),
            )
            .await,
        200,
    );
    // Notes are not refused: from the commander, a role holder, a listed
    // responder, and Fred, who is none of these.
    for (token, text) in [
        (&mary, "from the commander"),
        (&olga, "from ops"),
        (&rita, "from a responder"),
        (&fred, "db looks hot from here"),
    ] {
        expect(
            server
                .command(&incident, token, "post_note", json!({"text": text}))
                .await,
            200,
        );
    }
    let notes: Vec<(String, Value)> = timeline(&server, &incident, &mary)
        .await
        .into_iter()
        .filter(|event| event["type"] == "note_posted")
        .map(|event| {
            (
                event["actor"]["id"].as_str().unwrap().to_owned(),
                event["outsider"].clone(),
            )
        })
        .collect();
    assert_eq!(
        notes,
        [
            ("mary".to_owned(), json!(false)),
            ("olga".to_owned(), json!(false)),
            ("rita".to_owned(), json!(false)),
            ("fred".to_owned(), json!(true)),
        ]
    );
    // Not an attempt refused: nothing else was added.
    assert!(
        !timeline(&server, &incident, &mary)
            .await
            .iter()
            .any(|event| event["type"] == "attempt_refused")
    );
    // The readable timeline and the postmortem say so, naming Fred once.
    let line = "Fred (not on the responder list) posted a note: db looks hot from here";
    let state = server
        .get_json(&format!("/api/incidents/{incident}/state"), &mary)
        .await
        .1;
    let recent = state["recent_timeline"].as_array().unwrap();
    assert!(
        recent.last().unwrap().as_str().unwrap().ends_with(line),
        "{recent:?}"
    );
    assert!(
        recent
            .iter()
            .filter(|l| l.as_str().unwrap().contains("from ops"))
            .all(|l| l.as_str().unwrap().ends_with("Olga: from ops")),
        "{recent:?}"
    );
    let response = reqwest::Client::new()
        .get(server.url(&format!("/api/incidents/{incident}/postmortem.md")))
        .bearer_auth(&mary)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let postmortem = response.text().await.unwrap();
    assert!(postmortem.contains(line), "{postmortem}");
    assert!(!postmortem.contains("Fred: Fred"), "{postmortem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_impact_start_is_set_by_the_commander_and_never_in_the_future() {
    let server = TestServer::start();
    let (incident, mary, olga) = staffed(&server).await;
    let earlier = (chrono::Utc::now() - chrono::Duration::minutes(50))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let later = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    let refused = expect(
        server
            .command(&incident, &mary, "set_impact_start", json!({"at": later}))
            .await,
        422,
    );
    assert_eq!(
        refused["error"]["message"],
        "the impact start cannot be in the future"
    );
    expect(
        server
            .command(&incident, &olga, "set_impact_start", json!({"at": earlier}))
            .await,
        403,
    );
    let outcome = expect(
        server
            .command(&incident, &mary, "set_impact_start", json!({"at": earlier}))
            .await,
        200,
    );
    assert_eq!(outcome["events"][0]["type"], "impact_start_set");
    assert_eq!(outcome["events"][0]["impact_start"], earlier);
    assert_eq!(outcome["state"]["impact_start"], earlier);
    assert_ne!(outcome["state"]["declared_at"], earlier);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_pin_waits_for_mitigation_and_is_never_overdue() {
    let server = TestServer::start();
    let (incident, mary, _olga) = staffed(&server).await;
    let last = json!({"summary": "Resolved; no further updates.", "final": true});
    let refused = expect(
        server
            .command(&incident, &mary, "pin_status", last.clone())
            .await,
        409,
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mitigated or later"),
        "{refused}"
    );
    expect(
        server
            .command(&incident, &mary, "pin_status", json!({"summary": "x"}))
            .await,
        422,
    );
    // A pin with a deadline two seconds away, then the final one: the old
    // deadline passes and nothing is reported overdue. A witness incident
    // pinned with a deadline just after it shows when that has happened:
    // once the witness's reminder is on its timeline, the server's timer has
    // gone past the first deadline too.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (witness, wendy, _) = staffed(&server).await;
    for (incident, token, due) in [
        (&incident, &mary, soon),
        (&witness, &wendy, soon + chrono::Duration::milliseconds(100)),
    ] {
        expect(
            server
                .command(
                    incident,
                    token,
                    "pin_status",
                    json!({"summary": "investigating", "next_update_by": due.to_rfc3339()}),
                )
                .await,
            200,
        );
    }
    expect(
        server
            .command(
                &incident,
                &mary,
                "set_status",
                json!({"status": "mitigated"}),
            )
            .await,
        200,
    );
    let outcome = expect(
        server.command(&incident, &mary, "pin_status", last).await,
        200,
    );
    assert_eq!(outcome["state"]["pin"]["final"], true);
    assert_eq!(outcome["state"]["pin"]["next_update_by"], Value::Null);
    let final_seq = outcome["events"][0]["seq"].as_u64().unwrap();
    let started = std::time::Instant::now();
    while !timeline(&server, &witness, &wendy)
        .await
        .iter()
        .any(|event| event["type"] == "update_overdue")
    {
        assert!(
            started.elapsed() < crate::support::WAIT,
            "the witness incident's update was never reported overdue"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // On a slow machine the first deadline may pass before the final pin,
    // and a reminder then is right; after the final pin there is none.
    let late: Vec<Value> = timeline(&server, &incident, &mary)
        .await
        .into_iter()
        .filter(|event| {
            event["type"] == "update_overdue"
                && event["seq"].as_u64().is_some_and(|seq| seq > final_seq)
        })
        .collect();
    assert!(late.is_empty(), "overdue after the final pin: {late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_refusal_names_the_unmet_criteria_and_open_changes_with_ids() {
    let server = TestServer::start();
    let (incident, mary, olga) = staffed(&server).await;
    let run = |name: &'static str, token: &String, body: Value| {
        let (server, incident, token) = (&server, incident.clone(), token.clone());
        async move { server.command(&incident, &token, name, body).await }
    };
    let restored = expect(
        run(
            "add_exit_criterion",
            &mary,
            json!({"text": "Service restored"}),
        )
        .await,
        200,
    )["events"][0]["criterion"]
        .clone();
    let drained = expect(
        run(
            "add_exit_criterion",
            &mary,
            json!({"text": "Queue drained"}),
        )
        .await,
        200,
    )["events"][0]["criterion"]
        .clone();
    expect(
        run(
            "set_exit_criterion",
            &mary,
            json!({"criterion": drained, "met": true}),
        )
        .await,
        200,
    );
    let change = expect(
        run(
            "record_change",
            &olga,
            json!({"what": "restart db", "revert": "none"}),
        )
        .await,
        200,
    )["events"][0]["change"]
        .clone();
    let refused = expect(
        run("set_status", &mary, json!({"status": "resolved"})).await,
        409,
    );
    assert_eq!(
        refused["error"]["blocking"],
        json!({"criteria": [{"id": restored, "text": "Service restored"}], "changes": []})
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with(&format!("unmet criteria: #{restored} Service restored")),
        "{refused}"
    );
    expect(
        run(
            "set_exit_criterion",
            &mary,
            json!({"criterion": restored, "met": true}),
        )
        .await,
        200,
    );
    expect(
        run("set_status", &mary, json!({"status": "resolved"})).await,
        200,
    );
    let refused = expect(
        run("set_status", &mary, json!({"status": "closed"})).await,
        409,
    );
    assert_eq!(
        refused["error"]["blocking"],
        json!({"criteria": [], "changes": [{"id": change, "what": "restart db"}]})
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with(&format!("open changes: #{change} restart db")),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_pushed_on_the_event_stream_on_connect_and_on_change() {
    let server = TestServer::start();
    let mary = server.known_token(AccessRole::Responder, "Mary").await;
    let vera = server.known_token(AccessRole::Viewer, "Vera").await;
    let incident = declare(&server, &mary, "Presence").await;
    let url = |token: &str| server.url(&format!("/api/incidents/{incident}/events?token={token}"));
    let responder_stream = crate::support::sse::EventStream::open(&url(&mary)).await;
    let viewer_stream = crate::support::sse::EventStream::open(&url(&vera)).await;
    let latest = |stream: &crate::support::sse::EventStream| stream.presence.lock().last().cloned();
    crate::support::wait_until("presence on connect", || {
        latest(&responder_stream).is_some() && latest(&viewer_stream).is_some()
    })
    .await;
    assert_eq!(
        latest(&viewer_stream),
        Some(json!({"editors": 0, "viewers": 0}))
    );
    // Incident events still arrive as before, apart from presence.
    responder_stream.wait_for("declared").await;

    let id: commandpost_shared::IncidentId = incident.parse().unwrap();
    let editor = crate::support::yclient::YClient::connect(&server.ws_url(&id, &mary)).await;
    editor.wait_synced().await;
    let watcher = crate::support::yclient::YClient::connect(&server.ws_url(&id, &vera)).await;
    watcher.wait_synced().await;
    let both = Some(json!({"editors": 1, "viewers": 1}));
    crate::support::wait_until("presence after two joined", || {
        latest(&responder_stream) == both && latest(&viewer_stream) == both
    })
    .await;
    // Changes are coalesced: never more than one message a second.
    let sent = responder_stream.presence.lock().len();
    assert!(sent <= 3, "{sent} presence messages");
    watcher.close();
    let one = Some(json!({"editors": 1, "viewers": 0}));
    crate::support::wait_until("presence after the viewer left", || {
        latest(&responder_stream) == one && latest(&viewer_stream) == one
    })
    .await;
    // GET /api/incidents/{id} reports the same numbers.
    let (_, body) = server
        .get_json(&format!("/api/incidents/{incident}"), &mary)
        .await;
    assert_eq!(Some(body["presence"].clone()), one);
    // The events carry their seqs as before (presence has no SSE id).
    assert_eq!(responder_stream.seqs(), [1]);
}
