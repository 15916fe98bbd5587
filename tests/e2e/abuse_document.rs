//! Document abuse (issue 11): one responder can neither freeze a full
//! document for everyone nor grow it as fast as the network allows,
//! against the real binary.

use commandpost_shared::{AccessRole, IncidentId};
use yrs::{Text, Transact};

use crate::support::yclient::{Connect, YClient};
use crate::support::{TestServer, wait_until};

fn responder(server: &TestServer, incident: &IncidentId, name: &str) -> String {
    server.ws_url(incident, &server.token(AccessRole::Responder, name))
}

async fn connect_saving(url: &str) -> YClient {
    YClient::connect_with(
        url,
        Connect {
            saved_acks: true,
            client_id: None,
        },
    )
    .await
}

/// Waits until everything `client` sent is saved, failing at once if the
/// server closed it instead.
async fn saved_and_open(client: &YClient, what: &str) {
    let target = client.changes_sent();
    let seen = client.seen.clone();
    wait_until(what, || {
        let seen = seen.lock();
        seen.saved >= target || seen.closed.is_some()
    })
    .await;
    let closed = client.seen.lock().closed.clone();
    assert!(closed.is_none(), "{what}: closed with {closed:?}");
}

/// The value of one metric line (`name` with its labels), 0 when absent.
async fn metric(server: &TestServer, name: &str) -> f64 {
    server.metric(name).await.unwrap_or(0.0)
}

/// The red team filled a document to `--max-document-bytes`; from then on
/// every other responder's edit, deletes included, was closed with 4413
/// until a restart. Now edits that only delete go through, and the next
/// growing edit compacts the document first, so the deleted text frees its
/// space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_document_still_takes_deletions_and_compaction_makes_room_again() {
    let server = TestServer::start_with(&["--max-document-bytes", "60000"]);
    let incident = server.create_incident("Full").await;
    let victim = connect_saving(&responder(&server, &incident, "Vera")).await;
    let attacker = YClient::connect(&responder(&server, &incident, "Mallory")).await;
    let chunk = "x".repeat(8 * 1024);
    let mut pushed = 0;
    let (code, _) = loop {
        attacker.push(&chunk);
        pushed += 1;
        assert!(pushed < 20, "the size limit was never enforced");
        let seen = attacker.seen.clone();
        wait_until("the chunk is stored or refused", || {
            let seen = seen.lock();
            seen.closed.is_some() || victim.len() as usize >= pushed * chunk.len()
        })
        .await;
        if let Some(closed) = attacker.seen.lock().closed.clone() {
            break closed;
        }
    };
    assert_eq!(code, 4413, "the attacker hit the limit");
    victim.wait_saved().await;

    // The victim thins out the junk, one character in two over 16 KiB:
    // an update with only a delete set, of thousands of ranges, so larger
    // than whatever room the attacker's refused chunk left. Then deletes
    // the rest.
    let text = victim.read();
    let start = text[..text.find(&chunk).unwrap()].encode_utf16().count() as u32;
    {
        let mut txn = victim.doc.transact_mut();
        for offset in (0..16 * 1024).rev().step_by(2) {
            victim.text.remove_range(&mut txn, start + offset, 1);
        }
    }
    saved_and_open(&victim, "a large deletion at the size limit").await;
    victim.delete(start, victim.len() - start);
    saved_and_open(&victim, "a deletion at the size limit").await;
    // Then pastes more than the attacker's refused chunk, which no longer
    // fitted: the document is compacted (the deleted junk is dropped from
    // storage) and the paste fits.
    let paste = format!("{}back to work", "z".repeat(9 * 1024));
    victim.push(&paste);
    saved_and_open(&victim, "a paste after the deletions").await;
    let reader =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Viewer, "Olga")))
            .await;
    assert_eq!(reader.read(), victim.read());
    assert!(reader.read().ends_with("back to work"));
    assert!(!reader.read().contains("xxxxxxxx"), "the junk is gone");
    assert!(
        server
            .logs()
            .contains("compacted the document at its size limit")
    );
    assert!(metric(&server, "commandpost_limit_compactions_total").await >= 1.0);
}

/// The red team grew a document to 60 MB in 1.3 s. Now a connection that
/// sends more than its byte or message budget is not read until the budget
/// refills (back-pressure, counted in metrics); nothing is lost or closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_updates_is_slowed_down_by_back_pressure_not_dropped() {
    let server = TestServer::start_with(&[
        "--max-message-bytes",
        "65536",
        "--inbound-bytes-per-second",
        "65536",
        "--updates-per-second",
        "20",
    ]);
    let incident = server.create_incident("Flood").await;
    let attacker = connect_saving(&responder(&server, &incident, "Mallory")).await;
    let typist = connect_saving(&responder(&server, &incident, "Vera")).await;
    // Bytes: 160 KiB against a 64 KiB burst.
    let chunk = "y".repeat(16 * 1024);
    for i in 0..10 {
        attacker.push(&format!("[{i}]{chunk}"));
    }
    // Messages: 100 keystrokes against a burst of 40.
    for i in 0..100 {
        attacker.push(&format!("{}", i % 10));
    }
    typist.insert(0, "still typing ");
    typist.wait_saved().await;
    attacker.wait_saved().await;
    assert!(
        attacker.seen.lock().closed.is_none(),
        "throttled, not closed"
    );
    assert!(typist.seen.lock().closed.is_none());
    let reader =
        YClient::connect(&server.ws_url(&incident, &server.token(AccessRole::Viewer, "Olga")))
            .await;
    reader.wait_text(&attacker.read()).await;
    assert!(reader.read().starts_with("still typing "));
    assert!(metric(&server, "commandpost_inbound_throttles_total").await >= 1.0);
    assert!(metric(&server, "commandpost_inbound_throttled_seconds_total").await > 0.0);
    assert!(
        server
            .logs()
            .contains("the connection sends more than its budget")
    );
}
