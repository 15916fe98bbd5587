//! The script and chat-bot subcommands against a running server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use commandpost_shared::AccessRole;

use crate::support::{Store, TestServer};

pub(crate) fn commandpost(server: &TestServer, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_commandpost"))
        .args(args)
        .env("COMMANDPOST_SERVER", server.url(""))
        .env("COMMANDPOST_TOKEN", token)
        .output()
        .unwrap()
}

/// Runs `commandpost ARGS` against `server` with `token`; its stdout.
pub(crate) fn ok(server: &TestServer, token: &str, args: &[&str]) -> String {
    let output = commandpost(server, token, args);
    assert!(
        output.status.success(),
        "commandpost {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `commandpost ARGS`, which must fail; its stderr.
pub(crate) fn refused(server: &TestServer, token: &str, args: &[&str]) -> String {
    let output = commandpost(server, token, args);
    assert!(
        !output.status.success(),
        "commandpost {args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

crate::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_whole_incident_driven_from_the_command_line,
    a_whole_incident_driven_from_the_command_line_on
);

async fn a_whole_incident_driven_from_the_command_line_on(store: Store) {
    let server = TestServer::start_on(store);
    let alice = server.token(AccessRole::Responder, "Alice");
    let bob = server.token(AccessRole::Responder, "Bob");
    // Commands name only people the server knows: Bob signs in first.
    assert_eq!(server.get_json("/api/me", &bob).await.0, 200);
    let declared = ok(
        &server,
        &alice,
        &[
            "declare",
            "--title",
            "Search is slow",
            "--severity",
            "sev2",
            "--needs-other-team",
            "false",
            "--customer-visible",
            "true",
            "--unresolved-after-hour",
            "false",
            "--summary",
            "p99 at 4s",
        ],
    );
    assert_eq!(declared.trim(), "declared INC-1: Search is slow");
    assert!(
        ok(&server, &alice, &["note", "INC-1", "restarted the indexer"])
            .contains(" UTC  Alice: restarted the indexer")
    );
    assert!(
        ok(
            &server,
            &alice,
            &[
                "pin",
                "INC-1",
                "--summary",
                "indexer restarted",
                "--next-update-in",
                "20m"
            ]
        )
        .contains("Alice: pinned status: “indexer restarted” (next update by 20")
    );

    let status = ok(&server, &alice, &["status", "INC-1"]);
    assert!(
        status.contains("INC-1: Search is slow [active; severity sev2]"),
        "{status}"
    );
    assert!(
        status.contains("incident commander") && status.contains("Alice"),
        "{status}"
    );
    assert!(
        status.contains("“indexer restarted” by Alice at 20"),
        "{status}"
    );

    // Bob has used the server, so the server knows him.
    ok(&server, &bob, &["people"]);
    let offered = ok(
        &server,
        &alice,
        &[
            "handoff",
            "offer",
            "INC-1",
            "bob",
            "--notes",
            "indexer is the suspect",
        ],
    );
    assert!(
        offered.contains("Alice: offered incident commander to Bob (handoff #"),
        "{offered}"
    );
    let handoff = offered
        .split("handoff accept INC-1 ")
        .nth(1)
        .unwrap()
        .split('`')
        .next()
        .unwrap()
        .to_owned();
    // Alice cannot accept her own offer; Bob can (with the id, or the
    // older `--handoff ID`).
    let refused = commandpost(&server, &alice, &["handoff", "accept", "INC-1", &handoff]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let accepted = ok(
        &server,
        &bob,
        &["handoff", "accept", "INC-1", "--handoff", &handoff],
    );
    assert!(
        accepted.contains(" UTC  Bob: accepted incident commander from Alice"),
        "{accepted}"
    );

    let file = server.data_dir().join("INC-1-postmortem.md");
    ok(
        &server,
        &bob,
        &["postmortem", "INC-1", "--output", file.to_str().unwrap()],
    );
    let markdown = std::fs::read_to_string(&file).unwrap();
    assert!(
        markdown.starts_with("# Postmortem: INC-1 Search is slow"),
        "{markdown}"
    );
    assert!(markdown.contains("**INCIDENT BEGINS**"));
    assert!(
        markdown.contains("Alice: posted a note") || markdown.contains("restarted the indexer"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| incident commander | Bob |"),
        "{markdown}"
    );
    let (status, _) = server
        .get_json(
            "/api/incidents/INC-1/postmortem.md",
            &server.token(AccessRole::Viewer, "Vic"),
        )
        .await;
    assert_eq!(status, 200);

    // watch prints the events from the start, then follows.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_commandpost"))
        .args(["watch", "INC-1"])
        .env("COMMANDPOST_SERVER", server.url(""))
        .env("COMMANDPOST_TOKEN", &bob)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("#1 20")
            && first.ends_with(
                " UTC  Alice: declared the incident “Search is slow” (SEV2 · major) as incident commander. p99 at 4s"
            ),
        "{first}"
    );
    ok(&server, &bob, &["note", "INC-1", "live one"]);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.ends_with("Bob: live one");
        seen.push(line);
        if done {
            break;
        }
    }
    watch.kill().unwrap();
    let _ = watch.wait();
    assert!(
        seen.iter()
            .any(|line| line.ends_with("Bob: accepted incident commander from Alice")),
        "{seen:?}"
    );

    // Errors are clear and exit non-zero.
    let output = commandpost(&server, "forged", &["status", "INC-1"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not valid"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(env!("CARGO_BIN_EXE_commandpost"))
        .args(["status", "INC-1"])
        .env_remove("COMMANDPOST_TOKEN")
        .env("COMMANDPOST_SERVER", server.url(""))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("no access token"));
}
