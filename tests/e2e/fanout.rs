//! Fan-out: a connection that cannot keep up is resynced, never silently
//! skipped, and does not hold up the others.

use commandpost_shared::AccessRole;

use crate::support::TestServer;
use crate::support::yclient::{Connect, YClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_resynced_with_one_merged_update_instead_of_skipping() {
    let server = TestServer::start_with(&["--room-buffer", "16"]);
    let incident = server.create_incident("Fan-out").await;
    let url = server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada"));
    let editor = YClient::connect_with(
        &url,
        Connect {
            saved_acks: true,
            client_id: None,
        },
    )
    .await;
    let stalled = YClient::connect(&url).await;
    let bystander = YClient::connect(&url).await;

    // ~12 MB of edits: more than the loopback socket buffers hold, so the
    // server's writes to the stalled peer block and the room's 16-message
    // buffer runs past it.
    stalled.pause_reading();
    let chunk = "x".repeat(64 * 1024);
    for i in 0..192 {
        editor.push(&format!("[{i}]{chunk}"));
    }
    editor.wait_saved().await;
    let expected = editor.read();
    bystander.wait_text(&expected).await;

    stalled.resume_reading();
    stalled.wait_text(&expected).await;
    let logs = server.logs();
    assert!(
        logs.contains("lagged behind its room"),
        "the stalled connection must have lagged (and been resynced), not been skipped"
    );
}

/// Edits from two editors, `per_editor` each, typed as fast as possible; a
/// viewer follows. Returns the update frames the viewer received after its
/// initial sync, once it shows the final text.
async fn frames_for_a_burst(server: &TestServer, per_editor: usize) -> u64 {
    let incident = server.create_incident("Batching").await;
    let editor_url = server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada"));
    let viewer_url = server.ws_url(&incident, &server.token(AccessRole::Viewer, "Vic"));
    let a = YClient::connect(&editor_url).await;
    let b = YClient::connect(&editor_url).await;
    let viewer = YClient::connect(&viewer_url).await;
    let before = viewer.seen.lock().frames;
    for i in 0..per_editor {
        a.insert(0, &format!("a{i} "));
        b.push(&format!(" b{i}"));
    }
    let (last_a, last_b) = (
        format!("a{} ", per_editor - 1),
        format!(" b{}", per_editor - 1),
    );
    crate::support::wait_until("both editors have each other's last edit", || {
        let (text_a, text_b) = (a.read(), b.read());
        text_a.contains(&last_b) && text_b.contains(&last_a) && text_a == text_b
    })
    .await;
    let expected = a.read();
    viewer.wait_text(&expected).await;
    viewer.seen.lock().frames - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_room_merges_edits_into_fewer_messages_and_everyone_converges() {
    let updates = 2 * 40;
    // Batching off: every edit is its own message.
    let unbatched = TestServer::start_with(&["--fanout-window-per-1000", "0s"]);
    let frames = frames_for_a_burst(&unbatched, 40).await;
    assert!(
        frames >= updates,
        "without batching the viewer receives every edit as a message ({frames} < {updates})"
    );
    // A window far longer than the burst (3 connections × 100 s / 1000 =
    // 300 ms, the cap): edits are merged, and nothing is lost.
    let batched = TestServer::start_with(&[
        "--fanout-window-per-1000",
        "100s",
        "--fanout-window-max",
        "300ms",
    ]);
    let frames = frames_for_a_burst(&batched, 40).await;
    assert!(
        frames < updates / 2,
        "with batching the viewer must receive merged messages ({frames} frames for {updates} edits)"
    );
}
