//! Cluster mode with real engines: `commandpost` nodes on distinct loopback
//! addresses sharing one PostgreSQL database and one Redis (`--redis`), an
//! HAProxy in front of them. Faults are real: `kill -9` of a node, of
//! Redis. Every wait is for a condition, bounded by `support::WAIT`.

use std::time::Duration;

use commandpost_shared::AccessRole;

use crate::support::haproxy::HaProxy;
use crate::support::node::NodeClient;
use crate::support::redis::RedisServer;
use crate::support::yclient::{Connect, YClient};
use crate::support::{TestServer, WAIT, loopback, test_postgres};

const SAVED: Connect = Connect {
    saved_acks: true,
    client_id: None,
};

/// `count` nodes on 127.0.0.2, .3, … on a fresh database and `redis`.
fn nodes(count: u8, redis: &RedisServer) -> Vec<TestServer> {
    nodes_with(count, redis, &[])
}

fn nodes_with(count: u8, redis: &RedisServer, args: &[&str]) -> Vec<TestServer> {
    crate::support::cluster_nodes(count, redis, args)
}

/// A counter of a node's `/metrics` (`commandpost_<name>_total`), which
/// must be there.
async fn metric(node: &TestServer, name: &str) -> f64 {
    let line = format!("commandpost_{name}_total");
    node.metric(&line)
        .await
        .unwrap_or_else(|| panic!("no metric {line} on {}", node.addr))
}

/// Waits until every client's text contains every one of `chunks`, and
/// all texts are equal; returns the text.
async fn wait_all_hold(clients: &[&YClient], chunks: &[String]) -> String {
    let started = std::time::Instant::now();
    loop {
        let texts: Vec<String> = clients.iter().map(|client| client.read()).collect();
        if texts.iter().all(|text| text == &texts[0])
            && chunks.iter().all(|chunk| texts[0].contains(chunk.as_str()))
        {
            return texts[0].clone();
        }
        if started.elapsed() > WAIT {
            let missing: Vec<&String> = chunks
                .iter()
                .filter(|chunk| !texts[0].contains(chunk.as_str()))
                .collect();
            panic!("the clients did not converge; missing {missing:?}; texts:\n{texts:#?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Types `count` tagged chunks at the end of the document, waiting for each
/// to be saved; returns them.
async fn type_saved(client: &YClient, tag: &str, count: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    for n in 0..count {
        let chunk = format!("[{tag}{n}]");
        client.push(&chunk);
        client.wait_saved().await;
        chunks.push(chunk);
    }
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_clients_on_two_nodes_converge_and_a_viewer_on_a_third_follows() {
    // Redis with a password: AUTH through the URL.
    let redis = RedisServer::start_with_password();
    let cluster = nodes(3, &redis);
    let proxy = HaProxy::start(&cluster.iter().map(|node| node.addr).collect::<Vec<_>>());
    proxy.wait_all_up().await;
    let (a, b, c) = (&cluster[0], &cluster[1], &cluster[2]);
    let incident = a.create_incident("Across nodes").await;
    let room = incident.to_string();

    let mut nia = NodeClient::spawn().await;
    nia.connect(&a.ws_base(), &room, &a.token(AccessRole::Responder, "Nia"))
        .await;
    let mut noor = NodeClient::spawn().await;
    noor.connect(&b.ws_base(), &room, &b.token(AccessRole::Responder, "Noor"))
        .await;
    let viewer = YClient::connect(&c.ws_url(&incident, &c.token(AccessRole::Viewer, "Vic"))).await;

    // Both type at once, at the start (which no remote edit can move into
    // the middle of a chunk).
    let mut typed = Vec::new();
    for n in 0..25 {
        for (name, client) in [("nia", &mut nia), ("noor", &mut noor)] {
            let chunk = format!("<{name}{n}>");
            client.insert(0, &chunk).await;
            typed.push(chunk);
        }
    }
    let started = std::time::Instant::now();
    let text = loop {
        let (one, two) = (nia.text().await, noor.text().await);
        if one == two && typed.iter().all(|chunk| one.contains(chunk.as_str())) {
            break one;
        }
        assert!(
            started.elapsed() < WAIT,
            "the stock clients did not converge:\n{one:?}\n{two:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // The viewer on the third node follows live, and so does a late
    // joiner through the load balancer, wherever it lands.
    viewer.wait_text(&text).await;
    let late =
        YClient::connect(&proxy.ws_url(&incident, &a.token(AccessRole::Viewer, "Late"))).await;
    late.wait_text(&text).await;
    // The edits crossed on the bus, not only through storage.
    assert!(metric(c, "bus_received").await > 0.0);
    assert!(metric(a, "bus_published").await > 0.0);
    nia.quit().await;
    noor.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_burst_loses_nothing_acknowledged_and_its_clients_move_through_haproxy() {
    let redis = RedisServer::start();
    let mut cluster = nodes(3, &redis);
    let proxy = HaProxy::start(&cluster.iter().map(|node| node.addr).collect::<Vec<_>>());
    proxy.wait_all_up().await;
    let incident = cluster[0].create_incident("Kill a node").await;
    let token = cluster[0].token(AccessRole::Responder, "Ed");

    // One saving editor per node, and stock clients through the proxy.
    let mut editors = Vec::new();
    for node in &cluster {
        editors.push(YClient::connect_with(&node.ws_url(&incident, &token), SAVED).await);
    }
    let mut stock = Vec::new();
    for name in ["Sam", "Sol", "Sid"] {
        let mut client = NodeClient::spawn().await;
        let base = format!("ws://{}/ws", proxy.addr());
        client
            .connect(
                &base,
                &incident.to_string(),
                &cluster[0].token(AccessRole::Responder, name),
            )
            .await;
        stock.push(client);
    }

    // A burst from every editor; node 2 dies in the middle of it.
    let mut acknowledged = Vec::new();
    for (i, editor) in editors.iter().enumerate() {
        acknowledged.extend(type_saved(editor, &format!("e{i}n"), 10).await);
    }
    // The dead node's editor: each chunk with its change number, which
    // "saved up to n" acknowledges.
    let mut on_dead = Vec::new();
    for n in 0..20 {
        for (i, editor) in editors.iter().enumerate() {
            let chunk = format!("[burst{i}n{n}]");
            editor.push(&chunk);
            if i == 1 {
                on_dead.push((chunk, editor.changes_sent()));
            } else {
                acknowledged.push(chunk);
            }
        }
    }
    cluster[1].kill9();
    let killed = cluster[1].addr;
    // What the dead node's editor had acknowledged before it died counts;
    // the rest was never acknowledged.
    for (i, editor) in editors.iter().enumerate() {
        if i != 1 {
            editor.wait_saved().await;
        }
    }
    let saved_on_dead = editors[1].saved();
    acknowledged.extend(
        on_dead
            .into_iter()
            .filter(|(_, change)| *change <= saved_on_dead)
            .map(|(chunk, _)| chunk),
    );
    proxy.wait_down(killed).await;

    // Every acknowledged update is on every surviving node, in what a
    // fresh client loads through the proxy, and in PostgreSQL (a node
    // started afterwards loads it).
    let viewer_token = cluster[0].token(AccessRole::Viewer, "Vic");
    let on_a = YClient::connect(&cluster[0].ws_url(&incident, &viewer_token)).await;
    let on_c = YClient::connect(&cluster[2].ws_url(&incident, &viewer_token)).await;
    let through = YClient::connect(&proxy.ws_url(&incident, &viewer_token)).await;
    let fresh = cluster[0].start_peer_at(loopback(9));
    let from_storage = YClient::connect(&fresh.ws_url(&incident, &viewer_token)).await;
    wait_all_hold(
        &[
            &on_a,
            &on_c,
            &through,
            &from_storage,
            &editors[0],
            &editors[2],
        ],
        &acknowledged,
    )
    .await;

    // The stock clients that were on the dead node reconnected through the
    // proxy by themselves; everyone converges on one text.
    let started = std::time::Instant::now();
    loop {
        let mut texts = Vec::new();
        for client in &mut stock {
            texts.push(client.text().await);
        }
        let reference = on_a.read();
        if texts.iter().all(|t| *t == reference)
            && acknowledged.iter().all(|c| reference.contains(c.as_str()))
        {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the stock clients did not reconverge:\n{texts:#?}\n{reference:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for client in stock {
        client.quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_burst_loses_nothing_and_the_relay_resumes() {
    let mut redis = RedisServer::start();
    let cluster = nodes(2, &redis);
    let (a, b) = (&cluster[0], &cluster[1]);
    let incident = a.create_incident("Redis dies").await;
    let token = a.token(AccessRole::Responder, "Ed");
    let on_a = YClient::connect_with(&a.ws_url(&incident, &token), SAVED).await;
    let on_b = YClient::connect_with(&b.ws_url(&incident, &token), SAVED).await;

    let mut acknowledged = type_saved(&on_a, "before", 5).await;
    acknowledged.extend(type_saved(&on_b, "beforeb", 5).await);
    wait_all_hold(&[&on_a, &on_b], &acknowledged).await;

    // Redis dies in the middle of a burst; it had no persistence.
    for n in 0..10 {
        on_a.push(&format!("[burst{n}]"));
        acknowledged.push(format!("[burst{n}]"));
    }
    redis.kill9();
    on_a.wait_saved().await;
    // Without Redis the nodes keep serving, and each other's edits still
    // arrive (read from PostgreSQL).
    acknowledged.extend(type_saved(&on_b, "during", 5).await);
    acknowledged.extend(type_saved(&on_a, "duringa", 5).await);
    wait_all_hold(&[&on_a, &on_b], &acknowledged).await;
    assert_eq!(
        reqwest::get(a.url("/readyz")).await.unwrap().status(),
        200,
        "a node without Redis is still ready"
    );

    // Redis returns, empty; the relay resumes without restarting a node.
    redis.restart();
    let received = metric(b, "bus_received").await;
    let started = std::time::Instant::now();
    let mut n = 0;
    loop {
        let chunk = format!("[after{n}]");
        on_a.push(&chunk);
        on_a.wait_saved().await;
        acknowledged.push(chunk);
        n += 1;
        if metric(b, "bus_received").await > received {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the relay over Redis did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_all_hold(&[&on_a, &on_b], &acknowledged).await;
    let fresh = a.start_peer_at(loopback(9));
    let loaded = YClient::connect(&fresh.ws_url(&incident, &token)).await;
    wait_all_hold(&[&on_a, &loaded], &acknowledged).await;
}

/// The presence counts a node reports for an incident.
async fn presence(node: &TestServer, incident: &commandpost_shared::IncidentId) -> (u64, u64) {
    let (status, body) = node
        .get_json(
            &format!("/api/incidents/{incident}"),
            &node.token(AccessRole::Viewer, "Peek"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["presence"]["editors"].as_u64().unwrap(),
        body["presence"]["viewers"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_and_presence_cross_nodes_and_a_dead_nodes_cursors_expire() {
    let redis = RedisServer::start();
    // A short awareness timeout, so a dead node's cursor goes quickly.
    let mut cluster = nodes_with(3, &redis, &["--cluster-awareness-timeout", "3s"]);
    let incident = cluster[0].create_incident("Cursors").await;
    let ada = YClient::connect(
        &cluster[0].ws_url(&incident, &cluster[0].token(AccessRole::Responder, "Ada")),
    )
    .await;
    let bo = YClient::connect(
        &cluster[1].ws_url(&incident, &cluster[1].token(AccessRole::Responder, "Bo")),
    )
    .await;
    let vic = YClient::connect(
        &cluster[2].ws_url(&incident, &cluster[2].token(AccessRole::Viewer, "Vic")),
    )
    .await;

    // Ada's cursor on node A reaches the editor on B and the viewer on C,
    // named by the server from her token.
    ada.send_awareness(424_242, 1, r#"{"cursor":{"anchor":3}}"#);
    for (who, client) in [("Bo", &bo), ("Vic", &vic)] {
        let seen = client.seen.clone();
        crate::support::wait_until(&format!("Ada's cursor at {who}"), || {
            seen.lock()
                .awareness
                .get(&424_242)
                .is_some_and(|json| json.contains("\"Ada\""))
        })
        .await;
    }
    // A viewer's awareness never leaves its node.
    vic.send_awareness(515_151, 1, r#"{"cursor":{"anchor":1}}"#);

    // Presence is cluster-wide: two editors and a viewer, on any node.
    for node in &cluster {
        let started = std::time::Instant::now();
        while presence(node, &incident).await != (2, 1) {
            assert!(
                started.elapsed() < WAIT,
                "presence on {} never reached 2 editors and 1 viewer",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        bo.awareness_state(515_151).is_none(),
        "a viewer's awareness was relayed"
    );

    // Node A dies without a goodbye: Ada's cursor goes away on B and C
    // within the awareness timeout, and she no longer counts.
    cluster[0].kill9();
    for (who, client) in [("Bo", &bo), ("Vic", &vic)] {
        let seen = client.seen.clone();
        crate::support::wait_until(&format!("Ada's cursor removed at {who}"), || {
            seen.lock()
                .awareness
                .get(&424_242)
                .is_some_and(|json| json == "null")
        })
        .await;
    }
    let started = std::time::Instant::now();
    while presence(&cluster[2], &incident).await != (1, 1) {
        assert!(
            started.elapsed() < WAIT,
            "the dead node's editor still counts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_closes_sockets_on_another_with_and_without_redis() {
    let mut redis = RedisServer::start();
    let cluster = nodes(3, &redis);
    let (a, c) = (&cluster[0], &cluster[2]);
    let incident = a.create_incident("Revoked elsewhere").await;
    let admin = a.token(AccessRole::Admin, "Admin");
    let revoke = |token: &str| {
        let id = a.keys().verify(token).unwrap().jti;
        let admin = admin.clone();
        async move {
            let (status, body) = a
                .post_json(
                    &format!("/api/tokens/{id}/revoke"),
                    &admin,
                    &serde_json::json!({}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };

    // Over the bus.
    let vic = a.token(AccessRole::Viewer, "Vic");
    let bystander =
        YClient::connect(&c.ws_url(&incident, &a.token(AccessRole::Viewer, "Val"))).await;
    let on_c = YClient::connect(&c.ws_url(&incident, &vic)).await;
    let started = std::time::Instant::now();
    revoke(&vic).await;
    let (code, reason) = on_c.wait_closed().await;
    assert_eq!(code, 4401, "{reason}");
    eprintln!(
        "revocation on A closed a socket on C after {:?} (bus)",
        started.elapsed()
    );
    assert!(
        YClient::open(
            &c.ws_url(&incident, &vic),
            yrs::Doc::new(),
            Connect::default()
        )
        .await
        .is_err(),
        "C accepts a revoked token"
    );

    // Without Redis: C finds it in storage.
    redis.kill9();
    let vera = a.token(AccessRole::Viewer, "Vera");
    let on_c = YClient::connect(&c.ws_url(&incident, &vera)).await;
    let started = std::time::Instant::now();
    revoke(&vera).await;
    let (code, reason) = on_c.wait_closed().await;
    assert_eq!(code, 4401, "{reason}");
    eprintln!(
        "revocation on A closed a socket on C after {:?} (Redis down)",
        started.elapsed()
    );
    assert!(
        bystander.seen.lock().closed.is_none(),
        "a socket of another token closed"
    );
}

/// Cycles of the cluster crash loop (`COMMANDPOST_CLUSTER_CRASH_CYCLES`).
fn crash_cycles() -> u32 {
    std::env::var("COMMANDPOST_CLUSTER_CRASH_CYCLES")
        .ok()
        .map_or(20, |value| {
            value.trim().parse().expect("a number of cycles")
        })
}

/// Waits until every node serves the same document holding every one of
/// `chunks`, read by a fresh viewer on each.
async fn wait_nodes_agree(
    cluster: &[TestServer],
    incident: &commandpost_shared::IncidentId,
    chunks: &[String],
) {
    let token = cluster[0].token(AccessRole::Viewer, "Checker");
    let mut viewers = Vec::new();
    for node in cluster {
        viewers.push(YClient::connect(&node.ws_url(incident, &token)).await);
    }
    let refs: Vec<&YClient> = viewers.iter().collect();
    wait_all_hold(&refs, chunks).await;
}

/// Waits until every node answers the same incident (its state, presence
/// aside) and the same timeline, holding every one of `notes`.
async fn wait_same_incident(
    cluster: &[TestServer],
    incident: &commandpost_shared::IncidentId,
    notes: &[String],
) {
    let token = cluster[0].token(AccessRole::Viewer, "Checker");
    let started = std::time::Instant::now();
    loop {
        let mut seen = Vec::new();
        for node in cluster {
            let (_, mut state) = node
                .get_json(&format!("/api/incidents/{incident}"), &token)
                .await;
            if let Some(state) = state.as_object_mut() {
                state.remove("presence");
            }
            let (_, timeline) = node
                .get_json(
                    &format!("/api/incidents/{incident}/timeline?limit=1000"),
                    &token,
                )
                .await;
            seen.push((state, timeline));
        }
        let text = seen[0].1.to_string();
        if seen.iter().all(|one| *one == seen[0])
            && notes.iter().all(|note| text.contains(note.as_str()))
        {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the nodes do not agree on the incident or miss acknowledged notes: {:?}",
            notes
                .iter()
                .filter(|note| !text.contains(note.as_str()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_crash_loop_loses_nothing_acknowledged() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("COMMANDPOST_CLUSTER_CRASH_SEED")
        .ok()
        .map_or_else(rand::random, |value| value.trim().parse().expect("a seed"));
    let cycles = crash_cycles();
    eprintln!(
        "cluster crash loop: {cycles} cycles, seed {seed} (COMMANDPOST_CLUSTER_CRASH_SEED replays it)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut redis = RedisServer::start();
    // A small compaction threshold, so kills also land around compactions
    // made by several nodes.
    let mut cluster = nodes_with(
        3,
        &redis,
        &["--compact-after-updates", "100", "--command-burst", "1000"],
    );
    let incident = cluster[0].create_incident("Cluster crash loop").await;
    let token = cluster[0].token(AccessRole::Responder, "Ed");
    let mut acknowledged: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut kills = std::collections::BTreeMap::<String, u32>::new();

    for cycle in 1..=cycles {
        // Three editors, one per node, append tagged chunks as fast as
        // their acknowledgements come.
        let mut editors = Vec::new();
        for node in &cluster {
            editors.push(std::sync::Arc::new(
                YClient::connect_with(&node.ws_url(&incident, &token), SAVED).await,
            ));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for (i, editor) in editors.iter().enumerate() {
            let (editor, stop) = (editor.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Acquire) && n < 400 {
                    let chunk = format!("[c{cycle}e{i}n{n}]");
                    editor.push(&chunk);
                    sent.push((chunk, editor.changes_sent()));
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                sent
            }));
        }
        // A stream of commands: notes posted on the nodes in turn; those
        // answered 200 are acknowledged.
        let poster = {
            let (stop, token) = (stop.clone(), token.clone());
            let urls: Vec<String> = cluster
                .iter()
                .map(|node| node.url(&format!("/api/incidents/{incident}/commands/post_note")))
                .collect();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut acknowledged = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Acquire) && n < 12 {
                    let text = format!("note c{cycle}n{n}");
                    let answer = client
                        .post(&urls[n % urls.len()])
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "text": text }))
                        .send()
                        .await;
                    if answer.is_ok_and(|answer| answer.status() == 200) {
                        acknowledged.push(text);
                    }
                    n += 1;
                }
                acknowledged
            })
        };
        // The kill lands at a random moment once every editor has had
        // something saved.
        for editor in &editors {
            let editor = editor.clone();
            crate::support::wait_until("a first save this cycle", move || editor.saved() > 1).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..=200))).await;
        let victim = rng.random_range(0..4usize);
        if victim == 3 {
            redis.kill9();
            *kills.entry("redis".into()).or_default() += 1;
        } else {
            cluster[victim].kill9();
            *kills.entry(format!("node {victim}")).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, std::sync::atomic::Ordering::Release);
        for (i, writer) in writers.into_iter().enumerate() {
            let sent = writer.await.unwrap();
            // The survivors' editors get every chunk they sent saved; the
            // dead node's, only what it acknowledged before dying.
            if victim != i {
                editors[i].wait_saved().await;
            }
            let saved = editors[i].saved();
            acknowledged.extend(
                sent.into_iter()
                    .filter(|(_, change)| *change <= saved)
                    .map(|(chunk, _)| chunk),
            );
        }
        notes.extend(poster.await.unwrap());
        drop(editors);
        if victim == 3 {
            redis.restart();
        } else {
            cluster[victim].restart();
        }
        // Every node, the restarted one included, serves one document
        // holding everything acknowledged so far, and one incident state
        // whose timeline holds every acknowledged note.
        wait_nodes_agree(&cluster, &incident, &acknowledged).await;
        wait_same_incident(&cluster, &incident, &notes).await;
    }
    eprintln!(
        "cluster crash loop: {cycles} cycles, {} acknowledged updates and {} acknowledged notes all present on every node; kills: {kills:?}",
        acknowledged.len(),
        notes.len()
    );
}

async fn ready(node: &TestServer) -> u16 {
    reqwest::get(node.url("/readyz"))
        .await
        .map_or(0, |response| response.status().as_u16())
}

async fn wait_ready(node: &TestServer, status: u16) {
    let started = std::time::Instant::now();
    while ready(node).await != status {
        assert!(
            started.elapsed() < WAIT,
            "/readyz of {} never answered {status}",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_stopped_mid_burst_pauses_acknowledgements_on_every_node_and_loses_nothing() {
    // A PostgreSQL of this test's own: it is stopped.
    let database = test_postgres::PgServer::start().unwrap_or_else(|error| panic!("{error}"));
    let url = database.create_database();
    let redis = RedisServer::start();
    let first = TestServer::start_on_url_at(
        loopback(2),
        &url,
        &["--redis", &redis.url(), "--store-timeout", "2s"],
    );
    let cluster = vec![first.start_peer_at(loopback(3)), first];
    let incident = cluster[0].create_incident("Database outage").await;
    let token = cluster[0].token(AccessRole::Responder, "Ed");
    let mut editors = Vec::new();
    for node in &cluster {
        editors.push(YClient::connect_with(&node.ws_url(&incident, &token), SAVED).await);
    }
    let mut acknowledged = Vec::new();
    for (i, editor) in editors.iter().enumerate() {
        acknowledged.extend(type_saved(editor, &format!("before{i}n"), 5).await);
    }

    // Mid-burst, PostgreSQL stops as if it crashed.
    for (i, editor) in editors.iter().enumerate() {
        for n in 0..10 {
            editor.push(&format!("[burst{i}n{n}]"));
        }
    }
    let saved_before: Vec<u64> = editors.iter().map(YClient::saved).collect();
    database.stop_immediate();
    for node in &cluster {
        wait_ready(node, 503).await;
    }
    // Nothing typed now is acknowledged: the editors' rooms close with a
    // retryable code.
    for editor in &editors {
        editor.push("[during]");
        let (code, reason) = editor.wait_closed().await;
        assert!(code == 1011 || code == 1012, "{code} {reason}");
    }
    // What was acknowledged before the stop counts.
    for (i, editor) in editors.iter().enumerate() {
        let saved = editor.saved();
        assert!(saved >= saved_before[i]);
        // Changes: the sync step, 5 chunks, then the burst.
        for n in 0..10u64 {
            if 7 + n <= saved {
                acknowledged.push(format!("[burst{i}n{n}]"));
            }
        }
    }
    database.restart();
    for node in &cluster {
        wait_ready(node, 200).await;
    }
    // Acknowledgements resume on every node, and nothing acknowledged is
    // missing anywhere.
    let mut after = Vec::new();
    for node in &cluster {
        after.push(YClient::connect_with(&node.ws_url(&incident, &token), SAVED).await);
    }
    for (i, editor) in after.iter().enumerate() {
        acknowledged.extend(type_saved(editor, &format!("after{i}n"), 3).await);
    }
    wait_nodes_agree(&cluster, &incident, &acknowledged).await;
}

/// A throwaway CA and a certificate it signed for `localhost`: (CA PEM,
/// certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "Command Post test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let certificate = params.signed_by(&key, &issuer).unwrap().pem();
    (ca_pem, certificate, key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_redis_over_tls_with_a_private_ca() {
    let (ca, certificate, key) = certificates();
    let redis = RedisServer::start_tls(&certificate, &key, &ca);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("redis-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let database = test_postgres::fresh_database();
    let url = redis.tls_url();
    let first = TestServer::start_on_url_at(
        loopback(2),
        &database,
        &["--redis", &url, "--redis-ca", ca_file.to_str().unwrap()],
    );
    let second = first.start_peer_at(loopback(3));
    let incident = first.create_incident("Over TLS").await;
    let token = first.token(AccessRole::Responder, "Ed");
    let on_first = YClient::connect_with(&first.ws_url(&incident, &token), SAVED).await;
    let on_second = YClient::connect_with(&second.ws_url(&incident, &token), SAVED).await;
    // The edits cross on the bus over TLS: the second node receives them
    // from Redis (not only from storage).
    let started = std::time::Instant::now();
    let mut chunks = Vec::new();
    let mut n = 0;
    while metric(&second, "bus_received").await == 0.0 {
        chunks.extend(type_saved(&on_first, &format!("tls{n}n"), 1).await);
        n += 1;
        assert!(started.elapsed() < WAIT, "nothing arrived over the TLS bus");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_all_hold(&[&on_first, &on_second], &chunks).await;

    // A node that does not trust the certificate never connects to the bus
    // (and logs that it cannot reach Redis), but still serves.
    let (other_ca, _, _) = certificates();
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    let distrustful = first.start_peer_with(
        loopback(4),
        &["--redis", &url, "--redis-ca", other_file.to_str().unwrap()],
    );
    let reader = YClient::connect(&distrustful.ws_url(&incident, &token)).await;
    wait_all_hold(&[&reader, &on_first], &chunks).await;
    let started = std::time::Instant::now();
    while !distrustful.logs().contains("cannot reach Redis") {
        assert!(
            started.elapsed() < WAIT,
            "no log line about Redis:\n{}",
            distrustful.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&distrustful, "bus_received").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_nginx_configuration_carries_documents_and_event_streams() {
    let redis = RedisServer::start();
    let cluster = nodes(2, &redis);
    let proxy = crate::support::nginx::Nginx::start(
        &cluster.iter().map(|node| node.addr).collect::<Vec<_>>(),
    );
    let incident = cluster[0].create_incident("Through nginx").await;
    let token = cluster[0].token(AccessRole::Responder, "Ed");
    // A stock client and an event stream through nginx, an editor on a node.
    let mut stock = NodeClient::spawn().await;
    stock
        .connect(
            &format!("ws://{}/ws", proxy.addr()),
            &incident.to_string(),
            &token,
        )
        .await;
    let stream = crate::support::sse::EventStream::open(&format!(
        "http://{}/api/incidents/{incident}/events?token={token}",
        proxy.addr()
    ))
    .await;
    let editor = YClient::connect_with(&cluster[1].ws_url(&incident, &token), SAVED).await;
    let chunks = type_saved(&editor, "nginx", 3).await;
    stock.insert(0, "<stock>").await;
    let started = std::time::Instant::now();
    loop {
        let text = stock.text().await;
        if chunks.iter().all(|chunk| text.contains(chunk.as_str())) && editor.read() == text {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "no convergence through nginx:\n{text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in &cluster {
        let (status, body) = node
            .post_json(
                &format!("/api/incidents/{incident}/commands/post_note"),
                &token,
                &serde_json::json!({ "text": format!("via {}", node.addr) }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    crate::support::wait_until("both notes on the stream through nginx", || {
        stream.of_kind("note_posted").len() == 2
    })
    .await;
    stock.quit().await;
}
