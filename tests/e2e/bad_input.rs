//! Bad input on the document socket (DESIGN "Contract: bad input"): a
//! malformed frame or message, an oversized frame, or an update that yrs
//! rejects gets a clear close code and reason for that connection, plus one
//! log line; the document is not changed; other connections and rooms carry
//! on unaffected.

use commandpost_shared::{AccessRole, IncidentId};
use yrs::{ReadTxn, Text, Transact};

use crate::support::yclient::{Connect, YClient, full_update, new_doc};
use crate::support::{TestServer, wait_until};

// ---------------------------------------------------------------------------
// lib0 / y-websocket encoding helpers (written out by hand, so that the tests
// do not depend on the encoder of the code under test)

fn var_uint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    var_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `[sync, update, varBytes(update)]`.
fn update_message(update: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 2];
    var_bytes(&mut out, update);
    out
}

/// `[sync, step 2, varBytes(update)]`.
fn step2_message(update: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 1];
    var_bytes(&mut out, update);
    out
}

/// `[awareness, varBytes(payload)]`.
fn awareness_message(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![1];
    var_bytes(&mut out, payload);
    out
}

/// A v1 update holding blocks of one client, then an empty delete set.
/// Each block is given already encoded.
fn v1_update(client: u64, clock: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    var_uint(&mut out, 1);
    var_uint(&mut out, blocks.len() as u64);
    var_uint(&mut out, client);
    var_uint(&mut out, clock);
    for block in blocks {
        out.extend_from_slice(block);
    }
    out.push(0); // empty delete set
    out
}

/// An item with string content and no origins, whose parent is the root type
/// `root` (so it lands at the start of that text).
fn string_item_in_root(root: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = vec![4]; // info: string content, no origin, no right origin
    var_uint(&mut out, 1); // parent is a named root type
    var_bytes(&mut out, root);
    var_bytes(&mut out, content);
    out
}

/// An item with string content and no origins whose parent is the item
/// `(client, clock)`. yrs refuses it ("block parent must be deleted or shared
/// ref type") when that item holds a string rather than a shared type.
fn string_item_with_parent_item(client: u64, clock: u64, content: &[u8]) -> Vec<u8> {
    let mut out = vec![4];
    var_uint(&mut out, 0); // parent given by id
    var_uint(&mut out, client);
    var_uint(&mut out, clock);
    var_bytes(&mut out, content);
    out
}

/// An item with string content whose right origin is `(client, clock)`.
fn string_item_with_right_origin(client: u64, clock: u64, content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x44]; // right origin present, string content
    var_uint(&mut out, client);
    var_uint(&mut out, clock);
    var_bytes(&mut out, content);
    out
}

/// The update a client `client_id` makes by appending `text` to `body` on a
/// document holding `state` (an encoded full state).
fn append_update(state: &[u8], client_id: u64, text: &str) -> Vec<u8> {
    use yrs::updates::decoder::Decode;
    let doc = new_doc(Some(client_id));
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(state).unwrap())
        .unwrap();
    let before = doc.transact().state_vector();
    let body = doc.get_or_insert_text("body");
    body.push(&mut doc.transact_mut(), text);
    doc.transact().encode_diff_v1(&before)
}

// ---------------------------------------------------------------------------
// Checks shared by the tests

fn responder_url(server: &TestServer, incident: &IncidentId, name: &str) -> String {
    server.ws_url(incident, &server.token(AccessRole::Responder, name))
}

/// Waits until the server closed `client` or the socket ended; returns the
/// close code and reason, or says why there was none (e.g. the server died).
async fn close_of(
    server: &TestServer,
    client: &YClient,
    what: &str,
) -> Result<(u16, String), String> {
    let seen = client.seen.clone();
    wait_until(&format!("{what}: the server closes the connection"), || {
        let seen = seen.lock();
        seen.closed.is_some() || seen.ended
    })
    .await;
    let closed = client.seen.lock().closed.clone();
    match closed {
        Some(closed) => Ok(closed),
        None => {
            let alive = reqwest::get(server.url("/healthz")).await.is_ok();
            Err(format!(
                "{what}: the connection ended without a close frame; the server process is {}",
                if alive {
                    "still up"
                } else {
                    "DEAD (it crashed on this input)"
                }
            ))
        }
    }
}

async fn closed_by_server(server: &TestServer, client: &YClient, what: &str) -> (u16, String) {
    close_of(server, client, what)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Log lines of the victim's connection in `incident` (the span carries the
/// incident and the token subject), other than connect/disconnect.
fn victim_log_lines(server: &TestServer, incident: &IncidentId, user: &str) -> Vec<String> {
    let incident_field = format!("incident={incident} ");
    let user_field = format!("user={user} ");
    server
        .logs()
        .lines()
        .filter(|line| line.contains(&incident_field) && line.contains(&user_field))
        .filter(|line| !line.ends_with(": connected") && !line.ends_with(": disconnected"))
        .map(str::to_owned)
        .collect()
}

/// Asserts the victim's connection logged exactly one line for its
/// rejection, with "closing" and the close code.
async fn assert_one_closing_line(
    server: &TestServer,
    incident: &IncidentId,
    user: &str,
    code: u16,
    what: &str,
) {
    // The line is written before the close frame is sent; waiting costs
    // nothing and keeps the check independent of that detail.
    wait_until(&format!("{what}: a closing log line"), || {
        victim_log_lines(server, incident, user)
            .iter()
            .any(|line| line.contains("closing"))
    })
    .await;
    let lines = victim_log_lines(server, incident, user);
    assert_eq!(
        lines.len(),
        1,
        "{what}: exactly one log line for the rejection, got {lines:#?}"
    );
    assert!(
        lines[0].contains("closing") && lines[0].contains(&format!("code={code}")),
        "{what}: the log line names the closing and the code {code}: {}",
        lines[0]
    );
}

/// Asserts that no panic message reached the log (a panic hook's multi-line
/// output is not "one log line").
fn assert_no_panic_output(server: &TestServer, what: &str) {
    let logs = server.logs();
    assert!(
        !logs.contains("panicked"),
        "{what}: the server log holds panic output:\n{}",
        logs.lines()
            .filter(|l| l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------
// The table

enum Frame {
    Binary(Vec<u8>),
    Text(&'static str),
}

/// What a case may build its frame from.
struct Ctx {
    /// The bystander's client id: its first edit is one block `(id, 0)` of
    /// one character.
    bystander: u64,
    /// The document as the victim received it.
    state: Vec<u8>,
}

struct Case {
    name: &'static str,
    frame: fn(&Ctx) -> Frame,
    code: u16,
    /// Fragments the close reason must contain.
    reason: &'static [&'static str],
    /// yrs failed while integrating: the room's document is replaced by a
    /// fresh load, and its other connections are told to reconnect (1012).
    reloads_room: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "garbage bytes (unknown outer message type)",
            frame: |_| Frame::Binary(vec![0x07, 0xde, 0xad, 0xbe, 0xef]),
            code: 4400,
            reason: &["unknown message type 7"],
            reloads_room: false,
        },
        Case {
            name: "truncated varint",
            frame: |_| Frame::Binary(vec![0x80]),
            code: 4400,
            reason: &["truncated varint at byte 0"],
            reloads_room: false,
        },
        Case {
            name: "varint longer than 64 bits",
            frame: |_| Frame::Binary(vec![0xff; 11]),
            code: 4400,
            reason: &["varint longer than 64 bits at byte 0"],
            reloads_room: false,
        },
        Case {
            name: "absurd length prefix (~4 GB) on an update",
            frame: |_| Frame::Binary(vec![0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]),
            code: 4400,
            reason: &[
                "length prefix 4294967295 at byte 2",
                "exceeds the 3 bytes left",
            ],
            reloads_room: false,
        },
        Case {
            name: "unknown sync message type",
            frame: |_| Frame::Binary(vec![0, 9, 0]),
            code: 4400,
            reason: &["unknown sync message type 9"],
            reloads_room: false,
        },
        Case {
            name: "empty binary frame",
            frame: |_| Frame::Binary(Vec::new()),
            code: 4400,
            reason: &["empty frame"],
            reloads_room: false,
        },
        Case {
            name: "sync step 1 with an absurd state-vector count",
            frame: |_| Frame::Binary(vec![0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            code: 4400,
            reason: &["invalid state vector in sync step 1"],
            reloads_room: false,
        },
        Case {
            name: "sync step 1 with trailing bytes in the state vector",
            frame: |_| Frame::Binary(vec![0, 0, 4, 1, 7, 3, 9]),
            code: 4400,
            reason: &["invalid state vector in sync step 1"],
            reloads_room: false,
        },
        Case {
            name: "awareness with an absurd client count",
            frame: |_| Frame::Binary(awareness_message(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1])),
            code: 4400,
            reason: &[
                "invalid awareness update",
                "client count exceeds the payload",
            ],
            reloads_room: false,
        },
        Case {
            name: "awareness whose state is not JSON",
            frame: |_| {
                let mut payload = vec![1, 42, 1];
                var_bytes(&mut payload, b"{not json");
                Frame::Binary(awareness_message(&payload))
            },
            code: 4400,
            reason: &["invalid awareness update", "not JSON"],
            reloads_room: false,
        },
        Case {
            name: "awareness whose state is not UTF-8",
            frame: |_| {
                let mut payload = vec![1, 42, 1];
                var_bytes(&mut payload, &[b'"', 0xff, 0xfe, b'"']);
                Frame::Binary(awareness_message(&payload))
            },
            code: 4400,
            reason: &["invalid awareness update", "not UTF-8"],
            reloads_room: false,
        },
        Case {
            name: "a valid update followed by an unknown message type in the same frame",
            frame: |ctx| {
                let mut frame =
                    update_message(&append_update(&ctx.state, 5001, "FIRST-OF-BAD-FRAME"));
                frame.extend_from_slice(&[0x07]);
                Frame::Binary(frame)
            },
            code: 4400,
            reason: &["unknown message type 7"],
            reloads_room: false,
        },
        Case {
            name: "a valid update followed by a truncated update in the same frame",
            frame: |ctx| {
                let mut frame =
                    update_message(&append_update(&ctx.state, 5002, "FIRST-OF-BAD-FRAME"));
                frame.extend_from_slice(&[0, 2, 0x20, 1, 2]);
                Frame::Binary(frame)
            },
            code: 4400,
            reason: &["length prefix 32", "exceeds the 2 bytes left"],
            reloads_room: false,
        },
        Case {
            name: "update that yrs cannot decode (count beyond the payload)",
            frame: |_| Frame::Binary(update_message(&[5])),
            code: 4422,
            reason: &["update rejected", "not a valid Yjs update"],
            reloads_room: false,
        },
        Case {
            name: "update that yrs cannot decode (unknown Any value tag)",
            frame: |_| {
                let mut block = vec![8]; // info: Any content, no origins
                var_uint(&mut block, 1); // parent is a named root type
                var_bytes(&mut block, b"data");
                var_uint(&mut block, 1); // one Any value, with tag 16: no such tag
                block.push(16);
                Frame::Binary(update_message(&v1_update(77, 0, &[block])))
            },
            code: 4422,
            reason: &["update rejected", "not a valid Yjs update"],
            reloads_room: false,
        },
        Case {
            name: "sync step 2 carrying an update that yrs cannot decode",
            frame: |_| Frame::Binary(step2_message(&[1, 1, 77, 0])),
            code: 4422,
            reason: &["update rejected", "not a valid Yjs update"],
            reloads_room: false,
        },
        Case {
            name: "update that yrs refuses to integrate (parent is a string item)",
            frame: |ctx| {
                let block = string_item_with_parent_item(ctx.bystander, 0, b"EVIL-CHILD");
                Frame::Binary(update_message(&v1_update(5003, 0, &[block])))
            },
            code: 4422,
            reason: &["update rejected", "block parent"],
            reloads_room: true,
        },
        Case {
            name: "text frame",
            frame: |_| Frame::Text("{\"type\":\"update\",\"text\":\"hello\"}"),
            code: 1003,
            reason: &["text frames are not part of the protocol"],
            reloads_room: false,
        },
        Case {
            name: "frame larger than --max-message-bytes",
            frame: |ctx| {
                Frame::Binary(update_message(&append_update(
                    &ctx.state,
                    5004,
                    &"X".repeat(8 * 1024),
                )))
            },
            code: 1009,
            reason: &["larger than the 4096-byte limit"],
            reloads_room: false,
        },
    ]
}

/// One case: a bystander with saved text, a victim that sends the bad frame,
/// then the checks of the contract.
async fn run_case(server: &TestServer, case: &Case) {
    let what = case.name;
    let incident = server.create_incident(what).await;
    let bystander = YClient::connect_with(
        &responder_url(server, &incident, "Bystander"),
        Connect {
            saved_acks: true,
            ..Default::default()
        },
    )
    .await;
    // One character, one block: the panic case relies on that shape.
    bystander.insert(0, "B");
    bystander.wait_saved().await;
    let before = bystander.read();

    let victim = YClient::connect(&responder_url(server, &incident, "Victim")).await;
    assert_eq!(victim.read(), before, "{what}: the victim synced");
    let ctx = Ctx {
        bystander: bystander.doc.client_id().get(),
        state: full_update(&victim.doc),
    };
    match (case.frame)(&ctx) {
        Frame::Binary(bytes) => victim.send_raw(bytes),
        Frame::Text(text) => victim.send_text(text),
    }

    let (code, reason) = closed_by_server(server, &victim, what).await;
    assert_eq!(code, case.code, "{what}: close code (reason {reason:?})");
    for fragment in case.reason {
        assert!(
            reason.contains(fragment),
            "{what}: close reason {reason:?} should contain {fragment:?}"
        );
    }
    assert_one_closing_line(server, &incident, "victim", case.code, what).await;

    // The bystander carries on, and nothing of the bad input is anywhere.
    let reconnected;
    let bystander = if case.reloads_room {
        let (code, reason) = closed_by_server(server, &bystander, what).await;
        assert_eq!(
            (code, reason.as_str()),
            (1012, "document reloading; reconnect"),
            "{what}: the bystander is told to reconnect to the reloaded document"
        );
        reconnected = YClient::connect_doc(
            &responder_url(server, &incident, "Bystander"),
            bystander.doc.clone(),
            Connect {
                saved_acks: true,
                ..Default::default()
            },
        )
        .await;
        &reconnected
    } else {
        assert!(
            bystander.seen.lock().closed.is_none(),
            "{what}: the bystander stays connected"
        );
        &bystander
    };
    assert_eq!(
        bystander.read(),
        before,
        "{what}: nothing reached the bystander"
    );
    bystander.push(" still typing");
    bystander.wait_saved().await;
    let expected = format!("{before} still typing");
    assert_eq!(bystander.read(), expected);
    let fresh = YClient::connect(&responder_url(server, &incident, "Fresh")).await;
    assert_eq!(
        fresh.read(),
        expected,
        "{what}: a fresh client sees exactly the bystander's text"
    );
    assert_eq!(
        fresh.doc.transact().state_vector(),
        bystander.doc.transact().state_vector(),
        "{what}: the server's state vector holds nothing but the bystander's and the template's blocks"
    );
    // The victim's connection logged nothing more since (still one line).
    assert_eq!(
        victim_log_lines(server, &incident, "victim").len(),
        1,
        "{what}: one log line"
    );
}

/// Every kind of bad input, each against its own incident on one server
/// (started with a 4 KiB frame limit). A client in another incident stays
/// connected through all of them and keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_closes_only_its_connection_with_a_clear_code_and_changes_nothing() {
    let server = TestServer::start_with(&["--max-message-bytes", "4096"]);
    let other_incident = server.create_incident("Another room").await;
    let other_url = responder_url(&server, &other_incident, "Other");
    let other = YClient::connect_with(
        &other_url,
        Connect {
            saved_acks: true,
            ..Default::default()
        },
    )
    .await;
    other.push("other room, before");
    other.wait_saved().await;

    for case in cases() {
        run_case(&server, &case).await;
    }
    assert_no_panic_output(&server, "the table's cases");

    // The other room was never disturbed and still works.
    assert!(
        other.seen.lock().closed.is_none(),
        "the other room's client stays connected"
    );
    assert!(
        !other.seen.lock().ended,
        "the other room's client stays connected"
    );
    other.push(", after");
    other.wait_saved().await;
    let fresh = YClient::connect(&other_url).await;
    assert_eq!(fresh.read(), other.read());
    assert!(fresh.read().ends_with("other room, before, after"));
    let closings = server
        .logs()
        .lines()
        .filter(|l| l.contains("closing"))
        .count();
    assert_eq!(
        closings,
        cases().len(),
        "one closing line per bad input, none elsewhere"
    );
}

/// An update that made yrs panic while integrating it (a right origin
/// pointing past the only one-character block of its own client made
/// `ClientBlockList::find_pivot` divide by zero, caught, and the room
/// reloaded for everyone): now refused before yrs sees it, with 4422; the
/// document is unchanged, nobody else is disconnected, and the server log
/// gets one clear line, not a panic dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_that_would_make_yrs_panic_is_refused_with_4422_and_changes_nothing() {
    let server = TestServer::start();
    let case = Case {
        name: "update that would make yrs panic (right origin past its client's only block)",
        frame: |ctx| {
            let block = string_item_with_right_origin(ctx.bystander, 36, b"x");
            Frame::Binary(update_message(&v1_update(ctx.bystander, 1, &[block])))
        },
        code: 4422,
        reason: &[
            "update rejected",
            "a reference to a later item of the same client",
        ],
        reloads_room: false,
    };
    run_case(&server, &case).await;
    assert_no_panic_output(&server, case.name);
}

/// An awareness update cut short is an invalid awareness update like the
/// others, and the reason must not point at a byte of the frame that is fine:
/// the awareness decoder's offsets count from the start of its payload, not
/// of the frame ("truncated varint at byte 3" for a frame whose byte 3 is a
/// complete varint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_update_cut_short_is_reported_as_an_invalid_awareness_update() {
    let server = TestServer::start();
    let cases = [
        Case {
            name: "awareness entry cut short before its state",
            // count 1, client 2, clock 3, then nothing
            frame: |_| Frame::Binary(awareness_message(&[1, 2, 3])),
            code: 4400,
            reason: &["invalid awareness update"],
            reloads_room: false,
        },
        Case {
            name: "awareness state longer than the awareness payload",
            // count 1, client 2, clock 3, a 9-byte state with 1 byte present
            frame: |_| Frame::Binary(awareness_message(&[1, 2, 3, 9, b'{'])),
            code: 4400,
            reason: &["invalid awareness update"],
            reloads_room: false,
        },
    ];
    for case in &cases {
        run_case(&server, case).await;
    }
}

/// Several messages in one frame are all handled, in order: two update
/// messages and an awareness message in one frame all take effect, and the
/// "saved" acknowledgement counts both updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_messages_in_one_frame_are_all_applied() {
    let server = TestServer::start();
    let incident = server.create_incident("Batched frame").await;
    let url = responder_url(&server, &incident, "Batcher");
    let watcher = YClient::connect(&url).await;
    let sender = YClient::connect_with(
        &url,
        Connect {
            saved_acks: true,
            ..Default::default()
        },
    )
    .await;
    sender.wait_saved().await;
    let before = sender.read();

    let state = full_update(&sender.doc);
    let first = append_update(&state, 6001, "[one]");
    let after_first = {
        use yrs::updates::decoder::Decode;
        let doc = new_doc(None);
        let mut txn = doc.transact_mut();
        txn.apply_update(yrs::Update::decode_v1(&state).unwrap())
            .unwrap();
        txn.apply_update(yrs::Update::decode_v1(&first).unwrap())
            .unwrap();
        drop(txn);
        full_update(&doc)
    };
    let second = append_update(&after_first, 6002, "[two]");
    let mut frame = update_message(&first);
    frame.extend(update_message(&second));
    let mut awareness = vec![1];
    var_uint(&mut awareness, 6001);
    var_uint(&mut awareness, 1);
    var_bytes(&mut awareness, br#"{"user":{"name":"Batcher"}}"#);
    frame.extend(awareness_message(&awareness));
    *sender.changes_sent.lock() += 2;
    sender.send_raw(frame);

    let expected = format!("{before}[one][two]");
    watcher.wait_text(&expected).await;
    let seen = watcher.seen.clone();
    wait_until("the awareness state from the batched frame", || {
        seen.lock()
            .awareness
            .get(&6001)
            .is_some_and(|json| json.contains("Batcher"))
    })
    .await;
    sender.wait_saved().await;
    assert!(sender.seen.lock().closed.is_none());
    let fresh = YClient::connect(&url).await;
    assert_eq!(fresh.read(), expected);
}

/// Decoding is per frame, applying is per message: a frame holding a valid
/// update and then one that yrs refuses closes the connection with 4422.
/// Whatever the server keeps of the first update, every party agrees on it:
/// the bystander, a fresh client and, after a restart, storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_update_then_rejected_update_in_one_frame_leaves_everyone_agreeing() {
    let mut server = TestServer::start();
    let incident = server.create_incident("Half good").await;
    let bystander = YClient::connect_with(
        &responder_url(&server, &incident, "Bystander"),
        Connect {
            saved_acks: true,
            ..Default::default()
        },
    )
    .await;
    bystander.insert(0, "B");
    bystander.wait_saved().await;
    let victim = YClient::connect(&responder_url(&server, &incident, "Victim")).await;
    let mut frame = update_message(&append_update(&full_update(&victim.doc), 7001, "GOOD-HALF"));
    frame.extend(update_message(&[5]));
    victim.send_raw(frame);
    let (code, reason) = closed_by_server(&server, &victim, "half-good frame").await;
    assert_eq!(code, 4422, "{reason}");

    // Round trip through the bystander, then compare with a fresh client.
    bystander.push(" after");
    bystander.wait_saved().await;
    let fresh = YClient::connect(&responder_url(&server, &incident, "Fresh")).await;
    assert_eq!(
        fresh.read(),
        bystander.read(),
        "the bystander and the server agree"
    );
    let in_memory = fresh.read();
    drop((bystander, victim, fresh));
    server.kill9();
    server.restart();
    let reloaded = YClient::connect(&responder_url(&server, &incident, "Reloaded")).await;
    assert_eq!(
        reloaded.read(),
        in_memory,
        "storage agrees with what was served"
    );
}

/// An update that yrs refuses only after integrating part of it must leave
/// no trace: "the document is not changed". The shape: a second client's
/// block with a string item as parent (an error); the first block is valid
/// and carries a marker. (A second shape, a block whose right origin made
/// yrs panic, is now refused before yrs sees it: see
/// `update_that_would_make_yrs_panic_is_refused_with_4422_and_changes_nothing`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_refused_halfway_through_leaves_no_trace_in_the_document() {
    let server = TestServer::start();
    // Each shape builds the update from the bystander's client id.
    type Shape = (&'static str, fn(u64) -> Vec<u8>);
    let shapes: [Shape; 1] = [("error on a later client's block", |bystander| {
        // yrs integrates clients from the highest id down: 9002 first.
        let mut update = Vec::new();
        var_uint(&mut update, 2);
        var_uint(&mut update, 1);
        var_uint(&mut update, 9002);
        var_uint(&mut update, 0);
        update.extend(string_item_in_root(b"body", b"SMUGGLED-A"));
        var_uint(&mut update, 1);
        var_uint(&mut update, 9001);
        var_uint(&mut update, 0);
        update.extend(string_item_with_parent_item(bystander, 0, b"EVIL"));
        update.push(0);
        update
    })];
    let mut failures = Vec::new();
    for (shape, make) in shapes {
        let incident = server.create_incident(shape).await;
        let bystander = YClient::connect_with(
            &responder_url(&server, &incident, "Bystander"),
            Connect {
                saved_acks: true,
                ..Default::default()
            },
        )
        .await;
        bystander.insert(0, "B");
        bystander.wait_saved().await;
        let before = bystander.read();
        let victim = YClient::connect(&responder_url(&server, &incident, "Victim")).await;
        victim.send_raw(update_message(&make(bystander.doc.client_id().get())));
        let (code, reason) = closed_by_server(&server, &victim, shape).await;
        assert_eq!(code, 4422, "{shape}: {reason}");
        assert!(reason.contains("update rejected"), "{shape}: {reason}");

        // The room is reloaded from storage: the bystander is told to
        // reconnect, and does, with the document it holds.
        let (code, _) = closed_by_server(&server, &bystander, shape).await;
        assert_eq!(code, 1012, "{shape}: the bystander is told to reconnect");
        let bystander = YClient::connect_doc(
            &responder_url(&server, &incident, "Bystander"),
            bystander.doc.clone(),
            Connect {
                saved_acks: true,
                ..Default::default()
            },
        )
        .await;
        bystander.push(" after");
        bystander.wait_saved().await;
        let fresh = YClient::connect(&responder_url(&server, &incident, "Fresh")).await;
        let served = fresh.read();
        let expected = format!("{before} after");
        if served != expected {
            failures.push(format!(
                "{shape}: a fresh client reads {:?} at the start, the bystander (and storage) {:?}",
                served.chars().take(40).collect::<String>(),
                expected.chars().take(40).collect::<String>(),
            ));
        }
        assert_eq!(
            bystander.read(),
            expected,
            "{shape}: the half-applied update was not relayed"
        );
    }
    assert!(
        failures.is_empty(),
        "the document was changed by a refused update (applied in memory, never stored nor relayed):\n{}",
        failures.join("\n")
    );
}

/// Inputs on which yrs 0.26 does not return an error and does not unwind,
/// but aborts the process: `catch_unwind` cannot help. Each must still end
/// with a 4422 close for that connection only, and the server must survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_that_would_abort_inside_yrs_are_refused_and_the_server_survives() {
    let cases: [(&str, Vec<u8>); 3] = [
        (
            // yrs 0.26 reads strings with `from_utf8_unchecked`
            "string content that is not UTF-8",
            v1_update(
                9101,
                0,
                &[string_item_in_root(b"body", &[b'o', 0xff, b'k'])],
            ),
        ),
        (
            // `Any::decode` calls `Vec::with_capacity(len)` with the declared
            // array length: 2^36 values of 24 bytes, 1.5 TiB
            "an Any array declaring 2^36 values",
            {
                let mut block = vec![8]; // info: Any content, no origins
                var_uint(&mut block, 1); // parent is a named root type
                var_bytes(&mut block, b"data");
                var_uint(&mut block, 1); // one Any value ...
                block.push(117); // ... an array ...
                var_uint(&mut block, 1 << 36); // ... of 2^36 values
                v1_update(9102, 0, &[block])
            },
        ),
        (
            // `IdRange::decode` calls `SmallVec::with_capacity(len)`: 2^32-1
            // ranges of 8 bytes, 32 GiB (aborts where that cannot be mapped)
            "a delete set declaring 2^32-1 ranges",
            vec![0, 1, 7, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
    ];
    let mut failures = Vec::new();
    for (what, update) in cases {
        // A server each: one that dies must not hide the next case.
        let server = TestServer::start();
        let incident = server.create_incident(what).await;
        let bystander = YClient::connect_with(
            &responder_url(&server, &incident, "Bystander"),
            Connect {
                saved_acks: true,
                ..Default::default()
            },
        )
        .await;
        bystander.insert(0, "B");
        bystander.wait_saved().await;
        let before = bystander.read();
        let victim = YClient::connect(&responder_url(&server, &incident, "Victim")).await;
        victim.send_raw(update_message(&update));
        match close_of(&server, &victim, what).await {
            Ok((4422, reason)) if reason.contains("update rejected") => {}
            Ok((code, reason)) => failures.push(format!(
                "{what}: closed with {code} {reason:?}, expected 4422"
            )),
            Err(error) => {
                // What the process said as it died (no backtrace frames).
                let logs = server.logs();
                let last_words: Vec<&str> = logs
                    .lines()
                    .filter(|line| {
                        !line.is_empty()
                            && !line.starts_with(' ')
                            && !line.contains(" INFO ")
                            && !line.starts_with("stack backtrace")
                    })
                    .collect();
                failures.push(format!("{error}; its last words: {last_words:?}"));
                continue;
            }
        }
        bystander.push(" after");
        bystander.wait_saved().await;
        let fresh = YClient::connect(&responder_url(&server, &incident, "Fresh")).await;
        assert_eq!(
            fresh.read(),
            format!("{before} after"),
            "{what}: the document is unchanged"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
