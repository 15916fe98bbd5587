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
