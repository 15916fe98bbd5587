//! A whole incident through the command line's subcommands only, people by
//! id or name, status with ids, readable watch lines, gate refusals that
//! list what blocks, and shell completions.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use commandpost_shared::AccessRole;

use crate::cli::{ok, refused};
use crate::support::{Store, TestServer};

/// A token for `id` named `name`, which has used the server once (so the
/// server knows the person, as it knows anyone who signed in).
fn signed_in(server: &TestServer, id: &str, name: &str) -> String {
    let token = server.keys().mint(
        id,
        name,
        AccessRole::Responder,
        None,
        Duration::from_secs(3600),
    );
    ok(server, &token, &["people"]);
    token
}

/// The number after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> String {
    let rest = text
        .split(prefix)
        .nth(1)
        .unwrap_or_else(|| panic!("no `{prefix}` in {text}"));
    rest.chars().take_while(char::is_ascii_digit).collect()
}

crate::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_scripted_incident_through_subcommands_only,
    a_scripted_incident_through_subcommands_only_on
);

async fn a_scripted_incident_through_subcommands_only_on(store: Store) {
    let server = TestServer::start_on(store);
    let alice = signed_in(&server, "alice", "Alice Ashdown");
    let josephine = signed_in(&server, "josephine", "Josephine Ng");
    let bob = signed_in(&server, "bob", "Bob Baptiste");
    let fred = signed_in(&server, "fred", "Fred Jones");

    let declared = ok(
        &server,
        &alice,
        &[
            "declare",
            "--title",
            "Checkout returns 500",
            "--severity",
            "sev2",
            "--summary",
            "30% of EU users",
        ],
    );
    assert_eq!(declared.trim(), "declared INC-1: Checkout returns 500");

    // Roles and responders by name, by part of a name, by id.
    let assigned = ok(
        &server,
        &alice,
        &["role", "assign", "INC-1", "ops", "Josephine"],
    );
    assert!(
        assigned.contains(" UTC  Alice Ashdown: assigned operations lead to Josephine Ng"),
        "{assigned}"
    );
    let listed = ok(
        &server,
        &alice,
        &[
            "responder",
            "add",
            "INC-1",
            "fred",
            "--assignment",
            "database failover",
        ],
    );
    assert!(
        listed.contains("Alice Ashdown: listed Fred Jones as responder: database failover"),
        "{listed}"
    );
    ok(&server, &alice, &["severity", "INC-1", "1"]);
    let impact = ok(&server, &alice, &["impact-start", "INC-1", "40m ago"]);
    assert!(
        impact.contains("Alice Ashdown: set the impact start to 20"),
        "{impact}"
    );

    // The operations lead records a change; its id is in the answer.
    let recorded = ok(
        &server,
        &josephine,
        &[
            "change",
            "record",
            "INC-1",
            "--what",
            "restart db",
            "--why",
            "connection pool exhausted",
            "--revert",
            "nothing to revert",
        ],
    );
    assert!(
        recorded.contains("Josephine Ng: recorded production change #"),
        "{recorded}"
    );
    let change = number_after(&recorded, "change reverted INC-1 ");
    assert!(recorded.contains(&format!("production change #{change}: restart db (why: connection pool exhausted); revert: nothing to revert")), "{recorded}");

    // A freelancer is refused, and the attempt is on the timeline.
    let freelancing = refused(
        &server,
        &fred,
        &[
            "change",
            "record",
            "INC-1",
            "--what",
            "bump pool size",
            "--revert",
            "set it back",
        ],
    );
    assert!(freelancing.contains("403"), "{freelancing}");
    let added = ok(
        &server,
        &alice,
        &["criterion", "add", "INC-1", "Checkout errors below 0.1%"],
    );
    let criterion = number_after(&added, "criterion met INC-1 ");
    assert!(
        added.contains(&format!(
            "added exit criterion #{criterion}: Checkout errors below 0.1%"
        )),
        "{added}"
    );
    let pinned = ok(
        &server,
        &alice,
        &[
            "pin",
            "INC-1",
            "--text",
            "Restarting the database",
            "--next-update-in",
            "30m",
        ],
    );
    assert!(
        pinned
            .contains("Alice Ashdown: pinned status: “Restarting the database” (next update by 20"),
        "{pinned}"
    );

    // A final update is refused while the incident is active, saying why.
    let early = refused(
        &server,
        &alice,
        &["pin", "INC-1", "--text", "All good", "--final"],
    );
    assert!(early.contains("mitigated"), "{early}");

    // status lists everything with its id.
    let status = ok(&server, &alice, &["status", "INC-1"]);
    for expected in [
        "INC-1: Checkout returns 500 [active; severity sev1]",
        "ic        incident commander   Alice Ashdown (alice) since 20",
        "ops       operations lead      Josephine Ng (josephine) since 20",
        "comms     communications lead  Alice Ashdown (alice) (not delegated",
        "Fred Jones (fred): database failover; since 20",
        &format!("#{criterion} [ ] Checkout errors below 0.1%"),
        "Exit criteria (0 of 1 met)",
        &format!("#{change} restart db (revert: nothing to revert) recorded by Josephine Ng at 20"),
        "“Restarting the database” by Alice Ashdown at 20",
        "impact started 20",
        " (40 min ago)",
    ] {
        assert!(status.contains(expected), "no `{expected}` in:\n{status}");
    }
    assert!(
        status.contains(" min)") && status.contains("next update by 20"),
        "the pin shows its countdown:\n{status}"
    );

    // Resolving is refused while the criterion is unmet, naming it.
    let blocked = refused(&server, &alice, &["resolve", "INC-1"]);
    assert!(
        blocked.contains(&format!("#{criterion} Checkout errors below 0.1%")),
        "{blocked}"
    );
    assert!(blocked.contains("409"), "{blocked}");

    let mitigated = ok(&server, &alice, &["mitigate", "INC-1"]);
    assert!(
        mitigated.contains("moved the incident from Active to Mitigated"),
        "{mitigated}"
    );
    let met = ok(&server, &alice, &["criterion", "met", "INC-1", &criterion]);
    assert!(
        met.contains(&format!("marked exit criterion #{criterion} met")),
        "{met}"
    );

    // The end of a shift: command changes hands in two steps.
    let offered = ok(
        &server,
        &alice,
        &[
            "handoff",
            "offer",
            "INC-1",
            "Bob Baptiste",
            "--notes",
            "db restarted; watch the pool",
        ],
    );
    assert!(
        offered.contains("Alice Ashdown: offered incident commander to Bob Baptiste (handoff #"),
        "{offered}"
    );
    let accepted = ok(&server, &bob, &["handoff", "accept", "INC-1"]);
    assert!(
        accepted.contains("Bob Baptiste: accepted incident commander from Alice Ashdown"),
        "{accepted}"
    );

    let resolved = ok(&server, &bob, &["resolve", "INC-1"]);
    assert!(
        resolved.contains("Bob Baptiste: moved the incident from Mitigated to Resolved"),
        "{resolved}"
    );
    // Closing is refused while the change is open, naming it.
    let blocked = refused(&server, &bob, &["close", "INC-1"]);
    assert!(
        blocked.contains(&format!("#{change} restart db")),
        "{blocked}"
    );
    let reverted = ok(&server, &bob, &["change", "reverted", "INC-1", &change]);
    assert!(
        reverted.contains(&format!("marked change #{change} reverted")),
        "{reverted}"
    );
    let last = ok(
        &server,
        &bob,
        &[
            "pin",
            "INC-1",
            "--text",
            "Resolved; postmortem to follow",
            "--final",
        ],
    );
    assert!(
        last.contains("Bob Baptiste: pinned the final status: “Resolved; postmortem to follow” (no further updates)"),
        "{last}"
    );
    let closed = ok(&server, &bob, &["close", "INC-1"]);
    assert!(
        closed.contains("moved the incident from Resolved to Closed"),
        "{closed}"
    );
    let status = ok(&server, &bob, &["status", "INC-1"]);
    assert!(
        status.contains("INC-1: Checkout returns 500 [closed; severity sev1]"),
        "{status}"
    );
    assert!(status.contains("Open changes (0)"), "{status}");

    // watch prints the same readable lines, from the start.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_commandpost"))
        .args(["watch", "INC-1"])
        .env("COMMANDPOST_SERVER", server.url(""))
        .env("COMMANDPOST_TOKEN", &bob)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("from Resolved to Closed");
        seen.push(line);
        if done {
            break;
        }
    }
    watch.kill().unwrap();
    let _ = watch.wait();
    for expected in [
        "Alice Ashdown: declared the incident “Checkout returns 500” (SEV2 · major) as incident commander. 30% of EU users",
        "Alice Ashdown: assigned operations lead to Josephine Ng",
        "Alice Ashdown: set the severity to SEV1 · critical",
        "Bob Baptiste: accepted incident commander from Alice Ashdown",
        "Bob Baptiste: marked change #",
        " UTC  Refused: Fred Jones (",
        ") tried to record a change: bump pool size",
    ] {
        assert!(
            seen.iter().any(|line| line.contains(expected)),
            "no `{expected}` in:\n{}",
            seen.join("\n")
        );
    }
    assert!(
        seen[0].starts_with("#1 20") && seen[0].contains(" UTC  "),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_and_unknown_people_are_refused_with_a_clear_message() {
    let server = TestServer::start();
    let alice = signed_in(&server, "alice", "Alice Ashdown");
    signed_in(&server, "sam-lee", "Sam Lee");
    signed_in(&server, "sam-ortiz", "Sam Ortiz");
    ok(&server, &alice, &["declare", "--title", "Search is slow"]);

    let ambiguous = refused(&server, &alice, &["role", "assign", "INC-1", "ops", "Sam"]);
    assert!(
        ambiguous.contains("`Sam` could be 2 people; give an id:"),
        "{ambiguous}"
    );
    assert!(
        ambiguous.contains("Sam Lee (sam-lee)") && ambiguous.contains("Sam Ortiz (sam-ortiz)"),
        "{ambiguous}"
    );
    let unknown = refused(
        &server,
        &alice,
        &["role", "assign", "INC-1", "ops", "josephin"],
    );
    assert!(unknown.contains("no one known as `josephin`"), "{unknown}");
    assert!(unknown.contains("commandpost people"), "{unknown}");
    let unknown = refused(
        &server,
        &alice,
        &["handoff", "offer", "INC-1", "nobody-here"],
    );
    assert!(
        unknown.contains("no one known as `nobody-here`"),
        "{unknown}"
    );
    let bad_role = refused(
        &server,
        &alice,
        &["role", "assign", "INC-1", "boss", "sam-lee"],
    );
    assert!(bad_role.contains("no role `boss`"), "{bad_role}");

    // Nothing changed; then the id resolves.
    let status = ok(&server, &alice, &["status", "INC-1"]);
    assert!(
        status.contains("ops       operations lead      Alice Ashdown (alice) (not delegated"),
        "{status}"
    );
    let assigned = ok(
        &server,
        &alice,
        &["role", "assign", "INC-1", "ops", "sam-lee"],
    );
    assert!(
        assigned.contains("assigned operations lead to Sam Lee"),
        "{assigned}"
    );

    let people = ok(&server, &alice, &["people", "sam"]);
    assert_eq!(
        people.lines().collect::<Vec<_>>(),
        [
            "ID         NAME",
            "sam-lee    Sam Lee",
            "sam-ortiz  Sam Ortiz"
        ],
        "{people}"
    );
}

#[test]
fn completions_produce_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_commandpost()"),
        ("zsh", "#compdef commandpost"),
        ("fish", "complete -c commandpost"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_commandpost"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: no `{marker}`");
        for subcommand in ["handoff", "impact-start", "force-assign", "criterion"] {
            assert!(script.contains(subcommand), "{shell}: no `{subcommand}`");
        }
    }
    let output = Command::new(env!("CARGO_BIN_EXE_commandpost"))
        .args(["completions", "powershell"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}
