//! `commandpost store copy`, run as a user would: a sled installation with
//! several incidents and long logs moves to PostgreSQL, and a server on the
//! copy serves every document and timeline exactly as the original does.

use commandpost_shared::{AccessRole, IncidentId};

use crate::support::yclient::{Connect, YClient};
use crate::support::{Served, TestServer, test_postgres};

/// Updates each incident's log holds (one saved edit each) and notes on
/// each timeline.
const EDITS: usize = 150;
const NOTES: usize = 15;

fn copy(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_commandpost"))
        .arg("store")
        .arg("copy")
        .args(args)
        .output()
        .unwrap()
}

async fn timeline(url: String, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_installation_moves_to_postgresql_whole() {
    // A large compaction threshold keeps every edit in the log; a large
    // command burst lets the notes go in at once.
    let mut server = TestServer::start_with(&[
        "--compact-after-updates",
        "100000",
        "--command-burst",
        "1000",
    ]);
    let ada = server.token(AccessRole::Responder, "Ada");
    let mut incidents: Vec<IncidentId> = Vec::new();
    for n in 0..3 {
        let incident = server.create_incident(&format!("Copied {n}")).await;
        let editor = YClient::connect_with(
            &server.ws_url(&incident, &ada),
            Connect {
                saved_acks: true,
                client_id: None,
            },
        )
        .await;
        for edit in 0..EDITS {
            editor.push(&format!("[{n}.{edit}]"));
        }
        editor.wait_saved().await;
        for note in 0..NOTES {
            let (status, body) = server
                .post_json(
                    &format!("/api/incidents/{incident}/commands/post_note"),
                    &ada,
                    &serde_json::json!({ "text": format!("note {note} of {n}") }),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        incidents.push(incident);
    }
    // Killed, not stopped: a clean stop compacts every log into its
    // snapshot, and the copy should also carry long logs.
    server.kill9();

    let from = format!("sled:{}", server.data_dir().display());
    let target = test_postgres::fresh_database();
    let output = copy(&["--from", &from, "--to", &target]);
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("compared by SHA-256, all equal"), "{said}");
    assert!(
        said.contains(&format!("{} log updates", 3 * EDITS)),
        "{said}"
    );
    // A second copy into the now non-empty target is refused, naming why.
    let again = copy(&["--from", &from, "--to", &target]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The original and a server on the copy, side by side, with the same
    // secret: every document and every timeline is the same.
    server.restart();
    let copied = Served::start(&["--store".to_owned(), target], server.secret());
    let vic = server.token(AccessRole::Viewer, "Vic");
    for incident in &incidents {
        let original = YClient::connect(&server.ws_url(incident, &vic)).await;
        original.wait_synced().await;
        let text = original.read();
        assert!(text.contains(&format!("[{}.{}]", incident.number() - 1, EDITS - 1)));
        let moved = YClient::connect(&copied.ws_url(incident, &vic)).await;
        moved.wait_text(&text).await;
        let path = format!("/api/incidents/{incident}/timeline?limit=1000");
        let before = timeline(server.url(&path), &vic).await;
        let after = timeline(copied.url(&path), &vic).await;
        assert_eq!(before, after, "{incident}'s timeline differs");
        assert!(
            before
                .to_string()
                .contains(&format!("note {} of", NOTES - 1))
        );
    }
}
