//! Durability: restarts, real `kill -9`, clients resyncing what the server
//! lost, log compaction, and one room per incident.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use commandpost::store::Store;
use commandpost_shared::AccessRole;
use serde_json::json;

use crate::support::node::NodeClient;
use crate::support::yclient::{Connect, YClient};
use crate::support::{Store as Backend, TestServer, wait_until};

const SAVED: Connect = Connect {
    saved_acks: true,
    client_id: None,
};

crate::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    documents_survive_a_clean_restart_and_a_crash,
    survive_a_clean_restart_and_a_crash
);
async fn survive_a_clean_restart_and_a_crash(store: Backend) {
    let mut server = TestServer::start_on(store);
    let first = server.create_incident("First").await;
    let second = server.create_incident("Second").await;
    let token = server.token(AccessRole::Responder, "Ada");
    let a = YClient::connect_with(&server.ws_url(&first, &token), SAVED).await;
    let b = YClient::connect_with(&server.ws_url(&second, &token), SAVED).await;
    a.push("\nfirst incident notes");
    b.insert(0, "second incident: ");
    a.wait_saved().await;
    b.wait_saved().await;
    let (text_a, text_b) = (a.read(), b.read());
    drop((a, b));

    // SIGTERM: clients are told, storage is flushed, exit code 0.
    let status = server.terminate();
    assert!(status.success(), "clean shutdown exits 0, got {status}");
    assert!(server.logs().contains("shut down cleanly"));
    server.restart();
    let token = server.token(AccessRole::Responder, "Ada");
    assert_eq!(
        YClient::connect(&server.ws_url(&first, &token))
            .await
            .read(),
        text_a
    );
    assert_eq!(
        YClient::connect(&server.ws_url(&second, &token))
            .await
            .read(),
        text_b
    );

    // kill -9 right after a saved edit.
    let a = YClient::connect_with(&server.ws_url(&first, &token), SAVED).await;
    a.push("\nafter restart");
    a.wait_saved().await;
    let text_a = a.read();
    drop(a);
    server.kill9();
    server.restart();
    assert_eq!(
        YClient::connect(&server.ws_url(&first, &token))
            .await
            .read(),
        text_a
    );
    let (status, list) = server.get_json("/api/incidents", &token).await;
    assert_eq!(status, 200);
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "both incidents survive: {list}"
    );
}

crate::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    kill_9_during_a_burst_loses_no_update_acknowledged_as_saved,
    kill_9_during_a_burst
);
async fn kill_9_during_a_burst(store: Backend) {
    let mut server = TestServer::start_on(store);
    let incident = server.create_incident("Burst").await;
    let url = server.ws_url(&incident, &server.token(AccessRole::Responder, "Writer"));
    let writer = Arc::new(YClient::connect_with(&url, SAVED).await);

    // One token per transaction (= one update message = one change number).
    let stop = Arc::new(AtomicBool::new(false));
    let burst = tokio::spawn({
        let writer = writer.clone();
        let stop = stop.clone();
        async move {
            let mut sent = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                writer.push(&format!("w{i};"));
                sent.push((i, writer.changes_sent()));
                i += 1;
                if i.is_multiple_of(16) {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            sent
        }
    });
    let seen = writer.seen.clone();
    wait_until("300 changes acknowledged", || seen.lock().saved >= 300).await;
    server.kill9();
    // Acknowledgements already on the wire were sent after their flush, so
    // they count; wait for the socket to end to read the final value.
    wait_until("the socket to end", || seen.lock().ended).await;
    stop.store(true, Ordering::Relaxed);
    let sent = burst.await.unwrap();
    let acknowledged = writer.saved();
    let in_flight = sent
        .iter()
        .filter(|(_, change)| *change > acknowledged)
        .count();
    assert!(
        in_flight > 0,
        "the kill must land mid-burst (all {} were acknowledged)",
        sent.len()
    );

    server.restart();
    let reader =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Responder, "Reader")))
            .await;
    let text = reader.read();
    let lost: Vec<u64> = sent
        .iter()
        .filter(|(i, change)| *change <= acknowledged && !text.contains(&format!("w{i};")))
        .map(|(i, _)| *i)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged updates lost after kill -9: {lost:?}"
    );
    eprintln!(
        "kill -9 mid-burst: {} updates sent, {} acknowledged as saved, {} in flight, 0 lost",
        sent.len(),
        acknowledged,
        in_flight
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_give_back_edits_the_server_never_saved() {
    let mut server = TestServer::start();
    let incident = server.create_incident("Offline").await;
    let token = server.token(AccessRole::Responder, "Ada");
    let rust = YClient::connect_with(&server.ws_url(&incident, &token), SAVED).await;
    let mut stock = NodeClient::spawn().await;
    stock
        .connect(&server.ws_base(), &incident.to_string(), &token)
        .await;
    rust.push("\nsaved before the crash");
    rust.wait_saved().await;
    stock.wait_text(&rust.read()).await;

    server.kill9();
    // Both keep editing while the server is down: these edits exist only
    // in the clients.
    rust.push("\nyrs edit during the outage");
    stock.insert(0, "stock edit during the outage\n").await;
    server.restart();

    // The stock client reconnects by itself; the yrs client reconnects
    // with the document it holds. The normal sync hands the server both.
    let url = server.ws_url(&incident, &token);
    let _rust_again = YClient::connect_doc(&url, rust.doc.clone(), SAVED).await;
    stock
        .ok(json!({"cmd": "wait_synced", "timeout_ms": 20000}))
        .await;
    let fresh = YClient::connect(&url).await;
    wait_until("both offline edits on the server", || {
        let text = fresh.read();
        text.contains("yrs edit during the outage") && text.contains("stock edit during the outage")
    })
    .await;
    assert!(fresh.read().contains("saved before the crash"));
    stock.wait_text(&fresh.read()).await;
    stock.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_log_is_compacted_into_a_snapshot_and_reloads_exactly() {
    let mut server = TestServer::start_with(&["--compact-after-updates", "25"]);
    let incident = server.create_incident("Compaction").await;
    let url = server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada"));
    let client = YClient::connect_with(&url, SAVED).await;
    for i in 0..260 {
        client.push(&format!("c{i};"));
    }
    client.wait_saved().await;
    let text = client.read();
    drop(client);
    assert!(server.terminate().success());

    // Read the store directly: the log holds fewer than 25 entries after the
    // last snapshot, and snapshot + log rebuild the same text.
    {
        let store = Store::open(&server.data_dir().join("db")).unwrap();
        let stored = store.load_doc(&incident).unwrap();
        assert!(stored.snapshot.is_some());
        assert!(
            stored.updates.len() < 25,
            "log not bounded: {} entries",
            stored.updates.len()
        );
        assert_eq!(
            stored.next_seq, 261,
            "sequence numbers continue across compactions"
        ); // Unlock the database before the server opens it again.
        store.close();
    }
    server.restart();
    let url = server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada"));
    let reloaded = YClient::connect(&url).await;
    assert_eq!(reloaded.read(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_connections_share_one_room_which_unloads_when_idle() {
    let server = TestServer::start_with(&["--room-idle-timeout", "200ms"]);
    let incident = server.create_incident("One room").await;
    let url = server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada"));
    let clients =
        futures::future::join_all((0..8).map(|_| YClient::connect_with(&url, SAVED))).await;
    for (i, client) in clients.iter().enumerate() {
        client.insert(0, &format!("p{i};"));
    }
    for client in &clients {
        client.wait_saved().await;
    }
    let text = clients[0].read();
    for client in &clients {
        client.wait_text(&text).await;
    }
    let loads = |logs: &str| {
        logs.lines()
            .filter(|line| line.contains("room loaded"))
            .count()
    };
    assert_eq!(
        loads(&server.logs()),
        1,
        "eight simultaneous joins load the room once"
    );

    drop(clients);
    wait_until("the idle room to unload", || {
        server.logs().contains("room unloaded")
    })
    .await;
    let again = YClient::connect(&url).await;
    assert_eq!(again.read(), text);
    assert_eq!(
        loads(&server.logs()),
        2,
        "the room was loaded again from storage"
    );
}

/// A hostile update whose item's origin lies after its right origin (found
/// by the session fuzz target) integrates at one place live and at another
/// when a snapshot of the document is decoded. Compaction must then keep the
/// log, so that a restart loads what everyone saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_log_when_a_snapshot_would_reload_differently() {
    let mut server = TestServer::start_with(&["--compact-after-updates", "3"]);
    let incident = server.create_incident("Crossed origins").await;
    let url = server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada"));
    let writer = YClient::connect_with(
        &url,
        Connect {
            saved_acks: true,
            client_id: Some(77),
        },
    )
    .await;
    let watcher = YClient::connect(&url).await;
    writer.push("\nErrors since 09:00 UTC on every checkout host.");
    writer.wait_saved().await;
    // Client 42's item: origin (77, 39), right origin (77, 8).
    writer.send_update(vec![
        1, 1, 42, 0, 0xc4, 77, 39, 77, 8, 3, b'A', b'A', b'A', 0,
    ]);
    writer.wait_saved().await;
    for i in 0..4 {
        writer.push(&format!(" more{i}"));
    }
    let saved = writer.wait_saved().await;
    assert!(saved >= 6, "{saved}");
    // The watcher applied the same updates in the same order as the server.
    wait_until("the watcher to see every edit", || {
        watcher.read().contains("more3")
    })
    .await;
    let live = watcher.read();
    assert!(live.contains("AAA"), "{live}");
    wait_until("compaction to be refused", || {
        server.logs().contains("not compacting the document log")
    })
    .await;
    let refused = server.metric("commandpost_compactions_refused_total").await;
    assert!(refused.is_some_and(|count| count != 0.0), "{refused:?}");
    drop((writer, watcher));
    let before = postmortem(&server, &incident).await;
    assert!(before.contains("AAA"), "{before}");

    server.kill9();
    server.restart();
    // The server's own document (which postmortems read) is the one
    // everyone saw. (A client joining now is sent a full state that Yjs
    // decodes in the snapshot's order: a known limitation for documents
    // holding such updates; see ARCHITECTURE.md.)
    assert_eq!(postmortem(&server, &incident).await, before);
}

async fn postmortem(server: &TestServer, incident: &commandpost_shared::IncidentId) -> String {
    let response = reqwest::Client::new()
        .get(server.url(&format!("/api/incidents/{incident}/postmortem.md")))
        .bearer_auth(server.token(AccessRole::Viewer, "Vic"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}
