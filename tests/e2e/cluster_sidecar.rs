//! The command sidecar in cluster mode, with real engines: nodes on one
//! PostgreSQL database and one Redis. Commands for one incident on several
//! nodes at once all land, gap-free, none overwritten; events reach event
//! streams on every node once, in order, and a stream resumes on any node;
//! a timer event fires once although every node's timer tries. Every wait
//! is for a condition, bounded by `support::WAIT`.

use std::time::Duration;

use commandpost_shared::AccessRole;
use serde_json::{Value, json};

use crate::support::redis::RedisServer;
use crate::support::sse::EventStream;
use crate::support::{TestServer, WAIT, wait_until};

fn nodes(count: u8, redis: &RedisServer, args: &[&str]) -> Vec<TestServer> {
    crate::support::cluster_nodes(count, redis, args)
}

async fn declare(node: &TestServer, token: &str, title: &str) -> String {
    let (status, incident) = node
        .post_json("/api/incidents", token, &json!({ "title": title }))
        .await;
    assert_eq!(status, 201, "{incident}");
    incident["id"].as_str().unwrap().to_owned()
}

async fn ok(node: &TestServer, incident: &str, token: &str, name: &str, body: Value) -> Value {
    let (status, response) = node.command(incident, token, name, body.clone()).await;
    assert_eq!(status, 200, "{name} {body} failed: {response}");
    response
}

fn events_url(node: &TestServer, incident: &str, token: &str) -> String {
    node.url(&format!("/api/incidents/{incident}/events?token={token}"))
}

/// The whole timeline as a node reads it (from storage).
async fn timeline(node: &TestServer, incident: &str, token: &str) -> Vec<Value> {
    let (status, page) = node
        .get_json(
            &format!("/api/incidents/{incident}/timeline?limit=1000"),
            token,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page["next_after"].is_null(), "one page: {page}");
    page["events"].as_array().unwrap().clone()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect()
}

/// Waits until `node`'s sidecar state has folded in every event up to
/// `seq` (its state is in memory: this is the bus or the catch-up at work).
async fn wait_state_at(node: &TestServer, incident: &str, token: &str, seq: u64) {
    let started = std::time::Instant::now();
    loop {
        let (status, state) = node
            .get_json(&format!("/api/incidents/{incident}/state"), token)
            .await;
        assert_eq!(status, 200, "{state}");
        if state["last_seq"].as_u64().is_some_and(|last| last >= seq) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{} never reached seq {seq}: {state}",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_posted_on_two_nodes_at_once_all_land_gap_free_and_every_node_has_them() {
    let redis = RedisServer::start();
    let cluster = nodes(3, &redis, &[]);
    let (a, b, c) = (&cluster[0], &cluster[1], &cluster[2]);
    let alice = a.token(AccessRole::Responder, "Alice");
    let incident = declare(a, &alice, "Notes from everywhere").await;
    // A stream on the third node, from the start.
    let stream = EventStream::open(&events_url(c, &incident, &alice)).await;

    let nia = a.token(AccessRole::Responder, "Nia");
    let noor = b.token(AccessRole::Responder, "Noor");
    let mut posts = Vec::new();
    for n in 0..20 {
        for (node, token, name) in [(a, &nia, "nia"), (b, &noor, "noor")] {
            let text = format!("{name} {n}");
            let incident = incident.clone();
            posts.push(async move {
                let (status, body) = node
                    .command(&incident, token, "post_note", json!({ "text": text }))
                    .await;
                (text, status, body)
            });
        }
    }
    let answers = futures::future::join_all(posts).await;
    let mut acknowledged = Vec::new();
    for (text, status, body) in answers {
        match status {
            200 => acknowledged.push((body["events"][0]["seq"].as_u64().unwrap(), text)),
            // Gave up after other nodes appended first too many times in a
            // row: refused, not lost.
            503 => assert_eq!(body["error"]["code"], "contended", "{body}"),
            _ => panic!("{text}: {status} {body}"),
        }
    }
    assert!(
        acknowledged.len() >= 30,
        "most notes are acknowledged: {acknowledged:?}"
    );

    // Every node reads every acknowledged note under the seq it was
    // acknowledged with; seqs are gap-free.
    let mut last = 0;
    for node in [a, b, c] {
        let events = timeline(node, &incident, &alice).await;
        let stored = seqs(&events);
        assert_eq!(stored, (1..=stored.len() as u64).collect::<Vec<_>>());
        for (seq, text) in &acknowledged {
            let event = &events[*seq as usize - 1];
            assert_eq!(event["type"], "note_posted", "{event}");
            assert_eq!(event["text"], text.as_str(), "seq {seq} was overwritten");
        }
        let notes = events.iter().filter(|e| e["type"] == "note_posted").count();
        assert_eq!(notes, acknowledged.len(), "only acknowledged notes stored");
        last = *stored.last().unwrap();
    }
    // Every node's in-memory state follows, and the stream on the third
    // node got every event once, in order.
    for node in [a, b, c] {
        wait_state_at(node, &incident, &alice, last).await;
    }
    wait_until("the stream on the third node has every event", || {
        stream.seqs().last() == Some(&last)
    })
    .await;
    assert_eq!(stream.seqs(), (1..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_offered_on_one_node_and_accepted_on_another_reaches_a_viewer_on_a_third() {
    let redis = RedisServer::start();
    let cluster = nodes(3, &redis, &[]);
    let (a, b, c) = (&cluster[0], &cluster[1], &cluster[2]);
    let alice = a.token(AccessRole::Responder, "Alice");
    // Bob has used node A, so commands there may name him.
    let bob = a.known_token(AccessRole::Responder, "Bob").await;
    let viewer = a.token(AccessRole::Viewer, "Vic");
    let incident = declare(a, &alice, "Handoff across nodes").await;
    let viewer_stream = EventStream::open(&events_url(c, &incident, &viewer)).await;

    let offered = ok(
        a,
        &incident,
        &alice,
        "offer_handoff",
        json!({"role": "incident_commander", "to": {"id": "bob", "name": "Bob"}, "notes": "over to you"}),
    )
    .await;
    let offer = &offered["events"][0];
    let offer_seq = offer["seq"].as_u64().unwrap();
    // Accepted on B at once: B may not have heard of the offer yet, and
    // must look in storage before refusing.
    ok(
        b,
        &incident,
        &bob,
        "accept_handoff",
        json!({"handoff": offer["handoff"]}),
    )
    .await;

    let accepted = viewer_stream.wait_for("handoff_accepted").await;
    assert_eq!(accepted["from"]["name"], "Alice");
    assert_eq!(accepted["to"]["name"], "Bob");
    let accepted_seq = accepted["seq"].as_u64().unwrap();
    assert!(accepted_seq > offer_seq);
    wait_until("the viewer has every event up to the acceptance", || {
        viewer_stream.seqs().len() as u64 >= accepted_seq
    })
    .await;
    assert_eq!(
        viewer_stream.seqs(),
        (1..=accepted_seq).collect::<Vec<_>>(),
        "once each, in order"
    );
    assert_eq!(viewer_stream.of_kind("handoff_accepted").len(), 1);
    assert_eq!(viewer_stream.of_kind("handoff_offered").len(), 1);

    // A stream resumed on another node after the offer gets the rest: no
    // gap, no repeat, live events from a third node included.
    let resumed = EventStream::open_with(&events_url(b, &incident, &viewer), Some(offer_seq)).await;
    let noted = ok(
        c,
        &incident,
        &bob,
        "post_note",
        json!({"text": "command is mine now"}),
    )
    .await;
    let note_seq = noted["events"][0]["seq"].as_u64().unwrap();
    for stream in [&resumed, &viewer_stream] {
        wait_until("the note reaches the streams", || {
            stream.seqs().contains(&note_seq)
        })
        .await;
    }
    assert_eq!(
        resumed.seqs(),
        (offer_seq + 1..=note_seq).collect::<Vec<_>>()
    );
    assert_eq!(viewer_stream.seqs(), (1..=note_seq).collect::<Vec<_>>());
    // Every node agrees who is in command.
    for node in [a, b, c] {
        wait_state_at(node, &incident, &viewer, note_seq).await;
        let (_, state) = node
            .get_json(&format!("/api/incidents/{incident}/state"), &viewer)
            .await;
        let commander = state["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|view| view["role"] == "incident_commander")
            .unwrap()["holder"]["id"]
            .clone();
        assert_eq!(commander, "bob", "{state}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_reminder_fires_once_with_three_nodes_running() {
    let redis = RedisServer::start();
    let cluster = nodes(3, &redis, &[]);
    let (a, b, c) = (&cluster[0], &cluster[1], &cluster[2]);
    let alice = a.token(AccessRole::Responder, "Alice");
    let incident = declare(a, &alice, "Overdue everywhere").await;
    let stream = EventStream::open(&events_url(c, &incident, &alice)).await;
    // Far enough ahead to stay in the future on a loaded machine.
    let due = chrono::Utc::now() + chrono::Duration::seconds(4);
    let pinned = ok(
        b,
        &incident,
        &alice,
        "pin_status",
        json!({"summary": "investigating", "next_update_by": due.to_rfc3339()}),
    )
    .await;
    let pin_seq = pinned["events"][0]["seq"].as_u64().unwrap();
    // Every node knows the deadline (their timers all try).
    for node in [a, b, c] {
        wait_state_at(node, &incident, &alice, pin_seq).await;
    }
    let overdue = stream.wait_for("update_overdue").await;
    assert_eq!(overdue["pin"].as_u64(), Some(pin_seq));
    // Every node has folded in the reminder (so every timer has moved past
    // the deadline); then one more event round trip through each node.
    let overdue_seq = overdue["seq"].as_u64().unwrap();
    for node in [a, b, c] {
        wait_state_at(node, &incident, &alice, overdue_seq).await;
        let (_, state) = node
            .get_json(&format!("/api/incidents/{incident}/state"), &alice)
            .await;
        assert_eq!(state["pin"]["overdue"], true, "{state}");
    }
    let mut last = overdue_seq;
    for node in [a, b, c] {
        let noted = ok(
            node,
            &incident,
            &alice,
            "post_note",
            json!({"text": "here"}),
        )
        .await;
        last = noted["events"][0]["seq"].as_u64().unwrap();
    }
    wait_until("the notes reach the stream", || {
        stream.seqs().contains(&last)
    })
    .await;
    assert_eq!(stream.of_kind("update_overdue").len(), 1);
    assert_eq!(stream.seqs(), (1..=last).collect::<Vec<_>>());
    let stored = timeline(a, &incident, &alice).await;
    assert_eq!(
        stored
            .iter()
            .filter(|event| event["type"] == "update_overdue")
            .count(),
        1,
        "announced once cluster-wide"
    );
    assert_eq!(seqs(&stored), (1..=last).collect::<Vec<_>>());
}

/// Posts five rounds of notes `"{tag} n"`, one per node of each round;
/// returns the seq of the last.
async fn post_notes(nodes: [&TestServer; 2], incident: &str, token: &str, tag: &str) -> u64 {
    let mut last = 0;
    for n in 0..5 {
        for node in nodes {
            let noted = ok(
                node,
                incident,
                token,
                "post_note",
                json!({ "text": format!("{tag} {n}") }),
            )
            .await;
            last = noted["events"][0]["seq"].as_u64().unwrap();
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_node_while_redis_is_down_and_after_it_returns() {
    let mut redis = RedisServer::start();
    let cluster = nodes(2, &redis, &[]);
    let (a, b) = (&cluster[0], &cluster[1]);
    let alice = a.token(AccessRole::Responder, "Alice");
    let incident = declare(a, &alice, "Redis down").await;
    let on_a = EventStream::open(&events_url(a, &incident, &alice)).await;
    let on_b = EventStream::open(&events_url(b, &incident, &alice)).await;

    // Redis gone: nothing is relayed, every node reads storage instead.
    redis.kill9();
    let last = post_notes([a, b], &incident, &alice, "down").await;
    for stream in [&on_a, &on_b] {
        wait_until("the streams have every note of the outage", || {
            stream.seqs().contains(&last)
        })
        .await;
    }
    // Back: the relay resumes.
    redis.restart();
    let last = post_notes([b, a], &incident, &alice, "up").await;
    for stream in [&on_a, &on_b] {
        wait_until("the streams have every note", || {
            stream.seqs().contains(&last)
        })
        .await;
        assert_eq!(
            stream.seqs(),
            (1..=last).collect::<Vec<_>>(),
            "once each, in order"
        );
    }
    assert_eq!(
        seqs(&timeline(b, &incident, &alice).await),
        (1..=last).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_reminder_fires_once_when_the_node_that_armed_it_was_killed() {
    let redis = RedisServer::start();
    let mut cluster = nodes(3, &redis, &[]);
    let alice = cluster[0].token(AccessRole::Responder, "Alice");
    let incident = declare(&cluster[0], &alice, "Overdue after a crash").await;
    let stream = EventStream::open(&events_url(&cluster[2], &incident, &alice)).await;
    let due = chrono::Utc::now() + chrono::Duration::seconds(4);
    // Pinned on node B, which then dies before the deadline.
    let pinned = ok(
        &cluster[1],
        &incident,
        &alice,
        "pin_status",
        json!({"summary": "investigating", "next_update_by": due.to_rfc3339()}),
    )
    .await;
    let pin_seq = pinned["events"][0]["seq"].as_u64().unwrap();
    for node in [&cluster[0], &cluster[2]] {
        wait_state_at(node, &incident, &alice, pin_seq).await;
    }
    cluster[1].kill9();
    // The survivors fire it, once.
    let overdue = stream.wait_for("update_overdue").await;
    assert_eq!(overdue["pin"].as_u64(), Some(pin_seq));
    let overdue_seq = overdue["seq"].as_u64().unwrap();
    let mut last = overdue_seq;
    for node in [&cluster[0], &cluster[2]] {
        wait_state_at(node, &incident, &alice, overdue_seq).await;
        let noted = ok(
            node,
            &incident,
            &alice,
            "post_note",
            json!({"text": "still here"}),
        )
        .await;
        last = noted["events"][0]["seq"].as_u64().unwrap();
    }
    wait_until("the notes reach the stream", || {
        stream.seqs().contains(&last)
    })
    .await;
    assert_eq!(stream.of_kind("update_overdue").len(), 1);
    let stored = timeline(&cluster[0], &incident, &alice).await;
    assert_eq!(
        stored
            .iter()
            .filter(|event| event["type"] == "update_overdue")
            .count(),
        1,
        "announced once cluster-wide"
    );
    assert_eq!(seqs(&stored), (1..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_seen_only_on_another_node_can_be_named_and_listed() {
    let redis = RedisServer::start();
    let cluster = nodes(2, &redis, &[]);
    let (a, b) = (&cluster[0], &cluster[1]);
    let mary = a.token(AccessRole::Responder, "Mary");
    let incident = declare(b, &mary, "Named elsewhere").await;
    // Josephine's token is used on node A only, after B started.
    let josephine = a.keys().mint(
        "josephine",
        "Josephine Ng",
        AccessRole::Responder,
        None,
        Duration::from_secs(3600),
    );
    let (status, _) = a.get_json("/api/me", &josephine).await;
    assert_eq!(status, 200);
    // B knows her from storage (once A's record of her token, which A
    // writes without waiting, is committed), in the people list and in a
    // command.
    let started = std::time::Instant::now();
    loop {
        let (status, people) = b.get_json("/api/people?q=jose", &mary).await;
        assert_eq!(status, 200, "{people}");
        if people.to_string().contains("Josephine Ng") {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "B never listed Josephine: {people}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let assigned = ok(
        b,
        &incident,
        &mary,
        "assign_role",
        json!({"role": "operations_lead", "to": {"id": "josephine", "name": "Jo"}}),
    )
    .await;
    assert!(assigned.to_string().contains("Josephine Ng"), "{assigned}");
    // Someone nobody has seen is still refused.
    let (status, refused) = b
        .post_json(
            &format!("/api/incidents/{incident}/commands/assign_role"),
            &mary,
            &json!({"role": "planning_lead", "to": {"id": "nobody", "name": "No One"}}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "unknown_person");
}
