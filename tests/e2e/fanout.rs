//! Fan-out: a connection that cannot keep up is resynced, never silently
//! skipped, and does not hold up the others.

use commandpost_shared::AccessRole;

use crate::support::TestServer;
use crate::support::yclient::{Connect, YClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_resynced_with_one_merged_update_instead_of_skipping() {
    // The stalled reader must outlast the burst however slow the machine:
    // a socket that stays full for a ping interval is dropped, so make that
    // interval longer than any test run.
    let server = TestServer::start_with(&["--room-buffer", "16", "--ping-interval", "600s"]);
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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Rounds of "the editor types, every live viewer has it"; returns the
/// slowest round but one (a p97 of 30 rounds), in seconds. Compares text
/// lengths, which is cheap even for a large document.
async fn round_trip_p97(editor: &YClient, viewers: &[YClient], tag: &str) -> f64 {
    let mut rounds = Vec::new();
    for i in 0..30 {
        let started = std::time::Instant::now();
        editor.push(&format!("<{tag}{i}>"));
        let target = editor.len();
        crate::support::wait_until("every live viewer has the edit", || {
            viewers.iter().all(|v| v.len() == target)
        })
        .await;
        rounds.push(started.elapsed().as_secs_f64());
    }
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() - 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_neither_slows_the_others_nor_grows_memory_without_bound() {
    // The stalled reader must outlast the burst however slow the machine:
    // a socket that stays full for a ping interval is dropped, so make that
    // interval longer than any test run.
    let server = TestServer::start_with(&["--room-buffer", "16", "--ping-interval", "600s"]);
    let incident = server.create_incident("Stalled viewer").await;
    let editor = YClient::connect_with(
        &server.ws_url(&incident, &server.token(AccessRole::Responder, "Ada")),
        Connect {
            saved_acks: true,
            client_id: None,
        },
    )
    .await;
    let viewer_url = server.ws_url(&incident, &server.token(AccessRole::Viewer, "Vic"));
    let mut viewers = Vec::new();
    for _ in 0..4 {
        viewers.push(YClient::connect(&viewer_url).await);
    }
    // A viewer stops reading; 6 MB of edits fill its socket buffers and
    // run the room's buffer past it.
    let stalled = YClient::connect(&viewer_url).await;
    stalled.pause_reading();
    let rss_start = rss_kib(server.pid());
    let chunk = "y".repeat(64 * 1024);
    for round in 0..2 {
        for i in 0..48 {
            editor.push(&format!("[{round}.{i}]{chunk}"));
        }
        editor.wait_saved().await;
    }
    let target = editor.len();
    crate::support::wait_until("the live viewers caught up", || {
        viewers.iter().all(|v| v.len() == target)
    })
    .await;
    let rss_after = rss_kib(server.pid());

    // The others' latency with the stalled viewer present, then without it,
    // on the same document: a ratio measured in one run.
    let with_stalled = round_trip_p97(&editor, &viewers, "b").await;
    stalled.close();
    drop(stalled);
    let without = round_trip_p97(&editor, &viewers, "a").await;
    let ratio = with_stalled / without;
    eprintln!(
        "live viewers' round trip p97: {:.1} ms with a stalled viewer, {:.1} ms without (ratio {ratio:.2}); server RSS {} → {} MiB for 6 MiB of edits",
        with_stalled * 1000.0,
        without * 1000.0,
        rss_start / 1024,
        rss_after / 1024
    );
    assert!(
        ratio < 4.0,
        "a stalled viewer slowed the others {ratio:.1}×"
    );
    // The document is 6 MiB; what the server holds for the stalled viewer
    // is bounded by the room buffer and one send batch, not by what it missed.
    let grown_mib = rss_after.saturating_sub(rss_start) / 1024;
    assert!(
        grown_mib < 6 * 8,
        "server memory grew {grown_mib} MiB for 6 MiB of edits"
    );
    // The stalled viewer was resynced or dropped, never waited for.
    let logs = server.logs();
    assert!(
        logs.contains("lagged behind its room")
            || logs.contains("peer stopped reading")
            || logs.contains("peer stopped answering pings")
            || logs.contains("disconnected"),
        "the stalled viewer must have been resynced or dropped"
    );
}
